/**
 * SIGUSR1 on the REAL daemon (`bin/tpasst -f -1` over passt's stream protocol, a
 * scripted guest): with TCP connections open to echo servers on 127.0.0.1 and ::1,
 * the signal logs the flow table (ends, state, bytes each way) and counters as text,
 * and one `stats-json:` line that parses; the daemon keeps serving afterwards. And
 * SIGUSR1 never starts Deno's V8 inspector in the daemon.
 */

import assert from "node:assert/strict";
import { TEST_GATEWAY4, TEST_GATEWAY6 } from "../support/net/tcp_plan.ts";
import type { GuestTcpConn } from "../support/net/tcp_guest.ts";
import { STATS_JSON_PREFIX, type StatsSnapshot } from "../../src/daemon/stats.ts";
import { withDaemon } from "./daemon_run.ts";
import { waitFor } from "../cli/cli_helpers.ts";
import { TcpEchoServer } from "./host_peers.ts";
import { tcpListenersOf } from "../support/tcp_listeners.ts";

const enc = new TextEncoder();

async function established(c: GuestTcpConn): Promise<void> {
  await c.until(() => c.state === "established" || c.gotRst, 10_000, "the handshake");
  assert.equal(c.state, "established", `connection ${c.localPort} was reset instead`);
}

/** The `stats-json:` lines of `log`, parsed. */
function jsonDumps(log: string): StatsSnapshot[] {
  return log.split("\n")
    .map((line) => line.indexOf(STATS_JSON_PREFIX))
    .flatMap((at, i, _) => at < 0 ? [] : [i])
    .map((i) => {
      const line = log.split("\n")[i];
      return JSON.parse(line.slice(line.indexOf(STATS_JSON_PREFIX) + STATS_JSON_PREFIX.length));
    });
}

Deno.test("bin/tpasst: SIGUSR1 logs the open TCP flows (IPv4 and IPv6) and a stats-json line", async () => {
  const server4 = new TcpEchoServer("127.0.0.1");
  const server6 = new TcpEchoServer("::1");
  try {
    await withDaemon("stream", [], async (d) => {
      const c4 = d.guest4.connect(TEST_GATEWAY4, server4.port);
      const c6 = d.guest6.connect(0, server6.port, TEST_GATEWAY6);
      await established(c4);
      await established(c6);
      d.guest4.write(c4, enc.encode("hello, four"));
      d.guest6.write(c6, enc.encode("hello over six!"));
      await c4.until(() => c4.receivedBytes === 11, 10_000, "the IPv4 echo");
      await c6.until(() => c6.receivedBytes === 15, 10_000, "the IPv6 echo");
      // The guest's ACK of the echo reaches the daemon with its next frame: wait a beat.
      await new Promise((r) => setTimeout(r, 200));

      Deno.kill(d.process.pid, "SIGUSR1");
      await waitFor("the stats-json line", () => d.stderr.includes(STATS_JSON_PREFIX));
      const log = d.stderr;
      const dumps = jsonDumps(log);
      assert.equal(dumps.length, 1, log);
      const dump = dumps[0];

      const guest4 = `10.0.2.15:${c4.localPort}`;
      const guest6 = `[fd00::15]:${c6.localPort}`;
      const flow4 = dump.flows.find((f) => f.protocol === "tcp" && f.guest === guest4);
      const flow6 = dump.flows.find((f) => f.protocol === "tcp" && f.guest === guest6);
      assert.ok(flow4, `no flow for ${guest4} in ${JSON.stringify(dump.flows)}`);
      assert.ok(flow6, `no flow for ${guest6} in ${JSON.stringify(dump.flows)}`);
      assert.equal(flow4.remote, `10.0.2.2:${server4.port}`);
      assert.equal(flow4.host, `127.0.0.1:${server4.port}`);
      assert.equal(flow4.state, "established");
      assert.equal(flow4.bytesFromGuest, 11);
      assert.equal(flow4.bytesToGuest, 11);
      assert.equal(flow6.remote, `[fd00::2]:${server6.port}`);
      assert.equal(flow6.host, `[::1]:${server6.port}`);
      assert.equal(flow6.bytesFromGuest, 15);
      assert.equal(flow6.bytesToGuest, 15);
      assert.ok(flow4.ageMs >= 200 && flow4.ageMs < 60_000, `age ${flow4.ageMs}`);
      assert.ok(dump.fromGuest.frames > 0 && dump.fromGuest.bytes > 0);
      assert.ok(dump.fromGuest.byKind.tcp > 0);
      assert.ok(dump.toGuest.frames > 0 && dump.toGuest.bytes > 0);
      assert.equal(dump.link?.kind, "stream");
      assert.ok(dump.memory.rss > 0 && dump.memory.heapUsed > 0);
      assert.ok("tcp" in dump.protocols);

      // The same at info level as text.
      assert.match(log, /SIGUSR1 received: statistics/);
      assert.match(
        log,
        new RegExp(
          `stats: tcp 10\\.0\\.2\\.15:${c4.localPort} -> 10\\.0\\.2\\.2:${server4.port} ` +
            `\\(host 127\\.0\\.0\\.1:${server4.port}\\) established; guest->host 11 B, host->guest 11 B; age `,
        ),
      );
      assert.match(
        log,
        new RegExp(`stats: tcp \\[fd00::15\\]:${c6.localPort} -> \\[fd00::2\\]:${server6.port} `),
      );
      assert.match(log, /stats: memory: RSS /);

      // Still serving after the dump.
      d.guest4.write(c4, enc.encode("again"));
      await c4.until(() => c4.receivedBytes === 16, 10_000, "the echo after the dump");
      d.guest4.close(c4);
      d.guest6.close(c6);
      await c4.until(() => c4.finAcked, 10_000, "our IPv4 FIN acknowledged");
      await c6.until(() => c6.finAcked, 10_000, "our IPv6 FIN acknowledged");
    });
  } finally {
    await server4.close();
    await server6.close();
  }
});

/** Deno's runtime registers its own SIGUSR1 listener (a V8 inspector) this long after start. */
const DENO_SIGUSR1_GRACE_MS = 500;

Deno.test("bin/tpasst: SIGUSR1 opens no V8 inspector (no TCP listener, no debugger banner), and each one dumps", async () => {
  await withDaemon("stream", [], async (d) => {
    // Well past Deno's grace period: its inspector listener would be registered now.
    await new Promise((r) => setTimeout(r, DENO_SIGUSR1_GRACE_MS * 3));
    assert.deepEqual(tcpListenersOf(d.process.pid), [], "listening before the signal");
    for (const expected of [1, 2]) {
      Deno.kill(d.process.pid, "SIGUSR1");
      await waitFor(
        `stats-json line number ${expected}`,
        () => jsonDumps(d.stderr).length === expected,
      );
    }
    // An inspector would have been listening by the time the dump was logged; wait a
    // beat more anyway.
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(tcpListenersOf(d.process.pid), [], "the daemon listens on TCP after SIGUSR1");
    assert.doesNotMatch(d.stderr, /Debugger listening|inspect/i);
  });
});
