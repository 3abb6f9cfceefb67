/**
 * Runs the network stack's timers (RA intervals, echo flow expiry, TCP retransmits
 * and idle sweeps) on Deno's timers: one `setTimeout` armed for the earliest pending
 * timer, re-armed after each run and whenever a component reports an earlier timer,
 * plus a coarse periodic check that catches timers armed from host-socket callbacks
 * which do not report.
 *
 * @module
 */

import { log } from "../log/logger.ts";

/** Something with timers: the network stack, or one of its services. */
export interface TimerTarget {
  /** Runs due timers. */
  tick(now: number): void;
  /** Earliest time `tick` needs to run again (Infinity when nothing is pending). */
  nextTimerAt(): number;
}

/** Period of the safety-net check, in milliseconds. */
export const TIMER_SAFETY_NET_MS = 250;

/** Drives a {@link TimerTarget}; see the module comment. */
export class TimerDriver {
  readonly #target: TimerTarget;
  readonly #clock: () => number;
  #timeout: ReturnType<typeof setTimeout> | undefined = undefined;
  #armedAt = Infinity;
  #interval: ReturnType<typeof setInterval> | undefined;
  #closed = false;
  #ticks = 0;

  /**
   * @param target whose timers to run
   * @param clock the monotonic clock the target's times refer to
   */
  constructor(target: TimerTarget, clock: () => number = () => performance.now()) {
    this.#target = target;
    this.#clock = clock;
    this.#interval = setInterval(() => this.rearm(), TIMER_SAFETY_NET_MS);
  }

  /** Number of times the target's timers were run. */
  get ticks(): number {
    return this.#ticks;
  }

  /** Arms the timeout for the target's earliest timer if it is earlier than the armed one. */
  rearm(): void {
    if (this.#closed) return;
    let at: number;
    try {
      at = this.#target.nextTimerAt();
    } catch (error) {
      log.error(`Cannot read the next timer: ${error instanceof Error ? error.message : error}`);
      return;
    }
    if (!Number.isFinite(at) || at >= this.#armedAt) return;
    if (this.#timeout !== undefined) clearTimeout(this.#timeout);
    this.#armedAt = at;
    this.#timeout = setTimeout(() => this.#run(), Math.max(0, Math.ceil(at - this.#clock())));
  }

  /** Stops driving; no tick runs after this. */
  close(): void {
    this.#closed = true;
    if (this.#timeout !== undefined) clearTimeout(this.#timeout);
    if (this.#interval !== undefined) clearInterval(this.#interval);
    this.#timeout = this.#interval = undefined;
  }

  #run(): void {
    this.#timeout = undefined;
    if (this.#closed) return;
    const now = this.#clock();
    if (now < this.#armedAt) {
      // Deno's timers are millisecond-granular and may fire a fraction early.
      this.#timeout = setTimeout(() => this.#run(), Math.ceil(this.#armedAt - now));
      return;
    }
    this.#armedAt = Infinity;
    this.#ticks++;
    try {
      this.#target.tick(now);
    } catch (error) {
      log.error(`A network timer failed: ${error instanceof Error ? error.message : error}`);
    }
    this.rearm();
  }
}
