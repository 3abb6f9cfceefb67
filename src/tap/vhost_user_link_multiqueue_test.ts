import assert from "node:assert/strict";
import { Logger } from "../log/logger.ts";
import { ArrayGuestMemory } from "../../tests/support/virtio/array_guest_memory.ts";
import { createNetHeader, decodeNetHeader, NET_HDR_SIZE } from "./net_header.ts";
import { SplitRingDriver } from "../../tests/support/virtio/split_ring_driver.ts";
import { newFrameSpace, SendResult } from "./frame_transport.ts";
import { flowHashIpv4, frameFlowHash } from "./flow_hash.ts";
import { RecordingHandler } from "../../tests/support/tap/frame_handler.ts";
import { VhostUserLink } from "./vhost_user_link.ts";
import { WriteRecord } from "../../tests/support/virtio/recording_write_log.ts";

const RING_SIZE = 64;
const TCP = 6;
const REMOTE = 0x0a000001;
const GUEST = 0x0a000002;

/** A link with `pairs` queue pairs started: ring 2k is pair k's RX, 2k+1 its TX. */
function setupPairs(pairs: number) {
  const memory = new ArrayGuestMemory();
  const lines: string[] = [];
  const logger = new Logger();
  logger.setSink((level, line) => lines.push(`${level}: ${line}`));
  logger.setLevel("debug");
  const rings: SplitRingDriver[] = [];
  for (let i = 0; i < 2 * pairs; i++) {
    rings.push(
      new SplitRingDriver({
        size: RING_SIZE,
        index: i,
        features: {},
        memory,
        base: 0x100_0000 * (i + 1),
        dataBytes: 512 << 10,
      }),
    );
  }
  const handler = new RecordingHandler();
  const link = new VhostUserLink(handler, { logger, clock: () => 0 });
  for (const ring of rings) link.startVring(ring.vring(), 0);
  const posted = rings.map(() => new Map<number, number>());
  return { memory, rings, handler, link, lines, posted };
}

type Rig = ReturnType<typeof setupPairs>;

/** The guest posts `count` RX buffers of 2 KiB on pair `pair`'s receive ring. */
function postRx(rig: Rig, pair: number, count: number): void {
  const ring = rig.rings[2 * pair];
  for (let i = 0; i < count; i++) {
    const addr = ring.alloc(2048);
    const head = ring.addChain([{ addr, length: 2048, writable: true }], false);
    assert.ok(head !== null);
    rig.posted[2 * pair].set(head, addr);
  }
}

/** Frames the device wrote into pair `pair`'s receive ring since the last look. */
function received(rig: Rig, pair: number): Uint8Array[] {
  const ring = rig.rings[2 * pair];
  return ring.takeUsed().map((used) => {
    const addr = rig.posted[2 * pair].get(used.id)!;
    const bytes = ring.read(addr, used.len);
    assert.equal(decodeNetHeader(bytes, 0, createNetHeader()).numBuffers, 1);
    return bytes.slice(NET_HDR_SIZE);
  });
}

/** An IPv4 TCP frame from REMOTE:`remotePort` to GUEST:`guestPort` with `payload` bytes. */
function tcpFrame(remotePort: number, guestPort: number, payload = 0): Uint8Array {
  const f = new Uint8Array(14 + 20 + 20 + payload);
  const v = new DataView(f.buffer);
  v.setUint16(12, 0x0800);
  f[14] = 0x45;
  v.setUint16(16, 40 + payload);
  f[22] = 64;
  f[23] = TCP;
  v.setUint32(26, REMOTE);
  v.setUint32(30, GUEST);
  v.setUint16(34, remotePort);
  v.setUint16(36, guestPort);
  f[46] = 0x50;
  return f;
}

/** The guest transmits `frame` on pair `pair` (not kicked). */
function transmit(rig: Rig, pair: number, frame: Uint8Array): void {
  const ring = rig.rings[2 * pair + 1];
  const packet = new Uint8Array(NET_HDR_SIZE + frame.length);
  packet.set(frame, NET_HDR_SIZE);
  const addr = ring.alloc(packet.length);
  ring.write(addr, packet);
  assert.ok(ring.addChain([{ addr, length: packet.length, writable: false }], false) !== null);
}

Deno.test("`VhostUserLink` serves the transmit queue of every started pair", () => {
  const rig = setupPairs(4);
  assert.deepEqual(rig.handler.events, ["up"], "one link up for all pairs");
  for (let pair = 0; pair < 4; pair++) {
    transmit(rig, pair, tcpFrame(1000 + pair, 80));
    rig.link.kick(2 * pair + 1, 0);
  }
  assert.equal(rig.handler.frames.length, 4);
  for (let pair = 0; pair < 4; pair++) {
    assert.equal(rig.rings[2 * pair + 1].takeUsed().length, 1, `TX ring of pair ${pair} returned`);
  }
  const state = rig.link.describeState();
  assert.equal(state.queuePairs, 4);
  assert.equal(state.txFramesPerPair, "1,1,1,1");
});

Deno.test("`VhostUserLink` steers each flow to one receive queue by its hash and spreads flows over every pair", () => {
  const rig = setupPairs(4);
  for (let pair = 0; pair < 4; pair++) postRx(rig, pair, 60);
  const flows = 48;
  for (let round = 0; round < 2; round++) {
    for (let port = 0; port < flows; port++) {
      assert.equal(rig.link.sendFrame(tcpFrame(40000 + port, 22)), SendResult.Sent);
    }
  }
  rig.link.flush();
  let total = 0;
  for (let pair = 0; pair < 4; pair++) {
    const frames = received(rig, pair);
    assert.ok(frames.length > 0, `pair ${pair} received some flows`);
    for (const frame of frames) assert.equal(frameFlowHash(frame) % 4, pair);
    total += frames.length;
  }
  assert.equal(total, 2 * flows);
  const state = rig.link.describeState();
  assert.equal(
    (state.rxFramesPerPair as string).split(",").map(Number).reduce((a, b) => a + b),
    2 * flows,
  );
});

Deno.test("`VhostUserLink.reserveFrame()` puts a frame on the queue of the flow hash it is given, where sendFrame puts the flow's other frames", () => {
  const rig = setupPairs(4);
  for (let pair = 0; pair < 4; pair++) postRx(rig, pair, 8);
  for (let port = 5000; port < 5008; port++) {
    const hash = flowHashIpv4(REMOTE, GUEST, TCP, port, 22);
    const space = newFrameSpace();
    space.flowHash = hash;
    const frame = tcpFrame(port, 22, 100);
    assert.equal(rig.link.reserveFrame(space, frame.length, 54), SendResult.Sent);
    space.views[0].set(frame.subarray(0, space.views[0].length));
    let at = space.views[0].length;
    for (let i = 1; i < space.count; i++) {
      space.views[i].set(frame.subarray(at, at + space.views[i].length));
      at += space.views[i].length;
    }
    assert.equal(rig.link.commitFrame(frame.length), SendResult.Sent);
    assert.equal(rig.link.sendFrame(tcpFrame(port, 22)), SendResult.Sent); // its ACK
    rig.link.flush();
    const pair = hash % 4;
    const frames = received(rig, pair);
    assert.equal(frames.length, 2, `both of flow ${port}'s frames on pair ${pair}`);
    assert.deepEqual(frames[0], frame);
  }
});

Deno.test("`VhostUserLink` stays up while one pair is torn down; that pair's flows move to the others", () => {
  const rig = setupPairs(3);
  for (let pair = 0; pair < 3; pair++) postRx(rig, pair, 30);
  // a flow on pair 1
  let port = 6000;
  while (frameFlowHash(tcpFrame(port, 22)) % 3 !== 1) port++;
  assert.equal(rig.link.sendFrame(tcpFrame(port, 22)), SendResult.Sent);
  rig.link.flush();
  assert.equal(received(rig, 1).length, 1);
  rig.link.stopVring(2);
  rig.link.stopVring(3);
  assert.deepEqual(rig.handler.events, ["up"], "no link down while pairs 0 and 2 run");
  assert.equal(rig.link.describeState().queuePairs, 2);
  assert.equal(rig.link.sendFrame(tcpFrame(port, 22)), SendResult.Sent);
  rig.link.flush();
  const others = received(rig, 0).length + received(rig, 2).length;
  assert.equal(others, 1, "the flow went to a remaining pair");
  // TX of the remaining pairs still served
  transmit(rig, 2, tcpFrame(1, 2));
  rig.link.kick(5, 0);
  assert.equal(rig.handler.frames.length, 1);
  // a kick for the torn-down pair's rings is ignored
  rig.link.kick(2, 0);
  rig.link.kick(3, 0);
  for (const index of [0, 1, 4, 5]) rig.link.stopVring(index);
  assert.deepEqual(
    rig.handler.events.filter((e) => e === "down"),
    ["down"],
    "down once, at the end",
  );
  assert.equal(rig.handler.frontendGoneCalls, 0, "rings stopped: the front-end may be there");
  rig.link.frontendGone(0);
  assert.equal(rig.handler.frontendGoneCalls, 1);
});

Deno.test("`VhostUserLink` wakes a sender blocked on one queue when that queue is kicked, or when it goes away", async () => {
  const rig = setupPairs(2);
  let woken = 0;
  rig.link.onWritable(() => woken++);
  let port = 7000;
  while (frameFlowHash(tcpFrame(port, 22)) % 2 !== 1) port++;
  postRx(rig, 0, 4); // pair 1 has no buffers
  assert.equal(rig.link.sendFrame(tcpFrame(port, 22)), SendResult.NoRoom);
  rig.link.kick(0, 0); // a kick on another queue does not concern it
  assert.equal(woken, 0);
  postRx(rig, 1, 1);
  rig.link.kick(2, 0);
  assert.equal(woken, 1);
  assert.equal(rig.link.sendFrame(tcpFrame(port, 22)), SendResult.Sent);
  // blocked again, then its queue is torn down: woken to go elsewhere
  assert.equal(rig.link.sendFrame(tcpFrame(port, 22)), SendResult.NoRoom);
  rig.link.stopVring(2);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(woken, 2);
  assert.equal(rig.link.sendFrame(tcpFrame(port, 22)), SendResult.Sent, "now on pair 0");
});

Deno.test("`VhostUserLink` ignores rings beyond 16 pairs with a warning", () => {
  const rig = setupPairs(1);
  const stray = new SplitRingDriver({
    size: RING_SIZE,
    index: 32,
    memory: rig.memory,
    base: 0x7000_0000,
    dataBytes: 4096,
  });
  rig.link.startVring(stray.vring(), 0);
  rig.link.kick(32, 0);
  rig.link.kick(1000, 0);
  rig.link.setWriteLog(40, null);
  assert.equal(rig.link.stopVring(33), 0);
  assert.ok(rig.lines.some((l) => l.includes("ignoring start of queue 32")));
  assert.equal(rig.link.describeState().queuePairs, 1);
});

Deno.test("`VhostUserLink` reports a pair's receive writes to that ring's write log, and only those", () => {
  const rig = setupPairs(2);
  postRx(rig, 0, 4);
  postRx(rig, 1, 4);
  const record = new WriteRecord(rig.rings.map((r) => ({ base: r.base, bytes: r.bytes })));
  rig.link.setWriteLog(2, record.ringLog(rig.rings[2].usedAddr)); // pair 1's RX ring only
  let port = 8000;
  while (frameFlowHash(tcpFrame(port, 22)) % 2 !== 1) port++;
  assert.equal(rig.link.sendFrame(tcpFrame(port, 22)), SendResult.Sent);
  rig.link.flush();
  assert.ok(record.covers(rig.rings[2].usedAddr + 2), "pair 1's used index logged");
  assert.deepEqual(record.unreported(), [], "every byte pair 1 wrote is logged");
  record.snapshot();
  let other = 8000;
  while (frameFlowHash(tcpFrame(other, 22)) % 2 !== 0) other++;
  assert.equal(rig.link.sendFrame(tcpFrame(other, 22)), SendResult.Sent);
  rig.link.flush();
  assert.deepEqual(record.ranges, [], "pair 0's writes are not in pair 1's log");
  assert.ok(record.unreported().length > 0, "pair 0 did write (unlogged: no log on ring 0)");
});

Deno.test("`VhostUserLink` takes and drops the frames of a disabled TX ring (ethtool -L lowered the pairs), and delivers them again once enabled", async () => {
  const rig = setupPairs(2);
  // queued on pair 1 before QEMU disabled it: given back at once, without a kick
  transmit(rig, 1, tcpFrame(1001, 80));
  rig.link.setTransmitEnabled(3, false);
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(rig.rings[3].takeUsed().map((u) => u.len), [0], "returned, nothing written");
  // queued and kicked while disabled
  transmit(rig, 1, tcpFrame(1002, 80));
  rig.link.kick(3, 0);
  assert.deepEqual(rig.rings[3].takeUsed().map((u) => u.len), [0]);
  assert.equal(rig.handler.frames.length, 0, "no frame of a disabled ring reaches the stack");
  assert.equal(rig.link.counters.txDiscarded, 2);
  assert.match(rig.link.describeCounters(), /2 discarded from disabled rings/);
  // pair 0 is served as ever
  transmit(rig, 0, tcpFrame(1000, 80));
  rig.link.kick(1, 0);
  assert.equal(rig.handler.frames.length, 1);
  // enabled again: delivered
  rig.link.setTransmitEnabled(3, true);
  transmit(rig, 1, tcpFrame(1003, 80));
  rig.link.kick(3, 0);
  assert.equal(rig.handler.frames.length, 2);
  assert.equal(rig.link.counters.txDiscarded, 2);
  // an RX index or a ring that is not running is ignored
  rig.link.setTransmitEnabled(2, false);
  rig.link.stopVring(3);
  rig.link.setTransmitEnabled(3, false);
  assert.equal(rig.handler.frames.length, 2);
  assert.deepEqual(rig.handler.events.filter((e) => !e.startsWith("batch:")), ["up"]);
});
