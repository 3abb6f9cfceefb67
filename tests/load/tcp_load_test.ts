/**
 * TCP load through the REAL daemon over vhost-user (the TypeScript front-end harness
 * with the scripted guest): many concurrent connections each way at once — the guest
 * to a host echo server via the gateway, host clients to the guest through a `-t`
 * forward — every byte checked against its seeded pattern, ok and bad connections
 * counted; and an inbound burst of connections to a forward on a fresh daemon, none
 * of which may be reset. Each test prints its figures (`load figures:` lines) and
 * checks the daemon's fds and memory after the flows are gone.
 *
 * Environment: TPASST_LOAD_CONNS=N connections each way (default 500),
 * TPASST_LOAD_BURST=N connections in the inbound burst (default 1000).
 */

import assert from "node:assert/strict";
import { TEST_GATEWAY4 } from "../support/net/tcp_plan.ts";
import type { GuestTcpConn } from "../support/net/tcp_guest.ts";
import { fdsBackTo, withDaemon } from "../net/daemon_run.ts";
import { freeTcpPort, patternBytes, readAll, TcpEchoServer, writeAll } from "../net/host_peers.ts";
import {
  fdsReleased,
  guestEcho,
  idleBaseline,
  memoryBack,
  PeakSampler,
  printFigures,
  resourceFigures,
  sleep,
} from "./load_support.ts";

/** Concurrent connections each way. */
const CONNECTIONS = Number(Deno.env.get("TPASST_LOAD_CONNS") ?? "500");
/** Connections of the inbound burst. */
const BURST = Number(Deno.env.get("TPASST_LOAD_BURST") ?? "2000");
/** Guest port the -t rule forwards to. */
const GUEST_PORT = 8080;
/** Time allowed for all the connections of one test to finish. */
const LOAD_TIMEOUT_MS = 60_000;

/** Payload of connection `i` in direction `seed` (distinct sizes, seeded bytes). */
function payload(i: number, seed: number): Uint8Array {
  return patternBytes(4096 + 97 * (i % 200), seed * 100_003 + i);
}

/** Whether `got` is exactly `want`. */
function same(got: Uint8Array, want: Uint8Array): boolean {
  if (got.length !== want.length) return false;
  for (let i = 0; i < got.length; i++) if (got[i] !== want[i]) return false;
  return true;
}

/**
 * Sends `data` to the forward on 127.0.0.1:`port`, closes the sending side and reads
 * the guest's echo to the end.
 * @returns whether the echo is exactly `data` (a failed connection throws)
 */
async function echoedThroughForward(port: number, data: Uint8Array): Promise<boolean> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, data);
    await conn.closeWrite();
    return same(await readAll(conn), data);
  } finally {
    conn.close();
  }
}

Deno.test({
  name: `load: ${CONNECTIONS} TCP connections each way at once, every byte checked`,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const echo = new TcpEchoServer();
    const port = freeTcpPort();
    try {
      await withDaemon("vhost-user", ["-t", `127.0.0.1/${port}:${GUEST_PORT}`], async (d) => {
        const g = d.guest4;
        const pid = d.process.pid;
        g.listening.add(GUEST_PORT);
        const stopEcho = guestEcho(g);
        await sleep(200);
        const idle = idleBaseline(pid);
        const peaks = new PeakSampler(pid);
        const t0 = performance.now();
        // guest → host: echo via the gateway
        const outbound = Array.from({ length: CONNECTIONS }, async (_, i) => {
          const data = payload(i, 1);
          const c: GuestTcpConn = g.connect(TEST_GATEWAY4, echo.port);
          try {
            await c.until(() => c.state === "established" || c.gotRst, LOAD_TIMEOUT_MS, "SYN");
            if (c.gotRst) return false;
            g.write(c, data);
            g.close(c);
            await c.until(() => c.eof || c.gotRst, LOAD_TIMEOUT_MS, "the echo");
            return !c.gotRst && same(c.takeReceived(), data);
          } catch {
            return false;
          }
        });
        // host → guest: clients on the forward, echoed by the guest
        const inbound = Array.from(
          { length: CONNECTIONS },
          (_, i) => echoedThroughForward(port, payload(i, 2)).catch(() => false),
        );
        const [out, into] = await Promise.all([Promise.all(outbound), Promise.all(inbound)]);
        const loadMs = performance.now() - t0;
        stopEcho();
        const okOut = out.filter((x) => x).length;
        const okIn = into.filter((x) => x).length;
        // every guest FIN acknowledged, then the daemon's sockets must be gone
        const releaseMs = await fdsReleased(d, idle.fds);
        peaks.stop();
        const memoryBackMs = await memoryBack(pid, idle.anonKiB);
        printFigures("tcp-both-ways", {
          connections: CONNECTIONS,
          guestToHostOk: okOut,
          guestToHostBad: CONNECTIONS - okOut,
          hostToGuestOk: okIn,
          hostToGuestBad: CONNECTIONS - okIn,
          loadMs: Math.round(loadMs),
          releaseMs: Math.round(releaseMs),
          memoryBackMs: Math.round(memoryBackMs),
          ...resourceFigures(pid, idle, peaks),
        });
        assert.equal(okOut, CONNECTIONS, "guest → host connections with every byte back");
        assert.equal(okIn, CONNECTIONS, "host → guest connections with every byte back");
        assert.deepEqual(echo.errors, []);
        await fdsBackTo(d, idle.fds);
        assert.ok(memoryBackMs >= 0, `anonymous RSS not back within 20 % of idle`);
      });
    } finally {
      await echo.close();
    }
  },
});

Deno.test({
  name: `load: an inbound burst of ${BURST} connections to a forward, none reset`,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const port = freeTcpPort();
    await withDaemon("vhost-user", ["-t", `127.0.0.1/${port}:${GUEST_PORT}`], async (d) => {
      const g = d.guest4;
      const pid = d.process.pid;
      g.listening.add(GUEST_PORT);
      const stopEcho = guestEcho(g);
      const idle = idleBaseline(pid);
      const peaks = new PeakSampler(pid);
      const errors = new Map<string, number>();
      const t0 = performance.now();
      const results = await Promise.all(Array.from(
        { length: BURST },
        (_, i) =>
          echoedThroughForward(port, payload(i, 3).subarray(0, 64)).catch((e) => {
            const name = e instanceof Error ? e.name : String(e);
            errors.set(name, (errors.get(name) ?? 0) + 1);
            return false;
          }),
      ));
      const burstMs = performance.now() - t0;
      stopEcho();
      const ok = results.filter((x) => x).length;
      const releaseMs = await fdsReleased(d, idle.fds);
      peaks.stop();
      const memoryBackMs = await memoryBack(pid, idle.anonKiB);
      printFigures("tcp-inbound-burst", {
        connections: BURST,
        ok,
        bad: BURST - ok,
        errors: [...errors].map(([k, v]) => `${k}:${v}`).join(",") || "none",
        burstMs: Math.round(burstMs),
        releaseMs: Math.round(releaseMs),
        memoryBackMs: Math.round(memoryBackMs),
        ...resourceFigures(pid, idle, peaks),
      });
      assert.equal(ok, BURST, `connections reset or failed: ${[...errors]}`);
      await fdsBackTo(d, idle.fds);
      assert.ok(memoryBackMs >= 0, `anonymous RSS not back within 20 % of idle`);
    });
  },
});
