/**
 * What `bin/tpasst -d` tells an operator about each flow (issue 13: "each connection
 * opened and closed, with addresses, ports, bytes and why it ended"): the real daemon
 * over the stream protocol, a scripted guest, and host peers on 127.0.0.1 only.
 *
 * @module
 */

import assert from "node:assert/strict";
import { TEST_GATEWAY4 } from "../support/net/tcp_plan.ts";
import { waitFor } from "../cli/cli_helpers.ts";
import { withDaemon } from "./daemon_run.ts";
import { freeUdpPort, readAll, TcpEchoServer, UdpPeer, writeAll } from "./host_peers.ts";

/** Guest port the -t forward goes to. */
const GUEST_PORT = 8080;

/** A TCP port on 127.0.0.1 nothing listens on now. */
function freeTcpPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

/** `text` with regular expression characters escaped. */
function literal(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

Deno.test("bin/tpasst -d logs each TCP connection opened and closed (ends, bytes, why) and each new UDP flow", async () => {
  const echo = new TcpEchoServer();
  const udpPeer = await UdpPeer.open("127.0.0.1", true);
  const forwarded = freeTcpPort();
  const refusedPort = freeTcpPort();
  try {
    await withDaemon("stream", ["-d", "-t", `127.0.0.1/${forwarded}:${GUEST_PORT}`], async (d) => {
      const g = d.guest4;
      const guest = "10\\.0\\.2\\.15";
      const gateway = "10\\.0\\.2\\.2";

      // Guest → host, ended with FIN both ways.
      const c = g.connect(TEST_GATEWAY4, echo.port);
      await c.until(() => c.state === "established", 10_000, "established");
      g.write(c, new TextEncoder().encode("ping"));
      await c.until(() => c.receivedBytes === 4, 10_000, "echo");
      g.close(c);
      await c.until(() => c.eof, 10_000, "the host's FIN");
      const out = `tcp outbound ${guest}:${c.localPort} -> ${gateway}:${echo.port} ` +
        `\\(host 127\\.0\\.0\\.1:${echo.port}\\)`;
      await waitFor("the outbound close line", () => new RegExp(`${out} closed`).test(d.stderr));
      assert.match(d.stderr, new RegExp(`${out} opened: SYN from the guest`));
      assert.match(
        d.stderr,
        new RegExp(`${out} closed: FIN both ways; guest->host 4 B, host->guest 4 B, after \\d+`),
      );

      // Guest → a closed host port: refused.
      const r = g.connect(TEST_GATEWAY4, refusedPort);
      await r.until(() => r.gotRst, 10_000, "the RST");
      assert.match(
        d.stderr,
        new RegExp(
          `tcp outbound ${guest}:${r.localPort} -> ${gateway}:${refusedPort} .* closed: ` +
            "connect failed: .*; RST to the guest; guest->host 0 B, host->guest 0 B",
        ),
      );

      // Host → guest through -t, the guest resets it.
      g.listening.add(GUEST_PORT);
      const client = await Deno.connect({ hostname: "127.0.0.1", port: forwarded });
      await g.until(() => g.accepted.length === 1, 10_000, "the inbound SYN");
      const a = g.accepted[0];
      await writeAll(client, new TextEncoder().encode("hello"));
      await a.until(() => a.receivedBytes === 5, 10_000, "inbound data");
      g.reset(a);
      await readAll(client).catch(() => new Uint8Array(0));
      client.close();
      const inbound = `tcp inbound ${guest}:${GUEST_PORT} <- ${gateway}:${a.remotePort} ` +
        `\\(host 127\\.0\\.0\\.1:${a.remotePort}\\)`;
      await waitFor("the inbound close line", () => new RegExp(`${inbound} closed`).test(d.stderr));
      assert.match(
        d.stderr,
        new RegExp(
          `${inbound} opened: host connection on forwarded port ${forwarded}, SYN to the guest`,
        ),
      );
      assert.match(
        d.stderr,
        new RegExp(
          `${inbound} closed: the guest reset it \\(RST\\); guest->host 0 B, host->guest 5 B`,
        ),
      );

      // A UDP flow from the guest.
      const port = await freeUdpPort();
      g.sendUdp(port, TEST_GATEWAY4, udpPeer.port, new TextEncoder().encode("udp"));
      await g.until(() => g.datagrams.length > 0, 10_000, "the UDP echo");
      assert.match(
        d.stderr,
        new RegExp(
          literal(
            `udp outbound 10.0.2.15:${port} -> 10.0.2.2:${udpPeer.port} ` +
              `(host 127.0.0.1:${udpPeer.port}) opened: datagram from the guest`,
          ),
        ),
      );
    });
  } finally {
    await echo.close();
    await udpPeer.close();
  }
});
