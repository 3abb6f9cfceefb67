/**
 * Test fixture for ping_socket_test.ts, run inside a fresh network namespace where
 * ping sockets are allowed: pings 127.0.0.1 and ::1 once each and prints the replies
 * as JSON on stdout.
 *
 * @module
 */
import { PingSocket } from "../../../ffi/ping_socket.ts";

const ICMP_ECHO_REQUEST = 8; // RFC 792
const ICMPV6_ECHO_REQUEST = 128; // RFC 4443 §4.1

async function ping(family: 4 | 6): Promise<{ type: number; sequence: number; from: number[] }> {
  const socket = PingSocket.open(family);
  try {
    const request = new Uint8Array(16);
    request[0] = family === 4 ? ICMP_ECHO_REQUEST : ICMPV6_ECHO_REQUEST;
    request[7] = 5; // sequence number 5
    request.set([1, 2, 3, 4], 8);
    const address = family === 4 ? new Uint8Array([127, 0, 0, 1]) : new Uint8Array(16);
    if (family === 6) address[15] = 1;
    if (socket.sendTo(request, address) !== 16) throw new Error("short send");
    const buf = new Uint8Array(64);
    for (let attempt = 0; attempt < 200; attempt++) {
      const reply = socket.receive(buf);
      if (reply !== null) {
        return { type: buf[0], sequence: buf[7], from: [...reply.address] };
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    throw new Error(`no echo reply for IPv${family}`);
  } finally {
    socket.close();
  }
}

console.log(JSON.stringify({ v4: await ping(4), v6: await ping(6) }));
