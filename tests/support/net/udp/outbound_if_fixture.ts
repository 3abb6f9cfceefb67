/**
 * Run by translator_test.ts inside a fresh network namespace holding a veth pair whose
 * end `tpv0` has 10.99.0.1/24 (so a non-loopback destination exists only there): a
 * simulated guest sends UDP to 10.99.0.1 and to the gateway (the loopback) through
 * the UdpTranslator, once with --outbound-if4 naming a missing interface, once naming
 * `tpv0`, and prints what happened as JSON on standard output.
 *
 * @module
 */

import dgram from "node:dgram";
import { Buffer } from "node:buffer";
import { GuestSender } from "../../../../src/net/guest_sender.ts";
import { UdpTranslator } from "../../../../src/net/udp/translator.ts";
import { TcpTranslator } from "../../../../src/net/tcp/translator.ts";
import { TestGuest } from "../tcp_guest.ts";
import { TEST_GATEWAY4, TEST_GUEST4, TEST_GUEST6, testRules } from "../tcp_plan.ts";

/** The namespace's own non-loopback address (set up by the test), as a number. */
const NAMESPACE_ADDRESS = 0x0a630001; // 10.99.0.1
/** How long a datagram that should not arrive gets before the fixture moves on. */
const SETTLE_MS = 200;

async function echoServer(address: string) {
  const sock = dgram.createSocket("udp4");
  const seen: string[] = [];
  sock.on("message", (msg, r) => {
    seen.push(msg.toString());
    sock.send(Buffer.concat([Buffer.from("echo:"), msg]), r.port, r.address);
  });
  await new Promise<void>((res) => sock.bind(0, address, res));
  return { sock, port: sock.address().port, seen };
}

/** Sends "wide" to 10.99.0.1 and "loop" to the gateway with --outbound-if4 `ifname`. */
async function run(ifname: string) {
  const rules = testRules(null, { outboundIf4: ifname });
  const sender = new GuestSender(0x9a559a559a55);
  const udp = new UdpTranslator(sender, rules);
  const tcp = new TcpTranslator(sender, rules);
  const guest = new TestGuest(tcp, udp, 4, TEST_GUEST4, TEST_GUEST6);
  sender.setLink(guest);
  const wide = await echoServer("10.99.0.1");
  const loop = await echoServer("127.0.0.1");
  try {
    guest.sendUdp(40001, NAMESPACE_ADDRESS, wide.port, new TextEncoder().encode("wide"));
    const afterWide = { dropped: udp.counters.dropped, toHost: udp.counters.toHost };
    guest.sendUdp(40002, TEST_GATEWAY4, loop.port, new TextEncoder().encode("loop"));
    await guest.until(() => guest.datagrams.length >= 1, 5000, "a first echo");
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    return {
      ...afterWide,
      wideSeen: wide.seen,
      loopSeen: loop.seen,
      echoes: guest.datagrams.map((d) => new TextDecoder().decode(d.data)).sort(),
    };
  } finally {
    wide.sock.close();
    loop.sock.close();
    guest.stop();
    udp.close();
    tcp.close();
  }
}

console.log(JSON.stringify({ missing: await run("tpnosuch0"), present: await run("tpv0") }));
Deno.exit(0);
