import assert from "node:assert/strict";
import {
  connectThroughGateway,
  trickleFrom,
  wiredTranslator,
} from "../../../tests/support/net/tcp_host.ts";

/** Bytes the host peer writes per trickle step. */
const TRICKLE_BYTES = 1024;
/** Time between trickle steps (the sender: 1 KiB every 0.5 s). */
const TRICKLE_EVERY_MS = 500;
/** How soon after the RX ring is usable again the trickle must flow again. */
const RESUME_LIMIT_MS = 1000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("`TcpTranslator.linkUp()` on an empty RX ring: a trickling host stream resumes on the RX kick", async () => {
  const { sender, tcp, guest, close } = wiredTranslator();
  const { server, c, host } = await connectThroughGateway(guest);
  c.discardReceived = true;
  const trickle = trickleFrom(host, TRICKLE_BYTES, TRICKLE_EVERY_MS);
  try {
    await c.until(() => c.totalReceived >= TRICKLE_BYTES, 5000, "the first trickle");
    // The guest's driver is unbound: the rings stop (link down) while the host goes on.
    sender.setLink(null);
    tcp.linkDown(performance.now());
    await sleep(2 * TRICKLE_EVERY_MS);
    // Bound again: the rings start before the guest posted any RX buffer.
    guest.noRoom = true;
    sender.setLink(guest);
    tcp.linkUp(performance.now());
    await sleep(TRICKLE_EVERY_MS);
    // The guest posts its buffers and kicks.
    guest.makeRoom();
    const kickedAt = performance.now();
    const target = trickle.written;
    await c.until(
      () => c.totalReceived >= target,
      RESUME_LIMIT_MS,
      `the ${target} bytes written so far (got ${c.totalReceived})`,
    );
    console.log(
      `caught up ${target} bytes ${(performance.now() - kickedAt).toFixed(0)} ms after the kick`,
    );
    // And it keeps flowing: two more trickle steps arrive in time.
    const later = trickle.written + 2 * TRICKLE_BYTES;
    await c.until(
      () => c.totalReceived >= later,
      3 * TRICKLE_EVERY_MS + RESUME_LIMIT_MS,
      `later trickles (got ${c.totalReceived} of ${later})`,
    );
    assert.equal(c.totalReceived >= later, true);
  } finally {
    trickle.stop();
    host.close();
    server.close();
    close();
  }
});

Deno.test("`TcpTranslator` looks again on its timer when room comes back without a writable callback", async () => {
  const { tcp, guest, close } = wiredTranslator();
  const { server, c, host } = await connectThroughGateway(guest);
  try {
    guest.noRoom = true;
    await host.write(new TextEncoder().encode("after the ring refilled"));
    await guest.until(() => tcp.counters.noRoom > 0, 5000, "no room seen");
    // Room again, but the link never calls back (no kick asked for, or it was lost).
    guest.noRoom = false;
    await c.until(() => c.receivedBytes === 23, RESUME_LIMIT_MS, "the data, from the timer");
    assert.equal(new TextDecoder().decode(c.takeReceived()), "after the ring refilled");
  } finally {
    host.close();
    server.close();
    close();
  }
});
