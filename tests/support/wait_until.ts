/**
 * Waiting in tests for something that happens on the event loop or in another
 * process, with a bound so that a test fails instead of hanging.
 *
 * @module
 */

/** How long {@link waitUntil} waits by default before failing, in milliseconds. */
export const DEFAULT_WAIT_LIMIT_MS = 10_000;

/** Milliseconds between two checks of the condition. */
const POLL_INTERVAL_MS = 2;

/**
 * Resolves once `condition()` returns true, checking every few milliseconds.
 * @throws Error "Timed out waiting for <what>" after `limitMs`
 */
export async function waitUntil(
  what: string,
  condition: () => boolean,
  limitMs: number = DEFAULT_WAIT_LIMIT_MS,
): Promise<void> {
  const deadline = performance.now() + limitMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
}
