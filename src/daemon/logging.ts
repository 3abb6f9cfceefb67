/**
 * Points the process-wide logger where the configuration says, following passt:
 *
 * - foreground without `-l`: standard error;
 * - with `-l FILE`: only the file, size-limited by `--log-size` (oldest lines dropped);
 * - a daemonized child without `-l`: until it reports ready, its lines go back to the
 *   parent over a status socket and the parent prints them on its standard error (so a
 *   failed start explains itself); after that it logs nowhere (passt would use the
 *   system logger, which tpasst does not use: its standard error is /dev/null).
 *
 * @module
 */

import { OutputFile } from "../../ffi/output_file.ts";
import type { UnixStream } from "../../ffi/unix_stream.ts";
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
    this.sink = new LogFileSink({
      write: (data) => this.#file.write(data),
      truncate: () => {
        this.#file.close();
        this.#file = OutputFile.open(this.#path, { append: false });
      },
    }, maxSize);
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
export function statusSink(stream: UnixStream): LogSink {
  let broken = false;
  return (level, line) => {
    if (broken || stream.fd < 0) return;
    try {
      stream.send(encoder.encode(stderrLine(level, line)));
    } catch {
      broken = true; // The parent is gone; nobody to tell.
    }
  };
}

/** A sink writing nowhere: a detached daemon without `--log-file`. */
export const discardSink: LogSink = () => {};

/**
 * Writes lines to standard error; warnings and errors carry a `tpasst: ` prefix so
 * that they stand out in a caller's output (QEMU, libvirt).
 */
export const prefixedStderrSink: LogSink = (level, line) => {
  try {
    Deno.stderr.writeSync(encoder.encode(stderrLine(level, line)));
  } catch {
    // Standard error is gone (closed pipe): nothing left to tell.
  }
};

/** A sink that forwards every line to each of `sinks`. */
export function teeSink(...sinks: LogSink[]): LogSink {
  return (level, line) => {
    for (const sink of sinks) sink(level, line);
  };
}

/** One line as shown on standard error: warnings and errors prefixed with `tpasst: `. */
function stderrLine(level: LogLevel, line: string): string {
  return level === "error" || level === "warn" ? `tpasst: ${line}\n` : `${line}\n`;
}

/** A sink forwarding to `sink` only the lines at `level` or more severe. */
export function levelFilter(level: LogLevel, sink: LogSink): LogSink {
  const limit = LOG_LEVELS.indexOf(level);
  return (lineLevel, line) => {
    if (LOG_LEVELS.indexOf(lineLevel) <= limit) sink(lineLevel, line);
  };
}
