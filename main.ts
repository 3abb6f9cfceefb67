/**
 * tpasst entry point: command line → immutable Config → start. Nothing else, except
 * that SIGUSR1 is taken from the Deno runtime first (src/daemon/stats_signal.ts), before
 * the rest of the program loads.
 *
 * @module
 */

import { SignalEvent } from "./ffi/signal_event.ts";
import { STATS_SIGNAL } from "./src/daemon/stats_signal.ts";

const encoder = new TextEncoder();

function fail(message: string, hint: boolean): never {
  const text = `tpasst: ${message}\n` + (hint ? "Try 'tpasst --help' for more information.\n" : "");
  Deno.stderr.writeSync(encoder.encode(text));
  Deno.exit(1);
}

try {
  SignalEvent.take(STATS_SIGNAL);
} catch (error) {
  fail(`Cannot take ${STATS_SIGNAL}: ${error instanceof Error ? error.message : error}`, false);
}

const { parseCommandLine } = await import("./src/config/command_line.ts");
const { ConfigError } = await import("./src/config/config_error.ts");
const { start } = await import("./src/daemon/start.ts");

let exitCode: number;
try {
  exitCode = await start(parseCommandLine(Deno.args));
} catch (error) {
  if (error instanceof ConfigError) fail(error.message, true);
  fail(error instanceof Error ? error.message : String(error), false);
}
Deno.exit(exitCode);
