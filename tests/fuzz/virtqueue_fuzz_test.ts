import assert from "node:assert/strict";
import { runVirtqueueFuzz } from "./virtqueue_fuzz.ts";

const iterations = Number(Deno.env.get("TPASST_FUZZ_ITERATIONS") ?? 1500);
const seed = Number(Deno.env.get("TPASST_FUZZ_SEED") ?? 12345);

Deno.test(`runVirtqueueFuzz() survives ${iterations} random rings`, () => {
  const stats = runVirtqueueFuzz(iterations, seed);
  assert.equal(stats.iterations, iterations);
  // The generator must reach every outcome, or it is not exercising the engine.
  assert.ok(stats.framesDelivered > 0, "some TX frames were valid");
  assert.ok(stats.framesSent > 0, "some RX sends succeeded");
  assert.ok(
    stats.runs > 0 && stats.runFramesSent > 0,
    "runs of frames were reserved and committed",
  );
  assert.ok(stats.noRoom > 0 && stats.dropped > 0, "NoRoom and Dropped were both seen");
  assert.ok(stats.brokenQueues > 0, "some rings were broken");
});
