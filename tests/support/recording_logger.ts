/**
 * A Logger for tests that keeps the lines it writes, for assertions on log output.
 *
 * @module
 */

import { Logger, type LogLevel } from "../../src/log/logger.ts";

/** How {@link recordingLogger} sets its logger up. */
export interface RecordingLoggerOptions {
  /** The least severe level written (default "info", the Logger's own default). */
  level?: LogLevel;
  /** Keep each line as "level: line" (default: the line alone). */
  withLevel?: boolean;
}

/** A logger whose lines go, in order, into `lines` instead of standard error. */
export function recordingLogger(
  options: RecordingLoggerOptions = {},
): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = new Logger();
  logger.setLevel(options.level ?? "info");
  logger.setSink(
    options.withLevel
      ? (level, line) => lines.push(`${level}: ${line}`)
      : (_level, line) => lines.push(line),
  );
  return { logger, lines };
}
