import assert from "node:assert/strict";
import fc from "fast-check";
import { ArrayGuestMemory } from "./array_guest_memory.ts";
import { PIECES_NO_ROOM, PIECES_OUTSIDE_MEMORY } from "../../../src/virtio/guest_memory.ts";

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

/** The byte every test region holds at guest-physical address `gpa`. */
const patternAt = (gpa: number) => (gpa * 31 + 7) & 0xff;

/** Regions of `sizes` bytes laid end to end from `base`, each filled with {@link patternAt}. */
function adjacentRegions(base: number, sizes: readonly number[]): ArrayGuestMemory {
  const memory = new ArrayGuestMemory();
  let at = base;
  // Added in reverse order: the lookup must not depend on the order regions came in.
  const placed = sizes.map((size) => {
    const start = at;
    at += size;
    return { start, size };
  });
  for (const { start, size } of placed.reverse()) {
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i++) bytes[i] = patternAt(start + i);
    memory.addRegion(start, bytes);
  }
  return memory;
}

Deno.test("ArrayGuestMemory.viewPieces() covers exactly the bytes of any range inside adjacent regions (property)", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 2 ** 40 }),
      fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 6 }),
      fc.nat(),
      fc.nat(),
      (base, sizes, a, b) => {
        const memory = adjacentRegions(base, sizes);
        const total = sizes.reduce((n, s) => n + s, 0);
        const start = base + (a % total);
        const length = 1 + (b % (base + total - start));
        const out: Uint8Array[] = [new Uint8Array(1)];
        const pieces = memory.viewPieces(
          start % 2 ** 32,
          Math.floor(start / 2 ** 32),
          length,
          out,
          1,
          8,
        );
        assert.ok(pieces >= 1, `got ${pieces}`);
        assert.equal(out.length, 1 + pieces);
        let gpa = start;
        for (const piece of out.slice(1)) {
          assert.ok(piece.length > 0);
          for (const byte of piece) assert.equal(byte, patternAt(gpa++));
        }
        assert.equal(gpa - start, length, "exactly the range");
        if (pieces > 1) {
          assert.equal(
            memory.viewPieces(
              start % 2 ** 32,
              Math.floor(start / 2 ** 32),
              length,
              out,
              0,
              pieces - 1,
            ),
            PIECES_NO_ROOM,
          );
        }
      },
    ),
  );
});

Deno.test("ArrayGuestMemory.viewPieces() rejects gaps, ends, wrap-around and full output without writing", () => {
  const memory = new ArrayGuestMemory();
  memory.addRegion(0x1000, new Uint8Array(0x1000));
  memory.addRegion(0x2000, new Uint8Array(0x1000));
  memory.addRegion(0x4000, new Uint8Array(0x1000)); // a gap of 0x1000 before it
  const out: Uint8Array[] = [];
  assert.equal(memory.viewPieces(0x1ff0, 0, 0x20, out, 0, 4), 2);
  assert.equal(memory.viewPieces(0x2ff0, 0, 0x20, out, 0, 4), PIECES_OUTSIDE_MEMORY, "into a gap");
  assert.equal(memory.viewPieces(0x3ff0, 0, 0x20, out, 0, 4), PIECES_OUTSIDE_MEMORY, "from a gap");
  assert.equal(
    memory.viewPieces(0x4ff0, 0, 0x20, out, 0, 4),
    PIECES_OUTSIDE_MEMORY,
    "past the end",
  );
  assert.equal(memory.viewPieces(0x1000, 0, 0x3001, out, 0, 4), PIECES_OUTSIDE_MEMORY);
  assert.equal(memory.viewPieces(0xffff_fff0, 0xffff_ffff, 0x20, out, 0, 4), PIECES_OUTSIDE_MEMORY);
  assert.equal(memory.viewPieces(0x1000, 0x20_0000, 4, out, 0, 4), PIECES_OUTSIDE_MEMORY);
  const untouched: Uint8Array[] = [];
  assert.equal(memory.viewPieces(0x1ff0, 0, 0x20, untouched, 0, 1), PIECES_NO_ROOM);
  assert.equal(memory.viewPieces(0x2ff0, 0, 0x20, untouched, 0, 4), PIECES_OUTSIDE_MEMORY);
  assert.equal(untouched.length, 0, "nothing written on failure");
  assert.equal(memory.viewPieces(0x1800, 0, 0, out, 0, 4), 1, "an empty range at a mapped address");
  assert.equal(out[0].length, 0);
});
