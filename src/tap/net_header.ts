/**
 * The virtio-net header that precedes every frame on the rings (virtio 1.2 §5.1.6,
 * `struct virtio_net_hdr` with VIRTIO_F_VERSION_1: always 12 bytes, num_buffers
 * included). Little-endian.
 *
 * Checksum and segmentation offloads (NEEDS_CSUM, DATA_VALID, GSO types) are
 * decoded and encoded field by field; the device offers checksum offload
 * (VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM) and TCP segmentation offload both
 * ways (HOST_TSO4/6, GUEST_TSO4/6 and their ECN bits), no UDP segmentation.
 *
 * @module
 */

/** Offset of `flags` (u8) (virtio 1.2 §5.1.6). */
export const NET_HDR_FLAGS = 0;
/** Offset of `gso_type` (u8) (virtio 1.2 §5.1.6). */
export const NET_HDR_GSO_TYPE = 1;
/** Offset of `hdr_len` (le16) (virtio 1.2 §5.1.6). */
export const NET_HDR_HDR_LEN = 2;
/** Offset of `gso_size` (le16) (virtio 1.2 §5.1.6). */
export const NET_HDR_GSO_SIZE = 4;
/** Offset of `csum_start` (le16) (virtio 1.2 §5.1.6). */
export const NET_HDR_CSUM_START = 6;
/** Offset of `csum_offset` (le16) (virtio 1.2 §5.1.6). */
export const NET_HDR_CSUM_OFFSET = 8;
/** Offset of `num_buffers` (le16) (virtio 1.2 §5.1.6, §5.1.6.3). */
export const NET_HDR_NUM_BUFFERS = 10;
/** Size of the header with VIRTIO_F_VERSION_1 (virtio 1.2 §5.1.6). */
export const NET_HDR_SIZE = 12;

/** Header flag: the checksum at csum_start + csum_offset must be completed (virtio 1.2 §5.1.6). */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/** Header flag: the checksum was validated (virtio 1.2 §5.1.6, RX only). */
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
/** Header flag: RSC information in csum fields (virtio 1.2 §5.1.6). */
export const VIRTIO_NET_HDR_F_RSC_INFO = 4;

/** gso_type: no segmentation (virtio 1.2 §5.1.6). */
export const VIRTIO_NET_HDR_GSO_NONE = 0;
/** gso_type: TCP over IPv4 segmentation (virtio 1.2 §5.1.6). */
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
/** gso_type: UDP fragmentation offload (virtio 1.2 §5.1.6). */
export const VIRTIO_NET_HDR_GSO_UDP = 3;
/** gso_type: TCP over IPv6 segmentation (virtio 1.2 §5.1.6). */
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
/** gso_type: UDP segmentation (virtio 1.2 §5.1.6). */
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
/** gso_type bit: TCP ECN/CWR present (virtio 1.2 §5.1.6). */
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

/** A decoded virtio-net header. */
export interface NetHeader {
  /** VIRTIO_NET_HDR_F_* bits. */
  flags: number;
  /** VIRTIO_NET_HDR_GSO_* value. */
  gsoType: number;
  /** Length of the headers to replicate per segment. */
  hdrLen: number;
  /** Segment payload size for GSO. */
  gsoSize: number;
  /** Where checksumming starts, with NEEDS_CSUM. */
  csumStart: number;
  /** Where the checksum goes, relative to csumStart, with NEEDS_CSUM. */
  csumOffset: number;
  /** How many buffers the frame spans (MRG_RXBUF; 1 otherwise on RX). */
  numBuffers: number;
}

/** Returns a header with every field 0: no offloads. */
export function createNetHeader(): NetHeader {
  return {
    flags: 0,
    gsoType: 0,
    hdrLen: 0,
    gsoSize: 0,
    csumStart: 0,
    csumOffset: 0,
    numBuffers: 0,
  };
}

/** Throws a RangeError naming `action` when fewer than 12 bytes are left at `offset` of `bytes`. */
function requireHeaderRoom(action: string, bytes: Uint8Array, offset: number): void {
  if (offset < 0 || offset + NET_HDR_SIZE > bytes.length) {
    throw new RangeError(
      `Cannot ${action} virtio-net header: ${
        bytes.length - offset
      } bytes at offset ${offset}, need ${NET_HDR_SIZE}`,
    );
  }
}

/**
 * Decodes the 12 bytes at `offset` of `bytes` into `out`.
 * @throws RangeError when fewer than 12 bytes are left at offset
 */
export function decodeNetHeader(bytes: Uint8Array, offset: number, out: NetHeader): NetHeader {
  requireHeaderRoom("decode", bytes, offset);
  const b = bytes;
  const o = offset;
  out.flags = b[o + NET_HDR_FLAGS];
  out.gsoType = b[o + NET_HDR_GSO_TYPE];
  out.hdrLen = b[o + NET_HDR_HDR_LEN] | (b[o + NET_HDR_HDR_LEN + 1] << 8);
  out.gsoSize = b[o + NET_HDR_GSO_SIZE] | (b[o + NET_HDR_GSO_SIZE + 1] << 8);
  out.csumStart = b[o + NET_HDR_CSUM_START] | (b[o + NET_HDR_CSUM_START + 1] << 8);
  out.csumOffset = b[o + NET_HDR_CSUM_OFFSET] | (b[o + NET_HDR_CSUM_OFFSET + 1] << 8);
  out.numBuffers = b[o + NET_HDR_NUM_BUFFERS] | (b[o + NET_HDR_NUM_BUFFERS + 1] << 8);
  return out;
}

function put16(b: Uint8Array, at: number, value: number): void {
  b[at] = value & 0xff;
  b[at + 1] = (value >>> 8) & 0xff;
}

/**
 * Encodes `header` into the 12 bytes at `offset` of `bytes` (fields are truncated to
 * their wire width).
 * @throws RangeError when fewer than 12 bytes are left at offset
 */
export function encodeNetHeader(header: NetHeader, bytes: Uint8Array, offset: number): void {
  requireHeaderRoom("encode", bytes, offset);
  bytes[offset + NET_HDR_FLAGS] = header.flags & 0xff;
  bytes[offset + NET_HDR_GSO_TYPE] = header.gsoType & 0xff;
  put16(bytes, offset + NET_HDR_HDR_LEN, header.hdrLen);
  put16(bytes, offset + NET_HDR_GSO_SIZE, header.gsoSize);
  put16(bytes, offset + NET_HDR_CSUM_START, header.csumStart);
  put16(bytes, offset + NET_HDR_CSUM_OFFSET, header.csumOffset);
  put16(bytes, offset + NET_HDR_NUM_BUFFERS, header.numBuffers);
}
