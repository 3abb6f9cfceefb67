/**
 * passt's stream protocol (QEMU `-netdev stream`, `-netdev passt` in stream mode):
 * every frame is a 4-byte big-endian length followed by the Ethernet frame, over a
 * unix stream socket. This transport reads frames from a nonblocking
 * {@link UnixStream} watched by the {@link EventLoop} and hands them to a
 * {@link FrameHandler}; frames toward the guest are queued in a bounded buffer and
 * written as the socket accepts them.
 *
 * A length below 14 or above 65535 cannot be a frame: the stream is out of sync, so
 * the connection is reset with one log line.
 *
 * @module
 */

import type { UnixStream } from "../../ffi/unix_stream.ts";
import type { FrontendSession, SessionFactory } from "./frontend_session.ts";
import type { Logger } from "../log/logger.ts";
import { log as defaultLogger } from "../log/logger.ts";
import { RateLimitedLog } from "../log/rate_limited_log.ts";
import {
  EVENT_ERROR,
  EVENT_HANGUP,
  EVENT_READABLE,
  EVENT_WRITABLE,
  type EventLoop,
} from "../loop/event_loop.ts";
import {
  type FrameHandler,
  type FrameSpace,
  type GuestLink,
  MAX_FRAME_LENGTH,
  MIN_FRAME_LENGTH,
  SendResult,
} from "./frame_transport.ts";

/** Size of the big-endian length before each frame (passt tap.c stream framing). */
export const STREAM_LENGTH_BYTES = 4;
/** Default bound of the queue toward the guest, in bytes. */
export const DEFAULT_STREAM_QUEUE_BYTES = 1 << 20;

/** Receive buffer: room for several frames, and always for one whole frame after compaction. */
const RECEIVE_BUFFER_BYTES = 256 * 1024;
/** Reads per readable event, so that one busy peer cannot starve the loop. */
const MAX_READS_PER_EVENT = 8;

/** Options of a {@link StreamTransport}. */
export interface StreamTransportOptions {
  /** Where log lines go (the process-wide logger by default). */
  readonly logger?: Logger;
  /** Bound of the queue toward the guest in bytes (at least one maximal frame). */
  readonly maxQueuedBytes?: number;
  /** Monotonic clock in milliseconds (performance.now by default). */
  readonly clock?: () => number;
  /** Name for log lines. */
  readonly label?: string;
}

/** One stream-protocol connection: a {@link GuestLink} toward the guest and a {@link FrontendSession} for the daemon. */
export class StreamTransport implements GuestLink, FrontendSession {
  /** Short name for logs. */
  readonly kind = "stream";
  /** Every frame up to the protocol's limit fits (no guest buffers to fill). */
  readonly maxFrameLength = MAX_FRAME_LENGTH;
  /** {@inheritDoc GuestLink.l4ChecksumsOptional} The stream protocol carries no offload flags. */
  readonly l4ChecksumsOptional = false;
  /** {@inheritDoc GuestLink.tcpSegmentation} None: frames on the stream stay within the MTU. */
  readonly tcpSegmentation = 0;
  /** {@inheritDoc GuestLink.deviceMtu} The stream protocol reports no MTU. */
  readonly deviceMtu = 0;
  /** Settles when the connection is over; never rejects. */
  readonly closed: Promise<void>;

  readonly #connection: UnixStream;
  readonly #fd: number;
  readonly #loop: EventLoop;
  readonly #handler: FrameHandler;
  readonly #logger: Logger;
  readonly #clock: () => number;
  readonly #label: string;
  readonly #errorLog: RateLimitedLog;

  readonly #rx = new Uint8Array(RECEIVE_BUFFER_BYTES);
  #rxStart = 0;
  #rxEnd = 0;

  readonly #tx: Uint8Array;
  #txStart = 0;
  #txEnd = 0;
  #watchingWritable = false;
  #wantWritable = false;
  #writable: ((now: number) => void) | null = null;
  /** Queue offset of the open reservation's length prefix, or -1. */
  #reservedAt = -1;
  #reservedLength = 0;

  #resolve!: () => void;
  #done = false;

  /**
   * Takes ownership of `connection` (made nonblocking, closed at the end), watches
   * it on `loop` and reports the link up to `handler`.
   */
  constructor(
    connection: UnixStream,
    loop: EventLoop,
    handler: FrameHandler,
    options: StreamTransportOptions = {},
  ) {
    const bound = options.maxQueuedBytes ?? DEFAULT_STREAM_QUEUE_BYTES;
    if (bound < STREAM_LENGTH_BYTES + MAX_FRAME_LENGTH) {
      throw new RangeError(
        `Cannot create a stream transport: queue bound ${bound} is below one maximal frame (${
          STREAM_LENGTH_BYTES + MAX_FRAME_LENGTH
        })`,
      );
    }
    this.#connection = connection;
    this.#fd = connection.fd;
    this.#loop = loop;
    this.#handler = handler;
    this.#logger = options.logger ?? defaultLogger;
    this.#clock = options.clock ?? (() => performance.now());
    this.#label = options.label ?? `stream fd ${connection.fd}`;
    this.#errorLog = new RateLimitedLog("warn", undefined, this.#logger);
    this.#tx = new Uint8Array(bound);
    this.closed = new Promise((resolve) => (this.#resolve = resolve));
    connection.setNonBlocking(true);
    loop.watch(this.#fd, (events, now) => this.#onEvent(events, now), EVENT_READABLE);
    this.#logger.info(`${this.#label}: frontend connected`);
    handler.linkUp(this, this.#clock());
  }

  #onEvent(events: number, now: number): void {
    if (this.#done) return;
    if ((events & EVENT_WRITABLE) !== 0) this.#onWritable(now);
    if (this.#done) return;
    if ((events & (EVENT_READABLE | EVENT_HANGUP | EVENT_ERROR)) !== 0) this.#onReadable(now);
  }

  #onReadable(now: number): void {
    const rx = this.#rx;
    let frames = 0;
    for (let i = 0; i < MAX_READS_PER_EVENT; i++) {
      if (rx.length - this.#rxEnd < STREAM_LENGTH_BYTES + MAX_FRAME_LENGTH) this.#compact();
      let n: number;
      try {
        n = this.#connection.recv(rx.subarray(this.#rxEnd));
      } catch (error) {
        this.#finish(`receive failed: ${(error as Error).message}`, now);
        return;
      }
      if (n === 0) {
        this.#finish("frontend disconnected", now);
        break;
      }
      if (n < 0) break;
      this.#rxEnd += n;
      const parsed = this.#parse(now);
      if (parsed < 0) return; // reset
      frames += parsed;
    }
    if (frames > 0) {
      try {
        this.#handler.endOfBatch(now);
      } catch (error) {
        this.#errorLog.write(now, `${this.#label}: endOfBatch threw: ${(error as Error).message}`);
      }
    }
  }

  /** Hands every complete frame to the handler; returns their number, or -1 after a reset. */
  #parse(now: number): number {
    const rx = this.#rx;
    let start = this.#rxStart;
    const end = this.#rxEnd;
    let frames = 0;
    while (end - start >= STREAM_LENGTH_BYTES) {
      const length =
        ((rx[start] << 24) | (rx[start + 1] << 16) | (rx[start + 2] << 8) | rx[start + 3]) >>> 0;
      if (length < MIN_FRAME_LENGTH || length > MAX_FRAME_LENGTH) {
        this.#finish(
          `resetting the connection: frame length ${length} is outside ${MIN_FRAME_LENGTH}..${MAX_FRAME_LENGTH}`,
          now,
          "warn",
        );
        return -1;
      }
      if (end - start < STREAM_LENGTH_BYTES + length) break;
      const frameStart = start + STREAM_LENGTH_BYTES;
      start = frameStart + length;
      this.#rxStart = start;
      frames++;
      try {
        this.#handler.handleFrame(rx.subarray(frameStart, start), now);
      } catch (error) {
        this.#errorLog.write(
          now,
          `${this.#label}: frame handler threw: ${(error as Error).message}`,
        );
      }
      if (this.#done) return -1;
    }
    this.#rxStart = start;
    return frames;
  }

  /** Moves a partial frame to the front of the receive buffer. */
  #compact(): void {
    if (this.#rxStart === 0) return;
    this.#rx.copyWithin(0, this.#rxStart, this.#rxEnd);
    this.#rxEnd -= this.#rxStart;
    this.#rxStart = 0;
  }

  /** {@inheritDoc GuestLink.sendFrame} */
  sendFrame(frame: Uint8Array): SendResult {
    if (this.#done) return SendResult.Dropped;
    const length = frame.length;
    if (length < MIN_FRAME_LENGTH || length > MAX_FRAME_LENGTH) {
      return SendResult.Dropped;
    }
    const room = this.#makeRoom(STREAM_LENGTH_BYTES + length);
    if (room !== SendResult.Sent) return room;
    const at = this.#txEnd;
    this.#tx.set(frame, at + STREAM_LENGTH_BYTES);
    this.#putLength(at, length);
    return SendResult.Sent;
  }

  /**
   * {@inheritDoc GuestLink.reserveFrame}
   * The room is in the queue toward the guest, right after the frame's length: a
   * frame written there is sent as it is, with no further copy.
   */
  reserveFrame(space: FrameSpace, maxLength: number, headerLength: number): SendResult {
    this.#reservedAt = -1;
    if (this.#done) return SendResult.Dropped;
    const length = Math.min(maxLength, MAX_FRAME_LENGTH);
    if (length < headerLength || length < MIN_FRAME_LENGTH) return SendResult.Dropped;
    const room = this.#makeRoom(STREAM_LENGTH_BYTES + length);
    if (room !== SendResult.Sent) return room;
    const at = this.#txEnd;
    space.views[0] = this.#tx.subarray(at + STREAM_LENGTH_BYTES, at + STREAM_LENGTH_BYTES + length);
    space.count = 1;
    space.length = length;
    this.#reservedAt = at;
    this.#reservedLength = length;
    return SendResult.Sent;
  }

  /** {@inheritDoc GuestLink.commitFrame} */
  commitFrame(length: number): SendResult {
    const at = this.#reservedAt;
    this.#reservedAt = -1;
    if (at < 0 || this.#done || at !== this.#txEnd) return SendResult.Dropped;
    if (length < MIN_FRAME_LENGTH || length > this.#reservedLength) {
      return SendResult.Dropped;
    }
    this.#putLength(at, length);
    return SendResult.Sent;
  }

  /** {@inheritDoc GuestLink.cancelFrame} */
  cancelFrame(): void {
    this.#reservedAt = -1;
  }

  /** Writes the length prefix at `at` and takes the frame after it into the queue. */
  #putLength(at: number, length: number): void {
    const tx = this.#tx;
    tx[at] = length >>> 24;
    tx[at + 1] = (length >>> 16) & 0xff;
    tx[at + 2] = (length >>> 8) & 0xff;
    tx[at + 3] = length & 0xff;
    this.#txEnd = at + STREAM_LENGTH_BYTES + length;
  }

  /**
   * Makes `needed` contiguous bytes free at the queue's end (writing what the socket
   * takes, moving the rest to the front): Sent when they are; NoRoom after asking to
   * be told when the socket drains; Dropped when the connection ended.
   */
  #makeRoom(needed: number): SendResult {
    const tx = this.#tx;
    if (tx.length - this.#txEnd >= needed) return SendResult.Sent;
    this.#drain(this.#clock());
    if (this.#done) return SendResult.Dropped;
    if (tx.length - this.#txEnd < needed && this.#txStart > 0) {
      tx.copyWithin(0, this.#txStart, this.#txEnd);
      this.#txEnd -= this.#txStart;
      this.#txStart = 0;
    }
    if (tx.length - this.#txEnd < needed) {
      this.#wantWritable = true;
      this.#watchWritable(true);
      return SendResult.NoRoom;
    }
    return SendResult.Sent;
  }

  /** {@inheritDoc GuestLink.flush} */
  flush(): void {
    if (!this.#done) this.#drain(this.#clock());
  }

  /** {@inheritDoc GuestLink.onWritable} */
  onWritable(callback: (now: number) => void): void {
    this.#writable = callback;
  }

  /** Writes queued bytes until the socket would block; watches EVENT_WRITABLE while it does. */
  #drain(now: number): void {
    while (this.#txStart < this.#txEnd) {
      let n: number;
      try {
        n = this.#connection.send(this.#tx.subarray(this.#txStart, this.#txEnd));
      } catch (error) {
        this.#finish(`send failed: ${(error as Error).message}`, now);
        return;
      }
      if (n < 0) {
        this.#watchWritable(true);
        return;
      }
      this.#txStart += n;
    }
    this.#txStart = 0;
    this.#txEnd = 0;
    // All written. If the stack is still waiting for room (a flush emptied the buffer
    // after a NoRoom), keep watching: the socket is writable, so the next wake-up
    // delivers the writable callback. Turning the watch off here lost it for good.
    this.#watchWritable(this.#wantWritable);
  }

  #onWritable(now: number): void {
    this.#drain(now);
    if (this.#done) return;
    // Room for at least one maximal frame again: tell the stack.
    const room = this.#tx.length - (this.#txEnd - this.#txStart);
    if (this.#wantWritable && room >= STREAM_LENGTH_BYTES + MAX_FRAME_LENGTH) {
      this.#wantWritable = false;
      this.#writable?.(now);
    }
  }

  #watchWritable(on: boolean): void {
    if (on === this.#watchingWritable || this.#done) return;
    this.#watchingWritable = on;
    this.#loop.modify(this.#fd, on ? EVENT_READABLE | EVENT_WRITABLE : EVENT_READABLE);
  }

  /** {@inheritDoc FrontendSession.close} */
  close(): void {
    this.#finish("closed by the daemon", this.#clock());
  }

  #finish(reason: string, now: number, level: "info" | "warn" = "info"): void {
    if (this.#done) return;
    this.#done = true;
    this.#loop.unwatch(this.#fd);
    this.#connection.close();
    this.#logger.write(level, `${this.#label}: ${reason}`);
    // The stream was the front-end: with it closed, the link is gone for good. #finish
    // runs inside sendFrame, close() and loop callbacks: nothing may escape.
    try {
      this.#handler.linkDown(now);
    } catch (error) {
      this.#errorLog.write(now, `${this.#label}: linkDown threw: ${(error as Error).message}`);
    }
    try {
      this.#handler.frontendGone?.(now);
    } catch (error) {
      this.#errorLog.write(
        now,
        `${this.#label}: frontendGone threw: ${(error as Error).message}`,
      );
    }
    this.#resolve();
  }
}

/**
 * Starts a stream-protocol session on `connection` delivering frames to `handler`
 * (the shape of the daemon's {@link SessionFactory}, with the handler bound).
 */
export function createStreamSession(
  connection: UnixStream,
  loop: EventLoop,
  handler: FrameHandler,
  options: StreamTransportOptions = {},
): FrontendSession {
  return new StreamTransport(connection, loop, handler, options);
}

/** Returns a {@link SessionFactory} serving each stream connection with `handler`. */
export function streamSessionFactory(
  handler: FrameHandler,
  options: StreamTransportOptions = {},
): SessionFactory {
  let counter = 0;
  return (connection, loop) =>
    createStreamSession(connection, loop, handler, { label: `stream #${++counter}`, ...options });
}
