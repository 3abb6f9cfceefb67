import assert from "node:assert/strict";
import fc from "fast-check";
import { DirtyLog, type LogMapping, RingWriteLog } from "./dirty_log.ts";
import { GuestMemoryMap } from "./guest_memory_map.ts";
import { dirtyPages, FakeFds } from "../../tests/support/vhost_user/backend_doubles.ts";
import { VHOST_LOG_PAGE } from "./protocol.ts";

/** A log mapping over an ArrayBuffer that records its OR calls. */
function arrayLog(size: number) {
  const bytes = new Uint8Array(size);
  const ors: { index: number; mask: number }[] = [];
  let unmapped = 0;
  const mapping: LogMapping = {
    size,
    atomicOrByte: (index, mask) => {
      ors.push({ index, mask });
      Atomics.or(bytes, index, mask);
    },
    unmap: () => void unmapped++,
  };
  return { bytes, ors, mapping, unmaps: () => unmapped };
}

function range(first: number, last: number): number[] {
  return Array.from({ length: last - first + 1 }, (_, i) => first + i);
}

Deno.test("`DirtyLog.markGuestRange()` marks exactly the pages a range touches, at page boundaries", () => {
  const cases: [address: number, length: number, pages: number[]][] = [
    [0, 1, [0]],
    [0x0fff, 1, [0]],
    [0x0fff, 2, [0, 1]],
    [0x1000, 0x1000, [1]],
    [0x1000, 0x1001, [1, 2]],
    [0x1fff, 0x1002, [1, 2, 3]],
    [7 * VHOST_LOG_PAGE + 5, 2 * VHOST_LOG_PAGE, [7, 8, 9]], // across a bitmap byte
    [5 * VHOST_LOG_PAGE, 20 * VHOST_LOG_PAGE, range(5, 24)], // whole bytes in between
    [0x3000, 0, []],
  ];
  for (const [address, length, pages] of cases) {
    const { bytes, mapping } = arrayLog(8);
    const log = new DirtyLog(mapping, 0, 8);
    assert.equal(log.markGuestRange(address, length), true);
    assert.deepEqual(dirtyPages(bytes), pages, `0x${address.toString(16)}+${length}`);
  }
});

Deno.test("`DirtyLog.markGuestRange()` sets a byte's pages with one atomic OR and keeps bits already set", () => {
  const { bytes, ors, mapping } = arrayLog(4);
  bytes[1] = 0b1000_0001; // set by an earlier write, or by the front-end
  const log = new DirtyLog(mapping, 0, 4);
  log.markGuestRange(10 * VHOST_LOG_PAGE, 3 * VHOST_LOG_PAGE); // pages 10..12: byte 1, bits 2..4
  assert.deepEqual(ors, [{ index: 1, mask: 0b0001_1100 }]);
  assert.equal(bytes[1], 0b1001_1101);
  log.markGuestRange(6 * VHOST_LOG_PAGE, 12 * VHOST_LOG_PAGE); // pages 6..17: three bytes
  assert.deepEqual(ors.slice(1), [
    { index: 0, mask: 0b1100_0000 },
    { index: 1, mask: 0xff },
    { index: 2, mask: 0b0000_0011 },
  ]);
});

Deno.test("`DirtyLog` starts at its offset in the mapping, addresses above 4 GiB included", () => {
  const { bytes, mapping } = arrayLog(0x30000);
  const start = 0x123; // log offset 0x123 into the fd: mapped from the page below
  const log = new DirtyLog(mapping, start, 0x30000 - start);
  assert.equal(log.markGuestRange(0x1_0000_2000, 1), true); // page 0x100002
  assert.deepEqual(dirtyPages(bytes, start), [0x100002]);
  assert.equal(bytes[start + 0x20000], 0b100);
  assert.equal(log.coveredBytes, (0x30000 - start) * 8 * VHOST_LOG_PAGE);
});

Deno.test("`DirtyLog.markGuestRange()` marks what fits and returns false for a range beyond the log", () => {
  const { bytes, mapping } = arrayLog(2); // pages 0..15
  const log = new DirtyLog(mapping, 0, 2);
  assert.equal(log.markGuestRange(14 * VHOST_LOG_PAGE, 4 * VHOST_LOG_PAGE), false);
  assert.deepEqual(dirtyPages(bytes), [14, 15]);
  assert.equal(log.markGuestRange(16 * VHOST_LOG_PAGE, 1), false);
  assert.equal(log.markGuestRange(2 ** 52, 1), false);
  assert.deepEqual(dirtyPages(bytes), [14, 15]);
});

Deno.test("`DirtyLog.close()` unmaps once; later marks write nothing and return false", () => {
  const { bytes, mapping, unmaps } = arrayLog(2);
  const log = new DirtyLog(mapping, 0, 2);
  log.close();
  log.close();
  assert.equal(unmaps(), 1);
  assert.equal(log.markGuestRange(0, 1), false);
  assert.deepEqual(dirtyPages(bytes), []);
  assert.throws(() => new DirtyLog(arrayLog(2).mapping, 1, 2), RangeError, "beyond the mapping");
});

Deno.test("`DirtyLog.markGuestRange()` sets exactly the pages of the ranges marked (property)", () => {
  const LOG_BYTES = 64; // 512 pages, 2 MiB
  fc.assert(
    fc.property(
      fc.array(
        fc.tuple(
          fc.integer({ min: 0, max: LOG_BYTES * 8 * VHOST_LOG_PAGE - 1 }),
          fc.integer({ min: 0, max: 40 * VHOST_LOG_PAGE }),
        ),
        { maxLength: 8 },
      ),
      (ranges) => {
        const { bytes, mapping } = arrayLog(LOG_BYTES);
        const log = new DirtyLog(mapping, 0, LOG_BYTES);
        const expected = new Set<number>();
        for (const [address, wanted] of ranges) {
          const length = Math.min(wanted, LOG_BYTES * 8 * VHOST_LOG_PAGE - address);
          assert.equal(log.markGuestRange(address, length), true);
          if (length === 0) continue;
          const last = Math.floor((address + length - 1) / VHOST_LOG_PAGE);
          for (let page = Math.floor(address / VHOST_LOG_PAGE); page <= last; page++) {
            expected.add(page);
          }
        }
        assert.deepEqual(dirtyPages(bytes), [...expected].sort((a, b) => a - b));
      },
    ),
  );
});

/** Guest memory of two regions with GPA bases and mmap offsets, and a log covering it. */
function loggedMemory() {
  const fds = new FakeFds();
  const memory = new GuestMemoryMap(fds.map, 32);
  const low = fds.memfd(0x4000);
  const high = fds.memfd(0x6000);
  memory.add(
    { guestAddress: 0x10000, size: 0x4000, userAddress: 0x7000_0000, mmapOffset: 0 },
    low.fd,
  );
  memory.add({
    guestAddress: 0x1_0000_0000,
    size: 0x4000,
    userAddress: 0x7100_0000,
    mmapOffset: 0x2000,
  }, high.fd);
  // adjacent to `high` in guest space, from the start of the same file
  memory.add({
    guestAddress: 0x1_0000_4000,
    size: 0x2000,
    userAddress: 0x7200_0000,
    mmapOffset: 0,
  }, high.fd);
  const logBytes = Math.ceil(0x1_0000_6000 / VHOST_LOG_PAGE / 8);
  const { bytes, mapping } = arrayLog(logBytes);
  const log = new DirtyLog(mapping, 0, logBytes);
  const misses: string[] = [];
  return { memory, log, bytes, misses, onMiss: (what: string) => misses.push(what) };
}

const PAGE_4G = 0x1_0000_0000 / VHOST_LOG_PAGE;

Deno.test("`RingWriteLog.markView()` marks the guest pages of views in regions with GPA bases and mmap offsets", () => {
  const { memory, log, bytes, misses, onMiss } = loggedMemory();
  const ringLog = new RingWriteLog(log, memory, -1, onMiss);
  const low = memory.view(0x10ff0, 0, 0x20)!; // pages 0x10 and 0x11
  ringLog.markView(low, 0, low.length);
  const high = memory.view(0x1000, 1, 0x100)!; // page 2^32/4096 + 1
  ringLog.markView(high, 0x10, 0x10);
  assert.deepEqual(dirtyPages(bytes), [0x10, 0x11, PAGE_4G + 1]);
  ringLog.markView(low, 0x10, 0); // nothing written
  assert.deepEqual(dirtyPages(bytes), [0x10, 0x11, PAGE_4G + 1]);
  assert.deepEqual(misses, []);
});

Deno.test("`RingWriteLog.markView()` marks each region's part of a gather list across adjacent regions", () => {
  const { memory, log, bytes, misses, onMiss } = loggedMemory();
  const ringLog = new RingWriteLog(log, memory, -1, onMiss);
  const pieces: Uint8Array[] = [];
  // 0x1_0000_3ff0 + 0x1020: the last page of one region, the first two of the next
  assert.equal(memory.viewPieces(0x3ff0, 1, 0x1020, pieces, 0, 4), 2);
  for (const piece of pieces) ringLog.markView(piece, 0, piece.length);
  assert.deepEqual(dirtyPages(bytes), [PAGE_4G + 3, PAGE_4G + 4, PAGE_4G + 5]);
  assert.deepEqual(misses, []);
});

Deno.test("`RingWriteLog.markUsed()` marks used-ring writes at the ring's log address, only with one", () => {
  const { memory, log, bytes, misses, onMiss } = loggedMemory();
  const used = 0x12ffc; // log_guest_addr: the used ring straddles pages 0x12 and 0x13
  new RingWriteLog(log, memory, -1, onMiss).markUsed(0, 4);
  assert.deepEqual(dirtyPages(bytes), [], "no VHOST_VRING_F_LOG: the used ring is not logged");
  const ringLog = new RingWriteLog(log, memory, used, onMiss);
  ringLog.markUsed(2, 2); // used idx: page 0x12
  assert.deepEqual(dirtyPages(bytes), [0x12]);
  ringLog.markUsed(4 + 8 * 3, 8); // element 3: page 0x13
  assert.deepEqual(dirtyPages(bytes), [0x12, 0x13]);
  assert.deepEqual(misses, []);
});

Deno.test("`RingWriteLog` reports writes it cannot mark: beyond the log, outside guest memory", () => {
  const { memory, log, bytes, misses, onMiss } = loggedMemory();
  const ringLog = new RingWriteLog(log, memory, 0x1_0000_8000, onMiss);
  ringLog.markUsed(0, 2);
  ringLog.markView(new Uint8Array(64), 0, 64);
  assert.equal(misses.length, 2);
  assert.match(
    misses[0],
    /used ring write at log address 0x100008000\+2 is beyond the \d+-byte log/,
  );
  assert.match(misses[1], /no mapped guest region/);
  assert.deepEqual(dirtyPages(bytes), []);
});
