/**
 * What the tests of VhostUserLink over split rings (src/tap/vhost_user_link_test.ts)
 * and over packed rings (src/tap/vhost_user_link_packed_test.ts) do alike: test
 * frames, an RX and a TX ring driver started on the link, buffers cut into
 * descriptors, received parts joined, and the arbitraries of the "any buffer layout"
 * properties.
 *
 * @module
 */

import fc from "fast-check";
import type { ArrayGuestMemory } from "../virtio/array_guest_memory.ts";
import type { DriverOptions, DriverSegment } from "../virtio/split_ring_driver.ts";
import type { NegotiatedFeatures, StartedVring } from "../../../src/virtio/started_vring.ts";
import { SendResult } from "../../../src/tap/frame_transport.ts";
import type { VhostUserLink } from "../../../src/tap/vhost_user_link.ts";

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
 * Makes the RX (index 0) and TX (index 1) ring drivers of one link in `memory`, each
 * with `dataBytes` for buffers, and starts both rings on `link` at base 0.
 */
export function startLinkRings<D extends { vring(): StartedVring }>(
  link: VhostUserLink,
  makeDriver: (options: DriverOptions) => D,
  ring: {
    size: number;
    features: Partial<NegotiatedFeatures>;
    memory: ArrayGuestMemory;
    dataBytes: number;
  },
): { rx: D; tx: D } {
  const rx = makeDriver({ ...ring, index: 0, base: RX_REGION_BASE });
  const tx = makeDriver({ ...ring, index: 1, base: TX_REGION_BASE });
  link.startVring(rx.vring(), 0);
  link.startVring(tx.vring(), 0);
  return { rx, tx };
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

/**
 * The arbitraries of the "every Sent frame arrives for any buffer layout" properties:
 * the features, the RX buffers the guest posts (bytes, descriptors), the frame lengths.
 */
export const anyBufferLayout = {
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
