/**
 * Points the process-wide logger where the configuration says, following passt:
 *
 * - foreground without `-l`: standard error, each line time-stamped in debug mode;
 * - with `-l FILE`: only the file, size-limited by `--log-size` (oldest lines dropped),
 *   in passt's format (header line, `12.3456: info:    message`);
 * - a daemonized child without `-l`: until it reports ready, its lines go back to the
 *   parent over a status socket (the parent prints them on its standard error, so a
 *   failed start explains itself) and to the system logger; after that only to the
 *   system logger (/dev/log, see syslog_sink.ts), or nowhere without one.
 *
 * @module
 */

import { OutputFile } from "../../ffi/output_file.ts";
import type { UnixStream } from "../../ffi/unix_stream.ts";
import { TPASST_VERSION } from "../config/version.ts";
import { fileHeader, logTimestamp } from "../log/log_format.ts";
import { LOG_LEVELS, type LogLevel, type LogSink } from "../log/logger.ts";
import { LogFileSink } from "./log_file_sink.ts";

const encoder = new TextEncoder();

/** A log file opened through the helper and the sink writing it. */
export class LogFile {
  readonly #path: string;
  #file: OutputFile;
  #failed = false;
  /** The size-limiting writer behind {@link safeSink}. */
  readonly sink: LogFileSink;

  /**
   * Opens `path` (truncated unless `append`) and limits it to `maxSize` bytes.
   * @throws NativeError when the file cannot be opened
   */
  constructor(path: string, maxSize: number, append: boolean) {
    this.#path = path;
    this.#file = OutputFile.open(path, { append });
    this.sink = new LogFileSink(
      {
        write: (data) => this.#file.write(data),
        truncate: () => {
          this.#file.close();
          this.#file = OutputFile.open(this.#path, { append: false });
        },
      },
      maxSize,
      () => performance.now(),
      fileHeader("tpasst", TPASST_VERSION, new URL(Deno.mainModule).pathname, Deno.pid),
    );
  }

  /**
   * The sink to give the logger: a failing write (disk full, file removed from under
   * a closed fd) never throws into the caller; file logging stops after one notice on
   * standard error.
   */
  readonly safeSink: LogSink = (level, line) => {
    if (this.#failed) return;
    try {
      this.sink.writeLine(level, line);
    } catch (error) {
      this.#failed = true;
      prefixedStderrSink(
        "error",
        `Cannot write log file ${this.#path}, logging to it stops: ` +
          (error instanceof Error ? error.message : String(error)),
      );
    }
  };

  /** Closes the file; later lines are dropped. */
  close(): void {
    this.#failed = true;
    this.#file.close();
  }
}

/**
 * A sink sending each line to the daemonizing parent over `stream` (nonblocking).
 * Lines that do not fit in the socket buffer are dropped rather than blocking.
 */
export function statusSink(stream: UnixStream, timestamps = false): LogSink {
  let broken = false;
  return (level, line) => {
    if (broken || stream.fd < 0) return;
    try {
      stream.send(encoder.encode(stderrLine(level, line, timestamps)));
    } catch {
      broken = true; // The parent is gone; nobody to tell.
    }
  };
}

/** A sink writing nowhere: a detached daemon without `--log-file` nor a system logger. */
export const discardSink: LogSink = () => {};

/**
 * A sink writing lines to standard error; warnings and errors carry a `tpasst: `
 * prefix so that they stand out in a caller's output (QEMU, libvirt), and with
 * `timestamps` (debug mode, as passt) every line starts with the time since start.
 */
export function stderrSink(timestamps: boolean): LogSink {
  return (level, line) => {
    try {
      Deno.stderr.writeSync(encoder.encode(stderrLine(level, line, timestamps)));
    } catch {
      // Standard error is gone (closed pipe): nothing left to tell.
    }
  };
}

/** {@link stderrSink} without time stamps. */
export const prefixedStderrSink: LogSink = stderrSink(false);

/** Whether standard error lines carry time stamps at `level` (passt: in debug mode). */
export function stderrTimestamps(level: LogLevel): boolean {
  return LOG_LEVELS.indexOf(level) >= LOG_LEVELS.indexOf("debug");
}

/** A sink that forwards every line to each of `sinks`. */
export function teeSink(...sinks: LogSink[]): LogSink {
  return (level, line) => {
    for (const sink of sinks) sink(level, line);
  };
}

/** One line as shown on standard error: warnings and errors prefixed with `tpasst: `. */
function stderrLine(level: LogLevel, line: string, timestamps: boolean): string {
  const stamp = timestamps ? `${logTimestamp(performance.now())}: ` : "";
  return level === "error" || level === "warn" ? `${stamp}tpasst: ${line}\n` : `${stamp}${line}\n`;
}

/** A sink forwarding to `sink` only the lines at `level` or more severe. */
export function levelFilter(level: LogLevel, sink: LogSink): LogSink {
  const limit = LOG_LEVELS.indexOf(level);
  return (lineLevel, line) => {
    if (LOG_LEVELS.indexOf(lineLevel) <= limit) sink(lineLevel, line);
  };
}
