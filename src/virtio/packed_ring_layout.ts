/**
 * Byte layout of a packed virtqueue (virtio 1.2 §2.8): the descriptor ring and the
 * two event suppression structures, the flag bits they carry, and the vhost-user
 * encoding of a packed ring's position (QEMU docs/interop/vhost-user.rst, "Vring
 * descriptor indices for packed virtqueues"). All fields are little-endian.
 *
 * @module
 */

/** Size of one packed descriptor: le64 addr, le32 len, le16 id, le16 flags (virtio 1.2 §2.8.13). */
export const PACKED_DESC_SIZE = 16;
/** Offset of `addr` (low 32 bits) in a packed descriptor (virtio 1.2 §2.8.13). */
export const PACKED_DESC_ADDR_LOW = 0;
/** Offset of the high 32 bits of `addr` in a packed descriptor (virtio 1.2 §2.8.13). */
export const PACKED_DESC_ADDR_HIGH = 4;
/** Offset of `len` in a packed descriptor (virtio 1.2 §2.8.13). */
export const PACKED_DESC_LEN = 8;
/** Offset of the Buffer ID `id` in a packed descriptor (virtio 1.2 §2.8.13). */
export const PACKED_DESC_ID = 12;
/** Offset of `flags` in a packed descriptor (virtio 1.2 §2.8.13). */
export const PACKED_DESC_FLAGS = 14;

/** Descriptor flag: the list continues in the next ring slot (virtio 1.2 §2.8.6, VIRTQ_DESC_F_NEXT). */
export const PACKED_DESC_F_NEXT = 1;
/**
 * Descriptor flag: in an available descriptor, the element is device-writable; in a
 * used one, the device wrote data into the buffer (virtio 1.2 §2.8.3, VIRTQ_DESC_F_WRITE).
 */
export const PACKED_DESC_F_WRITE = 2;
/** Descriptor flag: the element is an indirect descriptor table (virtio 1.2 §2.8.7, VIRTQ_DESC_F_INDIRECT). */
export const PACKED_DESC_F_INDIRECT = 4;
/** Descriptor flag VIRTQ_DESC_F_AVAIL, bit 7 (virtio 1.2 §2.8.1). */
export const PACKED_DESC_F_AVAIL = 1 << 7;
/** Descriptor flag VIRTQ_DESC_F_USED, bit 15 (virtio 1.2 §2.8.1). */
export const PACKED_DESC_F_USED = 1 << 15;

/**
 * Flags of a descriptor the driver made available while its wrap counter is `wrap`:
 * AVAIL matches the counter, USED is its inverse (virtio 1.2 §2.8.1).
 */
export function availableFlags(wrap: number): number {
  return wrap === 1 ? PACKED_DESC_F_AVAIL : PACKED_DESC_F_USED;
}

/**
 * Flags of a descriptor the device used while its wrap counter is `wrap`: AVAIL and
 * USED both match the counter (virtio 1.2 §2.8.1).
 */
export function usedFlags(wrap: number): number {
  return wrap === 1 ? PACKED_DESC_F_AVAIL | PACKED_DESC_F_USED : 0;
}

/**
 * Tells whether descriptor `flags` mark it available for the driver ring wrap counter
 * `wrap`: AVAIL equals the counter and USED differs from it (virtio 1.2 §2.8.1).
 */
export function isAvailable(flags: number, wrap: number): boolean {
  return (flags & (PACKED_DESC_F_AVAIL | PACKED_DESC_F_USED)) === availableFlags(wrap);
}

/** Size of an event suppression structure: le16 desc (off_wrap), le16 flags (virtio 1.2 §2.8.14). */
export const EVENT_SUPPRESS_SIZE = 4;
/**
 * Offset of `desc` in an event suppression structure: bits 0-14 the descriptor ring
 * change event offset, bit 15 its wrap counter (virtio 1.2 §2.8.14).
 */
export const EVENT_OFF_WRAP = 0;
/** Offset of `flags` in an event suppression structure; bits 0-1 hold the event flags (virtio 1.2 §2.8.14). */
export const EVENT_FLAGS = 2;
/** Mask of the event flags in `flags` (virtio 1.2 §2.8.14, desc_event_flags : 2). */
export const EVENT_FLAGS_MASK = 3;
/** Event flags RING_EVENT_FLAGS_ENABLE: notify on every change (virtio 1.2 §2.8.10). */
export const RING_EVENT_FLAGS_ENABLE = 0;
/** Event flags RING_EVENT_FLAGS_DISABLE: no notifications (virtio 1.2 §2.8.10). */
export const RING_EVENT_FLAGS_DISABLE = 1;
/**
 * Event flags RING_EVENT_FLAGS_DESC: notify when the descriptor at the given offset and
 * wrap counter is made available / used; only with VIRTIO_F_RING_EVENT_IDX (virtio 1.2 §2.8.10).
 */
export const RING_EVENT_FLAGS_DESC = 2;
/** Bit of the wrap counter in an event's `off_wrap` (virtio 1.2 §2.8.14, desc_event_wrap). */
export const EVENT_WRAP_SHIFT = 15;

/** Largest queue size of a packed virtqueue: up to 2^15 entries, any number (virtio 1.2 §2.8). */
export const MAX_PACKED_QUEUE_SIZE = 32768;

/** Byte length of a descriptor ring of `size` descriptors (virtio 1.2 §2.8.10.1). */
export function descriptorRingBytes(size: number): number {
  return PACKED_DESC_SIZE * size;
}

/**
 * Bit of the wrap counter in each 16-bit half of the vhost-user ring state
 * (VHOST_USER_SET_VRING_BASE / GET_VRING_BASE `num` for packed rings: bits 0-14 the
 * last available index, bit 15 its wrap counter, bits 16-30 the last used index, bit
 * 31 its wrap counter; QEMU docs/interop/vhost-user.rst).
 */
export const STATE_WRAP_BIT = 0x8000;
/** Mask of the index in each 16-bit half of the vhost-user packed ring state. */
export const STATE_INDEX_MASK = 0x7fff;

/** The position of one side of a packed ring: the next slot and that side's wrap counter. */
export interface PackedPosition {
  /** Ring slot, 0..size-1. */
  readonly index: number;
  /** Ring wrap counter, 0 or 1. */
  readonly wrap: number;
}

/** The vhost-user ring state of a packed ring (see {@link STATE_WRAP_BIT}). */
export interface PackedRingState {
  /** Next descriptor the device reads, with the driver ring wrap counter it expects. */
  readonly avail: PackedPosition;
  /** Next slot the device writes a used descriptor to, with the device ring wrap counter. */
  readonly used: PackedPosition;
}

/** Encodes a packed ring state as the 32-bit vhost-user `num`. */
export function encodePackedState(state: PackedRingState): number {
  const half = (p: PackedPosition) => (p.index & STATE_INDEX_MASK) | (p.wrap ? STATE_WRAP_BIT : 0);
  return (half(state.avail) | (half(state.used) << 16)) >>> 0;
}

/** Decodes the 32-bit vhost-user `num` of a packed ring. */
export function decodePackedState(num: number): PackedRingState {
  const low = num & 0xffff;
  const high = (num >>> 16) & 0xffff;
  return {
    avail: { index: low & STATE_INDEX_MASK, wrap: (low & STATE_WRAP_BIT) !== 0 ? 1 : 0 },
    used: { index: high & STATE_INDEX_MASK, wrap: (high & STATE_WRAP_BIT) !== 0 ? 1 : 0 },
  };
}

/**
 * Reads a packed ring's SET_VRING_BASE `num` as the front-end meant it. QEMU sends both
 * halves (its virtio_queue_get_last_avail_idx()); DPDK's virtio-user sends only the
 * available half (0x8000 at every start) and DPDK's own back-end then takes the used
 * position equal to the available one. A used half of 0 (slot 0, wrap counter 0) with
 * an available wrap counter of 1 would put a whole ring or more in use, which no
 * stopped ring reports: such a `num` is read as DPDK's, used = available. Every other
 * `num` is returned as it is.
 */
export function frontendPackedState(num: number): number {
  const low = num & 0xffff;
  if (num >>> 16 === 0 && (low & STATE_WRAP_BIT) !== 0) return (low | (low << 16)) >>> 0;
  return num >>> 0;
}

/**
 * The state of a packed ring nobody used yet: both sides at slot 0 with wrap counters 1
 * (virtio 1.2 §2.8.1: "initialized to 1"); QEMU sends this in SET_VRING_BASE at a fresh start.
 */
export const INITIAL_PACKED_STATE: number = encodePackedState({
  avail: { index: 0, wrap: 1 },
  used: { index: 0, wrap: 1 },
});
