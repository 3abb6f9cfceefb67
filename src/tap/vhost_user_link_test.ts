import assert from "node:assert/strict";
import fc from "fast-check";
import { Logger, type LogLevel } from "../log/logger.ts";
import { ArrayGuestMemory } from "../../tests/support/virtio/array_guest_memory.ts";
import {
  createNetHeader,
  decodeNetHeader,
  encodeNetHeader,
  NET_HDR_SIZE,
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP,
  VIRTIO_NET_HDR_GSO_UDP_L4,
} from "./net_header.ts";
import { SplitRingDriver } from "../../tests/support/virtio/split_ring_driver.ts";
import {
  FrameInfo,
  newFrameSpace,
  type ScatteredFrame,
  SendResult,
  TcpSegmentation,
} from "./frame_transport.ts";
import { RecordingHandler } from "../../tests/support/tap/frame_handler.ts";
import {
  assertEverySentFrameArrives,
  frameOf,
  linkOnRings,
  type PostedBuffers,
  postRxBuffers,
  type ReceivedFrames,
  receiveFrames,
  writeIntoSpace,
  writeTxPacket,
} from "../../tests/support/tap/link_rings.ts";
import {
  SCATTER_FIRST_BUFFER_MIN_BYTES,
  SCATTER_MIN_FRAME_BYTES,
  SCATTER_PREFIX_BYTES,
  VhostUserLink,
} from "./vhost_user_link.ts";
import { IoVectors } from "../../ffi/io_vectors.ts";
import { TcpSocket } from "../../ffi/tcp_socket.ts";
import { loopbackPair, receiveAll } from "../../tests/support/ffi/loopback_pair.ts";
import { CountingGuestMemory } from "../../tests/support/virtio/counting_guest_memory.ts";
import { WriteRecord } from "../../tests/support/virtio/recording_write_log.ts";
import { pendingSoonTasks } from "../loop/event_loop.ts";
import { MALFORMED_RUN_LIMIT, TURN_DESCRIPTOR_BUDGET } from "../virtio/virtqueue.ts";
import { chainsToBreak } from "../../tests/support/virtio/malformed_limits.ts";
import {
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
} from "../virtio/ring_layout.ts";
import { type NegotiatedFeatures } from "../virtio/started_vring.ts";

function setup(
  features: Partial<NegotiatedFeatures> = {},
  size = 64,
  dataBytes = 4 << 20,
  logLevel: LogLevel = "info",
  handler: RecordingHandler = new RecordingHandler(),
) {
  return linkOnRings(
    (options) => new SplitRingDriver(options),
    { size, features, dataBytes },
    logLevel,
    handler,
  );
}

/**
 * The front-end restarts RX: ring 0 stops, and a new `size`-entry ring with `features`
 * at `base` in `memory` starts in its place. Returns the new ring's driver.
 */
function restartRx(
  link: VhostUserLink,
  memory: ArrayGuestMemory,
  size: number,
  features: Partial<NegotiatedFeatures>,
  base: number,
): SplitRingDriver {
  link.stopVring(0);
  const rx = new SplitRingDriver({ size, index: 0, features, memory, base, dataBytes: 1 << 20 });
  link.startVring(rx.vring(), 0);
  return rx;
}

type Layout = "one" | "split-header" | "many";

/**
 * The guest queues `frame` for transmission with the header laid out as `layout`; the
 * header is all zero unless its 12 bytes are given.
 */
function guestTransmit(
  tx: SplitRingDriver,
  frame: Uint8Array,
  layout: Layout,
  indirect: boolean,
  header?: Uint8Array,
): number {
  const packet = writeTxPacket(tx, frame, header);
  const addr = packet.addr;
  let cuts: number[];
  if (layout === "one") cuts = [packet.length];
  else if (layout === "split-header") cuts = [NET_HDR_SIZE, packet.length];
  else {cuts = [5, NET_HDR_SIZE + 3, NET_HDR_SIZE + 40].filter((c) => c < packet.length).concat([
      packet.length,
    ]);}
  const segments = cuts.map((end, i) => {
    const start = i === 0 ? 0 : cuts[i - 1];
    return { addr: addr + start, length: end - start, writable: false };
  });
  const head = tx.addChain(segments, indirect);
  assert.ok(head !== null);
  return head;
}

/**
 * Reads the frames the device wrote ({@link receiveFrames}); none of them carries
 * header flags or a GSO type.
 */
function guestReceive(rx: SplitRingDriver, posted: PostedBuffers): ReceivedFrames {
  const got = receiveFrames(rx, posted);
  for (const header of got.headers) {
    assert.equal(header.flags, 0);
    assert.equal(header.gsoType, 0);
  }
  return got;
}

const matrix: Partial<NegotiatedFeatures>[] = [];
Deno.test("VhostUserLink.maxFrameLength follows the guest's RX buffers without MRG_RXBUF", () => {
  const plain = setup({});
  assert.equal(plain.link.maxFrameLength, 65535, "nothing known before a buffer is seen");
  postRxBuffers(plain.rx, new Map(), 2, 1518 + NET_HDR_SIZE);
  assert.equal(plain.link.sendFrame(frameOf(60, 0)), SendResult.Sent);
  assert.equal(plain.link.maxFrameLength, 1518);
  const merging = setup({ mergeableRxBuffers: true });
  postRxBuffers(merging.rx, new Map(), 50, 1518 + NET_HDR_SIZE);
  assert.equal(merging.link.sendFrame(frameOf(60, 0)), SendResult.Sent);
  assert.equal(merging.link.maxFrameLength, 65535, "49 buffers merge into any frame");
});

Deno.test("VhostUserLink.maxFrameLength with MRG_RXBUF is what the buffers posted now can hold", () => {
  const { rx, link } = setup({ mergeableRxBuffers: true }, 256);
  const posted: PostedBuffers = new Map();
  postRxBuffers(rx, posted, 4, 1000);
  assert.equal(link.maxFrameLength, 65535, "nothing known before a buffer is seen");
  assert.equal(link.sendFrame(frameOf(60, 0)), SendResult.Sent);
  assert.equal(link.maxFrameLength, 3 * 1000 - NET_HDR_SIZE, "three 1000-byte buffers left");
  assert.equal(link.sendFrame(frameOf(3 * 1000 - NET_HDR_SIZE, 1)), SendResult.Sent);
  assert.equal(link.maxFrameLength, 0, "every buffer used");
  postRxBuffers(rx, posted, 100, 1000);
  assert.equal(link.maxFrameLength, 65535, "plenty again");
});

for (const eventIndex of [false, true]) {
  for (const indirectDescriptors of [false, true]) {
    for (const mergeableRxBuffers of [false, true]) {
      matrix.push({ eventIndex, indirectDescriptors, mergeableRxBuffers });
    }
  }
}
const label = (f: Partial<NegotiatedFeatures>) =>
  `EVENT_IDX ${f.eventIndex ? "on" : "off"}, INDIRECT ${
    f.indirectDescriptors ? "on" : "off"
  }, MRG_RXBUF ${f.mergeableRxBuffers ? "on" : "off"}`;

for (const features of matrix) {
  Deno.test(`VhostUserLink.kick() delivers TX frames intact (${label(features)})`, async () => {
    const { tx, handler, link } = setup(features);
    assert.deepEqual(handler.events, ["up"]);
    const sent: Uint8Array[] = [];
    const layouts: Layout[] = ["one", "split-header", "many"];
    for (const [i, length] of [60, 1514, 65535, 14].entries()) {
      for (const layout of layouts) {
        const f = frameOf(length, i);
        sent.push(f);
        guestTransmit(tx, f, layout, features.indirectDescriptors ?? false);
      }
    }
    link.kick(1, 1);
    assert.equal(handler.frames.length, sent.length);
    handler.frames.forEach((f, i) => assert.deepEqual(f, sent[i]));
    const used = tx.takeUsed();
    assert.equal(used.length, sent.length);
    assert.ok(used.every((u) => u.len === 0));
    assert.equal(tx.notifications, 1, "one notification for the batch");
    assert.deepEqual(handler.events, ["up", `batch:${sent.length}`]);
    // Busy: the queue is looked at once more after Deno's I/O phase; that look finds
    // nothing and asks for the next kick.
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(handler.frames.length, sent.length);
    assert.equal(tx.notifications, 1, "the empty look notifies nothing");
    if (features.eventIndex) assert.equal(tx.availEvent, tx.availIndex, "asks for the next kick");
  });

  Deno.test(
    `VhostUserLink.kick() takes frames added right after a batch without another kick (${
      label(features)
    })`,
    async () => {
      const { tx, handler, link } = setup(features);
      guestTransmit(tx, frameOf(60, 1), "one", false);
      link.kick(1, 1);
      assert.equal(handler.frames.length, 1);
      const late = frameOf(1514, 2);
      guestTransmit(tx, late, "one", false); // no kick: the link said it would look again
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(handler.frames.length, 2);
      assert.deepEqual(handler.frames[1], late);
      assert.equal(tx.takeUsed().length, 2);
      await new Promise((resolve) => setImmediate(resolve));
      if (features.eventIndex) assert.equal(tx.availEvent, tx.availIndex, "asks for the next kick");
      assert.deepEqual(handler.events, ["up", "batch:1", "batch:2"]);
    },
  );

  Deno.test(`VhostUserLink.sendFrame() fills RX buffers with header and frame (${label(features)})`, () => {
    const { rx, link } = setup(features);
    const posted: PostedBuffers = new Map();
    const mrg = features.mergeableRxBuffers ?? false;
    const bufferBytes = mrg ? 1536 : 65535 + NET_HDR_SIZE;
    postRxBuffers(
      rx,
      posted,
      mrg ? 60 : 6,
      bufferBytes,
      mrg ? 1 : 3,
      features.indirectDescriptors ?? false,
    );
    const frames = [
      frameOf(60, 1),
      frameOf(1514, 2),
      frameOf(1525, 3),
      frameOf(9000, 4),
      frameOf(65535, 5),
    ];
    for (const f of frames) assert.equal(link.sendFrame(f), SendResult.Sent);
    assert.equal(rx.usedIndex, 0, "nothing published before flush");
    link.flush();
    assert.equal(rx.notifications, 1);
    const got = guestReceive(rx, posted);
    assert.deepEqual(got.frames, frames);
    if (mrg) {
      assert.deepEqual(got.numBuffers, [1, 1, 2, 6, 43]);
    } else {
      assert.deepEqual(got.numBuffers, [1, 1, 1, 1, 1]);
    }
  });
}

Deno.test("VhostUserLink.sendFrame() drops frames larger than one buffer without MRG_RXBUF", () => {
  const { rx, link, lines } = setup({});
  const posted: PostedBuffers = new Map();
  postRxBuffers(rx, posted, 2, 1518 + NET_HDR_SIZE);
  assert.equal(link.sendFrame(frameOf(1519, 0)), SendResult.Dropped);
  assert.equal(lines.length, 1);
  assert.equal(link.sendFrame(frameOf(1518, 0)), SendResult.Sent, "the buffer was kept");
  link.flush();
  assert.equal(guestReceive(rx, posted).frames[0].length, 1518);
});

for (const eventIndex of [false, true]) {
  Deno.test(`VhostUserLink.sendFrame() returns NoRoom and calls back on the RX kick (EVENT_IDX ${eventIndex})`, () => {
    const { rx, link } = setup({ eventIndex, mergeableRxBuffers: true });
    const posted: PostedBuffers = new Map();
    let woken = 0;
    link.onWritable(() => woken++);
    postRxBuffers(rx, posted, 2, 1536);
    rx.needsKick();
    assert.equal(link.sendFrame(frameOf(4000, 1)), SendResult.NoRoom, "3 buffers needed, 2 posted");
    assert.equal(woken, 0);
    link.flush();
    assert.equal(rx.usedIndex, 0, "the 2 buffers were not consumed");
    postRxBuffers(rx, posted, 1, 1536);
    assert.equal(rx.needsKick(), true, "the device asked for a kick");
    link.kick(0, 5);
    assert.equal(woken, 1);
    assert.equal(link.sendFrame(frameOf(4000, 1)), SendResult.Sent);
    link.flush();
    assert.deepEqual(guestReceive(rx, posted).frames, [frameOf(4000, 1)]);
    link.kick(0, 6);
    assert.equal(woken, 1, "no callback without a NoRoom");
    if (!eventIndex) {
      postRxBuffers(rx, posted, 1, 1536);
      assert.equal(rx.needsKick(), false, "kicks are off while buffers are plenty");
    }
  });
}

Deno.test("VhostUserLink reports link up when both rings run and down when one stops", async () => {
  const { rx, tx, handler, link } = setup({});
  const f = frameOf(60, 0);
  guestTransmit(tx, f, "one", false);
  guestTransmit(tx, f, "one", false);
  link.kick(1, 0);
  assert.equal(link.stopVring(1), 2, "next avail index");
  assert.deepEqual(handler.events, ["up", "batch:2", "down"]);
  assert.equal(link.sendFrame(f), SendResult.Dropped, "link down");
  guestTransmit(tx, f, "one", false);
  link.startVring(tx.vring(2), 1);
  assert.deepEqual(handler.events, ["up", "batch:2", "down", "up"], "no TX turn inside start");
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(
    handler.events,
    ["up", "batch:2", "down", "up", "batch:3"],
    "pending chain processed by the turn start scheduled",
  );
  assert.equal(link.stopVring(0), 0);
  assert.equal(link.stopVring(0), 0, "stopping twice is harmless");
  assert.equal(handler.link, link);
  void rx;
});

Deno.test("`VhostUserLink.stopVring()` drops the ring and reports link down when signalling the guest throws", () => {
  const memory = new ArrayGuestMemory();
  const lines: string[] = [];
  const logger = new Logger();
  logger.setSink((_l, line) => lines.push(line));
  const driver = (index: number, base: number) =>
    new SplitRingDriver({ size: 16, index, features: {}, memory, base, dataBytes: 1 << 16 });
  const rx = driver(0, 0x10_0000);
  const tx = driver(1, 0x1000_0000);
  const handler = new RecordingHandler();
  const link = new VhostUserLink(handler, { logger, clock: () => 7 });
  // a call fd that cannot be written (a pipe's read end: EBADF)
  const failingNotify = () => {
    throw new Error("eventfd_write(fd 32) failed: EBADF");
  };
  link.startVring({ ...rx.vring(), notifyGuest: failingNotify }, 0);
  link.startVring({ ...tx.vring(), notifyGuest: failingNotify }, 0);
  postRxBuffers(rx, new Map(), 2, 1536);
  // filled but not yet published: stopVring publishes it, and that signals the guest
  assert.equal(link.sendFrame(frameOf(60, 1)), SendResult.Sent);
  assert.equal(link.stopVring(0), 1, "next available index after the consumed chain");
  assert.deepEqual(handler.events, ["up", "down"], "linkDown called");
  assert.equal(rx.usedIndex, 1, "the filled buffer was returned before stopping");
  assert.equal(link.sendFrame(frameOf(60, 2)), SendResult.Dropped, "RX ring dropped");
  assert.ok(lines.some((l) => /EBADF/.test(l)), `the failure is logged: ${lines}`);
  assert.equal(link.stopVring(1), 0);
  assert.deepEqual(handler.events, ["up", "down"], "linkDown only once");
  // the link starts again over new rings
  link.startVring(rx.vring(1), 1);
  link.startVring(tx.vring(), 1);
  assert.deepEqual(handler.events, ["up", "down", "up"]);
});

Deno.test("`VhostUserLink.stopVring()` drops the ring even when linkDown throws", () => {
  const { rx, handler, link } = setup({});
  handler.linkDown = () => {
    throw new Error("stack failed");
  };
  assert.throws(() => link.stopVring(0), /stack failed/);
  assert.equal(link.sendFrame(frameOf(60, 1)), SendResult.Dropped, "RX ring dropped");
  link.startVring(rx.vring(), 1);
  assert.deepEqual(handler.events, ["up", "up"], "up again over the restarted ring");
});

Deno.test("VhostUserLink continues a TX backlog larger than the ring on a later turn", async () => {
  const { tx, handler, link } = setup({}, 8);
  // A guest on another CPU that refills as fast as we return chains: once the used
  // index is published (the end of each batch) it reclaims them and offers new
  // frames, 31 in all.
  let offered = 0;
  const refill = () => {
    tx.takeUsed();
    while (offered < 31 && tx.freeDescriptors > 0) {
      guestTransmit(tx, frameOf(60, offered), "one", false);
      offered++;
    }
  };
  refill();
  const endOfBatch = handler.endOfBatch.bind(handler);
  handler.endOfBatch = () => {
    endOfBatch();
    refill();
  };
  link.kick(1, 0);
  assert.equal(handler.frames.length, 8, "one ring's worth per turn");
  assert.equal(tx.notifications, 1);
  for (let turn = 0; turn < 10 && handler.frames.length < 31; turn++) {
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  assert.equal(handler.frames.length, 31, "the rest came on later turns without a kick");
  assert.equal(link.stopVring(1), 31);
});

/**
 * A transmitting guest like DPDK's virtio_user (testpmd txonly): it reclaims used
 * chains, fills the free descriptors with frames, and kicks only when the device asks
 * for it (NO_NOTIFY clear, or avail_event passed with EVENT_IDX); otherwise it trusts
 * the device to be polling. It never kicks "just in case".
 */
class KickOnDemandGuest {
  readonly #tx: SplitRingDriver;
  readonly #link: VhostUserLink;
  /** Frames offered so far. */
  offered = 0;
  /** Kicks sent so far. */
  kicks = 0;

  constructor(tx: SplitRingDriver, link: VhostUserLink) {
    this.#tx = tx;
    this.#link = link;
  }

  /** Offers up to `count` frames (as many as free descriptors allow), kicking if asked to. */
  send(count: number): number {
    this.#tx.takeUsed();
    let added = 0;
    while (added < count && this.#tx.freeDescriptors > 0) {
      guestTransmit(this.#tx, frameOf(60, this.offered + added), "one", false);
      added++;
    }
    this.offered += added;
    if (this.#tx.needsKick()) {
      this.kicks++;
      this.#link.kick(1, 0);
    }
    return added;
  }
}

Deno.test("VhostUserLink queues its look after a busy turn with runSoon: no event loop waits on the JS thread before it", async () => {
  const { tx, handler, link } = setup({}, 8);
  await loopTurns(1); // the first turn, from the loop
  assert.equal(pendingSoonTasks(), 0);
  guestTransmit(tx, frameOf(60, 1), "one", false);
  link.kick(1, 0);
  assert.equal(pendingSoonTasks(), 0, "one frame: the kick is re-armed at once, no look");
  assert.equal(tx.usedFlags & VIRTQ_USED_F_NO_NOTIFY, 0, "kicks asked for");
  guestTransmit(tx, frameOf(60, 2), "one", false);
  guestTransmit(tx, frameOf(60, 3), "one", false);
  link.kick(1, 0);
  assert.equal(pendingSoonTasks(), 1, "the look after the busy turn (two frames)");
  assert.equal(tx.usedFlags & VIRTQ_USED_F_NO_NOTIFY, VIRTQ_USED_F_NO_NOTIFY, "no kicks meanwhile");
  await loopTurns(1);
  assert.equal(pendingSoonTasks(), 0, "the look found nothing and re-armed the kick");
  guestTransmit(tx, frameOf(60, 4), "one", false);
  guestTransmit(tx, frameOf(60, 5), "one", false);
  link.kick(1, 0);
  assert.equal(link.stopVring(1), 5);
  assert.equal(pendingSoonTasks(), 0, "stopping the ring drops its pending look");
  assert.equal(handler.frames.length, 5);
});

/** Lets the loop run `turns` times (setImmediate rounds: no timers). */
async function loopTurns(turns: number): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve));
}

Deno.test("VhostUserLink.kick() keeps polling or asks for a kick after a turn that took a whole ring", async () => {
  const { tx, handler, link } = setup({}, 8);
  const guest = new KickOnDemandGuest(tx, link);
  guest.send(2); // kicked: the turn takes both, sets NO_NOTIFY and will look again
  assert.equal(guest.kicks, 1);
  assert.equal(handler.frames.length, 2);
  assert.equal(guest.send(8), 8, "the whole ring, without a kick (NO_NOTIFY)");
  assert.equal(guest.kicks, 1);
  await loopTurns(1); // the poll takes exactly a ring's worth: its budget
  assert.equal(handler.frames.length, 10);
  guest.send(1); // reclaims the 8, offers one more
  await loopTurns(4);
  assert.equal(
    handler.frames.length,
    11,
    `the frame after a full-ring turn is taken (kicks ${guest.kicks}, used flags ${tx.usedFlags})`,
  );
});

Deno.test("VhostUserLink.counters count frames, kicks, polls and re-arms; logged at debug level when the link goes down", async () => {
  const { tx, rx, handler, link, lines } = setup({}, 8, 1 << 16, "debug");
  await loopTurns(1); // the first turn, from the loop: empty, re-arms the kick
  const guest = new KickOnDemandGuest(tx, link);
  guest.send(3); // kicked
  await loopTurns(1); // the poll after the busy turn: empty, re-arms
  guest.send(1); // kicked again: one frame, re-armed at once (no poll)
  await loopTurns(1);
  const posted: PostedBuffers = new Map();
  postRxBuffers(rx, posted, 1, 2048);
  assert.equal(link.sendFrame(frameOf(60, 1)), SendResult.Sent);
  assert.equal(link.sendFrame(frameOf(60, 2)), SendResult.NoRoom);
  link.kick(0, 0);
  assert.deepEqual(link.counters, {
    txFrames: 4,
    txRejected: 0,
    txScattered: 0,
    txGathered: 0,
    txSegmented: 0,
    txTurns: 4,
    txKicks: 2,
    txPolls: 2,
    txDiscarded: 0,
    txEmptyPolls: 2,
    txRearms: 3,
    rxFrames: 1,
    rxChains: 1,
    rxSegmented: 0,
    rxRuns: 0,
    rxRunFrames: 0,
    rxNoRoom: 1,
    rxKicks: 1,
  });
  assert.equal(handler.frames.length, 4);
  const summary = link.describeCounters();
  assert.match(
    summary,
    /TX 4 frames \(0 segmented, 0 rejected, 0 sent from guest memory\) in 4 turns: 2 kicked, 2 from the loop \(2 empty\)/,
  );
  assert.ok(!lines.includes(summary));
  link.stopVring(1);
  assert.ok(lines.includes(summary), `logged when the link went down: ${lines}`);
  const quiet = setup({}, 8);
  quiet.link.stopVring(1);
  assert.deepEqual(quiet.lines, [], "nothing above debug level");
});

for (const eventIndex of [false, true]) {
  Deno.test(`VhostUserLink.kick() takes every frame of a guest that kicks only when asked (EVENT_IDX ${eventIndex ? "on" : "off"})`, async () => {
    const step = fc.oneof(
      fc.record({ send: fc.integer({ min: 1, max: 10 }) }),
      fc.record({ turns: fc.integer({ min: 1, max: 3 }) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 30 }), async (steps) => {
        const { tx, handler, link } = setup({ eventIndex }, 8, 1 << 16);
        const guest = new KickOnDemandGuest(tx, link);
        for (const s of steps) {
          if ("send" in s) guest.send(s.send);
          else await loopTurns(s.turns);
        }
        // Nothing more is offered: whatever is pending must be taken within a few turns
        // (one poll, or the kick the device asked for).
        await loopTurns(4);
        assert.equal(handler.frames.length, guest.offered);
        link.stopVring(1);
      }),
      { numRuns: 150 },
    );
  });
}

// ---- bad guest input at the virtio-net level

Deno.test("VhostUserLink drops TX chains shorter than the header, with one log line", () => {
  const { tx, handler, link, lines } = setup({});
  const a = tx.alloc(64);
  tx.addChain([{ addr: a, length: 8, writable: false }]);
  tx.addChain([{ addr: a, length: NET_HDR_SIZE + 10, writable: false }]);
  guestTransmit(tx, frameOf(60, 9), "one", false);
  link.kick(1, 0);
  assert.deepEqual(handler.frames, [frameOf(60, 9)]);
  assert.deepEqual(tx.takeUsed().map((u) => u.len), [0, 0, 0]);
  assert.equal(lines.length, 1);
  assert.match(lines[0], /8 bytes is not a 12-byte header plus a frame/);
});

Deno.test("VhostUserLink drops TX frames over 65535 bytes", () => {
  const { tx, handler, link, lines } = setup({});
  const a = tx.alloc(NET_HDR_SIZE + 65536);
  const head = tx.addChain([{ addr: a, length: NET_HDR_SIZE + 65536, writable: false }]);
  link.kick(1, 0);
  assert.equal(handler.frames.length, 0);
  assert.deepEqual(tx.takeUsed(), [{ id: head, len: 0 }]);
  assert.match(lines[0], /65548 bytes/);
});

Deno.test("VhostUserLink drops TX chains with writable buffers or offload flags", () => {
  const { tx, handler, link, lines } = setup({});
  const a = tx.alloc(100);
  tx.addChain([{ addr: a, length: 80, writable: false }, { addr: a, length: 20, writable: true }]);
  link.kick(1, 0);
  const packet = new Uint8Array(NET_HDR_SIZE + 60);
  packet[1] = 1; // gso TCPv4
  const b = tx.alloc(packet.length);
  tx.write(b, packet);
  tx.addChain([{ addr: b, length: packet.length, writable: false }]);
  tx.addChain([{ addr: b, length: packet.length, writable: false }]);
  link.kick(1, 5000);
  assert.equal(handler.frames.length, 0);
  assert.equal(tx.takeUsed().length, 3);
  assert.equal(lines.length, 2, "the repeated fault is rate-limited");
  assert.match(lines[0], /device-writable/);
  assert.match(lines[1], /gso type 1 was not negotiated/);
});

Deno.test("VhostUserLink returns RX buffers smaller than the header with len 0", () => {
  const { rx, link, lines } = setup({ mergeableRxBuffers: true });
  const posted: PostedBuffers = new Map();
  const small = rx.alloc(8);
  const bad = rx.addChain([{ addr: small, length: 8, writable: true }])!;
  const readable = rx.addChain([{ addr: small, length: 8, writable: false }])!;
  postRxBuffers(rx, posted, 1, 1536);
  assert.equal(link.sendFrame(frameOf(100, 1)), SendResult.Sent);
  link.flush();
  const used = rx.takeUsed();
  assert.deepEqual(used.slice(0, 2), [{ id: bad, len: 0 }, { id: readable, len: 0 }]);
  assert.equal(used[2].len, NET_HDR_SIZE + 100);
  assert.equal(lines.length, 1);
  assert.match(lines[0], /smaller than the 12-byte header/);
});

Deno.test("VhostUserLink keeps RX working when the TX queue is broken", () => {
  const { rx, tx, handler, link, lines } = setup({});
  tx.offer(tx.size + 3); // head index out of range
  link.kick(1, 0);
  assert.match(lines[0], /broken/);
  guestTransmit(tx, frameOf(60, 1), "one", false);
  link.kick(1, 1);
  assert.equal(handler.frames.length, 0, "a broken queue stays idle");
  const posted: PostedBuffers = new Map();
  postRxBuffers(rx, posted, 1, 2048);
  assert.equal(link.sendFrame(frameOf(60, 2)), SendResult.Sent);
  link.flush();
  assert.deepEqual(guestReceive(rx, posted).frames, [frameOf(60, 2)]);
});

Deno.test("VhostUserLink keeps TX working when the RX queue is broken", () => {
  const { rx, tx, handler, link } = setup({});
  rx.setAvailIndex(rx.size + 1);
  assert.equal(
    link.sendFrame(frameOf(60, 2)),
    SendResult.Dropped,
    "found broken: no room will come",
  );
  assert.equal(link.sendFrame(frameOf(60, 2)), SendResult.Dropped, "broken: dropped from now on");
  guestTransmit(tx, frameOf(60, 1), "one", false);
  link.kick(1, 1);
  assert.deepEqual(handler.frames, [frameOf(60, 1)]);
});

Deno.test("VhostUserLink.sendFrame() drops frames over 65535 bytes", () => {
  const { rx, link } = setup({ mergeableRxBuffers: true });
  postRxBuffers(rx, new Map(), 60, 2048);
  assert.equal(link.sendFrame(new Uint8Array(65536)), SendResult.Dropped);
  assert.equal(link.sendFrame(new Uint8Array(0)), SendResult.Dropped);
});

Deno.test("VhostUserLink.sendFrame() drops a frame that a whole ring of buffers cannot hold", () => {
  const { rx, link, lines } = setup({ mergeableRxBuffers: true }, 4);
  const posted: PostedBuffers = new Map();
  postRxBuffers(rx, posted, 4, 1024);
  assert.equal(link.sendFrame(frameOf(5000, 1)), SendResult.Dropped);
  assert.match(lines[0], /larger than the whole RX ring/);
  assert.equal(link.sendFrame(frameOf(3000, 2)), SendResult.Sent, "the buffers were kept");
  link.flush();
  assert.deepEqual(guestReceive(rx, posted).frames, [frameOf(3000, 2)]);
});

Deno.test("VhostUserLink.sendFrame() drops a frame larger than a restarted, smaller RX ring", () => {
  const { memory, link, lines } = setup({ mergeableRxBuffers: true }, 8);
  // The frontend restarts RX with 4 descriptors: the 8-entry scratch arrays stay.
  const rx = restartRx(link, memory, 4, { mergeableRxBuffers: true }, 0x2000_0000);
  const posted: PostedBuffers = new Map();
  postRxBuffers(rx, posted, 4, 1024);
  // Waiting for more buffers would stall RX forever: the guest has none left to post.
  assert.equal(link.sendFrame(frameOf(5000, 1)), SendResult.Dropped);
  assert.match(lines.at(-1)!, /larger than the whole RX ring/);
  assert.equal(link.sendFrame(frameOf(3000, 2)), SendResult.Sent, "the buffers were kept");
  link.flush();
  assert.deepEqual(guestReceive(rx, posted).frames, [frameOf(3000, 2)]);
});

Deno.test("VhostUserLink.sendFrame() delivers every Sent frame intact for any buffer layout", () => {
  assertEverySentFrameArrives(
    (features) => setup(features, 32, 1 << 20),
    (rx, b) => rx.freeDescriptors >= b.pieces,
  );
});

// ---- checksum offload (VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM)

/** Offset of the TCP checksum field in an untagged Ethernet + 20-byte IPv4 + TCP frame. */
const TCP4_CSUM_START = 14 + 20;
/** The TCP checksum field inside the TCP header (RFC 9293 §3.1). */
const TCP_CSUM_OFFSET = 16;

/** Replaces the link's handler's handleFrame so that it also records the info argument. */
function recordInfos(handler: RecordingHandler): (number | undefined)[] {
  const infos: (number | undefined)[] = [];
  const handle = handler.handleFrame.bind(handler);
  handler.handleFrame = (frame: Uint8Array, _now?: number, info?: number) => {
    handle(frame);
    infos.push(info);
  };
  return infos;
}

/** A virtio-net header with these offload fields (csum fields aimed at a TCP/IPv4 checksum). */
function offloadHeader(fields: { flags?: number; gsoType?: number }): Uint8Array {
  const header = createNetHeader();
  header.flags = fields.flags ?? 0;
  header.gsoType = fields.gsoType ?? VIRTIO_NET_HDR_GSO_NONE;
  if (header.gsoType !== VIRTIO_NET_HDR_GSO_NONE) {
    header.hdrLen = TCP4_CSUM_START + 20;
    header.gsoSize = 1448;
  }
  if ((header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) {
    header.csumStart = TCP4_CSUM_START;
    header.csumOffset = TCP_CSUM_OFFSET;
  }
  const bytes = new Uint8Array(NET_HDR_SIZE);
  encodeNetHeader(header, bytes, 0);
  return bytes;
}

Deno.test("VhostUserLink.kick() passes NEEDS_CSUM TX frames on as FrameInfo.ChecksumPending with CSUM negotiated", () => {
  const { tx, handler, link, lines } = setup({ checksumOffload: true });
  const infos = recordInfos(handler);
  const needsCsum = offloadHeader({ flags: VIRTIO_NET_HDR_F_NEEDS_CSUM });
  const sent: Uint8Array[] = [];
  const expected: number[] = [];
  const layouts: Layout[] = ["one", "split-header", "many"];
  for (const [i, layout] of layouts.entries()) {
    for (const pending of [true, false]) {
      const f = frameOf(60 + 100 * i, i * 2 + (pending ? 1 : 0));
      sent.push(f);
      expected.push(pending ? FrameInfo.ChecksumPending : FrameInfo.None);
      guestTransmit(tx, f, layout, false, pending ? needsCsum : undefined);
    }
  }
  // DATA_VALID means nothing on TX (virtio 1.2 §5.1.6.2): no ChecksumPending either.
  const dataValidOnly = frameOf(80, 99);
  sent.push(dataValidOnly);
  expected.push(FrameInfo.None);
  guestTransmit(
    tx,
    dataValidOnly,
    "one",
    false,
    offloadHeader({ flags: VIRTIO_NET_HDR_F_DATA_VALID }),
  );
  link.kick(1, 0);
  assert.deepEqual(handler.frames, sent, "frames arrive unchanged (the checksum is not completed)");
  assert.deepEqual(infos, expected);
  assert.equal(tx.takeUsed().length, sent.length);
  assert.deepEqual(lines, []);
});

for (const guestChecksum of [false, true]) {
  Deno.test(`VhostUserLink.kick() drops NEEDS_CSUM TX frames without CSUM negotiated (GUEST_CSUM ${guestChecksum ? "on" : "off"})`, () => {
    const { tx, handler, link, lines } = setup({ guestChecksum });
    const infos = recordInfos(handler);
    const needsCsum = offloadHeader({ flags: VIRTIO_NET_HDR_F_NEEDS_CSUM });
    guestTransmit(tx, frameOf(60, 1), "one", false, needsCsum);
    guestTransmit(tx, frameOf(60, 2), "many", false, needsCsum);
    guestTransmit(tx, frameOf(60, 3), "one", false);
    link.kick(1, 0);
    assert.deepEqual(handler.frames, [frameOf(60, 3)]);
    assert.deepEqual(infos, [FrameInfo.None]);
    assert.deepEqual(tx.takeUsed().map((u) => u.len), [0, 0, 0], "every chain is returned");
    assert.equal(lines.length, 1, "the repeated fault is rate-limited");
    assert.match(lines[0], /offload flags 1 gso 0 were not negotiated/);
  });
}

for (const checksumOffload of [false, true]) {
  Deno.test(`VhostUserLink.kick() drops GSO TX frames without HOST_TSO4/6 (CSUM ${checksumOffload ? "on" : "off"})`, () => {
    const { tx, handler, link, lines } = setup({ checksumOffload, guestChecksum: true });
    const infos = recordInfos(handler);
    const gsoTypes = [
      VIRTIO_NET_HDR_GSO_TCPV4,
      VIRTIO_NET_HDR_GSO_UDP,
      VIRTIO_NET_HDR_GSO_TCPV6,
      VIRTIO_NET_HDR_GSO_UDP_L4,
      VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN,
    ];
    for (const [i, gsoType] of gsoTypes.entries()) {
      // As a Linux guest sends them: GSO always with NEEDS_CSUM; and once without.
      const header = offloadHeader({ flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, gsoType });
      guestTransmit(tx, frameOf(3000, i), "one", false, header);
      guestTransmit(tx, frameOf(3000, i + 10), "many", false, offloadHeader({ gsoType }));
    }
    guestTransmit(tx, frameOf(60, 20), "one", false);
    link.kick(1, 0);
    assert.deepEqual(handler.frames, [frameOf(60, 20)], "only the plain frame is handed over");
    assert.deepEqual(infos, [FrameInfo.None]);
    assert.equal(tx.takeUsed().length, 2 * gsoTypes.length + 1);
    assert.equal(lines.length, 1);
    // Without CSUM the NEEDS_CSUM flag is refused first.
    assert.match(lines[0], /not negotiated/);
  });
}

/** Whether two byte arrays hold the same bytes (no diff of 64 KiB arrays on failure). */
function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** A GSO header as a Linux guest sends it: NEEDS_CSUM at the TCP checksum, these GSO fields. */
function gsoHeader(
  gsoType: number,
  fields: { flags?: number; hdrLen?: number; gsoSize?: number; csumStart?: number } = {},
): Uint8Array {
  const header = createNetHeader();
  header.flags = fields.flags ?? VIRTIO_NET_HDR_F_NEEDS_CSUM;
  header.gsoType = gsoType;
  header.hdrLen = fields.hdrLen ?? TCP4_CSUM_START + 20;
  header.gsoSize = fields.gsoSize ?? 1448;
  header.csumStart = fields.csumStart ?? TCP4_CSUM_START;
  header.csumOffset = TCP_CSUM_OFFSET;
  const bytes = new Uint8Array(NET_HDR_SIZE);
  encodeNetHeader(header, bytes, 0);
  return bytes;
}

const ALL_TSO: Partial<NegotiatedFeatures> = {
  indirectDescriptors: true,
  checksumOffload: true,
  guestChecksum: true,
  hostTso4: true,
  hostTso6: true,
  hostEcn: true,
  guestTso4: true,
  guestTso6: true,
};

Deno.test("VhostUserLink.kick() hands over GSO_TCPV4/TCPV6 TX frames of up to 64 KiB with HOST_TSO4/6, marked SegmentedTcp4/6", () => {
  const { tx, handler, link, lines } = setup(ALL_TSO, 64, 8 << 20);
  const infos = recordInfos(handler);
  const big4 = frameOf(65000, 1);
  const big6 = frameOf(40000, 2);
  const ecn = frameOf(3000, 3);
  const headerOnly = frameOf(54, 4);
  guestTransmit(tx, big4, "many", false, gsoHeader(VIRTIO_NET_HDR_GSO_TCPV4));
  guestTransmit(tx, big6, "one", true, gsoHeader(VIRTIO_NET_HDR_GSO_TCPV6, { csumStart: 54 }));
  guestTransmit(
    tx,
    ecn,
    "split-header",
    false,
    gsoHeader(VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN),
  );
  // hdr_len is a hint (Linux puts skb_headlen there): up to the whole frame is fine.
  guestTransmit(tx, headerOnly, "one", false, gsoHeader(VIRTIO_NET_HDR_GSO_TCPV4, { hdrLen: 54 }));
  link.kick(1, 0);
  assert.deepEqual(lines, []);
  assert.deepEqual(handler.frames.map((f) => f.length), [65000, 40000, 3000, 54]);
  for (const [i, frame] of [big4, big6, ecn, headerOnly].entries()) {
    assert.ok(equalBytes(handler.frames[i], frame), `frame ${i} unchanged`);
  }
  const pending = FrameInfo.ChecksumPending;
  assert.equal(link.counters.txSegmented, 4);
  assert.deepEqual(infos, [
    pending | FrameInfo.SegmentedTcp4,
    pending | FrameInfo.SegmentedTcp6,
    pending | FrameInfo.SegmentedTcp4,
    pending | FrameInfo.SegmentedTcp4,
  ]);
  assert.deepEqual(lines, []);
});

for (
  const [name, features, header, reason] of [
    [
      "gso_size 0",
      ALL_TSO,
      gsoHeader(VIRTIO_NET_HDR_GSO_TCPV4, { gsoSize: 0 }),
      /gso_size 0/,
    ],
    [
      "hdr_len past the frame",
      ALL_TSO,
      gsoHeader(VIRTIO_NET_HDR_GSO_TCPV4, { hdrLen: 3001 }),
      /hdr_len 3001 is past the 3000-byte frame/,
    ],
    [
      "no NEEDS_CSUM",
      ALL_TSO,
      gsoHeader(VIRTIO_NET_HDR_GSO_TCPV6, { flags: 0 }),
      /without NEEDS_CSUM/,
    ],
    [
      "ECN without HOST_ECN",
      { ...ALL_TSO, hostEcn: false },
      gsoHeader(VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN),
      /ECN was not negotiated/,
    ],
    [
      "TCPV6 with HOST_TSO4 only",
      { ...ALL_TSO, hostTso6: false },
      gsoHeader(VIRTIO_NET_HDR_GSO_TCPV6),
      /gso type 4 was not negotiated/,
    ],
    [
      "HOST_TSO4 without CSUM",
      { ...ALL_TSO, checksumOffload: false },
      gsoHeader(VIRTIO_NET_HDR_GSO_TCPV4, { flags: 0 }),
      /gso type 1 was not negotiated/,
    ],
    ["UDP (UFO)", ALL_TSO, gsoHeader(VIRTIO_NET_HDR_GSO_UDP), /gso type 3 was not negotiated/],
    [
      "UDP_L4 (USO)",
      ALL_TSO,
      gsoHeader(VIRTIO_NET_HDR_GSO_UDP_L4),
      /gso type 5 was not negotiated/,
    ],
  ] as const
) {
  Deno.test(`VhostUserLink.kick() drops a GSO TX frame with ${name}, returning its chain`, () => {
    const { tx, handler, link, lines } = setup(features);
    guestTransmit(tx, frameOf(3000, 1), "one", false, header);
    guestTransmit(tx, frameOf(60, 2), "one", false);
    link.kick(1, 0);
    assert.deepEqual(handler.frames, [frameOf(60, 2)]);
    assert.deepEqual(tx.takeUsed().map((u) => u.len), [0, 0]);
    assert.equal(link.counters.txRejected, 1);
    assert.equal(lines.length, 1);
    assert.match(lines[0], reason);
  });
}

Deno.test("VhostUserLink.tcpSegmentation follows GUEST_TSO4/6, only with GUEST_CSUM; deviceMtu the ring's MTU", () => {
  assert.equal(setup(ALL_TSO).link.tcpSegmentation, TcpSegmentation.Ipv4 | TcpSegmentation.Ipv6);
  assert.equal(setup({ ...ALL_TSO, guestTso6: false }).link.tcpSegmentation, TcpSegmentation.Ipv4);
  assert.equal(setup({ ...ALL_TSO, guestTso4: false }).link.tcpSegmentation, TcpSegmentation.Ipv6);
  assert.equal(setup({ ...ALL_TSO, guestChecksum: false }).link.tcpSegmentation, 0);
  assert.equal(setup({}).link.tcpSegmentation, 0);
  assert.equal(setup({}).link.deviceMtu, 0);
  assert.equal(setup({ mtu: 1500 }).link.deviceMtu, 1500);
});

for (const mergeableRxBuffers of [false, true]) {
  Deno.test(`VhostUserLink.commitFrame() with TcpSegments marks a large frame GSO_TCPV4/6 with gso_size and hdr_len (MRG_RXBUF ${mergeableRxBuffers ? "on" : "off"})`, () => {
    const { rx, link } = setup({ ...ALL_TSO, mergeableRxBuffers }, 256, 8 << 20);
    const posted: PostedBuffers = new Map();
    if (mergeableRxBuffers) postRxBuffers(rx, posted, 100, 1536);
    else postRxBuffers(rx, posted, 4, 65562, 17); // Linux's big packets: one chain of pages
    const cases = [
      { kind: TcpSegmentation.Ipv4, length: 65000, start: 34, type: VIRTIO_NET_HDR_GSO_TCPV4 },
      { kind: TcpSegmentation.Ipv6, length: 30000, start: 54, type: VIRTIO_NET_HDR_GSO_TCPV6 },
      // Payload no larger than one segment: a plain frame.
      { kind: TcpSegmentation.Ipv4, length: 54 + 1448, start: 34, type: VIRTIO_NET_HDR_GSO_NONE },
    ];
    const frames: Uint8Array[] = [];
    const space = newFrameSpace();
    for (const [i, c] of cases.entries()) {
      assert.equal(link.reserveFrame(space, c.length, 74), SendResult.Sent);
      const frame = frameOf(c.length, i);
      writeIntoSpace(space, frame);
      frames.push(frame);
      const headerLength = c.start + 20;
      assert.equal(
        link.commitFrame(c.length, c.start, TCP_CSUM_OFFSET, {
          kind: c.kind,
          size: 1448,
          headerLength,
        }),
        SendResult.Sent,
      );
    }
    link.flush();
    const headers = receiveFrames(rx, posted).headers;
    assert.equal(headers.length, 3);
    assert.equal(link.counters.rxSegmented, 2);
    for (const [i, c] of cases.entries()) {
      const h = headers[i];
      assert.equal(h.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM, `frame ${i}`);
      assert.deepEqual([h.csumStart, h.csumOffset], [c.start, TCP_CSUM_OFFSET]);
      assert.equal(h.gsoType, c.type, `frame ${i} gso_type`);
      const segmented = c.type !== VIRTIO_NET_HDR_GSO_NONE;
      assert.deepEqual(
        [h.gsoSize, h.hdrLen],
        segmented ? [1448, c.start + 20] : [0, 0],
        `frame ${i} gso_size, hdr_len`,
      );
    }
  });
}

for (
  const [name, features, start] of [
    ["without GUEST_TSO4", { ...ALL_TSO, guestTso4: false }, 34],
    ["without GUEST_CSUM", { ...ALL_TSO, guestChecksum: false }, 0],
    ["without a partial checksum", ALL_TSO, 0],
  ] as const
) {
  Deno.test(`VhostUserLink.commitFrame() drops a large TCP/IPv4 frame with TcpSegments ${name}`, () => {
    const { rx, link } = setup({ ...features, mergeableRxBuffers: true }, 256, 8 << 20);
    const posted: PostedBuffers = new Map();
    postRxBuffers(rx, posted, 100, 1536);
    const space = newFrameSpace();
    assert.equal(link.reserveFrame(space, 20000, 54), SendResult.Sent);
    writeIntoSpace(space, frameOf(20000, 1));
    const segments = { kind: TcpSegmentation.Ipv4, size: 1448, headerLength: 54 };
    assert.equal(link.commitFrame(20000, start, TCP_CSUM_OFFSET, segments), SendResult.Dropped);
    link.flush();
    assert.equal(rx.takeUsed().length, 0, "every reserved buffer went back");
  });
}

for (const guestChecksum of [false, true]) {
  for (const mergeableRxBuffers of [false, true]) {
    Deno.test(
      `VhostUserLink.sendFrame() marks RX frames DATA_VALID exactly with GUEST_CSUM (GUEST_CSUM ${
        guestChecksum ? "on" : "off"
      }, MRG_RXBUF ${mergeableRxBuffers ? "on" : "off"})`,
      () => {
        // CSUM (the TX direction) must not change what RX frames say.
        const { rx, link } = setup({
          guestChecksum,
          checksumOffload: !guestChecksum,
          mergeableRxBuffers,
        });
        const posted: PostedBuffers = new Map();
        // The first chain's first descriptor is smaller than the header.
        const addr = rx.alloc(2048);
        const split = rx.addChain([
          { addr, length: 5, writable: true },
          { addr: addr + 5, length: 2043, writable: true },
        ])!;
        posted.set(split, addr);
        postRxBuffers(rx, posted, 8, 2048);
        const lengths = [60, 1514, 1000];
        if (mergeableRxBuffers) lengths.push(5000); // spans three buffers
        for (const [i, length] of lengths.entries()) {
          assert.equal(link.sendFrame(frameOf(length, i)), SendResult.Sent);
        }
        link.flush();
        const headers = receiveFrames(rx, posted).headers;
        assert.equal(headers.length, lengths.length);
        for (const h of headers) {
          assert.equal(h.flags, guestChecksum ? VIRTIO_NET_HDR_F_DATA_VALID : 0);
          assert.equal(h.gsoType, VIRTIO_NET_HDR_GSO_NONE);
          assert.deepEqual([h.csumStart, h.csumOffset, h.hdrLen, h.gsoSize], [0, 0, 0, 0]);
        }
        assert.equal(link.l4ChecksumsOptional, guestChecksum);
      },
    );
  }
}

Deno.test("VhostUserLink.l4ChecksumsOptional follows GUEST_CSUM of the RX ring started last", () => {
  assert.equal(setup({}).link.l4ChecksumsOptional, false);
  assert.equal(setup({ checksumOffload: true }).link.l4ChecksumsOptional, false, "CSUM is TX only");
  const { memory, link, rx } = setup({ guestChecksum: true });
  assert.equal(link.l4ChecksumsOptional, true);
  // The frontend renegotiates without GUEST_CSUM and restarts RX.
  const plain = restartRx(link, memory, 64, {}, 0x2000_0000);
  assert.equal(link.l4ChecksumsOptional, false);
  const posted: PostedBuffers = new Map();
  postRxBuffers(plain, posted, 1, 2048);
  assert.equal(link.sendFrame(frameOf(60, 1)), SendResult.Sent);
  link.flush();
  assert.equal(receiveFrames(plain, posted).headers[0].flags, 0, "no DATA_VALID after the restart");
  void rx;
});

Deno.test("VhostUserLink.kick() stops passing ChecksumPending when TX restarts without CSUM", () => {
  const { memory, link, handler } = setup({ checksumOffload: true });
  const infos = recordInfos(handler);
  link.stopVring(1);
  const tx = new SplitRingDriver({
    size: 64,
    index: 1,
    features: {},
    memory,
    base: 0x3000_0000,
    dataBytes: 1 << 20,
  });
  link.startVring(tx.vring(), 0);
  guestTransmit(
    tx,
    frameOf(60, 1),
    "one",
    false,
    offloadHeader({ flags: VIRTIO_NET_HDR_F_NEEDS_CSUM }),
  );
  guestTransmit(tx, frameOf(60, 2), "one", false);
  link.kick(1, 0);
  assert.deepEqual(handler.frames, [frameOf(60, 2)]);
  assert.deepEqual(infos, [FrameInfo.None]);
});

Deno.test("VhostUserLink.sendFrame() marks a frame with a partial checksum NEEDS_CSUM at its position, only with GUEST_CSUM", () => {
  const { rx, link } = setup({ guestChecksum: true, mergeableRxBuffers: true });
  const posted: PostedBuffers = new Map();
  postRxBuffers(rx, posted, 8, 2048);
  assert.equal(link.sendFrame(frameOf(1514, 1), 34, 16), SendResult.Sent);
  assert.equal(link.sendFrame(frameOf(60, 2)), SendResult.Sent);
  assert.equal(link.sendFrame(frameOf(40, 3), 34, 16), SendResult.Dropped, "field past the end");
  link.flush();
  const [partial, whole] = receiveFrames(rx, posted).headers;
  assert.deepEqual([partial.flags, partial.csumStart, partial.csumOffset], [
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    34,
    16,
  ]);
  assert.deepEqual([whole.flags, whole.csumStart, whole.csumOffset], [
    VIRTIO_NET_HDR_F_DATA_VALID,
    0,
    0,
  ]);
  // Without GUEST_CSUM the guest could not complete it: never sent half done.
  const plain = setup({ mergeableRxBuffers: true });
  postRxBuffers(plain.rx, new Map(), 8, 2048);
  assert.equal(plain.link.sendFrame(frameOf(1514, 4), 34, 16), SendResult.Dropped);
  assert.equal(plain.link.sendFrame(frameOf(1514, 5)), SendResult.Sent);
});

Deno.test("VhostUserLink.reserveFrame() with MRG_RXBUF spans the posted buffers in place; commit returns what the frame did not use", () => {
  const { rx, link } = setup({ mergeableRxBuffers: true }, 256);
  const posted: PostedBuffers = new Map();
  postRxBuffers(rx, posted, 10, 4096);
  const space = newFrameSpace();
  assert.equal(link.reserveFrame(space, 20000, 54), SendResult.Sent);
  assert.equal(space.length, 20000);
  assert.ok(space.count >= 5, "the room is spread over several guest buffers");
  assert.equal(space.views[0].length, 4096 - NET_HDR_SIZE, "after the virtio-net header");
  const frame = frameOf(15000, 3);
  writeIntoSpace(space, frame);
  assert.equal(link.commitFrame(frame.length), SendResult.Sent);
  link.flush();
  const got = guestReceive(rx, posted);
  assert.deepEqual(got.frames, [frame]);
  assert.deepEqual(got.numBuffers, [Math.ceil((15000 + NET_HDR_SIZE) / 4096)]);
  // The fifth reserved buffer went back: 10 - 4 buffers remain for the next frame.
  assert.equal(link.reserveFrame(space, 65535, 54), SendResult.Sent);
  assert.equal(space.length, 6 * 4096 - NET_HDR_SIZE);
  link.cancelFrame();
  const next = frameOf(6 * 4096 - NET_HDR_SIZE, 4);
  assert.equal(
    link.sendFrame(next),
    SendResult.Sent,
    "a cancelled reservation gave every buffer back",
  );
  link.flush();
  assert.deepEqual(guestReceive(rx, posted).frames, [next]);
});

Deno.test("VhostUserLink.reserveFrame() without MRG_RXBUF offers one buffer, with a partial checksum marked NEEDS_CSUM", () => {
  const { rx, link } = setup({ guestChecksum: true });
  const posted: PostedBuffers = new Map();
  postRxBuffers(rx, posted, 2, 1514 + NET_HDR_SIZE, 3);
  const space = newFrameSpace();
  assert.equal(link.reserveFrame(space, 65535, 54), SendResult.Sent);
  assert.equal(space.length, 1514, "a frame must fit one buffer");
  assert.equal(space.count, 3, "the buffer's three descriptors");
  const frame = frameOf(1000, 9);
  writeIntoSpace(space, frame);
  assert.equal(link.commitFrame(frame.length, 34, 16), SendResult.Sent);
  link.flush();
  const got = receiveFrames(rx, posted);
  assert.deepEqual(got.numBuffers, [1], "one frame in one buffer");
  const header = got.headers[0];
  assert.equal(header.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
  assert.equal(header.csumStart, 34);
  assert.equal(header.csumOffset, 16);
  assert.deepEqual(got.frames[0], frame);
});

Deno.test("VhostUserLink.reserveFrame() writes through a scratch buffer when the first buffer cannot hold the headers", () => {
  for (const mergeableRxBuffers of [false, true]) {
    const { rx, link } = setup({ mergeableRxBuffers }, 256);
    const posted: PostedBuffers = new Map();
    // 40-byte descriptors: 28 bytes after the header, fewer than 54 bytes of headers.
    postRxBuffers(rx, posted, 2, 4000, 100);
    const space = newFrameSpace();
    assert.equal(link.reserveFrame(space, 3000, 54), SendResult.Sent);
    assert.equal(space.count, 1);
    assert.ok(space.views[0].length >= 54);
    const frame = frameOf(2500, 5);
    writeIntoSpace(space, frame);
    assert.equal(link.commitFrame(frame.length), SendResult.Sent);
    link.flush();
    assert.deepEqual(guestReceive(rx, posted).frames, [frame], `MRG_RXBUF ${mergeableRxBuffers}`);
  }
});

Deno.test("VhostUserLink.reserveFrame() reports NoRoom without buffers and calls back once the guest posts some", () => {
  for (const mergeableRxBuffers of [false, true]) {
    const { rx, link } = setup({ mergeableRxBuffers });
    let called = 0;
    link.onWritable(() => called++);
    const space = newFrameSpace();
    assert.equal(link.reserveFrame(space, 1000, 54), SendResult.NoRoom);
    const posted: PostedBuffers = new Map();
    postRxBuffers(rx, posted, 1, 2048);
    link.kick(0, 1);
    assert.equal(called, 1);
    assert.equal(link.reserveFrame(space, 1000, 54), SendResult.Sent);
    assert.equal(space.length, 1000);
    link.cancelFrame();
  }
});

// ---- work per turn: rings whose chains share descriptors, or that are long and many

/**
 * A link over memory that counts lookups (one per descriptor walked; see
 * CountingGuestMemory), with a `size`-entry ring in the direction tested.
 */
function countedSetup(
  direction: "tx" | "rx",
  size: number,
  features: Partial<NegotiatedFeatures> = {},
) {
  const memory = new ArrayGuestMemory();
  const counting = new CountingGuestMemory(memory);
  const lines: string[] = [];
  const logger = new Logger();
  logger.setSink((_l, line) => lines.push(line));
  const common = { features, memory, dataBytes: size * 16 + (10 << 20) };
  const rx = new SplitRingDriver({
    ...common,
    size: direction === "rx" ? size : 64,
    index: 0,
    base: 0x10_0000,
  });
  const tx = new SplitRingDriver({
    ...common,
    size: direction === "tx" ? size : 64,
    index: 1,
    base: 0x1000_0000,
  });
  const handler = new RecordingHandler();
  const link = new VhostUserLink(handler, { logger, clock: () => 0 });
  link.startVring({ ...rx.vring(), memory: counting }, 0);
  link.startVring({ ...tx.vring(), memory: counting }, 0);
  const broken = (name: string) => lines.some((l) => l.startsWith(`virtqueue ${name} is broken`));
  return { rx, tx, handler, link, lines, counting, broken };
}

/** Every descriptor links to the next, the last back to the first; every head is offered. */
function offerLoops(driver: SplitRingDriver, flags: number): void {
  const a = driver.alloc(8);
  for (let i = 0; i < driver.size; i++) {
    driver.setDescriptor(i, a, 0, 1, flags | VIRTQ_DESC_F_NEXT, (i + 1) % driver.size);
  }
  for (let i = 0; i < driver.size; i++) driver.offer(i);
}

/**
 * Heads 0 … `tables`-1 each name their own indirect table of `size` entries of
 * `entryBytes` (all over one data buffer), chained in order: long chains that share no
 * descriptor, so only the turn budget and the malformed-run limits bound their walk.
 * Returns the tables' addresses.
 */
function offerTables(
  driver: SplitRingDriver,
  entryBytes: number,
  flags: number,
  tables: number,
): number[] {
  const size = driver.size;
  const a = driver.alloc(entryBytes);
  const addresses: number[] = [];
  for (let i = 0; i < tables; i++) {
    const table = driver.alloc(size * 16);
    addresses.push(table);
    for (let j = 0; j < size; j++) {
      const last = j === size - 1;
      driver.writeDescriptorAt(
        table + 16 * j,
        a,
        0,
        entryBytes,
        flags | (last ? 0 : VIRTQ_DESC_F_NEXT),
        last ? 0 : j + 1,
      );
    }
    driver.setDescriptor(i, table, 0, size * 16, VIRTQ_DESC_F_INDIRECT, 0);
    driver.offer(i);
  }
  return addresses;
}

const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

for (const size of [16384, 32768]) {
  Deno.test(`VhostUserLink.kick() walks ${size} heads each starting the same ${size}-descriptor loop once, then breaks the queue`, () => {
    const h = countedSetup("tx", size, { indirectDescriptors: true });
    offerLoops(h.tx, 0);
    const bound = size + 2 * MALFORMED_RUN_LIMIT; // the loop once, a descriptor per other head
    h.counting.limit = bound; // an O(size²) walk throws here instead of running for minutes
    h.link.kick(1, 0);
    assert.ok(h.broken("TX"), "the queue ends broken");
    assert.ok(h.counting.total <= bound, `walked ${h.counting.total}`);
    assert.equal(h.tx.usedIndex, MALFORMED_RUN_LIMIT, "every chain walked was returned");
    assert.equal(h.handler.frames.length, 0);
  });
}

// 16 heads with their own 16,384-entry tables of 8-byte entries: valid chains of
// 128 KiB frames, which the link rejects; 16,385 descriptors each, 4 a turn.
Deno.test("VhostUserLink.kick() walks at most one budget per turn of 16 heads with 16,384-entry indirect tables, lets the loop run others, and breaks the queue", async () => {
  const size = 16384;
  const h = countedSetup("tx", size, { indirectDescriptors: true });
  await nextTurn(); // the first turn after the ring started, on an empty ring
  offerTables(h.tx, 8, 0, 16);
  const perTurn = TURN_DESCRIPTOR_BUDGET + size + 1; // + the chain crossing the budget
  h.counting.limit = perTurn; // an unbounded turn throws here instead of running for minutes
  let usedWhenOthersRan = -1;
  setImmediate(() => (usedWhenOthersRan = h.tx.usedIndex)); // runs before the 2nd turn
  h.link.kick(1, 0);
  const walked = [h.counting.count];
  for (let turn = 0; turn < MALFORMED_RUN_LIMIT && !h.broken("TX"); turn++) {
    h.counting.resetCount();
    await nextTurn(); // one turn of the link (queued before this one) runs meanwhile
    walked.push(h.counting.count);
  }
  assert.ok(walked.every((n) => n <= perTurn), `walked per turn: ${walked}`);
  assert.ok(walked.length >= 2, "the ring took several turns");
  assert.ok(h.broken("TX"), "the queue ends broken");
  const total = walked.reduce((a, b) => a + b, 0);
  const chains = h.tx.usedIndex;
  assert.equal(chains, chainsToBreak(total / chains), "every chain walked was returned");
  assert.ok(
    usedWhenOthersRan > 0 && usedWhenOthersRan < chains,
    `other work ran before the ring was finished (used ${usedWhenOthersRan})`,
  );
  assert.equal(h.handler.frames.length, 0);
  h.counting.resetCount();
  h.link.kick(1, 0);
  assert.equal(h.counting.count, 0, "a broken queue is not walked again");
});

Deno.test("VhostUserLink.kick() hands over valid frames of 8 heads with 16,384-entry indirect tables a budget at a time", async () => {
  const size = 16384;
  const h = countedSetup("tx", size, { indirectDescriptors: true });
  offerTables(h.tx, 4, 0, 8); // 16,384 × 4 bytes: a 65,524-byte frame behind its header
  const perTurn = TURN_DESCRIPTOR_BUDGET + size + 1;
  h.counting.limit = perTurn;
  h.link.kick(1, 0);
  assert.equal(h.handler.frames.length, 4, "16,385 descriptors each: 4 chains a turn");
  h.counting.resetCount();
  await nextTurn();
  assert.ok(h.counting.count <= perTurn);
  assert.equal(h.handler.frames.length, 8);
  assert.equal(h.handler.frames[7].length, 4 * size - NET_HDR_SIZE);
  assert.equal(h.broken("TX"), false, "valid chains do not break the queue");
  assert.equal(h.link.stopVring(1), 8);
});

Deno.test("VhostUserLink.kick() drops heads sharing one indirect table after the first, then breaks the queue", () => {
  const size = 16384;
  const h = countedSetup("tx", size, { indirectDescriptors: true });
  const [table] = offerTables(h.tx, 4, 0, 1); // head 0's table: a valid 65,524-byte frame
  for (let i = 1; i < size; i++) {
    h.tx.setDescriptor(i, table, 0, size * 16, VIRTQ_DESC_F_INDIRECT, 0);
    h.tx.offer(i);
  }
  const bound = size + 1 + 2 * MALFORMED_RUN_LIMIT;
  h.counting.limit = bound;
  h.link.kick(1, 0);
  assert.equal(h.handler.frames.length, 1);
  assert.ok(h.broken("TX"), "the queue ends broken");
  assert.ok(h.counting.total <= bound, `walked ${h.counting.total}`);
});

Deno.test("VhostUserLink.sendFrame() walks 16,384 heads each starting the same 16,384-descriptor loop once, then breaks the queue", () => {
  const size = 16384;
  const h = countedSetup("rx", size, { indirectDescriptors: true, mergeableRxBuffers: true });
  offerLoops(h.rx, VIRTQ_DESC_F_WRITE);
  const bound = size + 2 * MALFORMED_RUN_LIMIT;
  h.counting.limit = bound;
  assert.equal(h.link.sendFrame(frameOf(60, 0)), SendResult.Dropped);
  assert.ok(h.broken("RX"), "the queue ends broken");
  assert.ok(h.counting.total <= bound, `walked ${h.counting.total}`);
  h.link.flush();
  assert.equal(h.rx.usedIndex, MALFORMED_RUN_LIMIT, "every chain walked was returned");
});

// 16 heads with their own 16,384-entry tables of readable buffers, which the link
// rejects on RX: 16,385 descriptors each, 4 a turn.
Deno.test("VhostUserLink.sendFrame() walks at most one budget per turn of 16 heads with 16,384-entry indirect tables, calls back on a later turn, and breaks the queue", async () => {
  const size = 16384;
  const h = countedSetup("rx", size, { indirectDescriptors: true, mergeableRxBuffers: true });
  offerTables(h.rx, 8, 0, 16);
  const perTurn = TURN_DESCRIPTOR_BUDGET + size + 1;
  h.counting.limit = perTurn;
  const walked: number[] = [];
  const results: number[] = [];
  const send = () => {
    h.counting.resetCount();
    results.push(h.link.sendFrame(frameOf(60, results.length)));
    walked.push(h.counting.count);
  };
  h.link.onWritable(send);
  let brokenWhenOthersRan: boolean | null = null;
  setImmediate(() => (brokenWhenOthersRan = h.broken("RX"))); // runs before the 2nd turn
  send();
  assert.deepEqual(results, [SendResult.NoRoom], "the budget ran out");
  for (let turn = 0; turn < MALFORMED_RUN_LIMIT && !h.broken("RX"); turn++) await nextTurn();
  assert.ok(walked.every((n) => n <= perTurn), `walked per turn: ${walked}`);
  assert.ok(results.length >= 2, "the writable callback came on a later turn");
  assert.equal(brokenWhenOthersRan, false, "other work ran before the ring was finished");
  assert.ok(h.broken("RX"), "the queue ends broken");
  assert.deepEqual(results.slice(0, -1), results.slice(0, -1).map(() => SendResult.NoRoom));
  assert.equal(results.at(-1), SendResult.Dropped, "broken: dropped, no callback awaited");
  h.link.flush();
  const total = walked.reduce((a, b) => a + b, 0);
  const chains = h.rx.usedIndex;
  assert.equal(chains, chainsToBreak(total / chains), "every chain walked was returned");
});

Deno.test("VhostUserLink.sendFrame() drops a frame whose RX buffers take more than a turn's budget, and returns them", () => {
  const size = 16384;
  const h = countedSetup("rx", size, { indirectDescriptors: true, mergeableRxBuffers: true });
  // Valid 16 KiB chains of 16,384 one-byte buffers: a 65,535-byte frame needs 5 of them.
  offerTables(h.rx, 1, VIRTQ_DESC_F_WRITE, 5);
  h.counting.limit = TURN_DESCRIPTOR_BUDGET + size + 1;
  assert.equal(h.link.sendFrame(frameOf(65535, 1)), SendResult.Dropped);
  assert.match(h.lines.at(-1)!, /take more than 65536 descriptors/);
  h.link.flush(); // the stack's batch ends: a new turn
  assert.equal(h.rx.usedIndex, 4, "the 4 chains walked came back (empty), not to be walked again");
  assert.deepEqual(h.rx.takeUsed().map((u) => u.len), [0, 0, 0, 0]);
  h.counting.resetCount();
  assert.equal(h.link.sendFrame(frameOf(60, 2)), SendResult.Sent, "a small frame takes the 5th");
  assert.equal(h.broken("RX"), false);
});

Deno.test("VhostUserLink counts TX chains it rejects toward the malformed run, a delivered frame resets it", () => {
  const { tx, handler, link, lines } = setup({}, 256);
  const a = tx.alloc(100);
  const bad = () => tx.addChain([{ addr: a, length: 100, writable: true }]);
  for (let i = 0; i < MALFORMED_RUN_LIMIT - 1; i++) bad();
  guestTransmit(tx, frameOf(60, 1), "one", false);
  for (let i = 0; i < MALFORMED_RUN_LIMIT - 1; i++) bad();
  link.kick(1, 0);
  assert.equal(handler.frames.length, 1);
  assert.ok(!lines.some((l) => /broken/.test(l)), "63 in a row, then 63 more after a good frame");
  tx.takeUsed();
  bad();
  link.kick(1, 1);
  assert.match(lines.at(-1)!, /virtqueue TX is broken and stops: 64 malformed chains in a row/);
});

// ---- buffers across adjacent guest memory regions (several memory slots)

/** A link whose memory has a second region starting right after (or `gap` bytes after) the TX and RX rings' regions. */
function twoSlotSetup(features: Partial<NegotiatedFeatures> = {}, gap = 0) {
  const s = setup(features);
  const txEnd = s.tx.base + s.tx.bytes.length;
  const rxEnd = s.rx.base + s.rx.bytes.length;
  const txNext = new Uint8Array(1 << 16);
  const rxNext = new Uint8Array(1 << 16);
  s.memory.addRegion(txEnd + gap, txNext);
  s.memory.addRegion(rxEnd + gap, rxNext);
  return { ...s, txEnd, rxEnd, txNext, rxNext };
}

for (const indirect of [false, true]) {
  Deno.test(`VhostUserLink.kick() delivers a TX frame whose buffer spans two adjacent regions (INDIRECT ${indirect ? "on" : "off"})`, () => {
    const s = twoSlotSetup({ indirectDescriptors: indirect });
    const frame = frameOf(1514, 7);
    const packet = new Uint8Array(NET_HDR_SIZE + frame.length);
    packet.set(frame, NET_HDR_SIZE);
    const before = 100; // bytes in the first region
    s.tx.bytes.set(packet.subarray(0, before), s.tx.bytes.length - before);
    s.txNext.set(packet.subarray(before));
    s.tx.addChain([{ addr: s.txEnd - before, length: packet.length, writable: false }], indirect);
    s.link.kick(1, 0);
    assert.deepEqual(s.handler.frames, [frame]);
    // Header and frame in two descriptors, the second one spanning (the same bytes reused).
    const other = frameOf(3000, 8);
    const header = s.tx.alloc(NET_HDR_SIZE);
    s.tx.write(s.txEnd - 10, other.subarray(0, 10));
    s.txNext.set(other.subarray(10), 0);
    s.tx.addChain([
      { addr: header, length: NET_HDR_SIZE, writable: false },
      { addr: s.txEnd - 10, length: other.length, writable: false },
    ], indirect);
    s.link.kick(1, 1);
    assert.deepEqual(s.handler.frames, [frame, other]);
    assert.deepEqual(s.lines, []);
  });
}

Deno.test("VhostUserLink.sendFrame() writes an RX frame into a buffer that spans two adjacent regions", () => {
  const s = twoSlotSetup({ mergeableRxBuffers: true });
  const before = 50;
  const head = s.rx.addChain([{ addr: s.rxEnd - before, length: 4096, writable: true }])!;
  const frame = frameOf(1000, 3);
  assert.equal(s.link.sendFrame(frame), SendResult.Sent);
  s.link.flush();
  assert.deepEqual(s.rx.takeUsed(), [{ id: head, len: NET_HDR_SIZE + frame.length }]);
  const written = new Uint8Array(NET_HDR_SIZE + frame.length);
  written.set(s.rx.bytes.subarray(s.rx.bytes.length - before));
  written.set(s.rxNext.subarray(0, written.length - before), before);
  const header = decodeNetHeader(written, 0, createNetHeader());
  assert.equal(header.numBuffers, 1);
  assert.deepEqual(written.subarray(NET_HDR_SIZE), frame);
});

Deno.test("VhostUserLink still drops a buffer across a gap between regions", () => {
  const s = twoSlotSetup({}, 4096);
  const packet = new Uint8Array(NET_HDR_SIZE + 100);
  const head = s.tx.addChain([{ addr: s.txEnd - 50, length: packet.length, writable: false }])!;
  s.link.kick(1, 0);
  assert.equal(s.handler.frames.length, 0);
  assert.deepEqual(s.tx.takeUsed(), [{ id: head, len: 0 }]);
  assert.match(s.lines[0], /outside guest memory/);
  s.rx.addChain([{ addr: s.rxEnd - 50, length: 4096, writable: true }]);
  assert.equal(s.link.sendFrame(frameOf(60, 1)), SendResult.NoRoom);
});

/** A link whose rings report to one {@link WriteRecord}; `extra` adds a region right after RX's. */
function loggedSetup(features: Partial<NegotiatedFeatures>, size = 64) {
  const rig = setup(features, size, 1 << 20);
  const extra = new Uint8Array(0x4000);
  const extraBase = rig.rx.base + rig.rx.bytes.length;
  rig.memory.addRegion(extraBase, extra);
  const record = new WriteRecord([
    { base: rig.rx.base, bytes: rig.rx.bytes },
    { base: rig.tx.base, bytes: rig.tx.bytes },
    { base: extraBase, bytes: extra },
  ]);
  rig.link.setWriteLog(0, record.ringLog(rig.rx.usedAddr));
  rig.link.setWriteLog(1, record.ringLog(rig.tx.usedAddr));
  return { ...rig, record, extraBase };
}

Deno.test("VhostUserLink reports every byte it writes into guest memory to the write log: headers, payload, used rings", () => {
  for (const features of matrix) {
    const { rx, tx, link, record, handler } = loggedSetup(features);
    const posted: PostedBuffers = new Map();
    postRxBuffers(rx, posted, 6, 700, 3); // three descriptors each: headers split too
    guestTransmit(tx, frameOf(100, 1), "many", false);
    record.snapshot();
    assert.equal(link.sendFrame(frameOf(60, 2)), SendResult.Sent);
    const big = features.mergeableRxBuffers ? 2000 : 600;
    assert.equal(link.sendFrame(frameOf(big, 3)), SendResult.Sent);
    link.flush();
    link.kick(1, 0); // TX: the used ring is written
    assert.equal(handler.frames.length, 1);
    assert.deepEqual(record.unreported(), [], label(features));
    assert.deepEqual(record.strays, []);
    assert.equal(guestReceive(rx, posted).frames.length, 2);
  }
});

Deno.test("VhostUserLink reports RX writes into a buffer that runs on into the adjacent region", () => {
  const { rx, link, record, extraBase } = loggedSetup({ mergeableRxBuffers: true });
  // one writable buffer across the boundary: its views are a gather list of two regions
  const head = rx.addChain([{ addr: extraBase - 100, length: 3000, writable: true }]);
  assert.ok(head !== null);
  record.snapshot();
  assert.equal(link.sendFrame(frameOf(2500, 4)), SendResult.Sent);
  link.flush();
  assert.deepEqual(record.unreported(), []);
  assert.ok(record.covers(extraBase - 100) && record.covers(extraBase + 2411));
  assert.ok(!record.covers(extraBase + 2412), "no more than written (12 + 2500 bytes)");
});

Deno.test("VhostUserLink reports RX bytes written for a frame it then gives up (too few buffers)", () => {
  const { rx, link, record } = loggedSetup({ mergeableRxBuffers: true });
  postRxBuffers(rx, new Map(), 2, 1000);
  record.snapshot();
  assert.equal(link.sendFrame(frameOf(5000, 5)), SendResult.NoRoom);
  assert.notDeepEqual(record.ranges, [], "the first buffers were written");
  assert.deepEqual(record.unreported(), []);
});

Deno.test("VhostUserLink reports what reserveFrame()'s caller wrote, on commit and on cancel, in place and through the scratch buffer", () => {
  for (const mergeableRxBuffers of [false, true]) {
    for (const pieces of [1, 100]) { // 100 pieces: the headers do not fit the first view
      const { rx, link, record } = loggedSetup({ mergeableRxBuffers }, 256);
      const posted: PostedBuffers = new Map();
      postRxBuffers(rx, posted, 2, 4000, pieces);
      const space = newFrameSpace();
      record.snapshot();
      assert.equal(link.reserveFrame(space, 3000, 54), SendResult.Sent);
      writeIntoSpace(space, frameOf(space.length, 6)); // more than it will commit
      assert.equal(link.commitFrame(1000), SendResult.Sent);
      assert.equal(link.reserveFrame(space, 3000, 54), SendResult.Sent);
      writeIntoSpace(space, frameOf(space.length, 7));
      link.cancelFrame();
      link.flush();
      const what = `MRG_RXBUF ${mergeableRxBuffers}, ${pieces} pieces`;
      assert.deepEqual(record.unreported(), [], what);
      assert.deepEqual(record.strays, [], what);
      assert.equal(guestReceive(rx, posted).frames[0].length, 1000, what);
    }
  }
});

Deno.test("VhostUserLink gives a reservation as views, whose writes it reports, while the RX ring is logged, even to a caller that accepts an iovec table", () => {
  for (const mergeableRxBuffers of [false, true]) {
    const { rx, link, record } = loggedSetup({ mergeableRxBuffers }, 256);
    const posted: PostedBuffers = new Map();
    postRxBuffers(rx, posted, 2, 4000, 4);
    const space = newFrameSpace();
    space.acceptVectors = true;
    record.snapshot();
    assert.equal(link.reserveFrame(space, 3000, 54), SendResult.Sent);
    assert.equal(space.vectors, null, "no table: the kernel's writes through it would go unlogged");
    writeIntoSpace(space, frameOf(space.length, 8));
    assert.equal(link.commitFrame(2000), SendResult.Sent);
    link.flush();
    assert.deepEqual(record.unreported(), [], `MRG_RXBUF ${mergeableRxBuffers}`);
    assert.equal(guestReceive(rx, posted).frames[0].length, 2000);
    // logging off: the table again
    link.setWriteLog(0, null);
    postRxBuffers(rx, posted, 2, 4000, 4);
    assert.equal(link.reserveFrame(space, 3000, 54), SendResult.Sent);
    assert.notEqual(space.vectors, null);
    link.cancelFrame();
  }
});

Deno.test("VhostUserLink reports nothing once the write log is taken away, and takes one with a ring's start", () => {
  const { rx, link, record } = loggedSetup({});
  link.setWriteLog(0, null);
  link.setWriteLog(1, null);
  postRxBuffers(rx, new Map(), 2, 2000);
  record.snapshot();
  assert.equal(link.sendFrame(frameOf(100, 8)), SendResult.Sent);
  link.flush();
  assert.deepEqual(record.ranges, []);
  assert.notDeepEqual(record.unreported(), [], "written all the same");
  link.stopVring(0);
  link.startVring({ ...rx.vring(rx.usedIndex), writeLog: record.ringLog(rx.usedAddr) }, 0);
  record.snapshot();
  assert.equal(link.sendFrame(frameOf(100, 9)), SendResult.Sent);
  link.flush();
  assert.notDeepEqual(record.ranges, []);
  assert.deepEqual(record.unreported(), []);
});

Deno.test("VhostUserLink reports every guest write whatever the frames and buffers (property)", () => {
  fc.assert(
    fc.property(
      fc.boolean(),
      fc.boolean(),
      fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 6 }),
      fc.array(
        fc.tuple(fc.constantFrom("send", "commit", "cancel"), fc.integer({ min: 14, max: 9000 })),
        { minLength: 1, maxLength: 12 },
      ),
      (mergeableRxBuffers, eventIndex, pieceCounts, actions) => {
        const { rx, link, record } = loggedSetup({ mergeableRxBuffers, eventIndex }, 256);
        for (const pieces of pieceCounts) postRxBuffers(rx, new Map(), 1, 1600, pieces);
        record.snapshot();
        const space = newFrameSpace();
        actions.forEach(([action, length], i) => {
          if (action === "send") {
            link.sendFrame(frameOf(Math.min(length, 1514), i));
          } else if (link.reserveFrame(space, length, 14) === SendResult.Sent) {
            writeIntoSpace(space, frameOf(space.length, i));
            if (action === "commit") link.commitFrame(Math.min(length, space.length));
            else link.cancelFrame();
          }
        });
        link.flush();
        assert.deepEqual(record.unreported(), []);
        assert.deepEqual(record.strays, []);
      },
    ),
    { numRuns: 150 },
  );
});

Deno.test("VhostUserLink.reserveFrame() gives the payload as an iovec table over the guest's buffers when asked; the kernel writes through it", async () => {
  const pair = await loopbackPair();
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        fc.integer({ min: 100, max: 5000 }),
        // Per chain: one buffer (taken in runs, popSingleBuffers) or a gather list.
        fc.array(fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 4 })), {
          minLength: 16,
          maxLength: 16,
        }),
        fc.integer({ min: 60, max: 20000 }),
        async (mergeableRxBuffers, bufferBytes, piecesPerChain, wanted) => {
          const { rx, link } = setup({ mergeableRxBuffers }, 256);
          const posted: PostedBuffers = new Map();
          for (const pieces of piecesPerChain) postRxBuffers(rx, posted, 1, bufferBytes, pieces);
          const space = newFrameSpace();
          space.acceptVectors = true;
          const headers = 54;
          const result = link.reserveFrame(space, wanted, headers);
          if (result !== SendResult.Sent) {
            // Without MRG_RXBUF a buffer smaller than the headers is never usable.
            assert.ok(!mergeableRxBuffers && bufferBytes - NET_HDR_SIZE < headers, `${result}`);
            return;
          }
          const room = mergeableRxBuffers ? 16 * bufferBytes : bufferBytes;
          assert.equal(space.length, Math.min(wanted, room - NET_HDR_SIZE));
          const frame = frameOf(space.length, bufferBytes);
          if (space.vectors === null) {
            // The first buffer could not hold both headers: views, as without a table.
            assert.ok(space.views[0].length >= headers);
            writeIntoSpace(space, frame);
          } else {
            assert.equal(space.vectorsFrom, headers);
            assert.equal(space.vectors.totalBytes, space.length - headers);
            assert.equal(space.count, 1, "one view holds all the frame's headers");
            let viewBytes = 0;
            for (let i = 0; i < space.count; i++) viewBytes += space.views[i].length;
            assert.equal(viewBytes, headers, "the views hold the headers only");
            writeIntoSpace(space, frame.subarray(0, headers));
            const payload = frame.subarray(headers);
            let sent = 0;
            while (sent < payload.length) sent += pair.sender.send(payload.subarray(sent));
            await receiveAll(pair.receiver, space.vectors, payload.length);
          }
          assert.equal(link.commitFrame(frame.length), SendResult.Sent);
          link.flush();
          assert.deepEqual(guestReceive(rx, posted).frames, [frame]);
        },
      ),
      { numRuns: 60 },
    );
  } finally {
    pair.close();
  }
});

/** A handler that takes frames scattered and keeps what each one looked like. */
class ScatterCheckingHandler extends RecordingHandler {
  readonly acceptsScattered = true;
  /** Per frame: the bytes filled when handed over, or -1 when it came whole. */
  readonly filled: number[] = [];
  /** Per scattered frame: the bytes the table gave for the range asked for. */
  readonly ranges: Uint8Array[] = [];
  /** The byte range each scattered frame is asked to describe, relative to its length. */
  range: (length: number) => { from: number; length: number } = (n) => ({ from: 0, length: n });
  /** Whether a scattered frame is gathered before it is recorded. */
  gatherFirst = true;
  readonly #table = new IoVectors(1024);
  readonly #pair: { sender: TcpSocket; receiver: TcpSocket };

  constructor(pair: { sender: TcpSocket; receiver: TcpSocket }) {
    super();
    this.#pair = pair;
  }

  override handleFrame(
    frame: Uint8Array,
    _now?: number,
    _info?: number,
    scattered?: ScatteredFrame,
  ): void {
    if (scattered === undefined) {
      this.filled.push(-1);
      super.handleFrame(frame);
      return;
    }
    this.filled.push(scattered.filled);
    const { from, length } = this.range(frame.length);
    this.#table.clear();
    const added = scattered.vectorsOf(from, length, this.#table);
    assert.equal(added, length, "the table covers the range");
    // The kernel reads the range straight from guest memory; the receiver gets it.
    const got = new Uint8Array(length);
    if (length > 0) {
      assert.equal(this.#pair.sender.sendVectors(this.#table), length);
      let at = 0;
      for (let i = 0; at < length && i < 1000; i++) {
        const n = this.#pair.receiver.receive(got.subarray(at));
        if (n > 0) at += n;
      }
    }
    this.ranges.push(got);
    const prefix = frame.slice(0, scattered.filled);
    if (this.gatherFirst) {
      scattered.gather();
      assert.equal(scattered.filled, frame.length);
      super.handleFrame(frame);
    } else {
      super.handleFrame(prefix);
    }
  }
}

Deno.test("VhostUserLink hands a frame over several buffers to a handler that accepts it scattered: its first bytes copied, the rest sent from guest memory or gathered", async () => {
  const pair = await loopbackPair();
  try {
    fc.assert(
      fc.property(
        fc.integer({ min: 60, max: 20000 }),
        fc.array(fc.integer({ min: 1, max: 5000 }), { minLength: 1, maxLength: 8 }),
        fc.boolean(),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        (length, cuts, gatherFirst, fromShare, lengthShare) => {
          const handler = new ScatterCheckingHandler(pair);
          const { tx, link: scatterLink } = setup({}, 64, 4 << 20, "info", handler);
          handler.gatherFirst = gatherFirst;
          handler.range = (n) => {
            const from = Math.floor(fromShare * n);
            return { from, length: Math.floor(lengthShare * (n - from)) };
          };
          const frame = frameOf(length, length);
          const packet = new Uint8Array(NET_HDR_SIZE + length);
          packet.set(frame, NET_HDR_SIZE);
          const addr = tx.alloc(packet.length);
          tx.write(addr, packet);
          const ends = [...new Set(cuts.map((c) => Math.min(c, packet.length)))].sort((a, b) =>
            a - b
          );
          if (ends[ends.length - 1] !== packet.length) ends.push(packet.length);
          const segments = ends.map((end, i) => {
            const start = i === 0 ? 0 : ends[i - 1];
            return { addr: addr + start, length: end - start, writable: false };
          });
          assert.ok(tx.addChain(segments, false) !== null);
          scatterLink.kick(1, 0);
          assert.equal(handler.frames.length, 1);
          const copiedWhole = segments.length === 1 ||
            (segments.length === 2 && segments[0].length === NET_HDR_SIZE) ||
            length < SCATTER_MIN_FRAME_BYTES;
          if (copiedWhole) {
            assert.deepEqual(handler.filled, [-1]);
            assert.deepEqual(handler.frames[0], frame);
            assert.equal(scatterLink.counters.txScattered, 0);
            return;
          }
          // The first buffer when it holds 54..256 frame bytes, else the first 256.
          const firstBytes = segments[0].length - NET_HDR_SIZE;
          const filled = firstBytes >= SCATTER_FIRST_BUFFER_MIN_BYTES &&
              firstBytes <= SCATTER_PREFIX_BYTES
            ? firstBytes
            : SCATTER_PREFIX_BYTES;
          assert.deepEqual(handler.filled, [filled]);
          const { from, length: n } = handler.range(length);
          assert.deepEqual(handler.ranges[0], frame.subarray(from, from + n));
          assert.deepEqual(handler.frames[0], gatherFirst ? frame : frame.subarray(0, filled));
          assert.equal(scatterLink.counters.txScattered, 1);
          assert.equal(scatterLink.counters.txGathered, gatherFirst ? 1 : 0);
        },
      ),
      { numRuns: 60 },
    );
  } finally {
    pair.close();
  }
});

Deno.test("VhostUserLink copies only the first buffer of a Linux guest's TSO segment (its headers), and more when asked", async () => {
  const pair = await loopbackPair();
  try {
    const handler = new ScatterCheckingHandler(pair);
    handler.gatherFirst = false;
    const { tx, link } = setup({}, 64, 4 << 20, "info", handler);
    // The virtio-net header and 66 bytes of headers in one buffer, the payload in pages.
    const frame = frameOf(66 + 3 * 4096, 7);
    const packet = new Uint8Array(NET_HDR_SIZE + frame.length);
    packet.set(frame, NET_HDR_SIZE);
    const addr = tx.alloc(packet.length);
    tx.write(addr, packet);
    const first = NET_HDR_SIZE + 66;
    const segments = [{ addr, length: first, writable: false }];
    for (let at = first; at < packet.length; at += 4096) {
      segments.push({
        addr: addr + at,
        length: Math.min(4096, packet.length - at),
        writable: false,
      });
    }
    assert.ok(tx.addChain(segments) !== null);
    let copied: Uint8Array | null = null;
    const handleFrame = handler.handleFrame.bind(handler);
    handler.handleFrame = (f, now, info, scattered) => {
      handleFrame(f, now, info, scattered);
      scattered!.gather(100); // asks for more than the first buffer had
      copied = f.slice(0, scattered!.filled);
    };
    link.kick(1, 0);
    assert.deepEqual(handler.filled, [66]);
    assert.deepEqual(handler.frames[0], frame.subarray(0, 66));
    assert.deepEqual(copied, frame.subarray(0, 100));
    assert.equal(link.counters.txGathered, 0, "not gathered whole");
  } finally {
    pair.close();
  }
});

Deno.test("VhostUserLink copies every frame whole for a handler that does not accept scattered ones", () => {
  const { tx, handler, link } = setup({}, 64);
  const frame = frameOf(9000, 3);
  guestTransmit(tx, frame, "many", false);
  link.kick(1, 0);
  assert.deepEqual(handler.frames, [frame]);
  assert.equal(link.counters.txScattered, 0);
});

Deno.test("VhostUserLink: a table reservation dropped at commit (ring broken meanwhile) leaves nothing for a later commit to write into its buffer", () => {
  const { memory, rx, link } = setup({ mergeableRxBuffers: true }, 64);
  const posted: PostedBuffers = new Map();
  postRxBuffers(rx, posted, 1, 4096);
  rx.offer(rx.size + 3); // a head beyond the ring: popping it breaks the queue
  const space = newFrameSpace();
  space.acceptVectors = true;
  const headers = 54;
  assert.equal(link.reserveFrame(space, 20_000, headers), SendResult.Sent, "one chain reserved");
  assert.ok(space.vectors !== null);
  space.views[0].fill(0xee);
  assert.equal(link.commitFrame(headers + 100), SendResult.Dropped, "the ring broke meanwhile");
  const [oldBuffer] = posted.values();
  const before = rx.read(oldBuffer, 4096);
  // The frontend restarts RX over new buffers; a frame reserved as views is committed.
  const restarted = restartRx(link, memory, 8, { mergeableRxBuffers: true }, 0x3000_0000);
  const reposted: PostedBuffers = new Map();
  postRxBuffers(restarted, reposted, 4, 4096);
  const views = newFrameSpace();
  assert.equal(link.reserveFrame(views, 200, headers), SendResult.Sent);
  const frame = frameOf(200, 9);
  writeIntoSpace(views, frame);
  assert.equal(link.commitFrame(frame.length), SendResult.Sent);
  link.flush();
  assert.deepEqual(guestReceive(restarted, reposted).frames, [frame]);
  assert.deepEqual(rx.read(oldBuffer, 4096), before, "the old ring's buffer was written");
});

Deno.test("VhostUserLink.reserveFrame(): a first chain whose buffers split the frame's headers gives them as one view", () => {
  const { rx, link } = setup({ mergeableRxBuffers: true }, 64);
  const posted: PostedBuffers = new Map();
  // A first chain of 32 + 4000 bytes: the virtio-net header and 20 header bytes, then the rest.
  const first = rx.alloc(4032);
  const head = rx.addChain([
    { addr: first, length: 32, writable: true },
    { addr: first + 32, length: 4000, writable: true },
  ]);
  assert.ok(head !== null);
  posted.set(head, first);
  postRxBuffers(rx, posted, 4, 4096);
  const space = newFrameSpace();
  space.acceptVectors = true;
  const headers = 54;
  assert.equal(link.reserveFrame(space, 6000, headers), SendResult.Sent);
  assert.ok(space.views[0].length >= headers, `first view of ${space.views[0].length} bytes`);
  assert.equal(space.vectors, null, "reserved as views (the headers copied from a scratch)");
  const frame = frameOf(6000, 4);
  writeIntoSpace(space, frame);
  assert.equal(link.commitFrame(frame.length), SendResult.Sent);
  link.flush();
  assert.deepEqual(guestReceive(rx, posted).frames, [frame]);
});
