/**
 * Dirty logging through a real session: the harness front-end shares a memfd log as
 * QEMU 10 does when a migration starts (SET_LOG_BASE, VHOST_F_LOG_ALL,
 * VHOST_VRING_F_LOG on running rings), the in-process session runs the real
 * VhostUserLink, and the test reads the bitmap: exactly the pages the backend wrote
 * must be marked, and nothing while logging is off.
 */
import assert from "node:assert/strict";
import { openFdCount } from "../../ffi/process.ts";
import {
  type FrameHandler,
  type GuestLink,
  newFrameSpace,
  SendResult,
} from "../../src/tap/frame_transport.ts";
import { VhostUserLink } from "../../src/tap/vhost_user_link.ts";
import { Request, VHOST_LOG_PAGE } from "../../src/vhost_user/protocol.ts";
import { waitUntil } from "../support/wait_until.ts";
import { DEFAULT_REGION_SIZE } from "../support/frontend/shared_memory.ts";
import type { UsedChain } from "../support/virtio/split_ring_driver.ts";
import { InProcessBackend } from "../support/frontend/in_process.ts";
import {
  HarnessDirtyLog,
  RX,
  TX,
  type VhostUserFrontend,
} from "../support/frontend/vhost_user_frontend.ts";
import { logPayload } from "../../src/vhost_user/payload_codec.ts";

class CollectingHandler implements FrameHandler {
  readonly frames: Uint8Array[] = [];
  link: GuestLink | null = null;
  handleFrame(frame: Uint8Array): void {
    this.frames.push(frame.slice());
  }
  endOfBatch(): void {}
  linkUp(link: GuestLink): void {
    this.link = link;
  }
  linkDown(): void {}
}

function frame(n: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  bytes.fill(0xff, 0, 6);
  bytes.set([0x52, 0x54, 0, 0, 0, n & 0xff], 6);
  bytes[12] = 0x08;
  for (let i = 14; i < length; i++) bytes[i] = (n * 3 + i) & 0xff;
  return bytes;
}

/** Pages of `[address, address + length)`. */
function pagesOf(address: number, length: number): number[] {
  if (length === 0) return [];
  const first = Math.floor(address / VHOST_LOG_PAGE);
  const last = Math.floor((address + length - 1) / VHOST_LOG_PAGE);
  return Array.from({ length: last - first + 1 }, (_, i) => first + i);
}

/** The pages of the bytes the device wrote into used RX elements' chains. */
function writtenPages(used: readonly UsedChain[]): number[] {
  const pages = new Set<number>();
  for (const element of used) {
    let left = element.len;
    for (const segment of element.segments) {
      const n = Math.min(segment.length, left);
      for (const page of pagesOf(segment.addr, n)) pages.add(page);
      left -= n;
    }
  }
  return [...pages];
}

/** The page of ring `index`'s used ring (each area lies within one page here). */
function usedRingPage(frontend: VhostUserFrontend, index: number): number {
  return Math.floor(frontend.vrings[index].areas.used / VHOST_LOG_PAGE);
}

const sorted = (pages: Iterable<number>) => [...new Set(pages)].sort((a, b) => a - b);

async function withSession(
  body: (
    frontend: VhostUserFrontend,
    link: () => GuestLink,
    backend: InProcessBackend,
  ) => Promise<void>,
  memoryOptions = {},
): Promise<void> {
  const baseline = openFdCount();
  const backend = new InProcessBackend();
  const handler = new CollectingHandler();
  const datapath = new VhostUserLink(handler, { logger: backend.logger });
  const { frontend, session } = backend.connect(datapath, {}, memoryOptions);
  try {
    await frontend.negotiate();
    frontend.postRxBuffers(1, VHOST_LOG_PAGE);
    await waitUntil("link up", () => handler.link !== null);
    // the first frame waits for the RX kick to be seen
    await waitUntil("RX ready", () => handler.link!.sendFrame(frame(0, 60)) === SendResult.Sent);
    handler.link!.flush();
    await frontend.waitUsed(RX, 1);
    await body(frontend, () => handler.link!, backend);
    assert.deepEqual(backend.linesAt("error"), []);
  } finally {
    frontend.close();
    await session.closed;
    await backend.close();
  }
  assert.equal(openFdCount(), baseline, "no fd left open (log included)");
}

Deno.test("Dirty log over a session: exactly the pages of RX frames and used rings are marked while logging, none after", async () => {
  await withSession(async (frontend, link) => {
    const log = await frontend.startLogging();
    try {
      assert.deepEqual(log.dirtyPages(), [], "nothing written since the log was set");
      // RX: frames of several sizes into mergeable buffers of a page each (so that every
      // buffer's page is marked by its own writes only), and a reserved frame
      frontend.postRxBuffers(12, VHOST_LOG_PAGE);
      await waitUntil("RX buffers seen", () => link().sendFrame(frame(1, 60)) === SendResult.Sent);
      assert.equal(link().sendFrame(frame(2, 10000)), SendResult.Sent); // three buffers
      const space = newFrameSpace();
      assert.equal(link().reserveFrame(space, 1514, 54), SendResult.Sent);
      const reserved = frame(3, space.length);
      let at = 0;
      for (let i = 0; i < space.count; i++) {
        space.views[i].set(reserved.subarray(at, at + space.views[i].length));
        at += space.views[i].length;
      }
      assert.equal(link().commitFrame(reserved.length), SendResult.Sent);
      link().flush();
      const used = await frontend.waitUsed(RX, 5);
      assert.equal(frontend.rxFrames(used).length, 3);
      assert.deepEqual(
        log.dirtyPages(),
        sorted([...writtenPages(used), usedRingPage(frontend, RX)]),
        "RX buffers written and the RX used ring",
      );

      // TX: the device only reads the buffers; it writes the used ring
      log.clear();
      frontend.sendFrame(frame(4, 300));
      await frontend.waitUsed(TX, 1);
      assert.deepEqual(log.dirtyPages(), [usedRingPage(frontend, TX)]);

      // migration cancelled: logging off, traffic marks nothing
      await frontend.stopLogging();
      log.clear();
      assert.equal(link().sendFrame(frame(5, 1000)), SendResult.Sent);
      link().flush();
      frontend.sendFrame(frame(6, 300));
      await frontend.waitUsed(RX, 1);
      await frontend.waitUsed(TX, 1);
      assert.deepEqual(log.dirtyPages(), [], "logging off");
    } finally {
      log.close();
    }
  });
});

Deno.test("Dirty log over a session: a log set without VHOST_F_LOG_ALL stays untouched", async () => {
  await withSession(async (frontend, link) => {
    const top = frontend.memory.regions[1].description.guestAddress + DEFAULT_REGION_SIZE;
    const log = new HarnessDirtyLog(Math.ceil(top / VHOST_LOG_PAGE / 8));
    try {
      frontend.send(Request.SET_LOG_BASE, logPayload(log.mapping.size), [log.memfd.fd]);
      await frontend.reply(Request.SET_LOG_BASE);
      frontend.postRxBuffers(4, 2048);
      await waitUntil(
        "RX buffers seen",
        () => link().sendFrame(frame(7, 1500)) === SendResult.Sent,
      );
      link().flush();
      frontend.sendFrame(frame(8, 100));
      await frontend.waitUsed(RX, 1);
      await frontend.waitUsed(TX, 1);
      assert.deepEqual(log.dirtyPages(), []);
    } finally {
      log.close();
    }
  });
});

Deno.test("Dirty log over a session: an RX buffer across two adjacent regions marks its pages in both", async () => {
  await withSession(async (frontend, link) => {
    const log = await frontend.startLogging();
    try {
      const boundary = DEFAULT_REGION_SIZE; // region 1 starts where region 0 ends
      frontend.vrings[RX].addChain([{ addr: boundary - 100, length: 4096, writable: true }]);
      frontend.kicks[RX].signal();
      await waitUntil("RX buffer seen", () => link().sendFrame(frame(9, 1000)) === SendResult.Sent);
      link().flush();
      const used = await frontend.waitUsed(RX, 1);
      assert.equal(used[0].len, 12 + 1000);
      assert.deepEqual(
        log.dirtyPages(),
        sorted([
          ...pagesOf(boundary - 100, 12 + 1000), // the last page of region 0, the first of region 1
          usedRingPage(frontend, RX),
        ]),
      );
      assert.deepEqual(pagesOf(boundary - 100, 1012), [
        boundary / VHOST_LOG_PAGE - 1,
        boundary / VHOST_LOG_PAGE,
      ]);
    } finally {
      log.close();
    }
  }, { region1GuestAddress: DEFAULT_REGION_SIZE });
});

Deno.test("Dirty log over a session: a second SET_LOG_BASE takes over, the first log is left alone", async () => {
  await withSession(async (frontend, link) => {
    const first = await frontend.startLogging();
    const second = await frontend.startLogging(); // QEMU resizes the log this way
    try {
      frontend.postRxBuffers(2, 2048);
      await waitUntil(
        "RX buffers seen",
        () => link().sendFrame(frame(10, 700)) === SendResult.Sent,
      );
      link().flush();
      const used = await frontend.waitUsed(RX, 1);
      assert.deepEqual(first.dirtyPages(), []);
      assert.deepEqual(
        second.dirtyPages(),
        sorted([...writtenPages(used), usedRingPage(frontend, RX)]),
      );
    } finally {
      first.close();
      second.close();
    }
  });
});
