/**
 * tpasst entry point: command line → immutable Config → start. Nothing else.
 *
 * @module
 */

import { parseCommandLine } from "./src/config/command_line.ts";
import { ConfigError } from "./src/config/config_error.ts";
import { start } from "./src/daemon/start.ts";

const encoder = new TextEncoder();

function fail(message: string, hint: boolean): never {
  const text = `tpasst: ${message}\n` + (hint ? "Try 'tpasst --help' for more information.\n" : "");
  Deno.stderr.writeSync(encoder.encode(text));
  Deno.exit(1);
}

let exitCode: number;
try {
  exitCode = await start(parseCommandLine(Deno.args));
} catch (error) {
  if (error instanceof ConfigError) fail(error.message, true);
  fail(error instanceof Error ? error.message : String(error), false);
}
Deno.exit(exitCode);
