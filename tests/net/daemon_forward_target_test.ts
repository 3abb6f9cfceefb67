/**
 * Forwarding target addresses through the REAL daemon (`bin/tpasst -f -1`, a child
 * process) with a scripted guest, over vhost-user and passt's stream protocol: a `-t`/`-u`
 * spec with a target address (`ADDR/PORT:TARGET/PORT`, `ADDR/all:TARGET`) sends what
 * arrives on its host port to that guest-side address instead of the guest's own one,
 * as passt 2026 does (fwd.c, fwd_nat_from_host(): the rule's target address becomes the
 * destination the guest sees; the source is translated as for any forward). The guest
 * answers from the target address and the host peer gets the answer back.
 *
 * Every address here is loopback: the host peers use 127.0.0.0/8 and ::1, and the
 * target addresses (127.0.0.5, 127.0.0.7, ::1) only ever appear inside the frames
 * between the daemon and the scripted guest.
 *
 * @module
 */

import assert from "node:assert/strict";
import { TEST_GATEWAY4, TEST_GATEWAY6, TEST_GUEST4 } from "../support/net/tcp_plan.ts";
import { waitFor } from "../cli/cli_helpers.ts";
import { TRANSPORTS } from "./daemon_guest.ts";
import { withDaemon } from "./daemon_run.ts";
import { freeUdpPort, readAll, UdpPeer, writeAll } from "./host_peers.ts";
import { parseIpv4, parseIpv6 } from "../../ffi/ip_address_text.ts";

/** Guest-side target of the TCP forward (`-t 127.0.0.1/P:127.0.0.5/6000`). */
const TCP_TARGET = "127.0.0.5";
const TCP_TARGET_PORT = 6000;
/** Host address and target of the `all` forward (`-t 127.0.0.6/all:127.0.0.7,~…`). */
const ALL_BIND = "127.0.0.6";
const ALL_TARGET = "127.0.0.7";
/** Guest-side target of the UDP forward (`-u 127.0.0.1/P:127.0.0.5/6001`). */
const UDP_TARGET_PORT = 6001;
/** Guest-side target of the IPv6 TCP forward (`-t [::1]/P:[::1]/6002`). */
const TCP6_TARGET = "::1";
const TCP6_TARGET_PORT = 6002;
/**
 * Where the `all` forward's one port is looked for: below Linux's default ephemeral
 * range (32768-60999), which `all` never forwards.
 */
const ALL_PORT_FIRST = 20_000;
const ALL_PORT_LAST = 30_000;

/** A free TCP port on `hostname`, picked by the kernel. */
function freeTcpPort(hostname: string): number {
  const l = Deno.listen({ hostname, port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

/** A TCP port on `hostname` in [first, last] that nothing listens on now. */
function freeLowTcpPort(hostname: string, first: number, last: number): number {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = first + Math.floor(Math.random() * (last - first + 1));
    try {
      Deno.listen({ hostname, port }).close();
      return port;
    } catch { /* in use: another */ }
  }
  throw new Error(`no free TCP port on ${hostname} in ${first}-${last}`);
}

/** An `all` spec on `bind` reduced to the one port `port` by exclusions. */
function allSpecFor(bind: string, target: string, port: number): string {
  return `${bind}/all:${target},~1-${port - 1},~${port + 1}-65535`;
}

for (const transport of TRANSPORTS) {
  Deno.test(
    `bin/tpasst over ${transport}: -t/-u target addresses are where forwarded connections and datagrams go in the guest, and the answers come back`,
    async () => {
      const tcpPort = freeTcpPort("127.0.0.1");
      const allPort = freeLowTcpPort(ALL_BIND, ALL_PORT_FIRST, ALL_PORT_LAST);
      const tcp6Port = freeTcpPort("::1");
      const udpPort = await freeUdpPort("127.0.0.1");
      const udpClient = await UdpPeer.open("127.0.0.1", false);
      const args = [
        "-t",
        `127.0.0.1/${tcpPort}:${TCP_TARGET}/${TCP_TARGET_PORT}`,
        "-t",
        allSpecFor(ALL_BIND, ALL_TARGET, allPort),
        "-t",
        `[::1]/${tcp6Port}:[${TCP6_TARGET}]/${TCP6_TARGET_PORT}`,
        "-u",
        `127.0.0.1/${udpPort}:${TCP_TARGET}/${UDP_TARGET_PORT}`,
      ];
      try {
        await withDaemon(transport, args, async (d) => {
          const g4 = d.guest4;
          const g6 = d.guest6;
          g4.listening.add(TCP_TARGET_PORT);
          g4.listening.add(allPort);
          g6.listening.add(TCP6_TARGET_PORT);

          // TCP, explicit port and target address.
          const checkTcp = async (
            hostname: string,
            port: number,
            guest: typeof g4,
            expect: (c: (typeof g4.accepted)[number]) => void,
            label: string,
          ) => {
            const before = guest.accepted.length;
            const client = await Deno.connect({ hostname, port });
            try {
              await guest.until(() => guest.accepted.length > before, 10_000, `${label}: SYN`);
              const c = guest.accepted[before];
              expect(c);
              const ask = new TextEncoder().encode(`hello ${label}`);
              await writeAll(client, ask);
              await c.until(() => c.receivedBytes === ask.length, 10_000, `${label}: data`);
              assert.deepEqual(c.takeReceived(), ask);
              guest.write(c, new TextEncoder().encode(`answer ${label}`));
              guest.close(c);
              assert.equal(new TextDecoder().decode(await readAll(client)), `answer ${label}`);
            } finally {
              client.close();
            }
          };
          await checkTcp("127.0.0.1", tcpPort, g4, (c) => {
            assert.equal(c.local4, parseIpv4(TCP_TARGET), "the SYN goes to the target address");
            assert.equal(c.localPort, TCP_TARGET_PORT);
            assert.equal(c.remote4, TEST_GATEWAY4, "the host's loopback appears as the gateway");
          }, "-t 127.0.0.1/P:127.0.0.5/6000");
          await checkTcp(ALL_BIND, allPort, g4, (c) => {
            assert.equal(c.local4, parseIpv4(ALL_TARGET), "the SYN goes to the all target");
            assert.equal(c.localPort, allPort, "all keeps the port number");
          }, "-t 127.0.0.6/all:127.0.0.7");
          await checkTcp("::1", tcp6Port, g6, (c) => {
            assert.deepEqual(c.local6, parseIpv6(TCP6_TARGET), "the SYN goes to [::1]");
            assert.equal(c.localPort, TCP6_TARGET_PORT);
            assert.deepEqual(c.remote6, TEST_GATEWAY6);
          }, "-t [::1]/P:[::1]/6002");

          // UDP: the datagram goes to the target, the answer from there comes back.
          const toTarget = () => g4.datagrams.filter((x) => x.toPort === UDP_TARGET_PORT);
          const probe = new TextEncoder().encode("udp to the target");
          await waitFor("a datagram through -u 127.0.0.1/P:127.0.0.5/6001", () => {
            if (toTarget().length > 0) return true;
            udpClient.send(probe, udpPort, "127.0.0.1");
            return false;
          });
          const [datagram] = toTarget();
          assert.equal(datagram.to4, parseIpv4(TCP_TARGET), "the datagram goes to the target");
          assert.notEqual(datagram.to4, TEST_GUEST4);
          assert.equal(datagram.from4, TEST_GATEWAY4);
          assert.equal(datagram.fromPort, udpClient.port);
          const reply = new TextEncoder().encode("answer from the target");
          g4.sendUdp(UDP_TARGET_PORT, datagram.from4, datagram.fromPort, reply, undefined, {
            addr4: datagram.to4,
          });
          await waitFor("the answer from the target", () => udpClient.received.length > 0);
          assert.deepEqual(udpClient.received[0].data, reply);
          assert.equal(udpClient.received[0].port, udpPort, "from the forwarded port");
          assert.doesNotMatch(d.stderr, /not honoured/);
        });
      } finally {
        await udpClient.close();
      }
    },
  );
}
