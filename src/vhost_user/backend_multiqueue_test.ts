import assert from "node:assert/strict";
import {
  BackendRig,
  dirtyPages,
  RIG_FEATURES,
  RING_SIZE,
  ringAreas,
  u64Reply,
  USER_ADDRESS,
  userRingAreas,
  wholeMemoryTable,
} from "../../tests/support/vhost_user/backend_doubles.ts";
import { encodeRequest } from "../../tests/support/vhost_user/request_encoder.ts";
import {
  featureBit,
  OFFERED_FEATURES,
  OFFERED_PROTOCOL_FEATURES,
  ProtocolFeature,
  Request,
  VHOST_F_LOG_ALL,
  VHOST_VRING_F_LOG,
  VRING_COUNT,
} from "./protocol.ts";
import { VIRTIO_NET_F_MQ } from "../tap/net_features.ts";
import { MAX_QUEUE_PAIRS } from "../tap/vring_datapath.ts";
import { logPayload, u64Payload, vringAddrPayload, vringStatePayload } from "./payload_codec.ts";

/** Room for 16 pairs of 256-entry rings (32 × 0x8000) plus buffers. */
const MEMORY_SIZE = 0x11_0000;
/** The backend tests' features and multiqueue. */
const FEATURES = RIG_FEATURES | featureBit(VIRTIO_NET_F_MQ);

/** Sets ring `i` up as QEMU's vhost_dev_start does: size, base, addresses, kick, call. */
function setUpRing(rig: BackendRig, i: number, base = 0): { kick: number; call: number } {
  rig.send(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(i, RING_SIZE)));
  rig.send(encodeRequest(Request.SET_VRING_BASE, vringStatePayload(i, base)));
  rig.send(encodeRequest(Request.SET_VRING_ADDR, vringAddrPayload(i, userRingAreas(i))));
  const kick = rig.fds.create();
  rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(i)), [kick]);
  const call = rig.fds.create();
  rig.send(encodeRequest(Request.SET_VRING_CALL, u64Payload(i)), [call]);
  return { kick, call };
}

/**
 * QEMU's order for `-netdev vhost-user,queues=N`: one vhost_dev per queue pair on the
 * one connection; per-device requests (SET_OWNER, the memory table, GET_QUEUE_NUM)
 * once, SET_FEATURES and the ring set-up per pair; then the pairs the guest uses
 * are enabled ring by ring.
 */
function negotiateQueues(pairs: number, enabledPairs = pairs) {
  const rig = new BackendRig();
  rig.send(encodeRequest(Request.GET_FEATURES));
  rig.send(encodeRequest(Request.GET_PROTOCOL_FEATURES));
  rig.send(encodeRequest(Request.SET_PROTOCOL_FEATURES, u64Payload(OFFERED_PROTOCOL_FEATURES)));
  const [queues] = rig.send(encodeRequest(Request.GET_QUEUE_NUM));
  assert.ok(BigInt(pairs) <= u64Reply(queues), "QEMU refuses more pairs than GET_QUEUE_NUM");
  rig.send(encodeRequest(Request.SET_OWNER));
  const memory = rig.fds.memfd(MEMORY_SIZE);
  const kicks: number[] = [];
  const calls: number[] = [];
  for (let pair = 0; pair < pairs; pair++) {
    rig.send(encodeRequest(Request.SET_FEATURES, u64Payload(FEATURES)));
    if (pair === 0) {
      rig.send(encodeRequest(Request.SET_MEM_TABLE, wholeMemoryTable(MEMORY_SIZE)), [memory.fd]);
    }
    for (const i of [2 * pair, 2 * pair + 1]) {
      const { kick, call } = setUpRing(rig, i, 100 + i);
      kicks[i] = kick;
      calls[i] = call;
    }
  }
  for (let i = 0; i < 2 * enabledPairs; i++) {
    rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(i, 1)));
  }
  assert.equal(rig.error, null, `negotiation failed: ${rig.error?.message}`);
  return { rig, memory, kicks, calls };
}

function startedRings(rig: BackendRig): number[] {
  return [...rig.datapath.rings.keys()].sort((a, b) => a - b);
}

Deno.test("`VhostUserBackend` offers VIRTIO_NET_F_MQ and VHOST_USER_PROTOCOL_F_MQ and answers GET_QUEUE_NUM with 16 queue pairs", () => {
  const rig = new BackendRig();
  const [features] = rig.send(encodeRequest(Request.GET_FEATURES));
  assert.notEqual(u64Reply(features) & featureBit(VIRTIO_NET_F_MQ), 0n);
  assert.equal(u64Reply(features), OFFERED_FEATURES);
  const [protocol] = rig.send(encodeRequest(Request.GET_PROTOCOL_FEATURES));
  assert.notEqual(u64Reply(protocol) & featureBit(ProtocolFeature.MQ), 0n);
  const [queues] = rig.send(encodeRequest(Request.GET_QUEUE_NUM));
  assert.equal(u64Reply(queues), 16n);
  assert.equal(MAX_QUEUE_PAIRS, 16);
  assert.equal(VRING_COUNT, 32);
  assert.equal(rig.error, null);
});

Deno.test("`VhostUserBackend` starts every ring of 4 queue pairs set up as QEMU does, each at its base", () => {
  const { rig } = negotiateQueues(4);
  assert.deepEqual(startedRings(rig), [0, 1, 2, 3, 4, 5, 6, 7]);
  for (let i = 0; i < 8; i++) {
    const started = rig.datapath.rings.get(i)!;
    assert.equal(started.lastAvailIndex, 100 + i);
    assert.equal(started.usedRing.byteOffset, ringAreas(i).used, `ring ${i} has its own used ring`);
  }
});

Deno.test("`VhostUserBackend` with 16 queue pairs starts all 32 rings", () => {
  const { rig } = negotiateQueues(16);
  assert.equal(rig.datapath.rings.size, 32);
  rig.backend.shutdown();
  assert.equal(rig.datapath.rings.size, 0);
  assert.equal(rig.watchers.size, 0);
  assert.equal(rig.fds.mappings, 0);
});

Deno.test("`VhostUserBackend` leaves the pairs QEMU does not enable stopped (queues=4, guest uses 2)", () => {
  const { rig, kicks } = negotiateQueues(4, 2);
  assert.deepEqual(startedRings(rig), [0, 1, 2, 3]);
  assert.equal(rig.watchers.has(kicks[5]), false, "a disabled ring's kick is not watched");
  // the guest raises its queue count: QEMU enables pair 2's rings
  rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(4, 1)));
  rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(5, 1)));
  assert.deepEqual(startedRings(rig), [0, 1, 2, 3, 4, 5]);
  assert.equal(rig.datapath.rings.get(5)!.lastAvailIndex, 105);
  // and lowers it again: pair 2's RX ring stops; its TX ring, started but disabled, is
  // still served (its frames discarded: vhost-user.rst "Ring states"); the others run on
  let events = rig.datapath.events.length;
  rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(4, 0)));
  rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(5, 0)));
  assert.deepEqual(rig.datapath.events.slice(events), [
    { call: "stop", index: 4 },
    { call: "transmit-enabled", index: 5, enabled: false },
  ]);
  assert.deepEqual(startedRings(rig), [0, 1, 2, 3, 5]);
  assert.equal(rig.watchers.has(kicks[5]), true, "the disabled TX ring's kicks are served");
  // a second disable changes nothing; enabled again, the TX ring delivers again
  events = rig.datapath.events.length;
  rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(5, 0)));
  rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(4, 1)));
  rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(5, 1)));
  assert.deepEqual(
    rig.datapath.events.slice(events).map((e) => [e.call, e.index]),
    [["start", 4], ["transmit-enabled", 5]],
  );
  assert.deepEqual(rig.datapath.events.at(-1), {
    call: "transmit-enabled",
    index: 5,
    enabled: true,
  });
  // a new memory table restarts every ring: the disabled TX ring runs on, discarding
  rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(5, 0)));
  events = rig.datapath.events.length;
  const memory = rig.fds.memfd(MEMORY_SIZE);
  rig.send(encodeRequest(Request.SET_MEM_TABLE, wholeMemoryTable(MEMORY_SIZE)), [memory.fd]);
  assert.deepEqual(startedRings(rig), [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(
    rig.datapath.events.slice(events).filter((e) => e.index === 5),
    [
      { call: "stop", index: 5 },
      { call: "start", index: 5, size: RING_SIZE, lastAvailIndex: 105, now: rig.now },
      { call: "transmit-enabled", index: 5, enabled: false },
    ],
  );
  // GET_VRING_BASE stops a disabled TX ring like any other
  rig.send(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(5, 0)));
  assert.deepEqual(startedRings(rig), [0, 1, 2, 3, 4]);
  assert.equal(rig.watchers.has(kicks[5]), false);
  assert.equal(rig.error, null);
});

Deno.test("`VhostUserBackend` SET_FEATURES once per pair (QEMU's vhost_dev per pair) keeps the started pairs running", () => {
  const { rig } = negotiateQueues(2);
  const events = rig.datapath.events.length;
  // what QEMU's second vhost_dev sends again while pair 0 runs: same features
  rig.send(encodeRequest(Request.SET_FEATURES, u64Payload(FEATURES)));
  assert.deepEqual(rig.datapath.events.slice(events), []);
  assert.equal(rig.error, null);
});

Deno.test("`VhostUserBackend` tears one pair down (GET_VRING_BASE) while the others run, and restarts it", () => {
  const { rig, kicks } = negotiateQueues(3);
  rig.datapath.advance = 7;
  const events = rig.datapath.events.length;
  const bases: number[] = [];
  for (const i of [2, 3]) {
    const [reply] = rig.send(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(i, 0)));
    assert.equal(reply.payload.getUint32(0, true), i);
    bases.push(reply.payload.getUint32(4, true));
  }
  assert.deepEqual(bases, [109, 110]);
  assert.deepEqual(
    rig.datapath.events.slice(events).map((e) => [e.call, e.index]),
    [["stop", 2], ["stop", 3]],
  );
  assert.deepEqual(startedRings(rig), [0, 1, 4, 5]);
  assert.equal(rig.watchers.has(kicks[2]), false);
  // the rings still running still get their kicks
  rig.kick(kicks[5], 4242);
  assert.deepEqual(rig.datapath.events.at(-1), { call: "kick", index: 5, now: 4242 });
  // QEMU brings the pair back at the bases it was given
  setUpRing(rig, 2, bases[0]);
  setUpRing(rig, 3, bases[1]);
  assert.deepEqual(startedRings(rig), [0, 1, 2, 3, 4, 5]);
  assert.equal(rig.datapath.rings.get(3)!.lastAvailIndex, 110);
  assert.equal(rig.error, null);
});

// --- hostile front-ends -------------------------------------------------------------

interface HostileCase {
  name: string;
  send: (rig: BackendRig) => void;
  error: RegExp;
}

const hostileCases: HostileCase[] = [
  {
    name: "SET_VRING_NUM for ring 32 (pairs are 0..15)",
    send: (rig) => rig.send(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(32, 256))),
    error: /SET_VRING_NUM: queue index 32 is not below 32 \(16 queue pairs\)/,
  },
  {
    name: "SET_VRING_ENABLE for ring 2^32-1",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(0xffffffff, 1))),
    error: /SET_VRING_ENABLE: queue index 4294967295 is not below 32/,
  },
  {
    name: "SET_VRING_KICK for ring 255 (the largest the fd message can name)",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(255)), [rig.fds.create()]),
    error: /SET_VRING_KICK: queue index 255 is not below 32/,
  },
  {
    name: "SET_VRING_ADDR for ring 40",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_VRING_ADDR, vringAddrPayload(40, userRingAreas(0)))),
    error: /SET_VRING_ADDR: queue index 40 is not below 32/,
  },
  {
    name: "GET_VRING_BASE for ring 33",
    send: (rig) => rig.send(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(33, 0))),
    error: /GET_VRING_BASE: queue index 33 is not below 32/,
  },
  {
    name: "a ring of an unused pair placed outside guest memory",
    send: (rig) => {
      rig.send(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(9, RING_SIZE)));
      rig.send(
        encodeRequest(
          Request.SET_VRING_ADDR,
          vringAddrPayload(9, {
            descriptor: USER_ADDRESS + MEMORY_SIZE,
            used: USER_ADDRESS,
            available: USER_ADDRESS,
          }),
        ),
      );
    },
    error: /SET_VRING_ADDR: ring 9 descriptor table .* is outside mapped memory/,
  },
];

for (const bad of hostileCases) {
  Deno.test(`\`VhostUserBackend\` with 4 pairs running rejects ${bad.name}: one clear error, everything released`, () => {
    const { rig } = negotiateQueues(4);
    bad.send(rig);
    assert.ok(rig.protocolError, `expected a protocol error, got ${rig.error}`);
    assert.match(rig.error!.message, bad.error);
    assert.equal(rig.datapath.rings.size, 0, "every ring of every pair stopped");
    assert.equal(rig.watchers.size, 0, "no kick fd watched");
    assert.equal(rig.fds.mappings, 0, "memory unmapped");
    assert.equal(rig.fds.open.size, 0, `fds left open: ${[...rig.fds.open]}`);
  });
}

Deno.test("`VhostUserBackend` enabling rings that were never set up starts nothing and keeps the session", () => {
  const { rig } = negotiateQueues(2);
  // every ring of the unused pairs enabled, some half set up (a size, a kick fd alone)
  for (let i = 4; i < VRING_COUNT; i++) {
    rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(i, 1)));
  }
  rig.send(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(6, RING_SIZE)));
  const lonelyKick = rig.fds.create();
  rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(7)), [lonelyKick]);
  rig.send(encodeRequest(Request.SET_VRING_CALL, u64Payload(31)), [rig.fds.create()]);
  assert.equal(rig.error, null);
  assert.deepEqual(startedRings(rig), [0, 1, 2, 3]);
  assert.equal(rig.watchers.has(lonelyKick), false, "a ring without addresses is not watched");
  // stopping a ring that never ran answers its base, 0, and changes nothing else
  const [reply] = rig.send(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(12, 0)));
  assert.deepEqual([reply.payload.getUint32(0, true), reply.payload.getUint32(4, true)], [12, 0]);
  assert.deepEqual(startedRings(rig), [0, 1, 2, 3]);
  assert.equal(rig.error, null);
  rig.backend.shutdown();
  assert.equal(rig.fds.open.size, 0, "the half-set-up rings' fds are closed too");
});

// --- migration ----------------------------------------------------------------------

Deno.test("`VhostUserBackend` logs the used ring of every ring of every pair at its own log address during a migration", () => {
  const { rig } = negotiateQueues(3);
  const log = rig.fds.memfd(4096);
  // QEMU's vhost_dev per pair each sends SET_LOG_BASE and SET_FEATURES with LOG_ALL
  for (let pair = 0; pair < 3; pair++) {
    const [reply] = rig.send(encodeRequest(Request.SET_LOG_BASE, logPayload(64)), [
      rig.fds.dup(log.fd),
    ]);
    assert.equal(u64Reply(reply), 0n);
    rig.send(
      encodeRequest(Request.SET_FEATURES, u64Payload(FEATURES | featureBit(VHOST_F_LOG_ALL))),
    );
  }
  for (let i = 0; i < 6; i++) {
    rig.send(
      encodeRequest(
        Request.SET_VRING_ADDR,
        vringAddrPayload(i, userRingAreas(i), 1 << VHOST_VRING_F_LOG, ringAreas(i).used),
      ),
    );
  }
  assert.equal(rig.error, null);
  assert.deepEqual(startedRings(rig), [0, 1, 2, 3, 4, 5], "rings kept running");
  for (let i = 0; i < 6; i++) rig.datapath.writeLogs.get(i)!.markUsed(0, 4);
  assert.deepEqual(
    dirtyPages(log.bytes),
    [0, 1, 2, 3, 4, 5].map((i) => ringAreas(i).used / 4096),
    "each ring's used area, none missed",
  );
  // the pair torn down at the end (GET_VRING_BASE per ring) leaves no log behind
  for (let i = 0; i < 6; i++) {
    rig.send(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(i, 0)));
  }
  assert.equal(rig.datapath.rings.size, 0);
  assert.equal(rig.error, null);
});
