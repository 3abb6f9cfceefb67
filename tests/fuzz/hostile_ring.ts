/**
 * Raw access to the driver side of one split virtqueue in harness memory, for
 * writing rings no well-behaved driver would: descriptors with any address, length,
 * flags and next index, available-ring entries and index set freely
 * (virtio 1.2 §2.7.5, §2.7.6). Unlike SplitRingDriver it keeps no free list: the caller
 * decides which descriptors each published head uses.
 *
 * @module
 */

import {
  AVAIL_ENTRY_SIZE,
  AVAIL_IDX,
  AVAIL_RING,
  availableRingBytes,
  DESC_ADDR_HIGH,
  DESC_ADDR_LOW,
  DESC_FLAGS,
  DESC_LEN,
  DESC_NEXT,
  DESC_SIZE,
  descriptorTableBytes,
  usedEventOffset,
} from "../../src/virtio/ring_layout.ts";
import type { HarnessMemory } from "../support/frontend/shared_memory.ts";
import type { RingAreas } from "../support/virtio/split_ring_driver.ts";

const TWO_POW_32 = 2 ** 32;
/** Ring indices are free-running u16 counters (virtio 1.2 §2.7.6). */
const INDEX_MASK = 0xffff;

/** The driver-writable parts of one ring, written without any checks. */
export class RawRing {
  /** Queue size (number of descriptors). */
  readonly size: number;
  readonly #descriptors: DataView;
  readonly #available: DataView;
  #availIndex: number;

  /**
   * @param memory harness memory holding the ring
   * @param areas where the descriptor table and available ring are (guest-physical)
   * @param size queue size
   * @param availIndex the available index the driver published so far
   */
  constructor(memory: HarnessMemory, areas: RingAreas, size: number, availIndex: number) {
    this.size = size;
    const table = memory.view(areas.descriptor, descriptorTableBytes(size));
    this.#descriptors = new DataView(table.buffer, table.byteOffset, table.length);
    const available = memory.view(areas.available, availableRingBytes(size));
    this.#available = new DataView(available.buffer, available.byteOffset, available.length);
    this.#availIndex = availIndex & INDEX_MASK;
  }

  /** The next available index this writer will publish. */
  get availIndex(): number {
    return this.#availIndex;
  }

  /** Writes descriptor `index` (mod size) with a guest address below 2^53. */
  setDescriptor(index: number, address: number, length: number, flags: number, next: number): void {
    this.setRawDescriptor(
      index,
      address % TWO_POW_32,
      Math.floor(address / TWO_POW_32),
      length,
      flags,
      next,
    );
  }

  /** Writes descriptor `index` (mod size) with the address given as two u32 halves. */
  setRawDescriptor(
    index: number,
    addressLow: number,
    addressHigh: number,
    length: number,
    flags: number,
    next: number,
  ): void {
    const at = (index % this.size) * DESC_SIZE;
    const view = this.#descriptors;
    view.setUint32(at + DESC_ADDR_LOW, addressLow >>> 0, true);
    view.setUint32(at + DESC_ADDR_HIGH, addressHigh >>> 0, true);
    view.setUint32(at + DESC_LEN, length >>> 0, true);
    view.setUint16(at + DESC_FLAGS, flags & 0xffff, true);
    view.setUint16(at + DESC_NEXT, next & 0xffff, true);
  }

  /** Writes `heads` (any u16 values) into the available ring and publishes them. */
  publish(heads: readonly number[]): void {
    for (const head of heads) {
      this.setAvailableEntry(this.#availIndex, head);
      this.#availIndex = (this.#availIndex + 1) & INDEX_MASK;
    }
    this.setAvailIndex(this.#availIndex);
  }

  /** Writes available-ring slot `position` (mod size) without publishing it. */
  setAvailableEntry(position: number, head: number): void {
    this.#available.setUint16(
      AVAIL_RING + AVAIL_ENTRY_SIZE * (position % this.size),
      head & 0xffff,
      true,
    );
  }

  /**
   * Writes used_event, the used index after which the driver wants the next call
   * when VIRTIO_F_EVENT_IDX is negotiated (virtio 1.2 §2.7.10).
   */
  setUsedEvent(index: number): void {
    this.#available.setUint16(usedEventOffset(this.size), index & INDEX_MASK, true);
  }

  /** Publishes `index` as the available index, whatever it is (may run ahead or back). */
  setAvailIndex(index: number): void {
    this.#availIndex = index & INDEX_MASK;
    this.#available.setUint16(AVAIL_IDX, this.#availIndex, true);
  }
}
