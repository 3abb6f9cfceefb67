/**
 * What `main.ts` calls with the parsed configuration: performs the requested action
 * (help, version, capabilities) or runs the daemon (daemonizing unless `-f`), and
 * resolves to the process exit code.
 *
 * @module
 */

import type { Config } from "../config/config.ts";
import { helpText, versionText } from "../config/help_text.ts";
import { log } from "../log/logger.ts";
import { daemonize } from "./daemonize.ts";
import { stderrSink, stderrTimestamps } from "./logging.ts";
import { runDaemon } from "./run_daemon.ts";

/**
 * The backend capabilities printed by `--print-capabilities` (vhost-user spec,
 * "Backend program conventions": a JSON object whose "type" is the device type).
 */
export const CAPABILITIES_JSON = '{\n  "type": "net"\n}\n';

const encoder = new TextEncoder();

function writeStdout(text: string): void {
  const bytes = encoder.encode(text);
  let offset = 0;
  while (offset < bytes.length) offset += Deno.stdout.writeSync(bytes.subarray(offset));
}

/** Carries out `config`; resolves to the exit code. */
export async function start(config: Config): Promise<number> {
  switch (config.action) {
    case "help":
      writeStdout(helpText());
      return 0;
    case "version":
      writeStdout(versionText());
      return 0;
    case "print-capabilities":
      writeStdout(CAPABILITIES_JSON);
      return 0;
    case "run":
      break;
  }
  log.setLevel(config.log.level);
  log.setSink(stderrSink(stderrTimestamps(config.log.level)));
  const detached = config.internal.readyFd !== null;
  if (!config.foreground && !detached) return daemonize(config);
  return await runDaemon(config, detached);
}
