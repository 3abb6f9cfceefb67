import assert from "node:assert/strict";
import { Logger } from "../log/logger.ts";
import { DescriptorChain } from "./descriptor_chain.ts";
import { NOT_THE_ID, PackedRingDriver } from "../../tests/support/virtio/packed_ring_driver.ts";
import { PackedVirtqueue } from "./packed_virtqueue.ts";
import {
  decodePackedState,
  encodePackedState,
  frontendPackedState,
  INITIAL_PACKED_STATE,
  PACKED_DESC_F_INDIRECT,
  PACKED_DESC_F_NEXT,
  PACKED_DESC_F_WRITE,
  PACKED_DESC_SIZE,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
} from "./packed_ring_layout.ts";
import { MALFORMED_RUN_LIMIT, SHARED_TABLE_CHECK_MIN_ENTRIES } from "./virtqueue.ts";
import { WriteRecord } from "../../tests/support/virtio/recording_write_log.ts";
import {
  assertNothingReportedWithLogOff,
  queueFixture,
} from "../../tests/support/virtio/queue_fixture.ts";

function setup(options: ConstructorParameters<typeof PackedRingDriver>[0] = {}) {
  return queueFixture(
    new PackedRingDriver({ size: 16, ...options }),
    (ring, queueOptions) => new PackedVirtqueue(ring, queueOptions),
  );
}

function readable(driver: PackedRingDriver, length: number, fill = 0) {
  const addr = driver.alloc(length);
  driver.write(addr, new Uint8Array(length).fill(fill));
  return { addr, length, writable: false };
}

function writable(driver: PackedRingDriver, length: number) {
  return { addr: driver.alloc(length), length, writable: true };
}

Deno.test("encodePackedState() / decodePackedState() carry both positions and wrap counters in bits 0-15 and 16-31", () => {
  assert.equal(INITIAL_PACKED_STATE, 0x8000_8000);
  const state = { avail: { index: 5, wrap: 0 }, used: { index: 0x7fff, wrap: 1 } };
  assert.equal(encodePackedState(state), 0xffff_0005);
  assert.deepEqual(decodePackedState(0xffff_0005), state);
});

Deno.test("frontendPackedState() reads DPDK's available-only base as used = available, QEMU's as sent", () => {
  assert.equal(frontendPackedState(0x8000), 0x8000_8000, "DPDK virtio-user's start");
  assert.equal(frontendPackedState(0x8005), 0x8005_8005);
  assert.equal(frontendPackedState(0x8000_8000), 0x8000_8000, "QEMU's start");
  assert.equal(frontendPackedState(0x0003_8005), 0x0003_8005, "both halves given");
  assert.equal(frontendPackedState(0x0005), 0x0005, "used at slot 0, wrap 0: a possible state");
});

Deno.test("PackedVirtqueue.pop() returns a list with readable then writable buffers and the last descriptor's Buffer ID", () => {
  const { driver, queue, chain } = setup();
  const first = driver.addChain([writable(driver, 8)]);
  const id = driver.addChain([
    readable(driver, 100, 1),
    readable(driver, 50, 2),
    writable(driver, 70),
  ]);
  assert.equal(queue.hasAvailable(), true);
  assert.equal(queue.availableCount(), 2);
  assert.equal(queue.pop(chain, 0), true);
  assert.equal(chain.head, first);
  assert.equal(queue.pop(chain, 0), true);
  assert.equal(chain.head, id);
  assert.notEqual(chain.head, NOT_THE_ID);
  assert.equal(chain.count, 3);
  assert.equal(chain.readableCount, 2);
  assert.equal(chain.readableBytes, 150);
  assert.equal(chain.writableBytes, 70);
  assert.equal(chain.buffers[0][99], 1);
  assert.equal(chain.buffers[1][0], 2);
  assert.equal(queue.pop(chain, 0), false);
  assert.deepEqual(decodePackedState(queue.vringBase).avail, { index: 4, wrap: 1 });
});

Deno.test("PackedVirtqueue.pop() follows an indirect table when negotiated", () => {
  const { driver, queue, chain } = setup({ features: { indirectDescriptors: true } });
  const id = driver.addChain(
    [readable(driver, 10, 7), writable(driver, 20), writable(driver, 30)],
    true,
  );
  assert.ok(queue.pop(chain, 0));
  assert.equal(chain.head, id);
  assert.equal(chain.count, 3);
  assert.equal(chain.readableBytes, 10);
  assert.equal(chain.writableBytes, 50);
  assert.deepEqual(decodePackedState(queue.vringBase).avail, { index: 1, wrap: 1 });
});

Deno.test("PackedVirtqueue.publish() makes used descriptors visible only then, with length, WRITE and the device's wrap counter", () => {
  const { driver, queue, chain } = setup();
  const tx = driver.addChain([readable(driver, 20), readable(driver, 20)]);
  const rx = driver.addChain([writable(driver, 100)]);
  assert.ok(queue.pop(chain, 0));
  queue.pushUsed(chain.head, 0);
  assert.ok(queue.pop(chain, 0));
  queue.pushUsed(chain.head, 42);
  assert.equal(queue.unpublished, 2);
  assert.deepEqual(driver.takeUsed(), [], "nothing is visible before publish()");
  assert.equal(queue.publish(), true);
  assert.equal(driver.notifications, 1);
  assert.deepEqual(driver.takeUsed(), [{ id: tx, len: 0 }, { id: rx, len: 42 }]);
  assert.equal(driver.usedWriteFlag(0), false, "TX buffer: nothing written");
  assert.equal(
    driver.usedWriteFlag(2),
    true,
    "RX buffer: data written (slot 2: the TX list took two)",
  );
  assert.equal(queue.publish(), false, "nothing new: no notification");
});

Deno.test("PackedVirtqueue.pushUsedChains() writes what pushUsed() of each list would", () => {
  const one = setup({ size: 7 });
  const batch = setup({ size: 7 });
  const heads = new Uint16Array(7);
  const lengths = new Uint32Array(7);
  // 3 rounds of 5 lists in a 7-entry ring: the ring wraps.
  for (let round = 0; round < 3; round++) {
    for (const { driver, queue, chain } of [one, batch]) {
      for (let i = 0; i < 5; i++) driver.addChain([writable(driver, 32)]);
      for (let i = 0; i < 5; i++) {
        assert.ok(queue.pop(chain, 0));
        heads[i] = chain.head;
        lengths[i] = 10 * round + i;
      }
      if (queue === one.queue) {
        for (let i = 0; i < 5; i++) one.queue.pushUsed(heads[i], lengths[i]);
      } else {
        batch.queue.pushUsedChains(heads, lengths, 3);
        batch.queue.pushUsedChains(heads, lengths, 2, 3); // the rest, from index 3
      }
    }
    assert.equal(batch.queue.unpublished, one.queue.unpublished);
    assert.equal(batch.queue.publish(), one.queue.publish());
    assert.deepEqual(batch.driver.bytes, one.driver.bytes, `round ${round}: the same ring`);
    assert.deepEqual(batch.driver.takeUsed(), one.driver.takeUsed());
  }
});

Deno.test("PackedVirtqueue wraps the ring many times with lists of any length used out of order", () => {
  const { driver, queue, chain } = setup({ size: 7 }); // not a power of two: allowed for packed
  const a = driver.alloc(64);
  let next = 0;
  const returned: number[] = [];
  const offered: number[] = [];
  for (let round = 0; round < 40; round++) {
    for (;;) {
      const length = 1 + (next++ % 3);
      const id = driver.addChain(
        Array.from({ length }, (_, i) => ({ addr: a, length: 8, writable: i === length - 1 })),
      );
      if (id === null) break;
      offered.push(id);
    }
    const popped: number[] = [];
    while (queue.pop(chain, 0)) {
      popped.push(chain.head);
      chain.release();
    }
    popped.reverse(); // used in the reverse order
    for (const id of popped) queue.pushUsed(id, id + 1);
    queue.publish();
    for (const used of driver.takeUsed()) {
      assert.equal(used.len, used.id + 1);
      returned.push(used.id);
    }
  }
  assert.equal(queue.broken, false);
  assert.equal(returned.length, offered.length);
  assert.deepEqual([...returned].sort(), [...offered].sort());
});

Deno.test("PackedVirtqueue.publish() honours DISABLE, ENABLE, and DESC with EVENT_IDX", () => {
  const { driver, queue, chain } = setup({ features: { eventIndex: true } });
  const a = driver.alloc(8);
  const turn = () => {
    driver.addChain([{ addr: a, length: 8, writable: true }]);
    assert.ok(queue.pop(chain, 0));
    queue.pushUsed(chain.head, 8);
    const notified = queue.publish();
    driver.takeUsed();
    return notified;
  };
  assert.equal(turn(), true, "first publish notifies");
  driver.setDriverEvent(RING_EVENT_FLAGS_DISABLE);
  assert.equal(turn(), false);
  driver.setDriverEvent(RING_EVENT_FLAGS_ENABLE);
  assert.equal(turn(), true);
  // used so far: slots 0..2; ask for slot 5 of this lap
  driver.setDriverEvent(RING_EVENT_FLAGS_DESC, 5, 1);
  assert.equal(turn(), false, "slot 3");
  assert.equal(turn(), false, "slot 4");
  assert.equal(turn(), true, "slot 5 written");
  assert.equal(turn(), false, "slot 6: the event lies behind");
  // an event on the next lap (wrap counter 0)
  driver.setDriverEvent(RING_EVENT_FLAGS_DESC, 1, 0);
  for (let slot = 7; slot < 16; slot++) assert.equal(turn(), false, `slot ${slot}`);
  assert.equal(turn(), false, "slot 0 of lap 2");
  assert.equal(turn(), true, "slot 1 of lap 2");
});

Deno.test("PackedVirtqueue.publish() with DESC notifies when a multi-slot list's used descriptor covers the event slot", () => {
  const { driver, queue, chain } = setup({ features: { eventIndex: true } });
  const a = driver.alloc(8);
  driver.addChain([{ addr: a, length: 8, writable: true }]);
  assert.ok(queue.pop(chain, 0));
  queue.pushUsed(chain.head, 8);
  queue.publish();
  driver.setDriverEvent(RING_EVENT_FLAGS_DESC, 2, 1);
  driver.addChain([0, 1, 2].map(() => ({ addr: a, length: 8, writable: true }))); // slots 1..3
  assert.ok(queue.pop(chain, 0));
  queue.pushUsed(chain.head, 24);
  assert.equal(queue.publish(), true);
});

Deno.test("PackedVirtqueue.enableNotifications() writes DESC at the next slot with EVENT_IDX, else ENABLE; disable writes DISABLE", () => {
  for (const eventIndex of [false, true]) {
    const { driver, queue, chain } = setup({ features: { eventIndex } });
    queue.disableNotifications();
    assert.equal(driver.deviceEventFlags, RING_EVENT_FLAGS_DISABLE);
    const a = driver.alloc(8);
    for (let i = 0; i < 3; i++) driver.addChain([{ addr: a, length: 8, writable: false }]);
    assert.equal(queue.enableNotifications(), true, "buffers are waiting, never looked at");
    while (queue.pop(chain, 0)) queue.pushUsed(chain.head, 0);
    queue.publish();
    driver.takeUsed();
    assert.equal(queue.enableNotifications(), false);
    if (eventIndex) {
      assert.equal(driver.deviceEventFlags, RING_EVENT_FLAGS_DESC);
      assert.equal(driver.deviceEventOffWrap, 3 | 0x8000);
    } else {
      assert.equal(driver.deviceEventFlags, RING_EVENT_FLAGS_ENABLE);
    }
    driver.addChain([{ addr: a, length: 8, writable: false }]);
    assert.equal(driver.needsKick(), true, `EVENT_IDX ${eventIndex}: the driver kicks`);
    queue.disableNotifications();
    driver.addChain([{ addr: a, length: 8, writable: false }]);
    assert.equal(driver.needsKick(), false, "no kick while disabled");
  }
});

Deno.test("PackedVirtqueue.unpop() hands the same buffers out again", () => {
  const { driver, queue, chain } = setup();
  const a = driver.alloc(8);
  const first = driver.addChain([{ addr: a, length: 8, writable: true }]);
  const second = driver.addChain([0, 1].map(() => ({ addr: a, length: 8, writable: true })));
  assert.ok(queue.pop(chain, 0));
  assert.ok(queue.pop(chain, 0));
  queue.unpop(2);
  assert.deepEqual(decodePackedState(queue.vringBase).avail, { index: 0, wrap: 1 });
  assert.ok(queue.pop(chain, 0));
  assert.equal(chain.head, first);
  assert.ok(queue.pop(chain, 0));
  assert.equal(chain.head, second);
  queue.unpop(1);
  assert.ok(queue.pop(chain, 0));
  assert.equal(chain.head, second, "not taken for an ID already in use");
  assert.equal(queue.broken, false);
});

Deno.test("PackedVirtqueue resumes from its vringBase: positions and wrap counters", () => {
  const { driver, queue, chain } = setup({ size: 4 });
  const a = driver.alloc(8);
  for (let i = 0; i < 6; i++) {
    driver.addChain([{ addr: a, length: 8, writable: true }]);
    assert.ok(queue.pop(chain, 0));
    queue.pushUsed(chain.head, 8);
    queue.publish();
    driver.takeUsed();
  }
  const base = queue.vringBase;
  assert.deepEqual(decodePackedState(base), {
    avail: { index: 2, wrap: 0 },
    used: { index: 2, wrap: 0 },
  });
  const resumed = new PackedVirtqueue(driver.vring(base), { logger: new Logger() });
  const id = driver.addChain([{ addr: a, length: 8, writable: true }]);
  assert.ok(resumed.pop(chain, 0));
  assert.equal(chain.head, id);
  resumed.pushUsed(chain.head, 5);
  resumed.publish();
  assert.deepEqual(driver.takeUsed(), [{ id, len: 5 }]);
});

Deno.test("PackedVirtqueue constructor rejects sizes, areas and states that do not fit", () => {
  const driver = new PackedRingDriver({ size: 16 });
  const ring = driver.vring();
  assert.throws(() => new PackedVirtqueue({ ...ring, size: 0 }), /size 0/);
  assert.throws(() => new PackedVirtqueue({ ...ring, size: 32 }), /descriptor ring/);
  assert.throws(
    () => new PackedVirtqueue({ ...ring, usedRing: ring.usedRing.subarray(0, 2) }),
    /event suppression/,
  );
  assert.throws(() => new PackedVirtqueue(driver.vring(0x8000_8010)), /beyond/);
  // available 17 slots past used: more than the ring holds
  assert.throws(() => new PackedVirtqueue(driver.vring(0x8000_0001)), /more than the ring/);
});

// --- hostile input ------------------------------------------------------------------

Deno.test("PackedVirtqueue.pop() returns malformed buffers with length 0 and one log line", () => {
  const driver = new PackedRingDriver({ size: 16 });
  const a = driver.alloc(64);
  const cases: [string, { addr: number; len: number; id: number; flags: number }[], RegExp][] = [
    ["zero length", [{ addr: a, len: 0, id: 3, flags: 0 }], /length 0/],
    ["outside memory", [{ addr: 0x1000, len: 8, id: 3, flags: 0 }], /outside guest memory/],
    ["past 2^64", [{ addr: 2 ** 64 - 8, len: 16, id: 3, flags: 0 }], /outside guest memory/],
    [
      "readable after writable",
      [
        { addr: a, len: 8, id: 0, flags: PACKED_DESC_F_WRITE | PACKED_DESC_F_NEXT },
        { addr: a, len: 8, id: 3, flags: 0 },
      ],
      /readable after a device-writable/,
    ],
    [
      "indirect not negotiated",
      [{ addr: a, len: 32, id: 3, flags: PACKED_DESC_F_INDIRECT }],
      /VIRTIO_F_INDIRECT_DESC/,
    ],
    [
      "a bad element in the middle of a list",
      [
        { addr: a, len: 8, id: 0, flags: PACKED_DESC_F_NEXT },
        { addr: 0x1000, len: 8, id: 0, flags: PACKED_DESC_F_NEXT },
        { addr: a, len: 8, id: 3, flags: 0 },
      ],
      /element 1: address 0x1000\+8 is outside/,
    ],
  ];
  for (const [name, entries, pattern] of cases) {
    const { driver, queue, chain, lines } = setup();
    driver.placeRaw(
      entries.map((e) => ({ ...e, addr: e.addr === a ? driver.alloc(64) : e.addr })),
    );
    assert.equal(queue.pop(chain, 0), false, name);
    assert.equal(queue.broken, false, name);
    assert.equal(queue.malformedCount, 1, name);
    assert.match(lines[0], pattern, name);
    queue.publish();
    assert.deepEqual(driver.takeUsedRaw(), [{ id: 3, len: 0, slot: 0 }], name);
    assert.deepEqual(
      decodePackedState(queue.vringBase),
      {
        avail: { index: entries.length, wrap: 1 },
        used: { index: entries.length, wrap: 1 },
      },
      `${name}: all its slots skipped`,
    );
  }
});

Deno.test("PackedVirtqueue.pop() drops bad indirect tables: with NEXT, inside a list, nested, bad lengths", () => {
  const options = { features: { indirectDescriptors: true } };
  const table = (driver: PackedRingDriver, flags: number[]) => {
    const at = driver.alloc(flags.length * PACKED_DESC_SIZE);
    const data = driver.alloc(64);
    flags.forEach((f, i) => driver.writeDescriptorAt(at + i * PACKED_DESC_SIZE, data, 8, 0, f));
    return at;
  };
  const cases: [
    string,
    (d: PackedRingDriver) => { addr: number; len: number; id: number; flags: number }[],
    RegExp,
  ][] = [
    ["INDIRECT with NEXT", (d) => [
      { addr: table(d, [0]), len: 16, id: 0, flags: PACKED_DESC_F_INDIRECT | PACKED_DESC_F_NEXT },
      { addr: d.alloc(8), len: 8, id: 3, flags: 0 },
    ], /both INDIRECT and NEXT/],
    ["INDIRECT inside a list", (d) => [
      { addr: d.alloc(8), len: 8, id: 0, flags: PACKED_DESC_F_NEXT },
      { addr: table(d, [0]), len: 16, id: 3, flags: PACKED_DESC_F_INDIRECT },
    ], /indirect inside a list/],
    ["nested", (d) => [
      {
        addr: table(d, [0, PACKED_DESC_F_INDIRECT]),
        len: 32,
        id: 3,
        flags: PACKED_DESC_F_INDIRECT,
      },
    ], /entry 1 is itself indirect/],
    [
      "length 0",
      (d) => [{ addr: table(d, [0]), len: 0, id: 3, flags: PACKED_DESC_F_INDIRECT }],
      /length that is 0/,
    ],
    [
      "length 20",
      (d) => [{ addr: table(d, [0, 0]), len: 20, id: 3, flags: PACKED_DESC_F_INDIRECT }],
      /not a multiple/,
    ],
    ["longer than the ring", (d) => [
      { addr: d.alloc(17 * 16), len: 17 * 16, id: 3, flags: PACKED_DESC_F_INDIRECT },
    ], /over 256/],
    ["table outside memory", (d) => [
      { addr: d.base + d.bytes.length - 16, len: 32, id: 3, flags: PACKED_DESC_F_INDIRECT },
    ], /outside guest memory/],
    ["readable after writable in the table", (d) => [
      { addr: table(d, [PACKED_DESC_F_WRITE, 0]), len: 32, id: 3, flags: PACKED_DESC_F_INDIRECT },
    ], /readable after/],
  ];
  for (const [name, build, pattern] of cases) {
    const { driver, queue, chain, lines } = setup(options);
    driver.placeRaw(build(driver));
    assert.equal(queue.pop(chain, 0), false, name);
    assert.equal(queue.broken, false, name);
    assert.match(lines[0] ?? "", pattern, name);
    queue.publish();
    assert.deepEqual(driver.takeUsedRaw().map((u) => [u.id, u.len]), [[3, 0]], name);
  }
});

Deno.test("PackedVirtqueue.pop() ignores NEXT and IDs inside indirect tables (only WRITE is valid there)", () => {
  const { driver, queue, chain } = setup({ features: { indirectDescriptors: true } });
  const at = driver.alloc(32);
  driver.writeDescriptorAt(at, driver.alloc(8), 8, 999, PACKED_DESC_F_NEXT);
  driver.writeDescriptorAt(
    at + 16,
    driver.alloc(8),
    8,
    999,
    PACKED_DESC_F_WRITE | PACKED_DESC_F_NEXT,
  );
  driver.placeRaw([{ addr: at, len: 32, id: 5, flags: PACKED_DESC_F_INDIRECT }]);
  assert.ok(queue.pop(chain, 0));
  assert.equal(chain.head, 5);
  assert.equal(chain.count, 2);
  assert.equal(chain.readableBytes, 8);
  assert.equal(chain.writableBytes, 8);
});

Deno.test("PackedVirtqueue.pop() marks the queue broken for rings no driver could write", () => {
  const cases: [
    string,
    (d: PackedRingDriver, q: PackedVirtqueue, c: DescriptorChain) => void,
    RegExp,
  ][] = [
    [
      "Buffer ID ≥ size",
      (d) => d.placeRaw([{ addr: d.alloc(8), len: 8, id: 16, flags: 0 }]),
      /Buffer ID 16 ≥ queue size 16/,
    ],
    ["Buffer ID in use", (d, q, c) => {
      d.placeRaw([{ addr: d.alloc(8), len: 8, id: 4, flags: 0 }]);
      assert.ok(q.pop(c, 0));
      d.placeRaw([{ addr: d.alloc(8), len: 8, id: 4, flags: 0 }]);
    }, /Buffer ID 4, which is already in use/],
    ["a list with no end within the ring", (d) => {
      d.placeRaw(
        Array.from(
          { length: 16 },
          () => ({ addr: d.alloc(8), len: 8, id: 1, flags: PACKED_DESC_F_NEXT }),
        ),
      );
    }, /runs past the 16 slots/],
    ["a list that goes on into a slot not available", (d) => {
      d.placeRaw([{ addr: d.alloc(8), len: 8, id: 1, flags: PACKED_DESC_F_NEXT }]);
    }, /goes on into slot 1, which is not available/],
    ["a slot made available again before it was returned", (d, q, c) => {
      for (let i = 0; i < 16; i++) d.placeRaw([{ addr: d.alloc(8), len: 8, id: i, flags: 0 }]);
      for (let i = 0; i < 16; i++) assert.ok(q.pop(c, 0));
      d.placeRaw([{ addr: d.alloc(8), len: 8, id: 0, flags: 0 }]); // the driver never saw slot 0 used
    }, /slot 0 was made available again/],
  ];
  for (const [name, build, pattern] of cases) {
    const { driver, queue, chain, lines } = setup();
    build(driver, queue, chain);
    assert.equal(queue.pop(chain, 0), false, name);
    assert.equal(queue.broken, true, name);
    assert.match(lines.join("\n"), pattern, name);
    assert.equal(queue.hasAvailable(), false, `${name}: a broken queue stays idle`);
    assert.equal(queue.availableCount(), 0);
  }
});

Deno.test("PackedVirtqueue breaks at MALFORMED_RUN_LIMIT malformed buffers in a row; a used one resets the run", () => {
  const { driver, queue, chain, lines } = setup({ size: 256 });
  const bad = () =>
    driver.placeRaw([{ addr: 0x1000, len: 8, id: driver.freeSlots % 256, flags: 0 }]);
  for (let i = 0; i < MALFORMED_RUN_LIMIT - 1; i++) bad();
  assert.equal(queue.pop(chain, 0), false);
  assert.equal(queue.broken, false);
  driver.placeRaw([{ addr: driver.alloc(8), len: 8, id: 200, flags: 0 }]);
  assert.ok(queue.pop(chain, 0));
  queue.pushUsed(chain.head, 0);
  for (let i = 0; i < MALFORMED_RUN_LIMIT - 1; i++) bad();
  assert.equal(queue.pop(chain, 0), false);
  assert.equal(queue.broken, false, "the used buffer reset the run");
  bad();
  assert.equal(queue.pop(chain, 0), false);
  assert.equal(queue.broken, true);
  assert.equal(lines.filter((l) => /dropping buffer/.test(l)).length, 1, "one rate-limited line");
});

Deno.test("PackedVirtqueue.pop() drops a large indirect table shared by two buffers made available together", () => {
  const { driver, queue, chain, lines } = setup({
    size: 64,
    features: { indirectDescriptors: true },
  });
  const entries = SHARED_TABLE_CHECK_MIN_ENTRIES + 2; // both tables below are checked
  const at = driver.alloc(entries * PACKED_DESC_SIZE);
  const data = driver.alloc(8);
  for (let i = 0; i < entries; i++) driver.writeDescriptorAt(at + i * 16, data, 8, 0, 0);
  driver.placeRaw([{ addr: at, len: entries * 16, id: 1, flags: PACKED_DESC_F_INDIRECT }]);
  driver.placeRaw([{
    addr: at + 16,
    len: (entries - 1) * 16,
    id: 2,
    flags: PACKED_DESC_F_INDIRECT,
  }]);
  assert.ok(queue.pop(chain, 0));
  assert.equal(chain.head, 1);
  assert.equal(queue.pop(chain, 0), false);
  assert.match(lines[0], /overlaps another buffer's table/);
  // once returned, the table may be used again
  queue.pushUsed(1, 0);
  queue.publish();
  driver.placeRaw([{ addr: at, len: entries * 16, id: 3, flags: PACKED_DESC_F_INDIRECT }]);
  assert.ok(queue.pop(chain, 0));
  assert.equal(chain.head, 3);
});

Deno.test("PackedVirtqueue.pop() reads each descriptor once: a rewrite after the check is not seen", () => {
  const { driver, queue, chain } = setup();
  const good = driver.alloc(64);
  driver.placeRaw([{ addr: good, len: 64, id: 2, flags: 0 }]);
  assert.ok(queue.pop(chain, 0));
  driver.writeDescriptorAt(driver.slotAddress(0), 0x1000, 1 << 20, 2, 0);
  assert.equal(chain.buffers[0].length, 64, "the view is of what was checked");
});

Deno.test("PackedVirtqueue.pushUsed() refuses a Buffer ID that is not in use", () => {
  const { queue } = setup();
  assert.throws(() => queue.pushUsed(3, 0), /not in use/);
  assert.throws(() => queue.pushUsed(99, 0), /not in use/);
});

Deno.test("PackedVirtqueue reports every ring and device-area write to its write log, and none without one", () => {
  for (const eventIndex of [false, true]) {
    const { driver, queue, chain } = setup({ features: { eventIndex } });
    const record = new WriteRecord([{ base: driver.base, bytes: driver.bytes }]);
    queue.setWriteLog(record.ringLog(driver.deviceAddr));
    const a = driver.alloc(64);
    for (let lap = 0; lap < 3; lap++) {
      for (let i = 0; i < 5; i++) driver.addChain([{ addr: a, length: 64, writable: true }]);
      driver.addChain([0, 1].map(() => ({ addr: a, length: 8, writable: true })));
      record.snapshot(); // what the driver wrote is not the device's
      while (queue.pop(chain, 0)) {
        queue.pushUsed(chain.head, 10);
        chain.release();
      }
      queue.rewriteUsedLength(1, 0);
      queue.publish();
      queue.disableNotifications();
      queue.enableNotifications();
      assert.deepEqual(record.unreported(), [], `EVENT_IDX ${eventIndex} lap ${lap}`);
      driver.takeUsed();
    }
    const ringEnd = driver.descAddr + 16 * 16;
    assert.ok(
      record.ranges.every(([start, end]) =>
        (start >= driver.descAddr && end <= ringEnd) ||
        (start >= driver.deviceAddr && end <= driver.deviceAddr + 4)
      ),
      "only ring and device-area bytes",
    );
    assertNothingReportedWithLogOff(queue, chain, record, () => {
      driver.addChain([{ addr: a, length: 64, writable: true }]);
    });
  }
});
