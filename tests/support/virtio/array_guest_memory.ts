/**
 * {@link GuestMemory} over plain ArrayBuffers placed at guest-physical addresses:
 * the memory used by unit tests, fuzzers and benchmarks of the ring engine.
 *
 * @module
 */

import {
  type GuestMemory,
  PIECES_NO_ROOM,
  PIECES_OUTSIDE_MEMORY,
} from "../../../src/virtio/guest_memory.ts";

const TWO_32 = 0x1_0000_0000;
/** High halves ≥ this give addresses ≥ 2^53, where no region lives. */
const HIGH_HALF_LIMIT = 0x20_0000;

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
    if (addrHigh >= HIGH_HALF_LIMIT) return null; // at or above 2^53: no region lives there
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

  /** {@inheritDoc GuestMemory.locatedBytes} */
  locatedBytes: Uint8Array = new Uint8Array(0);

  /** {@inheritDoc GuestMemory.locate} */
  locate(addrLow: number, addrHigh: number, length: number): number {
    if (addrHigh >= HIGH_HALF_LIMIT) return -1;
    const start = addrHigh * TWO_32 + addrLow;
    const end = start + length;
    const regions = this.#regions;
    for (let i = 0; i < regions.length; i++) {
      const r = regions[i];
      if (start >= r.start && end <= r.end) {
        this.locatedBytes = r.bytes;
        return start - r.start;
      }
    }
    return -1;
  }

  /** {@inheritDoc GuestMemory.viewPieces} */
  viewPieces(
    addrLow: number,
    addrHigh: number,
    length: number,
    out: Uint8Array[],
    at: number,
    room: number,
  ): number {
    if (addrHigh >= HIGH_HALF_LIMIT || !(length >= 0)) return PIECES_OUTSIDE_MEMORY;
    const start = addrHigh * TWO_32 + addrLow; // exact: below 2^53
    if (length === 0) {
      const empty = this.view(addrLow, addrHigh, 0);
      if (empty === null) return PIECES_OUTSIDE_MEMORY;
      if (room < 1) return PIECES_NO_ROOM;
      out[at] = empty;
      return 1;
    }
    // First pass: every byte mapped, and how many views. The cursor only ever moves to
    // a region's end (below 2^53) and `left` only shrinks, so all of it stays exact;
    // regions do not overlap, so each is visited at most once.
    let pieces = 0;
    for (let cursor = start, left = length; left > 0;) {
      const r = this.#regionAt(cursor);
      if (r === null) return PIECES_OUTSIDE_MEMORY;
      if (++pieces > room) return PIECES_NO_ROOM;
      const n = Math.min(left, r.end - cursor);
      cursor += n;
      left -= n;
    }
    for (let cursor = start, left = length, i = at; left > 0; i++) {
      const r = this.#regionAt(cursor)!;
      const n = Math.min(left, r.end - cursor);
      out[i] = r.bytes.subarray(cursor - r.start, cursor - r.start + n);
      cursor += n;
      left -= n;
    }
    return pieces;
  }

  #regionAt(address: number): Region | null {
    for (const r of this.#regions) if (address >= r.start && address < r.end) return r;
    return null;
  }
}
