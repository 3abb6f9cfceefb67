import { assertEquals, assertTrue } from "../../../tests/support/assert.ts";
import { TcpSocket } from "../../../ffi/tcp_socket.ts";
import {
  createTcpSocket,
  getIntOption,
  receiveWithFlags,
  sendBytes,
  setIntOption,
  SO_RCVBUF,
  SO_SNDBUF,
  socketPeerAddress,
  SOL_SOCKET,
  TcpRepairMode,
} from "../../../ffi/tcp_repair.ts";
import { NativeError } from "../../../ffi/native_error.ts";
import {
  closeInRepair,
  createRestoreSocket,
  directRepair,
  dumpRepairSocket,
  restoreRepairSocket,
  type SocketEnds,
} from "./repair.ts";
import { OPTION_TIMESTAMPS, OPTION_WSCALE, type TcpSocketRepairState } from "../migration_state.ts";
import { loopbackListener } from "../../../tests/support/net/tcp_host.ts";

/** TCP_REPAIR needs CAP_NET_ADMIN: these tests run as root only. */
const isRoot = Deno.uid() === 0;

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A pattern byte stream: byte i of a direction is (i * 7 + seed) & 0xff. */
function pattern(from: number, length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = ((from + i) * 7 + seed) & 0xff;
  return out;
}

/** How long {@link readHelper} and {@link writeHelper} wait out a socket that would block. */
const HELPER_IO_LIMIT_MS = 10_000;

/**
 * Moves `length` bytes with `step` (a nonblocking call that returns how many it moved
 * at `done` bytes, or throws EAGAIN), retrying on EAGAIN for at most {@link HELPER_IO_LIMIT_MS}.
 */
async function moveAll(length: number, step: (done: number) => number): Promise<void> {
  let done = 0;
  const deadline = Date.now() + HELPER_IO_LIMIT_MS;
  while (done < length) {
    try {
      done += step(done);
    } catch (error) {
      if (!(error instanceof NativeError && error.errnoName === "EAGAIN")) throw error;
      if (Date.now() > deadline) throw new Error(`timed out after ${done} of ${length} bytes`);
      await delay(2);
    }
  }
}

/** Reads exactly `length` bytes from the nonblocking helper socket `fd` (bounded in time). */
async function readHelper(fd: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  await moveAll(length, (got) => {
    const n = receiveWithFlags(fd, out.subarray(got), 0);
    if (n === 0) throw new Error(`end of stream after ${got} of ${length} bytes`);
    return n;
  });
  return out;
}

/** Writes all of `bytes` to the nonblocking helper socket `fd` (bounded in time). */
function writeHelper(fd: number, bytes: Uint8Array): Promise<void> {
  return moveAll(bytes.length, (at) => sendBytes(fd, bytes.subarray(at)));
}

async function readPeer(conn: Deno.Conn, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let got = 0;
  while (got < length) {
    const n = await conn.read(out.subarray(got));
    if (n === null) throw new Error(`the peer saw the end of stream after ${got} bytes`);
    got += n;
  }
  return out;
}

/** A connected pair: the helper socket (the one that moves) and the peer's Deno connection. */
async function connectedPair() {
  const { listener, port } = loopbackListener();
  const socket = TcpSocket.connect({ address: new Uint8Array([127, 0, 0, 1]), port });
  const peer = await listener.accept();
  listener.close();
  // wait for the connect to complete on our side
  for (let i = 0; i < 500 && socket.takeError() === null; i++) {
    try {
      socketPeerAddress(socket.fd);
      break;
    } catch {
      await delay(2);
    }
  }
  return { socket, peer };
}

/** Runs `body` on a fresh {@link connectedPair}, closing both ends after. */
async function withConnectedPair(
  body: (socket: TcpSocket, peer: Deno.Conn) => Promise<void>,
): Promise<void> {
  const { socket, peer } = await connectedPair();
  try {
    await body(socket, peer);
  } finally {
    socket.close();
    peer.close();
  }
}

/** Puts the helper socket in repair mode and dumps it: its state and its two ends. */
function repairAndDump(socket: TcpSocket): { state: TcpSocketRepairState; ends: SocketEnds } {
  directRepair.set([socket.fd], TcpRepairMode.ON);
  const state = dumpRepairSocket(socket.fd);
  return { state, ends: { local: socket.localAddress(), peer: socketPeerAddress(socket.fd) } };
}

/**
 * Restores `state` onto the new socket `moved` in repair mode, then takes it out of
 * repair mode.
 * @returns what restoreRepairSocket() returns: the end of the send queue still to send
 */
function restoreOnto(moved: number, ends: SocketEnds, state: TcpSocketRepairState): Uint8Array {
  directRepair.set([moved], TcpRepairMode.ON);
  const leftover = restoreRepairSocket(moved, ends, state);
  directRepair.set([moved], TcpRepairMode.OFF);
  return leftover;
}

Deno.test({
  name: "dumpRepairSocket() and restoreRepairSocket() move a live connection to a new socket",
  ignore: !isRoot,
  fn: () =>
    withConnectedPair(async (socket, peer) => {
      const fd = socket.fd;
      let toPeer = 0; // bytes sent so far in each direction, for the patterns
      let fromPeer = 0;
      // Traffic before the move: some of the peer's bytes stay unread in our receive queue.
      await writeHelper(fd, pattern(toPeer, 5000, 1));
      assertEquals(await readPeer(peer, 5000), pattern(toPeer, 5000, 1));
      toPeer += 5000;
      await peer.write(pattern(fromPeer, 3000, 2));
      assertEquals(await readHelper(fd, 1000), pattern(fromPeer, 1000, 2));
      fromPeer += 1000;
      await delay(20); // the other 2000 bytes are in our receive queue now

      const { state, ends } = repairAndDump(socket);
      assertEquals(state.recvQueue, pattern(fromPeer, 2000, 2));
      assertEquals(state.sendQueue.length, 0);
      assertTrue(state.options & OPTION_TIMESTAMPS, "loopback negotiates timestamps");
      assertTrue(state.options & OPTION_WSCALE, "loopback negotiates window scaling");
      assertTrue(state.mss > 0);
      // Closed in repair mode: the peer sees neither FIN nor RST.
      closeInRepair(fd);
      const pendingRead = peer.read(new Uint8Array(1));
      const raced = await Promise.race([pendingRead.then(() => "read"), delay(200)]);
      assertEquals(raced, undefined, "the peer's read must still be waiting");

      const moved = createRestoreSocket(ends, state);
      try {
        restoreOnto(moved, ends, state);
        // The bytes that were queued arrive first on the new socket, then new ones.
        assertEquals(await readHelper(moved, 2000), pattern(fromPeer, 2000, 2));
        fromPeer += 2000;
        // Our direction: the peer's pending 1-byte read takes the first byte.
        const big = pattern(toPeer, 1 << 20, 1);
        const writing = writeHelper(moved, big);
        assertEquals(await pendingRead, 1);
        const rest = await readPeer(peer, big.length - 1);
        await writing;
        assertEquals(rest, big.subarray(1));
        toPeer += big.length;
        // And the peer keeps talking on the same connection.
        const back = pattern(fromPeer, 300_000, 2);
        const peerWriting = peer.write(back).then(async (written) => {
          let at = written;
          while (at < back.length) at += await peer.write(back.subarray(at));
        });
        assertEquals(await readHelper(moved, back.length), back);
        await peerWriting;
      } finally {
        closeInRepair(moved);
      }
    }),
});

Deno.test({
  name:
    "createRestoreSocket() gives a receive queue beyond the default a 4 MiB receive buffer, not one just fitting it, and leaves a small queue's socket autotuned",
  ignore: !isRoot,
  fn: () =>
    withConnectedPair((socket) => {
      const { state, ends } = repairAndDump(socket);
      const receiveBuffer = (queueBytes: number): number => {
        state.recvQueue = new Uint8Array(queueBytes);
        const fd = createRestoreSocket(ends, state);
        try {
          return getIntOption(fd, SOL_SOCKET, SO_RCVBUF);
        } finally {
          closeInRepair(fd);
        }
      };
      // tcp(7): tcp_rmem's middle field is a new socket's autotuned receive buffer.
      const autotunedStart = Number(
        Deno.readTextFileSync("/proc/sys/net/ipv4/tcp_rmem").trim().split(/\s+/)[1],
      );
      assertEquals(receiveBuffer(1000), autotunedStart, "a small queue keeps the default");
      // As root the size is forced (SO_RCVBUFFORCE); socket(7): the kernel doubles it.
      assertEquals(receiveBuffer(200 * 1024), 2 * 4 * 1024 * 1024, "the fixed 4 MiB, doubled");
      const big = 6 * 1024 * 1024;
      assertTrue(receiveBuffer(big) > 2 * big, "a bigger queue gets a buffer it fits in");
      return Promise.resolve();
    }),
});

Deno.test({
  name: "restoreRepairSocket() carries bytes the peer has not acknowledged (send queue)",
  ignore: !isRoot,
  fn: () =>
    withConnectedPair(async (socket, peer) => {
      const fd = socket.fd;
      await writeHelper(fd, pattern(0, 100, 3));
      assertEquals(await readPeer(peer, 100), pattern(0, 100, 3));
      const { state, ends } = repairAndDump(socket);
      closeInRepair(fd);
      // On loopback the peer acknowledges at once, so the dump's send queue is empty;
      // give it bytes as if the old socket had not sent them yet: the new socket must
      // send them first, in order.
      const unsent = pattern(100, 4000, 3);
      state.sendQueue = unsent;
      const moved = createRestoreSocket(ends, state);
      try {
        restoreOnto(moved, ends, state);
        assertEquals(await readPeer(peer, 4000), unsent);
        await writeHelper(moved, pattern(4100, 1000, 3));
        assertEquals(await readPeer(peer, 1000), pattern(4100, 1000, 3));
      } finally {
        closeInRepair(moved);
      }
    }),
});

Deno.test({
  name:
    "restoreRepairSocket() fails with EADDRNOTAVAIL while the old socket still holds the connection",
  ignore: !isRoot,
  fn: () =>
    withConnectedPair(async (socket, peer) => {
      const fd = socket.fd;
      const { state, ends } = repairAndDump(socket);
      const moved = createRestoreSocket(ends, state);
      try {
        directRepair.set([moved], TcpRepairMode.ON);
        let error: unknown = null;
        try {
          restoreRepairSocket(moved, ends, state);
        } catch (e) {
          error = e;
        }
        assertTrue(error instanceof NativeError, String(error));
        assertTrue(
          ["EADDRNOTAVAIL", "EADDRINUSE"].includes((error as NativeError).errnoName),
          String(error),
        );
      } finally {
        closeInRepair(moved);
      }
      // Back to work: the old socket leaves repair mode and carries on.
      directRepair.set([fd], TcpRepairMode.OFF);
      await writeHelper(fd, pattern(0, 10, 4));
      assertEquals(await readPeer(peer, 10), pattern(0, 10, 4));
    }),
});

Deno.test({
  name:
    "restoreRepairSocket() returns the end of a send queue its buffer cannot hold, to be sent after repair mode",
  ignore: !isRoot,
  fn: () =>
    withConnectedPair(async (socket, peer) => {
      const fd = socket.fd;
      const { state, ends } = repairAndDump(socket);
      closeInRepair(fd);
      const queued = pattern(0, 2 << 20, 5);
      state.sendQueue = queued;
      // a socket whose send buffer is small, as without CAP_NET_ADMIN past wmem_max
      const moved = createTcpSocket(4);
      try {
        setIntOption(moved, SOL_SOCKET, SO_SNDBUF, 64 * 1024);
        const leftover = restoreOnto(moved, ends, state);
        assertTrue(leftover.length > 0 && leftover.length < queued.length, `${leftover.length}`);
        const reading = readPeer(peer, queued.length);
        await writeHelper(moved, leftover);
        assertEquals(await reading, queued);
      } finally {
        closeInRepair(moved);
      }
    }),
});
