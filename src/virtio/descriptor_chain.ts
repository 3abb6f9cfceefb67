/**
 * One descriptor chain popped from a virtqueue: its head index and views of its
 * buffers, device-readable buffers first (virtio 1.2 §2.7.4, §2.7.5). A buffer that
 * spans adjacent guest memory regions has one view per region, so the views form a
 * gather list: there may be more views than descriptors.
 *
 * A chain made {@link DescriptorChain.located} gets no views: each buffer is given as
 * a region's bytes, an offset into them and a length (`bases`, `offsets`, `lengths`),
 * which is all an iovec table needs; making a view costs ~100 ns per buffer, and a
 * 64 KiB frame takes ~16 of a Linux guest's 4 KiB RX buffers, or comes from it as ~16
 * page fragments. {@link DescriptorChain.readInto} and {@link DescriptorChain.writeFrom}
 * and {@link DescriptorChain.reportWritten} work on either kind.
 *
 * Objects are reused: the engine refills one per pop instead of allocating.
 *
 * @module
 */

import type { GuestWriteLog } from "./guest_write_log.ts";

const EMPTY = new Uint8Array(0);

/** A reusable holder for one popped descriptor chain. */
export class DescriptorChain {
  /** Head descriptor index: the id returned in the used ring. */
  head = 0;
  /** Number of views in {@link buffers} that belong to this chain. */
  count = 0;
  /** How many of the first views are of device-readable buffers (the rest are writable). */
  readableCount = 0;
  /** Total bytes of the device-readable buffers. */
  readableBytes = 0;
  /** Total bytes of the device-writable buffers. */
  writableBytes = 0;
  /** Views of the buffers, valid until the end of the current batch; only `[0, count)` is used. */
  readonly buffers: Uint8Array[];
  /**
   * Set by the owner before popping: buffers come as {@link bases} / {@link offsets} /
   * {@link lengths} instead of {@link buffers} (which then holds nothing).
   */
  located = false;
  /** Located mode: the bytes (a whole region, or a view) each buffer lies in. */
  readonly bases: Uint8Array[];
  /** Located mode: where each buffer starts in its base. */
  readonly offsets: Float64Array;
  /** Located mode: each buffer's length. */
  readonly lengths: Uint32Array;

  /**
   * @param capacity the most views a chain may have (the queue size, like QEMU's limit
   *   of VIRTQUEUE_MAX_SIZE iovecs per element); a chain that needs more is malformed
   */
  constructor(capacity: number) {
    this.buffers = new Array<Uint8Array>(capacity).fill(EMPTY);
    this.bases = new Array<Uint8Array>(capacity).fill(EMPTY);
    this.offsets = new Float64Array(capacity);
    this.lengths = new Uint32Array(capacity);
  }

  /** Empties the chain and sets its head index. */
  reset(head: number): void {
    this.head = head;
    this.count = 0;
    this.readableCount = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
  }

  /** Drops the buffer views so that no reference into guest memory outlives the batch. */
  release(): void {
    if (this.located) {
      for (let i = 0; i < this.count; i++) this.bases[i] = EMPTY;
    } else {
      for (let i = 0; i < this.count; i++) this.buffers[i] = EMPTY;
    }
    this.count = 0;
  }

  /**
   * Copies `target.length` bytes of the readable buffers, starting `offset` bytes
   * into them, to `target`.
   * @returns the number of bytes copied (less when the chain is shorter)
   */
  readInto(offset: number, target: Uint8Array): number {
    return this.#copy(0, this.readableCount, offset, target, false);
  }

  /**
   * Copies `source` into the writable buffers, starting `offset` bytes into them.
   * @returns the number of bytes copied (less when the chain is shorter)
   */
  writeFrom(offset: number, source: Uint8Array): number {
    return this.#copy(this.readableCount, this.count, offset, source, true);
  }

  /**
   * Copies between `bytes` and the buffers `[first, end)`, starting `offset` bytes into
   * them: into the buffers when `intoChain`, else out of them. Buffer i is `buffers[i]`
   * whole, or in a located chain `lengths[i]` bytes of `bases[i]` from `offsets[i]`.
   * @returns the number of bytes copied (less when the buffers are shorter)
   */
  #copy(first: number, end: number, offset: number, bytes: Uint8Array, intoChain: boolean): number {
    const located = this.located;
    let copied = 0;
    let skip = offset;
    for (let i = first; i < end && copied < bytes.length; i++) {
      const base = located ? this.bases[i] : this.buffers[i];
      const length = located ? this.lengths[i] : base.length;
      if (skip >= length) {
        skip -= length;
        continue;
      }
      const n = Math.min(length - skip, bytes.length - copied);
      const at = (located ? this.offsets[i] : 0) + skip;
      if (intoChain) {
        base.set(
          copied === 0 && n === bytes.length ? bytes : bytes.subarray(copied, copied + n),
          at,
        );
      } else {
        bytes.set(at === 0 && n === base.length ? base : base.subarray(at, at + n), copied);
      }
      copied += n;
      skip = 0;
    }
    return copied;
  }

  /**
   * Reports to `log` that the writable buffers' bytes `[offset, offset + length)`
   * (counted as {@link writeFrom} counts them) were written: one report per view
   * touched, so a range across adjacent memory regions reports each region's part.
   */
  reportWritten(log: GuestWriteLog, offset: number, length: number): void {
    const located = this.located;
    let left = length;
    let skip = offset;
    for (let i = this.readableCount; i < this.count && left > 0; i++) {
      const bufferLength = located ? this.lengths[i] : this.buffers[i].length;
      if (skip >= bufferLength) {
        skip -= bufferLength;
        continue;
      }
      const n = Math.min(bufferLength - skip, left);
      if (located) log.markView(this.bases[i], this.offsets[i] + skip, n);
      else log.markView(this.buffers[i], skip, n);
      left -= n;
      skip = 0;
    }
  }
}
