/**
 * A {@link GuestLink} for tests: records a copy of every frame sent, and can be
 * told to report "no room".
 *
 * @module
 */

import {
  type FrameSpace,
  type GuestLink,
  MAX_FRAME_LENGTH,
  SendResult,
} from "../tap/frame_transport.ts";
import { ScratchFrame } from "../tap/scratch_frame.ts";

/** A recording guest link for unit tests. */
export class RecordingLink implements GuestLink {
  /** Transport name for logs. */
  readonly kind = "test";
  /** What the link reports as the largest receivable frame; tests may lower it. */
  maxFrameLength = MAX_FRAME_LENGTH;
  /** Settable: whether senders may leave TCP/UDP checksums partial. */
  l4ChecksumsOptional = false;
  /** Copies of the frames sent, oldest first. */
  readonly frames: Uint8Array[] = [];
  /** Per frame ever recorded (take() leaves it): [checksumStart, checksumOffset] ([0, 0]: none). */
  readonly partialChecksums: [number, number][] = [];
  /** Number of flush() calls. */
  flushes = 0;
  /** When set, sendFrame returns this instead of recording. */
  refuseWith: SendResult | null = null;
  #writable: ((now: number) => void) | null = null;
  readonly #scratch = new ScratchFrame();

  /** Records a copy of the frame (or refuses when {@link refuseWith} is set). */
  sendFrame(frame: Uint8Array, checksumStart = 0, checksumOffset = 0): SendResult {
    if (this.refuseWith !== null) return this.refuseWith;
    this.frames.push(frame.slice());
    this.partialChecksums.push([checksumStart, checksumOffset]);
    return SendResult.Sent;
  }

  /** Reserves a scratch frame (or refuses like sendFrame when {@link refuseWith} is set). */
  reserveFrame(space: FrameSpace, maxLength: number, _headerLength: number): SendResult {
    if (this.refuseWith !== null) return this.refuseWith;
    return this.#scratch.reserve(space, Math.min(maxLength, this.maxFrameLength));
  }

  /** Records the reserved frame like sendFrame. */
  commitFrame(length: number, checksumStart = 0, checksumOffset = 0): SendResult {
    const frame = this.#scratch.take(length);
    if (frame === null) return SendResult.Dropped;
    return this.sendFrame(frame, checksumStart, checksumOffset);
  }

  /** Forgets the reservation. */
  cancelFrame(): void {
    this.#scratch.cancel();
  }

  /** Counts flushes. */
  flush(): void {
    this.flushes++;
  }

  /** Stores the writable callback. */
  onWritable(callback: (now: number) => void): void {
    this.#writable = callback;
  }

  /** Runs the writable callback as a transport would when room appears. */
  fireWritable(now: number): void {
    this.#writable?.(now);
  }

  /** Removes and returns all recorded frames. */
  take(): Uint8Array[] {
    return this.frames.splice(0);
  }
}
