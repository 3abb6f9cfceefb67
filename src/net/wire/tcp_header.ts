/**
 * TCP header (RFC 9293 §3.1) with the options the stack uses: MSS (RFC 9293 §3.2),
 * window scale and timestamps (RFC 7323), SACK-permitted (RFC 2018). Option
 * parsing tolerates absurd lengths: a length below 2 or running past the header
 * ends the walk (options found so far are kept, {@link TcpHeader.optionsMalformed}
 * is set); an option with the wrong length for its kind is ignored.
 *
 * @module
 */

import { l4ChecksumV4, l4ChecksumV6, setL4ChecksumV4, setL4ChecksumV6 } from "./checksum.ts";
import { IPPROTO_TCP } from "./ip_protocol.ts";

/** Offset of the source port (RFC 9293 §3.1). */
export const TCP_SRC_PORT_OFFSET = 0;
/** Offset of the destination port. */
export const TCP_DST_PORT_OFFSET = 2;
/** Offset of the sequence number. */
export const TCP_SEQ_NUMBER_OFFSET = 4;
/** Offset of the acknowledgment number. */
export const TCP_ACK_NUMBER_OFFSET = 8;
/** Offset of the Data Offset field (high nibble, header length in 32-bit words). */
export const TCP_DATA_OFFSET = 12;
/** Offset of the control bits (CWR ECE URG ACK PSH RST SYN FIN). */
export const TCP_FLAGS_OFFSET = 13;
/** Offset of the window. */
export const TCP_WINDOW_OFFSET = 14;
/** Offset of the checksum. */
export const TCP_CHECKSUM_OFFSET = 16;
/** Offset of the urgent pointer. */
export const TCP_URGENT_OFFSET = 18;
/** Length of a header without options. */
export const TCP_HEADER_MIN = 20;
/** Longest header (data offset 15). */
export const TCP_HEADER_MAX = 60;

/** FIN control bit (RFC 9293 §3.1). */
export const TCP_FIN = 0x01;
/** SYN control bit. */
export const TCP_SYN = 0x02;
/** RST control bit. */
export const TCP_RST = 0x04;
/** PSH control bit. */
export const TCP_PSH = 0x08;
/** ACK control bit. */
export const TCP_ACK_FLAG = 0x10;
/** URG control bit. */
export const TCP_URG = 0x20;
/** ECE control bit (RFC 3168). */
export const TCP_ECE = 0x40;
/** CWR control bit (RFC 3168). */
export const TCP_CWR = 0x80;

/** End of option list (RFC 9293 §3.2). */
export const TCPOPT_EOL = 0;
/** No-operation. */
export const TCPOPT_NOP = 1;
/** Maximum segment size, length 4. */
export const TCPOPT_MSS = 2;
/** Window scale, length 3 (RFC 7323 §2.2). */
export const TCPOPT_WINDOW_SCALE = 3;
/** SACK permitted, length 2 (RFC 2018 §2). */
export const TCPOPT_SACK_PERMITTED = 4;
/** SACK blocks (RFC 2018 §3). */
export const TCPOPT_SACK = 5;
/** Timestamps, length 10 (RFC 7323 §3.2). */
export const TCPOPT_TIMESTAMPS = 8;
/** Largest window scale shift allowed (RFC 7323 §2.3). */
export const TCP_MAX_WINDOW_SCALE = 14;

/** A decoded TCP header. Absent options: mss -1, windowScale -1, flags false. */
export interface TcpHeader {
  srcPort: number;
  dstPort: number;
  /** Sequence number, unsigned 32-bit. */
  seq: number;
  /** Acknowledgment number, unsigned 32-bit. */
  ack: number;
  /** Header length in bytes (data offset × 4). */
  headerLength: number;
  /** Control bits (low 8 bits of the 16-bit word). */
  flags: number;
  window: number;
  checksum: number;
  urgent: number;
  /** MSS option value or -1. */
  mss: number;
  /** Window scale shift or -1 (values above 14 are clamped to 14, RFC 7323 §2.3). */
  windowScale: number;
  sackPermitted: boolean;
  hasTimestamps: boolean;
  tsVal: number;
  tsEcr: number;
  /** Whether the option walk stopped at a bad length. */
  optionsMalformed: boolean;
  /** Offset of the data in the buffer passed to the parser. */
  payloadOffset: number;
  payloadLength: number;
}

/** Creates an empty header object to be filled by {@link parseTcp}. */
export function newTcpHeader(): TcpHeader {
  return {
    srcPort: 0,
    dstPort: 0,
    seq: 0,
    ack: 0,
    headerLength: 0,
    flags: 0,
    window: 0,
    checksum: 0,
    urgent: 0,
    mss: -1,
    windowScale: -1,
    sackPermitted: false,
    hasTimestamps: false,
    tsVal: 0,
    tsEcr: 0,
    optionsMalformed: false,
    payloadOffset: 0,
    payloadLength: 0,
  };
}

/** Result of {@link parseTcp}. */
export type TcpParseStatus = "ok" | "tcp-truncated" | "tcp-bad-data-offset";

function u32(buf: Uint8Array, o: number): number {
  return ((buf[o] << 24) | (buf[o + 1] << 16) | (buf[o + 2] << 8) | buf[o + 3]) >>> 0;
}

function putU32(buf: Uint8Array, o: number, v: number): void {
  buf[o] = v >>> 24;
  buf[o + 1] = v >>> 16;
  buf[o + 2] = v >>> 8;
  buf[o + 3] = v;
}

/**
 * Decodes the TCP header at `buf[offset]`; the segment ends at `end` (the end of
 * the IP payload). Never throws.
 */
export function parseTcp(
  buf: Uint8Array,
  offset: number,
  end: number,
  out: TcpHeader,
): TcpParseStatus {
  if (end > buf.length) end = buf.length;
  if (offset < 0 || end - offset < TCP_HEADER_MIN) return "tcp-truncated";
  const headerLength = (buf[offset + TCP_DATA_OFFSET] >> 4) * 4;
  if (headerLength < TCP_HEADER_MIN) return "tcp-bad-data-offset";
  if (headerLength > end - offset) return "tcp-truncated";
  out.srcPort = (buf[offset + TCP_SRC_PORT_OFFSET] << 8) | buf[offset + TCP_SRC_PORT_OFFSET + 1];
  out.dstPort = (buf[offset + TCP_DST_PORT_OFFSET] << 8) | buf[offset + TCP_DST_PORT_OFFSET + 1];
  out.seq = u32(buf, offset + TCP_SEQ_NUMBER_OFFSET);
  out.ack = u32(buf, offset + TCP_ACK_NUMBER_OFFSET);
  out.headerLength = headerLength;
  out.flags = buf[offset + TCP_FLAGS_OFFSET];
  out.window = (buf[offset + TCP_WINDOW_OFFSET] << 8) | buf[offset + TCP_WINDOW_OFFSET + 1];
  out.checksum = (buf[offset + TCP_CHECKSUM_OFFSET] << 8) | buf[offset + TCP_CHECKSUM_OFFSET + 1];
  out.urgent = (buf[offset + TCP_URGENT_OFFSET] << 8) | buf[offset + TCP_URGENT_OFFSET + 1];
  out.mss = -1;
  out.windowScale = -1;
  out.sackPermitted = false;
  out.hasTimestamps = false;
  out.tsVal = 0;
  out.tsEcr = 0;
  out.optionsMalformed = false;
  const optEnd = offset + headerLength;
  let p = offset + TCP_HEADER_MIN;
  while (p < optEnd) {
    const kind = buf[p];
    if (kind === TCPOPT_EOL) break;
    if (kind === TCPOPT_NOP) {
      p++;
      continue;
    }
    if (p + 1 >= optEnd) {
      out.optionsMalformed = true;
      break;
    }
    const len = buf[p + 1];
    if (len < 2 || p + len > optEnd) {
      out.optionsMalformed = true;
      break;
    }
    switch (kind) {
      case TCPOPT_MSS:
        if (len === 4) out.mss = (buf[p + 2] << 8) | buf[p + 3];
        break;
      case TCPOPT_WINDOW_SCALE:
        if (len === 3) out.windowScale = Math.min(buf[p + 2], TCP_MAX_WINDOW_SCALE);
        break;
      case TCPOPT_SACK_PERMITTED:
        if (len === 2) out.sackPermitted = true;
        break;
      case TCPOPT_TIMESTAMPS:
        if (len === 10) {
          out.hasTimestamps = true;
          out.tsVal = u32(buf, p + 2);
          out.tsEcr = u32(buf, p + 6);
        }
        break;
    }
    p += len;
  }
  out.payloadOffset = optEnd;
  out.payloadLength = end - optEnd;
  return "ok";
}

/** Fields for {@link buildTcp}; options are included when present / not -1. */
export interface TcpBuildFields {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  urgent?: number;
  mss?: number;
  windowScale?: number;
  sackPermitted?: boolean;
  timestamps?: { tsVal: number; tsEcr: number };
}

/** Header length {@link buildTcp} will produce for these fields (options padded to 4). */
export function tcpHeaderLength(f: TcpBuildFields): number {
  let n = 0;
  if (f.mss !== undefined && f.mss >= 0) n += 4;
  if (f.windowScale !== undefined && f.windowScale >= 0) n += 4; // NOP + 3
  if (f.sackPermitted) n += 4; // NOP NOP + 2 (or shared with timestamps)
  if (f.timestamps) n += 12; // NOP NOP + 10
  return TCP_HEADER_MIN + n;
}

/**
 * Writes a TCP header with options at `buf[offset]`, checksum zero (fill it with
 * {@link setTcpChecksumV4} / {@link setTcpChecksumV6} after the data is in place).
 * @returns the header length
 * @throws RangeError when the header does not fit in `buf`
 */
export function buildTcp(buf: Uint8Array, offset: number, f: TcpBuildFields): number {
  const headerLength = tcpHeaderLength(f);
  if (offset < 0 || offset + headerLength > buf.length) {
    throw new RangeError(
      `Cannot write TCP header at ${offset}+${headerLength}: buffer holds ${buf.length} bytes`,
    );
  }
  buf[offset + TCP_SRC_PORT_OFFSET] = f.srcPort >>> 8;
  buf[offset + TCP_SRC_PORT_OFFSET + 1] = f.srcPort;
  buf[offset + TCP_DST_PORT_OFFSET] = f.dstPort >>> 8;
  buf[offset + TCP_DST_PORT_OFFSET + 1] = f.dstPort;
  putU32(buf, offset + TCP_SEQ_NUMBER_OFFSET, f.seq);
  putU32(buf, offset + TCP_ACK_NUMBER_OFFSET, f.ack);
  buf[offset + TCP_DATA_OFFSET] = (headerLength >> 2) << 4;
  buf[offset + TCP_FLAGS_OFFSET] = f.flags;
  buf[offset + TCP_WINDOW_OFFSET] = f.window >>> 8;
  buf[offset + TCP_WINDOW_OFFSET + 1] = f.window;
  buf[offset + TCP_CHECKSUM_OFFSET] = 0;
  buf[offset + TCP_CHECKSUM_OFFSET + 1] = 0;
  const urgent = f.urgent ?? 0;
  buf[offset + TCP_URGENT_OFFSET] = urgent >>> 8;
  buf[offset + TCP_URGENT_OFFSET + 1] = urgent;
  let p = offset + TCP_HEADER_MIN;
  if (f.mss !== undefined && f.mss >= 0) {
    buf[p++] = TCPOPT_MSS;
    buf[p++] = 4;
    buf[p++] = f.mss >>> 8;
    buf[p++] = f.mss;
  }
  if (f.windowScale !== undefined && f.windowScale >= 0) {
    buf[p++] = TCPOPT_NOP;
    buf[p++] = TCPOPT_WINDOW_SCALE;
    buf[p++] = 3;
    buf[p++] = f.windowScale;
  }
  if (f.sackPermitted) {
    buf[p++] = TCPOPT_NOP;
    buf[p++] = TCPOPT_NOP;
    buf[p++] = TCPOPT_SACK_PERMITTED;
    buf[p++] = 2;
  }
  if (f.timestamps) {
    buf[p++] = TCPOPT_NOP;
    buf[p++] = TCPOPT_NOP;
    buf[p++] = TCPOPT_TIMESTAMPS;
    buf[p++] = 10;
    putU32(buf, p, f.timestamps.tsVal);
    putU32(buf, p + 4, f.timestamps.tsEcr);
    p += 8;
  }
  return headerLength;
}

/** Computes and stores the checksum of the segment `buf[offset, offset+length)` over IPv4. */
export function setTcpChecksumV4(
  buf: Uint8Array,
  offset: number,
  length: number,
  src: number,
  dst: number,
): void {
  setL4ChecksumV4(buf, offset, length, IPPROTO_TCP, TCP_CHECKSUM_OFFSET, src, dst);
}

/** Computes and stores the checksum of the segment over IPv6. */
export function setTcpChecksumV6(
  buf: Uint8Array,
  offset: number,
  length: number,
  src: Uint8Array,
  dst: Uint8Array,
): void {
  setL4ChecksumV6(buf, offset, length, IPPROTO_TCP, TCP_CHECKSUM_OFFSET, src, dst);
}

/** Whether the segment over IPv4 has a valid checksum. */
export function tcpChecksumOkV4(
  buf: Uint8Array,
  offset: number,
  length: number,
  src: number,
  dst: number,
): boolean {
  return l4ChecksumV4(buf, offset, length, IPPROTO_TCP, src, dst) === 0;
}

/** Whether the segment over IPv6 has a valid checksum. */
export function tcpChecksumOkV6(
  buf: Uint8Array,
  offset: number,
  length: number,
  src: Uint8Array,
  dst: Uint8Array,
): boolean {
  return l4ChecksumV6(buf, offset, length, IPPROTO_TCP, src, 0, dst, 0) === 0;
}
