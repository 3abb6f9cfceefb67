/**
 * What the tests of VhostUserLink over split rings (src/tap/vhost_user_link_test.ts)
 * and over packed rings (src/tap/vhost_user_link_packed_test.ts) do alike: test
 * frames, an RX and a TX ring driver started on the link, buffers cut into
 * descriptors, RX buffers posted and the frames written to them read back, and the
 * "any buffer layout" property.
 *
 * @module
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { ArrayGuestMemory } from "../virtio/array_guest_memory.ts";
import { RecordingHandler } from "./frame_handler.ts";
import type { LogLevel } from "../../../src/log/logger.ts";
import type { DriverOptions, DriverSegment, UsedElement } from "../virtio/split_ring_driver.ts";
import {
  createNetHeader,
  decodeNetHeader,
  NET_HDR_SIZE,
  type NetHeader,
} from "../../../src/tap/net_header.ts";
import type { NegotiatedFeatures, StartedVring } from "../../../src/virtio/started_vring.ts";
import { type FrameSpace, SendResult } from "../../../src/tap/frame_transport.ts";
import { VhostUserLink } from "../../../src/tap/vhost_user_link.ts";
import { recordingLogger } from "../recording_logger.ts";

/** A test frame of `length` bytes whose contents depend on `seed`. */
export function frameOf(length: number, seed: number): Uint8Array {
  const f = new Uint8Array(length);
  for (let i = 0; i < length; i++) f[i] = (i * 7 + seed) & 0xff;
  return f;
}

/** Guest-physical base of the RX ring driver's region. */
const RX_REGION_BASE = 0x10_0000;
/** Guest-physical base of the TX ring driver's region. */
const TX_REGION_BASE = 0x1000_0000;

/**
 * A VhostUserLink over the RX (index 0) and TX (index 1) rings of drivers made by
 * `makeDriver` in one guest memory, each with `dataBytes` for buffers, both started at
 * base 0. The link logs at `logLevel` into `lines` and hands frames to `handler`.
 */
export function linkOnRings<D extends { vring(): StartedVring }>(
  makeDriver: (options: DriverOptions) => D,
  ring: { size: number; features: Partial<NegotiatedFeatures>; dataBytes: number },
  logLevel: LogLevel = "info",
  handler: RecordingHandler = new RecordingHandler(),
): {
  memory: ArrayGuestMemory;
  rx: D;
  tx: D;
  handler: RecordingHandler;
  link: VhostUserLink;
  lines: string[];
} {
  const memory = new ArrayGuestMemory();
  const { logger, lines } = recordingLogger();
  logger.setLevel(logLevel);
  const link = new VhostUserLink(handler, { logger, clock: () => 0 });
  const rx = makeDriver({ ...ring, memory, index: 0, base: RX_REGION_BASE });
  const tx = makeDriver({ ...ring, memory, index: 1, base: TX_REGION_BASE });
  link.startVring(rx.vring(), 0);
  link.startVring(tx.vring(), 0);
  return { memory, rx, tx, handler, link, lines };
}

/**
 * The guest's packet for `frame`: a virtio-net header (`header`, or all zero) and the
 * frame, written into `tx`'s data area; returns its guest address and length.
 */
export function writeTxPacket(
  tx: { alloc(length: number): number; write(gpa: number, data: Uint8Array): void },
  frame: Uint8Array,
  header?: Uint8Array,
): { addr: number; length: number } {
  const packet = new Uint8Array(NET_HDR_SIZE + frame.length);
  if (header) packet.set(header);
  packet.set(frame, NET_HDR_SIZE);
  const addr = tx.alloc(packet.length);
  tx.write(addr, packet);
  return { addr, length: packet.length };
}

/** The buffer [addr, addr + bytes) cut into `pieces` descriptors of equal length (the last shorter). */
export function bufferSegments(
  addr: number,
  bytes: number,
  pieces: number,
  writable: boolean,
): DriverSegment[] {
  const per = Math.ceil(bytes / pieces);
  const segments: DriverSegment[] = [];
  for (let at = 0; at < bytes; at += per) {
    segments.push({ addr: addr + at, length: Math.min(per, bytes - at), writable });
  }
  return segments;
}

/** The parts, one after the other, in one new array. */
export function joinParts(parts: readonly Uint8Array[]): Uint8Array {
  const joined = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    joined.set(p, at);
    at += p.length;
  }
  return joined;
}

/** Sends frameOf(length, i) for each of `lengths`, flushes, and returns the frames Sent. */
export function sendFrames(link: VhostUserLink, lengths: readonly number[]): Uint8Array[] {
  const sent: Uint8Array[] = [];
  lengths.forEach((length, i) => {
    const frame = frameOf(length, i);
    if (link.sendFrame(frame) === SendResult.Sent) sent.push(frame);
  });
  link.flush();
  return sent;
}

/** What the link tests ask of a ring driver, split or packed. */
export interface LinkRingDriver {
  /** Reserves `length` bytes of the driver's data area; returns their guest address. */
  alloc(length: number): number;
  /** The `length` bytes at guest address `gpa`. */
  read(gpa: number, length: number): Uint8Array;
  /** Offers a buffer made of `segments`; returns its id, or null when the ring is full. */
  addChain(segments: readonly DriverSegment[], indirect?: boolean): number | null;
  /** The used buffers published since the last call. */
  takeUsed(): UsedElement[];
}

/** The RX buffers the guest posted and has not read back: buffer id → guest address. */
export type PostedBuffers = Map<number, number>;

/** The guest posts `count` receive buffers of `bytes` bytes each, in `pieces` descriptors. */
export function postRxBuffers(
  rx: LinkRingDriver,
  posted: PostedBuffers,
  count: number,
  bytes: number,
  pieces = 1,
  indirect = false,
): void {
  for (let i = 0; i < count; i++) {
    const addr = rx.alloc(bytes);
    const id = rx.addChain(bufferSegments(addr, bytes, pieces, true), indirect);
    assert.ok(id !== null, "the RX ring has room for the buffer");
    posted.set(id, addr);
  }
}

/** The frames the device wrote to posted RX buffers, as the guest reads them back. */
export interface ReceivedFrames {
  /** Each frame without its virtio-net header, its buffers joined. */
  frames: Uint8Array[];
  /** Each frame's virtio-net header. */
  headers: NetHeader[];
  /** Each frame's num_buffers. */
  numBuffers: number[];
}

/**
 * Reads the frames the device wrote: each used buffer with data starts a frame (with
 * its virtio-net header) that goes on in num_buffers - 1 more; empty used buffers
 * (too short for a header) are skipped. The buffers read are forgotten from `posted`.
 */
export function receiveFrames(rx: LinkRingDriver, posted: PostedBuffers): ReceivedFrames {
  const used = rx.takeUsed();
  const got: ReceivedFrames = { frames: [], headers: [], numBuffers: [] };
  for (let i = 0; i < used.length;) {
    if (used[i].len === 0) {
      posted.delete(used[i++].id);
      continue;
    }
    const first = rx.read(posted.get(used[i].id)!, used[i].len);
    const header = decodeNetHeader(first, 0, createNetHeader());
    const buffers = Math.max(1, header.numBuffers);
    const parts = [first.subarray(NET_HDR_SIZE)];
    for (let k = 1; k < buffers; k++) {
      parts.push(rx.read(posted.get(used[i + k].id)!, used[i + k].len));
    }
    for (let k = 0; k < buffers; k++) posted.delete(used[i + k].id);
    i += buffers;
    got.frames.push(joinParts(parts));
    got.headers.push(header);
    got.numBuffers.push(header.numBuffers);
  }
  return got;
}

/**
 * The property "every Sent frame arrives intact, for any buffer layout": the guest
 * posts arbitrary RX buffers on rings that `start` makes for arbitrary features, the
 * link sends frames of arbitrary lengths, and the guest reads back exactly the frames
 * Sent, in order, one buffer each without MRG_RXBUF.
 * @param roomFor whether the RX ring has room for one more buffer of `bytes` bytes in
 *   `pieces` descriptors
 */
export function assertEverySentFrameArrives<D extends LinkRingDriver>(
  start: (features: Partial<NegotiatedFeatures>) => { rx: D; link: VhostUserLink },
  roomFor: (rx: D, buffer: { bytes: number; pieces: number }, indirect: boolean) => boolean,
): void {
  fc.assert(
    fc.property(
      anyBufferLayout.features,
      anyBufferLayout.buffers,
      anyBufferLayout.lengths,
      (features, buffers, lengths) => {
        const { rx, link } = start(features);
        const posted: PostedBuffers = new Map();
        for (const b of buffers) {
          if (!roomFor(rx, b, features.indirectDescriptors)) break;
          const pieces = Math.min(b.pieces, b.bytes);
          postRxBuffers(rx, posted, 1, b.bytes, pieces, features.indirectDescriptors);
        }
        const sent = sendFrames(link, lengths);
        const got = receiveFrames(rx, posted);
        assert.ok(got.numBuffers.every((n) => n >= 1), "num_buffers is at least 1");
        if (!features.mergeableRxBuffers) assert.ok(got.numBuffers.every((n) => n === 1));
        assert.deepEqual(got.frames, sent);
      },
    ),
    { numRuns: 60 },
  );
}

/**
 * The arbitraries of the "every Sent frame arrives for any buffer layout" property:
 * the features, the RX buffers the guest posts (bytes, descriptors), the frame lengths.
 */
const anyBufferLayout = {
  features: fc.record({
    eventIndex: fc.boolean(),
    indirectDescriptors: fc.boolean(),
    mergeableRxBuffers: fc.boolean(),
  }),
  buffers: fc.array(
    fc.record({
      bytes: fc.integer({ min: 1, max: 3000 }),
      pieces: fc.integer({ min: 1, max: 4 }),
    }),
    { minLength: 1, maxLength: 30 },
  ),
  lengths: fc.array(fc.integer({ min: 14, max: 9000 }), { minLength: 1, maxLength: 20 }),
};

/** Writes `frame` into a reservation's views in order. */
export function writeIntoSpace(space: FrameSpace, frame: Uint8Array): void {
  let at = 0;
  for (let i = 0; i < space.count && at < frame.length; i++) {
    const view = space.views[i];
    const n = Math.min(view.length, frame.length - at);
    view.set(frame.subarray(at, at + n));
    at += n;
  }
}
