/**
 * The daemon's event loop for helper-owned descriptors (vhost-user socket, kick
 * eventfds, ping sockets...), running beside Deno's own event loop: it waits with a
 * `nonblocking` epoll_wait on a Deno worker thread, so the JS thread stays free for
 * Deno's async sockets and timers.
 *
 * Every watched fd is tagged in epoll with (fd, generation). An event whose
 * generation no longer matches the current watch of that fd — the fd was unwatched,
 * or closed and its number reused, while a wait was in flight or earlier in the same
 * batch — is dropped, so it never reaches the fd's new owner.
 *
 * @module
 */
import {
  Epoll,
  EPOLL_EVENT_DATA_HIGH,
  EPOLL_EVENT_DATA_LOW,
  EPOLL_EVENT_EVENTS,
  EPOLL_EVENT_SIZE,
  EPOLLERR,
  EPOLLHUP,
  EPOLLIN,
  EPOLLOUT,
} from "../../ffi/epoll.ts";
import { EventFd } from "../../ffi/event_fd.ts";
import { log } from "../log/logger.ts";
import { RateLimitedLog } from "../log/rate_limited_log.ts";

/** The fd is readable (EPOLLIN). */
export const EVENT_READABLE: number = EPOLLIN;
/** The fd is writable (EPOLLOUT). */
export const EVENT_WRITABLE: number = EPOLLOUT;
/** The peer hung up (EPOLLHUP); always reported, no need to ask for it. */
export const EVENT_HANGUP: number = EPOLLHUP;
/** An error is pending on the fd (EPOLLERR); always reported. */
export const EVENT_ERROR: number = EPOLLERR;

/**
 * Called with the events that occurred (a mask of the EVENT_* bits) and the loop's
 * time for this wake-up (milliseconds, {@link monotonicNow}).
 */
export type EventHandler = (events: number, now: number) => void;

/** The monotonic clock the loop passes to handlers, in milliseconds. */
export function monotonicNow(): number {
  return performance.now();
}

/** Events fetched per wait; more pending events are fetched by the next wait. */
const MAX_EVENTS = 256;

/**
 * After dispatching a batch, the loop polls epoll synchronously (cheap: one syscall)
 * up to this many times before going back to the asynchronous wait (10–17 µs per
 * call and a hand-off to another thread), so that busy fds are served quickly.
 * Before each poll it yields once to Deno's event loop (setImmediate: after Deno's
 * I/O phase, ~1.4 µs), so Deno's own tasks get turns and the work the batch started
 * (host socket writes, frames to the guest) runs first: the guest's answer to it is
 * then more often already there (measured under iperf3: 3–7% → 10–20% of polls hit).
 */
const MAX_SYNC_ROUNDS = 4;

/**
 * When a synchronous poll after a busy batch finds nothing, the loop waits up to this
 * long in a synchronous epoll_wait before going back to the asynchronous wait: under
 * traffic the next event (the guest's answer, the host's next segment) usually comes
 * within it, and a plain blocking syscall costs a few µs where the asynchronous wait
 * costs a hand-off to another thread and back (10–35 µs) per wake-up. Deno's own
 * tasks (timers, node:dgram) wait at most this long. The default of
 * {@link EventLoopOptions.busyWaitMs}.
 */
export const BUSY_WAIT_MS = 1;

/** Options of an {@link EventLoop}. */
export interface EventLoopOptions {
  /**
   * How long to wait synchronously for more events after a busy batch ({@link BUSY_WAIT_MS}
   * by default); 0 when the same thread must also serve peers on Deno's own I/O (in-process
   * tests and benchmarks), which that wait would hold up.
   */
  readonly busyWaitMs?: number;
}

/** Resolves after Deno's next I/O phase (Node's setImmediate; no 1 ms timer floor). */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Generation tag of the stop eventfd; watches use 1..2^32-1. */
const STOP_GENERATION = 0;

const GENERATION_LIMIT = 2 ** 32;

interface Watch {
  handler: EventHandler;
  generation: number;
  events: number;
}

/** Epoll-based loop over helper-owned descriptors; see the module comment. */
export class EventLoop {
  readonly #epoll: Epoll;
  readonly #stopFd: EventFd;
  readonly #buffer = new Uint8Array(MAX_EVENTS * EPOLL_EVENT_SIZE);
  readonly #view = new DataView(this.#buffer.buffer);
  readonly #watches = new Map<number, Watch>();
  readonly #handlerErrors = new RateLimitedLog("error");
  readonly #batchEnd: ((now: number) => void)[] = [];
  #nextGeneration = 1;
  #running = false;
  #stopRequested = false;
  #closeRequested = false;
  #closed = false;

  readonly #busyWaitMs: number;

  /** Creates the loop's epoll instance and stop eventfd. */
  constructor(options: EventLoopOptions = {}) {
    this.#busyWaitMs = options.busyWaitMs ?? BUSY_WAIT_MS;
    this.#epoll = Epoll.create();
    try {
      this.#stopFd = EventFd.create();
      this.#epoll.add(this.#stopFd.fd, EPOLLIN, this.#stopFd.fd, STOP_GENERATION);
    } catch (error) {
      this.#epoll.close();
      throw error;
    }
  }

  /**
   * Calls `handler` whenever `fd` has any of `events` (level-triggered: it is called
   * again on every wake-up while the condition lasts). EVENT_HANGUP and EVENT_ERROR
   * are always reported and keep coming until the fd is unwatched. Watching an
   * fd that is already watched replaces the old watch: its number must have been
   * closed and reused, and the old owner's pending events are dropped.
   * @throws NativeError if epoll refuses the fd (EBADF, EPERM for regular files)
   */
  watch(fd: number, handler: EventHandler, events: number = EVENT_READABLE): void {
    this.#checkOpen("watch");
    if (fd === this.#stopFd.fd) throw new Error(`Cannot watch fd ${fd}: it is the loop's stop fd`);
    const generation = this.#takeGeneration();
    if (this.#watches.has(fd)) {
      log.debug(`event loop: fd ${fd} watched again without unwatch; replacing the old watch`);
      this.#watches.delete(fd);
      this.#epoll.remove(fd);
    }
    this.#epoll.add(fd, events, fd, generation);
    this.#watches.set(fd, { handler, generation, events });
  }

  /** Changes the events watched on `fd` (e.g. add EVENT_WRITABLE while output is blocked). */
  modify(fd: number, events: number): void {
    this.#checkOpen("modify");
    const watch = this.#watches.get(fd);
    if (watch === undefined) throw new Error(`Cannot modify fd ${fd}: it is not watched`);
    if (watch.events === events) return;
    this.#epoll.modify(fd, events, fd, watch.generation);
    watch.events = events;
  }

  /**
   * Re-arms the watch of `fd` with its current events: the kernel looks at the fd
   * again, reports what is ready now, and — for an edge-triggered watch — reports
   * the next change even where no new edge would have been signalled (a socket whose
   * send buffer is nearly full then reports when it drains).
   */
  rearm(fd: number): void {
    this.#checkOpen("rearm");
    const watch = this.#watches.get(fd);
    if (watch === undefined) throw new Error(`Cannot rearm fd ${fd}: it is not watched`);
    this.#epoll.modify(fd, watch.events, fd, watch.generation);
  }

  /**
   * Runs `callback` after the handlers of each wake-up have run (once per batch of
   * events), so that work they queued — frames toward the guest, acknowledgements —
   * is flushed together. A callback that throws is logged and the loop carries on.
   */
  onBatchEnd(callback: (now: number) => void): void {
    this.#batchEnd.push(callback);
  }

  /** Removes a callback added with {@link onBatchEnd}. */
  offBatchEnd(callback: (now: number) => void): void {
    const at = this.#batchEnd.indexOf(callback);
    if (at >= 0) this.#batchEnd.splice(at, 1);
  }

  /**
   * Stops watching `fd`; events for it already fetched are dropped. Call it before
   * closing the fd. Does nothing for an fd not watched.
   */
  unwatch(fd: number): void {
    if (this.#closed || !this.#watches.delete(fd)) return;
    this.#epoll.remove(fd);
  }

  /** Tells whether `fd` is currently watched. */
  isWatching(fd: number): boolean {
    return this.#watches.has(fd);
  }

  /** True while {@link run} is running. */
  get running(): boolean {
    return this.#running;
  }

  /** Number of watched fds. */
  get size(): number {
    return this.#watches.size;
  }

  /**
   * Runs the loop until {@link stop} is called; resolves then. A handler that throws
   * is logged (rate-limited) and the loop carries on.
   * @throws Error if the loop is already running or closed
   */
  async run(): Promise<void> {
    this.#checkOpen("run");
    if (this.#running) throw new Error("Cannot run the event loop: it is already running");
    this.#running = true;
    try {
      let syncRounds = 0;
      while (!this.#stopRequested) {
        let count: number;
        if (syncRounds > 0 && syncRounds <= MAX_SYNC_ROUNDS) {
          await nextTurn();
          if (this.#stopRequested) break;
          count = this.#epoll.wait(this.#buffer, MAX_EVENTS, 0);
          if (count === 0 && this.#busyWaitMs > 0) {
            count = this.#epoll.wait(this.#buffer, MAX_EVENTS, this.#busyWaitMs);
          }
          if (count === 0) {
            syncRounds = 0;
            continue;
          }
        } else {
          syncRounds = 0;
          count = await this.#epoll.waitAsync(this.#buffer, MAX_EVENTS, -1);
        }
        syncRounds++;
        this.#dispatch(count);
      }
    } finally {
      this.#stopRequested = false;
      this.#running = false;
      this.#stopFd.drain();
      if (this.#closeRequested) this.#release();
    }
  }

  /**
   * Makes {@link run} return after the handlers of the current wake-up (a pending
   * wait is woken through the stop eventfd). Calling it when not running makes the
   * next run() return at once.
   */
  stop(): void {
    if (this.#closed || this.#stopRequested) return;
    this.#stopRequested = true;
    this.#stopFd.signal();
  }

  /**
   * Stops the loop and releases the epoll instance and stop fd (once run() has
   * returned, if it is running). Watched fds are not closed: their owners close them.
   * Later calls do nothing.
   */
  close(): void {
    if (this.#closed || this.#closeRequested) return;
    this.#closeRequested = true;
    if (this.#running) {
      this.stop();
    } else {
      this.#release();
    }
  }

  #dispatch(count: number): void {
    const now = monotonicNow();
    const view = this.#view;
    for (let i = 0; i < count; i++) {
      const base = i * EPOLL_EVENT_SIZE;
      const events = view.getUint32(base + EPOLL_EVENT_EVENTS, true);
      const fd = view.getUint32(base + EPOLL_EVENT_DATA_LOW, true);
      const generation = view.getUint32(base + EPOLL_EVENT_DATA_HIGH, true);
      if (generation === STOP_GENERATION) {
        this.#stopFd.drain();
        continue;
      }
      const watch = this.#watches.get(fd);
      if (watch === undefined || watch.generation !== generation) continue;
      try {
        watch.handler(events, now);
      } catch (error) {
        const detail = error instanceof Error ? (error.stack ?? error.message) : String(error);
        this.#handlerErrors.write(now, `event loop: handler for fd ${fd} threw: ${detail}`);
      }
      if (this.#stopRequested) return;
    }
    for (const callback of this.#batchEnd) {
      try {
        callback(now);
      } catch (error) {
        const detail = error instanceof Error ? (error.stack ?? error.message) : String(error);
        this.#handlerErrors.write(now, `event loop: batch-end callback threw: ${detail}`);
      }
    }
  }

  #takeGeneration(): number {
    const generation = this.#nextGeneration;
    this.#nextGeneration = generation + 1 >= GENERATION_LIMIT ? 1 : generation + 1;
    return generation;
  }

  #checkOpen(operation: string): void {
    if (this.#closed || this.#closeRequested) {
      throw new Error(`Cannot ${operation}: the event loop is closed`);
    }
  }

  #release(): void {
    this.#closed = true;
    this.#watches.clear();
    this.#epoll.close();
    this.#stopFd.close();
  }
}
