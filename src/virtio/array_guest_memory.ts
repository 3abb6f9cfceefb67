/**
 * {@link GuestMemory} over plain ArrayBuffers placed at guest-physical addresses:
 * the memory used by unit tests, fuzzers and benchmarks of the ring engine.
 *
 * @module
 */

import type { GuestMemory } from "./guest_memory.ts";

const TWO_32 = 0x1_0000_0000;

/** One region of {@link ArrayGuestMemory}. */
interface Region {
  readonly start: number;
  readonly end: number;
  readonly bytes: Uint8Array;
}

/** Guest memory made of ArrayBuffer-backed regions, each at a guest-physical address below 2^53. */
export class ArrayGuestMemory implements GuestMemory {
  readonly #regions: Region[] = [];

  /**
   * Adds a region of `bytes.length` bytes at guest-physical address `start`.
   * @throws RangeError when the region is not below 2^53 or overlaps another
   */
  addRegion(start: number, bytes: Uint8Array): void {
    const end = start + bytes.length;
    if (!Number.isSafeInteger(start) || start < 0 || !Number.isSafeInteger(end)) {
      throw new RangeError(`Cannot add region at ${start}+${bytes.length}: not below 2^53`);
    }
    for (const r of this.#regions) {
      if (start < r.end && r.start < end) {
        throw new RangeError(`Cannot add region at ${start}+${bytes.length}: overlaps ${r.start}`);
      }
    }
    this.#regions.push({ start, end, bytes });
  }

  /** Returns the bytes of the region starting exactly at `start`, or null. */
  region(start: number): Uint8Array | null {
    for (const r of this.#regions) if (r.start === start) return r.bytes;
    return null;
  }

  /** {@inheritDoc GuestMemory.view} */
  view(addrLow: number, addrHigh: number, length: number): Uint8Array | null {
    if (addrHigh >= 0x20_0000) return null; // at or above 2^53: no region lives there
    const start = addrHigh * TWO_32 + addrLow;
    const end = start + length;
    const regions = this.#regions;
    for (let i = 0; i < regions.length; i++) {
      const r = regions[i];
      if (start >= r.start && end <= r.end) {
        return r.bytes.subarray(start - r.start, end - r.start);
      }
    }
    return null;
  }
}
