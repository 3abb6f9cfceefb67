/**
 * DHCPv6 server (RFC 8415) handing the guest the plan's single global address
 * (IA_NA) with infinite lifetimes, plus DNS servers (RFC 3646 option 23), the
 * domain search list (option 24) and the FQDN (RFC 4704 option 39).
 * SOLICIT → ADVERTISE (or REPLY with Rapid Commit); REQUEST, CONFIRM, RENEW,
 * REBIND, INFORMATION-REQUEST, RELEASE, DECLINE → REPLY. An IA naming another
 * address gets the NotOnLink status. Messages with the wrong server identifier,
 * or without the identifiers the message type requires, are ignored (§16). Each
 * exchange is one debug line.
 *
 * @module
 */

import { ipv6Equal, writeMac } from "../wire/address.ts";
import { encodeDomainList } from "../wire/dns_name.ts";
import type { GuestSender } from "../guest_sender.ts";
import { L4_OFFSET_V6 } from "../guest_sender.ts";
import type { NetworkPlan } from "../plan/network_plan.ts";
import type { Ipv6Header } from "../wire/ipv6.ts";
import { buildUdp, UDP_HEADER_LENGTH, type UdpHeader } from "../wire/udp.ts";
import { log as defaultLog, type Logger } from "../../log/logger.ts";
import { IPPROTO_UDP } from "../wire/ip_protocol.ts";
import { ipv6ToString } from "../../../ffi/ip_address_text.ts";

/** UDP port of DHCPv6 clients (RFC 8415 §7.2). */
export const DHCPV6_CLIENT_PORT = 546;
/** UDP port of DHCPv6 servers and relays. */
export const DHCPV6_SERVER_PORT = 547;
/** Offset of the message type (RFC 8415 §8). */
export const DHCPV6_MSG_TYPE = 0;
/** Offset of the 24-bit transaction id. */
export const DHCPV6_XID = 1;
/** Offset of the first option. */
export const DHCPV6_OPTIONS = 4;
/** Length of an option header: code (2), length (2) (RFC 8415 §21.1). */
export const DHCPV6_OPTION_HEADER = 4;
/** Length of the fixed part of IA_NA: IAID, T1, T2 (RFC 8415 §21.4). */
export const IA_NA_FIXED = 12;
/** Length of the fixed part of IAADDR: address, preferred, valid (RFC 8415 §21.6). */
export const IAADDR_FIXED = 24;
/** Lifetime meaning "forever" (RFC 8415 §7.7). */
export const DHCPV6_INFINITY = 0xffffffff;

/** DHCPv6 message types (RFC 8415 §7.3). */
export const Dhcpv6Message = {
  Solicit: 1,
  Advertise: 2,
  Request: 3,
  Confirm: 4,
  Renew: 5,
  Rebind: 6,
  Reply: 7,
  Release: 8,
  Decline: 9,
  Reconfigure: 10,
  InformationRequest: 11,
} as const;

/** DHCPv6 option codes (RFC 8415 §21, RFC 3646, RFC 4704). */
export const Dhcpv6Option = {
  ClientId: 1,
  ServerId: 2,
  IaNa: 3,
  IaTa: 4,
  IaAddr: 5,
  OptionRequest: 6,
  Preference: 7,
  ElapsedTime: 8,
  StatusCode: 13,
  RapidCommit: 14,
  DnsServers: 23,
  DomainList: 24,
  ClientFqdn: 39,
} as const;

/** Status codes (RFC 8415 §21.13). */
export const Dhcpv6Status = {
  Success: 0,
  UnspecFail: 1,
  NoAddrsAvail: 2,
  NoBinding: 3,
  NotOnLink: 4,
  UseMulticast: 5,
} as const;

const MESSAGE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(Dhcpv6Message).map(([name, code]) => [code, name.toLowerCase()]),
);

/** DUID type DUID-LL (RFC 8415 §11.4) and hardware type Ethernet. */
const DUID_LL = 3;
const HWTYPE_ETHERNET = 1;
/** Longest client identifier copied back (DUIDs are at most 128 bytes + type, §11.1). */
const MAX_DUID = 130;

/** Result of {@link Dhcpv6Server.handle}. */
export type Dhcpv6Status =
  | "ok"
  | "dhcpv6-truncated"
  | "dhcpv6-bad-options"
  | "dhcpv6-bad-client-id";

/** Counters of the DHCPv6 server. */
export interface Dhcpv6Counters {
  advertises: number;
  replies: number;
  notOnLink: number;
  ignored: number;
}

/** Answers the guest's DHCPv6 messages from the network plan. */
export class Dhcpv6Server {
  /** Event counters for diagnostics. */
  readonly counters: Dhcpv6Counters = { advertises: 0, replies: 0, notOnLink: 0, ignored: 0 };
  readonly #sender: GuestSender;
  readonly #log: Logger;
  readonly #address: Uint8Array;
  readonly #source: Uint8Array;
  readonly #serverId: Uint8Array;
  /** Pre-encoded DNS servers, domain list and FQDN options (complete with headers). */
  readonly #infoOptions: Uint8Array;
  readonly #dst = new Uint8Array(16);
  // Parsed request (offsets into the frame).
  #clientIdOffset = -1;
  #clientIdLength = 0;
  #serverIdOffset = -1;
  #serverIdLength = 0;
  #iaOffset = -1;
  #iaLength = 0;
  #rapidCommit = false;
  #iaWrong = false;

  /** @throws Error when the plan has no IPv6 address to give */
  constructor(plan: NetworkPlan, sender: GuestSender, logger: Logger = defaultLog) {
    const v6 = plan.ipv6;
    if (!v6 || !v6.address) {
      throw new Error("Cannot start the DHCPv6 server: the plan has no global IPv6 address");
    }
    this.#sender = sender;
    this.#log = logger;
    this.#address = v6.address;
    this.#source = v6.routerLinkLocal;
    const duid = new Uint8Array(10);
    duid[1] = DUID_LL;
    duid[3] = HWTYPE_ETHERNET;
    writeMac(duid, 4, sender.ourMac);
    this.#serverId = duid;
    const info: number[] = [];
    const put = (code: number, data: ArrayLike<number>) => {
      info.push(code >> 8, code & 0xff, data.length >> 8, data.length & 0xff, ...Array.from(data));
    };
    if (plan.advertiseDns && v6.dns.length > 0) {
      put(Dhcpv6Option.DnsServers, v6.dns.flatMap((a) => Array.from(a)));
    }
    if (plan.advertiseSearch && plan.search.length > 0) {
      const list = encodeDomainList(plan.search);
      if (list.length > 0) put(Dhcpv6Option.DomainList, list);
    }
    if (plan.fqdn) {
      const name = encodeDomainList([plan.fqdn]);
      // Flags 0x04 = N: the server performs no DNS updates (RFC 4704 §4.1).
      if (name.length > 0) put(Dhcpv6Option.ClientFqdn, [0x04, ...name]);
    }
    this.#infoOptions = new Uint8Array(info);
  }

  /**
   * Handles one DHCPv6 message (the UDP payload of `udp` in `frame`).
   * @returns "ok" when answered or deliberately ignored, else why it was dropped
   */
  handle(frame: Uint8Array, ip: Ipv6Header, udp: UdpHeader, _now: number): Dhcpv6Status {
    const start = udp.payloadOffset, end = udp.payloadOffset + udp.payloadLength;
    if (end - start < DHCPV6_OPTIONS || end > frame.length) return "dhcpv6-truncated";
    const type = frame[start + DHCPV6_MSG_TYPE];
    const xid = (frame[start + 1] << 16) | (frame[start + 2] << 8) | frame[start + 3];
    const st = this.#parse(frame, start + DHCPV6_OPTIONS, end);
    if (st !== "ok") return st;
    const hasClient = this.#clientIdOffset >= 0;
    const hasServer = this.#serverIdOffset >= 0;
    const serverIsUs = hasServer && this.#serverIdLength === this.#serverId.length &&
      this.#serverIdMatches(frame);
    this.#dst.set(ip.src);
    const notOnLink = this.counters.notOnLink;
    const status = this.#answer(frame, type, xid, hasClient, hasServer, serverIsUs);
    if (this.#log.enabled("debug")) {
      const from = `${MESSAGE_NAMES[type] ?? `type ${type}`} from ${ipv6ToString(ip.src)}`;
      this.#log.debug(
        status === null
          ? `DHCPv6: ${from} ignored`
          : `DHCPv6: ${MESSAGE_NAMES[status]} to ${from}` +
            (this.counters.notOnLink !== notOnLink
              ? ": the address asked for is not on link"
              : `: ${ipv6ToString(this.#address)}`),
      );
    }
    return "ok";
  }

  /** Answers one message; returns the reply's type, or null when it was ignored. */
  #answer(
    frame: Uint8Array,
    type: number,
    xid: number,
    hasClient: boolean,
    hasServer: boolean,
    serverIsUs: boolean,
  ): number | null {
    switch (type) {
      case Dhcpv6Message.Solicit:
        // §16.2: must carry a Client Identifier and no Server Identifier.
        if (!hasClient || hasServer) return this.#ignore();
        if (this.#rapidCommit) return this.#sendReply(frame, xid, "ia", true);
        this.#reply(frame, Dhcpv6Message.Advertise, xid, "ia", false);
        this.counters.advertises++;
        return Dhcpv6Message.Advertise;
      case Dhcpv6Message.Request:
      case Dhcpv6Message.Renew:
        // §16.4, §16.6: client and server identifiers required, server must be us.
        if (!hasClient || !serverIsUs) return this.#ignore();
        return this.#sendReply(frame, xid, "ia");
      case Dhcpv6Message.Rebind:
      case Dhcpv6Message.Confirm:
        // §16.5, §16.7: client identifier required, no server identifier.
        if (!hasClient || hasServer) return this.#ignore();
        return this.#sendReply(frame, xid, type === Dhcpv6Message.Confirm ? "confirm" : "ia");
      case Dhcpv6Message.InformationRequest:
        // §16.12: a Server Identifier, if present, must be ours.
        if (hasServer && !serverIsUs) return this.#ignore();
        return this.#sendReply(frame, xid, "info");
      case Dhcpv6Message.Release:
      case Dhcpv6Message.Decline:
        if (!hasClient || !serverIsUs) return this.#ignore();
        return this.#sendReply(frame, xid, "success");
      default:
        return this.#ignore();
    }
  }

  #ignore(): null {
    this.counters.ignored++;
    return null;
  }

  #serverIdMatches(frame: Uint8Array): boolean {
    for (let i = 0; i < this.#serverId.length; i++) {
      if (frame[this.#serverIdOffset + i] !== this.#serverId[i]) return false;
    }
    return true;
  }

  #parse(buf: Uint8Array, p: number, end: number): Dhcpv6Status {
    this.#clientIdOffset = -1;
    this.#serverIdOffset = -1;
    this.#iaOffset = -1;
    this.#rapidCommit = false;
    this.#iaWrong = false;
    while (p < end) {
      if (!optionAt(buf, p, end, OPTION)) return "dhcpv6-bad-options";
      const { code, length: len, value: v } = OPTION;
      switch (code) {
        case Dhcpv6Option.ClientId:
          if (len < 2 || len > MAX_DUID) return "dhcpv6-bad-client-id";
          this.#clientIdOffset = v;
          this.#clientIdLength = len;
          break;
        case Dhcpv6Option.ServerId:
          this.#serverIdOffset = v;
          this.#serverIdLength = len;
          break;
        case Dhcpv6Option.IaNa:
          if (len < IA_NA_FIXED) return "dhcpv6-bad-options";
          if (this.#iaOffset < 0) {
            this.#iaOffset = v;
            this.#iaLength = len;
            const s = this.#scanIa(buf, v + IA_NA_FIXED, v + len);
            if (s !== "ok") return s;
          }
          break;
        case Dhcpv6Option.RapidCommit:
          this.#rapidCommit = true;
          break;
      }
      p = v + len;
    }
    return "ok";
  }

  /** Checks the IA_NA sub-options and notes whether any IAADDR names another address. */
  #scanIa(buf: Uint8Array, p: number, end: number): Dhcpv6Status {
    while (p < end) {
      if (!optionAt(buf, p, end, OPTION)) return "dhcpv6-bad-options";
      const { code, length: len, value: v } = OPTION;
      if (code === Dhcpv6Option.IaAddr) {
        if (len < IAADDR_FIXED) return "dhcpv6-bad-options";
        if (!ipv6Equal(buf, v, this.#address, 0)) this.#iaWrong = true;
      }
      p = v + len;
    }
    return "ok";
  }

  /** Sends a Reply of `kind` to `req`, counts it and returns its type. */
  #sendReply(
    req: Uint8Array,
    xid: number,
    kind: "ia" | "confirm" | "info" | "success",
    rapid = false,
  ): number {
    this.#reply(req, Dhcpv6Message.Reply, xid, kind, rapid);
    this.counters.replies++;
    return Dhcpv6Message.Reply;
  }

  #reply(
    req: Uint8Array,
    type: number,
    xid: number,
    kind: "ia" | "confirm" | "info" | "success",
    rapid: boolean,
  ): void {
    const s = this.#sender;
    const b = s.buffer;
    const base = L4_OFFSET_V6 + UDP_HEADER_LENGTH;
    let p = base;
    b[p++] = type;
    b[p++] = xid >> 16;
    b[p++] = xid >> 8;
    b[p++] = xid;
    const opt = (code: number, len: number) => {
      b[p++] = code >> 8;
      b[p++] = code;
      b[p++] = len >> 8;
      b[p++] = len;
    };
    const u32 = (v: number) => {
      b[p++] = v >>> 24;
      b[p++] = v >>> 16;
      b[p++] = v >>> 8;
      b[p++] = v;
    };
    const status = (code: number) => {
      opt(Dhcpv6Option.StatusCode, 2);
      b[p++] = 0;
      b[p++] = code;
    };
    opt(Dhcpv6Option.ServerId, this.#serverId.length);
    b.set(this.#serverId, p);
    p += this.#serverId.length;
    if (this.#clientIdOffset >= 0) {
      opt(Dhcpv6Option.ClientId, this.#clientIdLength);
      for (let i = 0; i < this.#clientIdLength; i++) b[p++] = req[this.#clientIdOffset + i];
    }
    if (rapid) opt(Dhcpv6Option.RapidCommit, 0);
    if (kind === "confirm") {
      // §18.3.3: NotOnLink if any address is not ours, else Success.
      if (this.#iaWrong) this.counters.notOnLink++;
      status(this.#iaWrong ? Dhcpv6Status.NotOnLink : Dhcpv6Status.Success);
    } else if (kind === "success") {
      status(Dhcpv6Status.Success);
    } else if (kind === "ia" && this.#iaOffset >= 0) {
      const iaid = req.subarray(this.#iaOffset, this.#iaOffset + 4);
      if (this.#iaWrong) {
        this.counters.notOnLink++;
        opt(Dhcpv6Option.IaNa, IA_NA_FIXED + DHCPV6_OPTION_HEADER + 2);
        b[p++] = iaid[0];
        b[p++] = iaid[1];
        b[p++] = iaid[2];
        b[p++] = iaid[3];
        u32(0);
        u32(0);
        status(Dhcpv6Status.NotOnLink);
      } else {
        opt(Dhcpv6Option.IaNa, IA_NA_FIXED + DHCPV6_OPTION_HEADER + IAADDR_FIXED);
        b[p++] = iaid[0];
        b[p++] = iaid[1];
        b[p++] = iaid[2];
        b[p++] = iaid[3];
        u32(DHCPV6_INFINITY); // T1
        u32(DHCPV6_INFINITY); // T2
        opt(Dhcpv6Option.IaAddr, IAADDR_FIXED);
        b.set(this.#address, p);
        p += 16;
        u32(DHCPV6_INFINITY); // preferred lifetime
        u32(DHCPV6_INFINITY); // valid lifetime
      }
    }
    if (kind !== "success") {
      b.set(this.#infoOptions, p);
      p += this.#infoOptions.length;
    }
    const length = p - base;
    buildUdp(b, L4_OFFSET_V6, DHCPV6_SERVER_PORT, DHCPV6_CLIENT_PORT, length);
    s.sendIpv6(IPPROTO_UDP, this.#source, this.#dst, UDP_HEADER_LENGTH + length);
  }
}

/** One option's header as {@link optionAt} reads it. */
interface OptionHeader {
  code: number;
  length: number;
  /** Offset of the option's value. */
  value: number;
}

/** Scratch for {@link optionAt} (the parse is synchronous). */
const OPTION: OptionHeader = { code: 0, length: 0, value: 0 };

/**
 * Reads the option header at `buf[p]` (RFC 8415 §21.1: code, length) into `out`.
 * @returns false when the header or its value runs past `end`
 */
function optionAt(buf: Uint8Array, p: number, end: number, out: OptionHeader): boolean {
  if (p + DHCPV6_OPTION_HEADER > end) return false;
  out.code = (buf[p] << 8) | buf[p + 1];
  out.length = (buf[p + 2] << 8) | buf[p + 3];
  out.value = p + DHCPV6_OPTION_HEADER;
  return out.value + out.length <= end;
}
