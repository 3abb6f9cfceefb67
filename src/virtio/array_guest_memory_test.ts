import assert from "node:assert/strict";
import { ArrayGuestMemory } from "./array_guest_memory.ts";

Deno.test("ArrayGuestMemory.view() resolves ranges inside one region only", () => {
  const memory = new ArrayGuestMemory();
  const a = new Uint8Array(0x1000);
  const b = new Uint8Array(0x1000);
  memory.addRegion(0x1_0000, a);
  memory.addRegion(0x1_1000, b);
  a[0x10] = 7;
  const v = memory.view(0x1_0010, 0, 4);
  assert.ok(v !== null);
  assert.equal(v.length, 4);
  assert.equal(v[0], 7);
  assert.equal(memory.view(0x1_0ffc, 0, 8), null, "spans two regions");
  assert.equal(memory.view(0xfff0, 0, 0x20), null, "starts before a region");
  assert.equal(memory.view(0x1_1000, 0, 0x1001), null, "ends after a region");
  assert.equal(memory.view(0xffff_fff0, 0xffff_ffff, 0x20), null, "wraps past 2^64");
  assert.equal(memory.view(0x1_0000, 1, 4), null, "high half set");
  assert.ok(memory.view(0x1_1000, 0, 0x1000) !== null);
});

Deno.test("ArrayGuestMemory.addRegion() rejects overlapping regions", () => {
  const memory = new ArrayGuestMemory();
  memory.addRegion(0x1000, new Uint8Array(0x1000));
  assert.throws(() => memory.addRegion(0x1800, new Uint8Array(16)), /overlaps/);
});
