/**
 * The daemon's event loop for helper-owned descriptors (vhost-user socket, kick
 * eventfds, ping sockets...), running beside Deno's own event loop: when idle it waits
 * with a `nonblocking` epoll_wait on a Deno worker thread, so the JS thread stays free
 * for Deno's async sockets and timers. While events keep coming it polls epoll on the
 * JS thread instead and — with {@link EventLoopOptions.hotWaitMs} — waits there briefly
 * (a synchronous epoll_wait) before falling back to the worker thread: a wake-up
 * through the worker costs ~26 µs more CPU and ~15 µs more latency than one on this
 * thread (measured here). Between batches on the JS thread it lets the microtasks run,
 * but gives Deno's event loop a turn (its timers and I/O) only when
 * {@link DENO_TURN_INTERVAL_MS} has passed since the last one, or when another loop of
 * this thread runs: a turn costs more than the wake-up it follows.
 *
 * Work that must run soon without an fd event (a ring polled again after a busy turn)
 * is queued with {@link runSoon}: no loop of this thread blocks while such work waits,
 * and a loop on the JS thread runs it itself between two polls (work queued by that
 * loop's own handlers costs no setImmediate).
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
  EPOLLET,
  EPOLLHUP,
  EPOLLIN,
  EPOLLOUT,
  EPOLLRDHUP,
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
/** The peer shut down its writing side (EPOLLRDHUP); reported only when asked for. */
export const EVENT_PEER_CLOSED: number = EPOLLRDHUP;
/**
 * Asks for edge-triggered reports (EPOLLET): an event is reported when the fd's state
 * changes, so the handler must drain the fd until it would block.
 */
export const EVENT_EDGE_TRIGGERED: number = EPOLLET;

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
 * Longest time (milliseconds) a loop on the JS thread keeps Deno's event loop from a
 * turn while events keep coming: Deno's timers and async operations are at most this
 * late (plus the batch being handled). Its synchronous waits end by then too. 10 ms
 * (it was 1, then 4): a turn costs tens of microseconds of Deno's own event loop, and
 * under a transfer each one showed in the daemon's CPU per byte both ways (README,
 * design: "The cost of waking the loop"); nothing on the datapath waits for Deno's
 * event loop, and the network stack's timers (200 ms and more) do not mind.
 */
export const DENO_TURN_INTERVAL_MS = 10;

/** Microseconds per millisecond (epoll_pwait2 timeouts). */
const US_PER_MS = 1000;

/** Options of an {@link EventLoop}. */
export interface EventLoopOptions {
  /**
   * After a wake-up that brought events, wait up to this many milliseconds for the next
   * ones on the JS thread (synchronous epoll_waits; 0, the default: poll once), before
   * going back to the asynchronous wait. Deno's own timers and async operations get a
   * turn every {@link DENO_TURN_INTERVAL_MS} meanwhile. Not used while work queued with
   * {@link runSoon} is pending, nor while another EventLoop of this thread runs (it
   * would wait behind this one).
   */
  readonly hotWaitMs?: number;
}

/** Resolves after Deno's next I/O phase (Node's setImmediate; no 1 ms timer floor). */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Tasks queued with {@link runSoon} that have neither run nor been cancelled (this thread). */
let soonPending = 0;
/** Tasks queued with {@link runSoon}, in order; some may be done (run or cancelled). */
let soonQueue: SoonTask[] = [];
/** Done tasks {@link soonQueue} may hold beyond twice the pending ones before it is compacted. */
const SOON_QUEUE_SLACK = 64;
/** EventLoops of this thread inside run(). */
let loopsRunning = 0;
/**
 * > 0 while an EventLoop of this thread runs its handlers, batch-end callbacks or
 * queued tasks (synchronously: it polls again right after them).
 */
let loopDispatching = 0;

/** A callback queued with {@link runSoon}. */
export class SoonTask {
  #done = false;
  readonly #callback: () => void;
  /** Deno's setImmediate that runs the task if no loop does first; undefined: not armed. */
  #immediate: ReturnType<typeof setImmediate> | undefined = undefined;

  /** @internal use {@link runSoon} */
  constructor(callback: () => void) {
    soonPending++;
    this.#callback = callback;
    // Queued from a handler of the only loop running on this thread: that loop runs it
    // between its next polls, so no setImmediate is needed unless the loop stops first
    // or a second loop starts (both arm it; see armPendingSoonTasks).
    if (loopDispatching === 0 || loopsRunning !== 1) this.armFallback();
    // Tasks run by their setImmediate stay queued until a loop runs the queue: drop
    // them once they outnumber the pending ones (the queue stays bounded without loops).
    if (soonQueue.length >= 2 * soonPending + SOON_QUEUE_SLACK) {
      soonQueue = soonQueue.filter((task) => !task.done);
    }
    soonQueue.push(this);
  }

  /** True once the callback ran or the task was cancelled. */
  get done(): boolean {
    return this.#done;
  }

  /** Drops the callback if it has not run yet; later calls do nothing. */
  cancel(): void {
    if (this.#done) return;
    this.#done = true;
    soonPending--;
    if (this.#immediate !== undefined) clearImmediate(this.#immediate);
  }

  /** @internal Runs the callback now unless it ran or was cancelled (a loop between polls). */
  runEarly(): void {
    if (this.#done) return;
    if (this.#immediate !== undefined) clearImmediate(this.#immediate);
    this.#run();
  }

  /** @internal Makes Deno's next I/O phase run the task if it is still due and not armed. */
  armFallback(): void {
    if (this.#done || this.#immediate !== undefined) return;
    this.#immediate = setImmediate(() => this.#run());
  }

  #run(): void {
    if (this.#done) return;
    this.#done = true;
    soonPending--;
    this.#callback();
  }
}

/**
 * Arms the setImmediate of every due task queued without one, when the loop that was to
 * run it stops, or when a second loop starts on this thread (loops then leave queued
 * work to Deno's turns).
 */
function armPendingSoonTasks(): void {
  if (soonPending === 0) return;
  for (const task of soonQueue) task.armFallback();
}

/**
 * Runs `callback` soon without an fd event: after Deno's next I/O phase
 * (setImmediate), or earlier from an {@link EventLoop} of this thread between two of
 * its polls, whichever comes first. Queued from a handler of the only loop running on
 * this thread, it is left to that loop (no setImmediate, unless the loop stops or a
 * second one starts first). Until it runs it keeps every loop of this thread from
 * waiting synchronously: they poll instead, so the callback is not held up by an
 * epoll_wait on the JS thread.
 */
export function runSoon(callback: () => void): SoonTask {
  return new SoonTask(callback);
}

/**
 * Runs the tasks queued with {@link runSoon} before this call (not those they queue:
 * those wait for the next poll). A task that throws is passed to `onError` and the
 * others still run. Returns how many ran (cancelled ones and ones run already skipped).
 */
function runQueuedSoonTasks(onError: (error: unknown) => void): number {
  const due = soonQueue;
  soonQueue = [];
  let ran = 0;
  loopDispatching++;
  try {
    for (let i = 0; i < due.length; i++) {
      const task = due[i];
      if (task.done) continue;
      ran++;
      try {
        task.runEarly();
      } catch (error) {
        onError(error);
      }
    }
  } finally {
    loopDispatching--;
  }
  return ran;
}

/** Number of {@link runSoon} tasks of this thread still due (tests). */
export function pendingSoonTasks(): number {
  return soonPending;
}

/** Generation tag of the stop eventfd; watches use 1..2^32-1. */
const STOP_GENERATION = 0;

const GENERATION_LIMIT = 2 ** 32;

/** How an {@link EventLoop} has waited so far (diagnostics, tests). */
export interface EventLoopCounters {
  /** Waits on a worker thread (nonblocking epoll_wait). */
  asyncWaits: number;
  /** Synchronous waits on the JS thread with a timeout (hotWaitMs). */
  blockingWaits: number;
  /** Synchronous polls (timeout 0). */
  polls: number;
  /** Waits and polls that brought events. */
  wakeups: number;
  /** Turns given to Deno's event loop between waits on the JS thread (setImmediate). */
  denoTurns: number;
  /** Tasks queued with {@link runSoon} that this loop ran between its polls. */
  soonTasksRun: number;
}

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
  readonly #hotWaitMs: number;
  /** How the loop has waited so far; see {@link describeCounters}. */
  readonly counters: EventLoopCounters = {
    asyncWaits: 0,
    blockingWaits: 0,
    polls: 0,
    wakeups: 0,
    denoTurns: 0,
    soonTasksRun: 0,
  };
  #nextGeneration = 1;
  /** The clock when the last batch's handlers started (monotonicNow). */
  #batchStartedAt = 0;
  #running = false;
  #stopRequested = false;
  #closeRequested = false;
  #closed = false;

  /** Creates the loop's epoll instance and stop eventfd. */
  constructor(options: EventLoopOptions = {}) {
    const hotWaitMs = options.hotWaitMs ?? 0;
    if (!Number.isInteger(hotWaitMs) || hotWaitMs < 0) {
      throw new RangeError(`Cannot wait ${hotWaitMs} ms for events: not a whole number >= 0`);
    }
    this.#hotWaitMs = hotWaitMs;
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

  /** One line summing up {@link counters}, for logs. */
  describeCounters(): string {
    const c = this.counters;
    return `event loop: ${c.wakeups} wake-ups with events; ${c.asyncWaits} waits on a worker ` +
      `thread, ${c.blockingWaits} on this thread (up to ${this.#hotWaitMs} ms), ${c.polls} polls; ` +
      `${c.denoTurns} turns to Deno in between, ${c.soonTasksRun} queued tasks run`;
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
    loopsRunning++;
    if (loopsRunning > 1) armPendingSoonTasks();
    const counters = this.counters;
    const onSoonTaskError = this.#onSoonTaskError;
    try {
      // Hot: the last wait brought events, or work queued with runSoon is due. Then the
      // loop waits on this thread: polls (10–17 µs cheaper than a hand-off to another
      // thread), or waits up to hotWaitMs.
      let hot = false;
      // When Deno's event loop last had a turn (its timers, its I/O).
      let lastDenoTurn = monotonicNow();
      // Hot and nothing comes by then: back to the wait on a worker thread.
      let quietUntil = 0;
      // A batch was just handled: the quiet hotWaitMs starts at the next iteration.
      let batchHandled = false;
      while (!this.#stopRequested) {
        let count: number;
        if (hot) {
          // Right after a batch, its start time stands for now (the batch took
          // microseconds; reading the clock costs ~0.2 µs here, once per wake-up is
          // enough).
          let now: number;
          if (batchHandled) {
            batchHandled = false;
            now = this.#batchStartedAt;
            quietUntil = now + this.#hotWaitMs;
          } else {
            now = monotonicNow();
          }
          if (soonPending > 0 && loopsRunning === 1 && now - lastDenoTurn < DENO_TURN_INTERVAL_MS) {
            // The microtasks the batch left (its flushes), then the work queued with
            // runSoon (the TX look after a busy turn) without a turn to Deno, then the
            // microtasks that work left: queued work never joins the batch that queued it
            // (a listener's accepts stay in turns of ACCEPTS_PER_TURN).
            await null;
            counters.soonTasksRun += runQueuedSoonTasks(onSoonTaskError);
            await null;
          } else if (
            soonPending > 0 || loopsRunning > 1 || now - lastDenoTurn >= DENO_TURN_INTERVAL_MS
          ) {
            // Deno's turn (setImmediate: after Deno's I/O phase, ~1.5 µs): its timers
            // and I/O, the callbacks queued with runSoon that armed a setImmediate, the
            // microtasks.
            counters.denoTurns++;
            await nextTurn();
            now = lastDenoTurn = monotonicNow();
            // Then the work this loop's handlers queued (no setImmediate), as the others
            // ran: after Deno's turn.
            if (soonPending > 0 && loopsRunning === 1) {
              counters.soonTasksRun += runQueuedSoonTasks(onSoonTaskError);
              await null;
            }
          } else {
            await null; // only the microtasks the batch left (flushes toward the guest)
          }
          if (this.#stopRequested) break;
          // Wait on this thread until the quiet hotWaitMs ends or Deno's turn is due,
          // whichever comes first; poll while queued work is due or another loop runs.
          let timeoutUs = 0;
          let quietEnds = true;
          if (this.#hotWaitMs > 0 && soonPending === 0 && loopsRunning === 1) {
            const turnDue = lastDenoTurn + DENO_TURN_INTERVAL_MS;
            quietEnds = quietUntil <= turnDue;
            timeoutUs = Math.max(
              0,
              Math.floor(((quietEnds ? quietUntil : turnDue) - now) * US_PER_MS),
            );
          }
          if (timeoutUs > 0) counters.blockingWaits++;
          else counters.polls++;
          count = this.#epoll.waitMicroseconds(this.#buffer, MAX_EVENTS, timeoutUs);
          if (count === 0) {
            // Stay hot while queued work is due, or when the wait ended for Deno's turn
            // before a quiet hotWaitMs had passed.
            hot = soonPending > 0 || (timeoutUs > 0 && !quietEnds);
            continue;
          }
        } else {
          counters.asyncWaits++;
          count = await this.#epoll.waitAsync(this.#buffer, MAX_EVENTS, -1);
          lastDenoTurn = monotonicNow(); // the wait ended in a turn of Deno's event loop
        }
        counters.wakeups++;
        hot = true;
        batchHandled = true;
        this.#dispatch(count);
      }
    } finally {
      loopsRunning--;
      armPendingSoonTasks();
      this.#stopRequested = false;
      this.#running = false;
      this.#stopFd.drain();
      if (this.#closeRequested) this.#release();
    }
  }

  /** Logs a task queued with runSoon that threw while this loop ran it. */
  readonly #onSoonTaskError = (error: unknown): void => {
    const detail = error instanceof Error ? (error.stack ?? error.message) : String(error);
    this.#handlerErrors.write(monotonicNow(), `event loop: queued task threw: ${detail}`);
  };

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

  /** Runs the handlers of `count` fetched events, then the batch-end callbacks. */
  #dispatch(count: number): void {
    loopDispatching++;
    try {
      this.#dispatchEvents(count);
    } finally {
      loopDispatching--;
    }
  }

  #dispatchEvents(count: number): void {
    const now = monotonicNow();
    this.#batchStartedAt = now;
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
