/**
 * Run by translator_test.ts inside a fresh network namespace whose loopback's MTU is
 * 1,280 bytes (runInNetNamespace, tests/support/net_namespace.ts), so that a
 * UDP_SEGMENT message of 1,400-byte segments is refused (EMSGSIZE on Linux 6.18,
 * EINVAL before: a segment plus headers must fit the route's MTU) while a plain
 * 1,400-byte datagram still leaves, fragmented. A simulated guest sends two TX batches
 * of three such datagrams from one flow through the UdpTranslator, then a run of small
 * ones from another guest port, and prints the counters and whether the sink got every
 * datagram in order as JSON on standard output.
 *
 * @module
 */

import { GuestSender } from "../../../../src/net/guest_sender.ts";
import { UdpTranslator } from "../../../../src/net/udp/translator.ts";
import { TcpTranslator } from "../../../../src/net/tcp/translator.ts";
import { UDP_MAX_BATCH, UdpMessageRecords, UdpSocket } from "../../../../ffi/udp_socket.ts";
import { WOULD_BLOCK } from "../../../../ffi/tcp_socket.ts";
import { TestGuest } from "../tcp_guest.ts";
import { TEST_GATEWAY4, TEST_GUEST4, TEST_GUEST6, testRules } from "../tcp_plan.ts";
import { waitUntil } from "../../wait_until.ts";

/** Payload bytes per datagram: more than fits the namespace's loopback MTU (1,280). */
const LARGE_PAYLOAD = 1400;
const LOOPBACK4 = new Uint8Array([127, 0, 0, 1]);
const SLOT_SIZE = 65536;

const sender = new GuestSender(0x9a559a559a55);
const udp = new UdpTranslator(sender, testRules());
const tcp = new TcpTranslator(sender, testRules());
const guest = new TestGuest(tcp, udp, 4, TEST_GUEST4, TEST_GUEST6);
sender.setLink(guest);
const sink = UdpSocket.open(4, { address: LOOPBACK4 });
const sinkPort = sink.localAddress().port;
const buffer = new Uint8Array(SLOT_SIZE * UDP_MAX_BATCH);
const records = new UdpMessageRecords(UDP_MAX_BATCH);
const got: Uint8Array[] = [];

function counters() {
  const c = udp.counters;
  return {
    toHost: c.toHost,
    segmentedSends: c.segmentedSends,
    segmentationOff: c.segmentationOff,
    socketErrors: c.socketErrors,
    dropped: c.dropped,
  };
}

function batch(srcPort: number, payloads: Uint8Array[]): void {
  for (const p of payloads) guest.sendUdpWithoutBatchEnd(srcPort, TEST_GATEWAY4, sinkPort, p);
  udp.endOfBatch(performance.now());
}

try {
  const payloads = Array.from(
    { length: 6 },
    (_, i) => Uint8Array.from({ length: LARGE_PAYLOAD }, (_, k) => (i * 13 + k) & 0xff),
  );
  batch(40001, payloads.slice(0, 3));
  const afterFirst = counters();
  batch(40001, payloads.slice(3));
  const afterSecond = counters();
  await waitUntil("six datagrams at the sink", () => {
    for (;;) {
      const n = sink.receiveBatch(buffer, SLOT_SIZE, records);
      if (n === WOULD_BLOCK) break;
      for (let i = 0; i < n; i++) {
        got.push(buffer.slice(records.offset(i), records.offset(i) + records.length(i)));
      }
    }
    return got.length >= payloads.length;
  }, 5_000);
  const arrivedInOrder = got.length === payloads.length &&
    got.every((g, i) => g.length === LARGE_PAYLOAD && g.every((b, k) => b === payloads[i][k]));
  const before = udp.counters.segmentedSends;
  batch(40002, [new Uint8Array(100), new Uint8Array(100)]);
  const otherPort = { segmentedSends: udp.counters.segmentedSends - before };
  console.log(JSON.stringify({ afterFirst, afterSecond, arrivedInOrder, otherPort }));
} finally {
  sink.close();
  guest.stop();
  udp.close();
  tcp.close();
}
