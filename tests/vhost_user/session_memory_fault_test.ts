/**
 * Sessions in one process (two on one event loop, one on another) when one
 * front-end shrinks the file under its guest memory: only that session is dropped,
 * the others keep carrying frames, and the loops stop watching the memory guard's
 * eventfd with their last session.
 */
import assert from "node:assert/strict";
import { MemoryGuard } from "../../ffi/memory_guard.ts";
import { openFdCount } from "../../ffi/process.ts";
import type { FrameHandler } from "../../src/tap/frame_transport.ts";
import { VhostUserLink } from "../../src/tap/vhost_user_link.ts";
import { waitUntil } from "../support/wait_until.ts";
import { InProcessBackend } from "../support/frontend/in_process.ts";
import { TX, type VhostUserFrontend } from "../support/frontend/vhost_user_frontend.ts";

class CountingHandler implements FrameHandler {
  frames = 0;
  handleFrame(): void {
    this.frames++;
  }
  endOfBatch(): void {}
  linkUp(): void {}
  linkDown(): void {}
}

function frame(n: number): Uint8Array {
  const bytes = new Uint8Array(60);
  bytes.fill(0xff, 0, 6); // broadcast destination
  bytes.set([0x52, 0x54, 0, 0, 0, n & 0xff], 6);
  bytes[12] = 0x08; // IPv4 ethertype
  return bytes;
}

/** Sends one TX frame and waits until the session's handler has it. */
async function carries(frontend: VhostUserFrontend, handler: CountingHandler): Promise<void> {
  const before = handler.frames;
  frontend.sendFrame(frame(before));
  await waitUntil("a TX frame at the handler", () => handler.frames === before + 1);
  await frontend.waitUsed(TX, 1);
}

Deno.test("`createVhostUserSession()` drops only the front-end whose memory file shrank; other sessions and loops carry on", async () => {
  const baseline = openFdCount();
  const guardFd = MemoryGuard.faultSignalFd();
  const shared = new InProcessBackend();
  const other = new InProcessBackend();
  const handlers = [new CountingHandler(), new CountingHandler(), new CountingHandler()];
  const victim = shared.connect(new VhostUserLink(handlers[0], { logger: shared.logger }));
  const neighbour = shared.connect(new VhostUserLink(handlers[1], { logger: shared.logger }));
  const stranger = other.connect(new VhostUserLink(handlers[2], { logger: other.logger }));
  const closedReasons: string[] = [];
  victim.session.closed.then(() => closedReasons.push("victim"));
  try {
    for (const { frontend } of [victim, neighbour, stranger]) await frontend.negotiate();
    await carries(victim.frontend, handlers[0]);
    await carries(neighbour.frontend, handlers[1]);
    await carries(stranger.frontend, handlers[2]);
    assert.ok(shared.loop.isWatching(guardFd) && other.loop.isWatching(guardFd));
    // region 0 holds the victim's rings; from now on this process must not touch
    // the victim front-end's copy of it either
    victim.frontend.queueFrame(frame(99));
    victim.frontend.memory.truncateFile(0, 0);
    victim.frontend.kicks[TX].signal();
    await waitUntil("the victim's session to close", () => closedReasons.length === 1);
    await victim.frontend.waitClosed();
    const errors = shared.linesAt("error");
    const drops = errors.filter((line) => line.includes("became unreadable"));
    assert.equal(drops.length, 1, errors.join("\n"));
    assert.match(
      drops[0],
      /vhost-user #\d+: closing the connection: guest memory region guest 0x0 size 0x100000 became unreadable \(its file shrank\): dropping the front-end/,
    );
    // between the fault and the drop the rings read zeros: at most one line saying
    // the TX ring makes no sense, no busy loop
    assert.ok(errors.length <= 2, errors.join("\n"));
    assert.deepEqual(closedReasons, ["victim"]);
    // the others still work, and a fault later in the process does not disturb them
    await carries(neighbour.frontend, handlers[1]);
    await carries(stranger.frontend, handlers[2]);
    assert.equal(other.linesAt("error").length, 0);
    assert.ok(shared.loop.isWatching(guardFd), "the neighbour still needs the watch");
    neighbour.frontend.close();
    await neighbour.session.closed;
    assert.equal(shared.loop.isWatching(guardFd), false, "the last session took the watch along");
    assert.ok(other.loop.isWatching(guardFd), "the other loop keeps its own watch");
  } finally {
    for (const { frontend } of [victim, neighbour, stranger]) frontend.close();
    await shared.close();
    await other.close();
  }
  assert.equal(other.loop.isWatching(guardFd), false);
  assert.equal(openFdCount(), baseline, "every fd of the three sessions is closed");
});
