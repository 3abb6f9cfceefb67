import assert from "node:assert/strict";
import dgram from "node:dgram";
import { Buffer } from "node:buffer";
import { GuestSender } from "../guest_sender.ts";
import { UdpTranslator, type UdpTranslatorOptions } from "./translator.ts";
import { TcpTranslator } from "../tcp/translator.ts";
import { TestGuest } from "../../../tests/support/net/tcp_guest.ts";
import {
  TEST_DNS4,
  TEST_GATEWAY4,
  TEST_GATEWAY6,
  TEST_GUEST4,
  TEST_GUEST6,
  testRules,
} from "../../../tests/support/net/tcp_plan.ts";
import type { ForwardRules } from "../plan/fwd.ts";
import { nextTask, PublishOnFlushLink } from "../../../tests/support/net/recording_link.ts";
import { type L4Handler, newL4Packet } from "../l4_handler.ts";
import { recordingLogger } from "../../../tests/support/recording_logger.ts";
import { canUnshare, runInNetNamespace } from "../../../tests/support/net_namespace.ts";
import { openFdCount } from "../../../ffi/process.ts";
import { WOULD_BLOCK } from "../../../ffi/tcp_socket.ts";
import { waitUntil } from "../../../tests/support/wait_until.ts";
import {
  UDP_MAX_BATCH,
  UDP_MAX_SEGMENTS,
  UdpMessageRecords,
  UdpSocket,
} from "../../../ffi/udp_socket.ts";
import {
  type FrameSpace,
  type GuestLink,
  MAX_FRAME_LENGTH,
  SendResult,
} from "../../tap/frame_transport.ts";
import { ScratchFrame } from "../../tap/scratch_frame.ts";
import { ETH_HEADER_LENGTH } from "../wire/ethernet.ts";
import { IPV4_HEADER_MIN } from "../wire/ipv4.ts";
import { IPPROTO_UDP } from "../wire/ip_protocol.ts";
import { buildUdp, newUdpHeader, parseUdp, UDP_HEADER_LENGTH, UDP_LENGTH } from "../wire/udp.ts";

function setup(
  family: 4 | 6 = 4,
  rules: ForwardRules = testRules(),
  options: UdpTranslatorOptions = {},
) {
  const sender = new GuestSender(0x9a559a559a55);
  const udp = new UdpTranslator(sender, rules, options);
  const tcp = new TcpTranslator(sender, rules);
  const guest = new TestGuest(tcp, udp, family, TEST_GUEST4, TEST_GUEST6);
  sender.setLink(guest);
  guest.onWritable((now) => tcp.linkWritable(now));
  return {
    sender,
    udp,
    tcp,
    guest,
    close: () => {
      guest.stop();
      udp.close();
      tcp.close();
    },
  };
}

/** A UDP echo server on loopback recording the source ports it saw. */
async function echoServer(type: "udp4" | "udp6") {
  const sock = dgram.createSocket(type);
  const seen: number[] = [];
  sock.on("message", (msg, r) => {
    seen.push(r.port);
    sock.send(Buffer.concat([Buffer.from("echo:"), msg]), r.port, r.address);
  });
  await new Promise<void>((res) => sock.bind(0, type === "udp4" ? "127.0.0.1" : "::1", res));
  return { sock, port: sock.address().port, seen };
}

/** 127.0.0.1 as address bytes. */
const LOOPBACK4_BYTES = new Uint8Array([127, 0, 0, 1]);

function freeUdpPort(): number {
  // Ports in 20000..29999 chosen at random; collisions only cause the ephemeral fallback.
  return 20000 + Math.floor(Math.random() * 10000);
}

Deno.test("`UdpTranslator` echoes a guest datagram through the host keeping the source port", async () => {
  for (const family of [4, 6] as const) {
    const { udp, guest, close } = setup(family);
    const echo = await echoServer(family === 4 ? "udp4" : "udp6");
    const srcPort = freeUdpPort();
    guest.sendUdp(
      srcPort,
      TEST_GATEWAY4,
      echo.port,
      new TextEncoder().encode("ping"),
      family === 6 ? TEST_GATEWAY6 : undefined,
    );
    await guest.until(() => guest.datagrams.length > 0, 5000, "echo reply");
    const d = guest.datagrams[0];
    assert.equal(new TextDecoder().decode(d.data), "echo:ping");
    assert.equal(d.toPort, srcPort);
    assert.equal(d.fromPort, echo.port);
    if (family === 4) assert.equal(d.from4, TEST_GATEWAY4);
    else assert.deepEqual(d.from6, TEST_GATEWAY6);
    if (udp.counters.ephemeralFallback === 0) assert.deepEqual(echo.seen, [srcPort]);
    assert.equal(udp.flows.size, 1);
    echo.sock.close();
    close();
  }
});

Deno.test("`UdpTranslator` ends every datagram from the host with a flush", async () => {
  const { sender, guest, close } = setup(4);
  // The guest sees a frame only once flushed, and its own timer (whose endOfBatch
  // flushes too) is off: only the sender's flush at the end of the task delivers.
  guest.stop();
  const link = new PublishOnFlushLink(guest);
  sender.setLink(link);
  const echo = await echoServer("udp4");
  const srcPort = freeUdpPort();
  for (let i = 0; i < 5; i++) {
    guest.sendUdp(srcPort, TEST_GATEWAY4, echo.port, new TextEncoder().encode(`n${i}`));
  }
  await guest.until(() => guest.datagrams.length === 5, 2000, "five echo replies");
  await nextTask();
  assert.equal(link.unflushedFrames, 0);
  assert.equal(link.flushedFrames, 5);
  echo.sock.close();
  close();
});

Deno.test("`UdpTranslator.listen()` forwards a host port to the guest and carries the reply back", async () => {
  const { udp, guest, close } = setup(4);
  const hostPort = await udp.listen("127.0.0.1", 0, 5353);
  const client = dgram.createSocket("udp4");
  await new Promise<void>((res) => client.bind(0, "127.0.0.1", res));
  const replies: string[] = [];
  const replyFrom: number[] = [];
  client.on("message", (m, r) => {
    replies.push(m.toString());
    replyFrom.push(r.port);
  });
  client.send(Buffer.from("hello guest"), hostPort, "127.0.0.1");
  await guest.until(() => guest.datagrams.length > 0, 5000, "inbound datagram");
  const d = guest.datagrams[0];
  assert.equal(new TextDecoder().decode(d.data), "hello guest");
  assert.equal(d.toPort, 5353);
  assert.equal(d.from4, TEST_GATEWAY4);
  assert.equal(d.fromPort, client.address().port);
  guest.sendUdp(5353, TEST_GATEWAY4, d.fromPort, new TextEncoder().encode("hello host"));
  await guest.until(() => replies.length > 0, 5000, "reply at the host");
  assert.deepEqual(replies, ["hello host"]);
  assert.deepEqual(replyFrom, [hostPort]);
  client.close();
  close();
});

Deno.test("`UdpTranslator` stops at a guest link without room and counts it", async () => {
  const { udp, guest, close } = setup(4);
  const echo = await echoServer("udp4");
  guest.noRoom = true;
  guest.sendUdp(freeUdpPort(), TEST_GATEWAY4, echo.port, new Uint8Array([1, 2, 3]));
  await guest.until(() => udp.counters.noRoom > 0, 5000, "no-room drop");
  assert.equal(guest.datagrams.length, 0);
  echo.sock.close();
  close();
});

Deno.test("`UdpTranslator` forwards DNS to the configured resolver and answers from the DNS address", async () => {
  const resolver = dgram.createSocket("udp4");
  const queries: Buffer[] = [];
  resolver.on("message", (m, r) => {
    queries.push(m);
    const answer = Buffer.from(m);
    answer[2] |= 0x80; // QR: response
    resolver.send(answer, r.port, r.address);
  });
  await new Promise<void>((res) => resolver.bind(0, "127.0.0.1", res));
  const rules = testRules("127.0.0.1", { dnsHostPort: resolver.address().port });
  const { guest, close } = setup(4, rules);
  // A minimal query: id 0x1234, RD, one question "a." IN A.
  const q = new Uint8Array([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0x61, 0, 0, 1, 0, 1]);
  guest.sendUdp(freeUdpPort(), TEST_DNS4, 53, q);
  await guest.until(() => guest.datagrams.length > 0, 5000, "DNS answer");
  const d = guest.datagrams[0];
  assert.equal(d.from4, TEST_DNS4);
  assert.equal(d.fromPort, 53);
  assert.equal(queries.length, 1);
  assert.equal(d.data[2] & 0x80, 0x80);
  assert.deepEqual(d.data.subarray(3), q.subarray(3));
  resolver.close();
  close();
});

Deno.test("`TcpTranslator` forwards DNS over TCP to the configured resolver", async () => {
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const rules = testRules("127.0.0.1", { dnsHostPort: (server.addr as Deno.NetAddr).port });
  const { guest, close } = setup(4, rules);
  const served = (async () => {
    const conn = await server.accept();
    const buf = new Uint8Array(100);
    const n = await conn.read(buf);
    await conn.write(buf.subarray(0, n!));
    conn.close();
  })();
  const c = guest.connect(TEST_DNS4, 53);
  await c.until(() => c.state === "established", 5000, "established");
  guest.write(c, new Uint8Array([0, 3, 9, 8, 7]));
  await c.until(() => c.eof, 5000, "eof");
  assert.deepEqual(c.takeReceived(), new Uint8Array([0, 3, 9, 8, 7]));
  await served;
  server.close();
  close();
});

Deno.test("`UdpTranslator` expires idle flows and closes their sockets, logging each flow's start and end at debug level", async () => {
  const { logger, lines } = recordingLogger({ level: "debug", withLevel: true });
  const { udp, tcp, guest } = setup(4, testRules(), { idleTimeoutMs: 200, logger });
  const echo = await echoServer("udp4");
  const srcPort = freeUdpPort();
  guest.sendUdp(srcPort, TEST_GATEWAY4, echo.port, new Uint8Array([1]));
  await guest.until(() => guest.datagrams.length === 1, 5000, "reply");
  assert.equal(udp.flows.size, 1);
  await guest.until(() => udp.flows.size === 0, 5000, "expiry");
  assert.equal(udp.boundPort(srcPort), null, "the socket closed with its last flow");
  const flow = `udp outbound 10.0.2.15:${srcPort} -> 10.0.2.2:${echo.port} ` +
    `(host 127.0.0.1:${echo.port})`;
  assert.ok(lines.includes(`debug: ${flow} opened: datagram from the guest`), lines.join("\n"));
  assert.ok(
    lines.some((l) =>
      new RegExp(
        `^debug: ${flow.replace(/[.()]/g, "\\$&")} closed: idle for \\d+ ms; guest->host 1 B, ` +
          `host->guest ${guest.datagrams[0].data.length} B, after \\d+ ms$`,
      ).test(l)
    ),
    lines.join("\n"),
  );
  echo.sock.close();
  guest.stop();
  udp.close();
  tcp.close();
});

Deno.test("`UdpTranslator` drops new flows beyond the flow limit and counts them", async () => {
  const { udp, tcp, guest } = setup(4, testRules(), { maxFlows: 3 });
  const echo = await echoServer("udp4");
  const base = freeUdpPort();
  for (let i = 0; i < 5; i++) {
    guest.sendUdp(base + i, TEST_GATEWAY4, echo.port, new Uint8Array([i]));
  }
  assert.equal(udp.flows.size, 3);
  assert.equal(udp.counters.tableFull, 2);
  await guest.until(() => guest.datagrams.length === 3, 5000, "three replies");
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(guest.datagrams.map((d) => d.data[5]).sort(), [0, 1, 2]);
  echo.sock.close();
  guest.stop();
  udp.close();
  tcp.close();
});

Deno.test("`UdpTranslator.listen()` forwards an IPv6 host port, shown from the IPv6 gateway", async () => {
  const { udp, guest, close } = setup(6);
  const hostPort = await udp.listen("::1", 0, 7000);
  const client = dgram.createSocket("udp6");
  await new Promise<void>((res) => client.bind(0, "::1", res));
  const replies: string[] = [];
  client.on("message", (m) => replies.push(m.toString()));
  client.send(Buffer.from("v6 hello"), hostPort, "::1");
  await guest.until(() => guest.datagrams.length > 0, 5000, "inbound datagram");
  const d = guest.datagrams[0];
  assert.deepEqual(d.from6, TEST_GATEWAY6);
  assert.equal(d.toPort, 7000);
  guest.sendUdp(7000, 0, d.fromPort, new TextEncoder().encode("v6 reply"), TEST_GATEWAY6);
  await guest.until(() => replies.length > 0, 5000, "reply at the host");
  assert.deepEqual(replies, ["v6 reply"]);
  client.close();
  close();
});

/** Datagrams the lossless test sends from the host toward the guest. */
const LOSSLESS_COUNT = 100_000;
/** Frames the test link's RX ring holds before it answers NoRoom. */
const TEST_RING_FRAMES = 32;
/** How often the test guest empties its RX ring, in ms (slower than the peer sends). */
const RING_DRAIN_INTERVAL_MS = 2;
/** Guest port the lossless test's forward delivers to. */
const LOSSLESS_GUEST_PORT = 5353;
/** Offset of the UDP payload in an IPv4 frame from the translator (Ethernet + IPv4 + UDP). */
const IPV4_UDP_PAYLOAD_OFFSET = 14 + 20 + 8;

/**
 * A guest link with a fixed RX ring of {@link TEST_RING_FRAMES} frames that the guest
 * empties on a timer: when the ring is full sendFrame answers NoRoom, and the next
 * drain runs the writable callback, as the vhost-user link does on the guest's kick.
 * Records which sequence numbers (first 4 payload bytes) arrived.
 */
class DrainedRingLink implements GuestLink {
  readonly kind = "drained-ring";
  readonly l4ChecksumsOptional = false;
  readonly tcpSegmentation = 0;
  readonly deviceMtu = 0;
  readonly maxFrameLength = MAX_FRAME_LENGTH;
  readonly seen: Uint8Array;
  delivered = 0;
  duplicates = 0;
  noRoomAnswers = 0;
  #inRing = 0;
  #wantsWritable = false;
  #writable: ((now: number) => void) | null = null;
  readonly #timer: ReturnType<typeof setInterval>;
  readonly #scratch = new ScratchFrame();

  constructor(count: number) {
    this.seen = new Uint8Array(count);
    this.#timer = setInterval(() => this.#drain(), RING_DRAIN_INTERVAL_MS);
  }

  sendFrame(frame: Uint8Array): SendResult {
    if (this.#inRing >= TEST_RING_FRAMES) {
      this.noRoomAnswers++;
      this.#wantsWritable = true;
      return SendResult.NoRoom;
    }
    this.#inRing++;
    const seq = new DataView(frame.buffer, frame.byteOffset).getUint32(IPV4_UDP_PAYLOAD_OFFSET);
    if (seq < this.seen.length && this.seen[seq] === 0) {
      this.seen[seq] = 1;
      this.delivered++;
    } else this.duplicates++;
    return SendResult.Sent;
  }

  /** Reserved frames (TCP's) go through sendFrame like the others. */
  reserveFrame(space: FrameSpace, maxLength: number, _headerLength: number): SendResult {
    return this.#scratch.reserve(space, maxLength);
  }

  commitFrame(length: number): SendResult {
    const frame = this.#scratch.take(length);
    return frame === null ? SendResult.Dropped : this.sendFrame(frame);
  }

  cancelFrame(): void {
    this.#scratch.cancel();
  }

  flush(): void {}

  onWritable(callback: (now: number) => void): void {
    this.#writable = callback;
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  #drain(): void {
    this.#inRing = 0;
    if (this.#wantsWritable) {
      this.#wantsWritable = false;
      this.#writable?.(performance.now());
    }
  }
}

/**
 * The kernel's receive queue (bytes) and drop count of the UDP socket bound to
 * 127.0.0.1:`port`, from /proc/net/udp.
 */
function kernelUdpQueue(port: number): { queued: number; drops: number } {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  // The kernel writes /proc/net/udp in pieces while sockets come and go (other tests,
  // other processes): one read may miss a socket that exists, so a few reads are tried.
  for (let read = 0; read < PROC_NET_UDP_READS; read++) {
    for (const line of Deno.readTextFileSync("/proc/net/udp").split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[1] !== local) continue;
      return { queued: parseInt(f[4].split(":")[1], 16), drops: Number(f[12]) };
    }
  }
  throw new Error(`no UDP socket on 127.0.0.1 port ${port} in ${PROC_NET_UDP_READS} reads`);
}

/** Reads of /proc/net/udp before {@link kernelUdpQueue} says a socket is missing. */
const PROC_NET_UDP_READS = 5;

Deno.test("`UdpTranslator` delivers every datagram from a host peer to a guest whose RX ring fills", async () => {
  const sender = new GuestSender(0x9a559a559a55);
  const udp = new UdpTranslator(sender, testRules());
  const handler: L4Handler = udp;
  const link = new DrainedRingLink(LOSSLESS_COUNT);
  sender.setLink(link);
  link.onWritable((now) => {
    handler.linkWritable?.(now);
    sender.flush();
  });
  sender.guestIpv4Seen = TEST_GUEST4;
  const hostPort = await udp.listen("127.0.0.1", 0, LOSSLESS_GUEST_PORT);
  const peer = dgram.createSocket("udp4");
  await new Promise<void>((res) => peer.bind(0, "127.0.0.1", res));
  // The peer keeps the kernel's queue toward the translator short (a quarter of the
  // default 208 KiB receive buffer), so that any loss is the translator's.
  const QUEUE_LIMIT_BYTES = 48 * 1024;
  const BURST = 32;
  const datagram = new Uint8Array(32);
  const view = new DataView(datagram.buffer);
  const deadline = performance.now() + 120_000;
  try {
    let sent = 0;
    let inSend = 0;
    while (sent < LOSSLESS_COUNT && performance.now() < deadline) {
      // One burst at a time: dgram sends complete asynchronously.
      if (inSend === 0 && kernelUdpQueue(hostPort).queued < QUEUE_LIMIT_BYTES) {
        for (let i = 0; i < BURST && sent < LOSSLESS_COUNT; i++, sent++) {
          view.setUint32(0, sent);
          inSend++;
          peer.send(Buffer.from(datagram), hostPort, "127.0.0.1", () => inSend--);
        }
      }
      await new Promise((r) => setImmediate(r));
    }
    // Wait until nothing more arrives for a second.
    let last = -1;
    while (link.delivered !== last && link.delivered < LOSSLESS_COUNT) {
      last = link.delivered;
      await new Promise((r) => setTimeout(r, 1000));
    }
    const kernel = kernelUdpQueue(hostPort);
    const detail = `delivered ${link.delivered} of ${LOSSLESS_COUNT} ` +
      `(${(link.delivered / LOSSLESS_COUNT).toFixed(4)}), NoRoom answers ${link.noRoomAnswers}, ` +
      `kernel drops ${kernel.drops}, counters ${JSON.stringify(udp.counters)}`;
    console.log(`lossless test: ${detail}`);
    assert.equal(sent, LOSSLESS_COUNT, `the peer sent only ${sent} in time`);
    assert.equal(link.duplicates, 0, detail);
    assert.equal(link.delivered, LOSSLESS_COUNT, detail);
  } finally {
    link.stop();
    peer.close();
    udp.close();
  }
});

/** Receives on a dgram socket, recording payloads as text. */
async function recordingPeer() {
  const sock = dgram.createSocket("udp4");
  const got: string[] = [];
  sock.on("message", (m) => got.push(m.toString()));
  await new Promise<void>((res) => sock.bind(0, "127.0.0.1", res));
  return { sock, port: sock.address().port, got };
}

Deno.test("`UdpTranslator` sends a batch's datagrams toward the host at `endOfBatch()`, in order", async () => {
  const { udp, tcp, guest } = setup(4, testRules());
  const peer = await recordingPeer();
  try {
    // Straight to the handler, as the stack does within one TX batch. Every size
    // differs, so no run of one size leaves as one segmented message.
    const texts = Array.from({ length: 100 }, (_, i) => `datagram ${i} ${"x".repeat(i)}`);
    const srcPort = freeUdpPort();
    for (const t of texts) {
      guest.sendUdpWithoutBatchEnd(srcPort, TEST_GATEWAY4, peer.port, new TextEncoder().encode(t));
    }
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(udp.counters.toHost, 64, "a full queue (64 datagrams) left early");
    udp.endOfBatch(performance.now());
    assert.equal(udp.counters.toHost, 100);
    await guest.until(() => peer.got.length === texts.length, 5000, "all datagrams at the peer");
    assert.deepEqual(peer.got, texts);
  } finally {
    peer.sock.close();
    guest.stop();
    udp.close();
    tcp.close();
  }
});

Deno.test("`UdpTranslator` keeps datagrams toward a full guest link in the kernel and delivers them on writable", async () => {
  const { udp, tcp, guest, close } = setup(4);
  guest.onWritable((now) => {
    tcp.linkWritable(now);
    udp.linkWritable(now);
  });
  const hostPort = await udp.listen("127.0.0.1", 0, 6000);
  const client = await recordingPeer();
  try {
    guest.noRoom = true;
    const texts = Array.from({ length: 50 }, (_, i) => `held ${i}`);
    // One at a time: node:dgram sends what is queued at once in reverse order.
    for (const t of texts) {
      await new Promise((done) => client.sock.send(Buffer.from(t), hostPort, "127.0.0.1", done));
    }
    await guest.until(() => udp.counters.noRoom > 0, 5000, "the link's NoRoom");
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(udp.counters.noRoom, 1, "one NoRoom, then the sockets are not read");
    assert.equal(guest.datagrams.length, 0);
    guest.makeRoom();
    await guest.until(() => guest.datagrams.length === texts.length, 5000, "every datagram");
    assert.deepEqual(guest.datagrams.map((d) => new TextDecoder().decode(d.data)), texts);
    assert.equal(udp.counters.dropped, 0);
  } finally {
    client.sock.close();
    close();
  }
});

Deno.test("`UdpTranslator` counts a datagram the kernel refuses and still sends the rest of the batch", async () => {
  const { logger, lines } = recordingLogger({ level: "debug" });
  const { udp, tcp, guest } = setup(4, testRules(), { logger });
  const peer = await recordingPeer();
  try {
    // 127.255.255.255 is the loopback broadcast address: without SO_BROADCAST the
    // kernel refuses it (EACCES) and nothing leaves.
    const srcPort = freeUdpPort();
    const send = (dst: number, port: number, t: string) =>
      guest.sendUdpWithoutBatchEnd(srcPort, dst, port, new TextEncoder().encode(t));
    send(0x7fffffff, 9, "refused 1");
    send(TEST_GATEWAY4, peer.port, "first");
    send(0x7fffffff, 9, "refused 2");
    send(TEST_GATEWAY4, peer.port, "second");
    udp.endOfBatch(performance.now());
    assert.equal(udp.counters.socketErrors, 2);
    assert.equal(udp.counters.toHost, 2);
    await guest.until(() => peer.got.length === 2, 5000, "the two good datagrams");
    assert.deepEqual(peer.got, ["first", "second"]);
    const errors = lines.filter((l) => /udp: send to 127\.255\.255\.255 port 9 failed/.test(l));
    assert.equal(errors.length, 1, `rate-limited to one line:\n${lines.join("\n")}`);
  } finally {
    peer.sock.close();
    guest.stop();
    udp.close();
    tcp.close();
  }
});

/** Room per datagram at {@link datagramSink}: any UDP payload. */
const SINK_SLOT_SIZE = 65536;

/** A UDP socket on 127.0.0.1 that receives datagrams one by one, in arrival order. */
function datagramSink() {
  const socket = UdpSocket.open(4, { address: LOOPBACK4_BYTES });
  const buffer = new Uint8Array(SINK_SLOT_SIZE * UDP_MAX_BATCH);
  const records = new UdpMessageRecords(UDP_MAX_BATCH);
  const got: Uint8Array[] = [];
  return {
    port: socket.localAddress().port,
    got,
    /** Receives until `count` datagrams arrived (bounded by 5 s). */
    async receive(count: number): Promise<Uint8Array[]> {
      await waitUntil(`${count} datagrams at the sink`, () => {
        for (;;) {
          const n = socket.receiveBatch(buffer, SINK_SLOT_SIZE, records);
          if (n === WOULD_BLOCK) break;
          for (let i = 0; i < n; i++) {
            assert.equal(records.truncated(i), false);
            got.push(buffer.slice(records.offset(i), records.offset(i) + records.length(i)));
          }
        }
        return got.length >= count;
      }, 5_000);
      return got;
    },
    close: () => socket.close(),
  };
}

/** Payload `i` of `length` bytes, each datagram's bytes distinct from its neighbours'. */
function numberedPayload(i: number, length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, k) => (i * 7 + k) & 0xff);
}

/** Sends `payloads` from guest port `srcPort` to `port` of the gateway as one TX batch. */
function sendOneBatch(
  guest: TestGuest,
  udp: UdpTranslator,
  srcPort: number,
  port: number,
  payloads: Uint8Array[],
): void {
  for (const p of payloads) guest.sendUdpWithoutBatchEnd(srcPort, TEST_GATEWAY4, port, p);
  udp.endOfBatch(performance.now());
}

Deno.test("`UdpTranslator` sends a batch's run of same-size datagrams as one segmented message, which arrives as the datagrams in order", async () => {
  const { udp, guest, close } = setup(4);
  const sink = datagramSink();
  try {
    const payloads = Array.from({ length: 40 }, (_, i) => numberedPayload(i, 1400));
    sendOneBatch(guest, udp, freeUdpPort(), sink.port, payloads);
    assert.equal(udp.counters.toHost, 40, "every datagram counted");
    assert.equal(udp.counters.segmentedSends, 1, "one message with UDP_SEGMENT");
    assert.deepEqual(await sink.receive(40), payloads, "40 datagrams, as sent, in order");
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(sink.got.length, 40, "and no more");
    assert.equal(udp.counters.socketErrors, 0);
    assert.equal(udp.counters.dropped, 0);
  } finally {
    sink.close();
    close();
  }
});

Deno.test("`UdpTranslator` segments runs of one size (the last may be shorter) and sends other datagrams alone, in order", async () => {
  const { udp, guest, close } = setup(4);
  const sink = datagramSink();
  try {
    // Runs: [100 100 100 50] (a shorter one ends a run), [200 200]; 300, 400 and 500
    // each leave alone (a larger datagram starts a new run, which needs two).
    const sizes = [100, 100, 100, 50, 200, 200, 300, 400, 500];
    const payloads = sizes.map((n, i) => numberedPayload(i, n));
    sendOneBatch(guest, udp, freeUdpPort(), sink.port, payloads);
    assert.equal(udp.counters.toHost, sizes.length);
    assert.equal(udp.counters.segmentedSends, 2);
    assert.deepEqual(await sink.receive(sizes.length), payloads);
  } finally {
    sink.close();
    close();
  }
});

Deno.test("`UdpTranslator` keeps a segmented message within the kernel's 64 segments and 65,507 bytes", async () => {
  const { udp, guest, close } = setup(4);
  const sink = datagramSink();
  try {
    // 70 small ones: 64 in one message, 6 in the next.
    const small = Array.from({ length: UDP_MAX_SEGMENTS + 6 }, (_, i) => numberedPayload(i, 10));
    sendOneBatch(guest, udp, freeUdpPort(), sink.port, small);
    assert.equal(udp.counters.segmentedSends, 2);
    // 30,000 bytes each: two fit in 65,507 bytes, the third leaves alone.
    const large = Array.from({ length: 3 }, (_, i) => numberedPayload(i, 30_000));
    sendOneBatch(guest, udp, freeUdpPort(), sink.port, large);
    assert.equal(udp.counters.segmentedSends, 3);
    assert.equal(udp.counters.toHost, small.length + large.length);
    assert.equal(udp.counters.socketErrors, 0);
    const got = await sink.receive(small.length + large.length);
    assert.deepEqual(got.slice(0, small.length), small);
    assert.deepEqual(got.slice(small.length), large);
  } finally {
    sink.close();
    close();
  }
});

Deno.test("`UdpTranslator` does not segment datagrams of two flows interleaved in a batch, and keeps each flow's order", async () => {
  const { udp, guest, close } = setup(4);
  const a = datagramSink();
  const b = datagramSink();
  try {
    const srcPort = freeUdpPort();
    const toA = Array.from({ length: 5 }, (_, i) => numberedPayload(i, 500));
    const toB = Array.from({ length: 5 }, (_, i) => numberedPayload(i + 50, 500));
    for (let i = 0; i < 5; i++) {
      guest.sendUdpWithoutBatchEnd(srcPort, TEST_GATEWAY4, a.port, toA[i]);
      guest.sendUdpWithoutBatchEnd(srcPort, TEST_GATEWAY4, b.port, toB[i]);
    }
    udp.endOfBatch(performance.now());
    assert.equal(udp.counters.toHost, 10);
    assert.deepEqual(await a.receive(5), toA);
    assert.deepEqual(await b.receive(5), toB);
  } finally {
    a.close();
    b.close();
    close();
  }
});

/** A UDP socket in /proc/net/udp or /proc/net/udp6: local and remote port, remote address (hex as the kernel writes it). */
interface KernelUdpSocket {
  localPort: number;
  remoteAddress: string;
  remotePort: number;
}

/** IPv4 loopback 127.0.0.1 as /proc/net/udp writes it (host byte order, little-endian). */
const PROC_LOOPBACK4 = "0100007F";
/** An address that is not connected, as /proc/net/udp writes it. */
const PROC_ANY4 = "00000000";

/** The IPv4 UDP sockets whose local port is `port`, from /proc/net/udp. */
function kernelUdpSocketsOn(port: number): KernelUdpSocket[] {
  const out: KernelUdpSocket[] = [];
  for (const line of Deno.readTextFileSync("/proc/net/udp").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 3) continue;
    const [, localPort] = f[1].split(":");
    if (parseInt(localPort, 16) !== port) continue;
    const [remoteAddress, remotePort] = f[2].split(":");
    out.push({ localPort: port, remoteAddress, remotePort: parseInt(remotePort, 16) });
  }
  return out;
}

Deno.test("`UdpTranslator` sends a flow's datagrams from a socket connected to its peer, on the guest's source port", async () => {
  const { udp, guest, close } = setup(4);
  const echo = await echoServer("udp4");
  try {
    const srcPort = freeUdpPort();
    guest.sendUdp(srcPort, TEST_GATEWAY4, echo.port, new TextEncoder().encode("ping"));
    await guest.until(() => guest.datagrams.length === 1, 5000, "the echo");
    const bound = udp.boundPort(srcPort)!;
    assert.ok(bound > 0);
    const sockets = kernelUdpSocketsOn(bound);
    assert.ok(
      sockets.some((s) => s.remoteAddress === PROC_LOOPBACK4 && s.remotePort === echo.port),
      `a socket on port ${bound} connected to 127.0.0.1:${echo.port}: ${JSON.stringify(sockets)}`,
    );
    assert.ok(
      sockets.some((s) => s.remoteAddress === PROC_ANY4 && s.remotePort === 0),
      `the guest port's own (unconnected) socket: ${JSON.stringify(sockets)}`,
    );
    assert.deepEqual(echo.seen, [bound]);
  } finally {
    echo.sock.close();
    close();
  }
});

Deno.test("`UdpTranslator` gives each of many flows from one guest port its own connected socket", async () => {
  const FLOWS = 6;
  const { udp, guest, close } = setup(4);
  const echoes = await Promise.all(Array.from({ length: FLOWS }, () => echoServer("udp4")));
  try {
    const srcPort = freeUdpPort();
    for (const [i, echo] of echoes.entries()) {
      guest.sendUdp(srcPort, TEST_GATEWAY4, echo.port, new TextEncoder().encode(`to ${i}`));
    }
    await guest.until(() => guest.datagrams.length === FLOWS, 5000, "every echo");
    const bound = udp.boundPort(srcPort)!;
    const got = guest.datagrams.map((d) => [d.fromPort, new TextDecoder().decode(d.data)]);
    assert.deepEqual(
      got.sort(),
      echoes.map((e, i) => [e.port, `echo:to ${i}`]).sort(),
    );
    for (const echo of echoes) assert.deepEqual(echo.seen, [bound]);
    const sockets = kernelUdpSocketsOn(bound);
    const connected = sockets.filter((s) => s.remoteAddress === PROC_LOOPBACK4)
      .map((s) => s.remotePort).sort();
    assert.deepEqual(connected, echoes.map((e) => e.port).sort(), JSON.stringify(sockets));
    assert.equal(sockets.filter((s) => s.remoteAddress === PROC_ANY4).length, 1);
    assert.equal(udp.flows.size, FLOWS);
  } finally {
    for (const echo of echoes) echo.sock.close();
    close();
  }
});

Deno.test("`UdpTranslator` sends from the guest port's socket, with addresses, beyond the most flow sockets", async () => {
  const { udp, tcp, guest } = setup(4, testRules(), { maxFlowSockets: 1 });
  const echoes = [await echoServer("udp4"), await echoServer("udp4")];
  try {
    const srcPort = freeUdpPort();
    for (const echo of echoes) {
      guest.sendUdp(srcPort, TEST_GATEWAY4, echo.port, new TextEncoder().encode("hi"));
    }
    await guest.until(() => guest.datagrams.length === 2, 5000, "both echoes");
    const bound = udp.boundPort(srcPort)!;
    for (const echo of echoes) assert.deepEqual(echo.seen, [bound]);
    const connected = kernelUdpSocketsOn(bound).filter((s) => s.remoteAddress === PROC_LOOPBACK4);
    assert.deepEqual(connected.map((s) => s.remotePort), [echoes[0].port]);
    assert.equal(udp.counters.unconnectedFlows, 1);
  } finally {
    for (const echo of echoes) echo.sock.close();
    guest.stop();
    udp.close();
    tcp.close();
  }
});

Deno.test("`UdpTranslator` delivers a datagram from a second peer to the guest's port while a flow is connected, and carries the answer back", async () => {
  const { udp, guest, close } = setup(4);
  const echo = await echoServer("udp4");
  const stranger = await recordingPeer();
  try {
    const srcPort = freeUdpPort();
    guest.sendUdp(srcPort, TEST_GATEWAY4, echo.port, new TextEncoder().encode("ping"));
    await guest.until(() => guest.datagrams.length === 1, 5000, "the echo");
    const bound = udp.boundPort(srcPort)!;
    stranger.sock.send(Buffer.from("from a stranger"), bound, "127.0.0.1");
    await guest.until(() => guest.datagrams.length === 2, 5000, "the stranger's datagram");
    const d = guest.datagrams[1];
    assert.equal(new TextDecoder().decode(d.data), "from a stranger");
    assert.equal(d.toPort, srcPort);
    assert.equal(d.from4, TEST_GATEWAY4);
    assert.equal(
      d.fromPort,
      stranger.port,
      JSON.stringify({
        echo: echo.port,
        d: guest.datagrams.map((x) => [x.fromPort, x.toPort, new TextDecoder().decode(x.data)]),
      }),
    );
    guest.sendUdp(srcPort, TEST_GATEWAY4, stranger.port, new TextEncoder().encode("answer"));
    await guest.until(() => stranger.got.length === 1, 5000, "the answer at the stranger");
    assert.deepEqual(stranger.got, ["answer"]);
    // The first flow still works.
    guest.sendUdp(srcPort, TEST_GATEWAY4, echo.port, new TextEncoder().encode("again"));
    await guest.until(() => guest.datagrams.length === 3, 5000, "the second echo");
    assert.equal(new TextDecoder().decode(guest.datagrams[2].data), "echo:again");
    assert.deepEqual(echo.seen, [bound, bound]);
    assert.equal(udp.flows.size, 2);
  } finally {
    echo.sock.close();
    stranger.sock.close();
    close();
  }
});

Deno.test("`UdpTranslator` logs a refusal the flow's socket reports while idle without calling it an error", async () => {
  const { logger, lines } = recordingLogger({ level: "debug" });
  const { udp, guest, close } = setup(4, testRules(), { logger });
  const probe = UdpSocket.open(4, { address: LOOPBACK4_BYTES, port: 0 });
  const closedPort = probe.localAddress().port;
  probe.close();
  try {
    guest.sendUdp(freeUdpPort(), TEST_GATEWAY4, closedPort, new TextEncoder().encode("first"));
    // Nothing more is sent: the refusal arrives as an error event on the socket.
    await waitUntil("the refusal counted", () => udp.counters.socketErrors >= 1, 5_000);
    assert.equal(lines.filter((l) => /refused/i.test(l)).length, 1, lines.join("\n"));
    // The peer's answer, not a fault of the daemon: no line calls it an error (the
    // testpmd test fails on any line with the word).
    assert.deepEqual(lines.filter((l) => /\berror\b/i.test(l)), []);
    assert.equal(udp.flows.size, 1);
  } finally {
    close();
  }
});

Deno.test("`UdpTranslator` counts an ICMP error on a flow's socket and keeps the flow working both ways", async () => {
  const { logger, lines } = recordingLogger({ level: "debug" });
  const { udp, tcp, guest } = setup(4, testRules(), { logger });
  // A loopback port nobody listens on: a datagram to it comes back as ICMP port
  // unreachable, which a connected socket reports as ECONNREFUSED.
  const probe = UdpSocket.open(4, { address: LOOPBACK4_BYTES, port: 0 });
  const closedPort = probe.localAddress().port;
  probe.close();
  let sink: UdpSocket | null = null;
  try {
    const srcPort = freeUdpPort();
    guest.sendUdp(srcPort, TEST_GATEWAY4, closedPort, new TextEncoder().encode("first"));
    // The port opens; the refusal is still pending on the flow's socket.
    sink = UdpSocket.open(4, { address: LOOPBACK4_BYTES, port: closedPort });
    guest.sendUdp(srcPort, TEST_GATEWAY4, closedPort, new TextEncoder().encode("after"));
    const buffer = new Uint8Array(2048);
    const records = new UdpMessageRecords(1);
    const open = sink;
    let received = "";
    await waitUntil("the datagram after the refusal at the host", () => {
      if (open.receiveBatch(buffer, buffer.length, records) !== 1) return false;
      received = new TextDecoder().decode(buffer.subarray(0, records.length(0)));
      return true;
    }, 5_000);
    assert.equal(received, "after");
    await waitUntil("the refusal counted", () => udp.counters.socketErrors >= 1, 5_000);
    assert.equal(udp.counters.toHost, 2);
    assert.equal(udp.flows.size, 1);
    // The host answers: the flow still carries it to the guest.
    const from = records.port(0);
    buffer.set(new TextEncoder().encode("answer"));
    records.set(0, 0, 6, LOOPBACK4_BYTES, from);
    assert.equal(open.sendBatch(buffer, records, 1), 1);
    await guest.until(() => guest.datagrams.length === 1, 5000, "the answer at the guest");
    assert.equal(new TextDecoder().decode(guest.datagrams[0].data), "answer");
    assert.equal(guest.datagrams[0].fromPort, closedPort);
    const refusals = lines.filter((l) => /refused/i.test(l));
    assert.equal(refusals.length, 1, `one (rate-limited) line:\n${lines.join("\n")}`);
    // A refusal is the peer's answer, not a fault of the daemon: no line calls it an
    // error (the testpmd test fails on any line with the word).
    assert.deepEqual(lines.filter((l) => /\berror\b/i.test(l)), []);
  } finally {
    sink?.close();
    guest.stop();
    udp.close();
    tcp.close();
  }
});

Deno.test({
  name:
    "`UdpTranslator` binds sockets toward non-loopback hosts to --outbound-if4, not loopback ones",
  // A non-loopback destination that exists only in a namespace of the test's own.
  ignore: !canUnshare,
  fn: async () => {
    const r = await runInNetNamespace(
      "ip link set lo up && ip link add tpv0 type veth peer name tpv1 " +
        "&& ip addr add 10.99.0.1/24 dev tpv0 && ip link set tpv0 up && ip link set tpv1 up",
      new URL("../../../tests/support/net/udp/outbound_if_fixture.ts", import.meta.url),
    );
    // A missing interface: the socket toward 10.99.0.1 cannot be bound, nothing leaves;
    // the loopback is not bound to it and echoes.
    assert.deepEqual(r.missing, {
      dropped: 1,
      toHost: 0,
      wideSeen: [],
      loopSeen: ["loop"],
      echoes: ["echo:loop"],
    });
    // The interface that holds the route: both arrive.
    assert.deepEqual(r.present, {
      dropped: 0,
      toHost: 1,
      wideSeen: ["wide"],
      loopSeen: ["loop"],
      echoes: ["echo:loop", "echo:wide"],
    });
  },
});

Deno.test({
  name:
    "`UdpTranslator` sends datagrams one by one from a socket whose route refuses segmentation, from then on",
  // A loopback with a small MTU exists only in a namespace of the test's own.
  ignore: !canUnshare,
  fn: async () => {
    // 1,280 bytes: below a 1,400-byte datagram and its headers (the fixture's).
    const r = await runInNetNamespace(
      "ip link set lo mtu 1280 up",
      new URL("../../../tests/support/net/udp/segmentation_fallback_fixture.ts", import.meta.url),
    );
    // The first run's segmented message is refused (a segment does not fit the
    // route's MTU); its datagrams go one by one, and so does the next batch.
    assert.deepEqual(r.afterFirst, {
      toHost: 3,
      segmentedSends: 0,
      segmentationOff: 1,
      socketErrors: 0,
      dropped: 0,
    });
    assert.deepEqual(r.afterSecond, {
      toHost: 6,
      segmentedSends: 0,
      segmentationOff: 1,
      socketErrors: 0,
      dropped: 0,
    });
    assert.equal(r.arrivedInOrder, true, "all six arrived, fragmented, as sent");
    // A fresh socket tries segmentation again and, on a route that takes it, uses it.
    assert.equal(r.otherPort.segmentedSends, 1);
  },
});

Deno.test("`UdpTranslator.close()` closes every socket it opened and its own event loop", async () => {
  const before = openFdCount();
  const { udp, guest, close } = setup(4);
  const echo = await echoServer("udp4");
  for (let i = 0; i < 5; i++) {
    guest.sendUdp(freeUdpPort() + i, TEST_GATEWAY4, echo.port, new Uint8Array([i]));
  }
  udp.listen("127.0.0.1", 0, 7001);
  await guest.until(() => guest.datagrams.length === 5, 5000, "five echoes");
  echo.sock.close();
  const during = openFdCount();
  assert.ok(during >= before + 6, `${during - before} more fds while open`);
  close();
  close();
  // The loop releases its fds once run() returns, and node:dgram closes the echo
  // server's socket asynchronously: wait (bounded) for the count to come back.
  await waitUntil("the translator's fds to close", () => openFdCount() <= before, 5_000)
    .catch(() => {}); // the assertion below names how many are left
  // At most as many as before: sockets an earlier test was still closing may be gone now.
  assert.ok(openFdCount() <= before, `${openFdCount() - before} fds left open`);
});

Deno.test("`UdpTranslator.handlePacket()` takes the UDP header the stack parsed and does not parse it again", async () => {
  const { udp, close } = setup(4);
  const echo = await echoServer("udp4");
  try {
    const l4Offset = ETH_HEADER_LENGTH + IPV4_HEADER_MIN;
    const data = new TextEncoder().encode("parsed once");
    const frame = new Uint8Array(l4Offset + UDP_HEADER_LENGTH + data.length);
    buildUdp(frame, l4Offset, freeUdpPort(), echo.port, data.length);
    frame.set(data, l4Offset + UDP_HEADER_LENGTH);
    const p = newL4Packet();
    p.src4 = TEST_GUEST4;
    p.dst4 = TEST_GATEWAY4;
    p.protocol = IPPROTO_UDP;
    p.frame = frame;
    p.ipOffset = ETH_HEADER_LENGTH;
    p.l4Offset = l4Offset;
    p.l4Length = UDP_HEADER_LENGTH + data.length;
    p.checksumPending = true;
    p.udp = newUdpHeader();
    assert.equal(parseUdp(frame, l4Offset, frame.length, p.udp), "ok");
    // A length field no parser accepts: only a second parse would see it.
    frame[l4Offset + UDP_LENGTH] = 0xff;
    udp.handlePacket(p, performance.now());
    udp.endOfBatch(performance.now());
    assert.equal(udp.counters.dropped, 0);
    assert.equal(udp.flowCount(), 1);
  } finally {
    echo.sock.close();
    close();
  }
});
