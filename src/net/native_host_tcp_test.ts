import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fc from "fast-check";
import { Errno, NativeError } from "../../ffi/native_error.ts";
import { openFdCount } from "../../ffi/process.ts";
import { TcpListenSocket, type TcpSocket } from "../../ffi/tcp_socket.ts";
import { EventLoop } from "../loop/event_loop.ts";
import type { HostStream } from "./host_stream.ts";
import {
  addressBytes,
  addressText,
  nativeConnector,
  NativeHostStream,
  nativeListen,
  requireNetPermission,
} from "./native_host_tcp.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Whether `p` is still pending after the microtasks queued so far: a promise the
 * stream settled synchronously (the syscall did not block) is settled by then; one
 * waiting for the event loop is not (the loop only dispatches from a later task).
 */
async function isPending(p: Promise<unknown>): Promise<boolean> {
  let settled = false;
  p.then(() => settled = true, () => settled = true);
  await null;
  await null;
  return !settled;
}

/**
 * A guard against a promise that never settles (the running loop keeps the test
 * alive, so a lost wake-up would hang instead of failing); not a timing assertion.
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

/** The descriptors of this process that `loop` watches. */
function watchedFds(loop: EventLoop): number[] {
  const fds: number[] = [];
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    const fd = Number(entry.name);
    if (loop.isWatching(fd)) fds.push(fd);
  }
  return fds;
}

/** Reads from a HostStream until `count` bytes arrived; fails at an early end. */
async function readExactly(stream: HostStream, count: number): Promise<string> {
  const out = new Uint8Array(count);
  let got = 0;
  while (got < count) {
    const n = await stream.read(out.subarray(got));
    if (n === null) throw new Error(`end of stream after ${got} of ${count} bytes`);
    got += n;
  }
  return decoder.decode(out);
}

/** Writes all of `data` to a HostStream (its write may take fewer bytes). */
async function writeAll(stream: HostStream, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.byteLength;) off += await stream.write(data.subarray(off));
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

Deno.test("`nativeConnector()` connects to a Deno.listen server on 127.0.0.1 and bytes flow both ways", async () => {
  const before = openFdCount();
  const { listener, port } = denoServer();
  await withLoop(async (loop) => {
    const accepted = listener.accept();
    const stream = await nativeConnector(loop)("127.0.0.1", port);
    const conn = await accepted;
    const fds = watchedFds(loop);
    assert.equal(fds.length, 1, "the stream's socket is watched");
    assert.equal(loop.size, 1);

    await writeAll(stream, encoder.encode("hello host"));
    assert.equal(await connReadExactly(conn, 10), "hello host");
    // A read issued before the data is there waits for the loop's edge.
    const pending = readExactly(stream, 11);
    await conn.write(encoder.encode("hello guest"));
    assert.equal(await pending, "hello guest");
    // And again, now that data is there before the read.
    await conn.write(encoder.encode("second"));
    await sleep(5);
    assert.equal(await readExactly(stream, 6), "second");

    stream.close();
    assert.equal(loop.isWatching(fds[0]), false, "close() unwatches the socket");
    assert.equal(loop.size, 0);
    stream.close(); // harmless
    await assert.rejects(stream.read(new Uint8Array(4)), Deno.errors.BadResource);
    await assert.rejects(stream.write(new Uint8Array(4)), Deno.errors.BadResource);
    await assert.rejects(stream.closeWrite(), Deno.errors.BadResource);
    // The peer sees an orderly end.
    assert.equal(await conn.read(new Uint8Array(4)), null);
    conn.close();
  });
  listener.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`NativeHostStream.write()` completes an 8 MiB write through partial writes and EAGAIN waits while the peer reads slowly", async () => {
  const SIZE = 8 * 1024 * 1024;
  const data = new Uint8Array(SIZE);
  for (let off = 0; off < SIZE; off += 65536) {
    crypto.getRandomValues(data.subarray(off, off + 65536));
  }
  const sentDigest = createHash("sha256").update(data).digest("hex");

  const { listener, port } = denoServer();
  await withLoop(async (loop) => {
    const accepted = listener.accept();
    const stream = await nativeConnector(loop)("127.0.0.1", port);
    const conn = await accepted;

    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => openGate = resolve);
    // The peer does not read until the writer had to wait, then reads in small steps
    // with pauses.
    const reader = (async () => {
      await gate;
      const hash = createHash("sha256");
      const buf = new Uint8Array(32 * 1024);
      let total = 0;
      let reads = 0;
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        hash.update(buf.subarray(0, n));
        total += n;
        if (++reads % 16 === 0) await sleep(1);
      }
      return { total, digest: hash.digest("hex") };
    })();

    let calls = 0;
    let waits = 0;
    for (let off = 0; off < SIZE;) {
      const p = stream.write(data.subarray(off));
      calls++;
      if (await isPending(p)) {
        waits++;
        openGate();
      }
      const n = await p;
      assert.ok(n > 0 && n <= SIZE - off, `write took ${n} bytes with ${SIZE - off} left`);
      off += n;
    }
    openGate();
    await stream.closeWrite();
    const received = await reader;
    assert.equal(received.total, SIZE);
    assert.equal(received.digest, sentDigest, "all bytes arrived in order");
    assert.ok(calls > 1, `the kernel took 8 MiB in ${calls} write(s): no partial write`);
    assert.ok(waits >= 1, "no write ever waited for writability (EAGAIN)");
    console.log(`8 MiB in ${calls} writes, ${waits} of them waited for the loop`);
    stream.close();
    conn.close();
  });
  listener.close();
});

Deno.test("`NativeHostStream.read()` resolves null at the peer's FIN, after the data before it", async () => {
  const before = openFdCount();
  const { listener, port } = denoServer();
  await withLoop(async (loop) => {
    const accepted = listener.accept();
    const stream = await nativeConnector(loop)("127.0.0.1", port);
    const conn = await accepted;
    const buf = new Uint8Array(64);
    const first = stream.read(buf);
    assert.ok(await isPending(first), "a read with nothing to read waits");
    await conn.write(encoder.encode("bye"));
    assert.equal(await first, 3);
    assert.equal(decoder.decode(buf.subarray(0, 3)), "bye");
    // A pending read ends with the FIN.
    const second = stream.read(buf);
    assert.ok(await isPending(second));
    await conn.closeWrite();
    assert.equal(await second, null);
    // The end stays.
    assert.equal(await stream.read(buf), null);
    // Our direction is still open: the peer can read what we write after its FIN.
    await writeAll(stream, encoder.encode("after fin"));
    assert.equal(await connReadExactly(conn, 9), "after fin");
    stream.close();
    conn.close();
  });
  listener.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`NativeHostStream.closeWrite()` gives the peer end of stream while reading still works", async () => {
  const { listener, port } = denoServer();
  await withLoop(async (loop) => {
    const accepted = listener.accept();
    const stream = await nativeConnector(loop)("127.0.0.1", port);
    const conn = await accepted;
    await writeAll(stream, encoder.encode("request"));
    await stream.closeWrite();
    assert.equal(await connReadExactly(conn, 7), "request");
    assert.equal(await conn.read(new Uint8Array(8)), null, "the peer reads end of stream");
    await conn.write(encoder.encode("response"));
    await conn.closeWrite();
    assert.equal(await readExactly(stream, 8), "response");
    assert.equal(await stream.read(new Uint8Array(8)), null);
    stream.close();
    conn.close();
  });
  listener.close();
});

Deno.test("`NativeHostStream.reset()` makes the peer's next write fail (a plain close() does not)", async () => {
  const before = openFdCount();
  const { listener, port } = denoServer();
  await withLoop(async (loop) => {
    const connect = nativeConnector(loop);
    const buf = new Uint8Array(16);

    // Control: after close() (FIN) the peer reads EOF and its first write still succeeds.
    let accepted = listener.accept();
    const closing = await connect("127.0.0.1", port);
    let conn = await accepted;
    closing.close();
    assert.equal(await conn.read(buf), null);
    assert.equal(await conn.write(encoder.encode("late")), 4);
    conn.close();

    // reset(): Deno reports the received RST to read() as EOF (or as ConnectionReset),
    // and a write after it is refused.
    accepted = listener.accept();
    const resetting = await connect("127.0.0.1", port);
    conn = await accepted;
    assert.ok(resetting instanceof NativeHostStream);
    const fd = watchedFds(loop)[0];
    resetting.reset();
    assert.equal(loop.isWatching(fd), false, "reset() unwatches the socket");
    resetting.reset(); // harmless
    resetting.close(); // harmless
    try {
      assert.equal(await conn.read(buf), null);
    } catch (error) {
      assert.ok(error instanceof Deno.errors.ConnectionReset, String(error));
    }
    await assert.rejects(
      conn.write(encoder.encode("late")),
      (e: unknown) =>
        e instanceof Deno.errors.BrokenPipe || e instanceof Deno.errors.ConnectionReset,
    );
    conn.close();
    await assert.rejects(resetting.read(buf), Deno.errors.BadResource);
  });
  listener.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`NativeHostStream.read()` pending rejects with NativeError ECONNRESET when the peer resets", async () => {
  const before = openFdCount();
  const server = TcpListenSocket.listen({ address: new Uint8Array([127, 0, 0, 1]), port: 0 });
  const port = server.localAddress().port;
  await withLoop(async (loop) => {
    const stream = await nativeConnector(loop)("127.0.0.1", port);
    const peer = await acceptPolling(server);
    const read = stream.read(new Uint8Array(64));
    assert.ok(await isPending(read), "the read waits for the loop");
    peer.closeWithReset();
    await assert.rejects(read, (e: unknown) => {
      assert.ok(e instanceof NativeError, String(e));
      assert.equal(e.errno, Errno.ECONNRESET);
      return true;
    });
    // The connection is dead for writing too.
    await assert.rejects(
      stream.write(encoder.encode("x")),
      (e: unknown) =>
        e instanceof NativeError && (e.errno === Errno.EPIPE || e.errno === Errno.ECONNRESET),
    );
    stream.close();
    assert.equal(loop.size, 0);
  });
  server.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`nativeConnector()` rejects with NativeError ECONNREFUSED for a closed port and closes its socket", async () => {
  const before = openFdCount();
  await withLoop(async (loop) => {
    const port = closedPort();
    await assert.rejects(nativeConnector(loop)("127.0.0.1", port), (e: unknown) => {
      assert.ok(e instanceof NativeError, String(e));
      assert.equal(e.errno, Errno.ECONNREFUSED);
      return true;
    });
    assert.equal(loop.size, 0, "the failed socket is no longer watched");
  });
  assert.equal(openFdCount(), before);
});

Deno.test("`nativeConnector()` rejects a hostname that is not an address literal", async () => {
  await withLoop(async (loop) => {
    await assert.rejects(
      nativeConnector(loop)("localhost", 80),
      /Cannot connect to localhost: not an IPv4 or IPv6 address/,
    );
    assert.equal(loop.size, 0);
  });
});

Deno.test("`nativeConnector()` binds outbound IPv4 connections to address4 and interface4", async () => {
  const before = openFdCount();
  const { listener, port } = denoServer();
  await withLoop(async (loop) => {
    let accepted = listener.accept();
    const bound = await nativeConnector(loop, { address4: "127.0.0.2" })("127.0.0.1", port);
    let conn = await accepted;
    assert.equal((conn.remoteAddr as Deno.NetAddr).hostname, "127.0.0.2");
    bound.close();
    conn.close();

    accepted = listener.accept();
    const viaLo = await nativeConnector(loop, { interface4: "lo" })("127.0.0.1", port);
    conn = await accepted;
    await writeAll(viaLo, encoder.encode("lo"));
    assert.equal(await connReadExactly(conn, 2), "lo");
    viaLo.close();
    conn.close();

    // The IPv6 settings do not apply to an IPv4 destination.
    accepted = listener.accept();
    const v4 = await nativeConnector(loop, { address6: "::1", interface6: "tpnosuch0" })(
      "127.0.0.1",
      port,
    );
    conn = await accepted;
    assert.equal((conn.remoteAddr as Deno.NetAddr).hostname, "127.0.0.1");
    v4.close();
    conn.close();

    await assert.rejects(
      nativeConnector(loop, { interface4: "tpnosuch0" })("127.0.0.1", port),
      (e: unknown) =>
        // ENODEV as root; EPERM where the kernel reserves SO_BINDTODEVICE for CAP_NET_RAW.
        e instanceof NativeError && (e.errno === Errno.ENODEV || e.errno === Errno.EPERM),
    );
    assert.throws(() => nativeConnector(loop, { address4: "::1" }), /not an IPv4 address/);
    assert.throws(() => nativeConnector(loop, { address6: "127.0.0.1" }), /not an IPv6 address/);
    assert.throws(() => nativeConnector(loop, { address4: "localhost" }), /not an IPv4 address/);
    assert.equal(loop.size, 0);
  });
  listener.close();
  assert.equal(openFdCount(), before);
});

Deno.test({
  name: "`nativeConnector()` connects to ::1" + (ipv6Loopback ? "" : " (ignored: no ::1 here)"),
  ignore: !ipv6Loopback,
  async fn() {
    const { listener, port } = denoServer("::1");
    await withLoop(async (loop) => {
      for (const hostname of ["::1", "[::1]"]) {
        const accepted = listener.accept();
        const stream = await nativeConnector(loop, { address6: "::1" })(hostname, port);
        const conn = await accepted;
        assert.equal((conn.remoteAddr as Deno.NetAddr).hostname, "::1");
        await writeAll(stream, encoder.encode("six"));
        assert.equal(await connReadExactly(conn, 3), "six");
        stream.close();
        conn.close();
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
  await withLoop(async (loop) => {
    await assert.rejects(nativeConnector(loop)("127.0.0.1", 8), Deno.errors.NotCapable);
    assert.throws(() => nativeListen(loop)("127.0.0.1", 8), Deno.errors.NotCapable);
    assert.equal(loop.size, 0);
  });
});

Deno.test("`nativeConnector()` in a child with a narrow --allow-net connects to the allowed port only", async () => {
  const allowedServer = denoServer();
  const deniedServer = TcpListenSocket.listen({ address: new Uint8Array([127, 0, 0, 1]), port: 0 });
  const allowed = allowedServer.port;
  const denied = deniedServer.localAddress().port;
  const script = `
import { EventLoop } from ${JSON.stringify(import.meta.resolve("../loop/event_loop.ts"))};
import { nativeConnector, nativeListen } from ${
    JSON.stringify(import.meta.resolve("./native_host_tcp.ts"))
  };
const [allowed, denied] = Deno.args.map(Number);
const loop = new EventLoop();
const running = loop.run();
const connect = nativeConnector(loop);
const describe = (e) => ({ notCapable: e instanceof Deno.errors.NotCapable, message: String(e?.message ?? e) });
const result = {};
try {
  const stream = await connect("127.0.0.1", allowed);
  await stream.write(new TextEncoder().encode("ping"));
  stream.close();
  result.allowed = "connected";
} catch (e) {
  result.allowed = describe(e);
}
for (const [key, host, port] of [["denied", "127.0.0.1", denied], ["denied6", "::1", allowed]]) {
  try {
    (await connect(host, port)).close();
    result[key] = "connected";
  } catch (e) {
    result[key] = describe(e);
  }
}
try {
  nativeListen(loop)("127.0.0.1", 0).close();
  result.listen = "listening";
} catch (e) {
  result.listen = describe(e);
}
result.watched = loop.size;
loop.stop();
await running;
loop.close();
console.log(JSON.stringify(result));
`;
  const accepted = allowedServer.listener.accept();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--no-config",
      `--allow-net=127.0.0.1:${allowed}`,
      "--allow-ffi",
      "-",
      String(allowed),
      String(denied),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(encoder.encode(script));
  await writer.close();
  const conn = await accepted;
  assert.equal(await connReadExactly(conn, 4), "ping");
  const out = await child.output();
  const stdout = decoder.decode(out.stdout);
  const stderr = decoder.decode(out.stderr);
  assert.equal(out.code, 0, `child failed:\n${stdout}\n${stderr}`);
  const result = JSON.parse(stdout);
  assert.equal(result.allowed, "connected");
  assert.equal(result.denied.notCapable, true, stdout);
  assert.match(result.denied.message, new RegExp(`"127\\.0\\.0\\.1:${denied}" to connect`));
  assert.equal(result.denied6.notCapable, true, stdout);
  assert.match(result.denied6.message, new RegExp(`"\\[::1\\]:${allowed}" to connect`));
  assert.equal(result.listen.notCapable, true, stdout);
  assert.match(result.listen.message, /"127\.0\.0\.1:0" to listen/);
  assert.equal(result.watched, 0);
  // Nothing reached the not-allowed server: no connection waits in its accept queue.
  assert.equal(deniedServer.accept(), null);
  conn.close();
  allowedServer.listener.close();
  deniedServer.close();
});

Deno.test("`nativeListen()` accepts connections with their peer address and port; `port` is the kernel's choice", async () => {
  const before = openFdCount();
  await withLoop(async (loop) => {
    const listener = nativeListen(loop)("127.0.0.1", 0);
    assert.ok(listener.port > 0, `port ${listener.port}`);
    assert.equal(loop.size, 1, "the listener is watched");

    // accept() first, the connection later: through the loop.
    const first = listener.accept();
    assert.ok(await isPending(first));
    const client1 = await Deno.connect({ hostname: "127.0.0.1", port: listener.port });
    const a1 = await first;
    assert.equal(a1.peerHostname, "127.0.0.1");
    assert.equal(a1.peerPort, (client1.localAddr as Deno.NetAddr).port);

    // The connection first, accept() later: at once.
    const client2 = await Deno.connect({ hostname: "127.0.0.1", port: listener.port });
    await sleep(5);
    const a2 = await listener.accept();
    assert.equal(a2.peerHostname, "127.0.0.1");
    assert.equal(a2.peerPort, (client2.localAddr as Deno.NetAddr).port);
    assert.notEqual(a1.peerPort, a2.peerPort);

    // The accepted streams carry data both ways.
    await client1.write(encoder.encode("one"));
    assert.equal(await readExactly(a1.stream, 3), "one");
    await writeAll(a2.stream, encoder.encode("two"));
    assert.equal(await connReadExactly(client2, 3), "two");
    assert.equal(loop.size, 3);

    a1.stream.close();
    a2.stream.close();
    listener.close();
    listener.close(); // harmless
    assert.equal(loop.size, 0);
    client1.close();
    client2.close();
  });
  assert.equal(openFdCount(), before);
});

Deno.test({
  name: "`nativeListen()` on :: shows an IPv4 client as ::ffff:127.0.0.1 and an IPv6 one as ::1" +
    (dualStack ? "" : " (ignored: no dual-stack ::1 here)"),
  ignore: !dualStack,
  async fn() {
    await withLoop(async (loop) => {
      const listener = nativeListen(loop)("::", 0);
      const c4 = await Deno.connect({ hostname: "127.0.0.1", port: listener.port });
      const a4 = await listener.accept();
      assert.equal(a4.peerHostname, "::ffff:127.0.0.1");
      assert.equal(a4.peerPort, (c4.localAddr as Deno.NetAddr).port);
      const c6 = await Deno.connect({ hostname: "::1", port: listener.port });
      const a6 = await listener.accept();
      assert.equal(a6.peerHostname, "::1");
      assert.equal(a6.peerPort, (c6.localAddr as Deno.NetAddr).port);
      a4.stream.close();
      a6.stream.close();
      c4.close();
      c6.close();
      listener.close();
    });
  },
});

Deno.test("`nativeListen()` close() rejects a pending accept() with BadResource and stops watching", async () => {
  const before = openFdCount();
  await withLoop(async (loop) => {
    const listener = nativeListen(loop)("127.0.0.1", 0, "lo");
    const port = listener.port;
    const pending = [listener.accept(), listener.accept()];
    assert.ok(await isPending(pending[0]));
    listener.close();
    for (const p of pending) await assert.rejects(p, Deno.errors.BadResource);
    await assert.rejects(listener.accept(), Deno.errors.BadResource);
    assert.equal(loop.size, 0);
    // The port is really closed.
    await assert.rejects(
      Deno.connect({ hostname: "127.0.0.1", port }),
      Deno.errors.ConnectionRefused,
    );
  });
  assert.equal(openFdCount(), before);
});

Deno.test("`nativeListen()` throws for a busy port and for a hostname that is not an address", async () => {
  const before = openFdCount();
  const { listener, port } = denoServer();
  await withLoop((loop) => {
    const listen = nativeListen(loop);
    assert.throws(() => listen("127.0.0.1", port), (e: unknown) => {
      assert.ok(e instanceof NativeError, String(e));
      assert.equal(e.errno, Errno.EADDRINUSE);
      return true;
    });
    assert.throws(() => listen("localhost", 0), /Cannot listen on localhost: not an IPv4 or IPv6/);
    assert.equal(loop.size, 0);
    return Promise.resolve();
  });
  listener.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`addressBytes()` and `addressText()` round-trip IPv4, IPv6, mapped and bracketed forms", () => {
  const cases: [string, number[], string][] = [
    ["127.0.0.1", [127, 0, 0, 1], "127.0.0.1"],
    ["255.0.10.9", [255, 0, 10, 9], "255.0.10.9"],
    ["::1", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], "::1"],
    ["[::1]", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], "::1"],
    ["::", new Array(16).fill(0), "::"],
    ["::ffff:1.2.3.4", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4], "::ffff:1.2.3.4"],
    [
      "[::FFFF:127.0.0.1]",
      [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1],
      "::ffff:127.0.0.1",
    ],
    [
      "2001:DB8:0:0:1:0:0:1",
      [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
      "2001:db8::1:0:0:1",
    ],
    [
      "[fe80::a:b]",
      [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0, 0x0b],
      "fe80::a:b",
    ],
  ];
  for (const [input, bytes, text] of cases) {
    const got = addressBytes(input);
    assert.deepEqual(got && [...got], bytes, input);
    assert.equal(addressText(new Uint8Array(bytes)), text, input);
    assert.deepEqual([...addressBytes(text)!], bytes, `${text} parses back`);
  }
  for (
    const bad of [
      "localhost",
      "",
      "1.2.3",
      "1.2.3.256",
      "[127.0.0.1]",
      "::1]",
      "[::1",
      "1::2::3",
      "::g",
    ]
  ) {
    assert.equal(addressBytes(bad), null, JSON.stringify(bad));
  }
  // Any 4 or 16 bytes survive text and back.
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ minLength: 4, maxLength: 4 }),
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
      ),
      (bytes) => {
        assert.deepEqual(addressBytes(addressText(bytes)), bytes);
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("`requireNetPermission()` takes a bracketed IPv6 host as it is", {
  permissions: { net: ["[::1]:7"], ffi: true },
}, () => {
  requireNetPermission("[::1]", 7, "connect");
  requireNetPermission("::1", 7, "connect");
  assert.throws(() => requireNetPermission("[::1]", 8, "connect"), Deno.errors.NotCapable);
});

Deno.test("`nativeConnector()` and `nativeListen()` on a closed loop fail without keeping a socket", async () => {
  const loop = new EventLoop();
  loop.close();
  const before = openFdCount();
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    await assert.rejects(nativeConnector(loop)("127.0.0.1", server.addr.port), /closed/);
    assert.throws(() => nativeListen(loop)("127.0.0.1", 0), /closed/);
  } finally {
    server.close();
  }
  assert.equal(openFdCount(), before);
});
