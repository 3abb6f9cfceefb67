import assert from "node:assert/strict";
import { mean, median, ratioSummary, roundOrder } from "./rounds.ts";

Deno.test("roundOrder: each round starts with the next backend, every backend once", () => {
  const backends = ["a", "b", "c"];
  assert.deepEqual(roundOrder(backends, 1), ["a", "b", "c"]);
  assert.deepEqual(roundOrder(backends, 2), ["b", "c", "a"]);
  assert.deepEqual(roundOrder(backends, 3), ["c", "a", "b"]);
  assert.deepEqual(roundOrder(backends, 4), ["a", "b", "c"]);
  assert.deepEqual(backends, ["a", "b", "c"]); // not reordered in place
});

Deno.test("median: middle value, or the mean of the two middle ones", () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([0.9, 1.3, 1.1, 0.8]), 1.0);
  assert.equal(median([5]), 5);
});

Deno.test("mean: the sum over the count", () => {
  assert.equal(mean([0.5, 1.5, 1]), 1);
  assert.equal(mean([2]), 2);
  assert.ok(Number.isNaN(mean([])));
});

Deno.test("ratioSummary: each round's ratio, their median and mean; rounds without a reference left out", () => {
  assert.equal(
    ratioSummary([[1.04, 1], [0.91, 1], [3, 0], [2, 2]]),
    "1.04, 0.91, 1.00; median 1.000, mean 0.983",
  );
  assert.equal(ratioSummary([[1, 0]]), null);
  assert.equal(ratioSummary([]), null);
});
