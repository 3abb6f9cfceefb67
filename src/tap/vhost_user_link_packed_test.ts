/**
 * VhostUserLink over packed virtqueues (VIRTIO_F_RING_PACKED): frames both ways, merged
 * RX buffers, reservations, restarts from the ring state, dirty-page reports.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { Logger } from "../log/logger.ts";
import { ArrayGuestMemory } from "../../tests/support/virtio/array_guest_memory.ts";
import { createNetHeader, decodeNetHeader, NET_HDR_SIZE } from "./net_header.ts";
import { PackedRingDriver } from "../../tests/support/virtio/packed_ring_driver.ts";
import { SplitRingDriver } from "../../tests/support/virtio/split_ring_driver.ts";
import { decodePackedState } from "../virtio/packed_ring_layout.ts";
import { newFrameSpace, SendResult } from "./frame_transport.ts";
import { RecordingHandler } from "../../tests/support/tap/frame_handler.ts";
import {
  anyBufferLayout,
  bufferSegments,
  frameOf,
  joinParts,
  sendFrames,
  startLinkRings,
} from "../../tests/support/tap/link_rings.ts";
import { VhostUserLink } from "./vhost_user_link.ts";
import { WriteRecord } from "../../tests/support/virtio/recording_write_log.ts";
import { type NegotiatedFeatures } from "../virtio/started_vring.ts";

function setup(features: Partial<NegotiatedFeatures> = {}, size = 64, dataBytes = 4 << 20) {
  const memory = new ArrayGuestMemory();
  const lines: string[] = [];
  const logger = new Logger();
  logger.setSink((_l, line) => lines.push(line));
  const handler = new RecordingHandler();
  const link = new VhostUserLink(handler, { logger, clock: () => 0 });
  const { rx, tx } = startLinkRings(link, (options) => new PackedRingDriver(options), {
    size,
    features,
    memory,
    dataBytes,
  });
  return { memory, rx, tx, handler, link, lines };
}

/** The guest queues `frame` (with a zero virtio-net header) in `pieces` descriptors. */
function guestTransmit(tx: PackedRingDriver, frame: Uint8Array, pieces: number, indirect: boolean) {
  const packet = new Uint8Array(NET_HDR_SIZE + frame.length);
  packet.set(frame, NET_HDR_SIZE);
  const addr = tx.alloc(packet.length);
  tx.write(addr, packet);
  const id = tx.addChain(bufferSegments(addr, packet.length, pieces, false), indirect);
  assert.ok(id !== null);
}

function guestPostRx(
  rx: PackedRingDriver,
  posted: Map<number, number>,
  count: number,
  bytes: number,
  pieces = 1,
  indirect = false,
) {
  for (let i = 0; i < count; i++) {
    const addr = rx.alloc(bytes);
    const id = rx.addChain(bufferSegments(addr, bytes, pieces, true), indirect);
    assert.ok(id !== null);
    posted.set(id, addr);
  }
}

/** Reads the frames the device wrote, reassembling num_buffers used buffers per frame. */
function guestReceive(rx: PackedRingDriver, posted: Map<number, number>) {
  const used = rx.takeUsed();
  const frames: Uint8Array[] = [];
  const numBuffers: number[] = [];
  for (let i = 0; i < used.length;) {
    if (used[i].len === 0) {
      i++;
      continue;
    }
    const first = rx.read(posted.get(used[i].id)!, used[i].len);
    const header = decodeNetHeader(first, 0, createNetHeader());
    numBuffers.push(header.numBuffers);
    const parts = [first.subarray(NET_HDR_SIZE)];
    for (let k = 1; k < header.numBuffers; k++) {
      parts.push(rx.read(posted.get(used[i + k].id)!, used[i + k].len));
    }
    i += header.numBuffers;
    frames.push(joinParts(parts));
  }
  return { frames, numBuffers, used };
}

Deno.test("VhostUserLink over packed rings hands the guest's TX frames over, direct and indirect, across many laps", () => {
  const { tx, handler, link } = setup({ indirectDescriptors: true }, 16);
  const sent: Uint8Array[] = [];
  for (let round = 0; round < 20; round++) {
    for (let i = 0; i < 5; i++) {
      const frame = frameOf(60 + round * 7 + i, round * 5 + i);
      guestTransmit(tx, frame, 1 + (i % 3), i === 4);
      sent.push(frame);
    }
    link.kick(1, 0);
    const used = tx.takeUsed();
    assert.equal(used.length, 5, `round ${round}: every TX buffer returned`);
    assert.ok(used.every((u) => u.len === 0));
  }
  assert.deepEqual(handler.frames, sent);
  assert.ok(tx.notifications > 0);
});

Deno.test("VhostUserLink over packed rings writes RX frames, merging buffers with MRG_RXBUF", () => {
  for (const mergeableRxBuffers of [false, true]) {
    const { rx, link } = setup({ mergeableRxBuffers, eventIndex: true }, 32);
    const posted = new Map<number, number>();
    const sent: Uint8Array[] = [];
    for (let round = 0; round < 10; round++) {
      guestPostRx(rx, posted, 8, 2048, 1 + (round % 2));
      for (let i = 0; i < 3; i++) {
        const frame = frameOf(mergeableRxBuffers && i === 2 ? 5000 : 1000 + i, round);
        assert.equal(link.sendFrame(frame), SendResult.Sent, `round ${round} frame ${i}`);
        sent.push(frame);
      }
      link.flush();
      const got = guestReceive(rx, posted);
      assert.equal(got.frames.length, 3);
      if (mergeableRxBuffers) assert.deepEqual(got.numBuffers, [1, 1, 3]);
      // the buffers the frames did not need are still posted: take them back
      for (;;) {
        const frame = frameOf(1000, 99);
        if (link.sendFrame(frame) !== SendResult.Sent) break;
        sent.push(frame);
        link.flush();
        const rest = guestReceive(rx, posted);
        got.frames.push(...rest.frames);
      }
      // every frame arrives intact, in order
      assert.deepEqual(got.frames, sent.splice(0, got.frames.length));
    }
    assert.deepEqual(sent, [], "every Sent frame arrived");
  }
});

Deno.test("VhostUserLink over packed rings delivers every Sent frame intact for any buffer layout (property)", () => {
  fc.assert(
    fc.property(
      anyBufferLayout.features,
      anyBufferLayout.buffers,
      anyBufferLayout.lengths,
      (features, buffers, lengths) => {
        const { rx, link } = setup(features, 32, 1 << 20);
        const posted = new Map<number, number>();
        for (const b of buffers) {
          const slots = features.indirectDescriptors ? 1 : Math.min(b.pieces, b.bytes);
          if (rx.freeSlots < slots) break;
          guestPostRx(
            rx,
            posted,
            1,
            b.bytes,
            Math.min(b.pieces, b.bytes),
            features.indirectDescriptors,
          );
        }
        const sent = sendFrames(link, lengths);
        assert.deepEqual(guestReceive(rx, posted).frames, sent);
      },
    ),
    { numRuns: 60 },
  );
});

Deno.test("VhostUserLink over packed rings: reserveFrame() spans posted buffers, commit returns the rest", () => {
  const { rx, link } = setup({ mergeableRxBuffers: true }, 64);
  const posted = new Map<number, number>();
  guestPostRx(rx, posted, 10, 4096);
  const space = newFrameSpace();
  assert.equal(link.reserveFrame(space, 20000, 54), SendResult.Sent);
  const frame = frameOf(15000, 3);
  let at = 0;
  for (let i = 0; i < space.count && at < frame.length; i++) {
    const n = Math.min(space.views[i].length, frame.length - at);
    space.views[i].set(frame.subarray(at, at + n));
    at += n;
  }
  if (space.vectors !== null) throw new Error("views expected without acceptVectors");
  assert.equal(link.commitFrame(frame.length), SendResult.Sent);
  link.flush();
  const got = guestReceive(rx, posted);
  assert.deepEqual(got.frames, [frame]);
  // the unused fifth buffer went back: six remain for a frame of six buffers
  const next = frameOf(6 * 4096 - NET_HDR_SIZE, 4);
  assert.equal(link.sendFrame(next), SendResult.Sent);
  link.flush();
  assert.deepEqual(guestReceive(rx, posted).frames, [next]);
});

Deno.test("VhostUserLink over packed rings stops with both positions and resumes there", () => {
  const { rx, tx, handler, link } = setup({}, 8);
  const posted = new Map<number, number>();
  for (let i = 0; i < 11; i++) {
    guestTransmit(tx, frameOf(80, i), 1, false), link.kick(1, 0), tx.takeUsed();
  }
  guestPostRx(rx, posted, 5, 2048);
  assert.equal(link.sendFrame(frameOf(100, 1)), SendResult.Sent);
  // stopping RX publishes what was filled; the buffers still posted stay with the guest
  const rxBase = link.stopVring(0);
  const txBase = link.stopVring(1);
  assert.deepEqual(decodePackedState(txBase), {
    avail: { index: 3, wrap: 0 },
    used: { index: 3, wrap: 0 },
  });
  assert.deepEqual(decodePackedState(rxBase), {
    avail: { index: 1, wrap: 1 },
    used: { index: 1, wrap: 1 },
  });
  assert.equal(guestReceive(rx, posted).frames.length, 1);
  link.startVring(rx.vring(rxBase), 0);
  link.startVring(tx.vring(txBase), 0);
  guestTransmit(tx, frameOf(90, 42), 2, false);
  link.kick(1, 0);
  assert.deepEqual(handler.frames.at(-1), frameOf(90, 42));
  assert.equal(link.sendFrame(frameOf(200, 7)), SendResult.Sent);
  link.flush();
  assert.deepEqual(guestReceive(rx, posted).frames, [frameOf(200, 7)]);
});

Deno.test("VhostUserLink over packed rings reports every byte it writes into guest memory while logged", () => {
  for (const mergeableRxBuffers of [false, true]) {
    const { rx, tx, link } = setup({ mergeableRxBuffers, eventIndex: true }, 32);
    const record = new WriteRecord([
      { base: rx.base, bytes: rx.bytes },
      { base: tx.base, bytes: tx.bytes },
    ]);
    link.setWriteLog(0, record.ringLog(rx.deviceAddr));
    link.setWriteLog(1, record.ringLog(tx.deviceAddr));
    const posted = new Map<number, number>();
    guestPostRx(rx, posted, 6, 700, 3);
    guestTransmit(tx, frameOf(100, 1), 3, false);
    record.snapshot();
    assert.equal(link.sendFrame(frameOf(60, 2)), SendResult.Sent);
    assert.equal(link.sendFrame(frameOf(mergeableRxBuffers ? 2000 : 600, 3)), SendResult.Sent);
    link.flush();
    link.kick(1, 0);
    assert.deepEqual(record.unreported(), [], `MRG_RXBUF ${mergeableRxBuffers}`);
    assert.deepEqual(record.strays, []);
    assert.equal(guestReceive(rx, posted).frames.length, 2);
  }
});

Deno.test("VhostUserLink.describeState() names the ring layout: packed, split, none", () => {
  const { link } = setup();
  assert.equal(link.describeState().ringLayout, "packed");
  link.stopVring(0);
  link.stopVring(1);
  assert.equal(link.describeState().ringLayout, "none");
  const split = new SplitRingDriver({ size: 16, index: 1 });
  link.startVring(split.vring(), 0);
  assert.equal(link.describeState().ringLayout, "split");
});
