/**
 * UDP through the REAL daemon (`bin/tpasst -f -1`, a child process) with a scripted
 * guest, over passt's stream protocol and over vhost-user: echo from the guest to a
 * host peer via the gateway keeping the guest's source port (IPv4 and IPv6), a host
 * peer reaching the guest through a forwarded port (-u), and a DNS query forwarded
 * (--dns-forward / --dns-host) to a resolver this test runs on 127.0.0.1 port 53.
 */

import assert from "node:assert/strict";
import type { TestGuest } from "../support/net/tcp_guest.ts";
import { TEST_GATEWAY4, TEST_GATEWAY6 } from "../support/net/tcp_plan.ts";
import { startDnsResponder } from "../e2e/dns_responder.ts";
import { waitFor } from "../cli/cli_helpers.ts";
import { TRANSPORTS } from "./daemon_guest.ts";
import { withDaemon } from "./daemon_run.ts";
import { freeUdpPort, patternBytes, UdpPeer } from "./host_peers.ts";
import { ipv4ToString, parseIpv4 } from "../../ffi/ip_address_text.ts";

/** Guest port the -u rule forwards to. */
const GUEST_UDP_PORT = 5353;
/** Payload sizes sent each way (a tiny one, one near the MTU, one needing IP fragments on a real link). */
const SIZES = [5, 1400, 30_000];
/** The address the guest sends DNS to (advertised with -D, forwarded with --dns-forward). */
const GUEST_DNS = "10.0.2.3";
/** The DNS port (RFC 1035 §4.2.1). */
const DNS_PORT = 53;
/** DNS header flags: RD (RFC 1035 §4.1.1). */
const DNS_FLAG_RD = 0x0100;
/** DNS header flags: QR (RFC 1035 §4.1.1). */
const DNS_FLAG_QR = 0x8000;
/** Record type A and class IN (RFC 1035 §3.2.2, §3.2.4). */
const DNS_TYPE_A = 1;
const DNS_CLASS_IN = 1;
/** The name the test resolver answers, and its (documentation-range) address. */
const DNS_NAME = "tpasst.test";
const DNS_ADDRESS = "192.0.2.7";

/** UDP keeps no order: compare payloads sorted by length (the sizes differ). */
function byLength(list: readonly Uint8Array[]): Uint8Array[] {
  return [...list].sort((a, b) => a.length - b.length);
}

function datagramsTo(g: TestGuest, port: number) {
  return g.datagrams.filter((d) => d.toPort === port);
}

/** A DNS query for `name` type A with transaction id `id` (RFC 1035 §4.1). */
function dnsQuery(id: number, name: string): Uint8Array {
  const labels = name.split(".").map((l) => new TextEncoder().encode(l));
  const q = new Uint8Array(12 + labels.reduce((n, l) => n + 1 + l.length, 0) + 1 + 4);
  const v = new DataView(q.buffer);
  v.setUint16(0, id);
  v.setUint16(2, DNS_FLAG_RD);
  v.setUint16(4, 1); // QDCOUNT
  let at = 12;
  for (const l of labels) {
    q[at++] = l.length;
    q.set(l, at);
    at += l.length;
  }
  q[at++] = 0;
  v.setUint16(at, DNS_TYPE_A);
  v.setUint16(at + 2, DNS_CLASS_IN);
  return q;
}

/** Binds the test resolver on 127.0.0.1:53, retrying while another test holds the port. */
async function startResolver() {
  const deadline = performance.now() + 10_000;
  for (;;) {
    try {
      return await startDnsResponder({ [DNS_NAME]: DNS_ADDRESS }, "127.0.0.1", DNS_PORT);
    } catch (e) {
      if (performance.now() > deadline) {
        throw new Error(`cannot run the test resolver on 127.0.0.1:53: ${e}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

for (const transport of TRANSPORTS) {
  const name = (what: string) => `bin/tpasst over ${transport}: ${what}`;

  Deno.test(
    name("UDP from the guest reaches a host echo peer from the guest's own port, and back"),
    async () => {
      const peers = [await UdpPeer.open("127.0.0.1", true), await UdpPeer.open("::1", true)];
      try {
        await withDaemon(transport, [], async (d) => {
          for (const family of [4, 6] as const) {
            const peer = peers[family === 4 ? 0 : 1];
            const g = family === 4 ? d.guest4 : d.guest6;
            const guestPort = await freeUdpPort(family === 4 ? "127.0.0.1" : "::1");
            const sent = SIZES.map((n, i) => patternBytes(n, 100 * family + i));
            for (const data of sent) {
              if (family === 4) g.sendUdp(guestPort, TEST_GATEWAY4, peer.port, data);
              else g.sendUdp(guestPort, 0, peer.port, data, TEST_GATEWAY6);
            }
            await g.until(
              () => datagramsTo(g, guestPort).length >= sent.length,
              10_000,
              `IPv${family} echoes`,
            );
            assert.deepEqual(peer.received.map((r) => r.port), sent.map(() => guestPort));
            assert.deepEqual(byLength(peer.received.map((r) => r.data)), sent);
            const got = datagramsTo(g, guestPort);
            assert.deepEqual(byLength(got.map((x) => x.data)), sent);
            for (const x of got) {
              assert.equal(x.fromPort, peer.port);
              if (family === 4) assert.equal(x.from4, TEST_GATEWAY4);
              else assert.deepEqual(x.from6, TEST_GATEWAY6);
            }
            peer.received.length = 0;
          }
        });
      } finally {
        await Promise.all(peers.map((p) => p.close()));
      }
    },
  );

  Deno.test(
    name(
      "a host peer reaches the guest through a forwarded UDP port (-u), and back, IPv4 and IPv6",
    ),
    async () => {
      const hosts = ["127.0.0.1", "::1"] as const;
      const ports = [await freeUdpPort(hosts[0]), await freeUdpPort(hosts[1])];
      const clients = [await UdpPeer.open(hosts[0], false), await UdpPeer.open(hosts[1], false)];
      const rules = hosts.flatMap((h, i) => ["-u", `${h}/${ports[i]}:${GUEST_UDP_PORT}`]);
      try {
        await withDaemon(transport, rules, async (d) => {
          for (const [i, g] of [d.guest4, d.guest6].entries()) {
            const [host, hostPort, client] = [hosts[i], ports[i], clients[i]];
            const sent = SIZES.map((n, k) => patternBytes(n, 7 + k + 10 * i));
            // The listener is bound once the daemon runs; probe until one arrives.
            const probe = new TextEncoder().encode("probe");
            const isProbe = (x: { data: Uint8Array }) =>
              x.data.length === probe.length && x.data.every((b, k) => b === probe[k]);
            await waitFor(`the first datagram through -u on ${host}`, () => {
              if (datagramsTo(g, GUEST_UDP_PORT).length > 0) return true;
              client.send(probe, hostPort, host);
              return false;
            });
            for (const data of sent) client.send(data, hostPort, host);
            const forwarded = () => datagramsTo(g, GUEST_UDP_PORT).filter((x) => !isProbe(x));
            await g.until(
              () => forwarded().length >= sent.length,
              10_000,
              "the forwarded datagrams",
            );
            const got = forwarded();
            assert.deepEqual(byLength(got.map((x) => x.data)), sent);
            for (const x of got) {
              if (g.family === 4) assert.equal(x.from4, TEST_GATEWAY4, "host loopback as gateway");
              else assert.deepEqual(x.from6, TEST_GATEWAY6, "host loopback as gateway");
              assert.equal(x.fromPort, client.port);
              // The guest answers each datagram, reversed, to where it came from.
              const reply = x.data.slice().reverse();
              if (g.family === 4) g.sendUdp(GUEST_UDP_PORT, x.from4, x.fromPort, reply);
              else g.sendUdp(GUEST_UDP_PORT, 0, x.fromPort, reply, x.from6!);
            }
            await waitFor("the guest's replies", () => client.received.length >= sent.length);
            assert.deepEqual(
              byLength(client.received.map((r) => r.data)),
              sent.map((s) => s.slice().reverse()),
            );
            for (const r of client.received) {
              assert.equal(r.port, hostPort, "the reply comes from the forwarded port");
              assert.equal(r.address, host);
            }
          }
        });
      } finally {
        await Promise.all(clients.map((c) => c.close()));
      }
    },
  );

  Deno.test(
    name("DNS to the forwarded address is answered by a resolver on 127.0.0.1"),
    async () => {
      const resolver = await startResolver();
      try {
        await withDaemon(
          transport,
          ["-D", GUEST_DNS, "--dns-forward", GUEST_DNS, "--dns-host", "127.0.0.1"],
          async (d) => {
            const g = d.guest4;
            const dns4 = parseIpv4(GUEST_DNS)!;
            const port = await freeUdpPort();
            g.sendUdp(port, dns4, DNS_PORT, dnsQuery(0x7a11, DNS_NAME));
            await g.until(() => datagramsTo(g, port).length > 0, 10_000, "the DNS answer");
            const [answer] = datagramsTo(g, port);
            assert.equal(answer.from4, dns4, "the answer comes from the address asked");
            assert.equal(answer.fromPort, DNS_PORT);
            const v = new DataView(answer.data.buffer, answer.data.byteOffset);
            assert.equal(v.getUint16(0), 0x7a11, "transaction id");
            assert.notEqual(v.getUint16(2) & DNS_FLAG_QR, 0, "QR set");
            assert.equal(v.getUint16(6), 1, "one answer");
            assert.equal(ipv4ToString(v.getUint32(answer.data.length - 4)), DNS_ADDRESS);
            assert.deepEqual(resolver.questions, [{ name: DNS_NAME, type: DNS_TYPE_A }]);
          },
        );
      } finally {
        await resolver.close();
      }
    },
  );
}
