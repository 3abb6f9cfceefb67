/**
 * A connected loopback TCP pair of the helper's sockets, for tests that need the
 * kernel to write through an iovec table into guest memory (a peek into a
 * reservation's table, as the TCP translator does).
 *
 * @module
 */

import assert from "node:assert/strict";
import type { IoVectors } from "../../../ffi/io_vectors.ts";
import { TcpListenSocket, TcpSocket } from "../../../ffi/tcp_socket.ts";

/** A connected loopback TCP pair of the helper's sockets (the receiver peeks into tables). */
export async function loopbackPair(): Promise<
  { sender: TcpSocket; receiver: TcpSocket; close(): void }
> {
  const listener = TcpListenSocket.listen({ address: new Uint8Array([127, 0, 0, 1]), port: 0 });
  const receiver = TcpSocket.connect({
    address: new Uint8Array([127, 0, 0, 1]),
    port: listener.localAddress().port,
  });
  let accepted = listener.accept();
  for (let i = 0; accepted === null && i < 1000; i++) {
    await new Promise((resolve) => setTimeout(resolve, 1));
    accepted = listener.accept();
  }
  listener.close();
  assert.ok(accepted !== null, "the loopback connection was accepted");
  const sender = accepted.socket;
  return {
    sender,
    receiver,
    close() {
      sender.close();
      receiver.close();
    },
  };
}

/** Receives exactly `length` bytes into `vectors` (the loopback may deliver them in parts). */
export async function receiveAll(
  socket: TcpSocket,
  vectors: IoVectors,
  length: number,
): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    const n = socket.receiveVectors(vectors, true);
    if (n === length) break;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  assert.equal(socket.discard(length), length);
}
