/**
 * The daemon's logger: five levels, one pluggable sink, nothing else.
 *
 * One process-wide instance (`log`) is configured once at start from the
 * command line (`--quiet`, `--debug`, `--trace`, `--log-file`).
 *
 * @module
 */

/** Severity levels, most severe first. */
export const LOG_LEVELS = ["error", "warn", "info", "debug", "trace"] as const;

/** One of {@link LOG_LEVELS}. */
export type LogLevel = typeof LOG_LEVELS[number];

/** Receives every formatted line that passes the level filter. */
export type LogSink = (level: LogLevel, line: string) => void;

const LEVEL_RANK: Readonly<Record<LogLevel, number>> = {
  error: 0,
  warn: 1,
  info: 2,
  debug: 3,
  trace: 4,
};

const encoder = new TextEncoder();

/** Writes each line to standard error. */
export const stderrSink: LogSink = (_level, line) => {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
};

/** Filters by level and forwards formatted lines to a sink. */
export class Logger {
  #threshold: number = LEVEL_RANK.info;
  #sink: LogSink = stderrSink;
  #prefix = "";

  /** Sets the least severe level that is still written. */
  setLevel(level: LogLevel): void {
    this.#threshold = LEVEL_RANK[level];
  }

  /** Replaces where lines go (standard error by default). */
  setSink(sink: LogSink): void {
    this.#sink = sink;
  }

  /** Sets a prefix put before every line, e.g. the program name. */
  setPrefix(prefix: string): void {
    this.#prefix = prefix;
  }

  /** Tells whether a message at `level` would be written; use it to skip costly formatting. */
  enabled(level: LogLevel): boolean {
    return LEVEL_RANK[level] <= this.#threshold;
  }

  /** Writes `message` at `level` if the level is enabled. */
  write(level: LogLevel, message: string): void {
    if (LEVEL_RANK[level] > this.#threshold) return;
    this.#sink(level, this.#prefix + message);
  }

  /** Something failed that the operator must know about. */
  error(message: string): void {
    this.write("error", message);
  }

  /** Something is wrong but the daemon carries on. */
  warn(message: string): void {
    this.write("warn", message);
  }

  /** Start-up plan, connections, state changes. */
  info(message: string): void {
    this.write("info", message);
  }

  /** Dropped packets, protocol details. */
  debug(message: string): void {
    this.write("debug", message);
  }

  /** Per-packet detail. */
  trace(message: string): void {
    this.write("trace", message);
  }
}

/** The process-wide logger. */
export const log: Logger = new Logger();
