import assert from "node:assert/strict";
import { fileSizeOfFd, MappedMemory, PAGE_SIZE } from "./mapped_memory.ts";
import { MemFd } from "./mem_fd.ts";
import { openFdCount } from "./process.ts";

Deno.test("`MappedMemory.map()` mappings of one memfd see each other's writes", () => {
  const before = openFdCount();
  const memory = MemFd.create("shared", 4 * PAGE_SIZE);
  const first = MappedMemory.map(memory.fd, 4 * PAGE_SIZE, 0);
  const second = MappedMemory.map(memory.fd, 4 * PAGE_SIZE, 0);
  const tail = MappedMemory.map(memory.fd, 2 * PAGE_SIZE, 2 * PAGE_SIZE);
  memory.close(); // mappings outlive the fd
  assert.equal(first.size, 4 * PAGE_SIZE);
  assert.equal(first.bytes, first.bytes, "bytes is one long-lived view");
  first.bytes[2 * PAGE_SIZE + 3] = 0x5a;
  assert.equal(second.bytes[2 * PAGE_SIZE + 3], 0x5a);
  assert.equal(tail.bytes[3], 0x5a, "the offset mapping starts at the offset");
  tail.bytes[PAGE_SIZE] = 0x77;
  assert.equal(first.bytes[3 * PAGE_SIZE], 0x77);
  new DataView(second.bytes.buffer).setUint32(16, 0xdeadbeef, true);
  assert.equal(new DataView(first.bytes.buffer).getUint32(16, true), 0xdeadbeef);
  first.close();
  first.close();
  assert.throws(() => first.bytes, /unmapped/);
  second.close();
  tail.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`MappedMemory.map()` maps more than 4 GiB of a sparse memfd", () => {
  const before = openFdCount();
  const size = 5 * 2 ** 30;
  const memory = MemFd.create("big", size);
  const whole = MappedMemory.map(memory.fd, size, 0);
  const high = MappedMemory.map(memory.fd, PAGE_SIZE, 2 ** 32 + PAGE_SIZE);
  assert.equal(whole.bytes.length, size);
  whole.bytes[2 ** 32 + PAGE_SIZE + 9] = 0x11;
  assert.equal(high.bytes[9], 0x11);
  high.bytes[10] = 0x22;
  assert.equal(whole.bytes[2 ** 32 + PAGE_SIZE + 10], 0x22);
  whole.bytes[size - 1] = 0x33;
  assert.equal(whole.bytes[size - 1], 0x33);
  high.close();
  whole.close();
  memory.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`MappedMemory.map()` rejects a zero size, an unaligned offset and a bad fd", () => {
  const before = openFdCount();
  const memory = MemFd.create("bad", PAGE_SIZE);
  assert.throws(() => MappedMemory.map(memory.fd, 0, 0), RangeError);
  assert.throws(() => MappedMemory.map(memory.fd, PAGE_SIZE, 100), /EINVAL/);
  assert.throws(() => MappedMemory.map(1_000_000, PAGE_SIZE, 0), /EBADF/);
  memory.close();
  assert.equal(openFdCount(), before);
});

Deno.test("fileSizeOfFd() reports the memfd's size, so oversized regions can be refused", () => {
  const baseline = openFdCount();
  const memfd = MemFd.create("size-probe", 3 * PAGE_SIZE);
  try {
    assert.equal(fileSizeOfFd(memfd.fd), 3 * PAGE_SIZE);
  } finally {
    memfd.close();
  }
  assert.equal(openFdCount(), baseline);
});

Deno.test("fileSizeOfFd() throws EBADF for a closed fd", () => {
  const memfd = MemFd.create("size-probe-closed", PAGE_SIZE);
  const fd = memfd.fd;
  memfd.close();
  assert.throws(() => fileSizeOfFd(fd), /EBADF/);
});

Deno.test("`MappedMemory.atomicOrByte()` sets bits that another mapping of the file sees, keeping the others", () => {
  const before = openFdCount();
  const file = MemFd.create("log", PAGE_SIZE);
  const writer = MappedMemory.map(file.fd, PAGE_SIZE, 0);
  const reader = MappedMemory.map(file.fd, PAGE_SIZE, 0);
  file.close();
  reader.bytes[7] = 0b0001_0000;
  writer.atomicOrByte(7, 0b0000_0101);
  writer.atomicOrByte(PAGE_SIZE - 1, 0x180); // only the low 8 bits count
  assert.equal(reader.bytes[7], 0b0001_0101);
  assert.equal(reader.bytes[PAGE_SIZE - 1], 0x80);
  assert.throws(() => writer.atomicOrByte(PAGE_SIZE, 1), RangeError);
  assert.throws(() => writer.atomicOrByte(-1, 1), RangeError);
  writer.close();
  writer.atomicOrByte(7, 0xff); // closed: nothing happens (no SIGSEGV)
  assert.equal(reader.bytes[7], 0b0001_0101);
  reader.close();
  assert.equal(openFdCount(), before);
});
