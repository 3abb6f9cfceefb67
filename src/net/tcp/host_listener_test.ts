import assert from "node:assert/strict";
import { openFdCount } from "../../../ffi/process.ts";
import { TcpListenSocket, type TcpSocket } from "../../../ffi/tcp_socket.ts";
import { EventLoop } from "../../loop/event_loop.ts";
import { ACCEPTS_PER_TURN, listenBacklog, NativeHostListener } from "./host_listener.ts";
import type { HostConnection } from "./host_socket.ts";

/** Connections queued before the listener is watched: more than two turns' worth. */
const QUEUED = 2 * ACCEPTS_PER_TURN + 88;
/** Guard against a hang (not a timing assertion). */
const HANG_GUARD_MS = 20_000;

Deno.test("`listenBacklog()` is the host's net.core.somaxconn", async () => {
  const somaxconn = Number((await Deno.readTextFile("/proc/sys/net/core/somaxconn")).trim());
  assert.equal(listenBacklog(), somaxconn);
  assert.ok(listenBacklog() >= QUEUED, "room for the burst below");
});

Deno.test("`NativeHostListener` accepts a queued burst whole, at most ACCEPTS_PER_TURN per turn", async () => {
  const before = openFdCount();
  const socket = TcpListenSocket.listen(
    { address: new Uint8Array([127, 0, 0, 1]), port: 0 },
    null,
    listenBacklog(),
  );
  const port = socket.localAddress().port;
  // The kernel completes every handshake into the accept queue: nobody accepts yet.
  const clients = await Promise.all(
    Array.from({ length: QUEUED }, () => Deno.connect({ hostname: "127.0.0.1", port })),
  );
  const loop = new EventLoop();
  const running = loop.run();
  const accepted: HostConnection[] = [];
  const turns: number[] = [];
  let inTurn = 0;
  const listener = new NativeHostListener(socket, loop, {
    accepted: ({ connection }) => {
      accepted.push(connection);
      // Accepts of one turn run in one synchronous pass: a microtask closes the count.
      if (inTurn++ === 0) {
        queueMicrotask(() => {
          turns.push(inTurn);
          inTurn = 0;
        });
      }
    },
    failed: (error) => {
      throw error;
    },
  }, (s: TcpSocket) => ({ close: () => s.close() }) as unknown as HostConnection); // only close() is used
  try {
    const deadline = performance.now() + HANG_GUARD_MS;
    while (accepted.length < QUEUED && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    console.log(`accepted ${accepted.length} of ${QUEUED} in turns of ${turns.join(", ")}`);
    assert.equal(accepted.length, QUEUED);
    assert.ok(turns.length >= 3, `${turns.length} turns`);
    assert.ok(Math.max(...turns) <= ACCEPTS_PER_TURN, `turns of ${turns.join(", ")}`);
  } finally {
    for (const c of accepted) c.close();
    for (const c of clients) c.close();
    listener.close();
    loop.stop();
    await running;
    loop.close();
  }
  assert.equal(openFdCount(), before);
});
