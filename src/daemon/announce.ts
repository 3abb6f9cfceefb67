/**
 * What the daemon tells the operator at start: the QEMU options to use with its socket.
 *
 * @module
 */

import type { FrontendMode } from "../config/config.ts";
import { log } from "../log/logger.ts";
import { qemuHintLines } from "./qemu_hint.ts";

/** Logs (at info level, so `--quiet` hides it) how to connect QEMU to `socketPath`. */
export function printQemuHint(mode: FrontendMode, socketPath: string): void {
  if (!log.enabled("info")) return;
  for (const line of qemuHintLines(mode, socketPath)) log.info(line);
}
