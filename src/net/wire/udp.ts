/**
 * UDP header (RFC 768): decoding with the length checked against the IP payload,
 * checksum verification and building with the pseudo-header checksum.
 *
 * @module
 */

import { l4ChecksumV4, l4ChecksumV6, setL4ChecksumV4, setL4ChecksumV6 } from "./checksum.ts";
import { IPPROTO_UDP } from "./ip_protocol.ts";

/** Offset of the source port (RFC 768). */
export const UDP_SRC_PORT = 0;
/** Offset of the destination port. */
export const UDP_DST_PORT = 2;
/** Offset of the length (header plus data). */
export const UDP_LENGTH = 4;
/** Offset of the checksum. */
export const UDP_CHECKSUM = 6;
/** Length of the UDP header. */
export const UDP_HEADER_LENGTH = 8;

/** A decoded UDP header. */
export interface UdpHeader {
  srcPort: number;
  dstPort: number;
  /** The length field (header + data). */
  length: number;
  checksum: number;
  /** Offset of the data in the buffer passed to the parser. */
  payloadOffset: number;
  /** Data length (length field minus 8). */
  payloadLength: number;
}

/** Creates an empty header object to be filled by {@link parseUdp}. */
export function newUdpHeader(): UdpHeader {
  return { srcPort: 0, dstPort: 0, length: 0, checksum: 0, payloadOffset: 0, payloadLength: 0 };
}

/** Result of {@link parseUdp}. */
export type UdpParseStatus = "ok" | "udp-truncated" | "udp-bad-length";

/**
 * Decodes the UDP header at `buf[offset]`; the IP payload ends at `end`.
 * The length field must be ≥ 8 and ≤ the IP payload; bytes past it are ignored.
 * Never throws.
 */
export function parseUdp(
  buf: Uint8Array,
  offset: number,
  end: number,
  out: UdpHeader,
): UdpParseStatus {
  if (end > buf.length) end = buf.length;
  if (offset < 0 || end - offset < UDP_HEADER_LENGTH) return "udp-truncated";
  const length = udpLengthField(buf, offset);
  if (length < UDP_HEADER_LENGTH || length > end - offset) return "udp-bad-length";
  out.srcPort = (buf[offset + UDP_SRC_PORT] << 8) | buf[offset + UDP_SRC_PORT + 1];
  out.dstPort = (buf[offset + UDP_DST_PORT] << 8) | buf[offset + UDP_DST_PORT + 1];
  out.length = length;
  out.checksum = (buf[offset + UDP_CHECKSUM] << 8) | buf[offset + UDP_CHECKSUM + 1];
  out.payloadOffset = offset + UDP_HEADER_LENGTH;
  out.payloadLength = length - UDP_HEADER_LENGTH;
  return "ok";
}

/**
 * Writes a UDP header for `payloadLength` bytes of data at `buf[offset]` with a zero
 * checksum; call {@link setUdpChecksumV4} / {@link setUdpChecksumV6} once the data is in place.
 * @returns the header length (8)
 * @throws RangeError when the datagram is longer than 65535 bytes or the header does not fit
 */
export function buildUdp(
  buf: Uint8Array,
  offset: number,
  srcPort: number,
  dstPort: number,
  payloadLength: number,
): number {
  const length = UDP_HEADER_LENGTH + payloadLength;
  if (payloadLength < 0 || length > 0xffff) {
    throw new RangeError(`Cannot build UDP header: length ${length} is outside 8..65535`);
  }
  if (offset < 0 || offset + UDP_HEADER_LENGTH > buf.length) {
    throw new RangeError(
      `Cannot write UDP header at ${offset}+8: buffer holds ${buf.length} bytes`,
    );
  }
  buf[offset + UDP_SRC_PORT] = srcPort >>> 8;
  buf[offset + UDP_SRC_PORT + 1] = srcPort;
  buf[offset + UDP_DST_PORT] = dstPort >>> 8;
  buf[offset + UDP_DST_PORT + 1] = dstPort;
  buf[offset + UDP_LENGTH] = length >>> 8;
  buf[offset + UDP_LENGTH + 1] = length;
  buf[offset + UDP_CHECKSUM] = 0;
  buf[offset + UDP_CHECKSUM + 1] = 0;
  return UDP_HEADER_LENGTH;
}

/**
 * Rewrites the checksum `stored` into the UDP datagram at `buf[offset]` as 0xffff
 * when it is zero: a zero field means "no checksum" (RFC 768).
 */
export function udpChecksumZeroAsOnes(buf: Uint8Array, offset: number, stored: number): void {
  if (stored !== 0) return;
  buf[offset + UDP_CHECKSUM] = 0xff;
  buf[offset + UDP_CHECKSUM + 1] = 0xff;
}

/** The length field (header plus data) of the UDP header at `buf[offset]`. */
function udpLengthField(buf: Uint8Array, offset: number): number {
  return (buf[offset + UDP_LENGTH] << 8) | buf[offset + UDP_LENGTH + 1];
}

/** Computes and stores the checksum of the UDP datagram at `buf[offset]` over IPv4. */
export function setUdpChecksumV4(buf: Uint8Array, offset: number, src: number, dst: number): void {
  const length = udpLengthField(buf, offset);
  const sum = setL4ChecksumV4(buf, offset, length, IPPROTO_UDP, UDP_CHECKSUM, src, dst);
  udpChecksumZeroAsOnes(buf, offset, sum);
}

/** Computes and stores the checksum of the UDP datagram at `buf[offset]` over IPv6. */
export function setUdpChecksumV6(
  buf: Uint8Array,
  offset: number,
  src: Uint8Array,
  dst: Uint8Array,
): void {
  const length = udpLengthField(buf, offset);
  const sum = setL4ChecksumV6(buf, offset, length, IPPROTO_UDP, UDP_CHECKSUM, src, dst);
  udpChecksumZeroAsOnes(buf, offset, sum);
}

/**
 * Whether the UDP datagram `buf[offset, offset+length)` over IPv4 has a valid checksum;
 * a zero checksum field ("none", RFC 768) counts as valid.
 */
export function udpChecksumOkV4(
  buf: Uint8Array,
  offset: number,
  length: number,
  src: number,
  dst: number,
): boolean {
  if (buf[offset + UDP_CHECKSUM] === 0 && buf[offset + UDP_CHECKSUM + 1] === 0) return true;
  return l4ChecksumV4(buf, offset, length, IPPROTO_UDP, src, dst) === 0;
}

/**
 * Whether the UDP datagram over IPv6 has a valid checksum (mandatory for IPv6,
 * RFC 8200 §8.1: a zero field is invalid).
 */
export function udpChecksumOkV6(
  buf: Uint8Array,
  offset: number,
  length: number,
  src: Uint8Array,
  dst: Uint8Array,
): boolean {
  if (buf[offset + UDP_CHECKSUM] === 0 && buf[offset + UDP_CHECKSUM + 1] === 0) return false;
  return l4ChecksumV6(buf, offset, length, IPPROTO_UDP, src, 0, dst, 0) === 0;
}
