/**
 * IPv4 header (RFC 791 §3.1): decoding with every length checked against the
 * frame, fragment detection, and building with the header checksum.
 *
 * @module
 */

import { readIpv4, writeIpv4 } from "./address.ts";
import { internetChecksum } from "./checksum.ts";

/** Offset of version (high nibble) and IHL (low nibble, 32-bit words) (RFC 791 §3.1). */
export const IPV4_VER_IHL = 0;
/** Offset of the type of service / DSCP+ECN byte (RFC 791 §3.1, RFC 2474). */
export const IPV4_TOS = 1;
/** Offset of the total length, header plus data (RFC 791 §3.1). */
export const IPV4_TOTAL_LENGTH = 2;
/** Offset of the identification field. */
export const IPV4_ID = 4;
/** Offset of flags (3 high bits) and fragment offset (13 bits, 8-byte units). */
export const IPV4_FLAGS_FRAGMENT = 6;
/** Offset of the time to live. */
export const IPV4_TTL = 8;
/** Offset of the protocol number. */
export const IPV4_PROTOCOL = 9;
/** Offset of the header checksum. */
export const IPV4_CHECKSUM = 10;
/** Offset of the source address. */
export const IPV4_SRC = 12;
/** Offset of the destination address. */
export const IPV4_DST = 16;
/** Length of a header without options (IHL 5). */
export const IPV4_HEADER_MIN = 20;
/** Longest header (IHL 15). */
export const IPV4_HEADER_MAX = 60;

/** Don't Fragment flag in the flags/fragment word (RFC 791 §3.1). */
export const IPV4_FLAG_DF = 0x4000;
/** More Fragments flag. */
export const IPV4_FLAG_MF = 0x2000;
/** Mask of the fragment offset in the flags/fragment word. */
export const IPV4_FRAGMENT_OFFSET_MASK = 0x1fff;
/** Default TTL of packets we originate (RFC 1700 recommends 64). */
export const IPV4_DEFAULT_TTL = 64;

/** A decoded IPv4 header. Addresses are unsigned 32-bit numbers. */
export interface Ipv4Header {
  /** Header length in bytes (IHL × 4). */
  headerLength: number;
  tos: number;
  totalLength: number;
  id: number;
  /** The flag bits (DF, MF) as in the flags/fragment word. */
  flags: number;
  /** Fragment offset in 8-byte units. */
  fragmentOffset: number;
  ttl: number;
  protocol: number;
  checksum: number;
  src: number;
  dst: number;
  /** Whether the packet is a fragment (MF set or a non-zero offset): the stack drops those. */
  isFragment: boolean;
  /** Offset of the payload in the buffer passed to the parser. */
  payloadOffset: number;
  /** Payload length from the total length (never beyond the buffer). */
  payloadLength: number;
}

/** Creates an empty header object to be filled by {@link parseIpv4Header}. */
export function newIpv4Header(): Ipv4Header {
  return {
    headerLength: 0,
    tos: 0,
    totalLength: 0,
    id: 0,
    flags: 0,
    fragmentOffset: 0,
    ttl: 0,
    protocol: 0,
    checksum: 0,
    src: 0,
    dst: 0,
    isFragment: false,
    payloadOffset: 0,
    payloadLength: 0,
  };
}

/** Result of {@link parseIpv4Header}: "ok" or the reason the packet is malformed. */
export type Ipv4ParseStatus =
  | "ok"
  | "ipv4-truncated"
  | "ipv4-bad-version"
  | "ipv4-bad-ihl"
  | "ipv4-bad-total-length"
  | "ipv4-length-beyond-frame"
  | "ipv4-bad-checksum";

/**
 * Decodes the IPv4 header at `buf[offset]`, the packet ending at most at `end`
 * (the frame length). Checks version, IHL, total length (≥ header, ≤ frame) and the
 * header checksum. Bytes after the total length (Ethernet padding) are ignored.
 * Never throws.
 */
export function parseIpv4Header(
  buf: Uint8Array,
  offset: number,
  end: number,
  out: Ipv4Header,
): Ipv4ParseStatus {
  if (end > buf.length) end = buf.length;
  const avail = end - offset;
  if (offset < 0 || avail < IPV4_HEADER_MIN) return "ipv4-truncated";
  const verIhl = buf[offset + IPV4_VER_IHL];
  if (verIhl >> 4 !== 4) return "ipv4-bad-version";
  const headerLength = (verIhl & 0x0f) * 4;
  if (headerLength < IPV4_HEADER_MIN) return "ipv4-bad-ihl";
  if (headerLength > avail) return "ipv4-truncated";
  const totalLength = (buf[offset + IPV4_TOTAL_LENGTH] << 8) | buf[offset + IPV4_TOTAL_LENGTH + 1];
  if (totalLength < headerLength) return "ipv4-bad-total-length";
  if (totalLength > avail) return "ipv4-length-beyond-frame";
  // Sum of a correct header including its checksum field folds to 0xffff (RFC 1071 §1).
  if (internetChecksum(buf, offset, headerLength) !== 0) return "ipv4-bad-checksum";
  const ff = (buf[offset + IPV4_FLAGS_FRAGMENT] << 8) | buf[offset + IPV4_FLAGS_FRAGMENT + 1];
  out.headerLength = headerLength;
  out.tos = buf[offset + IPV4_TOS];
  out.totalLength = totalLength;
  out.id = (buf[offset + IPV4_ID] << 8) | buf[offset + IPV4_ID + 1];
  out.flags = ff & 0xe000;
  out.fragmentOffset = ff & IPV4_FRAGMENT_OFFSET_MASK;
  out.ttl = buf[offset + IPV4_TTL];
  out.protocol = buf[offset + IPV4_PROTOCOL];
  out.checksum = (buf[offset + IPV4_CHECKSUM] << 8) | buf[offset + IPV4_CHECKSUM + 1];
  out.src = readIpv4(buf, offset + IPV4_SRC);
  out.dst = readIpv4(buf, offset + IPV4_DST);
  out.isFragment = (ff & IPV4_FLAG_MF) !== 0 || (ff & IPV4_FRAGMENT_OFFSET_MASK) !== 0;
  out.payloadOffset = offset + headerLength;
  out.payloadLength = totalLength - headerLength;
  return "ok";
}

/** Fields needed to build an IPv4 header with {@link buildIpv4}. */
export interface Ipv4BuildFields {
  tos?: number;
  /** Payload length in bytes (the total length adds the header). */
  payloadLength: number;
  id?: number;
  /** Flag bits, e.g. {@link IPV4_FLAG_DF}; default DF. */
  flags?: number;
  fragmentOffset?: number;
  ttl?: number;
  protocol: number;
  src: number;
  dst: number;
  /** Options, a multiple of 4 bytes, at most 40. */
  options?: Uint8Array;
}

/**
 * Writes an IPv4 header with a valid checksum at `buf[offset]`.
 * @returns the header length
 * @throws RangeError when the options are malformed, the packet exceeds 65535 bytes,
 *   or the header does not fit in `buf`
 */
export function buildIpv4(buf: Uint8Array, offset: number, f: Ipv4BuildFields): number {
  const optLen = f.options?.length ?? 0;
  if (optLen % 4 !== 0 || optLen > IPV4_HEADER_MAX - IPV4_HEADER_MIN) {
    throw new RangeError(`Cannot build IPv4 header: options length ${optLen} is not 0..40 by 4`);
  }
  const headerLength = IPV4_HEADER_MIN + optLen;
  const total = headerLength + f.payloadLength;
  if (total > 0xffff || f.payloadLength < 0) {
    throw new RangeError(`Cannot build IPv4 header: total length ${total} is outside 0..65535`);
  }
  if (offset < 0 || offset + headerLength > buf.length) {
    throw new RangeError(
      `Cannot write IPv4 header at ${offset}+${headerLength}: buffer holds ${buf.length} bytes`,
    );
  }
  const flags = f.flags ?? IPV4_FLAG_DF;
  const ff = (flags & 0xe000) | ((f.fragmentOffset ?? 0) & IPV4_FRAGMENT_OFFSET_MASK);
  buf[offset + IPV4_VER_IHL] = 0x40 | (headerLength >> 2);
  buf[offset + IPV4_TOS] = f.tos ?? 0;
  buf[offset + IPV4_TOTAL_LENGTH] = total >>> 8;
  buf[offset + IPV4_TOTAL_LENGTH + 1] = total;
  const id = f.id ?? 0;
  buf[offset + IPV4_ID] = id >>> 8;
  buf[offset + IPV4_ID + 1] = id;
  buf[offset + IPV4_FLAGS_FRAGMENT] = ff >>> 8;
  buf[offset + IPV4_FLAGS_FRAGMENT + 1] = ff;
  buf[offset + IPV4_TTL] = f.ttl ?? IPV4_DEFAULT_TTL;
  buf[offset + IPV4_PROTOCOL] = f.protocol;
  buf[offset + IPV4_CHECKSUM] = 0;
  buf[offset + IPV4_CHECKSUM + 1] = 0;
  writeIpv4(buf, offset + IPV4_SRC, f.src);
  writeIpv4(buf, offset + IPV4_DST, f.dst);
  if (f.options) buf.set(f.options, offset + IPV4_HEADER_MIN);
  const c = internetChecksum(buf, offset, headerLength);
  buf[offset + IPV4_CHECKSUM] = c >>> 8;
  buf[offset + IPV4_CHECKSUM + 1] = c;
  return headerLength;
}

/** Recomputes the header checksum of the IPv4 header at `buf[offset]` in place. */
export function updateIpv4Checksum(buf: Uint8Array, offset: number): void {
  const headerLength = (buf[offset] & 0x0f) * 4;
  buf[offset + IPV4_CHECKSUM] = 0;
  buf[offset + IPV4_CHECKSUM + 1] = 0;
  const folded = internetChecksum(buf, offset, headerLength);
  buf[offset + IPV4_CHECKSUM] = folded >>> 8;
  buf[offset + IPV4_CHECKSUM + 1] = folded;
}
