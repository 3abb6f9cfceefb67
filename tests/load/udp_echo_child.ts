/**
 * A UDP echo peer in a process of its own (the test's process also runs the guest and
 * cannot echo 10,000 datagrams a second besides; node:dgram under Deno echoes a few
 * hundred): the helper's UDP socket (recvmmsg / sendmmsg) on 127.0.0.1 with a 4 MiB
 * receive buffer, polled every millisecond. Prints `port N`, sends every datagram
 * back to its source, and checks each against the load tests' pattern. A line on
 * standard input asks for the tally: it answers `received N corrupt M` and goes on;
 * the end of standard input ends it.
 *
 * Usage: deno run --allow-ffi --allow-read udp_echo_child.ts COUNT SEED
 *
 * @module
 */

import { UDP_MAX_BATCH, UdpMessageRecords, UdpSocket } from "../../ffi/udp_socket.ts";
import { Tally } from "./udp_pattern.ts";
import { WOULD_BLOCK } from "../../ffi/tcp_socket.ts";

/** Receive and send buffers asked for (the kernel caps them at rmem_max / wmem_max). */
const SOCKET_BUFFER = 4 * 1024 * 1024;
/** Room per datagram (the tests send at most 1,436 bytes). */
const SLOT_SIZE = 2048;
/** Pause when nothing is pending. */
const POLL_MS = 1;

const [count, seed] = Deno.args.map(Number);
const tally = new Tally(count, seed);
const socket = UdpSocket.open(4, { address: new Uint8Array([127, 0, 0, 1]) });
socket.setBuffers(SOCKET_BUFFER, SOCKET_BUFFER);
const buffer = new Uint8Array(SLOT_SIZE * UDP_MAX_BATCH);
const records = new UdpMessageRecords(UDP_MAX_BATCH);
let running = true;

const echo = (async () => {
  while (running) {
    const n = socket.receiveBatch(buffer, SLOT_SIZE, records);
    if (n === WOULD_BLOCK) {
      await new Promise((r) => setTimeout(r, POLL_MS));
      continue;
    }
    for (let i = 0; i < n; i++) {
      const at = records.offset(i);
      tally.add(buffer.subarray(at, at + records.length(i)));
    }
    // the records name each datagram's source: sending them answers each peer
    for (let first = 0; first < n;) {
      const sent = socket.sendBatch(buffer, records, n - first, first);
      if (sent === WOULD_BLOCK) break; // dropped, as a busy peer would
      first += sent;
    }
  }
})();

console.log(`port ${socket.localAddress().port}`);
const decoder = new TextDecoder();
for await (const chunk of Deno.stdin.readable) {
  for (const _ of decoder.decode(chunk).split("\n").slice(1)) {
    console.log(`received ${tally.delivered} corrupt ${tally.corrupt}`);
  }
}
running = false;
await echo;
socket.close();
