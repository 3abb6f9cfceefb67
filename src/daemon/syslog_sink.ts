/**
 * The system logger as a log sink, as passt uses it once in the background without
 * `-l`: one datagram per line to /dev/log in syslog(3)'s format, facility daemon,
 * identified as `tpasst[PID]`. Sending never blocks: a line the logger has no room
 * for is dropped. Without a system logger (no /dev/log) the sink silently does
 * nothing; if the logger goes away it is looked for again, at most every
 * {@link SYSLOG_RETRY_MS}.
 *
 * @module
 */

import { UnixDatagramSocket } from "../../ffi/unix_datagram.ts";
import { syslogLine } from "../log/log_format.ts";
import { LOG_LEVELS, type LogLevel, type LogSink } from "../log/logger.ts";

/** Where the system logger listens (syslog(3), _PATH_LOG). */
export const SYSLOG_PATH = "/dev/log";

/** Least time between two attempts to reach a system logger that was not there. */
export const SYSLOG_RETRY_MS = 10_000;

/** Options of {@link SyslogSink}. */
export interface SyslogSinkOptions {
  /** The logger's socket (default /dev/log). */
  readonly path?: string;
  /** Program name put before the pid (default "tpasst"). */
  readonly ident?: string;
  /** The pid in each line (default this process's). */
  readonly pid?: number;
  /** Least severe level sent (default info: debug and trace lines would flood it). */
  readonly level?: LogLevel;
  /** Wall clock for the time stamps, and monotonic clock in ms for retries. */
  readonly date?: () => Date;
  readonly now?: () => number;
}

const encoder = new TextEncoder();

/** Sends log lines to the system logger. */
export class SyslogSink {
  readonly #path: string;
  readonly #ident: string;
  readonly #pid: number;
  readonly #limit: number;
  readonly #date: () => Date;
  readonly #now: () => number;
  #socket: UnixDatagramSocket | null = null;
  #lastAttempt = -Infinity;
  #closed = false;

  constructor(options: SyslogSinkOptions = {}) {
    this.#path = options.path ?? SYSLOG_PATH;
    this.#ident = options.ident ?? "tpasst";
    this.#pid = options.pid ?? Deno.pid;
    this.#limit = LOG_LEVELS.indexOf(options.level ?? "info");
    this.#date = options.date ?? (() => new Date());
    this.#now = options.now ?? (() => performance.now());
    this.#connect();
  }

  /** Whether a system logger was reached (the last time it was tried). */
  get connected(): boolean {
    return this.#socket !== null;
  }

  /** The function to hand to `Logger.setSink`. */
  readonly sink: LogSink = (level, line) => {
    if (this.#closed || LOG_LEVELS.indexOf(level) > this.#limit) return;
    if (this.#socket === null && !this.#connect()) return;
    const datagram = encoder.encode(
      syslogLine(level, line, this.#ident, this.#pid, this.#date()),
    );
    try {
      this.#socket!.send(datagram); // false (queue full): the line is dropped
    } catch {
      // The logger went away (ECONNREFUSED...): look for it again later.
      this.#socket?.close();
      this.#socket = null;
    }
  };

  /** Closes the socket; later lines are dropped. */
  close(): void {
    this.#closed = true;
    this.#socket?.close();
    this.#socket = null;
  }

  #connect(): boolean {
    const now = this.#now();
    if (now - this.#lastAttempt < SYSLOG_RETRY_MS) return false;
    this.#lastAttempt = now;
    try {
      this.#socket = UnixDatagramSocket.connect(this.#path);
      return true;
    } catch {
      return false; // No system logger here: nothing to log to, silently.
    }
  }
}
