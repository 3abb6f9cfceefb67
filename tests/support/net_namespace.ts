/**
 * Fixtures that need a network of their own: a fresh network namespace (`unshare
 * --net`), set up by a few shell commands, then a Deno script run inside it whose
 * standard output is JSON. Nothing the fixture sends can leave the namespace.
 *
 * @module
 */

import { commandSucceeds } from "./command_succeeds.ts";

/** Whether this process may create network namespaces (root and a working `unshare`). */
export const canUnshare = Deno.uid?.() === 0 && commandSucceeds("unshare", ["--net", "true"]);

/**
 * Runs the shell commands `setup` in a fresh network namespace, then `fixture` with
 * `deno run -A` in the same namespace, and returns what the fixture printed, parsed as
 * JSON. Throws with the fixture's standard error when it exits non-zero.
 */
export async function runInNetNamespace(
  setup: string,
  fixture: URL,
): Promise<ReturnType<typeof JSON.parse>> {
  const script = `${setup} && exec "$0" run -A --no-prompt "$1"`;
  const out = await new Deno.Command("unshare", {
    args: ["--net", "sh", "-c", script, Deno.execPath(), fixture.pathname],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (out.code !== 0) {
    throw new Error(
      `${fixture.pathname} in a new network namespace exited with ${out.code}: ` +
        new TextDecoder().decode(out.stderr),
    );
  }
  return JSON.parse(new TextDecoder().decode(out.stdout));
}
