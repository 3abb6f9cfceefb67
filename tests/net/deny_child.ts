/**
 * Child process of permission_test.ts: runs the TCP translator under a narrow
 * `--allow-net=127.0.0.1:ALLOWED` and has a scripted guest connect to ALLOWED
 * (must work) and to DENIED (must be answered with a RST, logged once, no crash).
 * Prints "allowed ok" / "denied rst" on stdout; exits 0 on success.
 *
 * @module
 */

import { GuestSender } from "../../src/net/guest_sender.ts";
import { TcpTranslator } from "../../src/net/tcp/translator.ts";
import { TestGuest } from "../support/net/tcp_guest.ts";
import { TEST_GATEWAY4, TEST_GUEST4, TEST_GUEST6, testRules } from "../support/net/tcp_plan.ts";
import { log } from "../../src/log/logger.ts";

const [allowed, denied] = Deno.args.map(Number);
const sender = new GuestSender(0x9a559a559a55);
const tcp = new TcpTranslator(sender, testRules(), { logger: log });
const guest = new TestGuest(tcp, null, 4, TEST_GUEST4, TEST_GUEST6);
sender.setLink(guest);

const a = guest.connect(TEST_GATEWAY4, allowed);
await a.until(() => a.state === "established", 5000, "allowed connection");
console.log("allowed ok");
const d = guest.connect(TEST_GATEWAY4, denied);
await d.until(() => d.gotRst, 5000, "RST for the denied connection");
if (tcp.counters.notPermitted !== 1) throw new Error(`notPermitted = ${tcp.counters.notPermitted}`);
console.log("denied rst");
guest.reset(a);
guest.stop();
tcp.close();
