/**
 * The real daemon started the documented way with a narrowed destination list
 * (`bin/tpasst --allow-net=LIST …`, which becomes Deno's `--allow-net` in place of the
 * `daemon` set's unrestricted `net`): TCP, UDP and ICMP echo are all checked against
 * the same list. With `127.0.0.1,[::1]:TCP_ALLOWED,[::1]:UDP_ALLOWED`:
 *
 * - IPv4 (the gateway is the host's 127.0.0.1, granted for every port): a TCP
 *   connection, a UDP echo and a ping all work;
 * - IPv6 (the gateway is the host's ::1, granted for two ports only): TCP to the
 *   granted port connects and to another one gets a RST without the host listener
 *   ever accepting; UDP to the granted port is echoed and to another one is dropped
 *   before it leaves; a ping (no port, so ::1 as a whole, not granted) is answered
 *   with "administratively prohibited" and opens no ping socket.
 *
 * Each refusal is logged once. The IPv4 ping needs ping sockets
 * (net.ipv4.ping_group_range, opened by tests/e2e/with_ping_sockets.sh under make
 * test); without them only that reply is not checked, and the test name says so.
 *
 * @module
 */

import assert from "node:assert/strict";
import { buildIcmpEcho, Icmpv4Type, Icmpv6Type } from "../../src/net/wire/icmp.ts";
import { ICMPV6_ADMIN_PROHIBITED } from "../../src/net/icmp/echo.ts";
import { TEST_GATEWAY4, TEST_GATEWAY6, TEST_GUEST4, TEST_GUEST6 } from "../support/net/tcp_plan.ts";
import { decodeFrame, guestIpv4Frame, guestIpv6Frame } from "../support/net/frames.ts";
import { pingSocketsAllowed } from "../e2e/ping_sockets.ts";
import { TRANSPORTS } from "./daemon_guest.ts";
import { withDaemon } from "./daemon_run.ts";
import { UdpPeer } from "./host_peers.ts";
import { IPPROTO_ICMP, IPPROTO_ICMPV6 } from "../../src/net/wire/ip_protocol.ts";

/** Guest source ports of the three UDP flows. */
const UDP_PORT_V4 = 40001, UDP_PORT_V6 = 40002, UDP_PORT_V6_DENIED = 40003;
/** How long a datagram or reply from loopback may take before it counts as not coming. */
const QUIET_MS = 300;
/** Echo identifiers of the guest's pings. */
const ECHO_ID_V4 = 0x4444, ECHO_ID_V6 = 0x6666;
/** Whether the daemon (this process's group) may open ping sockets here. */
const PING_SOCKETS = pingSocketsAllowed(Deno.gid() ?? 0);

function echoRequest(family: 4 | 6): Uint8Array {
  const icmp = new Uint8Array(12);
  buildIcmpEcho(
    icmp,
    0,
    family === 4 ? Icmpv4Type.EchoRequest : Icmpv6Type.EchoRequest,
    family === 4 ? ECHO_ID_V4 : ECHO_ID_V6,
    1,
  );
  return family === 4
    ? guestIpv4Frame(IPPROTO_ICMP, TEST_GUEST4, TEST_GATEWAY4, icmp)
    : guestIpv6Frame(IPPROTO_ICMPV6, TEST_GUEST6, TEST_GATEWAY6, icmp);
}

const text = (s: string) => new TextEncoder().encode(s);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

for (const transport of TRANSPORTS) {
  Deno.test(
    `\`bin/tpasst --allow-net=…\` over ${transport}: TCP, UDP and ICMP echo follow one list ` +
      (PING_SOCKETS ? "" : "(IPv4 ping reply not checked: ping sockets not permitted here)"),
    async () => {
      const tcp4 = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const tcp6 = Deno.listen({ hostname: "::1", port: 0 });
      const tcp6Denied = Deno.listen({ hostname: "::1", port: 0 });
      const udp4 = await UdpPeer.open("127.0.0.1", true);
      const udp6 = await UdpPeer.open("::1", true);
      const udp6Denied = await UdpPeer.open("::1", true);
      const tcp6Port = (tcp6.addr as Deno.NetAddr).port;
      const tcp6DeniedPort = (tcp6Denied.addr as Deno.NetAddr).port;
      const udp6DeniedPort = udp6Denied.port;
      let deniedAccepts = 0;
      const accepting = [
        (async () => {
          for await (const c of tcp4) c.close();
        })(),
        (async () => {
          for await (const c of tcp6) c.close();
        })(),
        (async () => {
          for await (const c of tcp6Denied) {
            deniedAccepts++;
            c.close();
          }
        })(),
      ];
      const allowNet = `--allow-net=127.0.0.1,[::1]:${tcp6Port},[::1]:${udp6.port}`;
      let stderr = "";
      try {
        await withDaemon(transport, [allowNet], async (d) => {
          const { guest4, guest6 } = d;
          // TCP
          const c4 = guest4.connect(TEST_GATEWAY4, (tcp4.addr as Deno.NetAddr).port);
          await guest4.until(() => c4.state === "established", 5000, "IPv4 TCP (granted)");
          const c6 = guest6.connect(0, tcp6Port, TEST_GATEWAY6);
          await guest6.until(() => c6.state === "established", 5000, "IPv6 TCP (granted port)");
          const r6 = guest6.connect(0, tcp6DeniedPort, TEST_GATEWAY6);
          await guest6.until(() => r6.gotRst, 5000, "a RST for the IPv6 TCP port not granted");
          guest4.reset(c4);
          guest6.reset(c6);

          // UDP
          guest4.sendUdp(UDP_PORT_V4, TEST_GATEWAY4, udp4.port, text("v4"));
          await guest4.until(() => guest4.datagrams.length === 1, 5000, "IPv4 UDP echo");
          guest6.sendUdp(UDP_PORT_V6, 0, udp6.port, text("v6"), TEST_GATEWAY6);
          await guest6.until(() => guest6.datagrams.length === 1, 5000, "IPv6 UDP echo");
          guest6.sendUdp(UDP_PORT_V6_DENIED, 0, udp6DeniedPort, text("no"), TEST_GATEWAY6);

          // ICMP echo
          d.sendFrame(echoRequest(4));
          d.sendFrame(echoRequest(6));
          await guest6.until(
            () =>
              d.icmpFrames.some((f) =>
                decodeFrame(f).ip6 !== undefined &&
                decodeFrame(f).l4[0] === Icmpv6Type.DestinationUnreachable
              ),
            5000,
            "an ICMPv6 answer to the ping of ::1",
          );
          if (PING_SOCKETS) {
            await guest4.until(
              () => d.icmpFrames.some((f) => decodeFrame(f).ip4 !== undefined),
              5000,
              "the IPv4 echo reply",
            );
          }
          await sleep(QUIET_MS);
          stderr = d.stderr;

          assert.equal(guest6.datagrams.length, 1, "nothing back from the UDP port not granted");
          assert.equal(udp6Denied.received.length, 0, "the denied UDP peer got nothing");
          assert.equal(udp6.received.length, 1);
          assert.equal(udp4.received.length, 1);
          assert.equal(deniedAccepts, 0, "the denied TCP listener accepted nothing");

          // Router advertisements and neighbour discovery are ICMPv6 too: keep the
          // answers to pings.
          const answers: number[] = [
            Icmpv4Type.EchoReply,
            Icmpv6Type.EchoReply,
            Icmpv4Type.DestinationUnreachable,
            Icmpv6Type.DestinationUnreachable,
          ];
          const icmp = d.icmpFrames.map(decodeFrame).filter((f) => answers.includes(f.l4[0]));
          const v6 = icmp.filter((f) => f.ip6);
          assert.equal(v6.length, 1, "one answer to the one IPv6 ping");
          assert.equal(v6[0].l4[0], Icmpv6Type.DestinationUnreachable);
          assert.equal(v6[0].l4[1], ICMPV6_ADMIN_PROHIBITED);
          assert.deepEqual(v6[0].ip6?.src, TEST_GATEWAY6);
          if (PING_SOCKETS) {
            const v4 = icmp.filter((f) => f.ip4);
            assert.equal(v4.length, 1);
            assert.equal(v4[0].l4[0], Icmpv4Type.EchoReply);
            assert.equal((v4[0].l4[4] << 8) | v4[0].l4[5], ECHO_ID_V4);
          }
        });
      } finally {
        for (const l of [tcp4, tcp6, tcp6Denied]) l.close();
        await Promise.allSettled(accepting);
        for (const p of [udp4, udp6, udp6Denied]) await p.close();
      }
      const refusals = stderr.split("\n").filter((l) => /not permitted \(--allow-net\)/.test(l));
      assert.equal(refusals.length, 3, `one line per refusal:\n${stderr}`);
      assert.match(refusals.join("\n"), new RegExp(`tcp: .*::1.* port ${tcp6DeniedPort}`));
      assert.match(refusals.join("\n"), new RegExp(`udp: .*::1 port ${udp6DeniedPort}`));
      assert.match(refusals.join("\n"), /ping: .*::1 not permitted/);
    },
  );
}
