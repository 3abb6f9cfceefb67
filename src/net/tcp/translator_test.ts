import assert from "node:assert/strict";
import {
  closedLoopbackPort,
  connectThroughGateway,
  loopbackListener,
  wiredTranslator,
} from "../../../tests/support/net/tcp_host.ts";
import { createHash } from "node:crypto";
import type { TcpTranslatorOptions } from "./translator.ts";
import { RTO_MAX_MS } from "./flow.ts";
import { type GuestTcpConn, type TestGuest } from "../../../tests/support/net/tcp_guest.ts";
import { TEST_GATEWAY4, TEST_GATEWAY6 } from "../../../tests/support/net/tcp_plan.ts";
import { Logger } from "../../log/logger.ts";
import { nextTask, PublishOnFlushLink } from "../../../tests/support/net/recording_link.ts";
import { decodeFrame } from "../../../tests/support/net/frames.ts";
import { TCP_DATA_OFFSET } from "../wire/tcp_header.ts";
import { type GuestLink, SendResult, TcpSegmentation } from "../../tap/frame_transport.ts";

/** A translator, its sender and a guest wired together; the translator logs at debug level. */
function setup(family: 4 | 6 = 4, opts: TcpTranslatorOptions = {}) {
  const logger = new Logger();
  logger.setLevel("debug");
  logger.setSink(() => {});
  return wiredTranslator({ logger, ...opts }, family);
}

function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x;
  }
  return out;
}

function sha(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

async function readAll(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(65536);
  while (true) {
    const n = await conn.read(buf);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
    total += n;
  }
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let o = 0;
  while (o < data.length) o += await conn.write(data.subarray(o, Math.min(o + 65536, data.length)));
}

Deno.test("`TcpTranslator` connects a guest to a host server and exchanges a request and response", async () => {
  const { tcp, guest, close } = setup();
  const { listener: server, port } = loopbackListener();
  const served = (async () => {
    const conn = await server.accept();
    const req = await readAll(conn);
    assert.equal(new TextDecoder().decode(req), "GET / HTTP/1.0\r\n\r\n");
    await writeAll(conn, new TextEncoder().encode("HTTP/1.0 200 OK\r\n\r\nhello"));
    conn.close();
  })();
  const c = guest.connect(TEST_GATEWAY4, port);
  await c.until(() => c.state === "established", 5000, "established");
  guest.write(c, new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n"));
  guest.close(c);
  await c.until(() => c.eof, 5000, "eof");
  assert.equal(new TextDecoder().decode(c.takeReceived()), "HTTP/1.0 200 OK\r\n\r\nhello");
  await served;
  await c.until(() => c.finAcked, 5000, "fin acked");
  assert.equal(tcp.counters.outbound, 1);
  server.close();
  close();
});

/**
 * Serves the first connection on `server`: writes `down` while reading to the end.
 * @returns what the peer sent
 */
async function serveExchange(server: Deno.Listener, down: Uint8Array): Promise<Uint8Array> {
  const conn = await server.accept();
  const [got] = await Promise.all([readAll(conn), writeAll(conn, down)]);
  conn.close();
  return got;
}

/**
 * Sends `up` over the guest connection `c` once it is established, closes it, and
 * checks that the guest got `down` and the host (`served`) got `up`, whole.
 */
async function exchangeWhole(
  guest: TestGuest,
  c: GuestTcpConn,
  up: Uint8Array,
  down: Uint8Array,
  served: Promise<Uint8Array>,
): Promise<void> {
  await c.until(() => c.state === "established", 5000, "established");
  guest.write(c, up);
  guest.close(c);
  await c.until(() => c.eof, 30000, "eof");
  const got = await served;
  assert.equal(sha(c.takeReceived()), sha(down));
  assert.equal(sha(got), sha(up));
}

/**
 * Has the guest connect, through the gateway, to a loopback server of `family` that
 * writes `down` and closes, and waits (up to `timeoutMs`) for the end of the stream.
 * @returns what the guest received
 */
async function downloadFromHost(
  guest: TestGuest,
  family: 4 | 6,
  down: Uint8Array,
  timeoutMs: number,
): Promise<Uint8Array> {
  const server = Deno.listen({ hostname: family === 4 ? "127.0.0.1" : "::1", port: 0 });
  try {
    const port = (server.addr as Deno.NetAddr).port;
    const served = (async () => {
      const conn = await server.accept();
      await writeAll(conn, down);
      conn.close();
    })();
    const c = family === 4
      ? guest.connect(TEST_GATEWAY4, port)
      : guest.connect(0, port, TEST_GATEWAY6);
    await c.until(() => c.eof, timeoutMs, "eof");
    await served;
    return c.takeReceived();
  } finally {
    server.close();
  }
}

/** TCP payload bytes in a frame toward the guest (IPv4, no options). */
function tcpPayloadLength(frame: Uint8Array): number {
  const l4 = decodeFrame(frame).l4;
  return l4.length - (l4[TCP_DATA_OFFSET] >> 4) * 4;
}

Deno.test("`TcpTranslator` ends host data and timer retransmissions toward the guest with a flush", async () => {
  const { sender, tcp, guest, close } = setup(4);
  // Between the sender and the guest: loses data segments while `losing`.
  let losing = false, lost = 0;
  const lossy: GuestLink = {
    kind: "lossy",
    l4ChecksumsOptional: false,
    tcpSegmentation: 0,
    deviceMtu: 0,
    maxFrameLength: guest.maxFrameLength,
    sendFrame(frame, checksumStart, checksumOffset) {
      if (losing && tcpPayloadLength(frame) > 0) {
        lost++;
        return SendResult.Sent;
      }
      return guest.sendFrame(frame, checksumStart, checksumOffset);
    },
    // PublishOnFlushLink passes every frame on through sendFrame.
    reserveFrame: (space, maxLength, headerLength) =>
      guest.reserveFrame(space, maxLength, headerLength),
    commitFrame: (length, checksumStart, checksumOffset) =>
      guest.commitFrame(length, checksumStart, checksumOffset),
    cancelFrame: () => guest.cancelFrame(),
    flush: () => guest.flush(),
    onWritable: (callback) => guest.onWritable(callback),
  };
  const link = new PublishOnFlushLink(lossy);
  sender.setLink(link);
  const { listener: server, port } = loopbackListener();
  let sendSecond!: () => void;
  const secondWanted = new Promise<void>((resolve) => (sendSecond = resolve));
  const served = (async () => {
    const conn = await server.accept();
    await writeAll(conn, new TextEncoder().encode("hello"));
    await secondWanted;
    await writeAll(conn, new TextEncoder().encode("world"));
    return conn;
  })();
  const c = guest.connect(TEST_GATEWAY4, port);
  await c.until(() => c.state === "established", 5000, "established");
  // From here the guest sees a frame only once flushed, and its timer (whose
  // endOfBatch flushes too) is off: the data read from the host must be flushed by
  // whoever sent it.
  guest.stop();
  await c.until(() => c.receivedBytes === 5, 2000, "host data delivered");
  assert.equal(new TextDecoder().decode(c.takeReceived()), "hello");
  // The next segment is lost on its way; the retransmission timer sends it again.
  losing = true;
  sendSecond();
  await c.until(() => lost === 1, 2000, "the second segment sent and lost");
  losing = false;
  const retransmitsBefore = tcp.counters.retransmits;
  await new Promise<void>((resolve) =>
    setTimeout(() => {
      // A timer callback, as the daemon's TimerDriver runs it, at a time past any RTO.
      tcp.tick(performance.now() + RTO_MAX_MS);
      resolve();
    }, 0)
  );
  assert.equal(tcp.counters.retransmits, retransmitsBefore + 1);
  await c.until(() => c.receivedBytes === 5, 2000, "retransmission delivered");
  assert.equal(new TextDecoder().decode(c.takeReceived()), "world");
  await nextTask();
  assert.equal(link.unflushedFrames, 0);
  (await served).close();
  server.close();
  close();
});

Deno.test("`TcpTranslator` answers a refused connection with a RST", async () => {
  const { tcp, guest, close } = setup();
  const port = closedLoopbackPort();
  const c = guest.connect(TEST_GATEWAY4, port);
  await c.until(() => c.gotRst, 5000, "RST");
  assert.equal(c.state, "closed");
  assert.equal(tcp.counters.connectFailed, 1);
  assert.equal(tcp.flows.size, 0);
  close();
});

Deno.test("`TcpTranslator` moves several MB each way intact (IPv4 and IPv6)", async () => {
  for (const family of [4, 6] as const) {
    const { guest, close } = setup(family);
    const size = 3 * 1024 * 1024 + 12345;
    const up = pattern(size, 7);
    const down = pattern(size + 999, 9);
    const server = Deno.listen({ hostname: family === 4 ? "127.0.0.1" : "::1", port: 0 });
    const port = (server.addr as Deno.NetAddr).port;
    const served = serveExchange(server, down);
    const c = family === 4
      ? guest.connect(TEST_GATEWAY4, port)
      : guest.connect(0, port, TEST_GATEWAY6);
    await exchangeWhole(guest, c, up, down, served);
    await c.until(() => c.finAcked, 5000, "fin acked");
    server.close();
    close();
  }
});

Deno.test("`TcpTranslator` moves MB each way across the sequence numbers' wrap without a retransmission", async () => {
  // Every initial sequence number (ours and the scripted guest's) lands just below
  // 2^32, so both directions wrap after their first bytes.
  const getRandomValues = crypto.getRandomValues;
  crypto.getRandomValues = (<T extends ArrayBufferView | null>(array: T): T => {
    if (array instanceof Uint32Array) array.fill(0xffff_f000);
    else getRandomValues.call(crypto, array as Uint8Array);
    return array;
  }) as typeof crypto.getRandomValues;
  const { tcp, guest, close } = setup();
  try {
    const size = 3 * 1024 * 1024;
    const up = pattern(size, 11);
    const down = pattern(size + 777, 13);
    const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const served = serveExchange(server, down);
    const c = guest.connect(TEST_GATEWAY4, (server.addr as Deno.NetAddr).port);
    assert.equal(c.iss, 0xffff_f000, "the guest's sequence numbers wrap");
    await exchangeWhole(guest, c, up, down, served);
    await c.until(() => c.finAcked, 5000, "fin acked");
    // Our SYN, the data and our FIN, counted from our initial sequence number.
    assert.equal(c.rcvNxt, (0xffff_f000 + 1 + down.length + 1) >>> 0, "ours wrapped too");
    assert.equal(tcp.counters.retransmits, 0);
    server.close();
  } finally {
    crypto.getRandomValues = getRandomValues;
    close();
  }
});

Deno.test("`TcpTranslator` sizes segments to the frames the guest can receive (small RX buffers)", async () => {
  for (const family of [4, 6] as const) {
    const { guest, close } = setup(family);
    // Like virtio-net without MRG_RXBUF: the guest's MSS is large but its buffers hold 1514 bytes.
    guest.maxFrameLength = 1514;
    const down = pattern(1024 * 1024 + 7, 11);
    assert.equal(sha(await downloadFromHost(guest, family, down, 20000)), sha(down));
    assert.equal(guest.oversizedFrames, 0, "a segment larger than the guest's buffers was sent");
    close();
  }
});

Deno.test("`TcpTranslator.listen()` turns a host connection into a guest connection from the gateway", async () => {
  const { tcp, guest, close } = setup();
  guest.listening.add(8080);
  const l = tcp.listen("127.0.0.1", 0, 8080);
  const port = l.port;
  const client = await Deno.connect({ hostname: "127.0.0.1", port });
  await guest.until(() => guest.accepted.length === 1, 5000, "accept");
  const c = guest.accepted[0];
  assert.equal(c.remote4, TEST_GATEWAY4);
  assert.equal(c.remotePort, (client.localAddr as Deno.NetAddr).port);
  await writeAll(client, new TextEncoder().encode("from host"));
  await c.until(() => c.receivedBytes === 9, 5000, "data");
  assert.equal(new TextDecoder().decode(c.takeReceived()), "from host");
  guest.write(c, new TextEncoder().encode("from guest"));
  guest.close(c);
  assert.equal(new TextDecoder().decode(await readAll(client)), "from guest");
  client.close();
  await c.until(() => c.eof, 5000, "eof");
  assert.equal(tcp.counters.inbound, 1);
  close();
});

Deno.test("`TcpTranslator` keeps a half-closed connection open both ways", async () => {
  const { guest, close } = setup();
  const { listener: server, port } = loopbackListener();
  // 1. The guest closes first; the host keeps sending after reading EOF.
  const served = (async () => {
    const conn = await server.accept() as Deno.TcpConn;
    const req = await readAll(conn);
    await writeAll(conn, new TextEncoder().encode(`got ${req.length} bytes`));
    conn.close();
  })();
  const c = guest.connect(TEST_GATEWAY4, port);
  await c.until(() => c.state === "established", 5000, "established");
  guest.write(c, new Uint8Array(5000));
  guest.close(c);
  await c.until(() => c.eof, 5000, "eof");
  assert.equal(new TextDecoder().decode(c.takeReceived()), "got 5000 bytes");
  await served;
  // 2. The host closes its sending side first; the guest keeps sending.
  const served2 = (async () => {
    const conn = await server.accept() as Deno.TcpConn;
    await conn.write(new TextEncoder().encode("bye"));
    await conn.closeWrite();
    const rest = await readAll(conn);
    conn.close();
    return rest;
  })();
  const d = guest.connect(TEST_GATEWAY4, port);
  await d.until(() => d.eof, 5000, "host FIN");
  assert.equal(new TextDecoder().decode(d.takeReceived()), "bye");
  guest.write(d, new TextEncoder().encode("still talking"));
  guest.close(d);
  assert.equal(new TextDecoder().decode(await served2), "still talking");
  await d.until(() => d.finAcked, 5000, "FIN acked");
  server.close();
  close();
});

Deno.test("`TcpTranslator` passes a RST from each side", async () => {
  const { tcp, guest, close } = setup();
  const { listener: server, port } = loopbackListener();
  // Guest RST: the host socket is closed.
  const accepted = server.accept();
  const c = guest.connect(TEST_GATEWAY4, port);
  await c.until(() => c.state === "established", 5000, "established");
  const conn = await accepted;
  const hostSide = readAll(conn).catch((e) => e);
  guest.reset(c);
  const r = await hostSide;
  assert.ok(r instanceof Uint8Array || r instanceof Error);
  assert.equal(tcp.flows.size, 0);
  // Host RST: closing with unread data makes the kernel send a RST.
  const hostSide2 = (async () => {
    const conn = await server.accept();
    const one = new Uint8Array(1);
    await conn.read(one);
    conn.close();
  })();
  const d = guest.connect(TEST_GATEWAY4, port);
  await d.until(() => d.state === "established", 5000, "established");
  guest.write(d, new Uint8Array(100).fill(1));
  await hostSide2;
  guest.write(d, new Uint8Array(100).fill(2));
  await d.until(() => d.gotRst, 5000, "RST from the host side");
  await guest.until(() => tcp.flows.size === 0, 5000, "flow removed");
  server.close();
  close();
});

Deno.test("`TcpTranslator` stops reading the host while the guest link has no room, then delivers everything", async () => {
  const { tcp, guest, close } = setup(4, { bufferSize: 64 * 1024 });
  const { listener: server, port } = loopbackListener();
  // More than the kernel's loopback socket buffers can hold (tcp_wmem + tcp_rmem maxima).
  const chunk = pattern(1024 * 1024, 3);
  const chunks = 24;
  let written = false;
  const served = (async () => {
    const conn = await server.accept();
    for (let i = 0; i < chunks; i++) await writeAll(conn, chunk);
    written = true;
    conn.close();
  })();
  const c = guest.connect(TEST_GATEWAY4, port);
  c.discardReceived = true;
  const want = createHash("sha256");
  for (let i = 0; i < chunks; i++) want.update(chunk);
  const got = createHash("sha256");
  c.onData = (d) => got.update(d);
  await c.until(() => c.state === "established", 5000, "established");
  guest.noRoom = true;
  await guest.until(() => tcp.counters.noRoom > 0, 5000, "no room seen");
  const before = c.totalReceived;
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(c.totalReceived, before, "nothing reaches a guest without room");
  assert.equal(written, false, "the host writer is held back: we stopped reading");
  guest.makeRoom();
  await c.until(() => c.eof, 60000, "eof");
  assert.equal(c.totalReceived, chunks * chunk.length);
  assert.equal(got.digest("hex"), want.digest("hex"));
  await served;
  server.close();
  close();
});

Deno.test("`TcpTranslator` flows survive a link down and up", async () => {
  const { sender, tcp, guest, close } = setup();
  const { server, c, host: hostConn } = await connectThroughGateway(guest);
  sender.setLink(null);
  tcp.linkDown(performance.now());
  await writeAll(hostConn, new TextEncoder().encode("while down"));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(c.totalReceived, 0);
  sender.setLink(guest);
  tcp.linkUp(performance.now());
  await c.until(() => c.receivedBytes === 10, 5000, "data after link up");
  assert.equal(new TextDecoder().decode(c.takeReceived()), "while down");
  hostConn.close();
  server.close();
  close();
});

Deno.test("`TcpTranslator` carries many concurrent connections with every byte verified", async () => {
  const count = Number(Deno.env.get("TPASST_TCP_CONNS") ?? "500");
  const { tcp, guest, close } = setup(4, { bufferSize: 16 * 1024 });
  const { listener: server, port } = loopbackListener();
  const echoing = (async () => {
    const all: Promise<void>[] = [];
    for (let i = 0; i < count; i++) {
      const conn = await server.accept();
      all.push((async () => {
        const got = await readAll(conn);
        await writeAll(conn, got);
        conn.close();
      })());
    }
    await Promise.all(all);
  })();
  const conns: GuestTcpConn[] = [];
  const payloads: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const c = guest.connect(TEST_GATEWAY4, port);
    const p = pattern(3000 + i * 7, i + 1);
    conns.push(c);
    payloads.push(p);
  }
  await guest.until(() => conns.every((c) => c.state === "established"), 30000, "all established");
  for (let i = 0; i < count; i++) {
    guest.write(conns[i], payloads[i]);
    guest.close(conns[i]);
  }
  await guest.until(() => conns.every((c) => c.eof), 60000, "all echoed");
  for (let i = 0; i < count; i++) assert.equal(sha(conns[i].takeReceived()), sha(payloads[i]));
  await echoing;
  await guest.until(() => tcp.flows.size === 0 || tcp.flows.size <= count, 1000);
  server.close();
  close();
});

Deno.test({
  name: "`TcpTranslator` moves 100 MB each way intact (TPASST_TCP_LONG=1)",
  ignore: !Deno.env.get("TPASST_TCP_LONG"),
  async fn() {
    const { guest, close } = setup(4);
    const { listener: server, port } = loopbackListener();
    const chunk = pattern(1024 * 1024, 11);
    const chunks = 100;
    const want = createHash("sha256");
    for (let i = 0; i < chunks; i++) want.update(chunk);
    const wantHex = want.digest("hex");
    const hostHash = createHash("sha256");
    const served = (async () => {
      const conn = await server.accept();
      const reading = (async () => {
        const buf = new Uint8Array(1 << 20);
        while (true) {
          const n = await conn.read(buf);
          if (n === null) break;
          hostHash.update(buf.subarray(0, n));
        }
      })();
      for (let i = 0; i < chunks; i++) await writeAll(conn, chunk);
      await (conn as Deno.TcpConn).closeWrite();
      await reading;
      conn.close();
    })();
    const c = guest.connect(TEST_GATEWAY4, port);
    c.discardReceived = true;
    const got = createHash("sha256");
    c.onData = (d) => got.update(d);
    await c.until(() => c.state === "established", 5000, "established");
    for (let i = 0; i < chunks; i++) {
      guest.write(c, chunk);
      await c.until(() => c.sendQueueBytes < 8 * 1024 * 1024, 60000, "send queue");
    }
    guest.close(c);
    await c.until(() => c.eof, 120000, "eof");
    await served;
    assert.equal(got.digest("hex"), wantHex);
    assert.equal(hostHash.digest("hex"), wantHex);
    server.close();
    close();
  },
});

Deno.test("`TcpTranslator.listen()` forwards an IPv6 host connection with MSS and window scale offered", async () => {
  const { tcp, guest, close } = setup(6);
  guest.recordHeaders = true;
  guest.listening.add(2222);
  const l = tcp.listen("::1", 0, 2222);
  const port = l.port;
  const client = await Deno.connect({ hostname: "::1", port });
  await guest.until(() => guest.accepted.length === 1, 5000, "accept");
  const c = guest.accepted[0];
  assert.deepEqual(c.remote6, TEST_GATEWAY6, "host loopback appears as the IPv6 gateway");
  const syn = guest.headers.find((h) => (h.flags & 0x12) === 0x02)!;
  assert.equal(syn.mss, 65520 - 60);
  assert.equal(syn.windowScale, 7);
  const data = pattern(300_000, 5);
  await writeAll(client, data);
  await c.until(() => c.receivedBytes === data.length, 5000, "data");
  assert.equal(sha(c.takeReceived()), sha(data));
  client.close();
  await c.until(() => c.eof, 5000, "eof");
  guest.close(c);
  await c.until(() => c.finAcked, 5000, "FIN acked");
  close();
});

Deno.test("`TcpTranslator` recovers from frames lost in both directions", async () => {
  const { tcp, guest, close } = setup(4, { bufferSize: 64 * 1024 });
  guest.mss = 1400;
  const { listener: server, port } = loopbackListener();
  const up = pattern(300_000, 21);
  const down = pattern(350_000, 22);
  const served = serveExchange(server, down);
  // Losses from the start: the host's data reaches the guest as soon as it connects.
  guest.loseToGuestOneIn = 29;
  guest.loseFromGuestOneIn = 31;
  const c = guest.connect(TEST_GATEWAY4, port);
  await exchangeWhole(guest, c, up, down, served);
  assert.ok(tcp.counters.retransmits > 0, "lost segments were retransmitted");
  assert.ok(tcp.counters.badSegments > 0, "out-of-order guest segments were dropped");
  server.close();
  close();
});

Deno.test("`TcpTranslator` fills a run of frames with one peek where the link reserves runs, and recovers from frames of a run lost", async () => {
  for (const family of [4, 6] as const) {
    const { tcp, guest, close } = setup(family);
    guest.mss = 1400;
    guest.l4ChecksumsOptional = true;
    guest.runFrames = 8;
    guest.recordHeaders = true;
    guest.loseToGuestOneIn = 23;
    const down = pattern(1024 * 1024 + 7, 41);
    assert.equal(sha(await downloadFromHost(guest, family, down, 30000)), sha(down));
    assert.ok(guest.runsReserved > 0, "runs were reserved");
    assert.ok(tcp.counters.retransmits > 0, "lost frames were sent again");
    assert.equal(Math.max(...guest.headers.map((h) => h.payloadLength)), guest.mss);
    close();
  }
});

Deno.test("`TcpTranslator` sends a short message in one frame, not a run: a run only follows a peek that filled its room", async () => {
  const { guest, close } = setup();
  guest.mss = 1400;
  guest.l4ChecksumsOptional = true;
  guest.runFrames = 8;
  const { listener: server, port } = loopbackListener();
  try {
    const c = guest.connect(TEST_GATEWAY4, port);
    const host = await server.accept();
    await c.until(() => c.state === "established", 5000, "established");
    for (let i = 1; i <= 3; i++) {
      await writeAll(host, new Uint8Array(100).fill(i));
      await c.until(() => c.totalReceived === 100 * i, 5000, `message ${i}`);
    }
    assert.equal(guest.runsReserved, 0, "each message in one frame, the window left alone");
    const bulk = pattern(512 * 1024, 43);
    const writing = writeAll(host, bulk);
    await c.until(() => c.totalReceived === 300 + bulk.length, 10_000, "the bulk data");
    await writing;
    assert.ok(guest.runsReserved > 0, "bulk data went in runs");
    const received = c.takeReceived();
    assert.equal(sha(received.subarray(300)), sha(bulk));
    host.close();
  } finally {
    server.close();
    close();
  }
});

Deno.test("`TcpTranslator` keeps what a stuck guest has not taken in the host socket, not in user space", async () => {
  const { tcp, guest, close } = setup(4);
  const { listener: server, port } = loopbackListener();
  try {
    // A guest that opens no window: what the host sends stays queued in the kernel.
    guest.rcvWindow = 0;
    const stuck = guest.connect(TEST_GATEWAY4, port);
    const stuckHost = await server.accept();
    await stuck.until(() => stuck.state === "established", 5000, "established");
    const sent = 256 * 1024;
    await writeAll(stuckHost, new Uint8Array(sent).fill(0x42));
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.ok(stuck.receivedBytes <= 1, `only a window probe passes (got ${stuck.receivedBytes})`);
    // No buffer in the flow holds it: nothing larger than an IPv6 address.
    let flows = 0;
    tcp.flows.forEach((f) => {
      flows++;
      for (const value of Object.values(f)) {
        if (value instanceof Uint8Array) assert.ok(value.length <= 16, "a data buffer in a flow");
      }
    });
    assert.equal(flows, 1);
    // The window opens: everything comes, from the kernel's queue.
    stuck.rcvWindow = 1 << 20;
    guest.sendAck(stuck);
    await stuck.until(
      () => stuck.totalReceived === sent,
      10_000,
      "all data after the window opened",
    );
    assert.ok(stuck.takeReceived().every((b) => b === 0x42));
    stuckHost.close();
  } finally {
    server.close();
    close();
  }
});

Deno.test("`TcpTranslator` keeps a flow's recovery point at the acknowledged edge outside recovery", async () => {
  // Left at the ISN, `recover` would be 2^31 behind after 2 GiB, and sequence
  // comparisons would then take every ACK for a partial ACK in recovery: a
  // retransmission per ACK and no fast retransmit, until the next 2 GiB.
  const { tcp, guest, close } = setup();
  const { listener: server, port } = loopbackListener();
  const down = pattern(300_000, 31);
  const served = (async () => {
    const conn = await server.accept();
    await writeAll(conn, down);
    return conn;
  })();
  const c = guest.connect(TEST_GATEWAY4, port);
  await c.until(() => c.receivedBytes === down.length, 10_000, "all data");
  const host = await served;
  let checked = 0;
  tcp.flows.forEach((f) => {
    assert.equal(f.recover, f.sndUna, "recover follows what the guest acknowledged");
    checked++;
  });
  assert.equal(checked, 1);
  assert.equal(tcp.counters.retransmits, 0, "no loss, no retransmission");
  host.close();
  guest.close(c);
  server.close();
  close();
});

for (const segmentation of [true, false]) {
  Deno.test(`\`TcpTranslator\` sends the guest ${segmentation ? "64 KiB frames of MSS-sized segments with segmentation offload" : "MSS-sized segments without segmentation offload"} (IPv4 and IPv6)`, async () => {
    for (const [family, runFrames] of [[4, 1], [6, 1], [4, 16], [6, 16]] as const) {
      const { guest, close } = setup(family);
      guest.mss = 1460 - (family === 6 ? 20 : 0); // an MTU 1500 guest
      guest.l4ChecksumsOptional = true;
      guest.runFrames = runFrames;
      guest.tcpSegmentation = segmentation ? TcpSegmentation.Ipv4 | TcpSegmentation.Ipv6 : 0;
      guest.recordHeaders = true;
      const down = pattern(2 * 1024 * 1024 + 5, 13);
      assert.equal(sha(await downloadFromHost(guest, family, down, 30000)), sha(down));
      const largest = Math.max(...guest.headers.map((h) => h.payloadLength));
      assert.equal(guest.unexpectedSegmentation, 0);
      assert.equal(guest.runsReserved > 0, runFrames > 1, "runs where the link reserves them");
      if (segmentation) {
        assert.ok(guest.segmentSizes.length > 0, "large frames were sent");
        assert.ok(
          guest.segmentSizes.every((s) => s === guest.mss),
          "segment size = the guest's MSS",
        );
        assert.ok(largest > 30 * guest.mss, `largest payload ${largest} spans many segments`);
      } else {
        assert.equal(guest.segmentSizes.length, 0);
        assert.equal(largest, guest.mss, "no payload beyond the guest's MSS");
      }
      close();
    }
  });
}

Deno.test("`TcpTranslator` keeps segments and its SYN-ACK's MSS within the guest device's MTU (host_mtu 1500)", async () => {
  for (const family of [4, 6] as const) {
    const { guest, close } = setup(family);
    guest.deviceMtu = 1500; // the guest's own MSS (65000) is larger
    guest.recordHeaders = true;
    const down = pattern(512 * 1024 + 3, 17);
    assert.equal(sha(await downloadFromHost(guest, family, down, 30000)), sha(down));
    const mss = 1500 - (family === 4 ? 40 : 60);
    const synAck = guest.headers.find((h) => h.flags & 0x02);
    assert.equal(synAck?.mss, mss, "the SYN-ACK offers the device MTU's MSS");
    assert.equal(Math.max(...guest.headers.map((h) => h.payloadLength)), mss);
    close();
  }
});
