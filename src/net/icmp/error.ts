/**
 * ICMP error messages toward the guest (destination/port unreachable, packet too
 * big, time exceeded) quoting the guest packet that caused them, for the
 * translators: e.g. a UDP datagram the host refused (ECONNREFUSED) becomes a port
 * unreachable. The quote is cut so that the error fits the minimum MTU: 576 bytes
 * for IPv4 (RFC 1812 §4.3.2.3) and 1280 bytes for IPv6 (RFC 4443 §2.4 (c)).
 *
 * @module
 */

import { type GuestSender, L4_OFFSET_V4, L4_OFFSET_V6 } from "../guest_sender.ts";
import { buildIcmp, ICMP_HEADER_LENGTH } from "../wire/icmp.ts";
import { IPV4_HEADER_MIN } from "../wire/ipv4.ts";
import { IPV6_HEADER_LENGTH } from "../wire/ipv6.ts";
import type { SendResult } from "../../tap/frame_transport.ts";
import { IPPROTO_ICMP, IPPROTO_ICMPV6 } from "../wire/ip_protocol.ts";

/** Largest IPv4 ICMP error datagram (RFC 1812 §4.3.2.3). */
export const ICMPV4_ERROR_MAX = 576;
/** Largest IPv6 ICMP error packet (RFC 4443 §2.4 (c)). */
export const ICMPV6_ERROR_MAX = 1280;
/** Destination unreachable codes for ICMPv4 (RFC 792): port unreachable. */
export const ICMPV4_PORT_UNREACHABLE = 3;
/** ICMPv4 host unreachable. */
export const ICMPV4_HOST_UNREACHABLE = 1;
/** ICMPv4 network unreachable. */
export const ICMPV4_NET_UNREACHABLE = 0;
/** ICMPv6 destination unreachable code: port unreachable (RFC 4443 §3.1). */
export const ICMPV6_PORT_UNREACHABLE = 4;
/** ICMPv6 address unreachable. */
export const ICMPV6_ADDRESS_UNREACHABLE = 3;
/** ICMPv6 no route to destination. */
export const ICMPV6_NO_ROUTE = 0;

/**
 * Writes an ICMP error message (header and as much of `quoted` as fits in `room`
 * bytes) at `buf[offset]`.
 * @returns the message's length
 */
function writeIcmpError(
  buf: Uint8Array,
  offset: number,
  room: number,
  type: number,
  code: number,
  rest: number,
  quoted: Uint8Array,
): number {
  const n = Math.min(quoted.length, room - ICMP_HEADER_LENGTH);
  buildIcmp(buf, offset, type, code, rest);
  buf.set(quoted.subarray(0, n), offset + ICMP_HEADER_LENGTH);
  return ICMP_HEADER_LENGTH + n;
}

/**
 * Sends an ICMPv4 error from `from` to `to` quoting `quoted` (the offending IPv4
 * packet from its header on), cut to fit 576 bytes.
 * @param rest the 32-bit field after the checksum (next-hop MTU for "fragmentation needed")
 */
export function sendIcmpv4Error(
  sender: GuestSender,
  type: number,
  code: number,
  rest: number,
  from: number,
  to: number,
  quoted: Uint8Array,
): SendResult {
  const room = ICMPV4_ERROR_MAX - IPV4_HEADER_MIN;
  const length = writeIcmpError(sender.buffer, L4_OFFSET_V4, room, type, code, rest, quoted);
  return sender.sendIpv4(IPPROTO_ICMP, from, to, length);
}

/**
 * Sends an ICMPv6 error from `from` to `to` quoting `quoted` (the offending IPv6
 * packet from its header on), cut to fit 1280 bytes.
 * @param rest the 32-bit field (MTU for Packet Too Big, pointer for Parameter Problem)
 */
export function sendIcmpv6Error(
  sender: GuestSender,
  type: number,
  code: number,
  rest: number,
  from: Uint8Array,
  to: Uint8Array,
  quoted: Uint8Array,
): SendResult {
  const room = ICMPV6_ERROR_MAX - IPV6_HEADER_LENGTH;
  const length = writeIcmpError(sender.buffer, L4_OFFSET_V6, room, type, code, rest, quoted);
  return sender.sendIpv6(IPPROTO_ICMPV6, from, to, length);
}
