/**
 * ARP (RFC 826) for IPv4 over Ethernet: codec and responder. We answer requests
 * for every address except the guest's own with our MAC, so that the guest sends
 * everything off-link (and on-link) to us. Announcements and gratuitous ARP
 * (sender address = target address) are ignored, and so is anything but requests.
 *
 * @module
 */

import { readIpv4, readMac, writeIpv4, writeMac } from "../wire/address.ts";
import { ETHERTYPE_ARP, ETHERTYPE_IPV4 } from "../wire/ethernet.ts";
import type { GuestSender } from "../guest_sender.ts";
import { L3_OFFSET } from "../guest_sender.ts";

/** Offset of the hardware type (RFC 826 "Packet format"). */
export const ARP_HTYPE = 0;
/** Offset of the protocol type. */
export const ARP_PTYPE = 2;
/** Offset of the hardware address length. */
export const ARP_HLEN = 4;
/** Offset of the protocol address length. */
export const ARP_PLEN = 5;
/** Offset of the operation. */
export const ARP_OPER = 6;
/** Offset of the sender hardware address. */
export const ARP_SHA = 8;
/** Offset of the sender protocol address. */
export const ARP_SPA = 14;
/** Offset of the target hardware address. */
export const ARP_THA = 18;
/** Offset of the target protocol address. */
export const ARP_TPA = 24;
/** Length of an ARP message for IPv4 over Ethernet. */
export const ARP_LENGTH = 28;
/** Hardware type Ethernet (IANA "ARP Parameters"). */
export const ARP_HTYPE_ETHERNET = 1;
/** ARP request operation. */
export const ARP_OP_REQUEST = 1;
/** ARP reply operation. */
export const ARP_OP_REPLY = 2;

/** A decoded ARP message (Ethernet/IPv4 only). */
export interface ArpMessage {
  op: number;
  senderMac: number;
  senderIp: number;
  targetMac: number;
  targetIp: number;
}

/** Creates an empty message object to be filled by {@link parseArp}. */
export function newArpMessage(): ArpMessage {
  return { op: 0, senderMac: 0, senderIp: 0, targetMac: 0, targetIp: 0 };
}

/** Result of {@link parseArp}. */
export type ArpParseStatus = "ok" | "arp-truncated" | "arp-unsupported";

/** Decodes the ARP message at `buf[offset]`, ending at `end`. Never throws. */
export function parseArp(
  buf: Uint8Array,
  offset: number,
  end: number,
  out: ArpMessage,
): ArpParseStatus {
  if (end > buf.length) end = buf.length;
  if (offset < 0 || end - offset < ARP_LENGTH) return "arp-truncated";
  const htype = (buf[offset + ARP_HTYPE] << 8) | buf[offset + ARP_HTYPE + 1];
  const ptype = (buf[offset + ARP_PTYPE] << 8) | buf[offset + ARP_PTYPE + 1];
  if (
    htype !== ARP_HTYPE_ETHERNET || ptype !== ETHERTYPE_IPV4 || buf[offset + ARP_HLEN] !== 6 ||
    buf[offset + ARP_PLEN] !== 4
  ) return "arp-unsupported";
  out.op = (buf[offset + ARP_OPER] << 8) | buf[offset + ARP_OPER + 1];
  out.senderMac = readMac(buf, offset + ARP_SHA);
  out.senderIp = readIpv4(buf, offset + ARP_SPA);
  out.targetMac = readMac(buf, offset + ARP_THA);
  out.targetIp = readIpv4(buf, offset + ARP_TPA);
  return "ok";
}

/** Writes an Ethernet/IPv4 ARP message at `buf[offset]`; returns its length (28). */
export function buildArp(buf: Uint8Array, offset: number, m: ArpMessage): number {
  if (offset < 0 || offset + ARP_LENGTH > buf.length) {
    throw new RangeError(
      `Cannot write ARP message at ${offset}+28: buffer holds ${buf.length} bytes`,
    );
  }
  buf[offset + ARP_HTYPE] = 0;
  buf[offset + ARP_HTYPE + 1] = ARP_HTYPE_ETHERNET;
  buf[offset + ARP_PTYPE] = ETHERTYPE_IPV4 >> 8;
  buf[offset + ARP_PTYPE + 1] = ETHERTYPE_IPV4 & 0xff;
  buf[offset + ARP_HLEN] = 6;
  buf[offset + ARP_PLEN] = 4;
  buf[offset + ARP_OPER] = m.op >> 8;
  buf[offset + ARP_OPER + 1] = m.op;
  writeMac(buf, offset + ARP_SHA, m.senderMac);
  writeIpv4(buf, offset + ARP_SPA, m.senderIp);
  writeMac(buf, offset + ARP_THA, m.targetMac);
  writeIpv4(buf, offset + ARP_TPA, m.targetIp);
  return ARP_LENGTH;
}

/** Counters of the ARP responder. */
export interface ArpCounters {
  replied: number;
  ignored: number;
}

/** Answers the guest's ARP requests. */
export class ArpResponder {
  /** Event counters for diagnostics. */
  readonly counters: ArpCounters = { replied: 0, ignored: 0 };
  readonly #sender: GuestSender;
  readonly #guestAddress: number;
  readonly #msg: ArpMessage = newArpMessage();

  /**
   * @param sender the way to the guest
   * @param guestAddress the IPv4 address assigned to the guest (never answered for)
   */
  constructor(sender: GuestSender, guestAddress: number) {
    this.#sender = sender;
    this.#guestAddress = guestAddress;
  }

  /**
   * Handles the ARP message at `frame[offset, end)`.
   * @returns the parse status ("ok" also when the message was deliberately ignored)
   */
  handle(frame: Uint8Array, offset: number, end: number): ArpParseStatus {
    const m = this.#msg;
    const status = parseArp(frame, offset, end, m);
    if (status !== "ok") return status;
    if (
      m.op !== ARP_OP_REQUEST || m.senderIp === m.targetIp || m.targetIp === this.#guestAddress ||
      (this.#sender.guestIpv4Seen !== 0 && m.targetIp === this.#sender.guestIpv4Seen)
    ) {
      this.counters.ignored++;
      return "ok";
    }
    const requesterMac = m.senderMac;
    const requesterIp = m.senderIp;
    m.op = ARP_OP_REPLY;
    m.senderMac = this.#sender.ourMac;
    m.senderIp = m.targetIp;
    m.targetMac = requesterMac;
    m.targetIp = requesterIp;
    buildArp(this.#sender.buffer, L3_OFFSET, m);
    this.#sender.sendEthernet(ETHERTYPE_ARP, L3_OFFSET + ARP_LENGTH, requesterMac);
    this.counters.replied++;
    return "ok";
  }
}
