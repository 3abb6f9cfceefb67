/**
 * How log lines look, following passt (log.c):
 *
 * - a time stamp is the time since the process started in seconds with four
 *   decimals, `12.3456`; standard error shows it (as `12.3456: `) in debug mode;
 * - a log file line is `12.3456: info:    message`, the level in a fixed-width prefix,
 *   after a header line naming the program, its executable and pid;
 * - a system logger line is syslog(3)'s: `<PRI>Mmm dd hh:mm:ss tpasst[PID]: message`
 *   (RFC 3164 §4.1), facility daemon.
 *
 * @module
 */

import type { LogLevel } from "./logger.ts";

/** Milliseconds per second. */
const MS_PER_SECOND = 1000;
/** Fraction digits of a time stamp (passt: tenths of milliseconds). */
const FRACTION_DIGITS = 4;

/** `ms` (since the process started) as passt writes it: `12.3456`, truncated. */
export function logTimestamp(ms: number): string {
  const tenthsOfMs = Math.max(0, Math.floor(ms * 10));
  const seconds = Math.floor(tenthsOfMs / (MS_PER_SECOND * 10));
  const fraction = tenthsOfMs % (MS_PER_SECOND * 10);
  return `${seconds}.${String(fraction).padStart(FRACTION_DIGITS, "0")}`;
}

/** The fixed-width level prefix of a log file line (passt's logfile_prefix[]). */
export const FILE_LEVEL_PREFIX: Readonly<Record<LogLevel, string>> = {
  error: "ERROR:   ",
  warn: "WARNING: ",
  info: "info:    ",
  debug: "         ",
  trace: "         ",
};

/** One log file line, with its newline. */
export function fileLine(ms: number, level: LogLevel, message: string): string {
  return `${logTimestamp(ms)}: ${FILE_LEVEL_PREFIX[level]}${message}\n`;
}

/** The first line of a log file: program, version, executable and pid (as passt's). */
export function fileHeader(program: string, version: string, executable: string, pid: number) {
  return `${program} ${version}: ${executable} (${pid})`;
}

/** Facility "daemon" (syslog(3) LOG_DAEMON, RFC 5424 Table 1: 3), shifted into a PRI value. */
export const SYSLOG_FACILITY_DAEMON = 3 << 3;

/** Severity of each level (RFC 5424 §6.2.1 Table 2: 3 error, 4 warning, 6 informational, 7 debug). */
export const SYSLOG_SEVERITY: Readonly<Record<LogLevel, number>> = {
  error: 3,
  warn: 4,
  info: 6,
  debug: 7,
  trace: 7,
};

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** RFC 3164 §4.1.2 TIMESTAMP in local time: `Mmm dd hh:mm:ss`, the day padded with a space. */
export function syslogTimestamp(date: Date): string {
  const two = (n: number) => String(n).padStart(2, "0");
  return `${MONTHS[date.getMonth()]} ${String(date.getDate()).padStart(2, " ")} ` +
    `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
}

/** One datagram for the system logger, as syslog(3) sends it to /dev/log. */
export function syslogLine(
  level: LogLevel,
  message: string,
  ident: string,
  pid: number,
  date: Date,
): string {
  const pri = SYSLOG_FACILITY_DAEMON | SYSLOG_SEVERITY[level];
  return `<${pri}>${syslogTimestamp(date)} ${ident}[${pid}]: ${message}`;
}
