/**
 * Child process of permission_test.ts: runs the UDP translator (on the helper's
 * sockets, hence --allow-ffi) under a narrow
 * `--allow-net=127.0.0.1:ALLOWED,127.0.0.1:LISTEN` and has a scripted guest send to
 * an echo peer on ALLOWED (must come back) and to DENIED (must be dropped, counted,
 * logged once, no crash), then opens a `-u` style listener on LISTEN (granted) and on
 * LISTEN_DENIED (refused). Prints "allowed ok", "denied dropped", "listen ok" and
 * "listen denied" on stdout; exits 0 on success.
 *
 * @module
 */

import { GuestSender } from "../../src/net/guest_sender.ts";
import { UdpTranslator } from "../../src/net/udp/translator.ts";
import { TcpTranslator } from "../../src/net/tcp/translator.ts";
import { TestGuest } from "../support/net/tcp_guest.ts";
import { TEST_GATEWAY4, TEST_GUEST4, TEST_GUEST6, testRules } from "../support/net/tcp_plan.ts";
import { log } from "../../src/log/logger.ts";

/** Datagrams the guest sends to the denied destination. */
const DENIED_DATAGRAMS = 3;
/** Guest source ports (any free ones: the translator falls back to ephemeral ones). */
const GUEST_PORT_ALLOWED = 41001;
const GUEST_PORT_DENIED = 41002;

const [allowed, denied, listenPort, listenDenied] = Deno.args.map(Number);
const sender = new GuestSender(0x9a559a559a55);
const udp = new UdpTranslator(sender, testRules(), { logger: log });
const tcp = new TcpTranslator(sender, testRules(), { logger: log });
const guest = new TestGuest(tcp, udp, 4, TEST_GUEST4, TEST_GUEST6);
sender.setLink(guest);
const text = (s: string) => new TextEncoder().encode(s);

guest.sendUdp(GUEST_PORT_ALLOWED, TEST_GATEWAY4, allowed, text("to the allowed peer"));
await guest.until(() => guest.datagrams.length === 1, 5000, "the allowed peer's echo");
console.log("allowed ok");

for (let i = 0; i < DENIED_DATAGRAMS; i++) {
  guest.sendUdp(GUEST_PORT_DENIED, TEST_GATEWAY4, denied, text(`denied ${i}`));
}
if (udp.counters.notPermitted !== DENIED_DATAGRAMS) {
  throw new Error(`notPermitted = ${udp.counters.notPermitted}`);
}
// An echo from the denied peer would arrive within this time on loopback.
await new Promise((resolve) => setTimeout(resolve, 200));
if (guest.datagrams.length !== 1) throw new Error("a datagram came back from the denied peer");
console.log("denied dropped");

if (udp.listen("127.0.0.1", listenPort, 5353) !== listenPort) throw new Error("listen port");
console.log("listen ok");
try {
  udp.listen("127.0.0.1", listenDenied, 5354);
  throw new Error(`listening on ${listenDenied} was allowed`);
} catch (error) {
  if (!(error instanceof Deno.errors.NotCapable)) throw error;
  console.log("listen denied");
}
guest.stop();
udp.close();
tcp.close();
