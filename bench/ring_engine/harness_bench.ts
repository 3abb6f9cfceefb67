/**
 * Throughput through the whole vhost-user session: the TypeScript front-end
 * (tests/support/frontend/) shares memfd memory and eventfds with an in-process session
 * (src/vhost_user/) running the real {@link VhostUserLink} on the event loop.
 * TX: the front-end offers a ring of frames and kicks once; the batch ends when the
 * link has handed them all over. RX: the front-end posts a ring of buffers; the
 * stack side fills them with sendFrame and flushes. Prints numbers only.
 *
 * @module
 */

import type { FrameHandler, GuestLink } from "../../src/tap/frame_transport.ts";
import { SendResult } from "../../src/tap/frame_transport.ts";
import { VhostUserLink } from "../../src/tap/vhost_user_link.ts";
import { InProcessBackend } from "../../tests/support/frontend/in_process.ts";
import { NET_HEADER_SIZE, RX, TX } from "../../tests/support/frontend/vhost_user_frontend.ts";
import { type BenchResult, benchResult } from "./bench_result.ts";

const RING_SIZE = 256;

class BatchHandler implements FrameHandler {
  frames = 0;
  link: GuestLink | null = null;
  target = 0;
  #resolve: (() => void) | null = null;
  handleFrame(): void {
    this.frames++;
  }
  endOfBatch(): void {
    if (this.#resolve !== null && this.frames >= this.target) {
      const resolve = this.#resolve;
      this.#resolve = null;
      resolve();
    }
  }
  linkUp(link: GuestLink): void {
    this.link = link;
  }
  linkDown(): void {
    this.link = null;
  }
  /** Resolves once `frames` reaches `target`. */
  until(target: number): Promise<void> {
    this.target = target;
    return new Promise((resolve) => (this.#resolve = resolve));
  }
}

async function withSession<T>(
  body: (
    ctx: { handler: BatchHandler; frontend: ReturnType<InProcessBackend["connect"]>["frontend"] },
  ) => Promise<T>,
): Promise<T> {
  const backend = new InProcessBackend();
  backend.logger.setLevel("warn");
  const handler = new BatchHandler();
  const link = new VhostUserLink(handler, { logger: backend.logger });
  const { frontend, session } = backend.connect(link);
  try {
    await frontend.negotiate({ ringSize: RING_SIZE });
    return await body({ handler, frontend });
  } finally {
    frontend.close();
    await session.closed;
    await backend.close();
  }
}

/** Guest TX through the session: a ring of frames per kick. */
export function benchHarnessTx(frameBytes: number, seconds: number): Promise<BenchResult> {
  return withSession(async ({ handler, frontend }) => {
    // Every chain points at the same frame: TX buffers are only read.
    const gpa = frontend.allocate(NET_HEADER_SIZE + frameBytes);
    frontend.memory.view(gpa, NET_HEADER_SIZE + frameBytes).fill(0, 0, NET_HEADER_SIZE);
    const ring = frontend.vrings[TX];
    const segment = [{ addr: gpa, length: NET_HEADER_SIZE + frameBytes, writable: false }];
    const deadline = performance.now() + seconds * 1000;
    const started = performance.now();
    let now = started;
    while (now < deadline) {
      for (let i = 0; i < RING_SIZE; i++) ring.addChain(segment);
      const done = handler.until(handler.frames + RING_SIZE);
      frontend.kicks[TX].signal();
      await done;
      ring.takeUsed();
      now = performance.now();
    }
    return benchResult("TX", frameBytes, handler.frames, (now - started) / 1000);
  });
}

/** Guest RX through the session: the stack fills a ring of posted buffers per round. */
export function benchHarnessRx(frameBytes: number, seconds: number): Promise<BenchResult> {
  return withSession(async ({ handler, frontend }) => {
    const bufferBytes = 2048;
    const perFrame = Math.ceil((NET_HEADER_SIZE + frameBytes) / bufferBytes);
    const frame = new Uint8Array(frameBytes).fill(0x5a);
    const ring = frontend.vrings[RX];
    const gpas: number[] = [];
    for (let i = 0; i < RING_SIZE; i++) gpas.push(frontend.allocate(bufferBytes));
    while (handler.link === null) await new Promise((resolve) => setTimeout(resolve, 1));
    const link = handler.link;
    let frames = 0;
    const deadline = performance.now() + seconds * 1000;
    const started = performance.now();
    let now = started;
    while (now < deadline) {
      for (let i = 0; i < RING_SIZE; i++) {
        ring.addChain([{ addr: gpas[i], length: bufferBytes, writable: true }]);
      }
      for (let i = Math.floor(RING_SIZE / perFrame); i > 0; i--) {
        if (link.sendFrame(frame) === SendResult.Sent) frames++;
      }
      while (link.sendFrame(frame.subarray(0, 60)) === SendResult.Sent) {
        // not counted: these only use up the round's remaining buffers
      }
      link.flush();
      ring.takeUsed();
      now = performance.now();
    }
    return benchResult("RX", frameBytes, frames, (now - started) / 1000);
  });
}
