/**
 * `.ci/failures.awk`: the short account of failing tests that `.ci/run` prints last,
 * read from a log in `deno test`'s format (NO_COLOR).
 *
 * @module
 */

import * as assert from "node:assert/strict";

const SCRIPT = new URL("../../.ci/failures.awk", import.meta.url).pathname;

async function summarize(log: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "tpasst-ci-failures-" });
  try {
    await Deno.writeTextFile(`${dir}/log`, log);
    const output = await new Deno.Command("awk", { args: ["-f", SCRIPT, `${dir}/log`] })
      .output();
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
    return new TextDecoder().decode(output.stdout);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** An error block as `deno test` prints it: message, source excerpt, stack frames. */
function errorBlock(name: string, message: string[]): string[] {
  return [
    `${name} => ./tests/e2e/e2e_suite.ts:171:10`,
    `error: Error: ${message[0]}`,
    ...message.slice(1),
    "      throw new Error(what);",
    "            ^",
    "    at QemuGuest.failure (file:///repo/tests/e2e/qemu.ts:340:12)",
    "    at eventLoopTick (ext:core/01_core.js:179:7)",
    "",
  ];
}

function testLog(blocks: string[][]): string {
  return [
    "running 3 tests from ./tests/e2e/slirp_test.ts",
    "e2e slirp: one ... FAILED (2s)",
    "",
    " ERRORS ",
    "",
    ...blocks.flat(),
    " FAILURES ",
    "",
    "e2e slirp: one => ./tests/e2e/e2e_suite.ts:171:10",
    "",
    "FAILED | 1 passed | 2 failed (3s)",
  ].join("\n") + "\n";
}

Deno.test("failures.awk prints each failing test and its message, without stack frames", async () => {
  const out = await summarize(testLog([
    errorBlock("e2e slirp: boots", ["QEMU exited (code 1) before dhcp-ip", "--- serial ---"]),
    errorBlock("e2e slirp: pings", ["Timed out after 300000 ms waiting for ping"]),
  ]));
  assert.equal(
    out,
    [
      "e2e slirp: boots => ./tests/e2e/e2e_suite.ts:171:10",
      "  error: Error: QEMU exited (code 1) before dhcp-ip",
      "  --- serial ---",
      "        throw new Error(what);",
      "              ^",
      "e2e slirp: pings => ./tests/e2e/e2e_suite.ts:171:10",
      "  error: Error: Timed out after 300000 ms waiting for ping",
      "        throw new Error(what);",
      "              ^",
      "",
    ].join("\n"),
  );
});

Deno.test("failures.awk names a repeated error instead of printing it again", async () => {
  const message = ["QEMU exited (code 1) before dhcp-ip", "qemu: could not set up host forwarding"];
  const out = await summarize(testLog([
    errorBlock("e2e slirp: boots", message),
    errorBlock("e2e slirp: pings", message),
  ]));
  const lines = out.trimEnd().split("\n");
  assert.equal(lines.filter((l) => l.includes("could not set up host forwarding")).length, 1);
  assert.equal(lines.at(-2), "e2e slirp: pings => ./tests/e2e/e2e_suite.ts:171:10");
  assert.equal(
    lines.at(-1),
    "  (the same error as: e2e slirp: boots => ./tests/e2e/e2e_suite.ts:171:10)",
  );
});

Deno.test("failures.awk keeps a long message's first and last lines", async () => {
  const serial = Array.from({ length: 40 }, (_, i) => `serial line ${i + 1}`);
  const out = await summarize(
    testLog([errorBlock("e2e slirp: boots", ["QEMU exited", ...serial])]),
  );
  const lines = out.trimEnd().split("\n");
  assert.equal(lines[1], "  error: Error: QEMU exited");
  assert.ok(lines.includes("  serial line 5"));
  assert.ok(!lines.includes("  serial line 6"));
  assert.ok(lines.some((l) => /^ {2}\[\d+ lines left out\]$/.test(l)));
  // the excerpt's two lines end the message: the console's last 10 lines precede them
  assert.ok(lines.includes("  serial line 40"));
  assert.ok(lines.includes("  serial line 31"));
  assert.ok(!lines.includes("  serial line 30"));
});

Deno.test("failures.awk prints nothing for a log without errors", async () => {
  assert.equal(await summarize("ok | 3 passed | 0 failed (1s)\n"), "");
});
