/**
 * Runs a test body against a freshly started daemon ({@link DaemonGuest}) and checks
 * that the daemon then exits cleanly on its own: exit status 0 after the front-end
 * leaves (-1), nothing that looks like an internal error in its log, and this
 * process's fd count back where it was.
 *
 * @module
 */

import assert from "node:assert/strict";
import { DaemonGuest, type Transport, type VhostOptions } from "./daemon_guest.ts";
import { waitFor } from "../cli/cli_helpers.ts";
import { MemoryGuard } from "../../ffi/memory_guard.ts";

/**
 * Starts the daemon over `transport` with `args` (exiting with the front-end unless
 * `oneOff` is false), runs `body`, then closes and checks.
 */
export async function withDaemon(
  transport: Transport,
  args: readonly string[],
  body: (d: DaemonGuest) => Promise<void>,
  vhost: VhostOptions = {},
  oneOff = true,
): Promise<void> {
  // the first use of the helper opens the memory guard's eventfd for the rest of the
  // process's life: open it before counting
  MemoryGuard.faultSignalFd();
  const before = ownFdCount();
  const d = await DaemonGuest.start(transport, args, vhost, oneOff);
  let result: { code: number; stderr: string };
  try {
    await body(d);
  } finally {
    result = await d.close();
  }
  // The front-end's sockets, memfds and eventfds are native fds the sanitizers miss.
  await waitFor(
    `the test's own fd count back to ${before} (now ${ownFdCount()})`,
    () => ownFdCount() <= before,
  );
  assert.equal(result.code, 0, `daemon exit status; stderr:\n${result.stderr}`);
  assert.doesNotMatch(result.stderr, /internal error|exception|uncaught/i);
}

/** Number of fds this test process holds. */
function ownFdCount(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
}

/**
 * Waits until the daemon holds no more fds than `baseline` (its host sockets for the
 * test's connections are all closed).
 */
export async function fdsBackTo(d: DaemonGuest, baseline: number): Promise<void> {
  await waitFor(
    `the daemon's fd count back to ${baseline} (now ${d.fdCount()})`,
    () => d.fdCount() <= baseline,
  );
}
