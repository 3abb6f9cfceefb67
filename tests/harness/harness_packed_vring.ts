/**
 * The driver (guest) side of one packed virtqueue in harness memory: lays out the
 * descriptor ring and the two event suppression areas, makes lists available and
 * collects used descriptors, as a guest's virtio driver does (virtio 1.2 §2.8.21,
 * §2.8.22). The same surface as {@link HarnessVring}, for a front-end that acked
 * VIRTIO_F_RING_PACKED.
 *
 * @module
 */

import type { HarnessMemory } from "./harness_memory.ts";
import type { HarnessSegment, HarnessUsed, RingAreas } from "./harness_vring.ts";
import {
  availableFlags,
  encodePackedState,
  PACKED_DESC_ADDR_LOW,
  PACKED_DESC_F_AVAIL,
  PACKED_DESC_F_NEXT,
  PACKED_DESC_F_USED,
  PACKED_DESC_F_WRITE,
  PACKED_DESC_FLAGS,
  PACKED_DESC_ID,
  PACKED_DESC_LEN,
  PACKED_DESC_SIZE,
} from "../../src/virtio/packed_ring_layout.ts";

/** A driver-side packed ring: descriptor ring, driver area, device area, 4 KiB aligned. */
export class HarnessPackedVring {
  /** Number of descriptors. */
  readonly size: number;
  /** Descriptor ring, driver area (as `available`) and device area (as `used`). */
  readonly areas: RingAreas;
  readonly #memory: HarnessMemory;
  readonly #freeIds: number[] = [];
  readonly #lists = new Map<number, HarnessSegment[]>();
  #freeSlots: number;
  #availIndex = 0;
  #availWrap = 1;
  #usedIndex = 0;
  #usedWrap = 1;

  /**
   * @param memory harness memory
   * @param base guest-physical base for the ring (4 KiB aligned; ringFootprint(size) bytes suffice)
   * @param size number of descriptors
   */
  constructor(memory: HarnessMemory, base: number, size: number) {
    this.#memory = memory;
    this.size = size;
    const align = (n: number) => Math.ceil(n / 4096) * 4096;
    const available = base + align(PACKED_DESC_SIZE * size);
    const used = available + 4096;
    this.areas = { descriptor: base, available, used };
    memory.view(base, align(PACKED_DESC_SIZE * size) + 2 * 4096).fill(0);
    for (let i = 0; i < size; i++) this.#freeIds.push(i);
    this.#freeSlots = size;
  }

  /** The ring state a front-end sends in SET_VRING_BASE now (both positions, wrap counters). */
  get availIndex(): number {
    return encodePackedState({
      avail: { index: this.#availIndex, wrap: this.#availWrap },
      used: { index: this.#usedIndex, wrap: this.#usedWrap },
    });
  }

  /** Free ring slots. */
  get freeDescriptors(): number {
    return this.#freeSlots;
  }

  #ring(): DataView {
    const bytes = this.#memory.view(this.areas.descriptor, PACKED_DESC_SIZE * this.size);
    return new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  }

  /**
   * Writes a list into the next slots, the first one's flags last.
   * @returns its Buffer ID, or null when not enough slots are free
   */
  offer(segments: readonly HarnessSegment[]): number | null {
    if (segments.length === 0 || segments.length > this.#freeSlots) return null;
    const id = this.#freeIds.shift()!;
    const ring = this.#ring();
    const head = this.#availIndex;
    let headFlags = 0;
    segments.forEach((segment, i) => {
      const at = this.#availIndex * PACKED_DESC_SIZE;
      const last = i === segments.length - 1;
      ring.setBigUint64(at + PACKED_DESC_ADDR_LOW, BigInt(segment.gpa), true);
      ring.setUint32(at + PACKED_DESC_LEN, segment.length, true);
      ring.setUint16(at + PACKED_DESC_ID, id, true);
      const flags = (last ? 0 : PACKED_DESC_F_NEXT) | (segment.writable ? PACKED_DESC_F_WRITE : 0) |
        availableFlags(this.#availWrap);
      if (i === 0) headFlags = flags;
      else ring.setUint16(at + PACKED_DESC_FLAGS, flags, true);
      if (++this.#availIndex === this.size) {
        this.#availIndex = 0;
        this.#availWrap ^= 1;
      }
    });
    ring.setUint16(head * PACKED_DESC_SIZE + PACKED_DESC_FLAGS, headFlags, true);
    this.#freeSlots -= segments.length;
    this.#lists.set(id, [...segments]);
    return id;
  }

  /** Collects the used descriptors written since the last call and frees their slots. */
  takeUsed(): HarnessUsed[] {
    const ring = this.#ring();
    const out: HarnessUsed[] = [];
    for (;;) {
      const at = this.#usedIndex * PACKED_DESC_SIZE;
      const flags = ring.getUint16(at + PACKED_DESC_FLAGS, true);
      const avail = (flags & PACKED_DESC_F_AVAIL) !== 0 ? 1 : 0;
      const used = (flags & PACKED_DESC_F_USED) !== 0 ? 1 : 0;
      if (avail !== used || used !== this.#usedWrap) break;
      const head = ring.getUint16(at + PACKED_DESC_ID, true);
      const length = ring.getUint32(at + PACKED_DESC_LEN, true);
      const segments = this.#lists.get(head);
      if (segments === undefined) throw new Error(`packed ring returned unknown buffer ${head}`);
      this.#lists.delete(head);
      this.#freeIds.push(head);
      this.#freeSlots += segments.length;
      this.#usedIndex += segments.length;
      if (this.#usedIndex >= this.size) {
        this.#usedIndex -= this.size;
        this.#usedWrap ^= 1;
      }
      out.push({ head, length, segments });
    }
    return out;
  }
}
