/**
 * One-line summaries of Ethernet frames for `--trace` (one line per frame each way):
 * `IPv4 10.0.2.15:41000 > 10.0.2.2:80 TCP [S] len 74`. Only the fixed headers are
 * read, each field once, bounds-checked; whatever cannot be read is left out. Never
 * called unless trace lines are enabled.
 *
 * @module
 */

import { readIpv4 } from "./address.ts";
import {
  ETH_HEADER_LENGTH,
  ETH_TYPE,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
} from "./ethernet.ts";
import { TCP_FLAGS_OFFSET } from "./tcp_header.ts";
import { ipv4ToString, ipv6ToString } from "../../../ffi/ip_address_text.ts";

/** IP protocol numbers (IANA "Assigned Internet Protocol Numbers"). */
const PROTOCOL_NAMES: Readonly<Record<number, string>> = {
  1: "ICMP",
  6: "TCP",
  17: "UDP",
  58: "ICMPv6",
};

/** ARP (RFC 826): operation at 6, sender IPv4 address at 14, target IPv4 address at 24. */
const ARP_OP = 6;
const ARP_SPA = 14;
const ARP_TPA = 24;
const ARP_LENGTH = 28;

/** IPv4 (RFC 791): IHL in the low nibble of byte 0, protocol at 9, addresses at 12 and 16. */
const IPV4_PROTOCOL = 9;
const IPV4_SRC = 12;
const IPV4_DST = 16;
const IPV4_MIN_HEADER = 20;

/** IPv6 (RFC 8200 §3): next header at 6, addresses at 8 and 24, header 40 bytes. */
const IPV6_NEXT_HEADER = 6;
const IPV6_SRC = 8;
const IPV6_DST = 24;
const IPV6_HEADER = 40;

/** TCP flag letters, lowest bit first (RFC 9293 §3.1): FIN SYN RST PSH ACK URG. */
const TCP_FLAG_LETTERS = ["F", "S", "R", "P", ".", "U"];

/**
 * A one-line summary of `frame`. `length` is the whole frame's when `frame` holds only
 * its first bytes (its headers).
 */
export function describeFrame(frame: Uint8Array, length: number = frame.length): string {
  if (frame.length < ETH_HEADER_LENGTH) return `runt frame, len ${length}`;
  const etherType = (frame[ETH_TYPE] << 8) | frame[ETH_TYPE + 1];
  const l3 = ETH_HEADER_LENGTH;
  const len = `len ${length}`;
  switch (etherType) {
    case ETHERTYPE_ARP: {
      if (frame.length < l3 + ARP_LENGTH) return `ARP (truncated) ${len}`;
      const op = (frame[l3 + ARP_OP] << 8) | frame[l3 + ARP_OP + 1];
      const spa = ipv4ToString(readIpv4(frame, l3 + ARP_SPA));
      const tpa = ipv4ToString(readIpv4(frame, l3 + ARP_TPA));
      return op === 1
        ? `ARP who-has ${tpa} tell ${spa} ${len}`
        : op === 2
        ? `ARP ${spa} is-at (reply to ${tpa}) ${len}`
        : `ARP op ${op} ${len}`;
    }
    case ETHERTYPE_IPV4: {
      if (frame.length < l3 + IPV4_MIN_HEADER) return `IPv4 (truncated) ${len}`;
      const protocol = frame[l3 + IPV4_PROTOCOL];
      const l4 = l3 + (frame[l3] & 0x0f) * 4;
      const src = ipv4ToString(readIpv4(frame, l3 + IPV4_SRC));
      const dst = ipv4ToString(readIpv4(frame, l3 + IPV4_DST));
      return `IPv4 ${transport(frame, protocol, l4, src, dst)} ${len}`;
    }
    case ETHERTYPE_IPV6: {
      if (frame.length < l3 + IPV6_HEADER) return `IPv6 (truncated) ${len}`;
      const protocol = frame[l3 + IPV6_NEXT_HEADER];
      const src = ipv6ToString(frame, l3 + IPV6_SRC);
      const dst = ipv6ToString(frame, l3 + IPV6_DST);
      return `IPv6 ${transport(frame, protocol, l3 + IPV6_HEADER, `[${src}]`, `[${dst}]`)} ${len}`;
    }
    default:
      return `EtherType 0x${etherType.toString(16).padStart(4, "0")} ${len}`;
  }
}

/** `src:port > dst:port PROTO [flags]`, or without ports when they cannot be read. */
function transport(frame: Uint8Array, protocol: number, l4: number, src: string, dst: string) {
  const name = PROTOCOL_NAMES[protocol] ?? `protocol ${protocol}`;
  if ((protocol === 6 || protocol === 17) && frame.length >= l4 + 4) {
    const sport = (frame[l4] << 8) | frame[l4 + 1];
    const dport = (frame[l4 + 2] << 8) | frame[l4 + 3];
    let flags = "";
    if (protocol === 6 && frame.length > l4 + TCP_FLAGS_OFFSET) {
      const bits = frame[l4 + TCP_FLAGS_OFFSET];
      flags = " [" + TCP_FLAG_LETTERS.filter((_, i) => (bits & (1 << i)) !== 0).join("") + "]";
    }
    return `${src}:${sport} > ${dst}:${dport} ${name}${flags}`;
  }
  if ((protocol === 1 || protocol === 58) && frame.length >= l4 + 2) {
    return `${src} > ${dst} ${name} type ${frame[l4]} code ${frame[l4 + 1]}`;
  }
  return `${src} > ${dst} ${name}`;
}
