/**
 * vhost-user wire constants: request codes, header flags, payload layouts and
 * feature bits, each with the section of the specification it comes from.
 *
 * Spec: QEMU docs/interop/vhost-user.rst
 * (https://www.qemu.org/docs/master/interop/vhost-user.html). All numbers are in
 * the machine's native byte order, which is little-endian on every host we run on.
 *
 * @module
 */

import {
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
} from "../tap/net_features.ts";
import { MAX_QUEUE_PAIRS } from "../tap/vring_datapath.ts";

/**
 * Front-end → back-end request codes ("Front-end message types").
 * @see https://www.qemu.org/docs/master/interop/vhost-user.html#front-end-message-types
 */
export const Request = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
  SET_DEVICE_STATE_FD: 42,
  CHECK_DEVICE_STATE: 43,
} as const;

/** One of the request codes this backend knows by name. */
export type RequestCode = typeof Request[keyof typeof Request];

const REQUEST_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(Request).map(([name, code]) => [code, name]),
);

/** The spec name of a request code ("SET_MEM_TABLE"), or "UNKNOWN(n)". */
export function requestName(code: number): string {
  return REQUEST_NAMES.get(code) ?? `UNKNOWN(${code})`;
}

// --- Header (spec "Header") ---------------------------------------------------

/** Byte offset of `request` (u32) in the header (spec "Header"). */
export const HEADER_REQUEST = 0;
/** Byte offset of `flags` (u32) in the header (spec "Header"). */
export const HEADER_FLAGS = 4;
/** Byte offset of `size` (u32, payload bytes) in the header (spec "Header"). */
export const HEADER_SIZE_FIELD = 8;
/** Bytes in the header (spec "Header": three u32 fields). */
export const HEADER_SIZE = 12;

/** Lower 2 bits of `flags`: the protocol version (spec "Header"). */
export const FLAGS_VERSION_MASK = 0x3;
/** The only protocol version (spec "Header": "currently 0x01"). */
export const FLAGS_VERSION = 0x1;
/** Bit 2: set on every reply from the back-end (spec "Header"). */
export const FLAGS_REPLY = 0x4;
/** Bit 3: the front-end asks for a REPLY_ACK (spec "REPLY_ACK"). */
export const FLAGS_NEED_REPLY = 0x8;

// --- Payloads (spec "Payload") ------------------------------------------------

/** A single 64-bit integer (spec "A single 64-bit integer"). */
export const U64_PAYLOAD_SIZE = 8;

/** vring state: `index` u32 (spec "A vring state description"). */
export const VRING_STATE_INDEX = 0;
/** vring state: `num` u32 (spec "A vring state description"). */
export const VRING_STATE_NUM = 4;
/** Bytes in a vring state description. */
export const VRING_STATE_SIZE = 8;

/** vring address: `index` u32 (spec "A vring address description"). */
export const VRING_ADDR_INDEX = 0;
/** vring address: `flags` u32; bit 0 is VHOST_VRING_F_LOG (spec "Migration"). */
export const VRING_ADDR_FLAGS = 4;
/** vring address: descriptor table, front-end user address u64. */
export const VRING_ADDR_DESCRIPTOR = 8;
/** vring address: used ring, front-end user address u64. */
export const VRING_ADDR_USED = 16;
/** vring address: available ring, front-end user address u64. */
export const VRING_ADDR_AVAILABLE = 24;
/** vring address: log guest address u64 (only with VHOST_VRING_F_LOG). */
export const VRING_ADDR_LOG = 32;
/** Bytes in a vring address description (struct vhost_vring_addr). */
export const VRING_ADDR_SIZE = 40;
/**
 * Bit of the vring address `flags`: log the ring's used-ring writes at the `log`
 * guest address (VHOST_VRING_F_LOG, spec "Migration"); the only flag defined.
 */
export const VHOST_VRING_F_LOG = 0;

/** Log description: `log size` u64, bytes of the bitmap (spec "Log description"). */
export const LOG_SIZE = 0;
/** Log description: `log offset` u64, where the bitmap starts in the fd. */
export const LOG_OFFSET = 8;
/** Bytes in a log description (SET_LOG_BASE payload). */
export const LOG_DESCRIPTION_SIZE = 16;
/** Guest bytes per bit of the dirty log (VHOST_LOG_PAGE, spec "Migration"). */
export const VHOST_LOG_PAGE = 0x1000;

/** Memory table: `num regions` u32 (spec "Memory regions description"). */
export const MEMORY_NREGIONS = 0;
/** Memory table: u32 padding, then the region entries. */
export const MEMORY_REGIONS = 8;
/** Region entry: guest physical address u64 (spec "Memory regions description"). */
export const REGION_GUEST_ADDRESS = 0;
/** Region entry: size u64. */
export const REGION_SIZE = 8;
/** Region entry: front-end user (virtual) address u64. */
export const REGION_USER_ADDRESS = 16;
/** Region entry: offset of the region in the mapped fd, u64. */
export const REGION_MMAP_OFFSET = 24;
/** Bytes in one region entry. */
export const REGION_ENTRY_SIZE = 32;
/**
 * Regions in a SET_MEM_TABLE message (QEMU's VHOST_MEMORY_BASELINE_NREGIONS; also the
 * SCM_RIGHTS fd limit of one message).
 */
export const MEMORY_MAX_NREGIONS = 8;
/** Largest memory table payload: header words plus 8 regions. */
export const MEMORY_TABLE_MAX_SIZE = MEMORY_REGIONS + MEMORY_MAX_NREGIONS * REGION_ENTRY_SIZE;

/** Single region (ADD/REM_MEM_REG): u64 padding first (spec "Single memory region description"). */
export const SINGLE_REGION_ENTRY = 8;
/** Bytes in a single memory region description. */
export const SINGLE_REGION_SIZE = SINGLE_REGION_ENTRY + REGION_ENTRY_SIZE;

/**
 * SET_VRING_KICK/CALL/ERR u64: bits 0-7 are the vring index (spec
 * "VHOST_USER_SET_VRING_KICK").
 */
export const VRING_FD_INDEX_MASK = 0xff;
/** Bit 8 of the same u64: no fd is passed (VHOST_USER_VRING_NOFD_MASK). */
export const VRING_FD_NOFD = 0x100;

/** Largest payload any request we accept may carry; a larger header size is a protocol error. */
export const MAX_PAYLOAD_SIZE = 4096;

/** File descriptors accepted with one message (QEMU's VHOST_USER_MAX_RAM_SLOTS per message: 8). */
export const MAX_FDS_PER_MESSAGE = 8;

/** Ring size limit (virtio 1.2 §2.7: Queue Size ≤ 32768, a power of two). */
export const MAX_RING_SIZE = 32768;

// --- Feature bits ---------------------------------------------------------------

/**
 * VHOST_F_LOG_ALL (spec "Migration"): while acked and a log is set (SET_LOG_BASE),
 * every write into guest memory marks its pages in the log. QEMU acks it when a live
 * migration starts and refuses to migrate a backend that does not offer it.
 */
export const VHOST_F_LOG_ALL = 26;
/** VIRTIO_F_INDIRECT_DESC (virtio 1.2 §6). */
export const VIRTIO_F_INDIRECT_DESC = 28;
/** VIRTIO_F_EVENT_IDX (virtio 1.2 §6). */
export const VIRTIO_F_EVENT_IDX = 29;
/** VHOST_USER_F_PROTOCOL_FEATURES (spec "Communication": bit 30). */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
/** VIRTIO_F_VERSION_1 (virtio 1.2 §6): required, legacy devices are refused. */
export const VIRTIO_F_VERSION_1 = 32;
/**
 * VIRTIO_F_RING_PACKED (virtio 1.2 §6, §2.8): the rings are packed virtqueues. SET_VRING_ADDR
 * then carries the descriptor ring, the driver area (as "available") and the device
 * area (as "used"); SET/GET_VRING_BASE carry both ring positions with wrap counters.
 */
export const VIRTIO_F_RING_PACKED = 34;

/** Protocol feature bits (spec "Protocol features"). */
export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
} as const;

/** `1n << bit` for a feature bit. */
export function featureBit(bit: number): bigint {
  return 1n << BigInt(bit);
}

/**
 * The segmentation offloads (virtio 1.2 §5.1.3) this backend offers: large TCP frames
 * from the driver (HOST_TSO4/6, with the ECN bit), and to it (GUEST_TSO4/6, with ECN).
 */
export const SEGMENTATION_FEATURES: bigint = featureBit(VIRTIO_NET_F_HOST_TSO4) |
  featureBit(VIRTIO_NET_F_HOST_TSO6) |
  featureBit(VIRTIO_NET_F_HOST_ECN) |
  featureBit(VIRTIO_NET_F_GUEST_TSO4) |
  featureBit(VIRTIO_NET_F_GUEST_TSO6) |
  featureBit(VIRTIO_NET_F_GUEST_ECN);

/**
 * Virtio features this backend offers in GET_FEATURES. VIRTIO_NET_F_MAC and
 * VIRTIO_NET_F_STATUS are not offered: QEMU's virtio-net keeps the config space
 * itself (vhost-user CONFIG is optional and QEMU's net device does not use it), and
 * it does not forward those bits to a vhost-user backend.
 */
export const OFFERED_FEATURES: bigint = featureBit(VIRTIO_F_VERSION_1) |
  featureBit(VIRTIO_NET_F_CSUM) |
  featureBit(VIRTIO_NET_F_GUEST_CSUM) |
  SEGMENTATION_FEATURES |
  featureBit(VIRTIO_NET_F_MRG_RXBUF) |
  featureBit(VIRTIO_F_EVENT_IDX) |
  featureBit(VIRTIO_F_INDIRECT_DESC) |
  featureBit(VIRTIO_F_RING_PACKED) |
  featureBit(VIRTIO_NET_F_MTU) |
  featureBit(VHOST_F_LOG_ALL) |
  featureBit(VIRTIO_NET_F_MQ) |
  featureBit(VHOST_USER_F_PROTOCOL_FEATURES);

/** Protocol features offered in GET_PROTOCOL_FEATURES. */
export const OFFERED_PROTOCOL_FEATURES: bigint = featureBit(ProtocolFeature.MQ) |
  featureBit(ProtocolFeature.LOG_SHMFD) |
  featureBit(ProtocolFeature.REPLY_ACK) |
  featureBit(ProtocolFeature.CONFIGURE_MEM_SLOTS) |
  featureBit(ProtocolFeature.MTU) |
  featureBit(ProtocolFeature.RARP);

// --- Device state (spec "Migrating back-end state", VHOST_USER_SET_DEVICE_STATE_FD) --

/** Device state transfer parameters: `direction` u32. */
export const DEVICE_STATE_DIRECTION = 0;
/** Device state transfer parameters: `phase` u32. */
export const DEVICE_STATE_PHASE = 4;
/** Bytes in the device state transfer parameters. */
export const DEVICE_STATE_PARAMS_SIZE = 8;
/** Direction: the back-end writes its state into the channel (source side). */
export const DEVICE_STATE_SAVE = 0;
/** Direction: the back-end reads its state from the channel (destination side). */
export const DEVICE_STATE_LOAD = 1;
/** Phase: the only one defined, both sides suspended after the memory transfer. */
export const DEVICE_STATE_PHASE_STOPPED = 0;
/**
 * SET_DEVICE_STATE_FD reply u64, bit 8: no fd is returned (the front-end's channel is
 * used); bits 0-7 are 0 on success.
 */
export const DEVICE_STATE_REPLY_NO_FD = 0x100;

/** Memory slots reported by GET_MAX_MEM_SLOTS (spec asks for at least 32 with CONFIGURE_MEM_SLOTS). */
export const MAX_MEM_SLOTS = 32;

// Queue pairs served at most: the datapath's bound, MAX_QUEUE_PAIRS of
// src/tap/vring_datapath.ts (VHOST_USER_PROTOCOL_F_MQ), is also the GET_QUEUE_NUM
// answer: QEMU's vhost-user-net compares it with `-netdev vhost-user,queues=N`, a
// count of queue pairs ("you are asking more queues than supported").
/** Rings of {@link MAX_QUEUE_PAIRS} pairs: ring 2k is pair k's RX, 2k+1 its TX (virtio 1.2 §5.1.2). */
export const VRING_COUNT = 2 * MAX_QUEUE_PAIRS;
