/**
 * TCP through the REAL daemon under the faults of issue 16: the front-end dies while
 * connections are open (their host sockets must be released with no front-end
 * connected), and a burst of inbound connections to a `-t` forward (none may be
 * reset or refused).
 */

import assert from "node:assert/strict";
import { TEST_GATEWAY4 } from "../../src/net/tcp_test_plan.ts";
import type { GuestTcpConn } from "../../src/net/tcp_test_guest.ts";
import { MAX_RETRIES, RTO_INITIAL_MS, RTO_MAX_MS } from "../../src/net/tcp/flow.ts";
import { TRANSPORTS } from "./daemon_guest.ts";
import { withDaemon } from "./daemon_run.ts";

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
