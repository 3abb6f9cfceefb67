/**
 * A log line that is written at most once per interval, however often the
 * condition behind it occurs; the next line written says how many were held back.
 * Used for anything a guest or frontend can trigger in a loop (bad descriptors,
 * malformed packets), so that hostile input cannot flood the log.
 *
 * @module
 */

import { log, type Logger, type LogLevel } from "./logger.ts";

/** Default quiet period between two lines of one limiter, in milliseconds. */
export const DEFAULT_LOG_INTERVAL_MS = 1000;

/** Writes at most one line per interval; counts the ones it suppressed. */
export class RateLimitedLog {
  readonly #level: LogLevel;
  readonly #intervalMs: number;
  readonly #logger: Logger;
  #lastWrittenAt = -Infinity;
  #suppressed = 0;

  /**
   * @param level level the lines are written at
   * @param intervalMs minimum time between two written lines
   * @param logger where lines go (the process-wide logger by default)
   */
  constructor(level: LogLevel, intervalMs = DEFAULT_LOG_INTERVAL_MS, logger: Logger = log) {
    this.#level = level;
    this.#intervalMs = intervalMs;
    this.#logger = logger;
  }

  /**
   * Writes `message` unless a line was written less than the interval before `now`.
   * @param now the caller's current time in milliseconds (passed down from the loop)
   * @returns true when the line was written
   */
  write(now: number, message: string): boolean {
    if (now - this.#lastWrittenAt < this.#intervalMs) {
      this.#suppressed++;
      return false;
    }
    const held = this.#suppressed;
    this.#suppressed = 0;
    this.#lastWrittenAt = now;
    this.#logger.write(
      this.#level,
      held > 0 ? `${message} (${held} similar suppressed)` : message,
    );
    return true;
  }

  /** How many lines were suppressed since the last one written. */
  get suppressed(): number {
    return this.#suppressed;
  }
}
