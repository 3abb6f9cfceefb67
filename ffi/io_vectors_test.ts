import assert from "node:assert/strict";
import { IOVEC_SIZE, IoVectors } from "./io_vectors.ts";

/** The table's entries as [address, length] pairs. */
function entries(table: IoVectors): [number, number][] {
  const words = new Uint32Array(table.bytes.buffer, 0, table.count * (IOVEC_SIZE / 4));
  const out: [number, number][] = [];
  for (let i = 0; i < table.count; i++) {
    out.push([words[i * 4] + words[i * 4 + 1] * 2 ** 32, words[i * 4 + 2]]);
  }
  return out;
}

Deno.test("IoVectors.pushRange() adds a range of a buffer like push() of the same subarray", () => {
  const memory = new Uint8Array(8192);
  const a = new IoVectors(4);
  const b = new IoVectors(4);
  a.push(memory.subarray(100, 600));
  b.pushRange(memory, 100, 500);
  a.push(memory.subarray(8000), 1000);
  b.pushRange(memory, 8000, 1000); // clamped to the buffer's end, as push() clamps
  b.pushRange(memory, 10, 0); // empty: nothing
  assert.deepEqual(entries(b), entries(a));
  assert.equal(b.totalBytes, 500 + 192);
});

Deno.test("IoVectors.pushRange() in turn over views of one buffer and of others gives each its own address", () => {
  const memory = new Uint8Array(8192);
  const later = memory.subarray(4096); // same buffer, another start
  const other = new Uint8Array(4096);
  const small = new Uint8Array(32); // may live on V8's heap
  const expected = new IoVectors(16);
  const table = new IoVectors(16);
  for (let round = 0; round < 2; round++) {
    for (const view of [memory, later, memory, other, small, later, small]) {
      expected.push(view.subarray(8, 24));
      table.pushRange(view, 8, 16);
    }
  }
  assert.deepEqual(entries(table), entries(expected));
  const [[start]] = entries(table);
  assert.equal(entries(table)[1][0] - start, 4096, "a view further into the buffer");
});

Deno.test("IoVectors.truncate() keeps the first bytes; append() copies entries from an offset", () => {
  const memory = new Uint8Array(8192);
  const table = new IoVectors(8);
  table.pushRange(memory, 0, 100);
  table.pushRange(memory, 1000, 200);
  table.pushRange(memory, 3000, 300);
  const base = entries(table)[0][0];
  const other = new IoVectors(8);
  other.pushRange(memory, 5000, 10);
  other.append(table, 250, 50); // from byte 50: 50 of the first entry, 200, then nothing
  assert.deepEqual(entries(other).map(([a, n]) => [a - base, n]), [[5000, 10], [50, 50], [
    1000,
    200,
  ]]);
  assert.equal(other.totalBytes, 260);
  table.truncate(150);
  assert.deepEqual(entries(table).map(([a, n]) => [a - base, n]), [[0, 100], [1000, 50]]);
  assert.equal(table.totalBytes, 150);
  table.truncate(1000); // longer than the table: unchanged
  assert.equal(table.count, 2);
  const full = new IoVectors(1);
  full.append(other, 260);
  assert.equal(full.count, 1, "append stops when the table is full");
});
