/**
 * Whether a program runs here, for tests that need one (tshark, unshare, QEMU) to
 * skip cleanly where it is missing or not permitted.
 *
 * @module
 */

/**
 * Whether `command` with `args` runs and exits 0 (its output discarded); false when
 * it is missing, not permitted, or fails.
 */
export function commandSucceeds(command: string, args: readonly string[]): boolean {
  try {
    return new Deno.Command(command, { args: [...args], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}
