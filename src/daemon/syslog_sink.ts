/**
 * The system logger as a log sink, as passt uses it once in the background without
 * `-l`: one datagram per line to /dev/log in syslog(3)'s format, facility daemon,
 * identified as `tpasst[PID]`. Sending never blocks: lines the logger has no room for
 * yet (its socket queue is short, net.unix.max_dgram_qlen, 10 by default) wait in a
 * bounded backlog sent from a timer; beyond {@link SYSLOG_BACKLOG_LINES} they are
 * dropped and counted. Without a system logger (no /dev/log) the sink silently does
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

/** Lines kept while the system logger's queue is full. */
export const SYSLOG_BACKLOG_LINES = 1024;

/** How soon a backlog is sent again. */
export const SYSLOG_BACKLOG_RETRY_MS = 20;

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
  /** Lines waiting for room in the logger's queue, oldest first. */
  #backlog: Uint8Array[] = [];
  #dropped = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;

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

  /** Lines waiting for the system logger (tests). */
  get backlog(): number {
    return this.#backlog.length;
  }

  /** The function to hand to `Logger.setSink`. */
  readonly sink: LogSink = (level, line) => {
    if (this.#closed || LOG_LEVELS.indexOf(level) > this.#limit) return;
    if (this.#socket === null && !this.#connect()) return;
    const datagram = encoder.encode(
      syslogLine(level, line, this.#ident, this.#pid, this.#date()),
    );
    if (this.#backlog.length >= SYSLOG_BACKLOG_LINES) {
      this.#dropped++;
      return;
    }
    this.#backlog.push(datagram);
    this.#flush();
  };

  /** Closes the socket; later lines, and any still waiting, are dropped. */
  close(): void {
    this.#closed = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#backlog = [];
    this.#socket?.close();
    this.#socket = null;
  }

  /** Sends what waits, oldest first, until the logger's queue is full. */
  #flush(): void {
    while (this.#socket !== null && this.#backlog.length > 0) {
      let sent: boolean;
      try {
        sent = this.#socket.send(this.#backlog[0]);
      } catch {
        // The logger went away (ECONNREFUSED...): drop what waits, look for it later.
        this.#socket.close();
        this.#socket = null;
        this.#backlog = [];
        return;
      }
      if (!sent) {
        this.#schedule();
        return;
      }
      this.#backlog.shift();
      if (this.#backlog.length === 0 && this.#dropped > 0) {
        const note = `${this.#dropped} log line(s) dropped: the system logger was too slow`;
        this.#dropped = 0;
        this.#backlog.push(
          encoder.encode(syslogLine("warn", note, this.#ident, this.#pid, this.#date())),
        );
      }
    }
  }

  #schedule(): void {
    if (this.#timer !== null || this.#closed) return;
    const timer = setTimeout(() => {
      this.#timer = null;
      this.#flush();
    }, SYSLOG_BACKLOG_RETRY_MS);
    // A backlog must not keep the process alive.
    Deno.unrefTimer(timer);
    this.#timer = timer;
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
