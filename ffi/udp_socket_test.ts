import assert from "node:assert/strict";
import { Errno, NativeError } from "./native_error.ts";
import { openFdCount } from "./process.ts";
import {
  UDP_MAX_BATCH,
  UDP_MAX_SEGMENTS,
  UDP_RECORD_SIZE,
  UdpMessageRecords,
  UdpSocket,
} from "./udp_socket.ts";
import { helper } from "./library.ts";
import { WOULD_BLOCK } from "./tcp_socket.ts";

const LOOPBACK4 = new Uint8Array([127, 0, 0, 1]);
const ANY4 = new Uint8Array(4);
const LOOPBACK6 = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
const ANY6 = new Uint8Array(16);

/** How long the polling helper waits for what the kernel does on loopback at once. */
const POLL_LIMIT_MS = 2000;
/** Room per received datagram in these tests. */
const SLOT_SIZE = 2048;

/** Whether ::1 is usable here (an IPv6-less kernel or container has none). */
const ipv6Loopback = (() => {
  try {
    UdpSocket.open(6, { address: LOOPBACK6 }).close();
    return true;
  } catch {
    return false;
  }
})();

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Receives until `count` datagrams arrived; returns their payloads and sources. */
async function receiveAll(socket: UdpSocket, count: number) {
  const buffer = new Uint8Array(SLOT_SIZE * UDP_MAX_BATCH);
  const records = new UdpMessageRecords(UDP_MAX_BATCH);
  const got: { data: Uint8Array; address: Uint8Array; port: number; truncated: boolean }[] = [];
  const batches: number[] = [];
  const deadline = performance.now() + POLL_LIMIT_MS;
  while (got.length < count) {
    const n = socket.receiveBatch(buffer, SLOT_SIZE, records);
    if (n === WOULD_BLOCK) {
      if (performance.now() > deadline) throw new Error(`only ${got.length} of ${count} arrived`);
      await sleep(2);
      continue;
    }
    batches.push(n);
    for (let i = 0; i < n; i++) {
      const at = records.offset(i);
      assert.equal(at, i * SLOT_SIZE, "datagram i sits in slot i");
      got.push({
        data: buffer.slice(at, at + records.length(i)),
        address: records.address(i),
        port: records.port(i),
        truncated: records.truncated(i),
      });
    }
  }
  return { got, batches };
}

/** A batch buffer holding `payloads` back to back, described in records toward `to`. */
function batchOf(payloads: Uint8Array[], to: { address: Uint8Array; port: number }) {
  const total = payloads.reduce((n, p) => n + p.length, 0);
  const buffer = new Uint8Array(total);
  const records = new UdpMessageRecords(payloads.length);
  let at = 0;
  payloads.forEach((p, i) => {
    buffer.set(p, at);
    records.set(i, at, p.length, to.address, to.port);
    at += p.length;
  });
  return { buffer, records };
}

function payload(i: number, length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, k) => (i * 31 + k) & 0xff);
}

for (const [family, loopback] of [[4, LOOPBACK4], [6, LOOPBACK6]] as const) {
  Deno.test({
    name: `\`UdpSocket\` sends a batch and receives it in one batch on ${
      family === 4 ? "127.0.0.1" : "::1"
    }, sources included`,
    ignore: family === 6 && !ipv6Loopback,
    fn: async () => {
      const before = openFdCount();
      const receiver = UdpSocket.open(family, { address: loopback });
      const sender = UdpSocket.open(family, { address: loopback });
      try {
        const to = receiver.localAddress();
        const from = sender.localAddress();
        assert.deepEqual([...to.address], [...loopback]);
        assert.ok(to.port > 0 && from.port > 0 && to.port !== from.port);
        const sizes = [0, 1, 100, 1472, 2048];
        const payloads = sizes.map((n, i) => payload(i, n));
        const { buffer, records } = batchOf(payloads, to);
        assert.equal(sender.sendBatch(buffer, records, payloads.length), payloads.length);
        const { got, batches } = await receiveAll(receiver, payloads.length);
        assert.deepEqual(batches, [payloads.length], "one recvmmsg took them all");
        assert.deepEqual(got.map((g) => g.data), payloads);
        for (const g of got) {
          assert.deepEqual([...g.address], [...loopback], "the source address");
          assert.equal(g.port, from.port, "the source port");
          assert.equal(g.truncated, false);
        }
        assert.equal(
          receiver.receiveBatch(new Uint8Array(SLOT_SIZE), SLOT_SIZE, records, 1),
          WOULD_BLOCK,
        );
        assert.equal(receiver.takeError(), null);
      } finally {
        receiver.close();
        sender.close();
      }
      assert.equal(openFdCount(), before, "every descriptor closed");
    },
  });
}

Deno.test("`UdpSocket.sendBatch()` sends one batch to several destinations and from an index", async () => {
  const a = UdpSocket.open(4, { address: LOOPBACK4 });
  const b = UdpSocket.open(4, { address: LOOPBACK4 });
  const sender = UdpSocket.open(4, { address: ANY4 });
  try {
    const buffer = new Uint8Array([1, 2, 3, 4, 5, 6]);
    const records = new UdpMessageRecords(4);
    records.set(0, 0, 1, LOOPBACK4, a.localAddress().port);
    records.set(1, 1, 2, LOOPBACK4, b.localAddress().port);
    records.set(2, 3, 3, LOOPBACK4, a.localAddress().port);
    records.set(3, 0, 6, LOOPBACK4, b.localAddress().port);
    assert.equal(sender.sendBatch(buffer, records, 2, 2), 2, "records 2 and 3 only");
    assert.equal(sender.sendBatch(buffer, records, 2), 2, "records 0 and 1");
    const atA = await receiveAll(a, 2);
    const atB = await receiveAll(b, 2);
    assert.deepEqual(atA.got.map((g) => [...g.data]), [[4, 5, 6], [1]]);
    assert.deepEqual(atB.got.map((g) => [...g.data]), [[1, 2, 3, 4, 5, 6], [2, 3]]);
    const port = sender.localAddress().port;
    assert.ok([...atA.got, ...atB.got].every((g) => g.port === port));
  } finally {
    a.close();
    b.close();
    sender.close();
  }
});

Deno.test("`UdpSocket` moves a full batch of UDP_MAX_BATCH datagrams each way in one call", async () => {
  const receiver = UdpSocket.open(4, { address: LOOPBACK4 });
  const sender = UdpSocket.open(4);
  try {
    const payloads = Array.from({ length: UDP_MAX_BATCH }, (_, i) => payload(i, 64));
    const { buffer, records } = batchOf(payloads, receiver.localAddress());
    assert.equal(sender.sendBatch(buffer, records, UDP_MAX_BATCH), UDP_MAX_BATCH);
    const { got, batches } = await receiveAll(receiver, UDP_MAX_BATCH);
    assert.deepEqual(batches, [UDP_MAX_BATCH]);
    assert.deepEqual(got.map((g) => g.data), payloads);
    assert.ok(sender.localAddress().port > 0, "the first send bound an ephemeral port");
  } finally {
    receiver.close();
    sender.close();
  }
});

Deno.test("`UdpSocket.receiveBatch()` cuts a datagram longer than its slot and flags it", async () => {
  const receiver = UdpSocket.open(4, { address: LOOPBACK4 });
  const sender = UdpSocket.open(4, { address: LOOPBACK4 });
  try {
    const { buffer, records } = batchOf([payload(1, 20), payload(2, 8)], receiver.localAddress());
    assert.equal(sender.sendBatch(buffer, records, 2), 2);
    const out = new Uint8Array(16);
    const got = new UdpMessageRecords(2);
    let n = WOULD_BLOCK;
    const deadline = performance.now() + POLL_LIMIT_MS;
    while (n === WOULD_BLOCK && performance.now() < deadline) {
      n = receiver.receiveBatch(out, 8, got);
      if (n === WOULD_BLOCK) await sleep(2);
    }
    assert.equal(n, 2);
    assert.deepEqual([got.length(0), got.truncated(0)], [8, true]);
    assert.deepEqual([...out.subarray(0, 8)], [...payload(1, 8)]);
    assert.deepEqual([got.length(1), got.truncated(1)], [8, false]);
    assert.deepEqual([...out.subarray(8, 16)], [...payload(2, 8)]);
  } finally {
    receiver.close();
    sender.close();
  }
});

Deno.test("`UdpSocket.open()` with interfaceName `lo` works on loopback; an unknown interface is ENODEV", async () => {
  const before = openFdCount();
  const receiver = UdpSocket.open(4, { address: LOOPBACK4, interfaceName: "lo" });
  const sender = UdpSocket.open(4, { address: ANY4, interfaceName: "lo" });
  try {
    const { buffer, records } = batchOf([payload(3, 10)], receiver.localAddress());
    assert.equal(sender.sendBatch(buffer, records, 1), 1);
    const { got } = await receiveAll(receiver, 1);
    assert.deepEqual(got[0].data, payload(3, 10));
  } finally {
    receiver.close();
    sender.close();
  }
  assert.throws(
    () => UdpSocket.open(4, { address: LOOPBACK4, interfaceName: "tpasst-no-such0" }),
    (e: unknown) => e instanceof NativeError && e.errno === Errno.ENODEV,
  );
  assert.equal(openFdCount(), before, "the failed open closed its socket");
});

Deno.test({
  name: "`UdpSocket.open()` with v6Only leaves the IPv4 port free; without it the port is shared",
  ignore: !ipv6Loopback ||
    Deno.readTextFileSync("/proc/sys/net/ipv6/bindv6only").trim() !== "0",
  fn: () => {
    const v6 = UdpSocket.open(6, { address: ANY6, v6Only: true });
    const port = v6.localAddress().port;
    const v4 = UdpSocket.open(4, { address: ANY4, port });
    v4.close();
    v6.close();
    const dual = UdpSocket.open(6, { address: ANY6 });
    try {
      assert.throws(
        () => UdpSocket.open(4, { address: ANY4, port: dual.localAddress().port }),
        (e: unknown) => e instanceof NativeError && e.errno === Errno.EADDRINUSE,
      );
    } finally {
      dual.close();
    }
  },
});

Deno.test("`UdpSocket.open()` with reuseAddress lets two sockets share a port; without it EADDRINUSE", () => {
  const first = UdpSocket.open(4, { address: LOOPBACK4, reuseAddress: true });
  const port = first.localAddress().port;
  try {
    UdpSocket.open(4, { address: LOOPBACK4, port, reuseAddress: true }).close();
    assert.throws(
      () => UdpSocket.open(4, { address: LOOPBACK4, port }),
      (e: unknown) => e instanceof NativeError && e.errno === Errno.EADDRINUSE,
    );
  } finally {
    first.close();
  }
});

Deno.test("`UdpSocket.sendBatch()` reports a record outside the buffer as EINVAL", () => {
  const socket = UdpSocket.open(4, { address: LOOPBACK4 });
  try {
    const records = new UdpMessageRecords(1);
    records.set(0, 4, 8, LOOPBACK4, socket.localAddress().port);
    assert.throws(
      () => socket.sendBatch(new Uint8Array(10), records, 1),
      (e: unknown) => e instanceof NativeError && e.errno === Errno.EINVAL,
    );
    records.set(0, 0, 1, new Uint8Array(5), 9);
    assert.throws(
      () => socket.sendBatch(new Uint8Array(10), records, 1),
      (e: unknown) => e instanceof NativeError && e.errno === Errno.EINVAL,
      "a 5-byte address",
    );
  } finally {
    socket.close();
  }
});

Deno.test("`UdpSocket` refuses bad arguments with RangeError before calling the helper", () => {
  const bad = (fn: () => unknown, pattern: RegExp) => assert.throws(fn, pattern);
  bad(() => UdpSocket.open(5 as 4), /family 5/);
  bad(() => UdpSocket.open(4, { address: LOOPBACK6 }), /IPv4 address has 4 bytes, got 16/);
  bad(() => UdpSocket.open(4, { address: LOOPBACK4, port: 70000 }), /port 70000/);
  bad(() => UdpSocket.open(4, { port: 53 }), /needs a local address/);
  bad(() => UdpSocket.open(4, { v6Only: true }), /v6Only/);
  bad(() => UdpSocket.open(4, { interfaceName: "lo\0x" }), /interface name/);
  bad(() => new UdpMessageRecords(0), /at least 1/);
  const socket = UdpSocket.open(4, { address: LOOPBACK4 });
  try {
    const records = new UdpMessageRecords(UDP_MAX_BATCH + 1);
    const buffer = new Uint8Array(SLOT_SIZE * 4);
    bad(() => socket.receiveBatch(buffer, SLOT_SIZE, records, 0), /1\.\.64/);
    bad(() => socket.receiveBatch(buffer, SLOT_SIZE, records, UDP_MAX_BATCH + 1), /1\.\.64/);
    bad(() => socket.receiveBatch(buffer, SLOT_SIZE, records, 5), /into 8192 bytes/);
    bad(() => socket.receiveBatch(buffer, 0, records, 1), /of 0 bytes/);
    bad(() => socket.sendBatch(buffer, records, 0), /1\.\.64/);
    bad(() => socket.sendBatch(buffer, records, UDP_MAX_BATCH + 1), /1\.\.64/);
    bad(() => socket.sendBatch(buffer, new UdpMessageRecords(2), 2, 1), /only 2 exist/);
    assert.equal(records.bytes.byteLength, (UDP_MAX_BATCH + 1) * UDP_RECORD_SIZE);
  } finally {
    socket.close();
  }
});

Deno.test("`UdpSocket.close()` is idempotent and a closed socket refuses use", () => {
  const before = openFdCount();
  const socket = UdpSocket.open(6 as 4 | 6, { v6Only: true });
  assert.ok(socket.fd >= 0);
  assert.equal(socket.family, 6);
  socket.close();
  socket.close();
  assert.equal(socket.fd, -1);
  assert.equal(openFdCount(), before);
  assert.throws(() => socket.localAddress(), /closed/);
  assert.throws(() => socket.takeError(), /closed/);
  assert.throws(
    () => socket.receiveBatch(new Uint8Array(8), 8, new UdpMessageRecords(1)),
    /closed/,
  );
});

/** net.core.rmem_max: what SO_RCVBUF may reach without privileges. */
const RMEM_MAX = (() => {
  try {
    return Number(Deno.readTextFileSync("/proc/sys/net/core/rmem_max"));
  } catch {
    return 0;
  }
})();

Deno.test({
  name: "`UdpSocket.setBuffers()` lets the receive queue hold more datagrams than the default",
  // the kernel caps SO_RCVBUF at rmem_max (Debian's default: 208 KiB)
  ignore: RMEM_MAX < 4 * 1024 * 1024,
}, async () => {
  /** Datagrams queued unread: their memory is more than the default 208 KiB receive buffer. */
  const count = 1000;
  const size = 1000;
  const queuedUnread = async (receive: number) => {
    const receiver = UdpSocket.open(4, { address: LOOPBACK4 });
    const sender = UdpSocket.open(4, { address: LOOPBACK4 });
    try {
      if (receive > 0) receiver.setBuffers(receive, 0);
      const buffer = new Uint8Array(size * UDP_MAX_BATCH);
      const records = new UdpMessageRecords(UDP_MAX_BATCH);
      for (let i = 0; i < UDP_MAX_BATCH; i++) {
        records.set(i, i * size, size, LOOPBACK4, receiver.localAddress().port);
      }
      for (let sent = 0; sent < count; sent += UDP_MAX_BATCH) {
        sender.sendBatch(buffer, records, Math.min(UDP_MAX_BATCH, count - sent));
      }
      const slots = new Uint8Array(SLOT_SIZE * UDP_MAX_BATCH);
      let got = 0;
      await sleep(20);
      for (;;) {
        const n = receiver.receiveBatch(slots, SLOT_SIZE, records);
        if (n === WOULD_BLOCK) return got;
        got += n;
      }
    } finally {
      receiver.close();
      sender.close();
    }
  };
  const defaults = await queuedUnread(0);
  const larger = await queuedUnread(4 * 1024 * 1024);
  assert.ok(defaults < count, `the default buffer held all ${count}: the test proves nothing`);
  assert.equal(larger, count, `a 4 MiB receive buffer held ${larger} of ${count}`);
});

Deno.test("`UdpSocket.connect()`: records without an address go to the peer, whose datagrams reach the connected socket; others reach the shared one", async () => {
  const peer = UdpSocket.open(4, { address: LOOPBACK4 });
  const stranger = UdpSocket.open(4, { address: LOOPBACK4 });
  const shared = UdpSocket.open(4, { address: LOOPBACK4 });
  const port = shared.localAddress().port;
  let connected: UdpSocket | null = null;
  try {
    shared.sharePort();
    connected = UdpSocket.open(4, { address: LOOPBACK4, port, reuseAddress: true });
    connected.connect(LOOPBACK4, peer.localAddress().port);
    assert.throws(
      () => UdpSocket.open(4, { address: LOOPBACK4, port }),
      (e: unknown) => e instanceof NativeError && e.errno === Errno.EADDRINUSE,
      "a socket without reuseAddress still cannot take the port",
    );
    const records = new UdpMessageRecords(2);
    records.setToPeer(0, 0, 3);
    records.setToPeer(1, 3, 2);
    assert.equal(connected.sendBatch(new TextEncoder().encode("onetwo"), records, 2), 2);
    const atPeer = await receiveAll(peer, 2);
    assert.deepEqual(atPeer.got.map((d) => new TextDecoder().decode(d.data)), ["one", "tw"]);
    assert.deepEqual(atPeer.got.map((d) => d.port), [port, port]);
    const toPort = (from: UdpSocket, text: string) => {
      const b = batchOf([new TextEncoder().encode(text)], { address: LOOPBACK4, port });
      assert.equal(from.sendBatch(b.buffer, b.records, 1), 1);
    };
    toPort(peer, "from the peer");
    toPort(stranger, "from a stranger");
    const [viaConnected] = (await receiveAll(connected, 1)).got;
    const [viaShared] = (await receiveAll(shared, 1)).got;
    assert.equal(new TextDecoder().decode(viaConnected.data), "from the peer");
    assert.equal(new TextDecoder().decode(viaShared.data), "from a stranger");
    assert.equal(viaShared.port, stranger.localAddress().port);
  } finally {
    connected?.close();
    shared.close();
    peer.close();
    stranger.close();
  }
});

Deno.test("`UdpSocket.connect()` reports a peer's ICMP port unreachable as ECONNREFUSED, once", () => {
  const probe = UdpSocket.open(4, { address: LOOPBACK4 });
  const closedPort = probe.localAddress().port;
  probe.close();
  const socket = UdpSocket.open(4, { address: LOOPBACK4 });
  try {
    socket.connect(LOOPBACK4, closedPort);
    const records = new UdpMessageRecords(1);
    records.setToPeer(0, 0, 1);
    const one = new Uint8Array(1);
    assert.equal(socket.sendBatch(one, records, 1), 1);
    // Loopback answers within the send: the error is pending now, and taken once.
    assert.throws(
      () => socket.sendBatch(one, records, 1),
      (e: unknown) => e instanceof NativeError && e.errno === Errno.ECONNREFUSED,
    );
    assert.equal(socket.takeError(), null);
    assert.equal(socket.sendBatch(one, records, 1), 1, "the next datagram goes");
    assert.equal(socket.takeError()?.errno, Errno.ECONNREFUSED);
  } finally {
    socket.close();
  }
});

Deno.test("`UdpSocket.connect()` refuses an address of the other family or port 0", () => {
  const socket = UdpSocket.open(4);
  try {
    assert.throws(() => socket.connect(LOOPBACK6, 9), /16-byte address/);
    assert.throws(() => socket.connect(LOOPBACK4, 0), /port 0/);
  } finally {
    socket.close();
  }
});

Deno.test("`UdpSocket.sendBatch()` sends a segmented record as its datagrams, between plain ones, in order", async () => {
  const receiver = UdpSocket.open(4, { address: LOOPBACK4 });
  const sender = UdpSocket.open(4, { address: LOOPBACK4 });
  try {
    sender.connect(LOOPBACK4, receiver.localAddress().port);
    // Record 0: 3 × 100 bytes and a last one of 50; record 1: 7 bytes alone; record 2:
    // 2 × 20 bytes.
    const sizes = [100, 100, 100, 50, 7, 20, 20];
    const payloads = sizes.map((n, i) => payload(i, n));
    const buffer = new Uint8Array(sizes.reduce((a, b) => a + b, 0));
    let at = 0;
    for (const p of payloads) {
      buffer.set(p, at);
      at += p.length;
    }
    const records = new UdpMessageRecords(3);
    records.setToPeer(0, 0, 350);
    records.setSegments(0, 350, 100);
    records.setToPeer(1, 350, 7);
    records.setToPeer(2, 357, 40);
    records.setSegments(2, 40, 20);
    assert.deepEqual([0, 1, 2].map((i) => records.datagrams(i)), [4, 1, 2]);
    assert.deepEqual([0, 1, 2].map((i) => records.segmentSize(i)), [100, 0, 20]);
    assert.equal(sender.sendBatch(buffer, records, 3), 3, "three records (messages) sent");
    const { got } = await receiveAll(receiver, sizes.length);
    assert.deepEqual(got.map((g) => g.data), payloads, "seven datagrams, in order");
    records.setToPeer(0, 0, 10);
    assert.equal(records.segmentSize(0), 0, "setToPeer() makes a record one datagram again");
  } finally {
    receiver.close();
    sender.close();
  }
});

/** SO_NO_CHECK (asm-generic/socket.h): UDP checksums off, which UDP_SEGMENT refuses. */
const SO_NO_CHECK = 11;
const SOL_SOCKET = 1;

Deno.test("`UdpSocket.sendBatch()` reports a segmented record the kernel refuses as EINVAL; plain records still go", async () => {
  const receiver = UdpSocket.open(4, { address: LOOPBACK4 });
  const sender = UdpSocket.open(4, { address: LOOPBACK4 });
  try {
    sender.connect(LOOPBACK4, receiver.localAddress().port);
    // The kernel segments only with UDP checksums (udp_send_skb: sk_no_check_tx).
    assert.equal(helper().tp_setsockopt_int(sender.fd, SOL_SOCKET, SO_NO_CHECK, 1), 0);
    const records = new UdpMessageRecords(2);
    const buffer = new Uint8Array(2 * UDP_MAX_SEGMENTS);
    records.setToPeer(0, 0, buffer.length);
    records.setSegments(0, buffer.length, 2);
    assert.throws(
      () => sender.sendBatch(buffer, records, 1),
      (e: unknown) => e instanceof NativeError && e.errno === Errno.EINVAL,
    );
    records.setToPeer(0, 0, 2);
    assert.equal(sender.sendBatch(buffer, records, 1), 1);
    await receiveAll(receiver, 1);
  } finally {
    receiver.close();
    sender.close();
  }
});
