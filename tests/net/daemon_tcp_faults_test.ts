/**
 * TCP through the REAL daemon under the faults of issue 16: the front-end dies while
 * connections are open (their host sockets must be released with no front-end
 * connected), and a burst of inbound connections to a `-t` forward (none may be
 * reset or refused).
 */

import assert from "node:assert/strict";
import { TEST_GATEWAY4 } from "../support/net/tcp_plan.ts";
import type { GuestTcpConn } from "../support/net/tcp_guest.ts";
import { MAX_RETRIES, RTO_INITIAL_MS, RTO_MAX_MS } from "../../src/net/tcp/flow.ts";
import { connectThroughGateway, trickleFrom } from "../support/net/tcp_host.ts";
import { TRANSPORTS } from "./daemon_guest.ts";
import { withDaemon } from "./daemon_run.ts";
import { freeTcpPort } from "./host_peers.ts";

/** Connections open when the front-end dies. */
const OPEN_CONNECTIONS = 24;
/** The bound: fds back to their baseline within 2 minutes of the front-end's death. */
const RELEASE_LIMIT_MS = 120_000;

/** When the daemon gives a flow up without a link: MAX_RETRIES doubling timeouts, in ms. */
function giveUpAfterMs(): number {
  let total = 0;
  for (let k = 0; k <= MAX_RETRIES; k++) total += Math.min(RTO_INITIAL_MS * 2 ** k, RTO_MAX_MS);
  return total;
}

/** How a host peer's connection ended: "reset", "eof", or "open" when still open after `ms`. */
async function endOf(conn: Deno.Conn, ms: number): Promise<string> {
  const buf = new Uint8Array(65536);
  const deadline = performance.now() + ms;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    while (performance.now() < deadline) {
      const open = new Promise<"open">((r) => (timer = setTimeout(() => r("open"), ms)));
      const n = await Promise.race([conn.read(buf), open]);
      clearTimeout(timer);
      if (n === "open") return "open";
      if (n === null) return "eof";
    }
    return "open";
  } catch {
    return "reset";
  }
}

Deno.test({
  name: `bin/tpasst releases the host sockets of a dead front-end's connections within ${
    RELEASE_LIMIT_MS / 1000
  } s (both transports at once; waits ~${Math.round(giveUpAfterMs() / 1000)} s)`,
  async fn() {
    await Promise.all(TRANSPORTS.map((transport) =>
      withDaemon(
        transport,
        [],
        async (d) => {
          const g = d.guest4;
          const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
          const port = (server.addr as Deno.NetAddr).port;
          const hosts: Deno.Conn[] = [];
          try {
            const conns: GuestTcpConn[] = [];
            for (let i = 0; i < OPEN_CONNECTIONS; i++) {
              const accepted = server.accept();
              const c = g.connect(TEST_GATEWAY4, port);
              await c.until(() => c.state === "established", 10_000, "the handshake");
              hosts.push(await accepted);
              conns.push(c);
            }
            // A few half-closed by the guest; the rest idle or, below, with host data.
            for (let i = 0; i < OPEN_CONNECTIONS; i += 4) {
              g.close(conns[i]);
            }
            for (let i = 0; i < OPEN_CONNECTIONS; i += 4) {
              await conns[i].until(() => conns[i].finAcked, 10_000, "the guest's FIN acknowledged");
            }
            const withFlows = d.fdCount();
            // QEMU dies: the front-end's connection closes, no other comes.
            d.dropFrontend();
            const goneAt = performance.now();
            for (let i = 1; i < OPEN_CONNECTIONS; i += 2) {
              await hosts[i].write(new Uint8Array(8192));
            }
            // The N host sockets and at least the front-end's own socket go.
            const target = withFlows - OPEN_CONNECTIONS - 1;
            while (d.fdCount() > target && performance.now() - goneAt < RELEASE_LIMIT_MS) {
              await new Promise((r) => setTimeout(r, 250));
            }
            const took = performance.now() - goneAt;
            console.log(
              `${transport}: daemon fds ${withFlows} with ${OPEN_CONNECTIONS} connections, ` +
                `${d.fdCount()} ${(took / 1000).toFixed(1)} s after the front-end died`,
            );
            assert.ok(d.fdCount() <= target, `daemon fds ${d.fdCount()}, expected <= ${target}`);
            const ends = await Promise.all(hosts.map((h) => endOf(h, 1000)));
            assert.deepEqual(ends.filter((e) => e === "open"), [], "every host peer saw its end");
          } finally {
            for (const h of hosts) {
              try {
                h.close();
              } catch { /* reset */ }
            }
            server.close();
          }
        },
        {},
        false,
      )
    ));
  },
});

/** Connections opened at once to the forwarded port. */
const BURST = 2000;
/** The guest's port behind the forward. */
const GUEST_PORT = 8080;
/** What the guest writes on each accepted connection. */
const GREETING = new TextEncoder().encode("hi");
/** Longest the whole burst may take before the test calls it a hang (not a timing check). */
const BURST_LIMIT_MS = 60_000;

/** How one host client fared: connected and greeted, or how it failed. */
type Outcome = "ok" | "refused" | "reset" | "eof" | "timeout";

/** Reads `want` bytes from `conn` before `deadline`. */
async function greeted(conn: Deno.Conn, want: number, deadline: number): Promise<Outcome> {
  const buf = new Uint8Array(16);
  let got = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    while (got < want) {
      const late = new Promise<"timeout">((r) =>
        timer = setTimeout(() => r("timeout"), Math.max(0, deadline - performance.now()))
      );
      const n = await Promise.race([conn.read(buf), late]);
      clearTimeout(timer);
      if (n === "timeout") return "timeout";
      if (n === null) return "eof";
      got += n;
    }
    return "ok";
  } catch {
    return "reset";
  } finally {
    clearTimeout(timer);
  }
}

for (const transport of TRANSPORTS) {
  Deno.test(
    `bin/tpasst over ${transport}: a burst of ${BURST} connections to a fresh -t forward is accepted whole (no reset, no refusal)`,
    async () => {
      const port = freeTcpPort();
      await withDaemon(transport, ["-t", `127.0.0.1/${port}:${GUEST_PORT}`], async (d) => {
        const g = d.guest4;
        g.listening.add(GUEST_PORT);
        // The guest greets each connection it accepted once its handshake completed.
        const greetedConns = new Set<GuestTcpConn>();
        const greeter = setInterval(() => {
          for (const a of g.accepted) {
            if (a.state !== "established" || greetedConns.has(a)) continue;
            greetedConns.add(a);
            g.write(a, GREETING);
          }
        }, 5);
        const clients: Deno.Conn[] = [];
        const t0 = performance.now();
        const deadline = t0 + BURST_LIMIT_MS;
        try {
          const outcomes = await Promise.all(
            Array.from({ length: BURST }, async (): Promise<Outcome> => {
              let conn: Deno.Conn;
              try {
                conn = await Deno.connect({ hostname: "127.0.0.1", port });
              } catch {
                return "refused";
              }
              clients.push(conn);
              return await greeted(conn, GREETING.length, deadline);
            }),
          );
          const count = (o: Outcome) => outcomes.filter((x) => x === o).length;
          console.log(
            `${transport}: ${count("ok")} of ${BURST} greeted in ` +
              `${((performance.now() - t0) / 1000).toFixed(1)} s; refused ${count("refused")}, ` +
              `reset ${count("reset")}, eof ${count("eof")}, timeout ${count("timeout")}`,
          );
          assert.equal(count("ok"), BURST);
        } finally {
          clearInterval(greeter);
          for (const c of clients) {
            try {
              c.close();
            } catch { /* reset */ }
          }
        }
      });
    },
  );
}

/** Bytes the host peer writes per trickle step. */
const TRICKLE_BYTES = 1024;
/** Time between trickle steps (the sender: 1 KiB every 0.5 s). */
const TRICKLE_EVERY_MS = 500;
/** How soon after the guest's RX buffers are back the trickle must flow again (the bound). */
const RESUME_LIMIT_MS = 1000;

Deno.test("bin/tpasst over vhost-user: a trickling host stream keeps flowing after the guest's driver is unbound and bound again", async () => {
  await withDaemon("vhost-user", [], async (d) => {
    const g = d.guest4;
    const { server, c, host } = await connectThroughGateway(g, 10_000);
    c.discardReceived = true;
    const trickle = trickleFrom(host, TRICKLE_BYTES, TRICKLE_EVERY_MS);
    try {
      await c.until(() => c.totalReceived >= TRICKLE_BYTES, 10_000, "the first trickle");
      // Unbound: the rings stop while the host goes on sending.
      await d.stopRings();
      await new Promise((r) => setTimeout(r, 2 * TRICKLE_EVERY_MS));
      // Bound again: new empty rings; the driver posts its buffers a moment later.
      await d.startRings();
      await new Promise((r) => setTimeout(r, TRICKLE_EVERY_MS));
      const target = trickle.written;
      d.postRxBuffers();
      const postedAt = performance.now();
      await c.until(
        () => c.totalReceived >= target,
        RESUME_LIMIT_MS,
        `the ${target} bytes written so far (got ${c.totalReceived})`,
      );
      const caughtUp = performance.now() - postedAt;
      const later = trickle.written + 2 * TRICKLE_BYTES;
      await c.until(
        () => c.totalReceived >= later,
        3 * TRICKLE_EVERY_MS + RESUME_LIMIT_MS,
        `later trickles (got ${c.totalReceived} of ${later})`,
      );
      console.log(
        `caught up ${target} bytes ${caughtUp.toFixed(0)} ms after the RX buffers came back; ` +
          `${c.totalReceived} bytes in all`,
      );
    } finally {
      trickle.stop();
      host.close();
      server.close();
    }
  });
});
