import assert from "node:assert/strict";
import { viewOf } from "./ring_bytes.ts";

Deno.test("`viewOf()` views a subarray's own bytes, all of them or the first `length`", () => {
  const bytes = new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7]).subarray(2, 7);
  const whole = viewOf(bytes);
  assert.equal(whole.byteLength, 5);
  assert.equal(whole.getUint8(0), 2);
  assert.equal(viewOf(bytes, 3).byteLength, 3);
  assert.equal(viewOf(bytes, 3).getUint16(1, true), 0x0403);
  assert.throws(() => viewOf(bytes, 7), RangeError);
});
