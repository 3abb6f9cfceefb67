/**
 * A log sink writing to a size-limited file (`--log-file`, `--log-size`) in passt's
 * format: a header line naming the program, then `12.3456: info:    message` lines
 * (see src/log/log_format.ts). Like passt, when the next line would exceed the limit
 * the oldest lines are dropped: the file is rewritten with the header, marked
 * "log truncated at" the time, and the most recent half (kept in memory).
 *
 * The file itself is behind {@link LogOutput}, so that the daemon can back it with the
 * helper's output file (tpasst has no Deno write permission).
 *
 * @module
 */

import { fileLine, logTimestamp } from "../log/log_format.ts";
import type { LogLevel, LogSink } from "../log/logger.ts";

/** Where a {@link LogFileSink} writes. */
export interface LogOutput {
  /** Appends `data` to the file. */
  write(data: Uint8Array): void;
  /** Empties the file; later writes start at offset 0. */
  truncate(): void;
}

const encoder = new TextEncoder();

/** Formats, size-limits and writes log lines to a {@link LogOutput}. */
export class LogFileSink {
  readonly #output: LogOutput;
  readonly #maxSize: number;
  readonly #keepSize: number;
  readonly #now: () => number;
  readonly #header: string | null;
  #size = 0;
  /** Recent lines (a queue from #head), at most #keepSize bytes. */
  #recent: Uint8Array[] = [];
  #head = 0;
  #recentBytes = 0;
  #rotations = 0;

  /**
   * @param output the file, already empty
   * @param maxSize largest size of the file in bytes
   * @param now clock in milliseconds since the process started, for the time stamps
   * @param header first line of the file (written with the first log line) and of every
   *   truncated file, or null
   */
  constructor(
    output: LogOutput,
    maxSize: number,
    now: () => number = () => performance.now(),
    header: string | null = null,
  ) {
    this.#output = output;
    this.#maxSize = maxSize;
    this.#keepSize = Math.floor(maxSize / 2);
    this.#now = now;
    this.#header = header;
  }

  /** The function to hand to `Logger.setSink`. */
  readonly sink: LogSink = (level, line) => this.writeLine(level, line);

  /** How often old lines were dropped to make room. */
  get rotations(): number {
    return this.#rotations;
  }

  /** Current size of the file in bytes. */
  get size(): number {
    return this.#size;
  }

  /** Writes one line with a time stamp (seconds since the process started) and its level. */
  writeLine(level: LogLevel, line: string): void {
    let bytes = encoder.encode(fileLine(this.#now(), level, line));
    if (bytes.length > this.#keepSize) {
      // A single huge line: keep its head so that one line never fills the file.
      bytes = bytes.subarray(0, Math.max(1, this.#keepSize - 1));
      bytes = concat(bytes, encoder.encode("\n"));
    }
    // The header goes first, with the first line (so that opening never writes).
    if (this.#header !== null && this.#size === 0 && this.#rotations === 0) {
      this.#writeRaw(encoder.encode(`${this.#header}\n`));
    }
    if (this.#size + bytes.length > this.#maxSize) this.#rotate();
    this.#writeRaw(bytes);
    this.#remember(bytes);
  }

  #writeRaw(bytes: Uint8Array): void {
    this.#output.write(bytes);
    this.#size += bytes.length;
  }

  #remember(bytes: Uint8Array): void {
    this.#recent.push(bytes);
    this.#recentBytes += bytes.length;
    while (this.#recentBytes > this.#keepSize && this.#head < this.#recent.length) {
      this.#recentBytes -= this.#recent[this.#head].length;
      this.#head++;
    }
    if (this.#head > 1024 && this.#head * 2 > this.#recent.length) {
      this.#recent = this.#recent.slice(this.#head);
      this.#head = 0;
    }
  }

  #rotate(): void {
    this.#rotations++;
    this.#output.truncate();
    this.#size = 0;
    if (this.#header !== null) {
      const mark = `${this.#header} - log truncated at ${logTimestamp(this.#now())}\n`;
      this.#writeRaw(encoder.encode(mark));
    }
    // The header may take room from the kept half: drop the oldest kept lines for it.
    let first = this.#head;
    let kept = this.#recentBytes;
    while (first < this.#recent.length && this.#size + kept > this.#keepSize) {
      kept -= this.#recent[first].length;
      first++;
    }
    this.#head = first;
    this.#recentBytes = kept;
    for (let i = first; i < this.#recent.length; i++) this.#writeRaw(this.#recent[i]);
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
