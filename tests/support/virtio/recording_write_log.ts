/**
 * A {@link GuestWriteLog} for tests over ArrayBuffer guest memory: records every range
 * reported as guest-physical byte ranges, and tells which guest bytes changed since a
 * snapshot without being reported. That check does not depend on how the datapath
 * writes: any byte it changes and forgets to report shows up.
 *
 * @module
 */

import type { GuestWriteLog } from "../../../src/virtio/guest_write_log.ts";

/** A region of test guest memory: its guest-physical base and its bytes. */
export interface TestRegion {
  readonly base: number;
  readonly bytes: Uint8Array;
}

/** Ranges reported by the rings of one test, shared by their {@link RecordingWriteLog}s. */
export class WriteRecord {
  /** Reported guest-physical ranges, `[start, end)`, in order. */
  readonly ranges: [number, number][] = [];
  /** Views reported that are not in any region (a bug in the caller). */
  readonly strays: Uint8Array[] = [];
  readonly #regions: readonly TestRegion[];
  #snapshot: Uint8Array[] = [];

  constructor(regions: readonly TestRegion[]) {
    this.#regions = regions;
    this.snapshot();
  }

  /** The guest address of `view[0]`, or -1 when it is in no region. */
  guestAddress(view: Uint8Array): number {
    for (const region of this.#regions) {
      const bytes = region.bytes;
      if (
        view.buffer === bytes.buffer && view.byteOffset >= bytes.byteOffset &&
        view.byteOffset + view.byteLength <= bytes.byteOffset + bytes.byteLength
      ) {
        return region.base + view.byteOffset - bytes.byteOffset;
      }
    }
    return -1;
  }

  /** Remembers the regions' contents now and forgets the ranges reported so far. */
  snapshot(): void {
    this.#snapshot = this.#regions.map((region) => region.bytes.slice());
    this.ranges.length = 0;
  }

  /** Whether guest byte `address` lies in a reported range. */
  covers(address: number): boolean {
    return this.ranges.some(([start, end]) => address >= start && address < end);
  }

  /** Guest addresses of bytes that changed since the snapshot and were not reported. */
  unreported(): number[] {
    const missed: number[] = [];
    this.#regions.forEach((region, r) => {
      const before = this.#snapshot[r];
      for (let i = 0; i < region.bytes.length; i++) {
        if (region.bytes[i] !== before[i] && !this.covers(region.base + i)) {
          missed.push(region.base + i);
        }
      }
    });
    return missed;
  }

  /** The log of one ring whose used ring is at guest address `usedAddress`. */
  ringLog(usedAddress: number): RecordingWriteLog {
    return new RecordingWriteLog(this, usedAddress);
  }
}

/** One ring's reports, into a shared {@link WriteRecord}. */
export class RecordingWriteLog implements GuestWriteLog {
  readonly #record: WriteRecord;
  readonly #usedAddress: number;

  constructor(record: WriteRecord, usedAddress: number) {
    this.#record = record;
    this.#usedAddress = usedAddress;
  }

  /** {@inheritDoc GuestWriteLog.markView} */
  markView(view: Uint8Array, start: number, length: number): void {
    const base = this.#record.guestAddress(view);
    if (base < 0 || start < 0 || start + length > view.length) {
      this.#record.strays.push(view);
      return;
    }
    this.#record.ranges.push([base + start, base + start + length]);
  }

  /** {@inheritDoc GuestWriteLog.markUsed} */
  markUsed(offset: number, length: number): void {
    this.#record.ranges.push([this.#usedAddress + offset, this.#usedAddress + offset + length]);
  }
}
