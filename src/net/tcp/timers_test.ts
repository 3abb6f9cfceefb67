import assert from "node:assert/strict";
import {
  connectThroughGateway,
  loopbackListener,
  wiredTranslator,
} from "../../../tests/support/net/tcp_host.ts";
import { TEST_GATEWAY4 } from "../../../tests/support/net/tcp_plan.ts";
import { MAX_RETRIES, RTO_INITIAL_MS, RTO_MAX_MS } from "./flow.ts";
import { openFdCount } from "../../../ffi/process.ts";

/** When the last of `retries` doubling timeouts (capped at RTO_MAX_MS) expires, in ms. */
function giveUpAfterMs(retries: number): number {
  let total = 0;
  for (let k = 0; k <= retries; k++) total += Math.min(RTO_INITIAL_MS * 2 ** k, RTO_MAX_MS);
  return total;
}

/** Timeouts allowed in the test (instead of MAX_RETRIES): the flows go within seconds. */
const TEST_RETRIES = 3;

Deno.test("`MAX_RETRIES` gives a guest that answers nothing about as long as passt does (74–130 s)", () => {
  const ms = giveUpAfterMs(MAX_RETRIES);
  assert.ok(ms >= 74_000 && ms <= 120_000, `${ms} ms`);
});

Deno.test("`TcpTranslator` gives up every flow of a guest whose front-end is gone: the timers count without a link", async () => {
  const { sender, tcp, guest, close } = wiredTranslator({ maxRetries: TEST_RETRIES });
  const { listener: server, port } = loopbackListener();
  const hosts: Deno.Conn[] = [];
  const fdsBefore = openFdCount();
  try {
    // Three flows: idle; half-closed by the guest; with host data the guest never took.
    for (let i = 0; i < 3; i++) {
      const accepted = server.accept();
      const c = guest.connect(TEST_GATEWAY4, port);
      await c.until(() => c.state === "established", 5000, "established");
      hosts.push(await accepted);
      if (i === 1) {
        guest.close(c);
        await c.until(() => c.finAcked, 5000, "the guest's FIN acknowledged");
      }
    }
    assert.equal(tcp.flows.size, 3);
    // The front-end dies: no link, and none comes back.
    sender.setLink(null);
    tcp.linkDown(performance.now());
    tcp.frontendGone(performance.now());
    const downAt = performance.now();
    await hosts[2].write(new Uint8Array(4096).fill(7));
    const limit = giveUpAfterMs(TEST_RETRIES) + 2000;
    while (tcp.flows.size > 0 && performance.now() - downAt < limit) {
      await new Promise((r) => setTimeout(r, 50));
    }
    console.log(
      `flows left ${tcp.flows.size} after ${(performance.now() - downAt).toFixed(0)} ms ` +
        `(expected by ${giveUpAfterMs(TEST_RETRIES)} ms)`,
    );
    assert.equal(tcp.flows.size, 0, "every flow given up");
    // Only the test's own ends of the connections are left.
    assert.equal(
      openFdCount(),
      fdsBefore + hosts.length,
      "the translator's host sockets are closed",
    );
    // The host peer of the idle flow sees a reset, not an orderly end.
    const end = await hosts[0].read(new Uint8Array(16)).then((n) => n === null ? "eof" : "data")
      .catch(() => "reset");
    assert.equal(end, "reset");
  } finally {
    for (const h of hosts) {
      try {
        h.close();
      } catch { /* reset */ }
    }
    server.close();
    close();
  }
});

Deno.test("`TcpTranslator` flows outlive front-end outages shorter than the give-up time: each link up starts the count again", async () => {
  const { sender, tcp, guest, close } = wiredTranslator({ maxRetries: TEST_RETRIES });
  const { server, c, host } = await connectThroughGateway(guest);
  try {
    for (let round = 0; round < 3; round++) {
      // QEMU goes and a new one comes (reconnect=): the count runs while none is there.
      sender.setLink(null);
      tcp.linkDown(performance.now());
      tcp.frontendGone(performance.now());
      await new Promise((r) => setTimeout(r, giveUpAfterMs(TEST_RETRIES) / 2));
      sender.setLink(guest);
      tcp.linkUp(performance.now());
      await new Promise((r) => setTimeout(r, 100));
    }
    // Three outages of half the give-up time each: the count started again each time.
    assert.equal(tcp.flows.size, 1);
    await host.write(new TextEncoder().encode("still here"));
    await c.until(() => c.receivedBytes === 10, 2000, "data after the outages");
  } finally {
    host.close();
    server.close();
    close();
  }
});

Deno.test("`TcpTranslator` holds every flow of a paused guest (link down, front-end connected) past the give-up time; the count starts when the front-end leaves", async () => {
  const { sender, tcp, guest, close } = wiredTranslator({ maxRetries: TEST_RETRIES });
  const { server, c, host } = await connectThroughGateway(guest);
  const { server: idleServer, c: idle, host: idleHost } = await connectThroughGateway(guest);
  try {
    // The VM is paused: its rings stop, QEMU stays connected. The host writes meanwhile.
    sender.setLink(null);
    tcp.linkDown(performance.now());
    await host.write(new TextEncoder().encode("while paused"));
    await new Promise((r) => setTimeout(r, 2 * giveUpAfterMs(TEST_RETRIES)));
    assert.equal(tcp.flows.size, 2, "both flows outlived twice the give-up time");
    // Resumed: the data written during the pause arrives.
    sender.setLink(guest);
    tcp.linkUp(performance.now());
    await c.until(() => c.receivedBytes === 12, 2000, "the data written while paused");
    assert.equal(new TextDecoder().decode(c.takeReceived()), "while paused");
    // Paused again, then QEMU goes away: now the flows are given up in the usual time.
    sender.setLink(null);
    tcp.linkDown(performance.now());
    tcp.frontendGone(performance.now());
    const goneAt = performance.now();
    const limit = giveUpAfterMs(TEST_RETRIES) + 2000;
    while (tcp.flows.size > 0 && performance.now() - goneAt < limit) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(tcp.flows.size, 0, "given up once the front-end left");
    assert.equal(idle.state, "established", "the guest side never saw an end");
  } finally {
    for (const h of [host, idleHost]) {
      try {
        h.close();
      } catch { /* reset */ }
    }
    server.close();
    idleServer.close();
    close();
  }
});
