import assert from "node:assert/strict";
import { Logger } from "../log/logger.ts";
import { DescriptorChain } from "./descriptor_chain.ts";
import { SplitRingDriver } from "./split_ring_driver.ts";
import { SplitVirtqueue } from "./virtqueue.ts";
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
} from "./ring_layout.ts";

function setup(options: ConstructorParameters<typeof SplitRingDriver>[0] = {}) {
  const lines: string[] = [];
  const logger = new Logger();
  logger.setSink((_level, line) => lines.push(line));
  const driver = new SplitRingDriver({ size: 16, ...options });
  const queue = new SplitVirtqueue(driver.vring(), { name: "TX", logger });
  const chain = new DescriptorChain(queue.size);
  return { driver, queue, chain, lines };
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
  assert.equal(plain.queue.enableNotifications(), false, "nothing new since arming");
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
  assert.equal(ev.queue.enableNotifications(), false);
  assert.equal(ev.driver.availEvent, 3, "asks for chains beyond the 2 pending ones");
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
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 16; i++) {
      s.driver.setDescriptor(i, 0x10, 0, 8, 0, 0);
      s.driver.offer(i);
    }
    assert.equal(s.queue.pop(s.chain, round), false);
    s.queue.publish();
    assert.equal(s.driver.takeUsed().length, 16);
  }
  assert.equal(s.lines.length, 1);
  assert.equal(s.queue.malformedCount, 80);
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
