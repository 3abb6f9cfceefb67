/**
 * The host→guest TCP data path of one frame, in one process and without QEMU: a
 * frame is reserved in a vhost-user RX ring whose guest posts 4 KiB buffers (as a
 * Linux guest does under MRG_RXBUF: ~16 chains per 64 KiB frame), the bytes are
 * peeked from a real loopback TCP socket straight into it (the helper's recvmsg with
 * MSG_PEEK and SO_PEEK_OFF), the frame committed, and the acknowledged bytes
 * discarded every few frames. Prints user and system CPU microseconds per frame:
 * the user part is the JavaScript per frame and per chain, which is what this bench
 * is for (the system part is mostly the kernel's copy).
 *
 *   deno run -A bench/rx_reserve_bench.ts            # 20000 frames of 65480 bytes
 *   TPASST_BENCH_FRAMES=50000 deno run -A bench/rx_reserve_bench.ts
 *
 * @module
 */

import process from "node:process";
import { TcpListenSocket, TcpSocket } from "../ffi/tcp_socket.ts";
import { EventLoop } from "../src/loop/event_loop.ts";
import { nativeHostTcp } from "../src/net/tcp/host_socket.ts";
import { newFrameSpace, SendResult } from "../src/tap/frame_transport.ts";
import { RecordingHandler } from "../src/tap/testing_frame_handler.ts";
import { VhostUserLink } from "../src/tap/vhost_user_link.ts";
import { ArrayGuestMemory } from "../src/virtio/array_guest_memory.ts";
import { SplitRingDriver } from "../src/virtio/split_ring_driver.ts";

const FRAMES = Number(Deno.env.get("TPASST_BENCH_FRAMES") ?? "20000");
/** Guest RX buffer size (Linux's mergeable buffers are about a page). */
const BUFFER_BYTES = 4096;
const RING_SIZE = 256;
/** Ethernet + IPv4 + TCP headers in front of the payload. */
const HEADERS = 54;
const PAYLOAD = 65480 - 40;
/** Frames between discards (a guest ACK every few segments). */
const FRAMES_PER_ACK = 4;

const memory = new ArrayGuestMemory();
const rx = new SplitRingDriver({
  size: RING_SIZE,
  index: 0,
  features: { mergeableRxBuffers: true, guestChecksum: true },
  memory,
  base: 0x10_0000,
  dataBytes: RING_SIZE * BUFFER_BYTES + 4096,
});
const tx = new SplitRingDriver({ size: 16, index: 1, memory, base: 0x1000_0000 });
const link = new VhostUserLink(new RecordingHandler());
link.startVring(rx.vring(), 0);
link.startVring(tx.vring(), 0);
const buffers: number[] = [];
for (let i = 0; i < RING_SIZE; i++) buffers.push(rx.alloc(BUFFER_BYTES));
const free = [...buffers];
const headAddress = new Map<number, number>();
function post(): void {
  while (free.length > 0) {
    const addr = free.pop()!;
    const head = rx.addChain([{ addr, length: BUFFER_BYTES, writable: true }]);
    if (head === null) {
      free.push(addr);
      return;
    }
    headAddress.set(head, addr);
  }
}
function reclaim(): void {
  for (const used of rx.takeUsed()) free.push(headAddress.get(used.id)!);
}

// A loopback connection: the sender keeps the receiver's queue full.
const listener = TcpListenSocket.listen({ address: new Uint8Array([127, 0, 0, 1]), port: 0 });
const loop = new EventLoop();
const hostTcp = nativeHostTcp(loop);
const connection = hostTcp.connect("127.0.0.1", listener.localAddress().port);
let accepted = null;
while ((accepted = listener.accept()) === null) await new Promise((r) => setTimeout(r, 1));
const sender: TcpSocket = accepted.socket;
const chunk = new Uint8Array(256 * 1024).fill(0x5a);
function fill(): void {
  while (sender.send(chunk) > 0) { /* until the buffers are full */ }
}

const space = newFrameSpace();
let peekOffset = 0;
let user = 0;
let system = 0;
let frames = 0;
let chains = 0;
while (frames < FRAMES) {
  fill();
  post();
  const u0 = process.cpuUsage();
  for (let i = 0; i < FRAMES_PER_ACK; i++) {
    if (link.reserveFrame(space, HEADERS + PAYLOAD, HEADERS) !== SendResult.Sent) break;
    const got = connection.peek(
      peekOffset,
      space,
      HEADERS,
      Math.min(PAYLOAD, space.length - HEADERS),
    );
    if (got <= 0) {
      link.cancelFrame();
      break;
    }
    link.commitFrame(HEADERS + got, 34, 16);
    peekOffset += got;
    frames++;
  }
  connection.discard(peekOffset);
  peekOffset = 0;
  link.flush();
  const u = process.cpuUsage(u0);
  user += u.user;
  system += u.system;
  reclaim();
}
chains = link.counters.rxChains;
console.log(
  `${frames} frames of up to ${PAYLOAD} bytes in ${chains} chains (${
    (chains / frames).toFixed(1)
  } per frame): ` +
    `user ${(user / frames).toFixed(2)} µs, system ${(system / frames).toFixed(2)} µs per frame`,
);
connection.close();
sender.close();
listener.close();
loop.close();
