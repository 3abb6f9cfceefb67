/**
 * The error raised for a bad command line: its message is the one line printed after
 * `tpasst: `, already naming the option and the offending value.
 *
 * @module
 */

/** A command-line problem; `message` is user-facing and names the option. */
export class ConfigError extends Error {
  override name = "ConfigError";
}
