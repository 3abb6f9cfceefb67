/**
 * The driver (guest) side of one split virtqueue in harness memory: lays out the
 * descriptor table, available and used rings, offers chains and collects used
 * elements, as a guest's virtio driver does (virtio 1.2 §2.7.13).
 *
 * @module
 */

import type { HarnessMemory } from "./harness_memory.ts";

/** Descriptor entry layout (virtio 1.2 §2.7.5). */
const DESC_SIZE = 16;
const DESC_ADDR = 0;
const DESC_LEN = 8;
const DESC_FLAGS = 12;
const DESC_NEXT = 14;
/** VIRTQ_DESC_F_NEXT / VIRTQ_DESC_F_WRITE (virtio 1.2 §2.7.5). */
const F_NEXT = 1;
const F_WRITE = 2;
/** Available ring: flags u16, idx u16, ring[] u16 (virtio 1.2 §2.7.6). */
const AVAIL_IDX = 2;
const AVAIL_RING = 4;
/** Used ring: flags u16, idx u16, ring[] of {id u32, len u32} (virtio 1.2 §2.7.8). */
const USED_IDX = 2;
const USED_RING = 4;
const USED_ELEM_SIZE = 8;

/** One buffer of a chain. */
export interface HarnessSegment {
  readonly gpa: number;
  readonly length: number;
  /** Device-writable (an RX buffer). */
  readonly writable: boolean;
}

/** One used element with the chain it completed. */
export interface HarnessUsed {
  readonly head: number;
  readonly length: number;
  readonly segments: readonly HarnessSegment[];
}

/** Guest-physical addresses of a ring's three areas. */
export interface RingAreas {
  readonly descriptor: number;
  readonly available: number;
  readonly used: number;
}

/** Bytes a ring of `size` entries occupies from `base`, 4 KiB aligned areas. */
export function ringFootprint(size: number): number {
  const align = (n: number) => Math.ceil(n / 4096) * 4096;
  return align(DESC_SIZE * size) + align(6 + 2 * size) + align(6 + 8 * size);
}

/** A driver-side split ring. */
export class HarnessVring {
  /** Number of descriptors. */
  readonly size: number;
  /** Where the descriptor table and the two rings lie in guest memory. */
  readonly areas: RingAreas;
  readonly #memory: HarnessMemory;
  readonly #free: number[] = [];
  readonly #chains = new Map<number, HarnessSegment[]>();
  readonly #chainIds = new Map<number, number[]>();
  #availIdx = 0;
  #usedSeen = 0;

  /**
   * @param memory harness memory
   * @param base guest-physical base for the ring (4 KiB aligned, {@link ringFootprint} bytes)
   * @param size number of descriptors (power of two)
   */
  constructor(memory: HarnessMemory, base: number, size: number) {
    this.#memory = memory;
    this.size = size;
    const align = (n: number) => Math.ceil(n / 4096) * 4096;
    const available = base + align(DESC_SIZE * size);
    const used = available + align(6 + 2 * size);
    this.areas = { descriptor: base, available, used };
    memory.view(base, ringFootprint(size)).fill(0);
    for (let i = 0; i < size; i++) this.#free.push(i);
  }

  /** Next available index the driver will publish (what SET_VRING_BASE would carry). */
  get availIndex(): number {
    return this.#availIdx;
  }

  /** Free descriptors. */
  get freeDescriptors(): number {
    return this.#free.length;
  }

  /**
   * Writes a chain and publishes it in the available ring.
   * @returns the head index, or null when not enough descriptors are free
   */
  offer(segments: readonly HarnessSegment[]): number | null {
    if (segments.length === 0 || segments.length > this.#free.length) return null;
    const ids = this.#free.splice(0, segments.length);
    const table = this.#memory.view(this.areas.descriptor, DESC_SIZE * this.size);
    const view = new DataView(table.buffer, table.byteOffset, table.length);
    segments.forEach((segment, i) => {
      const at = ids[i] * DESC_SIZE;
      view.setBigUint64(at + DESC_ADDR, BigInt(segment.gpa), true);
      view.setUint32(at + DESC_LEN, segment.length, true);
      const last = i === segments.length - 1;
      view.setUint16(at + DESC_FLAGS, (last ? 0 : F_NEXT) | (segment.writable ? F_WRITE : 0), true);
      view.setUint16(at + DESC_NEXT, last ? 0 : ids[i + 1], true);
    });
    this.#chains.set(ids[0], [...segments]);
    this.#chainIds.set(ids[0], ids);
    const avail = this.#memory.view(this.areas.available, 6 + 2 * this.size);
    const availView = new DataView(avail.buffer, avail.byteOffset, avail.length);
    availView.setUint16(AVAIL_RING + 2 * (this.#availIdx % this.size), ids[0], true);
    this.#availIdx = (this.#availIdx + 1) & 0xffff;
    availView.setUint16(AVAIL_IDX, this.#availIdx, true);
    return ids[0];
  }

  /** Used elements published and not yet taken by {@link takeUsed} (nothing is taken). */
  usedCount(): number {
    const used = this.#memory.view(this.areas.used, 6 + 8 * this.size);
    const idx = new DataView(used.buffer, used.byteOffset, used.length).getUint16(USED_IDX, true);
    return (idx - this.#usedSeen) & 0xffff;
  }

  /** Collects the used elements published since the last call and frees their descriptors. */
  takeUsed(): HarnessUsed[] {
    const used = this.#memory.view(this.areas.used, 6 + 8 * this.size);
    const view = new DataView(used.buffer, used.byteOffset, used.length);
    const idx = view.getUint16(USED_IDX, true);
    const out: HarnessUsed[] = [];
    while (this.#usedSeen !== idx) {
      const at = USED_RING + USED_ELEM_SIZE * (this.#usedSeen % this.size);
      const head = view.getUint32(at, true);
      const length = view.getUint32(at + 4, true);
      const ids = this.#chainIds.get(head);
      if (ids === undefined) throw new Error(`used ring returned unknown head ${head}`);
      this.#chainIds.delete(head);
      const segments = this.#chains.get(head)!;
      this.#chains.delete(head);
      this.#free.push(...ids);
      out.push({ head, length, segments });
      this.#usedSeen = (this.#usedSeen + 1) & 0xffff;
    }
    return out;
  }
}
