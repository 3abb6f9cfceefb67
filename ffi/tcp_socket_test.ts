import assert from "node:assert/strict";
import { Errno, NativeError } from "./native_error.ts";
import { openFdCount } from "./process.ts";
import { IoVectors } from "./io_vectors.ts";
import { setListenFreebind, TcpListenSocket, TcpSocket, WOULD_BLOCK } from "./tcp_socket.ts";
import { addressText } from "./ip_address_text.ts";

const LOOPBACK4 = new Uint8Array([127, 0, 0, 1]);
const LOOPBACK4_OTHER = new Uint8Array([127, 0, 0, 2]);
const LOOPBACK6 = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);

/** How long the polling helpers wait for something the kernel does on loopback at once. */
const POLL_LIMIT_MS = 2000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `attempt` every few ms until it returns non-null; fails after POLL_LIMIT_MS. */
async function pollFor<T>(attempt: () => T | null, what: string): Promise<T> {
  const deadline = performance.now() + POLL_LIMIT_MS;
  for (;;) {
    const value = attempt();
    if (value !== null) return value;
    if (performance.now() > deadline) throw new Error(`no ${what} within ${POLL_LIMIT_MS} ms`);
    await sleep(2);
  }
}

function acceptOne(listener: TcpListenSocket) {
  return pollFor(() => listener.accept(), "connection to accept");
}

/** Receives until `count` bytes arrived (or end of stream). */
async function receiveExactly(socket: TcpSocket, count: number): Promise<Uint8Array> {
  const out = new Uint8Array(count);
  let got = 0;
  while (got < count) {
    const n = await pollFor(() => {
      const r = socket.receive(out.subarray(got));
      return r === WOULD_BLOCK ? null : r;
    }, `${count - got} more bytes`);
    if (n === 0) break;
    got += n;
  }
  return out.subarray(0, got);
}

/** A listener on `address` port 0, a client connected to it and the accepted server side. */
async function connectedPair(address: Uint8Array, source: Uint8Array | null = null) {
  const listener = TcpListenSocket.listen({ address, port: 0 });
  const port = listener.localAddress().port;
  const client = TcpSocket.connect({ address, port }, { address: source });
  const accepted = await acceptOne(listener);
  return { listener, port, client, server: accepted.socket, peer: accepted.peer };
}

function closeAll(...sockets: { close(): void }[]): void {
  for (const s of sockets) s.close();
}

/** Whether ::1 is usable here (an IPv6-less kernel or container has none). */
const ipv6Loopback = (() => {
  try {
    TcpListenSocket.listen({ address: LOOPBACK6, port: 0 }).close();
    return true;
  } catch {
    return false;
  }
})();

const text = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("`TcpSocket.connect()` reaches a `TcpListenSocket` on 127.0.0.1 and bytes flow both ways", async () => {
  const before = openFdCount();
  const { listener, port, client, server, peer } = await connectedPair(LOOPBACK4);
  assert.equal(client.takeError(), null);
  assert.ok(port > 0, `kernel chose port ${port}`);
  const local = client.localAddress();
  assert.deepEqual([...local.address], [127, 0, 0, 1]);
  assert.deepEqual([...peer.address], [127, 0, 0, 1]);
  assert.equal(peer.port, local.port, "accept() reports the client's port");
  assert.deepEqual(listener.localAddress(), { address: LOOPBACK4, port });

  assert.equal(client.send(text("hello server")), 12);
  assert.equal(decode(await receiveExactly(server, 12)), "hello server");
  assert.equal(server.send(text("hello client!")), 13);
  assert.equal(decode(await receiveExactly(client, 13)), "hello client!");

  closeAll(client, server, listener);
  assert.equal(client.fd, -1);
  assert.equal(listener.fd, -1);
  assert.equal(openFdCount(), before);
});

Deno.test({
  name: "`TcpSocket.connect()` reaches a `TcpListenSocket` on ::1 and bytes flow both ways" +
    (ipv6Loopback ? "" : " (ignored: no ::1 here)"),
  ignore: !ipv6Loopback,
  async fn() {
    const before = openFdCount();
    const { listener, port, client, server, peer } = await connectedPair(LOOPBACK6);
    assert.equal(client.takeError(), null);
    const local = client.localAddress();
    assert.deepEqual(local.address, LOOPBACK6);
    assert.deepEqual(peer, { address: LOOPBACK6, port: local.port });
    assert.deepEqual(listener.localAddress(), { address: LOOPBACK6, port });

    assert.equal(client.send(text("v6 up")), 5);
    assert.equal(decode(await receiveExactly(server, 5)), "v6 up");
    assert.equal(server.send(text("v6 down")), 7);
    assert.equal(decode(await receiveExactly(client, 7)), "v6 down");

    closeAll(client, server, listener);
    assert.equal(openFdCount(), before);
  },
});

Deno.test("`TcpSocket.receive()` gives WOULD_BLOCK with nothing pending and 0 after the peer's shutdownWrite()", async () => {
  const before = openFdCount();
  const { listener, client, server } = await connectedPair(LOOPBACK4);
  const buf = new Uint8Array(64);
  assert.equal(client.receive(buf), WOULD_BLOCK);
  assert.equal(server.receive(buf), WOULD_BLOCK);

  server.send(text("last words"));
  server.shutdownWrite();
  // The data comes first, then the end of stream, and the end stays.
  assert.equal(decode(await receiveExactly(client, 10)), "last words");
  const eof = await pollFor(() => {
    const n = client.receive(buf);
    return n === WOULD_BLOCK ? null : n;
  }, "end of stream");
  assert.equal(eof, 0);
  assert.equal(client.receive(buf), 0);

  // Half-closed: the other direction still works.
  assert.equal(client.send(text("still here")), 10);
  assert.equal(decode(await receiveExactly(server, 10)), "still here");

  closeAll(client, server, listener);
  assert.equal(openFdCount(), before);
});

Deno.test("`TcpSocket.receive()` throws NativeError ECONNRESET after the peer's closeWithReset()", async () => {
  const before = openFdCount();
  const { listener, client, server } = await connectedPair(LOOPBACK4);
  server.closeWithReset();
  assert.equal(server.fd, -1);
  const buf = new Uint8Array(64);
  const error = await pollFor(() => {
    try {
      const n = client.receive(buf);
      if (n === WOULD_BLOCK) return null;
      return new Error(`receive() returned ${n} instead of throwing ECONNRESET`);
    } catch (error) {
      return error as Error;
    }
  }, "reset");
  assert.ok(error instanceof NativeError, String(error));
  assert.equal(error.errno, Errno.ECONNRESET);
  assert.equal(error.errnoName, "ECONNRESET");
  assert.match(error.message, /^recv\(socket \d+\) failed: ECONNRESET$/);

  // The reset is taken; a send on the dead connection fails as well.
  assert.throws(() => client.send(text("anyone?")), (e: unknown) => {
    assert.ok(e instanceof NativeError, String(e));
    assert.ok(e.errno === Errno.EPIPE || e.errno === Errno.ECONNRESET, e.message);
    return true;
  });
  closeAll(client, listener);
  assert.equal(openFdCount(), before);
});

Deno.test("`TcpSocket.send()` throws EPIPE or ECONNRESET once the peer reset the connection", async () => {
  const before = openFdCount();
  const { listener, client, server } = await connectedPair(LOOPBACK4);
  server.closeWithReset();
  // Send without receiving first: until the RST arrives a byte may still go out (and
  // is answered with another RST); after it, send is refused.
  const buf = new Uint8Array(1);
  await pollFor(() => {
    try {
      const n = client.send(text("x"));
      assert.notEqual(n, WOULD_BLOCK);
      return null; // not reset yet: the byte went out (the RST will answer it)
    } catch (error) {
      assert.ok(error instanceof NativeError, String(error));
      assert.ok(
        error.errno === Errno.EPIPE || error.errno === Errno.ECONNRESET,
        error.message,
      );
      return true;
    }
  }, "send refused after the reset");
  // Still refused afterwards, and receive says the connection is gone (0 or ECONNRESET).
  assert.throws(() => client.send(text("again")), NativeError);
  try {
    const n = client.receive(buf);
    assert.notEqual(n, WOULD_BLOCK);
    assert.equal(n, 0);
  } catch (error) {
    assert.ok(error instanceof NativeError && error.errno === Errno.ECONNRESET, String(error));
  }
  closeAll(client, listener);
  assert.equal(openFdCount(), before);
});

Deno.test("`TcpSocket.takeError()` reports ECONNREFUSED for a connect to a closed port", async () => {
  const before = openFdCount();
  // A port that was just free: listen on port 0, note it, stop listening.
  const probe = TcpListenSocket.listen({ address: LOOPBACK4, port: 0 });
  const port = probe.localAddress().port;
  probe.close();

  let error: NativeError | null;
  let socket: TcpSocket | null = null;
  try {
    socket = TcpSocket.connect({ address: LOOPBACK4, port });
    const s = socket;
    error = await pollFor(() => s.takeError(), "connect outcome");
    // Taken: SO_ERROR is clear now.
    assert.equal(s.takeError(), null);
  } catch (thrown) {
    // The kernel may also refuse the connect within the call itself.
    assert.ok(thrown instanceof NativeError, String(thrown));
    error = thrown;
  }
  assert.ok(error instanceof NativeError);
  assert.equal(error.errno, Errno.ECONNREFUSED);
  socket?.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`TcpSocket.connect()` binds the source address it is given (127.0.0.2)", async () => {
  const before = openFdCount();
  const { listener, client, server, peer } = await connectedPair(LOOPBACK4, LOOPBACK4_OTHER);
  assert.deepEqual([...peer.address], [127, 0, 0, 2]);
  assert.deepEqual([...client.localAddress().address], [127, 0, 0, 2]);
  assert.equal(client.localAddress().port, peer.port);
  closeAll(client, server, listener);

  // Without a source the kernel picks 127.0.0.1 for 127.0.0.1.
  const plain = await connectedPair(LOOPBACK4);
  assert.deepEqual([...plain.peer.address], [127, 0, 0, 1]);
  closeAll(plain.client, plain.server, plain.listener);
  assert.equal(openFdCount(), before);
});

Deno.test("`TcpSocket.connect()` throws RangeError for a source of another family, bad lengths and ports", () => {
  const before = openFdCount();
  assert.throws(
    () => TcpSocket.connect({ address: LOOPBACK4, port: 9 }, { address: LOOPBACK6 }),
    (e: unknown) => e instanceof RangeError && /another family/.test(e.message),
  );
  assert.throws(
    () => TcpSocket.connect({ address: LOOPBACK6, port: 9 }, { address: LOOPBACK4 }),
    RangeError,
  );
  for (const length of [0, 3, 5, 15, 17]) {
    assert.throws(
      () => TcpSocket.connect({ address: new Uint8Array(length), port: 9 }),
      (e: unknown) => e instanceof RangeError && new RegExp(`got ${length}$`).test(e.message),
      `address of ${length} bytes`,
    );
    assert.throws(
      () => TcpListenSocket.listen({ address: new Uint8Array(length), port: 0 }),
      RangeError,
      `listen address of ${length} bytes`,
    );
  }
  for (const port of [-1, 65536, 1.5, NaN]) {
    assert.throws(
      () => TcpSocket.connect({ address: LOOPBACK4, port }),
      (e: unknown) => e instanceof RangeError && /is not 0\.\.65535/.test(e.message),
      `port ${port}`,
    );
    assert.throws(
      () => TcpListenSocket.listen({ address: LOOPBACK4, port }),
      RangeError,
      `listen port ${port}`,
    );
  }
  assert.throws(
    () => TcpSocket.connect({ address: LOOPBACK4, port: 9 }, { interfaceName: "l\0o" }),
    RangeError,
  );
  // Nothing was opened by the refused calls.
  assert.equal(openFdCount(), before);
});

Deno.test("`TcpListenSocket.listen()` twice on one port throws NativeError EADDRINUSE", () => {
  const before = openFdCount();
  const first = TcpListenSocket.listen({ address: LOOPBACK4, port: 0 });
  const port = first.localAddress().port;
  assert.throws(
    () => TcpListenSocket.listen({ address: LOOPBACK4, port }),
    (e: unknown) => {
      assert.ok(e instanceof NativeError, String(e));
      assert.equal(e.errno, Errno.EADDRINUSE);
      assert.equal(e.message, `listen on 127.0.0.1 port ${port} failed: EADDRINUSE`);
      return true;
    },
  );
  // The refused attempt closed its socket; the first listener still works.
  assert.equal(openFdCount(), before + 1);
  assert.equal(first.accept(), null);
  first.close();
  // Once closed, the port is free again.
  const again = TcpListenSocket.listen({ address: LOOPBACK4, port });
  assert.equal(again.localAddress().port, port);
  again.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`TcpSocket.close()` / `closeWithReset()` / `TcpListenSocket.close()` twice are harmless", async () => {
  const before = openFdCount();
  const { listener, client, server } = await connectedPair(LOOPBACK4);
  // An fd opened after the first close may reuse the number: a second close must not hit it.
  client.close();
  const bystander = TcpListenSocket.listen({ address: LOOPBACK4, port: 0 });
  client.close();
  client.closeWithReset();
  server.closeWithReset();
  server.closeWithReset();
  server.close();
  listener.close();
  listener.close();
  // The bystander is intact.
  assert.ok(bystander.localAddress().port > 0);
  assert.equal(bystander.accept(), null);
  bystander.close();

  assert.throws(() => client.receive(new Uint8Array(1)), /it is closed/);
  assert.throws(() => client.send(new Uint8Array(1)), /it is closed/);
  assert.throws(() => client.takeError(), /it is closed/);
  assert.throws(() => client.localAddress(), /it is closed/);
  assert.throws(() => server.shutdownWrite(), /it is closed/);
  assert.throws(() => listener.accept(), /it is closed/);
  assert.throws(() => listener.localAddress(), /it is closed/);
  assert.equal(openFdCount(), before);
});

Deno.test("`TcpSocket.receive()` refuses an empty buffer", async () => {
  const before = openFdCount();
  const { listener, client, server } = await connectedPair(LOOPBACK4);
  server.send(text("x"));
  assert.throws(() => client.receive(new Uint8Array(0)), RangeError);
  // The byte is still there for a real buffer.
  assert.equal(decode(await receiveExactly(client, 1)), "x");
  closeAll(client, server, listener);
  assert.equal(openFdCount(), before);
});

Deno.test("`TcpSocket.connect()` bound to interface lo reaches 127.0.0.1; an unknown interface fails", async () => {
  const before = openFdCount();
  const listener = TcpListenSocket.listen({ address: LOOPBACK4, port: 0 });
  const port = listener.localAddress().port;
  const client = TcpSocket.connect({ address: LOOPBACK4, port }, { interfaceName: "lo" });
  const { socket: server } = await acceptOne(listener);
  assert.equal(client.takeError(), null);
  client.send(text("via lo"));
  assert.equal(decode(await receiveExactly(server, 6)), "via lo");
  closeAll(client, server);

  assert.throws(
    () => TcpSocket.connect({ address: LOOPBACK4, port }, { interfaceName: "tpnosuch0" }),
    (e: unknown) => {
      assert.ok(e instanceof NativeError, String(e));
      // ENODEV as root (the tests run as root). A kernel that reserves SO_BINDTODEVICE
      // for CAP_NET_RAW would say EPERM for an unprivileged user.
      assert.ok(e.errno === Errno.ENODEV || e.errno === Errno.EPERM, e.message);
      return true;
    },
  );
  // Nothing reached the listener from the refused connect.
  assert.equal(listener.accept(), null);
  listener.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`TcpListenSocket.listen()` bound to interface lo accepts; an unknown interface fails", async () => {
  const before = openFdCount();
  const listener = TcpListenSocket.listen({ address: LOOPBACK4, port: 0 }, "lo");
  const port = listener.localAddress().port;
  const client = TcpSocket.connect({ address: LOOPBACK4, port });
  const { socket: server } = await acceptOne(listener);
  closeAll(client, server, listener);
  assert.throws(
    () => TcpListenSocket.listen({ address: LOOPBACK4, port: 0 }, "tpnosuch0"),
    (e: unknown) =>
      e instanceof NativeError && (e.errno === Errno.ENODEV || e.errno === Errno.EPERM),
  );
  assert.equal(openFdCount(), before);
});

Deno.test("`TcpListenSocket.accept()` returns null when no connection is pending", () => {
  const listener = TcpListenSocket.listen({ address: LOOPBACK4, port: 0 });
  assert.equal(listener.accept(), null);
  assert.equal(listener.accept(), null);
  listener.close();
});

Deno.test("a bad port names the address in RFC 5952 form", () => {
  const address = new Uint8Array([
    0x20,
    0x01,
    0x0d,
    0xb8,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0xab,
    0xcd,
    0,
    1,
  ]);
  assert.throws(
    () => TcpListenSocket.listen({ address, port: 70000 }),
    /^RangeError: Cannot listen on 2001:db8::abcd:1 port 70000: port 70000 is not 0\.\.65535$/,
  );
  assert.throws(
    () => TcpSocket.connect({ address: LOOPBACK6, port: -1 }),
    /Cannot connect to ::1 port -1: port -1 is not 0\.\.65535$/,
  );
});

Deno.test("`TcpSocket.receiveVectors()` peeks into a gather list from the peek offset, `discard()` drops acknowledged bytes, and peeking again from 0 retransmits", async () => {
  const { listener, client, server } = await connectedPair(LOOPBACK4);
  try {
    const data = new Uint8Array(6000).map((_, i) => (i * 7 + 3) & 0xff);
    assert.equal(client.send(data), data.length);
    const queues = { sendQueued: 0, receiveQueued: 0, sendBuffer: 0 };
    await pollFor(() => {
      server.queues(queues);
      return queues.receiveQueued === data.length ? true : null;
    }, "6000 queued bytes");
    assert.ok(server.setPeekOffset(0), "this kernel's TCP has SO_PEEK_OFF");
    // Two views of one large buffer, as a frame's payload spread over guest buffers.
    const memory = new Uint8Array(65536);
    const iov = new IoVectors(4);
    iov.push(memory.subarray(100, 1100));
    iov.push(memory.subarray(5000, 6000));
    assert.equal(server.receiveVectors(iov, true), 2000);
    assert.deepEqual(memory.subarray(100, 1100), data.subarray(0, 1000));
    assert.deepEqual(memory.subarray(5000, 6000), data.subarray(1000, 2000));
    // The next peek continues where the last one ended.
    iov.clear();
    iov.push(memory.subarray(20000, 23000));
    assert.equal(server.receiveVectors(iov, true), 3000);
    assert.deepEqual(memory.subarray(20000, 23000), data.subarray(2000, 5000));
    // Nothing was dequeued.
    server.queues(queues);
    assert.equal(queues.receiveQueued, data.length);
    // The peer acknowledged 1500 bytes: they are dropped without a copy, and the peek
    // offset moves back with them.
    assert.equal(server.discard(1500), 1500);
    server.queues(queues);
    assert.equal(queues.receiveQueued, data.length - 1500);
    iov.clear();
    iov.push(memory.subarray(30000, 32000));
    assert.equal(server.receiveVectors(iov, true), 1000, "only the 1000 bytes never peeked");
    assert.deepEqual(memory.subarray(30000, 31000), data.subarray(5000, 6000));
    assert.equal(server.receiveVectors(iov, true), WOULD_BLOCK);
    // Retransmission: peek again from the acknowledged edge.
    assert.ok(server.setPeekOffset(0));
    iov.clear();
    iov.push(memory.subarray(40000, 41000));
    assert.equal(server.receiveVectors(iov, true), 1000);
    assert.deepEqual(memory.subarray(40000, 41000), data.subarray(1500, 2500));
    // End of stream: a peek past the queued bytes after the peer's FIN returns 0.
    client.shutdownWrite();
    assert.ok(server.setPeekOffset(data.length - 1500));
    await pollFor(() => {
      const n = server.receiveVectors(iov, true);
      return n === WOULD_BLOCK ? null : n;
    }, "end of stream");
    assert.equal(server.discard(data.length), data.length - 1500);
  } finally {
    closeAll(client, server, listener);
  }
});

Deno.test("`TcpSocket.sendVectors()` sends a gather list in order and `queues()` reports the send buffer", async () => {
  const { listener, client, server } = await connectedPair(LOOPBACK4);
  try {
    const a = new Uint8Array(3000).fill(1);
    const b = new Uint8Array(500).fill(2);
    const iov = new IoVectors(2);
    iov.push(a);
    iov.push(b, 200);
    assert.equal(iov.totalBytes, 3200);
    assert.equal(client.sendVectors(iov), 3200);
    const got = await receiveExactly(server, 3200);
    assert.deepEqual(got.subarray(0, 3000), a);
    assert.deepEqual(got.subarray(3000), b.subarray(0, 200));
    const queues = { sendQueued: -1, receiveQueued: -1, sendBuffer: 0 };
    client.queues(queues);
    assert.equal(queues.sendQueued, 0, "everything was acknowledged on loopback");
    assert.ok(queues.sendBuffer > 0);
    assert.throws(() => iov.push(a), RangeError);
  } finally {
    closeAll(client, server, listener);
  }
});

Deno.test("`TcpSocket.setBuffers()` sets the send buffer (doubled by the kernel) and 0 leaves one alone", async () => {
  const { listener, client, server } = await connectedPair(LOOPBACK4);
  try {
    const queues = { sendQueued: 0, receiveQueued: 0, sendBuffer: 0 };
    client.queues(queues);
    const before = queues.sendBuffer;
    client.setBuffers(0, 0);
    client.queues(queues);
    assert.equal(queues.sendBuffer, before, "0 changes nothing");
    client.setBuffers(0, 65536);
    client.queues(queues);
    assert.equal(queues.sendBuffer, 2 * 65536, "socket(7): the kernel doubles the value");
  } finally {
    closeAll(client, server, listener);
  }
});

Deno.test("TcpListenSocket.listen() binds an address the host lacks only with freebind", () => {
  // 192.0.2.77 (TEST-NET-1, RFC 5737) is configured nowhere here; nothing is sent.
  const absent = new Uint8Array([192, 0, 2, 77]);
  assert.throws(
    () => TcpListenSocket.listen({ address: absent, port: 0 }),
    (e: unknown) => e instanceof NativeError && e.errno === Errno.EADDRNOTAVAIL,
  );
  TcpListenSocket.listen({ address: absent, port: 0 }, null, 128, true).close();
  setListenFreebind(true);
  try {
    const listener = TcpListenSocket.listen({ address: absent, port: 0 });
    assert.equal(addressText(listener.localAddress().address), "192.0.2.77");
    listener.close();
  } finally {
    setListenFreebind(false);
  }
});

Deno.test("`TcpSocket.sendQueued()` reports the unacknowledged and unsent bytes, as queues() does", async () => {
  const { listener, client, server } = await connectedPair(LOOPBACK4);
  try {
    client.setBuffers(0, 65536);
    assert.equal(client.sendQueued(), 0);
    // The server never reads: what its receive window cannot take stays queued here.
    const chunk = new Uint8Array(64 * 1024);
    let sent = 0;
    for (let i = 0; i < 1000; i++) {
      const n = client.send(chunk);
      if (n === WOULD_BLOCK) break;
      sent += n;
    }
    const queues = { sendQueued: -1, receiveQueued: -1, sendBuffer: 0 };
    client.queues(queues);
    assert.ok(queues.sendQueued > 0, "some bytes wait in the send buffer");
    assert.equal(client.sendQueued(), queues.sendQueued);
    assert.ok(client.sendQueued() <= sent);
  } finally {
    closeAll(client, server, listener);
  }
});
