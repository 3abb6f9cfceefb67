import assert from "node:assert/strict";
import { MemoryRelease, RELEASE_MIN_FREED, releaseMemory } from "./memory_release.ts";

Deno.test("`MemoryRelease.tick()` releases once the flows fell RELEASE_MIN_FREED below their peak", () => {
  let flows = 0;
  let released = 0;
  const m = new MemoryRelease({ flowCount: () => flows }, () => released++);
  const samples = [0, 100, 2000, 1900, 2000 - RELEASE_MIN_FREED + 1, 2000 - RELEASE_MIN_FREED];
  const results = samples.map((n) => {
    flows = n;
    return m.tick();
  });
  assert.deepEqual(results, [false, false, false, false, false, true]);
  assert.equal(released, 1);
  // the peak starts again from the count at the release: a slow drift does not release
  for (const n of [1700, 1600, 1500, 1600]) {
    flows = n;
    assert.equal(m.tick(), false, `at ${n}`);
  }
  flows = 0;
  assert.equal(m.tick(), true, "the rest of the flows gone");
  assert.equal(m.releases, 2);
  // steady churn at one level never releases
  for (let i = 0; i < 10; i++) {
    flows = 500 + (i % 2) * (RELEASE_MIN_FREED - 1);
    assert.equal(m.tick(), false);
  }
});

Deno.test("`releaseMemory()` runs without --expose-gc (malloc_trim only)", () => {
  releaseMemory();
});
