/**
 * The daemon's V8 flags: `bin/tpasst` (which tests and `make start` run) and
 * `make compile` (the shipped executable) pass the same list, and the pinned Deno's V8
 * knows every flag in it (Deno refuses to start on a flag V8 does not recognize, so a
 * Deno upgrade that drops one fails here, not at a user's start).
 */
import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url);
const DENO = Deno.execPath();

/** The value of `v8_flags=` in bin/tpasst. */
function launcherFlags(): string {
  const script = Deno.readTextFileSync(new URL("bin/tpasst", ROOT));
  const match = script.match(/^v8_flags=(\S+)$/m);
  assert.ok(match, "bin/tpasst sets v8_flags=LIST on a line of its own");
  return match[1];
}

/** The `--v8-flags=` value of the Makefile's `deno compile` line. */
function compileFlags(): string {
  const makefile = Deno.readTextFileSync(new URL("Makefile", ROOT));
  const line = makefile.split("\n").find((l) => /\$\(DENO\) compile /.test(l));
  assert.ok(line, "the Makefile has a deno compile line");
  const match = line.match(/--v8-flags=(\S+)/);
  assert.ok(match, "the deno compile line passes --v8-flags=");
  return match[1];
}

Deno.test("bin/tpasst and make compile pass the same V8 flags", () => {
  assert.equal(compileFlags(), launcherFlags());
  const flags = launcherFlags().split(",");
  assert.ok(flags.includes("--expose-gc"), "memory_release needs --expose-gc");
  assert.ok(flags.includes("--invocation-count-for-turbofan=300"), "README, design note");
});

Deno.test("the pinned Deno's V8 recognizes every flag of the launcher, and Deno refuses an unknown one", async () => {
  const run = (flags: string) =>
    new Deno.Command(DENO, { args: ["eval", `--v8-flags=${flags}`, "0"], stderr: "piped" })
      .output();
  const known = await run(launcherFlags());
  assert.equal(known.code, 0, new TextDecoder().decode(known.stderr));
  const unknown = await run(`${launcherFlags()},--invocation-count-for-turbofn=300`);
  assert.notEqual(unknown.code, 0, "a flag V8 does not know stops Deno");
  assert.match(new TextDecoder().decode(unknown.stderr), /did not recognize flag/);
});
