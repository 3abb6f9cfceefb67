/**
 * IPv6 fixed header (RFC 8200 §3) and extension-header walk.
 *
 * Decision on extension headers: Hop-by-Hop Options (0), Routing (43) and
 * Destination Options (60) are skipped (at most {@link IPV6_MAX_EXTENSION_HEADERS}),
 * because guests send MLD reports behind a Hop-by-Hop header (router alert) and the
 * stack only needs the upper-layer protocol. A Fragment header (44) marks the packet
 * as a fragment, which the stack drops (we never reassemble). Any other next header
 * value, including ESP/AH/No Next Header, ends the walk and is reported as the
 * upper-layer protocol as is.
 *
 * @module
 */

/** Offset of version (4 bits), traffic class (8), flow label (20) (RFC 8200 §3). */
export const IPV6_VER_TC_FLOW = 0;
/** Offset of the payload length (everything after the fixed header). */
export const IPV6_PAYLOAD_LENGTH = 4;
/** Offset of the next header. */
export const IPV6_NEXT_HEADER = 6;
/** Offset of the hop limit. */
export const IPV6_HOP_LIMIT = 7;
/** Offset of the source address. */
export const IPV6_SRC = 8;
/** Offset of the destination address. */
export const IPV6_DST = 24;
/** Length of the fixed header. */
export const IPV6_HEADER_LENGTH = 40;

/** Next header value of Hop-by-Hop Options (RFC 8200 §4.3). */
export const IPV6_EXT_HOP_BY_HOP = 0;
/** Next header value of the Routing header (RFC 8200 §4.4). */
export const IPV6_EXT_ROUTING = 43;
/** Next header value of the Fragment header (RFC 8200 §4.5). */
export const IPV6_EXT_FRAGMENT = 44;
/** Next header value of Destination Options (RFC 8200 §4.6). */
export const IPV6_EXT_DEST_OPTS = 60;
/** Most extension headers walked before the packet is rejected. */
export const IPV6_MAX_EXTENSION_HEADERS = 8;
/** Default hop limit of packets we originate (other than NDP, which uses 255). */
export const IPV6_DEFAULT_HOP_LIMIT = 64;

/** A decoded IPv6 header. The address arrays are owned by the object and overwritten. */
export interface Ipv6Header {
  trafficClass: number;
  flowLabel: number;
  /** The payload length field. */
  payloadLength: number;
  /** The next header field of the fixed header. */
  nextHeader: number;
  hopLimit: number;
  /** Source address (16 bytes, overwritten by each parse). */
  readonly src: Uint8Array;
  /** Destination address (16 bytes, overwritten by each parse). */
  readonly dst: Uint8Array;
  /** Upper-layer protocol after skipping extension headers. */
  protocol: number;
  /** Offset of the upper-layer header in the buffer passed to the parser. */
  l4Offset: number;
  /** Length of the upper-layer part (payload minus extension headers). */
  l4Length: number;
  /** Whether a Fragment header was found. */
  isFragment: boolean;
}

/** Creates an empty header object to be filled by {@link parseIpv6Header}. */
export function newIpv6Header(): Ipv6Header {
  return {
    trafficClass: 0,
    flowLabel: 0,
    payloadLength: 0,
    nextHeader: 0,
    hopLimit: 0,
    src: new Uint8Array(16),
    dst: new Uint8Array(16),
    protocol: 0,
    l4Offset: 0,
    l4Length: 0,
    isFragment: false,
  };
}

/** Result of {@link parseIpv6Header}: "ok" or the reason the packet is malformed. */
export type Ipv6ParseStatus =
  | "ok"
  | "ipv6-truncated"
  | "ipv6-bad-version"
  | "ipv6-length-beyond-frame"
  | "ipv6-bad-extension-header"
  | "ipv6-too-many-extension-headers";

/**
 * Decodes the IPv6 header at `buf[offset]` (packet ending at most at `end`) and
 * walks the extension headers. Bytes after the payload length are ignored.
 * Never throws.
 */
export function parseIpv6Header(
  buf: Uint8Array,
  offset: number,
  end: number,
  out: Ipv6Header,
): Ipv6ParseStatus {
  if (end > buf.length) end = buf.length;
  const avail = end - offset;
  if (offset < 0 || avail < IPV6_HEADER_LENGTH) return "ipv6-truncated";
  const b0 = buf[offset];
  if (b0 >> 4 !== 6) return "ipv6-bad-version";
  const b1 = buf[offset + 1];
  const payloadLength = (buf[offset + IPV6_PAYLOAD_LENGTH] << 8) |
    buf[offset + IPV6_PAYLOAD_LENGTH + 1];
  if (IPV6_HEADER_LENGTH + payloadLength > avail) return "ipv6-length-beyond-frame";
  out.trafficClass = ((b0 & 0x0f) << 4) | (b1 >> 4);
  out.flowLabel = ((b1 & 0x0f) << 16) | (buf[offset + 2] << 8) | buf[offset + 3];
  out.payloadLength = payloadLength;
  const first = buf[offset + IPV6_NEXT_HEADER];
  out.nextHeader = first;
  out.hopLimit = buf[offset + IPV6_HOP_LIMIT];
  for (let i = 0; i < 16; i++) {
    out.src[i] = buf[offset + IPV6_SRC + i];
    out.dst[i] = buf[offset + IPV6_DST + i];
  }
  const payloadEnd = offset + IPV6_HEADER_LENGTH + payloadLength;
  let next = first;
  let pos = offset + IPV6_HEADER_LENGTH;
  let fragment = false;
  for (let n = 0;; n++) {
    if (
      next !== IPV6_EXT_HOP_BY_HOP && next !== IPV6_EXT_ROUTING &&
      next !== IPV6_EXT_DEST_OPTS && next !== IPV6_EXT_FRAGMENT
    ) break;
    if (n >= IPV6_MAX_EXTENSION_HEADERS) return "ipv6-too-many-extension-headers";
    // Hop-by-Hop only directly after the fixed header (RFC 8200 §4.1).
    if (next === IPV6_EXT_HOP_BY_HOP && n !== 0) return "ipv6-bad-extension-header";
    if (pos + 8 > payloadEnd) return "ipv6-bad-extension-header";
    const nh = buf[pos];
    // The Fragment header is always 8 bytes; the others give their length in
    // 8-octet units not counting the first 8 (RFC 8200 §4.3-4.6).
    const len = next === IPV6_EXT_FRAGMENT ? 8 : (buf[pos + 1] + 1) * 8;
    if (pos + len > payloadEnd) return "ipv6-bad-extension-header";
    if (next === IPV6_EXT_FRAGMENT) fragment = true;
    next = nh;
    pos += len;
  }
  out.protocol = next;
  out.l4Offset = pos;
  out.l4Length = payloadEnd - pos;
  out.isFragment = fragment;
  return "ok";
}

/** Fields needed to build an IPv6 fixed header with {@link buildIpv6}. */
export interface Ipv6BuildFields {
  trafficClass?: number;
  flowLabel?: number;
  payloadLength: number;
  nextHeader: number;
  hopLimit?: number;
  src: Uint8Array;
  dst: Uint8Array;
}

/**
 * Writes a 40-byte IPv6 fixed header at `buf[offset]`.
 * @returns the header length (40)
 * @throws RangeError when the payload exceeds 65535 bytes or the header does not fit
 */
export function buildIpv6(buf: Uint8Array, offset: number, f: Ipv6BuildFields): number {
  if (f.payloadLength < 0 || f.payloadLength > 0xffff) {
    throw new RangeError(`Cannot build IPv6 header: payload length ${f.payloadLength} > 65535`);
  }
  if (offset < 0 || offset + IPV6_HEADER_LENGTH > buf.length) {
    throw new RangeError(
      `Cannot write IPv6 header at ${offset}+40: buffer holds ${buf.length} bytes`,
    );
  }
  const tc = f.trafficClass ?? 0;
  const fl = f.flowLabel ?? 0;
  buf[offset] = 0x60 | ((tc >> 4) & 0x0f);
  buf[offset + 1] = ((tc & 0x0f) << 4) | ((fl >> 16) & 0x0f);
  buf[offset + 2] = fl >> 8;
  buf[offset + 3] = fl;
  buf[offset + IPV6_PAYLOAD_LENGTH] = f.payloadLength >>> 8;
  buf[offset + IPV6_PAYLOAD_LENGTH + 1] = f.payloadLength;
  buf[offset + IPV6_NEXT_HEADER] = f.nextHeader;
  buf[offset + IPV6_HOP_LIMIT] = f.hopLimit ?? IPV6_DEFAULT_HOP_LIMIT;
  buf.set(f.src.subarray(0, 16), offset + IPV6_SRC);
  buf.set(f.dst.subarray(0, 16), offset + IPV6_DST);
  return IPV6_HEADER_LENGTH;
}
