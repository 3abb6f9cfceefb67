/**
 * The datapath's byte counters pass 2^31 without changing the shape of the objects
 * that hold them (tests/support/net/counter_shape_probe.ts, in a process with V8's
 * natives syntax): a fresh daemon's first flow past 1 GiB used to deoptimise the
 * whole datapath mid-transfer (README, design: "Counters that never change shape").
 */

import assert from "node:assert/strict";

Deno.test("byte counters past 2^31 keep their objects' V8 shape", async () => {
  const probe = new URL("../support/net/counter_shape_probe.ts", import.meta.url);
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--v8-flags=--allow-natives-syntax",
      "--allow-read",
      "--allow-ffi",
      probe.pathname,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, `the probe failed:\n${stderr}`);
  const lines = new TextDecoder().decode(output.stdout).trim().split("\n");
  assert.deepEqual(JSON.parse(lines[lines.length - 1]), {
    tcpFlow: true,
    udpFlow: true,
    tcpCounters: true,
    guestSender: true,
    networkStack: true,
  });
});
