/**
 * Run by tests/net/counter_shape_test.ts in a process of its own with
 * `--v8-flags=--allow-natives-syntax`: pushes each datapath byte counter past 2^31
 * (beyond V8's small integers) and prints, as one JSON line, whether the object that
 * holds it kept the shape (V8 map) of one of its kind that never counted. A number
 * field would change representation there and deoptimise every function that had
 * seen the old shape.
 *
 * @module
 */

import { TcpFlow } from "../../../src/net/tcp/flow.ts";
import { GuestSender } from "../../../src/net/guest_sender.ts";
import { NetworkStack } from "../../../src/net/stack.ts";
import { UdpFlow } from "../../../src/net/udp/translator.ts";
import { TcpTranslator } from "../../../src/net/tcp/translator.ts";
import { testRules } from "./tcp_plan.ts";
import { RecordingLink } from "./recording_link.ts";
import { dualStackPlan } from "./built_plan.ts";

/** V8's own test of two objects' hidden classes; the syntax reaches V8 unparsed this way. */
const haveSameMap = new Function("a", "b", "return %HaveSameMap(a, b);") as (
  a: object,
  b: object,
) => boolean;

/** Past the largest small integer V8 keeps in a field with or without pointer compression. */
const PAST_SMALL_INTEGERS = 2 ** 31 + 1;
/** The largest frame GuestSender builds, sent over and over. */
const FRAME_BYTES = 65_535;
/** An EtherType no handler takes: the stack counts the frame's bytes, then drops it. */
const UNKNOWN_ETHERTYPE = 0x88b5;

/** A flow of `kind` whose two counts passed 2^31 keeps the shape of one that counted nothing. */
function flowKeepsShape(kind: new () => TcpFlow | UdpFlow): boolean {
  const untouched = new kind();
  const counted = new kind();
  counted.bytesFromGuest += PAST_SMALL_INTEGERS;
  counted.bytesToGuest += PAST_SMALL_INTEGERS;
  return counted.bytesFromGuest === PAST_SMALL_INTEGERS &&
    counted.bytesToGuest === PAST_SMALL_INTEGERS && haveSameMap(untouched, counted);
}

/** The TCP translator's counters: the guest bytes its host sockets refused are a byte count. */
function tcpCounters(): boolean {
  const untouched = new TcpTranslator(new GuestSender(0x9a559a559a55), testRules());
  const counted = new TcpTranslator(new GuestSender(0x9a559a559a55), testRules());
  try {
    counted.counters.hostBackpressure += PAST_SMALL_INTEGERS;
    return counted.counters.hostBackpressure === PAST_SMALL_INTEGERS &&
      haveSameMap(untouched.counters, counted.counters);
  } finally {
    untouched.close();
    counted.close();
  }
}

function guestSender(): boolean {
  const untouched = new GuestSender(0x9a559a559a55);
  const counted = new GuestSender(0x9a559a559a55);
  const link = new RecordingLink();
  counted.setLink(link);
  let sent = 0;
  while (sent < PAST_SMALL_INTEGERS) {
    counted.sendEthernet(UNKNOWN_ETHERTYPE, FRAME_BYTES);
    link.take();
    sent += FRAME_BYTES;
  }
  return counted.bytesSent === sent && haveSameMap(untouched, counted);
}

function networkStack(): boolean {
  const untouched = new NetworkStack(dualStackPlan());
  const counted = new NetworkStack(dualStackPlan());
  const frame = new Uint8Array(FRAME_BYTES);
  frame[12] = UNKNOWN_ETHERTYPE >> 8;
  frame[13] = UNKNOWN_ETHERTYPE & 0xff;
  let received = 0;
  while (received < PAST_SMALL_INTEGERS) {
    counted.handleFrame(frame, 0);
    received += FRAME_BYTES;
  }
  return counted.bytesFromGuest === received && haveSameMap(untouched, counted);
}

console.log(JSON.stringify({
  tcpFlow: flowKeepsShape(TcpFlow),
  udpFlow: flowKeepsShape(UdpFlow),
  tcpCounters: tcpCounters(),
  guestSender: guestSender(),
  networkStack: networkStack(),
}));
