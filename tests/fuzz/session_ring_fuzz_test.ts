/**
 * Random rings through the real vhost-user session: the TypeScript front-end
 * shares memfd memory (two regions, one above 4 GiB) with an in-process session
 * running the real VhostUserLink, then writes random descriptors, indirect tables
 * and available-ring entries, and kicks. The session must neither throw nor hang;
 * every returned id is in range; the link keeps carrying valid frames afterwards
 * unless the ring was found broken.
 *
 * Rings: TPASST_FUZZ_ITERATIONS (default 100), 25 per session, at most 200 sessions.
 */
import assert from "node:assert/strict";
import { openFdCount } from "../../ffi/process.ts";
import type { FrameHandler, GuestLink } from "../../src/tap/frame_transport.ts";
import { VhostUserLink } from "../../src/tap/vhost_user_link.ts";
import {
  featureBit,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
} from "../../src/vhost_user/protocol.ts";
import { InProcessBackend } from "../support/frontend/in_process.ts";
import { REGION1_GPA } from "../support/frontend/shared_memory.ts";
import { TX } from "../support/frontend/vhost_user_frontend.ts";
import { VIRTIO_NET_F_MRG_RXBUF } from "../../src/tap/net_features.ts";

// Each session takes ~3 ms of set-up: TPASST_FUZZ_ITERATIONS / 25 sessions, at most 200.
const iterations = Math.min(
  200,
  Math.max(1, Math.floor(Number(Deno.env.get("TPASST_FUZZ_ITERATIONS") ?? 100) / 25)),
);
const seed = Number(Deno.env.get("TPASST_FUZZ_SEED") ?? 4242);

class CountingHandler implements FrameHandler {
  frames = 0;
  link: GuestLink | null = null;
  handleFrame(frame: Uint8Array): void {
    if (frame.length < 14 || frame.length > 65535) {
      throw new Error(`frame of ${frame.length} bytes`);
    }
    this.frames++;
  }
  endOfBatch(): void {}
  linkUp(link: GuestLink): void {
    this.link = link;
  }
  linkDown(): void {
    this.link = null;
  }
}

function random(state: { s: number }): number {
  let x = state.s;
  x ^= x << 13;
  x >>>= 0;
  x ^= x >>> 17;
  x ^= x << 5;
  x >>>= 0;
  state.s = x;
  return x;
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Where in the 0x8000-byte data area the valid chain lies: past every random buffer (< 0x7000 + 1600). */
const VALID_CHAIN_OFFSET = 0x7800;

Deno.test(`VhostUserLink survives ${iterations * 25} random TX rings through the vhost-user session`, async () => {
  const before = openFdCount();
  const backend = new InProcessBackend();
  backend.logger.setLevel("warn");
  const rng = { s: seed };
  let delivered = 0;
  let broken = 0;
  try {
    for (let it = 0; it < iterations; it++) {
      const handler = new CountingHandler();
      const link = new VhostUserLink(handler, { logger: backend.logger });
      const { frontend, session } = backend.connect(link);
      try {
        let features = featureBit(VIRTIO_F_VERSION_1);
        if (random(rng) & 1) features |= featureBit(VIRTIO_F_EVENT_IDX);
        if (random(rng) & 1) features |= featureBit(VIRTIO_F_INDIRECT_DESC);
        if (random(rng) & 1) features |= featureBit(VIRTIO_NET_F_MRG_RXBUF);
        const size = 1 << (random(rng) % 9);
        await frontend.negotiate({ ringSize: size, features });
        const ring = frontend.vrings[TX];
        const desc = frontend.memory.view(ring.areas.descriptor, 16 * size);
        const avail = frontend.memory.view(ring.areas.available, 6 + 2 * size);
        const descView = new DataView(desc.buffer, desc.byteOffset, desc.length);
        const availView = new DataView(avail.buffer, avail.byteOffset, avail.length);
        const data = frontend.allocate(0x8000);
        const dataBytes = frontend.memory.view(data, 0x8000);
        let availIdx = 0;
        for (let round = 0; round < 25; round++) {
          for (let i = 0; i < 0x8000; i += 64) {
            dataBytes[i + (random(rng) & 63)] = random(rng) & 0xff;
          }
          for (let i = 0; i < size; i++) {
            const at = 16 * i;
            const pick = random(rng) % 6;
            const addr = pick === 0
              ? [random(rng), random(rng)]
              : pick === 1
              ? [0xffff_fff0, 0xffff_ffff]
              : pick === 2
              ? [REGION1_GPA % 0x1_0000_0000 - 8, 1] // straddles the start of region 1
              : [data + (random(rng) % 0x7000), 0];
            const lenPick = random(rng) % 5;
            const len = lenPick === 0
              ? random(rng)
              : lenPick === 1
              ? 16 * (random(rng) % 4)
              : random(rng) % 1600;
            descView.setUint32(at, addr[0] >>> 0, true);
            descView.setUint32(at + 4, addr[1] >>> 0, true);
            descView.setUint32(at + 8, len >>> 0, true);
            descView.setUint16(at + 12, random(rng) % 8, true);
            descView.setUint16(at + 14, random(rng) % (size + 1), true);
          }
          // Half the rounds make descriptor 0 a valid chain (zero header + 60-byte
          // frame, past the random buffers) and offer it among the random ones: a run
          // of MALFORMED_RUN_LIMIT malformed chains breaks the queue, so without them
          // almost every random ring would break before a valid frame came by.
          const withValid = (random(rng) & 1) === 1;
          if (withValid) {
            dataBytes.fill(0, VALID_CHAIN_OFFSET, VALID_CHAIN_OFFSET + 12 + 60);
            descView.setUint32(0, (data + VALID_CHAIN_OFFSET) % 0x1_0000_0000, true);
            descView.setUint32(4, Math.floor((data + VALID_CHAIN_OFFSET) / 0x1_0000_0000), true);
            descView.setUint32(8, 12 + 60, true);
            descView.setUint16(12, 0, true);
          }
          const add = random(rng) % (size + (random(rng) % 20 === 0 ? 5 : 1));
          const validAt = withValid ? random(rng) % Math.max(1, add) : -1;
          for (let i = 0; i < add; i++) {
            availView.setUint16(
              4 + 2 * ((availIdx + i) % size),
              i === validAt ? 0 : random(rng) % (size + (random(rng) % 50 === 0 ? 3 : 0)),
              true,
            );
          }
          availIdx = (availIdx + add) & 0xffff;
          availView.setUint16(2, availIdx, true);
          frontend.kicks[TX].signal();
          await delay(0);
        }
        await delay(2);
        const used = frontend.memory.view(ring.areas.used, 6 + 8 * size);
        const usedView = new DataView(used.buffer, used.byteOffset, used.length);
        const usedIdx = usedView.getUint16(2, true);
        for (let i = 0; i < Math.min(usedIdx, size); i++) {
          assert.ok(usedView.getUint32(4 + 8 * i, true) < size, "used id in range");
        }
        const isBroken = backend.lines.some((l) => l.includes("virtqueue TX is broken"));
        if (isBroken) {
          broken++;
        } else {
          // The queue must still work: one valid chain (zero header + 60-byte frame).
          const before = handler.frames;
          dataBytes.fill(0, 0, 12 + 60);
          descView.setUint32(0, data % 0x1_0000_0000, true);
          descView.setUint32(4, Math.floor(data / 0x1_0000_0000), true);
          descView.setUint32(8, 12 + 60, true);
          descView.setUint16(12, 0, true);
          availView.setUint16(4 + 2 * (availIdx % size), 0, true);
          availIdx = (availIdx + 1) & 0xffff;
          availView.setUint16(2, availIdx, true);
          frontend.kicks[TX].signal();
          for (let i = 0; i < 2000 && handler.frames === before; i++) await delay(1);
          assert.equal(handler.frames, before + 1, "a healthy queue still carries frames");
        }
        assert.ok(!backend.lines.some((l) => l.includes("threw")), backend.lines.join("\n"));
        delivered += handler.frames;
      } finally {
        frontend.close();
        await session.closed;
        backend.lines.length = 0;
      }
    }
  } finally {
    await backend.close();
  }
  assert.ok(delivered > iterations, "valid frames were among the random ones");
  assert.equal(openFdCount(), before, "no fd leaked");
});
