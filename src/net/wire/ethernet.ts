/**
 * Ethernet II frame header (IEEE 802.3 §3.1.1 / RFC 894): destination MAC,
 * source MAC, EtherType. No 802.1Q tags: a tagged frame shows up with EtherType
 * 0x8100 and is treated as unknown by the stack.
 *
 * @module
 */

import { readMac, writeMac } from "./address.ts";

/** Offset of the destination MAC (IEEE 802.3 §3.1.1). */
export const ETH_DST = 0;
/** Offset of the source MAC. */
export const ETH_SRC = 6;
/** Offset of the EtherType (RFC 894). */
export const ETH_TYPE = 12;
/** Length of the Ethernet II header. */
export const ETH_HEADER_LENGTH = 14;

/** EtherType of IPv4 (IANA "IEEE 802 Numbers"). */
export const ETHERTYPE_IPV4 = 0x0800;
/** EtherType of ARP (RFC 826). */
export const ETHERTYPE_ARP = 0x0806;
/** EtherType of IPv6 (RFC 2464 §3). */
export const ETHERTYPE_IPV6 = 0x86dd;

/** A decoded Ethernet header; MACs are 48-bit numbers (see address.ts). */
export interface EthernetHeader {
  dst: number;
  src: number;
  etherType: number;
}

/** Creates an empty header object to be filled by {@link parseEthernet}. */
export function newEthernetHeader(): EthernetHeader {
  return { dst: 0, src: 0, etherType: 0 };
}

/** Result of {@link parseEthernet}: "ok" or why the frame was rejected. */
export type EthernetParseStatus = "ok" | "eth-truncated";

/**
 * Decodes the Ethernet header at the start of `frame` into `out`.
 * Each byte is read once. Never throws.
 */
export function parseEthernet(frame: Uint8Array, out: EthernetHeader): EthernetParseStatus {
  if (frame.length < ETH_HEADER_LENGTH) return "eth-truncated";
  out.dst = readMac(frame, ETH_DST);
  out.src = readMac(frame, ETH_SRC);
  out.etherType = (frame[ETH_TYPE] << 8) | frame[ETH_TYPE + 1];
  return "ok";
}

/**
 * Writes an Ethernet header at `buf[offset]`.
 * @returns the header length (14)
 * @throws RangeError when fewer than 14 bytes are left in `buf`
 */
export function buildEthernet(
  buf: Uint8Array,
  offset: number,
  dst: number,
  src: number,
  etherType: number,
): number {
  if (offset < 0 || offset + ETH_HEADER_LENGTH > buf.length) {
    throw new RangeError(
      `Cannot write Ethernet header at ${offset}: buffer holds only ${buf.length} bytes`,
    );
  }
  writeMac(buf, offset + ETH_DST, dst);
  writeMac(buf, offset + ETH_SRC, src);
  buf[offset + ETH_TYPE] = etherType >>> 8;
  buf[offset + ETH_TYPE + 1] = etherType;
  return ETH_HEADER_LENGTH;
}
