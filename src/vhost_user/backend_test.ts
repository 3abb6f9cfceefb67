import assert from "node:assert/strict";
import {
  BackendRig,
  type DecodedReply,
  dirtyPages,
  FAKE_PIPE,
  FAKE_SEMAPHORE_EVENTFD,
  FAKE_SOCKET,
  FAKE_UNVERIFIED,
  RIG_FEATURES as FEATURES,
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
  SEGMENTATION_FEATURES as SEGMENTATION,
  VHOST_F_LOG_ALL,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_VRING_F_LOG,
  VIRTIO_F_RING_PACKED,
  VRING_FD_NOFD,
} from "./protocol.ts";
import { InvalidStateError } from "./backend.ts";
import {
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_MRG_RXBUF,
} from "../tap/net_features.ts";
import {
  logPayload,
  memTablePayload,
  singleRegionPayload,
  u64Payload,
  vringAddrPayload,
  vringStatePayload,
} from "./payload_codec.ts";

const MEMORY_SIZE = 0x20000;

interface Setup {
  replyAck?: boolean;
  protocolFeatures?: boolean;
  enable?: boolean;
  /** Virtio features to ack (default FEATURES). */
  features?: bigint;
}

/** The vring address flags word asking for used-ring logging. */
const VRING_FLAGS_LOG = 1 << VHOST_VRING_F_LOG;

/** A fake 4096-byte file to share as the dirty log. */
function logFile(rig: BackendRig): number {
  return rig.fds.memfd(4096).fd;
}

/** A rig owned, with VIRTIO_F_RING_PACKED among its features and its memory table set. */
function packedRig() {
  const rig = new BackendRig();
  rig.send(encodeRequest(Request.SET_OWNER));
  rig.send(
    encodeRequest(Request.SET_FEATURES, u64Payload(FEATURES | featureBit(VIRTIO_F_RING_PACKED))),
  );
  const memory = rig.fds.memfd(MEMORY_SIZE);
  rig.send(encodeRequest(Request.SET_MEM_TABLE, wholeMemoryTable(MEMORY_SIZE)), [memory.fd]);
  return { rig, memory };
}

/** QEMU 7.2's order for virtio-net; returns the rig and the fds it handed over. */
function negotiate(options: Setup = {}) {
  const rig = new BackendRig();
  const useProtocol = options.protocolFeatures ?? true;
  const [features] = rig.send(encodeRequest(Request.GET_FEATURES));
  assert.equal(u64Reply(features), OFFERED_FEATURES);
  if (useProtocol) {
    const [protocol] = rig.send(encodeRequest(Request.GET_PROTOCOL_FEATURES));
    assert.equal(u64Reply(protocol), OFFERED_PROTOCOL_FEATURES);
    const acked = options.replyAck === false
      ? OFFERED_PROTOCOL_FEATURES & ~featureBit(ProtocolFeature.REPLY_ACK)
      : OFFERED_PROTOCOL_FEATURES;
    rig.send(encodeRequest(Request.SET_PROTOCOL_FEATURES, u64Payload(acked)));
    const [slots] = rig.send(encodeRequest(Request.GET_MAX_MEM_SLOTS));
    assert.equal(u64Reply(slots), 32n);
  }
  rig.send(encodeRequest(Request.SET_OWNER));
  const ack = useProtocol && options.replyAck !== false;
  const expectAck = (replies: DecodedReply[]) => {
    if (!ack) return assert.equal(replies.length, 0);
    assert.equal(replies.length, 1);
    assert.equal(u64Reply(replies[0]), 0n, "REPLY_ACK success");
  };
  if (useProtocol) {
    for (const i of [0, 1]) {
      rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(i, 0)));
    }
  }
  const wanted = options.features ?? FEATURES;
  const acked = useProtocol ? wanted : wanted & ~featureBit(VHOST_USER_F_PROTOCOL_FEATURES);
  expectAck(rig.send(encodeRequest(Request.SET_FEATURES, u64Payload(acked), { needReply: ack })));
  const memory = rig.fds.memfd(MEMORY_SIZE);
  expectAck(rig.send(
    encodeRequest(
      Request.SET_MEM_TABLE,
      wholeMemoryTable(MEMORY_SIZE),
      { needReply: ack },
    ),
    [memory.fd],
  ));
  const kicks: number[] = [];
  const calls: number[] = [];
  for (const i of [0, 1]) {
    rig.send(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(i, RING_SIZE)));
    rig.send(encodeRequest(Request.SET_VRING_BASE, vringStatePayload(i, 10 + i)));
    expectAck(rig.send(
      encodeRequest(Request.SET_VRING_ADDR, vringAddrPayload(i, userRingAreas(i)), {
        needReply: ack,
      }),
    ));
    kicks.push(rig.fds.create());
    rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(i)), [kicks[i]]);
    calls.push(rig.fds.create());
    rig.send(encodeRequest(Request.SET_VRING_CALL, u64Payload(i)), [calls[i]]);
  }
  if (useProtocol && options.enable !== false) {
    for (const i of [0, 1]) {
      rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(i, 1)));
    }
  }
  assert.equal(rig.error, null, `negotiation failed: ${rig.error?.message}`);
  return { rig, memory, kicks, calls };
}

/** The segmentation features of rings negotiated without them, and no MTU set. */
const NO_SEGMENTATION = {
  hostTso4: false,
  hostTso6: false,
  hostEcn: false,
  guestTso4: false,
  guestTso6: false,
  mtu: 0,
} as const;

/** After an error: connection state fully released. */
function assertReleased(rig: BackendRig) {
  assert.equal(
    rig.fds.open.size === 0 || [...rig.fds.open].every((fd) => !rig.notifiers.has(fd)),
    true,
  );
  assert.equal(rig.fds.mappings, 0, "every mapping released");
  assert.equal(rig.datapath.rings.size, 0, "every ring stopped");
  assert.equal(rig.watchers.size, 0, "no kick fd watched");
}

Deno.test("`VhostUserBackend` completes QEMU 7.2's virtio-net negotiation with REPLY_ACK and starts both rings", () => {
  const { rig, memory } = negotiate();
  assert.deepEqual(rig.datapath.events.map((e) => [e.call, e.index]), [["start", 0], ["start", 1]]);
  const rx = rig.datapath.rings.get(0)!;
  assert.equal(rx.size, RING_SIZE);
  assert.equal(rx.lastAvailIndex, 10);
  assert.equal(rx.descriptorTable.length, 16 * RING_SIZE);
  assert.equal(rx.availableRing.length, 6 + 2 * RING_SIZE);
  assert.equal(rx.usedRing.length, 6 + 8 * RING_SIZE);
  assert.deepEqual(rx.features, {
    eventIndex: true,
    indirectDescriptors: false,
    mergeableRxBuffers: true,
    checksumOffload: false,
    guestChecksum: false,
    packedRing: false,
    ...NO_SEGMENTATION,
  });
  // the views are the shared memory itself
  rx.usedRing[2] = 0x5a;
  assert.equal(memory.bytes[ringAreas(0).used + 2], 0x5a);
  memory.bytes[0x100] = 0x77;
  assert.equal(rx.memory.view(0x100, 0, 1)?.[0], 0x77);
});

Deno.test("`VhostUserBackend` completes negotiation without REPLY_ACK and sends no acks", () => {
  const { rig } = negotiate({ replyAck: false });
  assert.equal(rig.datapath.rings.size, 2);
});

Deno.test("`VhostUserBackend` starts rings enabled when protocol features were not negotiated", () => {
  const { rig } = negotiate({ protocolFeatures: false });
  assert.equal(rig.datapath.rings.size, 2);
});

Deno.test("`VhostUserBackend` keeps rings stopped until SET_VRING_ENABLE 1 with protocol features; disabled again, RX stops and TX is served discarding", () => {
  const { rig } = negotiate({ enable: false });
  assert.equal(rig.datapath.rings.size, 0);
  rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(1, 1)));
  assert.deepEqual([...rig.datapath.rings.keys()], [1]);
  rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(0, 1)));
  assert.deepEqual([...rig.datapath.rings.keys()].sort(), [0, 1]);
  rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(0, 0)));
  rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(1, 0)));
  assert.deepEqual([...rig.datapath.rings.keys()], [1], "the TX ring still runs");
  assert.deepEqual(rig.datapath.events.at(-1), {
    call: "transmit-enabled",
    index: 1,
    enabled: false,
  });
});

Deno.test("`VhostUserBackend` passes the loop's timestamp to kick() without reading the kick fd, and empties it when the ring stops", () => {
  const { rig, kicks } = negotiate();
  rig.kick(kicks[1], 5555);
  rig.kick(kicks[1], 5556);
  assert.deepEqual(rig.datapath.events.at(-1), { call: "kick", index: 1, now: 5556 });
  assert.equal(rig.notifiers.get(kicks[1])!.drains, 0);
  rig.send(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(1, 0)));
  assert.equal(rig.notifiers.get(kicks[1])!.drains, 1);
});

Deno.test("`StartedVring.notifyGuest()` signals the current call fd, also after SET_VRING_CALL replaced it", () => {
  const { rig, calls } = negotiate();
  const tx = rig.datapath.rings.get(1)!;
  tx.notifyGuest();
  assert.equal(rig.notifiers.get(calls[1])!.signals, 1);
  const newCall = rig.fds.create();
  rig.send(encodeRequest(Request.SET_VRING_CALL, u64Payload(1)), [newCall]);
  assert.equal(rig.notifiers.get(calls[1])!.closed, true);
  assert.equal(
    rig.notifiers.get(newCall)!.signals,
    1,
    "a running ring signals its new call fd once",
  );
  tx.notifyGuest();
  assert.equal(rig.notifiers.get(newCall)!.signals, 2);
  rig.send(encodeRequest(Request.SET_VRING_CALL, u64Payload(1 | VRING_FD_NOFD)));
  tx.notifyGuest(); // no call fd: nothing to signal, no error
  assert.equal(rig.error, null);
});

Deno.test("`VhostUserBackend` GET_VRING_BASE stops the ring and returns the datapath's next index", () => {
  const { rig, kicks } = negotiate();
  rig.datapath.advance = 5;
  const [reply] = rig.send(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(0, 0)));
  assert.equal(reply.request, Request.GET_VRING_BASE);
  assert.equal(reply.payload.getUint32(0, true), 0);
  assert.equal(reply.payload.getUint32(4, true), 15);
  assert.equal(rig.datapath.rings.has(0), false);
  assert.equal(rig.watchers.has(kicks[0]), false, "kick fd no longer watched");
  assert.equal(rig.notifiers.get(kicks[0])!.closed, true);
  // restart as QEMU does: new kick → ring starts from the returned base
  rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(0)), [rig.fds.create()]);
  assert.deepEqual(rig.datapath.events.at(-1), {
    call: "start",
    index: 0,
    size: RING_SIZE,
    lastAvailIndex: 15,
    now: 1000,
  });
});

Deno.test("`VhostUserBackend` SET_MEM_TABLE replacement stops rings before unmapping, then restarts them", () => {
  const { rig } = negotiate();
  const mappingsSeen: number[] = [];
  const original = rig.datapath.stopVring.bind(rig.datapath);
  rig.datapath.stopVring = (index) => {
    mappingsSeen.push(rig.fds.mappings);
    return original(index);
  };
  const second = rig.fds.memfd(MEMORY_SIZE);
  rig.send(encodeRequest(Request.SET_MEM_TABLE, wholeMemoryTable(MEMORY_SIZE)), [second.fd]);
  assert.equal(rig.error, null);
  assert.deepEqual(mappingsSeen, [1, 1], "rings stopped while the old mapping still existed");
  assert.equal(rig.fds.mappings, 1, "old mapping released");
  assert.equal(rig.fds.open.has(second.fd), false, "region fd closed after mapping");
  assert.equal(rig.datapath.rings.size, 2, "rings restarted over the new memory");
  rig.datapath.rings.get(0)!.usedRing[0] = 1;
  assert.equal(second.bytes[ringAreas(0).used], 1);
});

Deno.test("`VhostUserBackend` ADD_MEM_REG / REM_MEM_REG manage regions one by one", () => {
  const { rig } = negotiate();
  const extra = rig.fds.memfd(0x4000);
  const region = {
    guestAddress: 0x100000,
    size: 0x4000,
    userAddress: USER_ADDRESS + 0x100000,
    mmapOffset: 0,
  };
  const [ack] = rig.send(
    encodeRequest(Request.ADD_MEM_REG, singleRegionPayload(region), { needReply: true }),
    [extra.fd],
  );
  assert.equal(u64Reply(ack), 0n);
  extra.bytes[4] = 3;
  assert.equal(rig.backend.memory.view(0x100004, 0, 1)?.[0], 3);
  const [removed] = rig.send(
    encodeRequest(Request.REM_MEM_REG, singleRegionPayload(region), { needReply: true }),
  );
  assert.equal(u64Reply(removed), 0n);
  assert.equal(rig.backend.memory.view(0x100004, 0, 1), null);
  assert.equal(rig.fds.mappings, 1);
  const [missing] = rig.send(
    encodeRequest(Request.REM_MEM_REG, singleRegionPayload(region), { needReply: true }),
  );
  assert.equal(u64Reply(missing), 1n, "failure ack for an unknown region");
  assert.equal(rig.error, null);
  assert.equal(rig.datapath.rings.size, 2);
});

Deno.test("`VhostUserBackend` answers GET_QUEUE_NUM, logs SEND_RARP and stores NET_SET_MTU", () => {
  const { rig } = negotiate();
  const [queues] = rig.send(encodeRequest(Request.GET_QUEUE_NUM));
  assert.equal(u64Reply(queues), 16n, "queue pairs");
  const mac = new Uint8Array([0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0]);
  rig.send(encodeRequest(Request.SEND_RARP, mac));
  assert.deepEqual([...rig.rarps[0]], [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
  assert.ok(rig.log.lines.some((l) => l.includes("SEND_RARP for guest MAC 52:54:00:12:34:56")));
  const [mtu] = rig.send(encodeRequest(Request.NET_SET_MTU, u64Payload(9000), { needReply: true }));
  assert.equal(u64Reply(mtu), 0n);
  assert.equal(rig.backend.mtu, 9000);
  const [bad] = rig.send(encodeRequest(Request.NET_SET_MTU, u64Payload(20), { needReply: true }));
  assert.equal(u64Reply(bad), 1n);
  assert.equal(rig.error, null);
});

Deno.test("`VhostUserBackend` logs an unsupported request, fails its ack, closes its fds and keeps going", () => {
  const { rig } = negotiate();
  const fd = rig.fds.create();
  const [reply] = rig.send(
    encodeRequest(Request.SET_INFLIGHT_FD, new Uint8Array(24), { needReply: true }),
    [fd],
  );
  assert.equal(u64Reply(reply), 1n);
  assert.equal(rig.fds.open.has(fd), false);
  const [unknown] = rig.send(encodeRequest(200, new Uint8Array(16), { needReply: true }));
  assert.equal(u64Reply(unknown), 1n);
  assert.ok(
    rig.log.lines.some((l) => l.includes("UNKNOWN(200) (size 16, 0 fds) is not supported")),
  );
  assert.equal(rig.error, null);
  assert.equal(rig.datapath.rings.size, 2);
});

Deno.test("`VhostUserBackend.shutdown()` stops rings, unmaps memory and closes every fd", () => {
  const { rig } = negotiate();
  rig.backend.shutdown();
  assertReleased(rig);
  assert.equal(rig.fds.open.size, 0, "no fake fd left open");
});

Deno.test("`VhostUserBackend` RESET_OWNER releases everything and requires SET_OWNER again", () => {
  const { rig } = negotiate();
  rig.send(encodeRequest(Request.RESET_OWNER));
  assert.equal(rig.fds.open.size, 0);
  assert.equal(rig.fds.mappings, 0);
  assert.equal(rig.backend.state, "awaiting-owner");
  rig.send(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(0, 8)));
  assert.ok(rig.error instanceof InvalidStateError);
  assert.equal((rig.error as InvalidStateError).state, "awaiting-owner");
  assert.equal((rig.error as InvalidStateError).request, Request.SET_VRING_NUM);
});

// --- validation: each case closes the connection with one clear error and releases all ---

interface BadCase {
  name: string;
  send: (rig: BackendRig) => void;
  error: RegExp;
  /** Stop this ring (GET_VRING_BASE) before sending the bad message. */
  stopFirst?: number;
}

const badCases: BadCase[] = [
  {
    name: "queue index out of range in SET_VRING_NUM",
    send: (rig) => rig.send(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(32, 256))),
    error: /SET_VRING_NUM: queue index 32 is not below 32/,
  },
  {
    name: "queue index out of range in SET_VRING_ADDR",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_VRING_ADDR, vringAddrPayload(37, userRingAreas(0)))),
    error: /SET_VRING_ADDR: queue index 37 is not below 32/,
  },
  {
    name: "queue index out of range in SET_VRING_BASE",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_VRING_BASE, vringStatePayload(0xffffffff, 0))),
    error: /SET_VRING_BASE: queue index 4294967295 is not below 32/,
  },
  {
    name: "queue index out of range in GET_VRING_BASE",
    send: (rig) => rig.send(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(33, 0))),
    error: /GET_VRING_BASE: queue index 33 is not below 32/,
  },
  {
    name: "queue index out of range in SET_VRING_ENABLE",
    send: (rig) => rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(32, 1))),
    error: /SET_VRING_ENABLE: queue index 32 is not below 32/,
  },
  {
    name: "queue index out of range in SET_VRING_KICK (fd closed)",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(35)), [rig.fds.create()]),
    error: /SET_VRING_KICK: queue index 35 is not below 32/,
  },
  {
    name: "queue index out of range in SET_VRING_CALL",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_VRING_CALL, u64Payload(0xff)), [rig.fds.create()]),
    error: /SET_VRING_CALL: queue index 255 is not below 32/,
  },
  {
    name: "reserved bits in SET_VRING_ERR",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_VRING_ERR, u64Payload(0x200)), [rig.fds.create()]),
    error: /SET_VRING_ERR: reserved bits set in 0x200/,
  },
  {
    name: "NOFD bit with an fd attached",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_VRING_ERR, u64Payload(0x101)), [rig.fds.create()]),
    error: /SET_VRING_ERR: got 1 fds, expected 0/,
  },
  {
    name: "a semaphore-mode eventfd as kick fd",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(1)), [
        rig.fds.create(FAKE_SEMAPHORE_EVENTFD),
      ]),
    error:
      /SET_VRING_KICK: ring 1 kick fd is a semaphore-mode eventfd \(EFD_SEMAPHORE\), not an eventfd in normal mode/,
  },
  {
    name: "a pipe as call fd",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_VRING_CALL, u64Payload(0)), [rig.fds.create(FAKE_PIPE)]),
    error:
      /SET_VRING_CALL: ring 0 call fd is a pipe \(pipe:\[4242\]\), not an eventfd in normal mode/,
  },
  {
    name: "a socket as err fd",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_VRING_ERR, u64Payload(1)), [rig.fds.create(FAKE_SOCKET)]),
    error:
      /SET_VRING_ERR: ring 1 err fd is a socket \(socket:\[4343\]\), not an eventfd in normal mode/,
  },
  {
    name: "a memory fd (regular file) as kick fd of a stopped ring",
    stopFirst: 0,
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(0)), [rig.fds.memfd(4096).fd]),
    error: /SET_VRING_KICK: ring 0 kick fd is a regular file, not an eventfd in normal mode/,
  },
  {
    name: "a kick fd that cannot be examined",
    send: (rig) => {
      rig.fds.describe = () => {
        throw new Error("fstat: EIO");
      };
      rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(0)), [rig.fds.create()]);
    },
    error: /SET_VRING_KICK: cannot examine ring 0's kick fd: fstat: EIO/,
  },
  {
    name: "missing fd in SET_VRING_KICK",
    send: (rig) => rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(0))),
    error: /SET_VRING_KICK: got 0 fds, expected 1/,
  },
  {
    name: "extra fds with SET_VRING_NUM",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(0, 8)), [
        rig.fds.create(),
        rig.fds.create(),
      ]),
    error: /SET_VRING_NUM: got 2 fds, expected 0/,
  },
  {
    name: "ring size not a power of two",
    stopFirst: 0,
    send: (rig) => rig.send(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(0, 100))),
    error: /ring 0 size 100 is not a power of two in 1..32768/,
  },
  {
    name: "ring size zero",
    stopFirst: 0,
    send: (rig) => rig.send(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(0, 0))),
    error: /ring 0 size 0 is not a power of two/,
  },
  {
    name: "ring size above 32768",
    stopFirst: 1,
    send: (rig) => rig.send(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(1, 65536))),
    error: /ring 1 size 65536 is not a power of two in 1..32768/,
  },
  {
    name: "ring area outside mapped memory",
    stopFirst: 0,
    send: (rig) =>
      rig.send(
        encodeRequest(
          Request.SET_VRING_ADDR,
          vringAddrPayload(0, { ...userRingAreas(0), used: USER_ADDRESS + MEMORY_SIZE - 100 }),
        ),
      ),
    error: /SET_VRING_ADDR: ring 0 used ring 0x7f1234[0-9a-f]+\+2054 is outside mapped memory/,
  },
  {
    name: "ring address at or above 2^53",
    stopFirst: 0,
    send: (rig) =>
      rig.send(
        encodeRequest(
          Request.SET_VRING_ADDR,
          vringAddrPayload(0, { ...userRingAreas(0), descriptor: 2n ** 63n }),
        ),
      ),
    error: /descriptor table address 0x8000000000000000 is not below 2\^53/,
  },
  {
    name: "nregions above the limit",
    send: (rig) => rig.send(encodeRequest(Request.SET_MEM_TABLE, memTablePayload([], 9))),
    error: /SET_MEM_TABLE: 9 regions exceed the limit of 8/,
  },
  {
    name: "nregions different from the number of fds",
    send: (rig) => {
      const m = rig.fds.memfd(0x1000);
      rig.send(
        encodeRequest(
          Request.SET_MEM_TABLE,
          memTablePayload([
            { guestAddress: 0, size: 0x1000, userAddress: 0, mmapOffset: 0 },
            { guestAddress: 0x1000, size: 0x1000, userAddress: 0x1000, mmapOffset: 0 },
          ]),
        ),
        [m.fd],
      );
    },
    error: /SET_MEM_TABLE: 2 regions but 1 fds/,
  },
  {
    name: "memory table payload size inconsistent with nregions",
    send: (rig) => rig.send(encodeRequest(Request.SET_MEM_TABLE, memTablePayload([], 1))),
    error: /SET_MEM_TABLE: payload size 8 is not 40 or 264/,
  },
  {
    name: "overlapping regions",
    send: (rig) => {
      const a = rig.fds.memfd(0x2000);
      const b = rig.fds.memfd(0x2000);
      rig.send(
        encodeRequest(
          Request.SET_MEM_TABLE,
          memTablePayload([
            { guestAddress: 0, size: 0x2000, userAddress: 0, mmapOffset: 0 },
            { guestAddress: 0x1000, size: 0x2000, userAddress: 0x10000, mmapOffset: 0 },
          ]),
        ),
        [a.fd, b.fd],
      );
    },
    error: /SET_MEM_TABLE: region guest 0x1000 size 0x2000 overlaps region guest 0x0 size 0x2000/,
  },
  {
    name: "zero-size region",
    send: (rig) => {
      const a = rig.fds.memfd(0x2000);
      rig.send(
        encodeRequest(
          Request.ADD_MEM_REG,
          singleRegionPayload({
            guestAddress: 0x900000,
            size: 0,
            userAddress: 0x900000,
            mmapOffset: 0,
          }),
        ),
        [a.fd],
      );
    },
    error: /ADD_MEM_REG: region guest 0x900000 size 0x0 has zero size/,
  },
  {
    name: "region larger than its file (SIGBUS guard)",
    send: (rig) => {
      const a = rig.fds.memfd(0x1000);
      rig.send(
        encodeRequest(
          Request.ADD_MEM_REG,
          singleRegionPayload({
            guestAddress: 0x900000,
            size: 0x1000,
            userAddress: 0x900000,
            mmapOffset: 0x1000,
          }),
        ),
        [a.fd],
      );
    },
    error:
      /ADD_MEM_REG: region guest 0x900000 size 0x1000 offset 0x1000 ends beyond its 4096-byte file/,
  },
  {
    name: "a region whose mapping fails",
    send: (rig) => {
      rig.fileSizes = false;
      const a = rig.fds.memfd(0x1000);
      rig.send(
        encodeRequest(
          Request.ADD_MEM_REG,
          singleRegionPayload({
            guestAddress: 0x900000,
            size: 0x10000,
            userAddress: 0x900000,
            mmapOffset: 0,
          }),
        ),
        [a.fd],
      );
    },
    error:
      /ADD_MEM_REG: cannot map region guest 0x900000 size 0x10000 offset 0x0: mmap: 0\+65536 is beyond/,
  },
  {
    name: "payload size wrong for the request type",
    send: (rig) => rig.send(encodeRequest(Request.SET_VRING_NUM, new Uint8Array(4))),
    error: /SET_VRING_NUM: payload size 4 is not 8/,
  },
  {
    name: "header size larger than any payload",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_FEATURES, new Uint8Array(0), { sizeField: 0x10000000 })),
    error: /SET_FEATURES: header payload size 268435456 exceeds the largest valid 8/,
  },
  {
    name: "ring reconfigured while started (SET_VRING_NUM)",
    send: (rig) => rig.send(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(0, 512))),
    error: /SET_VRING_NUM is not valid in state owned: ring 0 is started/,
  },
  {
    name: "ring moved while started (SET_VRING_ADDR)",
    send: (rig) =>
      rig.send(
        encodeRequest(
          Request.SET_VRING_ADDR,
          vringAddrPayload(1, { ...userRingAreas(1), used: userRingAreas(1).used + 0x800 }),
        ),
      ),
    error: /SET_VRING_ADDR is not valid in state owned: ring 1 is started/,
  },
  {
    name: "ring reconfigured while started (SET_VRING_BASE)",
    send: (rig) => rig.send(encodeRequest(Request.SET_VRING_BASE, vringStatePayload(1, 0))),
    error: /SET_VRING_BASE is not valid in state owned: ring 1 is started/,
  },
  {
    name: "unoffered feature bits acked",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_FEATURES, u64Payload(FEATURES | featureBit(5)))),
    error: /SET_FEATURES: acked feature bits 0x20 were not offered/,
  },
  {
    name: "unoffered protocol feature bits acked",
    send: (rig) =>
      rig.send(
        encodeRequest(Request.SET_PROTOCOL_FEATURES, u64Payload(OFFERED_PROTOCOL_FEATURES | 0x80n)),
      ),
    error: /SET_PROTOCOL_FEATURES: acked protocol feature bits 0x80 were not offered/,
  },
  {
    name: "legacy device (VERSION_1 not acked)",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_FEATURES, u64Payload(featureBit(VIRTIO_NET_F_MRG_RXBUF)))),
    error: /VIRTIO_F_VERSION_1 \(bit 32\) not acked: legacy virtio devices are not supported/,
  },
  {
    name: "second SET_OWNER",
    send: (rig) => rig.send(encodeRequest(Request.SET_OWNER)),
    error: /SET_OWNER is not valid in state owned: the session already has an owner/,
  },
  {
    name: "dirty log larger than its file",
    send: (rig) => rig.send(encodeRequest(Request.SET_LOG_BASE, logPayload(8192)), [logFile(rig)]),
    error: /SET_LOG_BASE: log of 8192 bytes at offset 0x0 ends beyond its 4096-byte file/,
  },
  {
    name: "dirty log offset beyond its file",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_LOG_BASE, logPayload(16, 4090)), [logFile(rig)]),
    error: /SET_LOG_BASE: log of 16 bytes at offset 0xffa ends beyond its 4096-byte file/,
  },
  {
    name: "dirty log of size 0",
    send: (rig) => rig.send(encodeRequest(Request.SET_LOG_BASE, logPayload(0)), [logFile(rig)]),
    error: /SET_LOG_BASE: log of 0 bytes at offset 0x0: size 0/,
  },
  {
    name: "dirty log without an fd",
    send: (rig) => rig.send(encodeRequest(Request.SET_LOG_BASE, logPayload(8))),
    error: /SET_LOG_BASE: got 0 fds, expected 1/,
  },
  {
    name: "dirty log with two fds",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_LOG_BASE, logPayload(8)), [logFile(rig), logFile(rig)]),
    error: /SET_LOG_BASE: got 2 fds, expected 1/,
  },
  {
    name: "dirty log reaching 2^53",
    send: (rig) =>
      rig.send(
        encodeRequest(Request.SET_LOG_BASE, logPayload(16, 2 ** 53 - 8)),
        [logFile(rig)],
      ),
    error: /SET_LOG_BASE: log of 16 bytes at offset 0x1ffffffffffff8 ends at or beyond 2\^53/,
  },
  {
    name: "dirty log of 4 GiB (its byte indexes would not fit a u32)",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_LOG_BASE, logPayload(2 ** 32)), [logFile(rig)]),
    error: /SET_LOG_BASE: log of 4294967296 bytes at offset 0x0 exceeds the limit of 4294963200/,
  },
  {
    name: "dirty log as a front-end address (u64 payload)",
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_LOG_BASE, u64Payload(0x7f00_0000)), [logFile(rig)]),
    error: /SET_LOG_BASE: payload size 8 is not 16/,
  },
  {
    name: "dirty log without LOG_SHMFD acked",
    send: (rig) => {
      const acked = OFFERED_PROTOCOL_FEATURES & ~featureBit(ProtocolFeature.LOG_SHMFD);
      rig.send(encodeRequest(Request.SET_PROTOCOL_FEATURES, u64Payload(acked)));
      rig.send(encodeRequest(Request.SET_LOG_BASE, logPayload(8)), [logFile(rig)]);
    },
    error: /SET_LOG_BASE: VHOST_USER_PROTOCOL_F_LOG_SHMFD is not acked/,
  },
  {
    name: "log fd missing (SET_LOG_FD)",
    send: (rig) => rig.send(encodeRequest(Request.SET_LOG_FD)),
    error: /SET_LOG_FD: got 0 fds, expected 1/,
  },
  {
    name: "log fd that is a pipe (SET_LOG_FD)",
    send: (rig) => rig.send(encodeRequest(Request.SET_LOG_FD), [rig.fds.create(FAKE_PIPE)]),
    error: /SET_LOG_FD: the log fd is a pipe \(pipe:\[4242\]\), not an eventfd/,
  },
  {
    name: "used-ring log address without VHOST_F_LOG_ALL",
    send: (rig) =>
      rig.send(
        encodeRequest(
          Request.SET_VRING_ADDR,
          vringAddrPayload(1, userRingAreas(1), VRING_FLAGS_LOG, ringAreas(1).used),
        ),
      ),
    error:
      /SET_VRING_ADDR: ring 1 asks for used-ring logging \(VHOST_VRING_F_LOG\) but VHOST_F_LOG_ALL is not acked/,
  },
  {
    name: "unknown vring address flags",
    stopFirst: 0,
    send: (rig) =>
      rig.send(encodeRequest(Request.SET_VRING_ADDR, vringAddrPayload(0, userRingAreas(0), 0x2))),
    error: /SET_VRING_ADDR: ring 0 flags 0x2 has bits other than VHOST_VRING_F_LOG/,
  },
];

for (const bad of badCases) {
  Deno.test(`\`VhostUserBackend\` rejects ${bad.name}, closes the connection and releases everything`, () => {
    const { rig } = negotiate();
    if (bad.stopFirst !== undefined) {
      rig.send(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(bad.stopFirst, 0)));
    }
    bad.send(rig);
    assert.ok(rig.protocolError, `expected a protocol error, got ${rig.error}`);
    assert.match(rig.error!.message, bad.error);
    assertReleased(rig);
    assert.equal(rig.fds.open.size, 0, `fds left open: ${[...rig.fds.open]}`);
  });
}

Deno.test("`VhostUserBackend` sends a failure ack before closing when REPLY_ACK was asked", () => {
  const { rig } = negotiate();
  const [ack] = rig.send(
    encodeRequest(Request.SET_VRING_NUM, vringStatePayload(39, 8), { needReply: true }),
  );
  assert.equal(u64Reply(ack), 1n);
  assert.match(rig.error!.message, /queue index 39/);
});

Deno.test("`VhostUserBackend` rejects vring messages before SET_OWNER with the request and state", () => {
  const rig = new BackendRig();
  rig.send(encodeRequest(Request.SET_MEM_TABLE, memTablePayload([])));
  assert.ok(rig.error instanceof InvalidStateError);
  assert.match(
    rig.error.message,
    /SET_MEM_TABLE is not valid in state awaiting-owner: SET_OWNER has not been sent/,
  );
});

Deno.test("`VhostUserBackend` closes the fds of an unfinished message at EOF", () => {
  const { rig } = negotiate();
  const fd = rig.fds.create();
  rig.channel.push(encodeRequest(Request.SET_VRING_CALL, u64Payload(0)).subarray(0, 14), [fd]);
  rig.channel.close();
  rig.pump();
  assert.match(rig.eofDetail!, /after 2 of 8 payload bytes of SET_VRING_CALL/);
  for (const orphan of rig.framer.takeOrphanFds()) rig.fds.close(orphan);
  rig.backend.shutdown();
  assert.equal(rig.fds.open.size, 0);
});

Deno.test("`VhostUserBackend.shutdown()` unmaps memory and closes every fd even when the datapath fails to stop a ring", () => {
  const { rig } = negotiate();
  const original = rig.datapath.stopVring.bind(rig.datapath);
  rig.datapath.stopVring = (index) => {
    if (index === 0) throw new Error("boom");
    return original(index);
  };
  assert.throws(() => rig.backend.shutdown(), /datapath failed to stop ring 0: boom/);
  assert.equal(rig.datapath.rings.has(1), false, "ring 1 stopped all the same");
  assert.equal(rig.fds.mappings, 0, "guest memory unmapped");
  assert.equal(rig.watchers.size, 0, "kick fds no longer watched");
  assert.equal(rig.fds.open.size, 0, `fds left open: ${[...rig.fds.open]}`);
  rig.backend.shutdown(); // a second call finds nothing left to release
});

/** Every call fd of `rig` fails its writes (a pipe's read end as call fd, say). */
function failCalls(rig: BackendRig, calls: number[]): void {
  for (const fd of calls) rig.notifiers.get(fd)!.failSignals = true;
}

Deno.test("`VhostUserBackend.shutdown()` releases everything when signalling the guest fails while a ring stops", () => {
  const { rig, calls } = negotiate();
  rig.datapath.signalOnStop = true;
  failCalls(rig, calls);
  rig.backend.shutdown();
  assert.equal(rig.datapath.rings.size, 0, "both rings stopped: the datapath dropped its views");
  assert.equal(rig.fds.mappings, 0, "guest memory unmapped");
  assert.equal(rig.watchers.size, 0);
  assert.equal(rig.fds.open.size, 0, `fds left open: ${[...rig.fds.open]}`);
  assert.equal(rig.notifiers.get(calls[0])!.failedSignals, 1);
  assert.ok(
    rig.log.lines.some((l) =>
      /ring 0: signalling the guest through call fd \d+ failed: eventfd_write\(fd \d+\) failed: EBADF/
        .test(l)
    ),
    rig.log.lines.join("\n"),
  );
  assert.ok(!rig.log.lines.some((l) => /stay mapped/.test(l)));
});

for (const request of ["GET_VRING_BASE", "SET_MEM_TABLE", "REM_MEM_REG", "RESET_OWNER"] as const) {
  Deno.test(`\`VhostUserBackend\` ${request} completes when signalling the guest fails while rings stop`, () => {
    const { rig, calls, memory } = negotiate();
    rig.datapath.signalOnStop = true;
    failCalls(rig, calls);
    const region = { guestAddress: 0, size: MEMORY_SIZE, userAddress: USER_ADDRESS, mmapOffset: 0 };
    if (request === "GET_VRING_BASE") {
      const [reply] = rig.send(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(0, 0)));
      assert.equal(reply.payload.getUint32(4, true), 10, "base returned");
      assert.equal(rig.datapath.rings.has(0), false);
    } else if (request === "SET_MEM_TABLE") {
      const second = rig.fds.memfd(MEMORY_SIZE);
      rig.send(encodeRequest(Request.SET_MEM_TABLE, memTablePayload([region])), [second.fd]);
      assert.equal(rig.fds.mappings, 1, "the old table unmapped, the new one mapped");
      assert.equal(rig.datapath.rings.size, 2, "rings restarted over the new table");
    } else if (request === "REM_MEM_REG") {
      const [ack] = rig.send(
        encodeRequest(Request.REM_MEM_REG, singleRegionPayload(region), { needReply: true }),
      );
      assert.equal(u64Reply(ack), 0n);
      assert.equal(rig.fds.mappings, 0, "the region unmapped");
      assert.equal(rig.datapath.rings.size, 0, "the rings stay stopped without memory");
    } else {
      rig.send(encodeRequest(Request.RESET_OWNER));
      assert.equal(rig.fds.mappings, 0);
      assert.equal(rig.fds.open.size, 0, `fds left open: ${[...rig.fds.open]}`);
      assert.equal(rig.backend.state, "awaiting-owner");
    }
    assert.equal(rig.error, null, `no protocol error: ${rig.error?.message}`);
    void memory;
    rig.backend.shutdown();
    assertReleased(rig);
    assert.equal(rig.fds.open.size, 0, `fds left open: ${[...rig.fds.open]}`);
  });
}

Deno.test("`StartedVring.notifyGuest()` never throws: a failing call fd is logged once and left alone until SET_VRING_CALL replaces it", () => {
  const { rig, calls } = negotiate();
  const tx = rig.datapath.rings.get(1)!;
  const failing = rig.notifiers.get(calls[1])!;
  failing.failSignals = true;
  tx.notifyGuest();
  tx.notifyGuest();
  tx.notifyGuest();
  assert.equal(failing.failedSignals, 1, "no more writes to a call fd that failed");
  assert.equal(
    rig.log.lines.filter((l) => /ring 1: signalling the guest through call fd/.test(l)).length,
    1,
  );
  const replacement = rig.fds.create();
  rig.send(encodeRequest(Request.SET_VRING_CALL, u64Payload(1)), [replacement]);
  assert.equal(rig.notifiers.get(replacement)!.signals, 1, "signalled once when it comes");
  tx.notifyGuest();
  assert.equal(rig.notifiers.get(replacement)!.signals, 2, "and then as the ring asks");
  assert.equal(rig.error, null);
});

Deno.test("`VhostUserBackend` accepts a kick fd it cannot verify (no /proc) with one warning", () => {
  const { rig } = negotiate();
  for (const i of [0, 1]) {
    rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(i)), [
      rig.fds.create(FAKE_UNVERIFIED),
    ]);
  }
  assert.equal(rig.error, null);
  assert.equal(rig.datapath.rings.size, 2);
  assert.equal(
    rig.log.lines.filter((l) =>
      /warn: .*kick fd is an anonymous inode .*used as an eventfd/.test(l)
    )
      .length,
    1,
  );
});

Deno.test("`VhostUserBackend` SET_VRING_KICK on a running ring replaces the kick fd and restarts at the returned base", () => {
  const { rig, kicks } = negotiate();
  rig.datapath.advance = 3;
  const second = rig.fds.create();
  rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(1)), [second]);
  assert.equal(rig.error, null);
  assert.equal(rig.notifiers.get(kicks[1])!.closed, true, "the old kick fd is closed");
  assert.deepEqual([...rig.watchers.keys()].sort(), [kicks[0], second].sort());
  assert.equal(rig.datapath.rings.get(1)!.lastAvailIndex, 14, "restarted at 11 + 3");
  rig.kick(second, 2000);
  assert.deepEqual(rig.datapath.events.at(-1), { call: "kick", index: 1, now: 2000 });
});

Deno.test("`VhostUserBackend` SET_VRING_KICK keeps no fd when stopping the running ring fails", () => {
  const { rig } = negotiate();
  const original = rig.datapath.stopVring.bind(rig.datapath);
  rig.datapath.stopVring = (index) => {
    if (index === 1) throw new Error("boom");
    return original(index);
  };
  rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(1)), [rig.fds.create()]);
  assert.match(rig.error!.message, /datapath failed to stop ring 1: boom/);
  assert.equal(rig.fds.mappings, 0);
  assert.equal(rig.watchers.size, 0);
  assert.equal(rig.fds.open.size, 0, `fds left open: ${[...rig.fds.open]}`);
});

Deno.test("`VhostUserBackend` makes the datapath drop a ring whose start failed", () => {
  const { rig } = negotiate({ enable: false });
  rig.datapath.failStarts = true;
  rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(0, 1)));
  assert.match(rig.error!.message, /datapath cannot start ring 0/);
  assert.equal(rig.datapath.rings.size, 0, "the half-started ring was stopped again");
  assert.equal(rig.fds.mappings, 0);
  assert.equal(rig.watchers.size, 0);
  assert.equal(rig.fds.open.size, 0, `fds left open: ${[...rig.fds.open]}`);
});

Deno.test("`VhostUserBackend` offers VIRTIO_NET_F_CSUM (bit 0) and VIRTIO_NET_F_GUEST_CSUM (bit 1)", () => {
  const rig = new BackendRig();
  const [reply] = rig.send(encodeRequest(Request.GET_FEATURES));
  const offered = u64Reply(reply);
  assert.equal(VIRTIO_NET_F_CSUM, 0);
  assert.equal(VIRTIO_NET_F_GUEST_CSUM, 1);
  assert.equal(offered & 1n, 1n, "CSUM offered");
  assert.equal(offered & 2n, 2n, "GUEST_CSUM offered");
});

const CSUM = featureBit(VIRTIO_NET_F_CSUM);
const GUEST_CSUM = featureBit(VIRTIO_NET_F_GUEST_CSUM);
for (
  const [name, extra] of [
    ["CSUM and GUEST_CSUM", CSUM | GUEST_CSUM],
    ["CSUM only", CSUM],
    ["GUEST_CSUM only", GUEST_CSUM],
  ] as const
) {
  Deno.test(`\`VhostUserBackend\` gives both started rings the checksum features acked (${name})`, () => {
    const { rig } = negotiate({ features: FEATURES | extra });
    assert.equal(rig.datapath.rings.size, 2);
    for (const index of [0, 1]) {
      assert.deepEqual(rig.datapath.rings.get(index)!.features, {
        eventIndex: true,
        indirectDescriptors: false,
        mergeableRxBuffers: true,
        checksumOffload: (extra & CSUM) !== 0n,
        guestChecksum: (extra & GUEST_CSUM) !== 0n,
        packedRing: false,
        ...NO_SEGMENTATION,
      }, `ring ${index}`);
    }
  });
}

Deno.test("`VhostUserBackend` renegotiation without the checksum features clears them on the restarted rings", () => {
  const { rig } = negotiate({ features: FEATURES | CSUM | GUEST_CSUM });
  for (const i of [0, 1]) rig.send(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(i, 0)));
  assert.equal(rig.datapath.rings.size, 0);
  rig.send(encodeRequest(Request.SET_FEATURES, u64Payload(FEATURES), { needReply: true }));
  for (const i of [0, 1]) {
    rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(i)), [rig.fds.create()]);
  }
  assert.equal(rig.error, null);
  for (const i of [0, 1]) {
    const features = rig.datapath.rings.get(i)!.features;
    assert.equal(features.checksumOffload, false, `ring ${i} CSUM`);
    assert.equal(features.guestChecksum, false, `ring ${i} GUEST_CSUM`);
  }
});

Deno.test("`VhostUserBackend` offers HOST_TSO4/6, HOST_ECN, GUEST_TSO4/6 and GUEST_ECN (bits 11, 12, 13, 7, 8, 9)", () => {
  const rig = new BackendRig();
  const [reply] = rig.send(encodeRequest(Request.GET_FEATURES));
  const offered = u64Reply(reply);
  for (const bit of [7, 8, 9, 11, 12, 13]) {
    assert.equal((offered >> BigInt(bit)) & 1n, 1n, `bit ${bit} offered`);
  }
});

Deno.test("`VhostUserBackend` gives restarted rings the segmentation features acked and the MTU NET_SET_MTU set", () => {
  const { rig } = negotiate({ features: FEATURES | CSUM | GUEST_CSUM | SEGMENTATION });
  for (const i of [0, 1]) {
    const features = rig.datapath.rings.get(i)!.features;
    assert.deepEqual(
      [
        features.hostTso4,
        features.hostTso6,
        features.hostEcn,
        features.guestTso4,
        features.guestTso6,
      ],
      [true, true, true, true, true],
      `ring ${i}`,
    );
    assert.equal(features.mtu, 0, `ring ${i}: no MTU set yet`);
  }
  for (const i of [0, 1]) rig.send(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(i, 0)));
  // QEMU sets the MTU before it starts the rings (virtio_net_vhost_status).
  const [ack] = rig.send(encodeRequest(Request.NET_SET_MTU, u64Payload(1500), { needReply: true }));
  assert.equal(u64Reply(ack), 0n);
  rig.send(encodeRequest(Request.SET_FEATURES, u64Payload(FEATURES | CSUM | GUEST_CSUM)));
  for (const i of [0, 1]) {
    rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(i)), [rig.fds.create()]);
  }
  assert.equal(rig.error, null);
  for (const i of [0, 1]) {
    const features = rig.datapath.rings.get(i)!.features;
    assert.equal(features.mtu, 1500, `ring ${i} MTU`);
    assert.equal(features.hostTso4, false, `ring ${i} HOST_TSO4 no longer acked`);
    assert.equal(features.guestTso6, false, `ring ${i} GUEST_TSO6 no longer acked`);
  }
});

Deno.test("`VhostUserBackend` logs dirty pages as QEMU 10 migrates: SET_LOG_BASE, LOG_ALL, VHOST_VRING_F_LOG, all on running rings", () => {
  const { rig } = negotiate();
  const log = rig.fds.memfd(4096);
  const mappings = rig.fds.mappings;
  const [reply] = rig.send(encodeRequest(Request.SET_LOG_BASE, logPayload(8)), [log.fd]);
  assert.equal(reply.request, Request.SET_LOG_BASE, "LOG_SHMFD: the front-end waits for a reply");
  assert.equal(u64Reply(reply), 0n);
  assert.equal(rig.fds.mappings, mappings + 1);
  assert.equal(rig.fds.open.has(log.fd), false, "the fd is closed, the mapping kept");
  assert.equal(rig.datapath.writeLogs.get(0), null, "no logging before VHOST_F_LOG_ALL");
  assert.equal(rig.backend.logging, false);

  const events = rig.datapath.events.length;
  const [ack] = rig.send(
    encodeRequest(
      Request.SET_FEATURES,
      u64Payload(FEATURES | featureBit(VHOST_F_LOG_ALL)),
      { needReply: true },
    ),
  );
  assert.equal(u64Reply(ack), 0n);
  assert.equal(rig.backend.logging, true);
  assert.deepEqual(rig.datapath.events.slice(events), [], "rings keep running");
  for (const i of [0, 1]) {
    const writeLog = rig.datapath.writeLogs.get(i)!;
    assert.ok(writeLog !== null, `ring ${i} logs`);
    // a buffer write at guest 0x5000..0x67ff: pages 5 and 6
    const view = rig.datapath.rings.get(i)!.memory.view(0x5000 + i * 0x800, 0, 0x1000)!;
    writeLog.markView(view, 0, view.length);
    writeLog.markUsed(0, 2); // no VHOST_VRING_F_LOG yet: not logged
  }
  assert.deepEqual(dirtyPages(log.bytes), [5, 6]);

  const [vringAck] = rig.send(
    encodeRequest(
      Request.SET_VRING_ADDR,
      vringAddrPayload(0, userRingAreas(0), VRING_FLAGS_LOG, 0x30000 + ringAreas(0).used),
      { needReply: true },
    ),
  );
  assert.equal(u64Reply(vringAck), 0n);
  assert.deepEqual(rig.datapath.events.slice(events), [], "still running");
  rig.datapath.writeLogs.get(0)!.markUsed(2, 2); // used idx, logged at log_guest_addr + 2
  assert.deepEqual(dirtyPages(log.bytes), [5, 6, (0x30000 + ringAreas(0).used) / 4096]);

  // a ring (re)started while logging gets the log with its start
  rig.send(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(0, 0)));
  rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(0)), [rig.fds.create()]);
  assert.ok(rig.datapath.rings.get(0)!.writeLog, "started with the write log");

  // migration cancelled: SET_FEATURES without LOG_ALL, rings without the flag
  rig.send(encodeRequest(Request.SET_FEATURES, u64Payload(FEATURES)));
  rig.send(encodeRequest(Request.SET_VRING_ADDR, vringAddrPayload(0, userRingAreas(0))));
  assert.equal(rig.backend.logging, false);
  assert.equal(rig.datapath.writeLogs.get(0), null);
  assert.equal(rig.datapath.writeLogs.get(1), null);
  assert.equal(rig.datapath.rings.size, 2);
  assert.equal(rig.error, null);
  rig.backend.shutdown();
  assert.equal(rig.fds.mappings, 0, "log unmapped with the memory");
});

Deno.test("`VhostUserBackend` replaces the dirty log: rings switch to the new one, the old one is unmapped", () => {
  const { rig } = negotiate();
  rig.send(encodeRequest(Request.SET_FEATURES, u64Payload(FEATURES | featureBit(VHOST_F_LOG_ALL))));
  const first = rig.fds.memfd(4096);
  rig.send(encodeRequest(Request.SET_LOG_BASE, logPayload(8)), [first.fd]);
  const mappings = rig.fds.mappings;
  const second = rig.fds.memfd(0x2000);
  // an offset that is not page-aligned: mapped from the page below
  const [reply] = rig.send(encodeRequest(Request.SET_LOG_BASE, logPayload(8, 0x1010)), [second.fd]);
  assert.equal(u64Reply(reply), 0n);
  assert.deepEqual(rig.fds.mapCalls.at(-1), { fd: second.fd, size: 0x18, offset: 0x1000 });
  assert.equal(rig.fds.mappings, mappings, "one log mapped: the first was unmapped");
  const view = rig.datapath.rings.get(1)!.memory.view(0x9000, 0, 16)!;
  rig.datapath.writeLogs.get(1)!.markView(view, 0, 16);
  assert.deepEqual(dirtyPages(second.bytes, 0x1010), [9]);
  assert.deepEqual(dirtyPages(first.bytes), [], "nothing goes to the old log");
  assert.ok(rig.log.lines.some((l) => l.includes("replacing the previous one")));
  assert.equal(rig.error, null);
});

Deno.test("`VhostUserBackend` keeps the SET_LOG_FD eventfd until replaced or the session ends", () => {
  const { rig } = negotiate();
  const first = rig.fds.create();
  rig.send(encodeRequest(Request.SET_LOG_FD), [first]);
  assert.equal(rig.fds.open.has(first), true);
  const second = rig.fds.create();
  rig.send(encodeRequest(Request.SET_LOG_FD), [second]);
  assert.equal(rig.fds.open.has(first), false, "the replaced one is closed");
  assert.equal(rig.notifiers.get(second)!.signals, 0, "never signalled");
  rig.backend.shutdown();
  assert.equal(rig.fds.open.has(second), false);
  assert.equal(rig.error, null);
});

Deno.test("`VhostUserBackend` reports writes beyond the dirty log as errors (the page is missed)", () => {
  const { rig } = negotiate();
  rig.send(encodeRequest(Request.SET_FEATURES, u64Payload(FEATURES | featureBit(VHOST_F_LOG_ALL))));
  rig.send(encodeRequest(Request.SET_LOG_BASE, logPayload(1)), [logFile(rig)]); // 8 pages
  const view = rig.datapath.rings.get(0)!.memory.view(0x9000, 0, 16)!;
  rig.datapath.writeLogs.get(0)!.markView(view, 0, 16);
  assert.ok(
    rig.log.lines.some((l) =>
      /dirty log: guest 0x9000\+16 is beyond the 1-byte log: the migration target may get a stale page/
        .test(l)
    ),
  );
});

// --- packed virtqueues (VIRTIO_F_RING_PACKED) ------------------------------------------

Deno.test("`VhostUserBackend` offers VIRTIO_F_RING_PACKED (bit 34)", () => {
  assert.notEqual(OFFERED_FEATURES & featureBit(VIRTIO_F_RING_PACKED), 0n);
  assert.equal(VIRTIO_F_RING_PACKED, 34);
});

Deno.test("`VhostUserBackend` starts packed rings: descriptor ring, 4-byte driver and device areas, the 32-bit base", () => {
  // QEMU sends SET_VRING_BASE for a packed ring as avail | avail wrap << 15 | (used | used wrap << 15) << 16
  const { rig, memory } = packedRig();
  const size = 100; // packed rings need not be a power of two (virtio 1.2 §2.8)
  const base = 0x0005_8003; // avail slot 3 wrap 1, used slot 5 wrap 0
  for (const i of [0, 1]) {
    rig.send(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(i, size)));
    rig.send(encodeRequest(Request.SET_VRING_BASE, vringStatePayload(i, base)));
    rig.send(encodeRequest(Request.SET_VRING_ADDR, vringAddrPayload(i, userRingAreas(i))));
    rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(i)), [rig.fds.create()]);
    rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(i, 1)));
  }
  assert.equal(rig.error, null);
  const rx = rig.datapath.rings.get(0)!;
  assert.equal(rx.features.packedRing, true);
  assert.equal(rx.size, size);
  assert.equal(rx.lastAvailIndex, base);
  assert.equal(rx.descriptorTable.length, 16 * size);
  assert.equal(rx.availableRing.length, 4, "driver event suppression area");
  assert.equal(rx.usedRing.length, 4, "device event suppression area");
  rx.usedRing[0] = 0x5a;
  assert.equal(memory.bytes[ringAreas(0).used], 0x5a, "the device area is at the used address");
  rig.datapath.advance = 0x1_0001; // the test datapath returns the base plus this
  const [reply] = rig.send(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(0, 0)));
  assert.equal(reply.payload.getUint32(4, true), (base + 0x1_0001) >>> 0, "all 32 bits come back");
});

Deno.test("`VhostUserBackend` starts a packed ring without SET_VRING_BASE at slot 0 with both wrap counters 1", () => {
  const { rig } = packedRig();
  rig.send(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(1, 256)));
  rig.send(encodeRequest(Request.SET_VRING_ADDR, vringAddrPayload(1, userRingAreas(1))));
  rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(1)), [rig.fds.create()]);
  rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(1, 1)));
  assert.equal(rig.error, null);
  assert.equal(rig.datapath.rings.get(1)!.lastAvailIndex, 0x8000_8000);
  // DPDK's virtio-user sends only the available half (0x8000): used is taken equal to it
  rig.send(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(1, 0)));
  rig.send(encodeRequest(Request.SET_VRING_BASE, vringStatePayload(1, 0x8000)));
  rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(1)), [rig.fds.create()]);
  assert.equal(rig.error, null);
  assert.equal(rig.datapath.rings.get(1)!.lastAvailIndex, 0x8000_8000);
});

Deno.test("`VhostUserBackend` refuses a 32-bit base and a size that is no power of two for split rings", () => {
  const { rig } = negotiate();
  for (const i of [0, 1]) rig.send(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(i, 0)));
  rig.send(encodeRequest(Request.SET_VRING_BASE, vringStatePayload(0, 0x8000_8000)));
  assert.match(String(rig.error), /does not fit a 16-bit ring index/);
  const second = negotiate().rig;
  for (const i of [0, 1]) {
    second.send(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(i, 0)));
  }
  second.send(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(0, 100)));
  assert.match(String(second.error), /not a power of two/);
});
