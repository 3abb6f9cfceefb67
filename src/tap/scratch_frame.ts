/**
 * {@link GuestLink.reserveFrame} over one contiguous buffer, for links that have no
 * guest buffers to write into (test links, wrappers): the frame is written into the
 * scratch buffer and sent on commit with the link's own `sendFrame`, one copy.
 *
 * @module
 */

import { type FrameSpace, MAX_FRAME_LENGTH, SendResult } from "./frame_transport.ts";

/** A scratch frame buffer with reservation bookkeeping; see the module comment. */
export class ScratchFrame {
  readonly #buffer: Uint8Array;
  #reserved = false;

  /** @param size the largest frame (default {@link MAX_FRAME_LENGTH}) */
  constructor(size: number = MAX_FRAME_LENGTH) {
    this.#buffer = new Uint8Array(size);
  }

  /** Whether a reservation is open. */
  get reserved(): boolean {
    return this.#reserved;
  }

  /** Describes the scratch buffer (at most `maxLength` bytes of it) in `space`. */
  reserve(space: FrameSpace, maxLength: number): SendResult {
    const length = Math.max(0, Math.min(maxLength, this.#buffer.length));
    space.views[0] = this.#buffer.subarray(0, length);
    space.count = 1;
    space.length = length;
    this.#reserved = true;
    return SendResult.Sent;
  }

  /**
   * Ends the reservation and returns the frame's first `length` bytes, or null when
   * no reservation was open or `length` does not fit.
   */
  take(length: number): Uint8Array | null {
    if (!this.#reserved) return null;
    this.#reserved = false;
    if (length < 0 || length > this.#buffer.length) return null;
    return this.#buffer.subarray(0, length);
  }

  /** Ends the reservation without a frame. */
  cancel(): void {
    this.#reserved = false;
  }
}
