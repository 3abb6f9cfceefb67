import assert from "node:assert/strict";
import { Logger } from "../log/logger.ts";
import { DescriptorChain } from "./descriptor_chain.ts";
import { SplitRingDriver } from "../../tests/support/virtio/split_ring_driver.ts";
import {
  MALFORMED_RUN_LIMIT,
  SHARED_TABLE_CHECK_MIN_ENTRIES,
  SplitVirtqueue,
  TURN_DESCRIPTOR_BUDGET,
} from "./virtqueue.ts";
import { chainsToBreak } from "../../tests/support/virtio/malformed_limits.ts";
import { ArrayGuestMemory } from "../../tests/support/virtio/array_guest_memory.ts";
import { CountingGuestMemory } from "../../tests/support/virtio/counting_guest_memory.ts";
import { WriteRecord } from "../../tests/support/virtio/recording_write_log.ts";
import {
  assertNothingReportedWithLogOff,
  queueFixture,
} from "../../tests/support/virtio/queue_fixture.ts";
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
} from "./ring_layout.ts";

function setup(options: ConstructorParameters<typeof SplitRingDriver>[0] = {}) {
  return queueFixture(
    new SplitRingDriver({ size: 16, ...options }),
    (ring, queueOptions) => new SplitVirtqueue(ring, queueOptions),
  );
}

Deno.test("SplitVirtqueue.pop() returns direct chains with readable then writable buffers", () => {
  const { driver, queue, chain } = setup();
  const a = driver.alloc(100), b = driver.alloc(50), c = driver.alloc(70);
  driver.write(a, new Uint8Array(100).fill(1));
  const head = driver.addChain([
    { addr: a, length: 100, writable: false },
    { addr: b, length: 50, writable: false },
    { addr: c, length: 70, writable: true },
  ]);
  assert.equal(queue.pop(chain, 0), true);
  assert.equal(chain.head, head);
  assert.equal(chain.count, 3);
  assert.equal(chain.readableCount, 2);
  assert.equal(chain.readableBytes, 150);
  assert.equal(chain.writableBytes, 70);
  assert.equal(chain.buffers[0][99], 1);
  assert.equal(queue.pop(chain, 0), false);
  assert.equal(queue.lastAvailIndex, 1);
});

Deno.test("SplitVirtqueue.pop() follows indirect tables when negotiated", () => {
  const { driver, queue, chain } = setup({ features: { indirectDescriptors: true } });
  const a = driver.alloc(10), b = driver.alloc(20);
  driver.addChain([{ addr: a, length: 10, writable: false }, {
    addr: b,
    length: 20,
    writable: true,
  }], true);
  assert.equal(queue.pop(chain, 0), true);
  assert.equal(chain.count, 2);
  assert.equal(chain.readableBytes, 10);
  assert.equal(chain.writableBytes, 20);
});

Deno.test("SplitVirtqueue.publish() writes used elements, then the index, and notifies", () => {
  const { driver, queue, chain } = setup();
  const a = driver.alloc(10);
  const h1 = driver.addChain([{ addr: a, length: 10, writable: true }])!;
  const h2 = driver.addChain([{ addr: a, length: 10, writable: true }])!;
  assert.ok(queue.pop(chain, 0));
  queue.pushUsed(chain.head, 5);
  assert.ok(queue.pop(chain, 0));
  queue.pushUsed(chain.head, 7);
  assert.equal(driver.usedIndex, 0, "nothing visible before publish");
  assert.equal(queue.publish(), true);
  assert.deepEqual(driver.takeUsed(), [{ id: h1, len: 5 }, { id: h2, len: 7 }]);
  assert.equal(driver.notifications, 1);
  assert.equal(queue.publish(), false, "nothing new to publish");
  assert.equal(driver.notifications, 1);
});

Deno.test("SplitVirtqueue.pushUsedChains() writes and reports what pushUsed() of each chain would", () => {
  for (const logged of [false, true]) {
    const one = setup({ features: { eventIndex: true } });
    const batch = setup({ features: { eventIndex: true } });
    const records = [one, batch].map(({ driver, queue }) => {
      const record = new WriteRecord([{ base: driver.base, bytes: driver.bytes }]);
      if (logged) queue.setWriteLog(record.ringLog(driver.usedAddr));
      return record;
    });
    const heads = new Uint16Array(16);
    const lengths = new Uint32Array(16);
    // 3 rounds of 6 chains in a 16-entry ring: the used ring wraps in the third.
    for (let round = 0; round < 3; round++) {
      for (const { driver, queue, chain } of [one, batch]) {
        for (let i = 0; i < 6; i++) {
          driver.addChain([{ addr: driver.alloc(64), length: 64, writable: true }]);
        }
        for (let i = 0; i < 6; i++) {
          assert.ok(queue.pop(chain, 0));
          heads[i] = chain.head;
          lengths[i] = 10 * round + i;
        }
        if (queue === one.queue) {
          for (let i = 0; i < 6; i++) one.queue.pushUsed(heads[i], lengths[i]);
        } else {
          batch.queue.pushUsedChains(heads, lengths, 0); // nothing
          batch.queue.pushUsedChains(heads, lengths, 2);
          batch.queue.pushUsedChains(heads, lengths, 4, 2); // the rest, from index 2
        }
      }
      assert.equal(batch.queue.unpublished, one.queue.unpublished);
      assert.deepEqual(batch.driver.bytes, one.driver.bytes, `round ${round}: the same ring`);
      assert.deepEqual(records[1].ranges, records[0].ranges, `round ${round}: the same reports`);
      assert.equal(batch.queue.publish(), one.queue.publish());
      assert.deepEqual(batch.driver.takeUsed(), one.driver.takeUsed());
    }
  }
});

Deno.test("SplitVirtqueue.publish() honours VIRTQ_AVAIL_F_NO_INTERRUPT without EVENT_IDX", () => {
  const { driver, queue, chain } = setup();
  driver.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
  const a = driver.alloc(10);
  driver.addChain([{ addr: a, length: 10, writable: true }]);
  assert.ok(queue.pop(chain, 0));
  queue.pushUsed(chain.head, 1);
  assert.equal(queue.publish(), false);
  assert.equal(driver.notifications, 0);
  assert.equal(driver.usedIndex, 1);
});

Deno.test("SplitVirtqueue.publish() notifies only when used_event is crossed with EVENT_IDX", () => {
  const { driver, queue, chain } = setup({ features: { eventIndex: true } });
  driver.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT); // must be ignored with EVENT_IDX
  const a = driver.alloc(10);
  for (let i = 0; i < 6; i++) driver.addChain([{ addr: a, length: 10, writable: true }]);
  driver.setUsedEvent(3); // notify when used idx passes 3 → reaches 4
  const step = () => {
    assert.ok(queue.pop(chain, 0));
    queue.pushUsed(chain.head, 1);
    return queue.publish();
  };
  assert.equal(step(), true, "first publish always notifies");
  assert.equal(step(), false); // idx 2
  assert.equal(step(), false); // idx 3
  assert.equal(step(), true); // idx 4 crosses used_event 3
  assert.equal(step(), false); // idx 5
  assert.equal(driver.notifications, 2);
});

Deno.test("SplitVirtqueue.enableNotifications() sets avail_event or clears NO_NOTIFY", () => {
  const plain = setup();
  plain.queue.disableNotifications();
  assert.equal(plain.driver.usedFlags, VIRTQ_USED_F_NO_NOTIFY);
  assert.equal(plain.queue.enableNotifications(), false);
  assert.equal(plain.driver.usedFlags, 0);
  const a = plain.driver.alloc(8);
  plain.driver.addChain([{ addr: a, length: 8, writable: true }]);
  assert.equal(plain.driver.needsKick(), true);
  // a chain came since the queue last looked: the caller is told to look (kick or not)
  assert.equal(plain.queue.enableNotifications(), true, "a chain came since the last look");
  assert.equal(plain.queue.hasAvailable(), true);

  const ev = setup({ features: { eventIndex: true } });
  const b = ev.driver.alloc(8);
  ev.driver.addChain([{ addr: b, length: 8, writable: true }]);
  assert.ok(ev.queue.pop(ev.chain, 0));
  assert.equal(ev.queue.enableNotifications(), false);
  assert.equal(ev.driver.availEvent, 1);
  ev.driver.needsKick();
  ev.driver.addChain([{ addr: b, length: 8, writable: true }]);
  assert.equal(ev.driver.needsKick(), true, "avail idx crossed avail_event");
  ev.driver.addChain([{ addr: b, length: 8, writable: true }]);
  assert.equal(ev.driver.needsKick(), false, "avail_event not moved since");
  // Two chains came since the last look: avail_event stays where the queue looked, and
  // the answer says to look again; once taken, the kick is asked for past them.
  assert.equal(ev.queue.enableNotifications(), true);
  assert.equal(ev.driver.availEvent, 1);
  assert.ok(ev.queue.pop(ev.chain, 0));
  assert.ok(ev.queue.pop(ev.chain, 0));
  assert.equal(ev.queue.pop(ev.chain, 0), false);
  assert.equal(ev.queue.enableNotifications(), false);
  assert.equal(ev.driver.availEvent, 3, "asks for chains beyond the ones taken");
});

Deno.test("SplitVirtqueue.unpop() hands the same chain out again", () => {
  const { driver, queue, chain } = setup();
  const a = driver.alloc(8);
  const head = driver.addChain([{ addr: a, length: 8, writable: true }]);
  assert.ok(queue.pop(chain, 0));
  queue.unpop(1);
  assert.ok(queue.pop(chain, 0));
  assert.equal(chain.head, head);
  assert.equal(queue.pop(chain, 0), false);
});

Deno.test("SplitVirtqueue resumes from lastAvailIndex and the ring's used index", () => {
  const driver = new SplitRingDriver({ size: 8 });
  const a = driver.alloc(8);
  for (let i = 0; i < 3; i++) driver.addChain([{ addr: a, length: 8, writable: true }]);
  const queue = new SplitVirtqueue(driver.vring(2), { logger: new Logger() });
  const chain = new DescriptorChain(8);
  assert.ok(queue.pop(chain, 0));
  assert.equal(chain.head, 2);
  assert.equal(queue.pop(chain, 0), false);
});

Deno.test("SplitVirtqueue constructor rejects ring views that do not match the size", () => {
  const driver = new SplitRingDriver({ size: 8 });
  const ring = driver.vring();
  assert.throws(() => new SplitVirtqueue({ ...ring, size: 6 }), /power of two/);
  assert.throws(() => new SplitVirtqueue({ ...ring, size: 16 }), /descriptor table/);
});

// ---- malicious rings: each returns the chain with len 0 and logs once, or breaks the queue.

type Setup = ReturnType<typeof setup>;

function expectDropped(s: Setup, build: (s: Setup) => number, message: RegExp) {
  const head = build(s);
  // A valid chain after the bad one must still come through.
  const good = s.driver.alloc(8);
  const goodHead = s.driver.addChain([{ addr: good, length: 8, writable: true }]);
  assert.equal(s.queue.pop(s.chain, 0), true);
  assert.equal(s.chain.head, goodHead);
  s.queue.pushUsed(s.chain.head, 8);
  s.queue.publish();
  assert.deepEqual(s.driver.takeUsed(), [{ id: head, len: 0 }, { id: goodHead, len: 8 }]);
  assert.equal(s.lines.length, 1, `one log line, got ${s.lines.join(" | ")}`);
  assert.match(s.lines[0], message);
  assert.equal(s.queue.broken, false);
  assert.equal(s.queue.malformedCount, 1);
}

function raw(s: Setup, head: number, descs: [number, number, number, number, number][]) {
  descs.forEach(([i, addr, len, flags, next]) =>
    s.driver.setDescriptor(i, addr, 0, len, flags, next)
  );
  s.driver.offer(head);
  return head;
}

Deno.test("SplitVirtqueue.pop() drops a descriptor loop", () => {
  const s = setup();
  const a = s.driver.alloc(8);
  expectDropped(
    s,
    () => raw(s, 10, [[10, a, 8, VIRTQ_DESC_F_NEXT, 11], [11, a, 8, VIRTQ_DESC_F_NEXT, 10]]),
    /longer than 16/,
  );
});

Deno.test("SplitVirtqueue.pop() drops a chain longer than the ring", () => {
  const s = setup();
  const a = s.driver.alloc(8);
  // 16 distinct descriptors 0..15 chained, 15 links back to 0: 17th would be needed.
  const descs: [number, number, number, number, number][] = [];
  for (let i = 0; i < 16; i++) descs.push([i, a, 8, VIRTQ_DESC_F_NEXT, (i + 1) % 16]);
  const head = raw(s, 0, descs);
  assert.equal(s.queue.pop(s.chain, 0), false);
  s.queue.publish();
  assert.deepEqual(s.driver.takeUsed(), [{ id: head, len: 0 }]);
  assert.match(s.lines[0], /longer than 16/);
});

Deno.test("SplitVirtqueue.pop() drops a chain whose next index is outside the table", () => {
  const s = setup();
  const a = s.driver.alloc(8);
  expectDropped(s, () => raw(s, 9, [[9, a, 8, VIRTQ_DESC_F_NEXT, 16]]), /links to 16/);
});

Deno.test("SplitVirtqueue.pop() drops zero-length descriptors", () => {
  const s = setup();
  const a = s.driver.alloc(8);
  expectDropped(s, () => raw(s, 9, [[9, a, 0, 0, 0]]), /length 0/);
});

Deno.test("SplitVirtqueue.pop() drops addresses outside guest memory", () => {
  const s = setup();
  expectDropped(s, () => raw(s, 9, [[9, 0x1000, 8, 0, 0]]), /0x1000\+8 is outside guest memory/);
});

Deno.test("SplitVirtqueue.pop() drops ranges that run past the end of memory", () => {
  const s = setup();
  const end = s.driver.base + s.driver.bytes.length;
  expectDropped(s, () => raw(s, 9, [[9, end - 4, 8, 0, 0]]), /outside guest memory/);
});

Deno.test("SplitVirtqueue.pop() drops addresses that wrap past 2^64", () => {
  const s = setup();
  expectDropped(s, () => {
    s.driver.setDescriptor(9, 0xffff_fff0, 0xffff_ffff, 0x1_0000, 0, 0);
    s.driver.offer(9);
    return 9;
  }, /0xfffffffffffffff0\+65536 is outside/);
});

Deno.test("SplitVirtqueue.pop() drops a readable descriptor after a writable one", () => {
  const s = setup();
  const a = s.driver.alloc(8);
  expectDropped(
    s,
    () => raw(s, 9, [[9, a, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 10], [10, a, 8, 0, 0]]),
    /readable after a device-writable/,
  );
});

Deno.test("SplitVirtqueue.pop() drops indirect descriptors when not negotiated", () => {
  const s = setup();
  const t = s.driver.alloc(16);
  expectDropped(s, () => raw(s, 9, [[9, t, 16, VIRTQ_DESC_F_INDIRECT, 0]]), /not negotiated/);
});

for (
  const [name, len] of [["len % 16 != 0", 24], ["len 0", 0], [
    "len over the queue size",
    17 * 16,
  ]] as const
) {
  Deno.test(`SplitVirtqueue.pop() drops an indirect table with ${name}`, () => {
    const s = setup({ features: { indirectDescriptors: true } });
    const t = s.driver.alloc(17 * 16);
    const a = s.driver.alloc(8);
    for (let i = 0; i < 17; i++) s.driver.writeDescriptorAt(t + 16 * i, a, 0, 8, 0, 0);
    expectDropped(s, () => raw(s, 9, [[9, t, len, VIRTQ_DESC_F_INDIRECT, 0]]), /indirect table/);
  });
}

Deno.test("SplitVirtqueue.pop() drops a nested indirect table", () => {
  const s = setup({ features: { indirectDescriptors: true } });
  const t = s.driver.alloc(32);
  const a = s.driver.alloc(8);
  s.driver.writeDescriptorAt(t, a, 0, 8, VIRTQ_DESC_F_NEXT, 1);
  s.driver.writeDescriptorAt(t + 16, t, 0, 32, VIRTQ_DESC_F_INDIRECT, 0);
  expectDropped(s, () => raw(s, 9, [[9, t, 32, VIRTQ_DESC_F_INDIRECT, 0]]), /itself indirect/);
});

Deno.test("SplitVirtqueue.pop() drops INDIRECT together with NEXT", () => {
  const s = setup({ features: { indirectDescriptors: true } });
  const t = s.driver.alloc(16);
  const a = s.driver.alloc(8);
  s.driver.writeDescriptorAt(t, a, 0, 8, 0, 0);
  expectDropped(
    s,
    () => raw(s, 9, [[9, t, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 10], [10, a, 8, 0, 0]]),
    /both INDIRECT and NEXT/,
  );
});

Deno.test("SplitVirtqueue.pop() drops an indirect descriptor that is not the head", () => {
  const s = setup({ features: { indirectDescriptors: true } });
  const t = s.driver.alloc(16);
  const a = s.driver.alloc(8);
  s.driver.writeDescriptorAt(t, a, 0, 8, 0, 0);
  expectDropped(
    s,
    () => raw(s, 9, [[9, a, 8, VIRTQ_DESC_F_NEXT, 10], [10, t, 16, VIRTQ_DESC_F_INDIRECT, 0]]),
    /not the head/,
  );
});

Deno.test("SplitVirtqueue.pop() drops an indirect loop", () => {
  const s = setup({ features: { indirectDescriptors: true } });
  const t = s.driver.alloc(32);
  const a = s.driver.alloc(8);
  s.driver.writeDescriptorAt(t, a, 0, 8, VIRTQ_DESC_F_NEXT, 1);
  s.driver.writeDescriptorAt(t + 16, a, 0, 8, VIRTQ_DESC_F_NEXT, 0);
  expectDropped(s, () => raw(s, 9, [[9, t, 32, VIRTQ_DESC_F_INDIRECT, 0]]), /longer than 2/);
});

Deno.test("SplitVirtqueue.pop() marks the queue broken for a head index ≥ ring size", () => {
  const s = setup();
  s.driver.offer(16);
  assert.equal(s.queue.pop(s.chain, 0), false);
  assert.equal(s.queue.broken, true);
  assert.match(s.lines[0], /head 16 ≥ queue size 16/);
  assert.equal(s.queue.pop(s.chain, 0), false, "stays broken, no busy loop");
  assert.equal(s.queue.publish(), false);
  assert.equal(s.lines.length, 1);
});

Deno.test("SplitVirtqueue.pop() marks the queue broken when avail idx jumps past the ring size", () => {
  const s = setup();
  s.driver.setAvailIndex(17);
  assert.equal(s.queue.hasAvailable(), false);
  assert.equal(s.queue.broken, true);
  assert.match(s.lines[0], /17 ahead of 0/);
  assert.equal(s.queue.pop(s.chain, 0), false);
});

Deno.test("SplitVirtqueue.pop() logs one line for a flood of malformed chains", () => {
  const s = setup();
  // 4 × 15 = 60 malformed chains in a row: below MALFORMED_RUN_LIMIT.
  for (let round = 0; round < 4; round++) {
    for (let i = 0; i < 15; i++) {
      s.driver.setDescriptor(i, 0x10, 0, 8, 0, 0);
      s.driver.offer(i);
    }
    assert.equal(s.queue.pop(s.chain, round), false);
    s.queue.publish();
    assert.equal(s.driver.takeUsed().length, 15);
  }
  assert.equal(s.lines.length, 1);
  assert.equal(s.queue.malformedCount, 60);
  assert.equal(s.queue.broken, false);
});

Deno.test("SplitVirtqueue.pop() reads each descriptor once (a rewrite after the check is not seen)", () => {
  const s = setup();
  const a = s.driver.alloc(8);
  s.driver.setDescriptor(3, a, 0, 8, 0, 0);
  s.driver.offer(3);
  assert.ok(s.queue.pop(s.chain, 0));
  const view = s.chain.buffers[0];
  s.driver.setDescriptor(3, 0x10, 0, 0x10000, 0, 0); // guest rewrites after the pop
  assert.equal(view.length, 8);
  assert.equal(view.byteOffset, a - s.driver.base);
});

// ---- work per turn: rings whose chains share descriptors (size² descriptors)

/** A queue over `driver` whose memory lookups are counted (one per buffer descriptor or table). */
function countedQueue(driver: SplitRingDriver) {
  const lines: string[] = [];
  const logger = new Logger();
  logger.setSink((_level, line) => lines.push(line));
  const memory = new CountingGuestMemory(driver.memory);
  const queue = new SplitVirtqueue({ ...driver.vring(), memory }, { name: "TX", logger });
  return { queue, memory, lines, chain: new DescriptorChain(queue.size) };
}

/** Every descriptor links to the next, the last back to the first; every head is offered. */
function loopRing(size: number): SplitRingDriver {
  const driver = new SplitRingDriver({ size, dataBytes: 4096 });
  const a = driver.alloc(8);
  for (let i = 0; i < size; i++) {
    driver.setDescriptor(i, a, 0, 1, VIRTQ_DESC_F_NEXT, (i + 1) % size);
  }
  for (let i = 0; i < size; i++) driver.offer(i);
  return driver;
}

/**
 * Every head names the same indirect table of `size` entries, chained 0 → 1 → … →
 * size-1; the first `heads` of them are offered.
 */
function sharedIndirectRing(
  size: number,
  entryBytes: number,
  flags = 0,
  heads = size,
): SplitRingDriver {
  const driver = new SplitRingDriver({
    size,
    dataBytes: size * DESC_BYTES + 4096,
    features: { indirectDescriptors: true },
  });
  const a = driver.alloc(entryBytes);
  const table = driver.alloc(size * DESC_BYTES);
  for (let j = 0; j < size; j++) {
    const last = j === size - 1;
    driver.writeDescriptorAt(
      table + j * DESC_BYTES,
      a,
      0,
      entryBytes,
      flags | (last ? 0 : VIRTQ_DESC_F_NEXT),
      last ? 0 : j + 1,
    );
  }
  for (let i = 0; i < size; i++) {
    driver.setDescriptor(i, table, 0, size * DESC_BYTES, VIRTQ_DESC_F_INDIRECT, 0);
    if (i < heads) driver.offer(i);
  }
  return driver;
}

const DESC_BYTES = 16;

/**
 * One TX-like turn over `queue`: pops until pop() returns false, uses every chain
 * popped, then publishes. Returns the number of chains used.
 */
function txTurn(queue: SplitVirtqueue, chain: DescriptorChain): number {
  queue.beginTurn();
  let used = 0;
  while (queue.pop(chain, 0)) {
    queue.pushUsed(chain.head, 0);
    chain.release();
    used++;
  }
  queue.publish();
  return used;
}

/** A driver whose descriptors 0 → 1 → … → size-1 make one chain of 1-byte segments; heads along it from `first` on. */
function chainThroughRing(size: number, first: number, heads = size): SplitRingDriver {
  const driver = new SplitRingDriver({ size, dataBytes: 4096 });
  const a = driver.alloc(8);
  for (let i = 0; i < size; i++) {
    const last = i === size - 1;
    driver.setDescriptor(i, a, 0, 1, last ? 0 : VIRTQ_DESC_F_NEXT, last ? 0 : i + 1);
  }
  for (let k = 0; k < heads; k++) driver.offer((first + k) % size);
  return driver;
}

for (const size of [8192, 32768]) {
  Deno.test(`SplitVirtqueue.pop() walks ${size} heads along one ${size}-descriptor chain in O(size) and breaks the queue (shared descriptors)`, () => {
    const first = size / 4;
    const { queue, memory, chain, lines } = countedQueue(chainThroughRing(size, first));
    // The first head's chain once, then one descriptor per head that reaches into it:
    // an O(size²) walk throws here instead of running for minutes.
    const bound = size - first + 2 * MALFORMED_RUN_LIMIT;
    memory.limit = bound;
    assert.equal(txTurn(queue, chain), 1, "the first head's chain is valid and used");
    assert.equal(queue.broken, true);
    assert.equal(queue.malformedCount, MALFORMED_RUN_LIMIT);
    assert.ok(memory.total <= bound, `looked up ${memory.total}`);
    assert.ok(queue.descriptorsWalked <= bound, `walked ${queue.descriptorsWalked}`);
    assert.match(lines[0], /descriptor \d+ is also in another chain made available/);
    assert.match(lines.at(-1)!, /broken and stops: 64 malformed chains in a row/);
  });
}

for (const size of [16384, 32768]) {
  Deno.test(`SplitVirtqueue.pop() drops ${size} heads that each start the same ${size}-descriptor loop after one walk of it, then breaks the queue`, () => {
    const { queue, memory, chain, lines } = countedQueue(loopRing(size));
    const bound = size + 2 * MALFORMED_RUN_LIMIT; // the loop once, then a descriptor per head
    memory.limit = bound;
    assert.equal(txTurn(queue, chain), 0);
    assert.equal(queue.broken, true);
    assert.equal(queue.malformedCount, MALFORMED_RUN_LIMIT);
    assert.ok(queue.descriptorsWalked <= bound, `walked ${queue.descriptorsWalked}`);
    assert.match(lines[0], new RegExp(`longer than ${size} descriptors \\(loop\\?\\)`));
    assert.match(lines.at(-1)!, /64 malformed chains in a row/);
    assert.equal(queue.pop(chain, 0), false, "a broken queue stays idle");
  });
}

for (const size of [8192, 32768]) {
  Deno.test(`SplitVirtqueue.pop() walks ${size} heads sharing one ${size}-entry indirect table in O(size) and breaks the queue`, () => {
    const { queue, memory, chain, lines } = countedQueue(sharedIndirectRing(size, 4));
    const bound = size + 1 + 2 * MALFORMED_RUN_LIMIT;
    memory.limit = bound;
    assert.equal(txTurn(queue, chain), 1, "the first head's table is valid and used");
    assert.equal(queue.broken, true);
    assert.equal(queue.malformedCount, MALFORMED_RUN_LIMIT);
    assert.ok(memory.total <= bound, `looked up ${memory.total}`);
    assert.match(lines[0], /indirect table 0x[0-9a-f]+\+\d+ overlaps another chain's table/);
  });
}

Deno.test("SplitVirtqueue.pop() drops heads naming overlapping ranges of one indirect table (each a suffix of the last)", () => {
  const size = 8192;
  const driver = new SplitRingDriver({
    size,
    dataBytes: size * DESC_BYTES + 4096,
    features: { indirectDescriptors: true },
  });
  const a = driver.alloc(4);
  const table = driver.alloc(size * DESC_BYTES);
  for (let j = 0; j < size; j++) driver.writeDescriptorAt(table + j * DESC_BYTES, a, 0, 4, 0, 0);
  // Head k's table starts k entries in and runs to the end: each chain is the table's
  // first entry, but the ranges overlap. Walked in one window, only the first passes.
  for (let k = 0; k < size; k++) {
    driver.setDescriptor(
      k,
      table + k * DESC_BYTES,
      0,
      (size - k) * DESC_BYTES,
      VIRTQ_DESC_F_INDIRECT,
      0,
    );
    driver.offer(k);
  }
  const { queue, chain, lines } = countedQueue(driver);
  assert.ok(size - 1 > SHARED_TABLE_CHECK_MIN_ENTRIES);
  assert.equal(txTurn(queue, chain), 1);
  assert.equal(queue.broken, true);
  assert.equal(queue.malformedCount, MALFORMED_RUN_LIMIT);
  assert.match(lines[0], /overlaps another chain's table/);
});

/**
 * A 64-entry queue with indirect descriptors and three chains over one 8-byte buffer:
 * head 0 → descriptor 1 (two descriptors), and head 2 naming an indirect table of
 * SHARED_TABLE_CHECK_MIN_ENTRIES + 1 entries (large enough for the shared-table check).
 */
function reusableChains() {
  const s = setup({ size: 64, features: { indirectDescriptors: true }, dataBytes: 8192 });
  const a = s.driver.alloc(8);
  const entries = SHARED_TABLE_CHECK_MIN_ENTRIES + 1;
  const table = s.driver.alloc(entries * DESC_BYTES);
  for (let j = 0; j < entries; j++) {
    const last = j === entries - 1;
    s.driver.writeDescriptorAt(
      table + j * DESC_BYTES,
      a,
      0,
      8,
      last ? 0 : VIRTQ_DESC_F_NEXT,
      last ? 0 : j + 1,
    );
  }
  s.driver.setDescriptor(0, a, 0, 8, VIRTQ_DESC_F_NEXT, 1);
  s.driver.setDescriptor(1, a, 0, 8, 0, 0);
  s.driver.setDescriptor(2, table, 0, entries * DESC_BYTES, VIRTQ_DESC_F_INDIRECT, 0);
  return { s, table, entries };
}

Deno.test("SplitVirtqueue.pop() takes chains that reuse descriptors and tables once the used index was published", () => {
  const { s, table, entries } = reusableChains();
  s.driver.setDescriptor(3, table, 0, entries * DESC_BYTES, VIRTQ_DESC_F_INDIRECT, 0);
  // In one window: head 1 is inside head 0's chain, head 3 names head 2's table.
  for (const head of [0, 1, 2, 3]) s.driver.offer(head);
  assert.equal(txTurn(s.queue, s.chain), 2);
  assert.deepEqual(s.driver.takeUsed(), [
    { id: 0, len: 0 },
    { id: 1, len: 0 },
    { id: 2, len: 0 },
    { id: 3, len: 0 },
  ]);
  assert.equal(s.queue.malformedCount, 2);
  // After the publish the driver owns them again: the same chains, turn after turn.
  for (let turn = 0; turn < 3; turn++) {
    s.driver.offer(0);
    s.driver.offer(2);
    assert.equal(txTurn(s.queue, s.chain), 2, `turn ${turn}`);
    assert.deepEqual(s.driver.takeUsed().map((u) => u.id), [0, 2]);
  }
  // Also within one turn, after a publish between the chains.
  s.driver.offer(0);
  s.queue.beginTurn();
  assert.ok(s.queue.pop(s.chain, 0));
  s.queue.pushUsed(s.chain.head, 0);
  s.queue.publish();
  s.driver.offer(1);
  assert.ok(s.queue.pop(s.chain, 0));
  assert.equal(s.chain.head, 1);
  assert.equal(s.queue.malformedCount, 2);
});

Deno.test("SplitVirtqueue.unpop() hands chains out again without taking their own descriptors or tables for shared", () => {
  const { s, entries } = reusableChains();
  s.driver.offer(0);
  s.driver.offer(2);
  for (let attempt = 0; attempt < 3; attempt++) {
    assert.ok(s.queue.pop(s.chain, 0));
    s.chain.release();
    assert.ok(s.queue.pop(s.chain, 0));
    assert.equal(s.chain.count, entries);
    s.chain.release();
    s.queue.unpop(2);
  }
  assert.ok(s.queue.pop(s.chain, 0));
  assert.equal(s.chain.head, 0);
  assert.ok(s.queue.pop(s.chain, 0));
  assert.equal(s.chain.head, 2);
  assert.equal(s.queue.malformedCount, 0);
});

Deno.test("SplitVirtqueue.rejectChain() counts toward the malformed run: long chains the caller rejects break the queue", () => {
  const size = 16384;
  const driver = sharedIndirectRing(size, 8, 0, 0);
  const { queue, memory, chain, lines } = countedQueue(driver);
  memory.limit = TURN_DESCRIPTOR_BUDGET + size + 1;
  let rejected = 0;
  // One head a turn, published before the next names the same table (a driver may
  // reuse it then): only the caller's rejections make the run.
  for (let turn = 0; turn < 100 && !queue.broken; turn++) {
    memory.resetCount();
    queue.beginTurn();
    driver.offer(0);
    while (queue.pop(chain, 0)) {
      chain.release();
      queue.rejectChain(chain.head); // e.g. a 128 KiB TX frame
      rejected++;
    }
    queue.publish();
  }
  assert.equal(queue.broken, true);
  assert.equal(rejected, chainsToBreak(size + 1), "16,385 descriptors per chain");
  assert.match(lines.at(-1)!, /malformed chains worth \d+ descriptors in a row/);
});

Deno.test("SplitVirtqueue breaks at MALFORMED_RUN_LIMIT malformed chains in a row, a used chain resets the run", () => {
  const s = setup();
  const a = s.driver.alloc(8);
  let head = 0;
  const offerBad = (n: number) => {
    for (let i = 0; i < n; i++) {
      s.driver.setDescriptor(head, 0x10, 0, 8, 0, 0); // outside memory
      s.driver.offer(head);
      head = (head + 1) % 16;
      assert.equal(s.queue.pop(s.chain, 0), false);
      s.queue.publish(); // the ring reuses its 16 descriptors: returned first
    }
  };
  const offerGood = () => {
    s.driver.setDescriptor(head, a, 0, 8, 0, 0);
    s.driver.offer(head);
    head = (head + 1) % 16;
    assert.equal(s.queue.pop(s.chain, 0), true);
    return s.chain.head;
  };
  offerBad(MALFORMED_RUN_LIMIT - 2);
  s.queue.rejectChain(offerGood()); // the caller's rejections count alike
  assert.equal(s.queue.broken, false, `${MALFORMED_RUN_LIMIT - 1} in a row`);
  s.queue.pushUsed(offerGood(), 0); // a used chain ends the run
  offerBad(MALFORMED_RUN_LIMIT - 1);
  assert.equal(s.queue.broken, false);
  s.queue.dropChain(offerGood(), "test");
  assert.equal(s.queue.broken, true);
  assert.match(s.lines.at(-1)!, /64 malformed chains in a row/);
});

// ---- buffers across adjacent memory regions

/** A driver whose data area ends where a second region of `extra` bytes begins. */
function twoRegionDriver(extra: number, gap = 0) {
  const memory = new ArrayGuestMemory();
  const driver = new SplitRingDriver({ size: 16, memory, dataBytes: 4096 });
  const end = driver.base + driver.bytes.length;
  const second = new Uint8Array(extra);
  memory.addRegion(end + gap, second);
  const lines: string[] = [];
  const logger = new Logger();
  logger.setSink((_level, line) => lines.push(line));
  const queue = new SplitVirtqueue(driver.vring(), { name: "TX", logger });
  return { driver, queue, end, second, lines };
}

Deno.test("SplitVirtqueue.pop() splits a buffer that spans two adjacent regions into one view per region", () => {
  const { driver, queue, end, second } = twoRegionDriver(4096);
  driver.bytes.fill(0xaa, driver.bytes.length - 10);
  second.fill(0xbb, 0, 30);
  const small = driver.alloc(4);
  driver.setDescriptor(0, small, 0, 4, VIRTQ_DESC_F_NEXT, 1);
  driver.setDescriptor(1, end - 10, 0, 40, VIRTQ_DESC_F_NEXT, 2);
  driver.setDescriptor(2, end + 100, 0, 8, VIRTQ_DESC_F_WRITE, 0);
  driver.offer(0);
  const chain = new DescriptorChain(16);
  assert.equal(queue.pop(chain, 0), true);
  assert.equal(chain.count, 4, "4 bytes, 10 + 30 bytes, 8 bytes");
  assert.deepEqual(chain.buffers.slice(0, 4).map((b) => b.length), [4, 10, 30, 8]);
  assert.equal(chain.readableCount, 3);
  assert.equal(chain.readableBytes, 44);
  assert.equal(chain.writableBytes, 8);
  const gathered = new Uint8Array(40);
  assert.equal(chain.readInto(4, gathered), 40);
  assert.deepEqual(
    gathered,
    new Uint8Array([...new Array(10).fill(0xaa), ...new Array(30).fill(0xbb)]),
  );
});

Deno.test("SplitVirtqueue.pop() still drops a buffer across a gap between regions", () => {
  const { driver, queue, end, lines } = twoRegionDriver(4096, 4096);
  driver.setDescriptor(0, end - 10, 0, 40, 0, 0);
  driver.offer(0);
  assert.equal(queue.pop(new DescriptorChain(16), 0), false);
  assert.equal(queue.malformedCount, 1);
  assert.match(lines[0], /outside guest memory/);
});

Deno.test("SplitVirtqueue.pop() drops a chain whose views would exceed the chain's capacity", () => {
  const { driver, queue, end, lines } = twoRegionDriver(4096);
  const a = driver.alloc(4);
  driver.setDescriptor(0, a, 0, 4, VIRTQ_DESC_F_NEXT, 1);
  driver.setDescriptor(1, end - 10, 0, 40, 0, 0); // 2 views: 3 in all
  driver.offer(0);
  const chain = new DescriptorChain(2);
  assert.equal(queue.pop(chain, 0), false);
  assert.match(lines[0], /more than 2 buffer views/);
  assert.equal(chain.count, 0, "no view kept");
  assert.equal(chain.buffers[0].length, 0);
  assert.equal(chain.buffers[1].length, 0);
});

Deno.test("SplitVirtqueue.pop() drops an indirect table that spans two regions (tables must lie in one)", () => {
  const memory = new ArrayGuestMemory();
  const driver = new SplitRingDriver({
    size: 16,
    memory,
    dataBytes: 4096,
    features: { indirectDescriptors: true },
  });
  const end = driver.base + driver.bytes.length;
  memory.addRegion(end, new Uint8Array(4096));
  const lines: string[] = [];
  const logger = new Logger();
  logger.setSink((_level, line) => lines.push(line));
  const queue = new SplitVirtqueue(driver.vring(), { name: "TX", logger });
  driver.setDescriptor(0, end - 16, 0, 32, VIRTQ_DESC_F_INDIRECT, 0);
  driver.offer(0);
  assert.equal(queue.pop(new DescriptorChain(16), 0), false);
  assert.match(lines[0], /outside guest memory/);
});

Deno.test("SplitVirtqueue reports every used-ring write to its write log, and none without one", () => {
  for (const eventIndex of [false, true]) {
    const { driver, queue, chain } = setup({ features: { eventIndex } });
    const record = new WriteRecord([{ base: driver.base, bytes: driver.bytes }]);
    queue.setWriteLog(record.ringLog(driver.usedAddr));
    assert.equal(queue.writeLog !== null, true);
    const a = driver.alloc(64);
    for (let i = 0; i < 20; i++) driver.addChain([{ addr: a, length: 64, writable: true }]);
    record.snapshot(); // what the driver wrote is not the device's
    for (let i = 0; i < 20 && queue.pop(chain, 0); i++) {
      queue.pushUsed(chain.head, 10 + i);
      chain.release();
      if (i % 7 === 6) queue.publish(); // wraps the 16-entry used ring
    }
    queue.rewriteUsedLength(1, 99);
    queue.publish();
    assert.deepEqual(record.unreported(), [], `EVENT_IDX ${eventIndex}: every change reported`);
    assert.ok(record.ranges.length >= 16, "one report per element at least");
    // each notification change on its own: flags (or avail_event) differ after each
    queue.disableNotifications();
    assert.deepEqual(record.unreported(), [], "disableNotifications()");
    driver.takeUsed();
    driver.addChain([{ addr: a, length: 64, writable: true }]);
    record.snapshot();
    queue.enableNotifications();
    assert.deepEqual(record.unreported(), [], "enableNotifications()");
    const usedEnd = driver.usedAddr + 6 + 8 * 16 + 2;
    assert.ok(
      record.ranges.every(([start, end]) => start >= driver.usedAddr && end <= usedEnd),
      "only used-ring bytes",
    );
    assertNothingReportedWithLogOff(queue, chain, record, () => {
      driver.takeUsed();
      driver.addChain([{ addr: a, length: 64, writable: true }]);
    });
  }
});

Deno.test("SplitVirtqueue takes its write log from the started vring", () => {
  const driver = new SplitRingDriver({ size: 16 });
  const record = new WriteRecord([{ base: driver.base, bytes: driver.bytes }]);
  const queue = new SplitVirtqueue({
    ...driver.vring(),
    writeLog: record.ringLog(driver.usedAddr),
  });
  const chain = new DescriptorChain(queue.size);
  driver.addChain([{ addr: driver.alloc(8), length: 8, writable: true }]);
  record.snapshot();
  assert.ok(queue.pop(chain, 0));
  queue.pushUsed(chain.head, 8);
  queue.publish();
  assert.deepEqual(record.unreported(), []);
  assert.deepEqual(record.ranges, [
    [driver.usedAddr + 4, driver.usedAddr + 12],
    [driver.usedAddr + 2, driver.usedAddr + 4],
  ]);
});
