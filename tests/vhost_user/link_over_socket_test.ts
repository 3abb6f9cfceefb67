/**
 * The control plane and the datapath together over a real socket: the harness
 * front-end pushes TX frames and posts RX buffers; the in-process session runs
 * src/tap/vhost_user_link.ts behind it.
 */
import assert from "node:assert/strict";
import { openFdCount } from "../../ffi/process.ts";
import type { FrameHandler, GuestLink } from "../../src/tap/frame_transport.ts";
import { SendResult } from "../../src/tap/frame_transport.ts";
import { VhostUserLink } from "../../src/tap/vhost_user_link.ts";
import { DEFAULT_REGION_SIZE } from "../support/frontend/shared_memory.ts";
import { InProcessBackend } from "../support/frontend/in_process.ts";
import { QEMU_NET_FEATURES, RX, TX } from "../support/frontend/vhost_user_frontend.ts";
import { featureBit, VIRTIO_F_RING_PACKED } from "../../src/vhost_user/protocol.ts";
import { PackedRingDriver } from "../support/virtio/packed_ring_driver.ts";
import { decodePackedState } from "../../src/virtio/packed_ring_layout.ts";
import { waitUntil } from "../support/wait_until.ts";

class CollectingHandler implements FrameHandler {
  readonly frames: Uint8Array[] = [];
  link: GuestLink | null = null;
  downs = 0;
  handleFrame(frame: Uint8Array): void {
    this.frames.push(frame.slice());
  }
  endOfBatch(): void {}
  linkUp(link: GuestLink): void {
    this.link = link;
  }
  linkDown(): void {
    this.downs++;
  }
}

function frame(n: number, length = 60): Uint8Array {
  const bytes = new Uint8Array(length);
  bytes.fill(0xff, 0, 6); // broadcast destination
  bytes.set([0x52, 0x54, 0, 0, 0, n & 0xff], 6);
  bytes[12] = 0x08; // IPv4 ethertype
  for (let i = 14; i < length; i++) bytes[i] = (n + i) & 0xff;
  return bytes;
}

Deno.test("`VhostUserFrontend` TX frames reach the stack and RX frames reach the guest through the session", async () => {
  const baseline = openFdCount();
  const backend = new InProcessBackend();
  const handler = new CollectingHandler();
  const link = new VhostUserLink(handler, { logger: backend.logger });
  const { frontend, session } = backend.connect(link);
  try {
    await frontend.negotiate();
    // guest → stack
    const sent = Array.from({ length: 20 }, (_, i) => frame(i, 60 + i * 50));
    for (const f of sent) frontend.sendFrame(f);
    await waitUntil("TX frames at the handler", () => handler.frames.length === sent.length);
    assert.deepEqual(handler.frames, sent);
    const txUsed = await frontend.waitUsed(TX, sent.length);
    assert.equal(txUsed.length, sent.length);
    // stack → guest
    frontend.postRxBuffers(8);
    await waitUntil("link up", () => handler.link !== null);
    const replies = [frame(100, 98), frame(101, 1514)];
    // NoRoom until the session has seen the RX kick
    await waitUntil("RX buffers", () => handler.link!.sendFrame(replies[0]) === SendResult.Sent);
    assert.equal(handler.link!.sendFrame(replies[1]), SendResult.Sent);
    handler.link!.flush();
    const rxUsed = await frontend.waitUsed(RX, replies.length);
    assert.deepEqual(frontend.rxFrames(rxUsed), replies);
    assert.ok(await frontend.waitCall(RX) >= 1, "guest notified");
  } finally {
    frontend.close();
    await session.closed;
    await backend.close();
  }
  assert.ok(handler.downs >= 1, "link down after disconnect");
  assert.equal(openFdCount(), baseline);
});

Deno.test("`VhostUserFrontend.rxFrames()` reassembles a frame spread over small mergeable RX buffers", async () => {
  const backend = new InProcessBackend();
  const handler = new CollectingHandler();
  const link = new VhostUserLink(handler, { logger: backend.logger });
  const { frontend, session } = backend.connect(link);
  try {
    await frontend.negotiate();
    frontend.postRxBuffers(16, 256);
    await waitUntil("link up", () => handler.link !== null);
    const big = frame(7, 1514);
    await waitUntil("RX buffers", () => handler.link!.sendFrame(big) === SendResult.Sent);
    handler.link!.flush();
    const needed = Math.ceil((big.length + 12) / 256);
    const used = await frontend.waitUsed(RX, needed);
    assert.deepEqual(frontend.rxFrames(used), [big]);
  } finally {
    frontend.close();
    await session.closed;
    await backend.close();
  }
});

Deno.test("Frames cross two guest memory regions that are adjacent in guest-physical space but mapped apart", async () => {
  const backend = new InProcessBackend();
  const handler = new CollectingHandler();
  const link = new VhostUserLink(handler, { logger: backend.logger });
  // Region 1 starts where region 0 ends (two memory slots): separate memfds and mappings.
  const { frontend, session } = backend.connect(link, {}, {
    region1GuestAddress: DEFAULT_REGION_SIZE,
  });
  try {
    await frontend.negotiate();
    const [low, high] = frontend.memory.regions.map((r) => r.bytes);
    const boundary = DEFAULT_REGION_SIZE;
    const before = 100; // bytes of each buffer below the boundary
    // guest → stack: one descriptor holding header and frame, across the boundary
    const sent = frame(9, 1514);
    const packet = new Uint8Array(12 + sent.length);
    packet.set(sent, 12);
    low.set(packet.subarray(0, before), boundary - before);
    high.set(packet.subarray(before), 0);
    frontend.vrings[TX].addChain([{
      addr: boundary - before,
      length: packet.length,
      writable: false,
    }]);
    frontend.kicks[TX].signal();
    await waitUntil("the TX frame at the handler", () => handler.frames.length === 1);
    assert.deepEqual(handler.frames, [sent]);
    // stack → guest: one RX buffer across the boundary
    frontend.vrings[RX].addChain([{ addr: boundary - before, length: 4096, writable: true }]);
    frontend.kicks[RX].signal();
    await waitUntil("link up", () => handler.link !== null);
    const reply = frame(10, 1000);
    await waitUntil("RX buffers", () => handler.link!.sendFrame(reply) === SendResult.Sent);
    handler.link!.flush();
    const [used] = await frontend.waitUsed(RX, 1);
    assert.equal(used.len, 12 + reply.length);
    const written = new Uint8Array(used.len);
    written.set(low.subarray(boundary - before));
    written.set(high.subarray(0, used.len - before), before);
    assert.deepEqual(written.subarray(12), reply);
    assert.deepEqual(backend.linesAt("warn"), []);
  } finally {
    frontend.close();
    await session.closed;
    await backend.close();
  }
});

Deno.test("`VhostUserFrontend` over packed rings (VIRTIO_F_RING_PACKED): TX and RX frames through the session, across laps and a restart", async () => {
  const backend = new InProcessBackend();
  const handler = new CollectingHandler();
  const link = new VhostUserLink(handler, { logger: backend.logger });
  const { frontend, session } = backend.connect(link);
  try {
    await frontend.negotiate({
      ringSize: 16,
      features: QEMU_NET_FEATURES | featureBit(VIRTIO_F_RING_PACKED),
    });
    assert.ok(frontend.vrings[TX] instanceof PackedRingDriver);
    assert.equal(link.describeState().ringLayout, "packed");
    // guest → stack: three laps of a 16-slot ring
    const sent = Array.from({ length: 40 }, (_, i) => frame(i, 60 + i * 30));
    for (let i = 0; i < sent.length; i += 8) {
      for (const f of sent.slice(i, i + 8)) frontend.sendFrame(f);
      await frontend.waitUsed(TX, Math.min(8, sent.length - i));
    }
    await waitUntil("TX frames at the handler", () => handler.frames.length === sent.length);
    assert.deepEqual(handler.frames, sent);
    // stack → guest, merged buffers
    frontend.postRxBuffers(12, 512);
    await waitUntil("link up", () => handler.link !== null);
    const replies = [frame(100, 98), frame(101, 1514)];
    await waitUntil("RX buffers", () => handler.link!.sendFrame(replies[0]) === SendResult.Sent);
    assert.equal(handler.link!.sendFrame(replies[1]), SendResult.Sent);
    handler.link!.flush();
    const rxUsed = await frontend.waitUsed(RX, 1 + Math.ceil((1514 + 12) / 512));
    assert.deepEqual(frontend.rxFrames(rxUsed), replies);
    // GET_VRING_BASE carries both positions; the ring resumes there
    const base = await frontend.stopRing(TX);
    assert.deepEqual(decodePackedState(base), {
      avail: { index: 40 % 16, wrap: 1 },
      used: { index: 40 % 16, wrap: 1 },
    });
    await frontend.restartRing(TX, base);
    const after = frame(7, 200);
    frontend.sendFrame(after);
    await waitUntil("the frame after the restart", () => handler.frames.length === 41);
    assert.deepEqual(handler.frames[40], after);
    assert.deepEqual(backend.linesAt("error"), []);
  } finally {
    frontend.close();
    await session.closed;
    await backend.close();
  }
});
