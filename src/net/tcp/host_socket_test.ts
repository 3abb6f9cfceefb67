import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Errno, NativeError } from "../../../ffi/native_error.ts";
import { openFdCount } from "../../../ffi/process.ts";
import { TcpListenSocket, type TcpSocket, WOULD_BLOCK } from "../../../ffi/tcp_socket.ts";
import {
  EVENT_PEER_CLOSED,
  EVENT_READABLE,
  EVENT_WRITABLE,
  EventLoop,
} from "../../loop/event_loop.ts";
import { type FrameSpace, newFrameSpace } from "../../tap/frame_transport.ts";
import {
  type AcceptedConnection,
  type HostConnection,
  type HostTcp,
  nativeHostTcp,
} from "./host_socket.ts";
import { requireNetPermission } from "../plan/net_permission.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A guard against a wait that never ends (the running loop keeps the test alive, so a
 * lost wake-up would hang instead of failing); not a timing assertion.
 */
const HANG_GUARD_MS = 10_000;

/** Runs `fn` with a running EventLoop and stops and closes the loop afterwards. */
async function withLoop(fn: (loop: EventLoop) => Promise<void>): Promise<void> {
  const loop = new EventLoop();
  const running = loop.run();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`the test did not finish within ${HANG_GUARD_MS} ms`)),
      HANG_GUARD_MS,
    );
  });
  try {
    await Promise.race([fn(loop), hung]);
  } finally {
    clearTimeout(timer);
    loop.stop();
    await running;
    loop.close();
  }
}

/** Connects through `host`; resolves once the loop reports the connect ended well. */
function connect(host: HostTcp, hostname: string, port: number): Promise<HostConnection> {
  try {
    const conn = host.connect(hostname, port);
    return new Promise((resolve, reject) => {
      conn.setHandler(() => {
        conn.setHandler(() => {});
        const error = conn.takeError();
        if (error === null) resolve(conn);
        else {
          conn.close();
          reject(error);
        }
      });
    });
  } catch (error) {
    return Promise.reject(error);
  }
}

/** A frame space over one plain buffer. */
function spaceOf(buffer: Uint8Array): FrameSpace {
  const space = newFrameSpace();
  space.views[0] = buffer;
  space.count = 1;
  space.length = buffer.length;
  return space;
}

/** Peeks (polling) until `count` bytes past `offset` arrived; returns them as text. */
async function peekExactly(conn: HostConnection, offset: number, count: number): Promise<string> {
  const out = new Uint8Array(count);
  let got = 0;
  const deadline = performance.now() + 2000;
  while (got < count) {
    const n = conn.peek(offset + got, spaceOf(out), got, count - got);
    if (n === 0) throw new Error(`end of stream after ${got} of ${count} bytes`);
    if (n > 0) got += n;
    else if (performance.now() > deadline) throw new Error(`only ${got} of ${count} bytes`);
    else await sleep(2);
  }
  return decoder.decode(out);
}

/** Reads from a Deno connection until `count` bytes arrived. */
async function connReadExactly(conn: Deno.Conn, count: number): Promise<string> {
  const out = new Uint8Array(count);
  let got = 0;
  while (got < count) {
    const n = await conn.read(out.subarray(got));
    if (n === null) throw new Error(`end of stream after ${got} of ${count} bytes`);
    got += n;
  }
  return decoder.decode(out);
}

/** A Deno.listen server on 127.0.0.1 port 0. */
function denoServer(hostname = "127.0.0.1") {
  const listener = Deno.listen({ hostname, port: 0, transport: "tcp" });
  return { listener, port: (listener.addr as Deno.NetAddr).port };
}

/** Accepts one connection on a helper listener, polling. */
async function acceptPolling(listener: TcpListenSocket): Promise<TcpSocket> {
  const deadline = performance.now() + 2000;
  for (;;) {
    const accepted = listener.accept();
    if (accepted !== null) return accepted.socket;
    if (performance.now() > deadline) throw new Error("no connection within 2000 ms");
    await sleep(2);
  }
}

/** A port nothing listens on right now (it was free a moment ago). */
function closedPort(): number {
  const probe = TcpListenSocket.listen({ address: new Uint8Array([127, 0, 0, 1]), port: 0 });
  const port = probe.localAddress().port;
  probe.close();
  return port;
}

const ipv6Loopback = (() => {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
})();

const dualStack = ipv6Loopback && (() => {
  try {
    return Deno.readTextFileSync("/proc/sys/net/ipv6/bindv6only").trim() === "0";
  } catch {
    return false;
  }
})();

Deno.test("`nativeHostTcp().connect()` reaches a Deno.listen server: sends, peeks at offsets, discards, sees the FIN", async () => {
  const before = openFdCount();
  const { listener, port } = denoServer();
  await withLoop(async (loop) => {
    const accepted = listener.accept();
    const conn = await connect(nativeHostTcp(loop), "127.0.0.1", port);
    const peer = await accepted;
    assert.equal(loop.size, 1, "the socket is watched");
    assert.equal(conn.send(encoder.encode("ping")), 4);
    assert.equal(await connReadExactly(peer, 4), "ping");
    await peer.write(encoder.encode("hello, guest"));
    assert.equal(await peekExactly(conn, 0, 5), "hello");
    assert.equal(await peekExactly(conn, 7, 5), "guest", "a peek at an offset");
    assert.equal(await peekExactly(conn, 0, 5), "hello", "peeking again: a retransmission");
    conn.discard(7); // the guest acknowledged "hello, "
    assert.equal(await peekExactly(conn, 0, 5), "guest");
    const none = new Uint8Array(8);
    assert.equal(conn.peek(5, spaceOf(none), 0, 8), WOULD_BLOCK);
    peer.close();
    const deadline = performance.now() + 2000;
    let n = WOULD_BLOCK;
    while (n === WOULD_BLOCK && performance.now() < deadline) {
      await sleep(2);
      n = conn.peek(5, spaceOf(none), 0, 8);
    }
    assert.equal(n, 0, "end of stream after the queued bytes");
    conn.close();
    conn.close(); // harmless
    assert.equal(loop.size, 0);
  });
  listener.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`HostConnection.send()` moves more than both sockets' buffers hold through partial sends and writable events while the peer reads slowly", async () => {
  const { listener, port } = denoServer();
  await withLoop(async (loop) => {
    const accepted = listener.accept();
    const conn = await connect(nativeHostTcp(loop), "127.0.0.1", port);
    const peer = await accepted;
    // More than our send buffer and the peer's largest receive buffer (tcp_rmem's
    // maximum) together, so the sender must meet a full buffer whatever the timing.
    const atConnect = { sendQueued: 0, receiveQueued: 0, sendBuffer: 0 };
    conn.queues(atConnect);
    const receiveMax = Number(
      Deno.readTextFileSync("/proc/sys/net/ipv4/tcp_rmem").trim().split(/\s+/)[2],
    );
    const size = Math.max(8 << 20, atConnect.sendBuffer + receiveMax + (1 << 20));
    const data = new Uint8Array(size).map((_, i) => (i * 31) & 0xff);
    const want = createHash("sha256").update(data).digest("hex");
    const reading = (async () => {
      const hash = createHash("sha256");
      const buf = new Uint8Array(64 * 1024);
      let got = 0;
      while (got < data.length) {
        const n = await peer.read(buf);
        if (n === null) break;
        hash.update(buf.subarray(0, n));
        got += n;
        await sleep(0);
      }
      return hash.digest("hex");
    })();
    let writable = 0;
    let wake: (() => void) | null = null;
    conn.setHandler((events) => {
      if (events & EVENT_WRITABLE) {
        writable++;
        wake?.();
      }
    });
    let off = 0;
    let blocked = 0;
    let bufferSize = 0;
    const queues = { sendQueued: 0, receiveQueued: 0, sendBuffer: 0 };
    while (off < data.length) {
      const n = conn.send(data.subarray(off));
      if (n === WOULD_BLOCK) {
        blocked++;
        conn.queues(queues);
        assert.ok(queues.sendQueued > 0 && queues.sendBuffer > 0, JSON.stringify(queues));
        assert.ok(queues.sendQueued <= 2 * queues.sendBuffer, JSON.stringify(queues));
        if (bufferSize === 0) bufferSize = queues.sendBuffer;
        assert.equal(queues.sendBuffer, bufferSize, "the size set at connect stays");
        const drained = new Promise<void>((resolve) => (wake = resolve));
        conn.requestWritable();
        await drained;
        wake = null;
      } else {
        off += n;
      }
    }
    assert.ok(blocked > 0, "the send buffer filled at least once");
    assert.ok(writable > 0, "the loop reported the drain");
    assert.equal(await reading, want);
    conn.close();
    peer.close();
  });
  listener.close();
});

Deno.test("`HostConnection.wantReadable(false)` stops readable events but not the peer's hang-up; turned on again, queued data is reported at once", async () => {
  const { listener, port } = denoServer();
  await withLoop(async (loop) => {
    const accepted = listener.accept();
    const conn = await connect(nativeHostTcp(loop), "127.0.0.1", port);
    const peer = await accepted;
    const events: number[] = [];
    let waiter: (() => void) | null = null;
    conn.setHandler((e) => {
      events.push(e);
      waiter?.();
    });
    /** Resolves at the next event that has `bit`. */
    const nextEvent = (bit: number) =>
      new Promise<void>((resolve) => {
        waiter = () => {
          if (events.some((e) => e & bit)) resolve();
        };
      });
    conn.wantReadable(false);
    await peer.write(encoder.encode("first"));
    assert.equal(await peekExactly(conn, 0, 5), "first", "the bytes arrived");
    await sleep(20); // turns of the loop in which the arrival's event would come
    assert.equal(events.filter((e) => e & EVENT_READABLE).length, 0, `${events}`);

    const readable = nextEvent(EVENT_READABLE);
    conn.wantReadable(true); // the socket holds data: reported without a new arrival
    await readable;

    conn.wantReadable(false);
    events.length = 0;
    const hangUp = nextEvent(EVENT_PEER_CLOSED);
    peer.close(); // the peer's FIN
    await hangUp;
    assert.equal(events.filter((e) => e & EVENT_READABLE).length, 0, `${events}`);
    conn.close();
  });
  listener.close();
});

Deno.test("`HostConnection.shutdownWrite()` gives the peer end of stream while receiving still works", async () => {
  const { listener, port } = denoServer();
  await withLoop(async (loop) => {
    const accepted = listener.accept();
    const conn = await connect(nativeHostTcp(loop), "127.0.0.1", port);
    const peer = await accepted;
    conn.send(encoder.encode("bye"));
    conn.shutdownWrite();
    assert.equal(await connReadExactly(peer, 3), "bye");
    assert.equal(await peer.read(new Uint8Array(4)), null);
    await peer.write(encoder.encode("still here"));
    assert.equal(await peekExactly(conn, 0, 10), "still here");
    conn.close();
    peer.close();
  });
  listener.close();
});

Deno.test("`HostConnection.reset()` makes the peer's next write fail (a plain close() does not)", async () => {
  const before = openFdCount();
  const { listener, port } = denoServer();
  await withLoop(async (loop) => {
    const host = nativeHostTcp(loop);
    const buf = new Uint8Array(16);
    // Control: after close() (FIN) the peer reads EOF and its first write still succeeds.
    let accepted = listener.accept();
    const closing = await connect(host, "127.0.0.1", port);
    let peer = await accepted;
    closing.close();
    assert.equal(await peer.read(buf), null);
    assert.equal(await peer.write(encoder.encode("late")), 4);
    peer.close();
    // reset(): the peer's read ends (or reports the reset) and its write is refused.
    accepted = listener.accept();
    const resetting = await connect(host, "127.0.0.1", port);
    peer = await accepted;
    resetting.reset();
    assert.equal(loop.size, 0, "reset() unwatches the socket");
    resetting.reset(); // harmless
    resetting.close(); // harmless
    try {
      assert.equal(await peer.read(buf), null);
    } catch (error) {
      assert.ok(error instanceof Deno.errors.ConnectionReset, String(error));
    }
    await assert.rejects(
      peer.write(encoder.encode("late")),
      (e: unknown) =>
        e instanceof Deno.errors.BrokenPipe || e instanceof Deno.errors.ConnectionReset,
    );
    peer.close();
  });
  listener.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`HostConnection.peek()` throws NativeError ECONNRESET after the peer's reset, and send() fails", async () => {
  const before = openFdCount();
  const server = TcpListenSocket.listen({ address: new Uint8Array([127, 0, 0, 1]), port: 0 });
  const port = server.localAddress().port;
  await withLoop(async (loop) => {
    const conn = await connect(nativeHostTcp(loop), "127.0.0.1", port);
    const peer = await acceptPolling(server);
    const events = new Promise<number>((resolve) => conn.setHandler((e) => resolve(e)));
    peer.closeWithReset();
    assert.ok((await events) !== 0, "the loop reports the reset");
    assert.throws(() => conn.peek(0, spaceOf(new Uint8Array(8)), 0, 8), (e: unknown) => {
      assert.ok(e instanceof NativeError, String(e));
      assert.equal(e.errno, Errno.ECONNRESET);
      return true;
    });
    assert.throws(
      () => conn.send(encoder.encode("x")),
      (e: unknown) =>
        e instanceof NativeError && (e.errno === Errno.EPIPE || e.errno === Errno.ECONNRESET),
    );
    conn.close();
    assert.equal(loop.size, 0);
  });
  server.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`nativeHostTcp().connect()` to a closed port ends with ECONNREFUSED from takeError()", async () => {
  const before = openFdCount();
  await withLoop(async (loop) => {
    await assert.rejects(connect(nativeHostTcp(loop), "127.0.0.1", closedPort()), (e: unknown) => {
      assert.ok(e instanceof NativeError, String(e));
      assert.equal(e.errno, Errno.ECONNREFUSED);
      return true;
    });
    assert.equal(loop.size, 0, "the failed socket is no longer watched");
  });
  assert.equal(openFdCount(), before);
});

Deno.test("`nativeHostTcp().connect()` refuses a hostname that is not an address literal", async () => {
  await withLoop((loop) => {
    assert.throws(
      () => nativeHostTcp(loop).connect("localhost", 80),
      /Cannot connect to localhost: not an IPv4 or IPv6 address/,
    );
    assert.equal(loop.size, 0);
    return Promise.resolve();
  });
});

Deno.test("`nativeHostTcp()` binds outbound IPv4 connections to address4 and interface4", async () => {
  const before = openFdCount();
  const { listener, port } = denoServer();
  await withLoop(async (loop) => {
    let accepted = listener.accept();
    const bound = await connect(nativeHostTcp(loop, { address4: "127.0.0.2" }), "127.0.0.1", port);
    let peer = await accepted;
    assert.equal((peer.remoteAddr as Deno.NetAddr).hostname, "127.0.0.2");
    bound.close();
    peer.close();

    accepted = listener.accept();
    const viaLo = await connect(nativeHostTcp(loop, { interface4: "lo" }), "127.0.0.1", port);
    peer = await accepted;
    viaLo.send(encoder.encode("lo"));
    assert.equal(await connReadExactly(peer, 2), "lo");
    viaLo.close();
    peer.close();

    // The IPv6 settings do not apply to an IPv4 destination.
    accepted = listener.accept();
    const v4 = await connect(
      nativeHostTcp(loop, { address6: "::1", interface6: "tpnosuch0" }),
      "127.0.0.1",
      port,
    );
    peer = await accepted;
    assert.equal((peer.remoteAddr as Deno.NetAddr).hostname, "127.0.0.1");
    v4.close();
    peer.close();

    assert.throws(
      () => nativeHostTcp(loop, { interface4: "tpnosuch0" }).connect("127.0.0.1", port),
      (e: unknown) =>
        // ENODEV as root; EPERM where the kernel reserves SO_BINDTODEVICE for CAP_NET_RAW.
        e instanceof NativeError && (e.errno === Errno.ENODEV || e.errno === Errno.EPERM),
    );
    assert.throws(() => nativeHostTcp(loop, { address4: "::1" }), /not an IPv4 address/);
    assert.throws(() => nativeHostTcp(loop, { address6: "127.0.0.1" }), /not an IPv6 address/);
    assert.throws(() => nativeHostTcp(loop, { address4: "localhost" }), /not an IPv4 address/);
    assert.equal(loop.size, 0);
  });
  listener.close();
  assert.equal(openFdCount(), before);
});

Deno.test({
  name: "`nativeHostTcp().connect()` reaches ::1" + (ipv6Loopback ? "" : " (ignored: no ::1 here)"),
  ignore: !ipv6Loopback,
  async fn() {
    const { listener, port } = denoServer("::1");
    await withLoop(async (loop) => {
      for (const hostname of ["::1", "[::1]"]) {
        const accepted = listener.accept();
        const conn = await connect(nativeHostTcp(loop, { address6: "::1" }), hostname, port);
        const peer = await accepted;
        assert.equal((peer.remoteAddr as Deno.NetAddr).hostname, "::1");
        conn.send(encoder.encode("six"));
        assert.equal(await connReadExactly(peer, 3), "six");
        conn.close();
        peer.close();
      }
    });
    listener.close();
  },
});

Deno.test("`requireNetPermission()` refuses what the test's --allow-net does not grant", {
  permissions: { net: ["127.0.0.1:7"], ffi: true },
}, async () => {
  requireNetPermission("127.0.0.1", 7, "connect");
  assert.throws(
    () => requireNetPermission("127.0.0.1", 8, "connect"),
    (e: unknown) =>
      e instanceof Deno.errors.NotCapable && e.message.includes('"127.0.0.1:8" to connect'),
  );
  assert.throws(
    () => requireNetPermission("::1", 7, "listen"),
    (e: unknown) =>
      e instanceof Deno.errors.NotCapable && e.message.includes('"[::1]:7" to listen'),
  );
  await withLoop((loop) => {
    const host = nativeHostTcp(loop);
    assert.throws(() => host.connect("127.0.0.1", 8), Deno.errors.NotCapable);
    assert.throws(
      () => host.listen("127.0.0.1", 8, null, { accepted() {}, failed() {} }),
      Deno.errors.NotCapable,
    );
    assert.equal(loop.size, 0);
    return Promise.resolve();
  });
});

/** Listens through `host`, collecting accepted connections. */
function collectingListener(host: HostTcp, hostname: string, interfaceName: string | null = null) {
  const accepted: AcceptedConnection[] = [];
  const waiters: (() => void)[] = [];
  const listener = host.listen(hostname, 0, interfaceName, {
    accepted(a) {
      accepted.push(a);
      for (const w of waiters.splice(0)) w();
    },
    failed(error) {
      throw error;
    },
  });
  const next = async (count: number) => {
    while (accepted.length < count) await new Promise<void>((r) => waiters.push(r));
    return accepted[count - 1];
  };
  return { listener, accepted, next };
}

Deno.test("`nativeHostTcp().listen()` accepts connections with their peer address and port; `port` is the kernel's choice", async () => {
  const before = openFdCount();
  await withLoop(async (loop) => {
    const { listener, next } = collectingListener(nativeHostTcp(loop), "127.0.0.1");
    assert.ok(listener.port > 0, `port ${listener.port}`);
    assert.equal(loop.size, 1, "the listener is watched");
    const client1 = await Deno.connect({ hostname: "127.0.0.1", port: listener.port });
    const a1 = await next(1);
    assert.equal(a1.peerHostname, "127.0.0.1");
    assert.deepEqual([...a1.peerAddress], [127, 0, 0, 1], "the peer's bytes, not only its text");
    assert.equal(a1.peerPort, (client1.localAddr as Deno.NetAddr).port);
    const client2 = await Deno.connect({ hostname: "127.0.0.1", port: listener.port });
    const a2 = await next(2);
    assert.equal(a2.peerPort, (client2.localAddr as Deno.NetAddr).port);
    assert.notEqual(a1.peerPort, a2.peerPort);
    // The accepted connections carry data both ways.
    await client1.write(encoder.encode("one"));
    assert.equal(await peekExactly(a1.connection, 0, 3), "one");
    a2.connection.send(encoder.encode("two"));
    assert.equal(await connReadExactly(client2, 3), "two");
    assert.equal(loop.size, 3);
    a1.connection.close();
    a2.connection.close();
    listener.close();
    listener.close(); // harmless
    assert.equal(loop.size, 0);
    client1.close();
    client2.close();
    // The port is really closed.
    await assert.rejects(
      Deno.connect({ hostname: "127.0.0.1", port: listener.port }),
      Deno.errors.ConnectionRefused,
    );
  });
  assert.equal(openFdCount(), before);
});

Deno.test({
  name:
    "`nativeHostTcp().listen()` on :: shows an IPv4 client as ::ffff:127.0.0.1 and an IPv6 one as ::1" +
    (dualStack ? "" : " (ignored: no dual-stack ::1 here)"),
  ignore: !dualStack,
  async fn() {
    await withLoop(async (loop) => {
      const { listener, next } = collectingListener(nativeHostTcp(loop), "::");
      const c4 = await Deno.connect({ hostname: "127.0.0.1", port: listener.port });
      const a4 = await next(1);
      assert.equal(a4.peerHostname, "::ffff:127.0.0.1");
      assert.equal(a4.peerAddress.byteLength, 16);
      assert.equal(a4.peerPort, (c4.localAddr as Deno.NetAddr).port);
      const c6 = await Deno.connect({ hostname: "::1", port: listener.port });
      const a6 = await next(2);
      assert.equal(a6.peerHostname, "::1");
      a4.connection.close();
      a6.connection.close();
      c4.close();
      c6.close();
      listener.close();
    });
  },
});

Deno.test("`nativeHostTcp().listen()` throws for a busy port and for a hostname that is not an address", async () => {
  const before = openFdCount();
  const { listener, port } = denoServer();
  await withLoop((loop) => {
    const host = nativeHostTcp(loop);
    const events = { accepted() {}, failed() {} };
    assert.throws(() => host.listen("127.0.0.1", port, null, events), (e: unknown) => {
      assert.ok(e instanceof NativeError, String(e));
      assert.equal(e.errno, Errno.EADDRINUSE);
      return true;
    });
    assert.throws(
      () => host.listen("localhost", 0, null, events),
      /Cannot listen on localhost: not an IPv4 or IPv6/,
    );
    assert.equal(loop.size, 0);
    return Promise.resolve();
  });
  listener.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`nativeHostTcp()` on a closed loop fails without keeping a socket", () => {
  const loop = new EventLoop();
  loop.close();
  const before = openFdCount();
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const host = nativeHostTcp(loop);
    assert.throws(() => host.connect("127.0.0.1", server.addr.port), /closed/);
    assert.throws(
      () => host.listen("127.0.0.1", 0, null, { accepted() {}, failed() {} }),
      /closed/,
    );
  } finally {
    server.close();
  }
  assert.equal(openFdCount(), before);
});
