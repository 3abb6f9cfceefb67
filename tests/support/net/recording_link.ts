/**
 * {@link GuestLink} doubles for tests: {@link RecordingLink} records a copy of every
 * frame sent and can be told to report "no room"; {@link PublishOnFlushLink} wraps
 * any link and lets frames through only when flushed. Both take frames sent whole and
 * frames built in a reservation (scratch frames), and count flushes and the frames each
 * flush covered, so that a test can tell whether frames were left unpublished (a
 * vhost-user used index not updated, a stream queue not written).
 *
 * @module
 */

import {
  type FrameSpace,
  type GuestLink,
  MAX_FRAME_LENGTH,
  SendResult,
  type TcpSegments,
} from "../../../src/tap/frame_transport.ts";
import { ScratchFrame } from "../../../src/tap/scratch_frame.ts";

/** A recording guest link for unit tests. */
export class RecordingLink implements GuestLink {
  /** Transport name for logs. */
  readonly kind = "test";
  /** What the link reports as the largest receivable frame; tests may lower it. */
  maxFrameLength = MAX_FRAME_LENGTH;
  /** Settable: whether senders may leave TCP/UDP checksums partial. */
  l4ChecksumsOptional = false;
  /** Settable: TcpSegmentation bits (large TCP frames the link takes). */
  tcpSegmentation = 0;
  /** Settable: the device's MTU (0: none reported). */
  deviceMtu = 0;
  /** Per frame ever recorded: the segment size it was committed with (0: a plain frame). */
  readonly segmentSizes: number[] = [];
  /** Copies of the frames sent, oldest first. */
  readonly frames: Uint8Array[] = [];
  /** Per frame ever recorded (take() leaves it): [checksumStart, checksumOffset] ([0, 0]: none). */
  readonly partialChecksums: [number, number][] = [];
  /** Number of flush() calls. */
  flushes = 0;
  /** Frames recorded since the last flush (a real link would not have published them yet). */
  unflushedFrames = 0;
  /** Frames covered by a flush so far. */
  flushedFrames = 0;
  /** When set, sendFrame returns this instead of recording. */
  refuseWith: SendResult | null = null;
  #writable: ((now: number) => void) | null = null;
  readonly #scratch = new ScratchFrame();

  /** Records a copy of the frame (or refuses when {@link refuseWith} is set). */
  sendFrame(frame: Uint8Array, checksumStart = 0, checksumOffset = 0): SendResult {
    if (this.refuseWith !== null) return this.refuseWith;
    this.frames.push(frame.slice());
    this.partialChecksums.push([checksumStart, checksumOffset]);
    this.unflushedFrames++;
    return SendResult.Sent;
  }

  /** Reserves a scratch frame (or refuses like sendFrame when {@link refuseWith} is set). */
  reserveFrame(space: FrameSpace, maxLength: number, _headerLength: number): SendResult {
    if (this.refuseWith !== null) return this.refuseWith;
    return this.#scratch.reserve(space, Math.min(maxLength, this.maxFrameLength));
  }

  /** Records the reserved frame like sendFrame, and its segment size. */
  commitFrame(
    length: number,
    checksumStart = 0,
    checksumOffset = 0,
    segments?: TcpSegments,
  ): SendResult {
    const frame = this.#scratch.take(length);
    if (frame === null) return SendResult.Dropped;
    const result = this.sendFrame(frame, checksumStart, checksumOffset);
    if (result === SendResult.Sent) {
      const segmented = segments !== undefined && length - segments.headerLength > segments.size;
      this.segmentSizes.push(segmented ? segments.size : 0);
    }
    return result;
  }

  /** Forgets the reservation. */
  cancelFrame(): void {
    this.#scratch.cancel();
  }

  /** Counts the flush and the frames it covers. */
  flush(): void {
    this.flushes++;
    this.flushedFrames += this.unflushedFrames;
    this.unflushedFrames = 0;
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

/**
 * Holds the frames sent until the next flush and only then passes them on to `inner`
 * (e.g. the scripted TestGuest), as a vhost-user ring hides frames until its used index
 * is published: a producer that forgets to flush leaves the guest waiting. Counts
 * flushes and the frames each covered. Every frame is accepted (Sent).
 */
export class PublishOnFlushLink implements GuestLink {
  /** Number of flush() calls. */
  flushes = 0;
  /** Frames covered by a flush so far. */
  flushedFrames = 0;
  readonly #inner: GuestLink;
  #held: { frame: Uint8Array; checksumStart: number; checksumOffset: number }[] = [];
  readonly #scratch = new ScratchFrame();

  /** @param inner the link frames go on to at each flush */
  constructor(inner: GuestLink) {
    this.#inner = inner;
  }

  /** Frames sent since the last flush, not yet passed on. */
  get unflushedFrames(): number {
    return this.#held.length;
  }

  /** The inner link's kind. */
  get kind(): string {
    return this.#inner.kind;
  }

  /** The inner link's setting. */
  get l4ChecksumsOptional(): boolean {
    return this.#inner.l4ChecksumsOptional;
  }

  /** None: held frames are passed on whole with sendFrame, which carries no segment size. */
  readonly tcpSegmentation = 0;

  /** The inner link's setting. */
  get deviceMtu(): number {
    return this.#inner.deviceMtu;
  }

  /** The inner link's limit. */
  get maxFrameLength(): number {
    return this.#inner.maxFrameLength;
  }

  /** Holds a copy of the frame until the next flush. */
  sendFrame(frame: Uint8Array, checksumStart = 0, checksumOffset = 0): SendResult {
    this.#held.push({ frame: frame.slice(), checksumStart, checksumOffset });
    return SendResult.Sent;
  }

  /** Reserves a scratch frame of up to the inner link's limit. */
  reserveFrame(space: FrameSpace, maxLength: number, _headerLength: number): SendResult {
    return this.#scratch.reserve(space, Math.min(maxLength, this.maxFrameLength));
  }

  /** Holds the reserved frame like sendFrame. */
  commitFrame(length: number, checksumStart = 0, checksumOffset = 0): SendResult {
    const frame = this.#scratch.take(length);
    if (frame === null) return SendResult.Dropped;
    return this.sendFrame(frame, checksumStart, checksumOffset);
  }

  /** Forgets the reservation. */
  cancelFrame(): void {
    this.#scratch.cancel();
  }

  /** Passes the held frames on to the inner link, then flushes it. */
  flush(): void {
    this.flushes++;
    const held = this.#held;
    this.#held = [];
    this.flushedFrames += held.length;
    for (const h of held) this.#inner.sendFrame(h.frame, h.checksumStart, h.checksumOffset);
    this.#inner.flush();
  }

  /** Registers the callback with the inner link. */
  onWritable(callback: (now: number) => void): void {
    this.#inner.onWritable(callback);
  }
}

/** Resolves after the current task and its microtasks (a setTimeout 0 turn). */
export function nextTask(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
