/**
 * TCP through the REAL daemon (`bin/tpasst -f -1`, a child process) with a scripted
 * guest, over passt's stream protocol and over vhost-user (the TS front-end harness):
 * an HTTP-style fetch via the gateway (IPv4 and IPv6), a host client on a forwarded
 * port (-t), multi-MB transfers each way checked by SHA-256, half-close both ways,
 * RST from each side, connection refused, many concurrent connections.
 *
 * Environment: TPASST_TCP_LONG=1 moves 100 MB each way (default 4 MB);
 * TPASST_TCP_CONNS=N opens N concurrent connections (default 500).
 */

import assert from "node:assert/strict";
import { TEST_GATEWAY4, TEST_GATEWAY6 } from "../support/net/tcp_plan.ts";
import type { GuestTcpConn, TestGuest } from "../support/net/tcp_guest.ts";
import { DaemonGuest, TRANSPORTS } from "./daemon_guest.ts";
import { fdsBackTo, withDaemon } from "./daemon_run.ts";
import { waitFor } from "../cli/cli_helpers.ts";
import {
  drainWithDigest,
  freeTcpPort,
  patternBytes,
  readAll,
  ResettingTcpServer,
  sha256,
  sha256Hex,
  TcpEchoServer,
  writeAll,
} from "./host_peers.ts";

const LONG = Deno.env.get("TPASST_TCP_LONG") === "1";
/** Bytes moved each way by the transfer test. */
const TRANSFER_BYTES = LONG ? 100 * 1024 * 1024 : 4 * 1024 * 1024;
/** Concurrent connections in the concurrency test. */
const CONNECTIONS = Number(Deno.env.get("TPASST_TCP_CONNS") ?? "500");
/** Guest port the -t rule forwards to. */
const GUEST_PORT = 8080;

const enc = new TextEncoder();
const dec = new TextDecoder();

function connectGateway(d: DaemonGuest, family: 4 | 6, port: number): GuestTcpConn {
  return family === 4
    ? d.guest4.connect(TEST_GATEWAY4, port)
    : d.guest6.connect(0, port, TEST_GATEWAY6);
}

async function established(c: GuestTcpConn, ms = 10_000): Promise<void> {
  await c.until(() => c.state === "established" || c.gotRst, ms, "the handshake");
  assert.equal(c.state, "established", `connection ${c.localPort} was reset instead`);
}

for (const transport of TRANSPORTS) {
  const name = (what: string) => `bin/tpasst over ${transport}: ${what}`;

  Deno.test(
    name("an HTTP-style fetch via the gateway reaches a host server on 127.0.0.1 and ::1"),
    async () => {
      const served: string[] = [];
      const ac = new AbortController();
      const servers = ["127.0.0.1", "::1"].map((hostname) =>
        Deno.serve({ hostname, port: 0, signal: ac.signal, onListen() {} }, (req) => {
          served.push(`${hostname} ${req.method} ${new URL(req.url).pathname}`);
          return new Response(`hello from ${hostname}\n`, { headers: { "x-test": "tpasst" } });
        })
      );
      try {
        await withDaemon(transport, [], async (d) => {
          const baseline = d.fdCount();
          for (const [family, server] of [[4, servers[0]], [6, servers[1]]] as const) {
            const c = connectGateway(d, family, server.addr.port);
            await established(c);
            const guest = family === 4 ? d.guest4 : d.guest6;
            guest.write(
              c,
              enc.encode(`GET /index.html HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n`),
            );
            await c.until(() => c.eof, 10_000, "the end of the response");
            const response = dec.decode(c.takeReceived());
            guest.close(c);
            await c.until(() => c.finAcked, 10_000, "our FIN acknowledged");
            const host = family === 4 ? "127.0.0.1" : "::1";
            assert.match(response, /^HTTP\/1\.1 200 OK\r\n/);
            assert.match(response, /\r\nx-test: tpasst\r\n/i);
            assert.ok(response.endsWith(`\r\n\r\nhello from ${host}\n`), response);
          }
          assert.deepEqual(served, ["127.0.0.1 GET /index.html", "::1 GET /index.html"]);
          await fdsBackTo(d, baseline);
        });
      } finally {
        ac.abort();
        await Promise.all(servers.map((s) => s.finished));
      }
    },
  );

  Deno.test(
    name("a host client on a forwarded port (-t) talks to the guest both ways, IPv4 and IPv6"),
    async () => {
      const port4 = freeTcpPort();
      const port6 = freeTcpPort("::1");
      const rules = ["-t", `127.0.0.1/${port4}:${GUEST_PORT}`, "-t", `::1/${port6}:${GUEST_PORT}`];
      await withDaemon(transport, rules, async (d) => {
        for (
          const [g, hostname, port] of [[d.guest4, "127.0.0.1", port4], [
            d.guest6,
            "::1",
            port6,
          ]] as const
        ) {
          g.listening.add(GUEST_PORT);
          const client = await Deno.connect({ hostname, port });
          try {
            await g.until(() => g.accepted.length === 1, 10_000, "the inbound connection");
            const a = g.accepted[0];
            if (g.family === 4) {
              assert.equal(a.remote4, TEST_GATEWAY4, "host loopback appears as the gateway");
            } else {
              assert.deepEqual(a.remote6, TEST_GATEWAY6, "host loopback appears as the gateway");
            }
            await writeAll(client, enc.encode("knock knock"));
            await a.until(() => a.receivedBytes === 11, 10_000, "the client's bytes");
            assert.equal(dec.decode(a.takeReceived()), "knock knock");
            g.write(a, enc.encode("who's there"));
            g.close(a);
            assert.equal(dec.decode(await readAll(client)), "who's there");
            await a.until(() => a.finAcked, 10_000, "the guest's FIN acknowledged");
          } finally {
            client.close();
          }
        }
      });
    },
  );

  Deno.test(name(`${TRANSFER_BYTES >> 20} MB each way arrive intact (SHA-256)`), async () => {
    const wait = LONG ? 600_000 : 60_000;
    const data = patternBytes(TRANSFER_BYTES, 0x5eed);
    const expected = sha256Hex(data);
    const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      await withDaemon(transport, [], async (d) => {
        const g = d.guest4;
        // guest → host
        let t0 = performance.now();
        const up = server.accept().then(async (h) => {
          try {
            return await drainWithDigest(h);
          } finally {
            h.close();
          }
        });
        const c = g.connect(TEST_GATEWAY4, server.addr.port);
        await established(c);
        g.write(c, data);
        g.close(c);
        const got = await up;
        assert.equal(got.bytes, data.length);
        assert.equal(got.sha256, expected);
        await c.until(() => c.finAcked && c.eof, wait, "both FINs");
        const upMs = performance.now() - t0;
        // host → guest
        t0 = performance.now();
        const down = server.accept().then(async (h) => {
          try {
            await writeAll(h, data);
          } finally {
            h.close();
          }
        });
        const r = g.connect(TEST_GATEWAY4, server.addr.port);
        const digest = sha256();
        r.discardReceived = true;
        r.onData = (chunk) => digest.update(chunk);
        await established(r);
        await down;
        await r.until(() => r.eof, wait, "the end of the host's data");
        assert.equal(r.totalReceived, data.length);
        assert.equal(digest.hex(), expected);
        g.close(r);
        await r.until(() => r.finAcked, 10_000, "our FIN acknowledged");
        const downMs = performance.now() - t0;
        const mb = data.length / 1048576;
        console.log(
          `${transport}: ${mb} MB guest→host ${upMs.toFixed(0)} ms, host→guest ${
            downMs.toFixed(0)
          } ms`,
        );
      });
    } finally {
      server.close();
    }
  });

  Deno.test(name("half-close works both ways"), async () => {
    const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      await withDaemon(transport, [], async (d) => {
        const g = d.guest4;
        // The guest closes first, then still receives the host's answer.
        const hostSide = server.accept().then(async (h) => {
          try {
            const request = dec.decode(await readAll(h)); // ends at the guest's FIN
            await writeAll(h, enc.encode(`after your FIN: ${request}`));
          } finally {
            h.close();
          }
        });
        const c = g.connect(TEST_GATEWAY4, server.addr.port);
        await established(c);
        g.write(c, enc.encode("question"));
        g.close(c);
        // The host's read ended at our FIN before it wrote its answer.
        await c.until(() => c.eof, 10_000, "the answer after our FIN");
        assert.equal(dec.decode(c.takeReceived()), "after your FIN: question");
        await hostSide;
        // The host closes its write side first, then still receives the guest's data.
        const hostFirst = server.accept().then(async (h) => {
          try {
            await writeAll(h, enc.encode("host done"));
            await h.closeWrite();
            return dec.decode(await readAll(h));
          } finally {
            h.close();
          }
        });
        const r = g.connect(TEST_GATEWAY4, server.addr.port);
        await established(r);
        await r.until(() => r.eof, 10_000, "the host's FIN");
        assert.equal(dec.decode(r.takeReceived()), "host done");
        g.write(r, enc.encode("guest still talking"));
        g.close(r);
        assert.equal(await hostFirst, "guest still talking");
        await r.until(() => r.finAcked, 10_000, "our FIN acknowledged");
      });
    } finally {
      server.close();
    }
  });

  Deno.test(name("a RST from either side ends the connection on the other"), async () => {
    const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      await withDaemon(transport, [], async (d) => {
        const g = d.guest4;
        const baseline = d.fdCount();
        // Guest RST: the daemon aborts its host socket (SO_LINGER 0), so the host peer
        // gets a RST, not a FIN. Deno's read() reports either as end of stream, but a
        // write then tells them apart: after a FIN the first write is still accepted
        // (the socket is only half closed), after a RST it fails at once.
        const accepted = server.accept();
        const c = g.connect(TEST_GATEWAY4, server.addr.port);
        await established(c);
        const h = await accepted;
        g.write(c, enc.encode("x"));
        await c.until(() => c.sndUna === c.sndNxt, 10_000, "the byte acknowledged");
        g.reset(c);
        const buf = new Uint8Array(16);
        assert.equal(await h.read(buf), 1);
        const end = await h.read(buf).catch((e) => e);
        assert.ok(end === null || end instanceof Deno.errors.ConnectionReset, String(end));
        const written = await h.write(enc.encode("after the reset")).catch((e) => e);
        assert.ok(
          written instanceof Deno.errors.BrokenPipe ||
            written instanceof Deno.errors.ConnectionReset,
          `the host peer's socket was reset, not closed: write gave ${written}`,
        );
        h.close();
        await fdsBackTo(d, baseline);
        // Host RST: the daemon passes it on to the guest as a RST.
        const resetting = new ResettingTcpServer();
        try {
          const r = g.connect(TEST_GATEWAY4, resetting.port);
          await established(r);
          const h2 = await resetting.accept();
          g.write(r, enc.encode("data before the reset"));
          await r.until(() => r.sndUna === r.sndNxt, 10_000, "the data acknowledged");
          h2.closeWithReset();
          await r.until(() => r.eof || r.gotRst, 10_000, "the host's reset passed on");
          assert.equal(r.gotRst, true, "a FIN arrived instead of a RST");
          assert.equal(r.state, "closed");
        } finally {
          resetting.close();
        }
        await fdsBackTo(d, baseline);
      });
    } finally {
      server.close();
    }
  });

  Deno.test({
    name: name("a RST from the host reaches the guest as a RST without further guest data"),
    async fn() {
      const server = new ResettingTcpServer();
      try {
        await withDaemon(transport, [], async (d) => {
          const r = d.guest4.connect(TEST_GATEWAY4, server.port);
          await established(r);
          const h = await server.accept();
          d.guest4.write(r, enc.encode("never read"));
          await r.until(() => r.sndUna === r.sndNxt, 10_000, "the data acknowledged");
          h.closeWithReset();
          await r.until(() => r.eof || r.gotRst, 10_000, "the host's reset passed on");
          assert.equal(r.gotRst, true, "a FIN arrived instead of a RST");
        });
      } finally {
        server.close();
      }
    },
  });

  Deno.test(
    name("-o and --outbound-if4 bind the host side of guest TCP connections"),
    async () => {
      const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      try {
        const args = ["-o", "127.0.0.2", "--outbound-if4", "lo"];
        await withDaemon(transport, args, async (d) => {
          const accepted = server.accept();
          const c = d.guest4.connect(TEST_GATEWAY4, server.addr.port);
          await established(c);
          const h = await accepted;
          assert.equal((h.remoteAddr as Deno.NetAddr).hostname, "127.0.0.2", "the -o source");
          d.guest4.write(c, enc.encode("from 127.0.0.2"));
          const buf = new Uint8Array(64);
          const n = await h.read(buf);
          assert.equal(dec.decode(buf.subarray(0, n ?? 0)), "from 127.0.0.2");
          h.close();
          await c.until(() => c.eof || c.gotRst, 10_000, "the host's close passed on");
        });
      } finally {
        server.close();
      }
    },
  );

  Deno.test(name("a refused host connection is answered with a RST"), async () => {
    const closedPort = freeTcpPort();
    await withDaemon(transport, [], async (d) => {
      for (const family of [4, 6] as const) {
        const c = connectGateway(d, family, closedPort);
        await c.until(() => c.gotRst || c.state === "established", 10_000, "an answer");
        assert.equal(c.gotRst, true, `IPv${family}: RST for a refused connection`);
        assert.notEqual(c.state, "established");
      }
    });
  });

  Deno.test(
    name("the front-end leaving mid-transfer lets the daemon exit cleanly"),
    async () => {
      const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const hosts: Deno.Conn[] = [];
      try {
        const d = await DaemonGuest.start(transport);
        let result: { code: number; stderr: string } | null = null;
        try {
          const conns = [0, 1, 2].map(() => d.guest4.connect(TEST_GATEWAY4, server.addr.port));
          for (let i = 0; i < conns.length; i++) hosts.push(await server.accept());
          await Promise.all(conns.map((c) => established(c)));
          // Data in flight both ways when the front-end goes away.
          for (const c of conns) d.guest4.write(c, patternBytes(4 << 20, c.localPort));
          for (const h of hosts) writeAll(h, patternBytes(4 << 20, 9)).catch(() => {});
          await conns[0].until(() => conns[0].totalReceived > 0, 10_000, "data from the host");
          result = await d.close();
        } finally {
          result ??= await d.close();
        }
        assert.equal(result.code, 0, `daemon exit status; stderr:\n${result.stderr}`);
        assert.doesNotMatch(result.stderr, /internal error|exception|uncaught/i);
      } finally {
        for (const h of hosts) {
          try {
            h.close();
          } catch { /* closed */ }
        }
        server.close();
      }
    },
  );

  Deno.test(name(`${CONNECTIONS} concurrent connections echo every byte`), async () => {
    const echo = new TcpEchoServer();
    try {
      await withDaemon(transport, [], async (d) => {
        const g: TestGuest = d.guest4;
        const baseline = d.fdCount();
        const t0 = performance.now();
        const conns = Array.from(
          { length: CONNECTIONS },
          () => g.connect(TEST_GATEWAY4, echo.port),
        );
        const payloads = conns.map((_, i) => patternBytes(1000 + 37 * i, i + 1));
        // Every connection is open on the host before any data moves.
        await Promise.all(conns.map((c) => established(c, 60_000)));
        await waitFor("every host-side connection accepted", () => echo.accepted === CONNECTIONS);
        await Promise.all(conns.map(async (c, i) => {
          g.write(c, payloads[i]);
          g.close(c);
          await c.until(() => c.eof, 60_000, "the echo and the server's FIN");
        }));
        const ms = performance.now() - t0;
        for (let i = 0; i < conns.length; i++) {
          const got = conns[i].takeReceived();
          assert.equal(got.length, payloads[i].length, `connection ${i}: length`);
          assert.deepEqual(got, payloads[i], `connection ${i}: bytes`);
        }
        assert.equal(echo.accepted, CONNECTIONS);
        assert.equal(echo.peakOpen, CONNECTIONS, "all connections were open at once");
        assert.deepEqual(echo.errors, []);
        console.log(
          `${transport}: ${CONNECTIONS} concurrent echo connections in ${ms.toFixed(0)} ms`,
        );
        await Promise.all(
          conns.map((c) => c.until(() => c.finAcked, 30_000, "our FIN acknowledged")),
        );
        await fdsBackTo(d, baseline);
      });
    } finally {
      await echo.close();
    }
  });
}
