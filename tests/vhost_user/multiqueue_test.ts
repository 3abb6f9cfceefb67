/**
 * Several queue pairs over a real socket: the harness front-end sets up N pairs as
 * QEMU's `-netdev vhost-user,queues=N` does, the in-process session runs the control
 * plane and src/tap/vhost_user_link.ts behind it. TX is served on every enabled pair,
 * frames toward the guest spread over the pairs by flow, pairs come and go while the
 * others run, and a hostile front-end gets a clear error and leaves nothing behind.
 */
import assert from "node:assert/strict";
import { openFdCount } from "../../ffi/process.ts";
import type { FrameHandler, GuestLink } from "../../src/tap/frame_transport.ts";
import { SendResult } from "../../src/tap/frame_transport.ts";
import { frameFlowHash } from "../../src/tap/flow_hash.ts";
import { VhostUserLink } from "../../src/tap/vhost_user_link.ts";
import { encodeRequest } from "../support/vhost_user/request_encoder.ts";
import {
  featureBit,
  Request,
  VHOST_LOG_PAGE,
  VIRTIO_F_RING_PACKED,
} from "../../src/vhost_user/protocol.ts";
import { InProcessBackend } from "../support/frontend/in_process.ts";
import type { UsedChain } from "../support/virtio/split_ring_driver.ts";
import {
  type HarnessDirtyLog,
  QEMU_NET_FEATURES,
  rxRing,
  txRing,
  type VhostUserFrontend,
} from "../support/frontend/vhost_user_frontend.ts";
import { waitUntil } from "../support/wait_until.ts";
import { vringStatePayload } from "../../src/vhost_user/payload_codec.ts";

class CollectingHandler implements FrameHandler {
  readonly frames: Uint8Array[] = [];
  link: GuestLink | null = null;
  ups = 0;
  downs = 0;
  handleFrame(frame: Uint8Array): void {
    this.frames.push(frame.slice());
  }
  endOfBatch(): void {}
  linkUp(link: GuestLink): void {
    this.link = link;
    this.ups++;
  }
  linkDown(): void {
    this.downs++;
  }
}

/** An IPv4 UDP frame from 10.0.0.1:`srcPort` to 10.0.0.2:`dstPort` (headers only matter). */
function udpFrame(srcPort: number, dstPort: number): Uint8Array {
  const f = new Uint8Array(14 + 20 + 8 + 18);
  const v = new DataView(f.buffer);
  f.fill(0xff, 0, 6);
  v.setUint16(12, 0x0800);
  f[14] = 0x45;
  v.setUint16(16, f.length - 14);
  f[22] = 64;
  f[23] = 17;
  v.setUint32(26, 0x0a000001);
  v.setUint32(30, 0x0a000002);
  v.setUint16(34, srcPort);
  v.setUint16(36, dstPort);
  v.setUint16(38, 26);
  return f;
}

/** Sends `frames` toward the guest, waiting for room (the RX kicks reach the session first). */
async function sendAll(handler: CollectingHandler, frames: Uint8Array[]): Promise<void> {
  for (const frame of frames) {
    await waitUntil("RX room", () => handler.link!.sendFrame(frame) === SendResult.Sent);
  }
  handler.link!.flush();
}

/** Frames each pair's RX ring received so far, by pair. */
function receivedByPair(frontend: VhostUserFrontend, pairs: number): Uint8Array[][] {
  const out: Uint8Array[][] = [];
  for (let pair = 0; pair < pairs; pair++) {
    out.push(frontend.rxFrames(frontend.vrings[rxRing(pair)].takeUsedChains()));
  }
  return out;
}

for (const packed of [false, true]) {
  Deno.test(`4 queue pairs over a socket${packed ? " (packed rings)" : ""}: TX served on every pair, flows spread over the RX queues, a pair torn down and back while the others run`, async () => {
    const baseline = openFdCount();
    const backend = new InProcessBackend();
    const handler = new CollectingHandler();
    const link = new VhostUserLink(handler, { logger: backend.logger });
    const { frontend, session } = backend.connect(link);
    try {
      await frontend.negotiate({
        queuePairs: 4,
        features: packed ? QEMU_NET_FEATURES | featureBit(VIRTIO_F_RING_PACKED) : undefined,
      });
      assert.equal(link.describeState().ringLayout, packed ? "packed" : "split");
      for (let pair = 0; pair < 4; pair++) frontend.postRxBuffers(64, 2048, pair);
      await waitUntil("link up", () => handler.link !== null);
      // guest → stack on every pair
      for (let pair = 0; pair < 4; pair++) frontend.sendFrame(udpFrame(1000 + pair, 53), pair);
      await waitUntil("TX of every pair at the handler", () => handler.frames.length === 4);
      for (let pair = 0; pair < 4; pair++) {
        assert.equal((await frontend.waitUsed(txRing(pair), 1)).length, 1);
      }
      // stack → guest: 40 flows, two frames each
      const flows = Array.from({ length: 40 }, (_, i) => udpFrame(53, 20000 + i));
      await sendAll(handler, [...flows, ...flows]);
      await waitUntil("every frame in the guest", () => {
        const used = [0, 1, 2, 3].reduce((n, p) => n + frontend.vrings[rxRing(p)].usedCount(), 0);
        return used === 80;
      });
      const received = receivedByPair(frontend, 4);
      for (let pair = 0; pair < 4; pair++) {
        assert.ok(received[pair].length > 0, `pair ${pair} got some flows`);
        for (const frame of received[pair]) assert.equal(frameFlowHash(frame) % 4, pair);
      }
      assert.match(link.describeCounters(), /frames per queue pair RX \d+,\d+,\d+,\d+ TX 1,1,1,1/);

      // pair 2 torn down while the others run: no link down, its flows go elsewhere
      const bases = [await frontend.stopRing(rxRing(2)), await frontend.stopRing(txRing(2))];
      assert.equal(handler.downs, 0);
      const pair2Flows = flows.filter((f) => frameFlowHash(f) % 4 === 2);
      assert.ok(pair2Flows.length > 0);
      await sendAll(handler, pair2Flows);
      await waitUntil("pair 2's flows on pairs 0, 1, 3", () => {
        const used = [0, 1, 3].reduce((n, p) => n + frontend.vrings[rxRing(p)].usedCount(), 0);
        return used === pair2Flows.length;
      });
      assert.equal(frontend.vrings[rxRing(2)].usedCount(), 0);
      frontend.sendFrame(udpFrame(7, 53), 3);
      await waitUntil("TX of pair 3 still served", () => handler.frames.length === 5);
      // and brought back at the bases it was given
      await frontend.restartRing(rxRing(2), bases[0]);
      await frontend.restartRing(txRing(2), bases[1]);
      frontend.sendFrame(udpFrame(8, 53), 2);
      await waitUntil("TX of pair 2 served again", () => handler.frames.length === 6);
      assert.equal(handler.ups, 1);
      assert.deepEqual(backend.linesAt("error"), []);
    } finally {
      frontend.close();
      await session.closed;
      await backend.close();
    }
    assert.equal(handler.downs, 1, "down once, when the front-end left");
    assert.equal(openFdCount(), baseline, "every fd of every ring closed");
  });
}

Deno.test("queues=4 with 2 pairs enabled: the other pairs' rings are set up but not served", async () => {
  const backend = new InProcessBackend();
  const handler = new CollectingHandler();
  const link = new VhostUserLink(handler, { logger: backend.logger });
  const { frontend, session } = backend.connect(link);
  try {
    await frontend.negotiate({ queuePairs: 4, enabledPairs: 2 });
    for (let pair = 0; pair < 4; pair++) frontend.postRxBuffers(16, 2048, pair);
    await waitUntil("link up", () => handler.link !== null);
    frontend.sendFrame(udpFrame(1, 53), 3); // on a disabled pair: waits
    frontend.sendFrame(udpFrame(2, 53), 1);
    await waitUntil("pair 1's frame", () => handler.frames.length === 1);
    const flows = Array.from({ length: 16 }, (_, i) => udpFrame(53, 30000 + i));
    await sendAll(handler, flows);
    await waitUntil("the flows on pairs 0 and 1", () => {
      return frontend.vrings[rxRing(0)].usedCount() + frontend.vrings[rxRing(1)].usedCount() ===
        16;
    });
    assert.equal(
      frontend.vrings[rxRing(2)].usedCount() + frontend.vrings[rxRing(3)].usedCount(),
      0,
    );
    assert.equal(handler.frames.length, 1, "the disabled pair's TX frame is not taken");
    // the guest raises its queue count: QEMU enables pair 3, its waiting frame goes
    frontend.setRingEnabled(rxRing(3), true);
    frontend.setRingEnabled(txRing(3), true);
    await waitUntil("pair 3's frame after its enable", () => handler.frames.length === 2);
  } finally {
    frontend.close();
    await session.closed;
    await backend.close();
  }
});

for (
  const [name, send, error] of [
    [
      "SET_VRING_ENABLE for ring 40",
      (f: VhostUserFrontend) =>
        f.sendRaw(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(40, 1))),
      /SET_VRING_ENABLE: queue index 40 is not below 32/,
    ],
    [
      "GET_VRING_BASE for ring 2^32-1",
      (f: VhostUserFrontend) =>
        f.sendRaw(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(0xffffffff, 0))),
      /GET_VRING_BASE: queue index 4294967295 is not below 32/,
    ],
  ] as const
) {
  Deno.test(`A front-end with 4 pairs running that sends ${name} is dropped with one clear error, every fd released`, async () => {
    const baseline = openFdCount();
    const backend = new InProcessBackend();
    const handler = new CollectingHandler();
    const link = new VhostUserLink(handler, { logger: backend.logger });
    const { frontend, session } = backend.connect(link);
    try {
      await frontend.negotiate({ queuePairs: 4 });
      // rings enabled that were never set up are no error
      for (let ring = 8; ring < 32; ring++) frontend.setRingEnabled(ring, true);
      await frontend.requestU64(Request.GET_FEATURES);
      assert.deepEqual(backend.linesAt("error"), []);
      send(frontend);
      await frontend.waitClosed();
      await session.closed;
      const errors = backend.linesAt("error");
      assert.equal(errors.length, 1, errors.join("\n"));
      assert.match(errors[0], error);
    } finally {
      frontend.close();
      await session.closed;
      await backend.close();
    }
    assert.ok(handler.downs >= 1);
    assert.equal(openFdCount(), baseline);
  });
}

/** Pages of the bytes the device wrote into used RX elements' chains. */
function writtenPages(used: readonly UsedChain[]): number[] {
  const pages = new Set<number>();
  for (const element of used) {
    let left = element.len;
    for (const segment of element.segments) {
      const n = Math.min(segment.length, left);
      if (n > 0) {
        const first = Math.floor(segment.addr / VHOST_LOG_PAGE);
        const last = Math.floor((segment.addr + n - 1) / VHOST_LOG_PAGE);
        for (let page = first; page <= last; page++) pages.add(page);
      }
      left -= n;
    }
  }
  return [...pages];
}

Deno.test("Dirty log with 3 queue pairs: the buffers and the used ring of every ring that was written are marked, nothing else", async () => {
  const backend = new InProcessBackend();
  const handler = new CollectingHandler();
  const link = new VhostUserLink(handler, { logger: backend.logger });
  const { frontend, session } = backend.connect(link);
  let log: HarnessDirtyLog | null = null;
  try {
    await frontend.negotiate({ queuePairs: 3 });
    for (let pair = 0; pair < 3; pair++) frontend.postRxBuffers(16, VHOST_LOG_PAGE, pair);
    await waitUntil("link up", () => handler.link !== null);
    await waitUntil("RX ready", () => handler.link!.sendFrame(udpFrame(1, 1)) === SendResult.Sent);
    handler.link!.flush();
    await waitUntil(
      "first frame in",
      () => [0, 1, 2].some((p) => frontend.vrings[rxRing(p)].usedCount() > 0),
    );
    for (let pair = 0; pair < 3; pair++) frontend.vrings[rxRing(pair)].takeUsedChains();
    log = await frontend.startLogging();
    assert.deepEqual(log.dirtyPages(), [], "nothing written since the log was set");
    const flows = Array.from({ length: 12 }, (_, i) => udpFrame(53, 40000 + i));
    await sendAll(handler, flows);
    for (let pair = 0; pair < 3; pair++) frontend.sendFrame(udpFrame(2, 53), pair);
    await waitUntil("TX of every pair", () => handler.frames.length === 3);
    await waitUntil(
      "every RX frame in",
      () => [0, 1, 2].reduce((n, p) => n + frontend.vrings[rxRing(p)].usedCount(), 0) === 12,
    );
    const expected: number[] = [];
    let pairsWritten = 0;
    for (let pair = 0; pair < 3; pair++) {
      const used = frontend.vrings[rxRing(pair)].takeUsedChains();
      if (used.length > 0) {
        pairsWritten++;
        expected.push(...writtenPages(used));
        expected.push(Math.floor(frontend.vrings[rxRing(pair)].areas.used / VHOST_LOG_PAGE));
      }
      assert.equal((await frontend.waitUsed(txRing(pair), 1)).length, 1);
      expected.push(Math.floor(frontend.vrings[txRing(pair)].areas.used / VHOST_LOG_PAGE));
    }
    assert.ok(pairsWritten > 1, "the flows went to several pairs");
    assert.deepEqual(log.dirtyPages(), [...new Set(expected)].sort((a, b) => a - b));
    assert.deepEqual(backend.linesAt("error"), []);
  } finally {
    frontend.close();
    await session.closed;
    await backend.close();
    log?.close();
  }
});
