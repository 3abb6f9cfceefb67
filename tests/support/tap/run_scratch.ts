/**
 * {@link GuestLink.reserveFrames} over scratch buffers, for test links: a run of up to
 * {@link MAX_RUN_FRAMES} frames, one buffer each, their payload rooms one iovec table
 * (so that a socket read fills them as it fills a vhost-user run), the headers
 * written into one shared view and copied into each frame as it is taken.
 *
 * @module
 */

import {
  type FrameSpace,
  MAX_FRAME_LENGTH,
  MAX_RUN_FRAMES,
} from "../../../src/tap/frame_transport.ts";
import { IoVectors } from "../../../ffi/io_vectors.ts";

/** A run of scratch frames with its bookkeeping; see the module comment. */
export class RunScratch {
  #frames: Uint8Array[] = [];
  readonly #headers = new Uint8Array(MAX_FRAME_LENGTH);
  readonly #vectors = new IoVectors(MAX_RUN_FRAMES);
  #count = 0;
  #next = 0;
  #headerLength = 0;
  #length = 0;

  /** Whether a run is open (frames reserved and not all taken). */
  get open(): boolean {
    return this.#next < this.#count;
  }

  /** Describes a run of `frames` frames of up to `maxLength` bytes each in `space`. */
  reserve(space: FrameSpace, frames: number, maxLength: number, headerLength: number): void {
    if (this.#frames.length === 0) {
      // Off V8's heap (larger than a small buffer): the kernel writes at fixed addresses.
      for (let k = 0; k < MAX_RUN_FRAMES; k++) this.#frames.push(new Uint8Array(MAX_FRAME_LENGTH));
    }
    const count = Math.max(1, Math.min(frames, MAX_RUN_FRAMES));
    const length = Math.max(headerLength, Math.min(maxLength, MAX_FRAME_LENGTH));
    this.#vectors.clear();
    for (let k = 0; k < count; k++) {
      this.#vectors.push(this.#frames[k].subarray(headerLength, length));
      space.frameRooms[k] = length - headerLength;
    }
    space.views[0] = this.#headers.subarray(0, headerLength);
    space.count = 1;
    space.vectors = this.#vectors;
    space.vectorsFrom = headerLength;
    space.frames = count;
    space.length = headerLength + count * (length - headerLength);
    this.#count = count;
    this.#next = 0;
    this.#headerLength = headerLength;
    this.#length = length;
  }

  /**
   * The run's next frame, `length` bytes long with the headers written last, or null
   * when no run is open or it does not fit. A frame shorter than its room ends the run.
   */
  take(length: number): Uint8Array | null {
    if (!this.open) return null;
    const frame = this.#frames[this.#next++];
    if (length < this.#headerLength || length > this.#length) {
      this.cancel();
      return null;
    }
    frame.set(this.#headers.subarray(0, this.#headerLength));
    if (length < this.#length) this.cancel();
    return frame.subarray(0, length);
  }

  /** Ends the run; frames not taken are forgotten. */
  cancel(): void {
    this.#count = 0;
    this.#next = 0;
  }
}
