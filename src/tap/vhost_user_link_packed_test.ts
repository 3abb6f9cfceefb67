/**
 * VhostUserLink over packed virtqueues (VIRTIO_F_RING_PACKED): frames both ways, merged
 * RX buffers, reservations, restarts from the ring state, dirty-page reports.
 */
import assert from "node:assert/strict";
import { NET_HDR_SIZE } from "./net_header.ts";
import { PackedRingDriver } from "../../tests/support/virtio/packed_ring_driver.ts";
import { SplitRingDriver } from "../../tests/support/virtio/split_ring_driver.ts";
import { decodePackedState } from "../virtio/packed_ring_layout.ts";
import { newFrameSpace, SendResult } from "./frame_transport.ts";
import {
  assertEverySentFrameArrives,
  bufferSegments,
  frameOf,
  linkOnRings,
  type PostedBuffers,
  postRxBuffers,
  receiveFrames,
  writeTxPacket,
} from "../../tests/support/tap/link_rings.ts";
import { WriteRecord } from "../../tests/support/virtio/recording_write_log.ts";
import { type NegotiatedFeatures } from "../virtio/started_vring.ts";

function setup(features: Partial<NegotiatedFeatures> = {}, size = 64, dataBytes = 4 << 20) {
  return linkOnRings((options) => new PackedRingDriver(options), { size, features, dataBytes });
}

/** The guest queues `frame` (with a zero virtio-net header) in `pieces` descriptors. */
function guestTransmit(tx: PackedRingDriver, frame: Uint8Array, pieces: number, indirect: boolean) {
  const { addr, length } = writeTxPacket(tx, frame);
  const id = tx.addChain(bufferSegments(addr, length, pieces, false), indirect);
  assert.ok(id !== null);
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
    const posted: PostedBuffers = new Map();
    const sent: Uint8Array[] = [];
    for (let round = 0; round < 10; round++) {
      postRxBuffers(rx, posted, 8, 2048, 1 + (round % 2));
      for (let i = 0; i < 3; i++) {
        const frame = frameOf(mergeableRxBuffers && i === 2 ? 5000 : 1000 + i, round);
        assert.equal(link.sendFrame(frame), SendResult.Sent, `round ${round} frame ${i}`);
        sent.push(frame);
      }
      link.flush();
      const got = receiveFrames(rx, posted);
      assert.equal(got.frames.length, 3);
      if (mergeableRxBuffers) assert.deepEqual(got.numBuffers, [1, 1, 3]);
      // the buffers the frames did not need are still posted: take them back
      for (;;) {
        const frame = frameOf(1000, 99);
        if (link.sendFrame(frame) !== SendResult.Sent) break;
        sent.push(frame);
        link.flush();
        const rest = receiveFrames(rx, posted);
        got.frames.push(...rest.frames);
      }
      // every frame arrives intact, in order
      assert.deepEqual(got.frames, sent.splice(0, got.frames.length));
    }
    assert.deepEqual(sent, [], "every Sent frame arrived");
  }
});

Deno.test("VhostUserLink over packed rings delivers every Sent frame intact for any buffer layout (property)", () => {
  assertEverySentFrameArrives(
    (features) => setup(features, 32, 1 << 20),
    (rx, b, indirect) => rx.freeSlots >= (indirect ? 1 : Math.min(b.pieces, b.bytes)),
  );
});

Deno.test("VhostUserLink over packed rings: reserveFrame() spans posted buffers, commit returns the rest", () => {
  const { rx, link } = setup({ mergeableRxBuffers: true }, 64);
  const posted: PostedBuffers = new Map();
  postRxBuffers(rx, posted, 10, 4096);
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
  const got = receiveFrames(rx, posted);
  assert.deepEqual(got.frames, [frame]);
  // the unused fifth buffer went back: six remain for a frame of six buffers
  const next = frameOf(6 * 4096 - NET_HDR_SIZE, 4);
  assert.equal(link.sendFrame(next), SendResult.Sent);
  link.flush();
  assert.deepEqual(receiveFrames(rx, posted).frames, [next]);
});

Deno.test("VhostUserLink over packed rings stops with both positions and resumes there", () => {
  const { rx, tx, handler, link } = setup({}, 8);
  const posted: PostedBuffers = new Map();
  for (let i = 0; i < 11; i++) {
    guestTransmit(tx, frameOf(80, i), 1, false), link.kick(1, 0), tx.takeUsed();
  }
  postRxBuffers(rx, posted, 5, 2048);
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
  assert.equal(receiveFrames(rx, posted).frames.length, 1);
  link.startVring(rx.vring(rxBase), 0);
  link.startVring(tx.vring(txBase), 0);
  guestTransmit(tx, frameOf(90, 42), 2, false);
  link.kick(1, 0);
  assert.deepEqual(handler.frames.at(-1), frameOf(90, 42));
  assert.equal(link.sendFrame(frameOf(200, 7)), SendResult.Sent);
  link.flush();
  assert.deepEqual(receiveFrames(rx, posted).frames, [frameOf(200, 7)]);
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
    const posted: PostedBuffers = new Map();
    postRxBuffers(rx, posted, 6, 700, 3);
    guestTransmit(tx, frameOf(100, 1), 3, false);
    record.snapshot();
    assert.equal(link.sendFrame(frameOf(60, 2)), SendResult.Sent);
    assert.equal(link.sendFrame(frameOf(mergeableRxBuffers ? 2000 : 600, 3)), SendResult.Sent);
    link.flush();
    link.kick(1, 0);
    assert.deepEqual(record.unreported(), [], `MRG_RXBUF ${mergeableRxBuffers}`);
    assert.deepEqual(record.strays, []);
    assert.equal(receiveFrames(rx, posted).frames.length, 2);
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
