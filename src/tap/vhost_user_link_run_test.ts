/**
 * VhostUserLink.reserveFrames(): a run of frames reserved at once over the guest's RX
 * buffers, their payloads one iovec table the kernel writes through, committed in
 * order, the rest given back — over split and packed rings, with hostile buffers.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { NET_HDR_SIZE } from "./net_header.ts";
import { type FrameSpace, MAX_RUN_FRAMES, newFrameSpace, SendResult } from "./frame_transport.ts";
import type { VhostUserLink } from "./vhost_user_link.ts";
import { PackedRingDriver } from "../../tests/support/virtio/packed_ring_driver.ts";
import { SplitRingDriver } from "../../tests/support/virtio/split_ring_driver.ts";
import {
  frameOf,
  joinParts,
  linkOnRings,
  type LinkRingDriver,
  type PostedBuffers,
  postRxBuffers,
  receiveFrames,
  writeIntoSpace,
} from "../../tests/support/tap/link_rings.ts";
import { loopbackPair, receiveAll } from "../../tests/support/ffi/loopback_pair.ts";
import type { TcpSocket } from "../../ffi/tcp_socket.ts";
import type { NegotiatedFeatures } from "../virtio/started_vring.ts";

/** Ethernet, IPv4 and TCP headers: what the TCP translator reserves in front. */
const HEADERS = 54;

type Layout = "split" | "packed";

function setup(layout: Layout, features: Partial<NegotiatedFeatures>, size = 256) {
  const ring = { size, features, dataBytes: 4 << 20 };
  return layout === "split"
    ? linkOnRings((options) => new SplitRingDriver(options), ring)
    : linkOnRings((options) => new PackedRingDriver(options), ring);
}

type Pair = { sender: TcpSocket; receiver: TcpSocket };

/** The kernel writes `payload` through the run's table, as the translator's peek does. */
async function fillTable(pair: Pair, space: FrameSpace, payload: Uint8Array): Promise<void> {
  assert.ok(space.vectors !== null);
  space.vectors.truncate(payload.length);
  let sent = 0;
  while (sent < payload.length) sent += pair.sender.send(payload.subarray(sent));
  await receiveAll(pair.receiver, space.vectors, payload.length);
}

/** Commits `frame` as the run's next frame: its headers through the first view. */
function commitNext(link: VhostUserLink, space: FrameSpace, frame: Uint8Array): SendResult {
  space.views[0].set(frame.subarray(0, HEADERS));
  return link.commitFrame(frame.length);
}

/** Sends 60-byte frames until the link has no room; returns how many were Sent. */
function drain(link: VhostUserLink): number {
  let sent = 0;
  while (link.sendFrame(frameOf(60, 0xd0)) === SendResult.Sent) sent++;
  link.flush();
  return sent;
}

for (const layout of ["split", "packed"] as const) {
  Deno.test(`VhostUserLink.reserveFrames() reserves a run whose payloads the kernel fills with one read; committed in order, each frame arrives whole (${layout})`, async () => {
    const pair = await loopbackPair();
    try {
      const { rx, link } = setup(layout, { mergeableRxBuffers: true, guestChecksum: true });
      const posted: PostedBuffers = new Map();
      postRxBuffers(rx, posted, 40, 4096);
      const space = newFrameSpace();
      space.acceptVectors = true;
      assert.equal(link.reserveFrames(space, 3, 20000, HEADERS), SendResult.Sent);
      assert.equal(space.frames, 3);
      assert.deepEqual([...space.frameRooms.subarray(0, 3)], [19946, 19946, 19946]);
      assert.equal(space.vectors?.totalBytes, 3 * 19946);
      assert.equal(space.length, HEADERS + 3 * 19946);
      assert.equal(link.counters.rxRuns, 1);
      assert.equal(link.counters.rxRunFrames, 3);
      const frames = [0, 1, 2].map((k) => frameOf(20000, k + 1));
      await fillTable(pair, space, joinParts(frames.map((f) => f.subarray(HEADERS))));
      for (const frame of frames) assert.equal(commitNext(link, space, frame), SendResult.Sent);
      link.flush();
      const got = receiveFrames(rx, posted);
      assert.deepEqual(got.frames, frames);
      assert.deepEqual(got.numBuffers, [5, 5, 5]);
      // The 25 buffers the run did not take are all still there.
      assert.equal(drain(link), 25);
      receiveFrames(rx, posted);
      assert.equal(posted.size, 0);
    } finally {
      pair.close();
    }
  });

  Deno.test(`VhostUserLink.reserveFrames(): a frame committed short ends the run and gives back its spare buffers and the later frames; a cancel gives back the frames not committed (${layout})`, async () => {
    const pair = await loopbackPair();
    try {
      const { rx, link } = setup(layout, { mergeableRxBuffers: true });
      const posted: PostedBuffers = new Map();
      postRxBuffers(rx, posted, 40, 4096);
      const space = newFrameSpace();
      space.acceptVectors = true;
      assert.equal(link.reserveFrames(space, 3, 20000, HEADERS), SendResult.Sent);
      const first = frameOf(20000, 1);
      const second = frameOf(5000, 2);
      await fillTable(
        pair,
        space,
        joinParts([first.subarray(HEADERS), second.subarray(HEADERS)]),
      );
      assert.equal(commitNext(link, space, first), SendResult.Sent);
      assert.equal(commitNext(link, space, second), SendResult.Sent);
      assert.equal(
        commitNext(link, space, frameOf(20000, 3)),
        SendResult.Dropped,
        "the run ended with the short frame",
      );
      link.flush();
      assert.deepEqual(receiveFrames(rx, posted).frames, [first, second]);
      assert.equal(posted.size, 40 - 5 - 2);
      // A second run, cancelled after its first frame.
      assert.equal(link.reserveFrames(space, 4, 8000, HEADERS), SendResult.Sent);
      assert.equal(space.frames, 4);
      const third = frameOf(8000, 4);
      await fillTable(pair, space, third.subarray(HEADERS));
      assert.equal(commitNext(link, space, third), SendResult.Sent);
      link.cancelFrame();
      link.flush();
      assert.deepEqual(receiveFrames(rx, posted).frames, [third]);
      assert.equal(drain(link), 33 - 2, "every buffer given back is taken again");
      receiveFrames(rx, posted);
      assert.equal(posted.size, 0);
    } finally {
      pair.close();
    }
  });

  Deno.test(`VhostUserLink.reserveFrames() without MRG_RXBUF takes one buffer per frame (${layout})`, async () => {
    const pair = await loopbackPair();
    try {
      const { rx, link } = setup(layout, {});
      const posted: PostedBuffers = new Map();
      postRxBuffers(rx, posted, 6, 1514 + NET_HDR_SIZE);
      const space = newFrameSpace();
      space.acceptVectors = true;
      assert.equal(link.reserveFrames(space, 4, 65535, HEADERS), SendResult.Sent);
      assert.equal(space.frames, 4);
      assert.deepEqual([...space.frameRooms.subarray(0, 4)], [1460, 1460, 1460, 1460]);
      const frames = [0, 1, 2, 3].map((k) => frameOf(1514, k));
      await fillTable(pair, space, joinParts(frames.map((f) => f.subarray(HEADERS))));
      for (const frame of frames) assert.equal(commitNext(link, space, frame), SendResult.Sent);
      link.flush();
      const got = receiveFrames(rx, posted);
      assert.deepEqual(got.frames, frames);
      assert.deepEqual(got.numBuffers, [1, 1, 1, 1]);
      assert.equal(posted.size, 2);
    } finally {
      pair.close();
    }
  });

  Deno.test(`VhostUserLink.reserveFrames() makes no run behind a first frame with no room past the headers (${layout})`, () => {
    const { rx, link } = setup(layout, {});
    const posted: PostedBuffers = new Map();
    postRxBuffers(rx, posted, 1, NET_HDR_SIZE + HEADERS);
    postRxBuffers(rx, posted, 3, 1514 + NET_HDR_SIZE);
    const space = newFrameSpace();
    space.acceptVectors = true;
    assert.equal(link.reserveFrames(space, 4, 1514, HEADERS), SendResult.Sent);
    assert.equal(space.frames, 1);
    assert.equal(space.frameRooms[0], 0);
    assert.equal(link.counters.rxRuns, 0);
    link.cancelFrame();
    assert.equal(link.sendFrame(frameOf(HEADERS, 3)), SendResult.Sent, "the small buffer is back");
    assert.equal(drain(link), 3, "the three full-sized buffers are still there");
  });

  Deno.test(`VhostUserLink.reserveFrames() ends the run before a buffer that cannot hold the headers in one piece, and leaves it for the next frame (${layout})`, async () => {
    const pair = await loopbackPair();
    try {
      const { rx, link } = setup(layout, { mergeableRxBuffers: true });
      const posted: PostedBuffers = new Map();
      postRxBuffers(rx, posted, 2, 4096);
      postRxBuffers(rx, posted, 1, 4096, 64); // 64-byte descriptors: the headers split
      postRxBuffers(rx, posted, 4, 4096);
      const space = newFrameSpace();
      space.acceptVectors = true;
      assert.equal(link.reserveFrames(space, 3, 8000, HEADERS), SendResult.Sent);
      assert.equal(space.frames, 1, "the second frame would start on the split buffer");
      const frame = frameOf(8000, 5);
      await fillTable(pair, space, frame.subarray(HEADERS));
      assert.equal(commitNext(link, space, frame), SendResult.Sent);
      // The split buffer starts the next frame, reserved as views.
      const next = frameOf(3000, 6);
      assert.equal(link.sendFrame(next), SendResult.Sent);
      link.flush();
      assert.deepEqual(receiveFrames(rx, posted).frames, [frame, next]);
      assert.equal(posted.size, 4);
    } finally {
      pair.close();
    }
  });

  Deno.test(`VhostUserLink.reserveFrames(): a malformed buffer among a run's given-back frames makes them come back used and empty, never handed out twice (${layout})`, async () => {
    const pair = await loopbackPair();
    try {
      const { rx, link, lines } = setup(layout, { mergeableRxBuffers: true });
      const posted: PostedBuffers = new Map();
      postRxBuffers(rx, posted, 10, 4096);
      const readable = rx.alloc(4096);
      const bad = rx.addChain([{ addr: readable, length: 4096, writable: false }]);
      assert.ok(bad !== null);
      postRxBuffers(rx, posted, 10, 4096);
      const space = newFrameSpace();
      space.acceptVectors = true;
      assert.equal(link.reserveFrames(space, 3, 20000, HEADERS), SendResult.Sent);
      assert.equal(space.frames, 3, "the third frame starts past the dropped buffer");
      const frame = frameOf(20000, 7);
      await fillTable(pair, space, frame.subarray(HEADERS));
      assert.equal(commitNext(link, space, frame), SendResult.Sent);
      link.cancelFrame();
      link.flush();
      // The dropped buffer, the frame's five, and the ten of the two frames given back.
      const used = rx.takeUsed();
      const ids = used.map((u) => u.id);
      assert.equal(new Set(ids).size, ids.length, "no buffer returned twice");
      assert.equal(used.length, 16);
      assert.equal(used.filter((u) => u.len > 0).length, 5);
      assert.ok(ids.includes(bad));
      assert.ok(lines.some((line) => line.includes("device-readable")));
      assert.equal(drain(link), 5, "the five buffers after the run are still there");
      assert.ok(rx.takeUsed().every((u) => !ids.includes(u.id)));
    } finally {
      pair.close();
    }
  });
}

/** One RX buffer of the property: bytes, descriptors, or a device-readable (malformed) one. */
type Buffer = { bytes: number; pieces: number; readable: boolean };

Deno.test("VhostUserLink.reserveFrames(): for any buffers and any commits, the guest gets exactly the frames committed and every buffer back once (property)", async () => {
  const pair = await loopbackPair();
  try {
    const buffer = fc.record({
      bytes: fc.integer({ min: 100, max: 9000 }),
      pieces: fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 4 })),
      readable: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<Layout>("split", "packed"),
        fc.boolean(),
        fc.array(buffer, { minLength: 1, maxLength: 60 }),
        fc.integer({ min: 1, max: MAX_RUN_FRAMES + 2 }),
        fc.integer({ min: HEADERS + 1, max: 65535 }),
        fc.integer({ min: 0, max: MAX_RUN_FRAMES }),
        fc.oneof(fc.constant(-1), fc.double({ min: 0, max: 1, noNaN: true })),
        async (layout, mergeableRxBuffers, buffers, frames, maxLength, full, shortFraction) => {
          const ring = setup(layout, { mergeableRxBuffers, guestChecksum: true }, 256);
          const link = ring.link;
          // The guest's view of the ring, noting every buffer that comes back.
          const returned: number[] = [];
          const rx: LinkRingDriver = {
            alloc: (length) => ring.rx.alloc(length),
            read: (gpa, length) => ring.rx.read(gpa, length),
            addChain: (segments, indirect) => ring.rx.addChain(segments, indirect),
            takeUsed() {
              const used = ring.rx.takeUsed();
              for (const u of used) returned.push(u.id);
              return used;
            },
          };
          const posted: PostedBuffers = new Map();
          const all = new Set<number>();
          for (const b of buffers) postBuffer(rx, posted, all, b);
          const space = newFrameSpace();
          space.acceptVectors = true;
          const result = link.reserveFrames(space, frames, maxLength, HEADERS);
          const expected: Uint8Array[] = [];
          if (result === SendResult.Sent) {
            assert.ok(space.frames >= 1 && space.frames <= Math.min(frames, MAX_RUN_FRAMES));
            let rooms = 0;
            for (let k = 0; k < space.frames; k++) {
              assert.ok(space.frameRooms[k] > 0 && space.frameRooms[k] <= maxLength - HEADERS);
              rooms += space.frameRooms[k];
            }
            assert.equal(space.length, HEADERS + rooms);
            // `full` frames committed whole, then maybe one short, then a cancel.
            const whole = Math.min(full, space.frames);
            const lengths: number[] = [];
            for (let k = 0; k < whole; k++) lengths.push(HEADERS + space.frameRooms[k]);
            if (whole < space.frames && shortFraction >= 0) {
              lengths.push(HEADERS + 1 + Math.floor(shortFraction * (space.frameRooms[whole] - 1)));
            }
            const built = lengths.map((n, k) => frameOf(n, k * 13 + 1));
            if (space.vectors !== null && built.length > 0) {
              await fillTable(pair, space, joinParts(built.map((f) => f.subarray(HEADERS))));
              for (const frame of built) {
                assert.equal(commitNext(link, space, frame), SendResult.Sent);
                expected.push(frame);
              }
            } else if (built.length > 0) {
              // A run of one reserved as views (the first buffer splits the headers).
              assert.equal(space.frames, 1);
              writeIntoSpace(space, built[0]);
              assert.equal(link.commitFrame(built[0].length), SendResult.Sent);
              expected.push(built[0]);
            }
            link.cancelFrame();
          }
          link.flush();
          const got = receiveFrames(rx, posted);
          assert.deepEqual(got.frames, expected);
          // Whatever was not used comes out again, each buffer exactly once.
          for (let turn = 0; turn < 4; turn++) drain(link);
          const drained = receiveFrames(rx, posted);
          assert.ok(drained.frames.every((f) => f.length === 60));
          assert.equal(posted.size, 0, "every writable buffer came back");
          assert.equal(new Set(returned).size, returned.length, "no buffer came back twice");
          assert.deepEqual(new Set(returned), all, "every buffer came back");
        },
      ),
      { numRuns: 80 },
    );
  } finally {
    pair.close();
  }
});

/** Posts one buffer of the property's shape; readable ones are not in `posted`. */
function postBuffer(rx: LinkRingDriver, posted: PostedBuffers, all: Set<number>, b: Buffer) {
  if (!b.readable) {
    const before = new Set(posted.keys());
    postRxBuffers(rx, posted, 1, b.bytes, b.pieces);
    for (const id of posted.keys()) if (!before.has(id)) all.add(id);
    return;
  }
  const addr = rx.alloc(b.bytes);
  const id = rx.addChain([{ addr, length: b.bytes, writable: false }]);
  assert.ok(id !== null);
  all.add(id);
}
