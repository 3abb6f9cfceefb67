/**
 * ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) message headers: echo request/reply and
 * the error messages (destination unreachable, time exceeded, packet too big,
 * parameter problem). Both share the layout type, code, checksum, then a 32-bit
 * field (identifier + sequence for echo; unused / MTU / pointer for errors).
 *
 * @module
 */

import { internetChecksum, l4ChecksumV6, setL4ChecksumV6 } from "./checksum.ts";
import { IPPROTO_ICMPV6 } from "./ip_protocol.ts";

/** Offset of the type (RFC 792, RFC 4443 §2.1). */
export const ICMP_TYPE = 0;
/** Offset of the code. */
export const ICMP_CODE = 1;
/** Offset of the checksum. */
export const ICMP_CHECKSUM = 2;
/** Offset of the echo identifier (RFC 792 "Echo", RFC 4443 §4.1). */
export const ICMP_ECHO_ID = 4;
/** Offset of the echo sequence number. */
export const ICMP_ECHO_SEQ = 6;
/** Offset of the 32-bit field of error messages (MTU for Packet Too Big, pointer). */
export const ICMP_REST = 4;
/** Length of the ICMP header (type, code, checksum, 32-bit field). */
export const ICMP_HEADER_LENGTH = 8;

/** ICMPv4 message types (RFC 792). */
export const Icmpv4Type = {
  EchoReply: 0,
  DestinationUnreachable: 3,
  EchoRequest: 8,
  TimeExceeded: 11,
  ParameterProblem: 12,
} as const;

/** ICMPv6 message types (RFC 4443 §2.1, RFC 4861 §4). */
export const Icmpv6Type = {
  DestinationUnreachable: 1,
  PacketTooBig: 2,
  TimeExceeded: 3,
  ParameterProblem: 4,
  EchoRequest: 128,
  EchoReply: 129,
  RouterSolicitation: 133,
  RouterAdvertisement: 134,
  NeighborSolicitation: 135,
  NeighborAdvertisement: 136,
} as const;

/** A decoded ICMP header. */
export interface IcmpHeader {
  type: number;
  code: number;
  checksum: number;
  /** Echo identifier (bytes 4-5). */
  id: number;
  /** Echo sequence number (bytes 6-7). */
  seq: number;
  /** The 32-bit field at offset 4 (unsigned). */
  rest: number;
  /** Offset of the message body (echo data or the quoted packet). */
  payloadOffset: number;
  payloadLength: number;
}

/** Creates an empty header object to be filled by {@link parseIcmp}. */
export function newIcmpHeader(): IcmpHeader {
  return {
    type: 0,
    code: 0,
    checksum: 0,
    id: 0,
    seq: 0,
    rest: 0,
    payloadOffset: 0,
    payloadLength: 0,
  };
}

/** Result of {@link parseIcmp}. */
export type IcmpParseStatus = "ok" | "icmp-truncated";

/** Decodes the ICMP(v6) header at `buf[offset]`, the message ending at `end`. Never throws. */
export function parseIcmp(
  buf: Uint8Array,
  offset: number,
  end: number,
  out: IcmpHeader,
): IcmpParseStatus {
  if (end > buf.length) end = buf.length;
  if (offset < 0 || end - offset < ICMP_HEADER_LENGTH) return "icmp-truncated";
  out.type = buf[offset + ICMP_TYPE];
  out.code = buf[offset + ICMP_CODE];
  out.checksum = (buf[offset + ICMP_CHECKSUM] << 8) | buf[offset + ICMP_CHECKSUM + 1];
  const a = buf[offset + 4], b = buf[offset + 5], c = buf[offset + 6], d = buf[offset + 7];
  out.id = (a << 8) | b;
  out.seq = (c << 8) | d;
  out.rest = ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
  out.payloadOffset = offset + ICMP_HEADER_LENGTH;
  out.payloadLength = end - offset - ICMP_HEADER_LENGTH;
  return "ok";
}

/**
 * Writes an 8-byte ICMP header (type, code, zero checksum, 32-bit `rest`) at `buf[offset]`.
 * For echo messages pass `rest = id << 16 | seq` or use {@link buildIcmpEcho}.
 * @throws RangeError when the header does not fit
 */
export function buildIcmp(
  buf: Uint8Array,
  offset: number,
  type: number,
  code: number,
  rest: number,
): number {
  if (offset < 0 || offset + ICMP_HEADER_LENGTH > buf.length) {
    throw new RangeError(
      `Cannot write ICMP header at ${offset}+8: buffer holds ${buf.length} bytes`,
    );
  }
  buf[offset + ICMP_TYPE] = type;
  buf[offset + ICMP_CODE] = code;
  buf[offset + ICMP_CHECKSUM] = 0;
  buf[offset + ICMP_CHECKSUM + 1] = 0;
  buf[offset + 4] = rest >>> 24;
  buf[offset + 5] = rest >>> 16;
  buf[offset + 6] = rest >>> 8;
  buf[offset + 7] = rest;
  return ICMP_HEADER_LENGTH;
}

/** Writes an echo request/reply header (code 0) with identifier and sequence number. */
export function buildIcmpEcho(
  buf: Uint8Array,
  offset: number,
  type: number,
  id: number,
  seq: number,
): number {
  return buildIcmp(buf, offset, type, 0, (((id & 0xffff) << 16) | (seq & 0xffff)) >>> 0);
}

/** Computes and stores the ICMPv4 checksum of `buf[offset, offset+length)` (RFC 792). */
export function setIcmpv4Checksum(buf: Uint8Array, offset: number, length: number): void {
  buf[offset + ICMP_CHECKSUM] = 0;
  buf[offset + ICMP_CHECKSUM + 1] = 0;
  const c = internetChecksum(buf, offset, length);
  buf[offset + ICMP_CHECKSUM] = c >>> 8;
  buf[offset + ICMP_CHECKSUM + 1] = c;
}

/** Computes and stores the ICMPv6 checksum with the IPv6 pseudo-header (RFC 4443 §2.3). */
export function setIcmpv6Checksum(
  buf: Uint8Array,
  offset: number,
  length: number,
  src: Uint8Array,
  dst: Uint8Array,
): void {
  setL4ChecksumV6(buf, offset, length, IPPROTO_ICMPV6, ICMP_CHECKSUM, src, dst);
}

/** Whether the ICMPv4 message `buf[offset, offset+length)` has a valid checksum. */
export function icmpv4ChecksumOk(buf: Uint8Array, offset: number, length: number): boolean {
  return internetChecksum(buf, offset, length) === 0;
}

/** Whether the ICMPv6 message has a valid checksum (pseudo-header included). */
export function icmpv6ChecksumOk(
  buf: Uint8Array,
  offset: number,
  length: number,
  src: Uint8Array,
  dst: Uint8Array,
): boolean {
  return l4ChecksumV6(buf, offset, length, IPPROTO_ICMPV6, src, 0, dst, 0) === 0;
}

/** Whether an ICMPv4 type is an error message (carries a quoted packet, RFC 792). */
export function isIcmpv4Error(type: number): boolean {
  return type === Icmpv4Type.DestinationUnreachable || type === Icmpv4Type.TimeExceeded ||
    type === Icmpv4Type.ParameterProblem;
}

/** Whether an ICMPv6 type is an error message (types 0-127, RFC 4443 §2.1). */
export function isIcmpv6Error(type: number): boolean {
  return type < 128;
}
