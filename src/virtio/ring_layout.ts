/**
 * Byte layout of a split virtqueue (virtio 1.2 §2.7): descriptor table, available
 * ring and used ring, and the flag bits they carry. All fields are little-endian.
 *
 * @module
 */

/** Size of one descriptor: le64 addr, le32 len, le16 flags, le16 next (virtio 1.2 §2.7.5). */
export const DESC_SIZE = 16;
/** Offset of `addr` (low 32 bits) in a descriptor (virtio 1.2 §2.7.5). */
export const DESC_ADDR_LOW = 0;
/** Offset of the high 32 bits of `addr` in a descriptor (virtio 1.2 §2.7.5). */
export const DESC_ADDR_HIGH = 4;
/** Offset of `len` in a descriptor (virtio 1.2 §2.7.5). */
export const DESC_LEN = 8;
/** Offset of `flags` in a descriptor (virtio 1.2 §2.7.5). */
export const DESC_FLAGS = 12;
/** Offset of `next` in a descriptor (virtio 1.2 §2.7.5). */
export const DESC_NEXT = 14;

/** Descriptor flag: the chain continues at `next` (virtio 1.2 §2.7.5, VIRTQ_DESC_F_NEXT). */
export const VIRTQ_DESC_F_NEXT = 1;
/** Descriptor flag: the buffer is device-writable (virtio 1.2 §2.7.5, VIRTQ_DESC_F_WRITE). */
export const VIRTQ_DESC_F_WRITE = 2;
/** Descriptor flag: the buffer is an indirect table (virtio 1.2 §2.7.5.3, VIRTQ_DESC_F_INDIRECT). */
export const VIRTQ_DESC_F_INDIRECT = 4;

/** Offset of `flags` in the available ring (virtio 1.2 §2.7.6). */
export const AVAIL_FLAGS = 0;
/** Offset of `idx` in the available ring (virtio 1.2 §2.7.6). */
export const AVAIL_IDX = 2;
/** Offset of `ring[0]` in the available ring; entries are le16 (virtio 1.2 §2.7.6). */
export const AVAIL_RING = 4;
/** Size of one available-ring entry (virtio 1.2 §2.7.6). */
export const AVAIL_ENTRY_SIZE = 2;
/** Available-ring flag: the driver asks for no used-buffer notification (virtio 1.2 §2.7.7). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;

/** Offset of `flags` in the used ring (virtio 1.2 §2.7.8). */
export const USED_FLAGS = 0;
/** Offset of `idx` in the used ring (virtio 1.2 §2.7.8). */
export const USED_IDX = 2;
/** Offset of `ring[0]` in the used ring; entries are { le32 id, le32 len } (virtio 1.2 §2.7.8). */
export const USED_RING = 4;
/** Size of one used-ring element (virtio 1.2 §2.7.8). */
export const USED_ELEM_SIZE = 8;
/** Offset of `id` inside a used element (virtio 1.2 §2.7.8). */
export const USED_ELEM_ID = 0;
/** Offset of `len` inside a used element (virtio 1.2 §2.7.8). */
export const USED_ELEM_LEN = 4;
/** Used-ring flag: the device asks for no available-buffer notification (virtio 1.2 §2.7.10). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** Largest queue size of a split virtqueue (virtio 1.2 §2.7). */
export const MAX_QUEUE_SIZE = 32768;

/** Byte length of a descriptor table for `size` entries (virtio 1.2 §2.7). */
export function descriptorTableBytes(size: number): number {
  return DESC_SIZE * size;
}

/** Byte length of an available ring for `size` entries, including used_event (virtio 1.2 §2.7). */
export function availableRingBytes(size: number): number {
  return AVAIL_RING + AVAIL_ENTRY_SIZE * size + 2;
}

/** Byte length of a used ring for `size` entries, including avail_event (virtio 1.2 §2.7). */
export function usedRingBytes(size: number): number {
  return USED_RING + USED_ELEM_SIZE * size + 2;
}

/** Offset of `used_event` in the available ring, after `ring[size]` (virtio 1.2 §2.7.10). */
export function usedEventOffset(size: number): number {
  return AVAIL_RING + AVAIL_ENTRY_SIZE * size;
}

/** Offset of `avail_event` in the used ring, after `ring[size]` (virtio 1.2 §2.7.10). */
export function availEventOffset(size: number): number {
  return USED_RING + USED_ELEM_SIZE * size;
}

/**
 * Tells whether the other side asked to be notified, given its event index and the
 * index moving from `oldIndex` to `newIndex` (virtio 1.2 §2.7.10, vring_need_event).
 */
export function needEvent(eventIndex: number, newIndex: number, oldIndex: number): boolean {
  return ((newIndex - eventIndex - 1) & 0xffff) < ((newIndex - oldIndex) & 0xffff);
}
