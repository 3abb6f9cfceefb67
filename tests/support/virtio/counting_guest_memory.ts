/**
 * A {@link GuestMemory} double that forwards to another one and counts the lookups,
 * to measure how many descriptors the ring engine walks (one lookup per buffer
 * descriptor, one per indirect table) without trusting the engine's own counter.
 * With a limit it throws once a turn looks up more than allowed, so that a test of
 * an unbounded walk fails at once instead of running for minutes.
 *
 * @module
 */

import type { GuestMemory } from "../../../src/virtio/guest_memory.ts";

/** Forwards to `inner`, counting view() and locate() calls. */
export class CountingGuestMemory implements GuestMemory {
  /** Lookups since the last {@link resetCount}. */
  count = 0;
  /** Lookups since construction. */
  total = 0;
  /** count may not exceed this; the next lookup throws (Infinity: no limit). */
  limit = Infinity;
  readonly #inner: GuestMemory;

  /** @param inner the memory that answers */
  constructor(inner: GuestMemory) {
    this.#inner = inner;
  }

  /** Starts counting a new turn from 0. */
  resetCount(): void {
    this.count = 0;
  }

  #tick(): void {
    this.total++;
    if (++this.count > this.limit) {
      throw new Error(`walked more than ${this.limit} descriptors without yielding`);
    }
  }

  /** {@inheritDoc GuestMemory.view} */
  view(addrLow: number, addrHigh: number, length: number): Uint8Array | null {
    this.#tick();
    return this.#inner.view(addrLow, addrHigh, length);
  }

  /** {@inheritDoc GuestMemory.locate} Counted like view(). */
  locate(addrLow: number, addrHigh: number, length: number): number {
    this.#tick();
    return this.#inner.locate(addrLow, addrHigh, length);
  }

  /** {@inheritDoc GuestMemory.locatedBytes} */
  get locatedBytes(): Uint8Array {
    return this.#inner.locatedBytes;
  }

  /**
   * {@inheritDoc GuestMemory.viewPieces}
   * Not counted: the engine calls it only after view() failed for the same descriptor.
   */
  viewPieces(
    addrLow: number,
    addrHigh: number,
    length: number,
    out: Uint8Array[],
    at: number,
    room: number,
  ): number {
    return this.#inner.viewPieces(addrLow, addrHigh, length, out, at, room);
  }
}
