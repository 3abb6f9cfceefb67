import assert from "node:assert/strict";
import type { TcpTranslatorOptions } from "./translator.ts";
import type { HostListener, ListenerEvents } from "./host_socket.ts";
import {
  connectThroughGateway,
  loopbackListener,
  ScriptedConnection,
  scriptedHostTcp,
  wiredTranslator,
} from "../../../tests/support/net/tcp_host.ts";
import { TEST_GATEWAY4, TEST_GUEST4 } from "../../../tests/support/net/tcp_plan.ts";
import {
  setTcpChecksumV4,
  TCP_ACK_FLAG,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  type TcpBuildFields,
} from "../wire/tcp_header.ts";
import type { TestGuest } from "../../../tests/support/net/tcp_guest.ts";
import { EVENT_PEER_CLOSED, EVENT_READABLE, EVENT_WRITABLE } from "../../loop/event_loop.ts";

/** A translator wired to a guest that records the headers of what it receives. */
function setup(opts: TcpTranslatorOptions = {}) {
  const wired = wiredTranslator(opts);
  wired.guest.recordHeaders = true;
  return wired;
}

/** A loopback server collecting what each connection sends. */
function collector() {
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const got: Uint8Array[][] = [];
  const conns: Deno.Conn[] = [];
  (async () => {
    for await (const conn of server) {
      const mine: Uint8Array[] = [];
      got.push(mine);
      conns.push(conn);
      (async () => {
        const buf = new Uint8Array(65536);
        try {
          while (true) {
            const n = await conn.read(buf);
            if (n === null) break;
            mine.push(buf.slice(0, n));
          }
        } catch { /* reset */ }
      })();
    }
  })();
  const port = (server.addr as Deno.NetAddr).port;
  const bytes = (i: number) => got[i]?.reduce((a, c) => a + c.length, 0) ?? 0;
  return { server, port, got, conns, bytes };
}

const tick = () => new Promise((r) => setTimeout(r, 20));

/** The guest sends a hand-made segment (`fields`) from its port `srcPort` to the gateway. */
function toGateway(
  guest: TestGuest,
  srcPort: number,
  fields: Omit<TcpBuildFields, "srcPort">,
  payload: Uint8Array | null = null,
  mangle?: (segment: Uint8Array) => void,
): void {
  guest.rawTcp(srcPort, TEST_GATEWAY4, null, { ...fields, srcPort }, payload, mangle);
}

Deno.test("`TcpTranslator` answers segments of unknown flows with a RST, but never a RST with a RST", async () => {
  const { tcp, guest, close } = setup();
  const before = guest.headers.length;
  toGateway(
    guest,
    1234,
    { dstPort: 80, seq: 1000, ack: 777, flags: TCP_ACK_FLAG, window: 100 },
    new Uint8Array(10),
  );
  await guest.until(() => guest.headers.length > before, 2000, "RST");
  const h = guest.headers.at(-1)!;
  assert.equal(h.flags & TCP_RST, TCP_RST);
  assert.equal(h.seq, 777, "RST takes its sequence number from the ACK (RFC 9293 §3.10.7.1)");
  // A segment without ACK: the RST acknowledges it.
  toGateway(
    guest,
    1235,
    { dstPort: 80, seq: 5000, ack: 0, flags: TCP_FIN, window: 100 },
    new Uint8Array(3),
  );
  await guest.until(() => guest.headers.length > before + 1, 2000, "RST");
  const h2 = guest.headers.at(-1)!;
  assert.equal(h2.flags, TCP_RST | TCP_ACK_FLAG);
  assert.equal(h2.ack, 5004);
  const n = guest.headers.length;
  toGateway(guest, 1236, { dstPort: 80, seq: 1, ack: 1, flags: TCP_RST | TCP_ACK_FLAG, window: 0 });
  await tick();
  assert.equal(guest.headers.length, n, "no RST for a RST");
  assert.equal(tcp.flows.size, 0);
  close();
});

Deno.test("`TcpTranslator` drops segments with a bad checksum or a bad data offset", async () => {
  const { tcp, guest, close } = setup();
  const n = guest.headers.length;
  toGateway(
    guest,
    2000,
    { dstPort: 80, seq: 1, ack: 0, flags: TCP_SYN, window: 100 },
    null,
    (seg) => (seg[16] ^= 0xff),
  );
  toGateway(
    guest,
    2001,
    { dstPort: 80, seq: 1, ack: 0, flags: TCP_SYN, window: 100 },
    null,
    (seg) => (seg[12] = 0xf0), // 60-byte header in a 20-byte segment
  );
  await tick();
  assert.equal(tcp.counters.badSegments, 2);
  assert.equal(guest.headers.length, n);
  assert.equal(tcp.flows.size, 0);
  close();
});

Deno.test("`TcpTranslator` survives absurd option lengths and still connects", async () => {
  const { tcp, guest, close } = setup();
  const srv = collector();
  const opts = [[2, 0xff, 1, 1], [3, 1, 9, 1], [2, 4, 0, 0], [8, 200, 1, 1], [1, 1, 1, 2]];
  for (let i = 0; i < opts.length; i++) {
    toGateway(
      guest,
      3000 + i,
      { dstPort: srv.port, seq: 1, ack: 0, flags: TCP_SYN, window: 100, mss: 1460 },
      null,
      (seg) => {
        seg.set(opts[i], 20); // replace the 4 option bytes
        setTcpChecksumV4(seg, 0, seg.length, TEST_GUEST4, TEST_GATEWAY4);
      },
    );
  }
  assert.equal(tcp.counters.badSegments, 0);
  assert.equal(tcp.flows.size, opts.length);
  await guest.until(() => srv.got.length === opts.length, 5000, "host connections");
  await guest.until(
    () => guest.headers.filter((h) => (h.flags & 0x12) === 0x12).length === opts.length,
    5000,
    "SYN-ACKs",
  );
  srv.server.close();
  close();
});

Deno.test("`TcpTranslator` does not deliver data outside the window", async () => {
  const { tcp, guest, close } = setup({ bufferSize: 16 * 1024 });
  const srv = collector();
  const c = guest.connect(TEST_GATEWAY4, srv.port);
  await c.until(() => c.state === "established", 5000, "established");
  const acksBefore = guest.headers.length;
  // Far ahead of the expected sequence number, and behind it.
  for (const seq of [(c.sndNxt + 100_000) >>> 0, (c.sndNxt + 5) >>> 0, (c.sndNxt - 50_000) >>> 0]) {
    toGateway(guest, c.localPort, {
      dstPort: srv.port,
      seq,
      ack: c.rcvNxt,
      flags: TCP_ACK_FLAG | TCP_PSH,
      window: 1000,
    }, new Uint8Array(100).fill(0xee));
  }
  await guest.until(() => guest.headers.length >= acksBefore + 2, 2000, "duplicate ACKs");
  await tick();
  assert.equal(srv.bytes(0), 0);
  // A segment overrunning the 16 KiB window is cut at the window's edge.
  toGateway(guest, c.localPort, {
    dstPort: srv.port,
    seq: c.sndNxt,
    ack: c.rcvNxt,
    flags: TCP_ACK_FLAG,
    window: 1000,
  }, new Uint8Array(20_000).fill(0x11));
  await guest.until(() => srv.bytes(0) === 16 * 1024, 2000, "window-sized delivery");
  await tick();
  assert.equal(srv.bytes(0), 16 * 1024);
  assert.ok(tcp.counters.badSegments >= 2);
  srv.server.close();
  close();
});

Deno.test("`TcpTranslator` honours the guest's MSS and window scale, and a zero window", async () => {
  const { guest, close } = setup({ bufferSize: 64 * 1024 });
  guest.mss = 1000;
  guest.offerWindowScale = false;
  const { server, c, host: hostConn } = await connectThroughGateway(guest);
  const synAck = guest.headers.find((h) => (h.flags & (TCP_SYN | TCP_ACK_FLAG)) === 0x12)!;
  assert.equal(synAck.windowScale, -1, "no window scale when the guest offered none");
  assert.ok(synAck.mss > 60000, "our MSS follows the 65520 MTU");
  assert.ok(guest.headers.every((h) => h.window <= 65535));
  // Zero window: the guest announces it, the host sends; at most probes get through.
  c.rcvWindow = 0;
  guest.sendAck(c);
  await tick();
  const data = new Uint8Array(50_000).map((_, i) => i * 7);
  await hostConn.write(data);
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(c.totalReceived <= 2, `only window probes pass a zero window (got ${c.totalReceived})`);
  c.rcvWindow = 1 << 20;
  guest.sendAck(c);
  await c.until(() => c.totalReceived === data.length, 10000, "data after the window opens");
  assert.deepEqual(c.takeReceived(), data);
  const dataSegs = guest.headers.filter((h) => h.payloadLength > 0);
  assert.ok(dataSegs.every((h) => h.payloadLength <= 1000), "segments respect the guest's MSS");
  hostConn.close();
  server.close();
  close();
});

Deno.test("`TcpTranslator` bounds a SYN flood by the flow limit", async () => {
  const { tcp, guest, close } = setup({ maxFlows: 8 });
  const srv = collector();
  for (let i = 0; i < 20; i++) {
    toGateway(guest, 10000 + i, {
      dstPort: srv.port,
      seq: i * 1000,
      ack: 0,
      flags: TCP_SYN,
      window: 1000,
    });
  }
  assert.equal(tcp.flows.size, 8);
  assert.equal(tcp.counters.tableFull, 12);
  const rsts = guest.headers.filter((h) => h.flags & TCP_RST).length;
  await guest.until(
    () => guest.headers.filter((h) => h.flags & TCP_RST).length >= rsts + 0 && srv.got.length === 8,
    5000,
    "8 host connections",
  );
  assert.equal(srv.got.length, 8);
  assert.ok(guest.headers.filter((h) => (h.flags & TCP_RST) !== 0).length >= 12);
  srv.server.close();
  close();
});

Deno.test("`TcpTranslator` holds at most its buffer of unacknowledged guest data when the host peer is slow", async () => {
  const size = 32 * 1024;
  const { guest, close } = setup({ bufferSize: size });
  const { listener: server, port } = loopbackListener();
  let hostConn: Deno.Conn | null = null;
  const accepted = server.accept().then((x) => (hostConn = x)); // never reads
  const c = guest.connect(TEST_GATEWAY4, port);
  await c.until(() => c.state === "established", 5000, "established");
  await accepted;
  const total = 40 * 1024 * 1024;
  guest.write(c, new Uint8Array(total));
  await new Promise((r) => setTimeout(r, 500));
  const inFlight = (c.sndNxt - c.sndUna) | 0;
  const acked = (c.sndUna - c.iss - 1) | 0;
  assert.ok(inFlight <= size, `guest in flight ${inFlight} <= ${size}`);
  assert.ok(acked < total, "a host peer that does not read stops the guest");
  // Reading at the host drains everything.
  const buf = new Uint8Array(1 << 20);
  let got = 0;
  while (got < total) {
    const n = await hostConn!.read(buf);
    assert.ok(n !== null, `the host connection ended after ${got} of ${total} bytes`);
    got += n;
  }
  assert.equal(got, total);
  hostConn!.close();
  server.close();
  close();
});

Deno.test("`TcpTranslator` answers keepalive probes and resets idle connections both ways", async () => {
  const { tcp, guest, close } = setup({ idleTimeoutMs: 400 });
  const { listener: server, port } = loopbackListener();
  const hostSide = server.accept().then(async (conn) => {
    const buf = new Uint8Array(10);
    try {
      return await conn.read(buf);
    } catch (e) {
      return e;
    }
  });
  const c = guest.connect(TEST_GATEWAY4, port);
  await c.until(() => c.state === "established", 5000, "established");
  const n = guest.headers.length;
  // Keepalive probe: one old sequence number, no data (RFC 9293 §3.8.4).
  toGateway(guest, c.localPort, {
    dstPort: port,
    seq: (c.sndNxt - 1) >>> 0,
    ack: c.rcvNxt,
    flags: TCP_ACK_FLAG,
    window: 1000,
  });
  await guest.until(() => guest.headers.length > n, 2000, "keepalive ACK");
  const ack = guest.headers.at(-1)!;
  assert.equal(ack.flags, TCP_ACK_FLAG);
  assert.equal(ack.ack, c.sndNxt);
  // Nothing more: the idle timeout resets the guest and closes the host side.
  await c.until(() => c.gotRst, 5000, "idle RST");
  const r = await hostSide;
  assert.ok(r === null || r instanceof Error);
  assert.equal(tcp.flows.size, 0);
  server.close();
  close();
});

Deno.test("`TcpTranslator` resets a flow whose host stream misbehaves instead of crashing", async () => {
  const conn = new ScriptedConnection(() => {
    throw new TypeError("broken stream");
  });
  const { tcp, guest, close } = setup({ host: scriptedHostTcp(() => conn) });
  const c = guest.connect(TEST_GATEWAY4, 9);
  await guest.until(() => tcp.flows.size === 1, 2000, "the guest's SYN");
  conn.complete(); // once established, the first peek throws
  await c.until(() => c.gotRst, 5000, "RST after the host stream failed");
  assert.equal(tcp.flows.size, 0);
  assert.deepEqual(conn.calls, ["reset"]);
  close();
});

Deno.test("`TcpTranslator` retransmits the hole after a partial ACK only up to what it had sent", async () => {
  // The host always has data; the guest's window (6000) is smaller than its MSS.
  const conn = new ScriptedConnection((_offset, length) => new Uint8Array(length).fill(0x61));
  const { tcp, guest, close } = setup({ host: scriptedHostTcp(() => conn) });
  const port = 3456;
  const guestIsn = 1000;
  const window = 6000;
  const segment = (ack: number) =>
    toGateway(guest, port, { dstPort: 80, seq: guestIsn + 1, ack, flags: TCP_ACK_FLAG, window });
  const dataFromUs = () => guest.headers.filter((h) => h.dstPort === port && h.payloadLength > 0);
  toGateway(guest, port, {
    dstPort: 80,
    seq: guestIsn,
    ack: 0,
    flags: TCP_SYN,
    window,
    mss: 60_000,
  });
  conn.complete();
  await guest.until(() => guest.headers.some((h) => h.dstPort === port), 2000, "SYN-ACK");
  const una = (guest.headers.find((h) => h.dstPort === port)!.seq + 1) >>> 0;
  segment(una);
  await guest.until(() => dataFromUs().length > 0, 2000, "data up to the window");
  await tick();
  const sent = dataFromUs().reduce((n, h) => n + h.payloadLength, 0);
  assert.equal(sent, window, "the first flight fills the window exactly");
  // Three duplicate ACKs: fast retransmit from una, then a partial ACK of 1000 bytes.
  for (let i = 0; i < 3; i++) segment(una);
  await tick();
  const before = dataFromUs().length;
  segment((una + 1000) >>> 0);
  await tick();
  const after = dataFromUs().slice(before);
  assert.ok(after.length > 0, "the next hole was retransmitted");
  // What the guest now allows: 1000 acknowledged + a 6000-byte window.
  const rightEdge = (una + 1000 + window) >>> 0;
  for (const h of after) {
    const end = (h.seq + h.payloadLength) >>> 0;
    assert.ok(
      ((end - rightEdge) | 0) <= 0,
      `a segment reached ${end - una} bytes past una, beyond the window's ${rightEdge - una}`,
    );
  }
  assert.ok(tcp.counters.retransmits > 0);
  close();
});

Deno.test("`TcpTranslator` resets a host connection still connecting when the guest gave up", async () => {
  const conn = new ScriptedConnection();
  const { tcp, guest, close } = setup({ host: scriptedHostTcp(() => conn) });
  const port = 4567;
  toGateway(guest, port, { dstPort: 80, seq: 100, ack: 0, flags: TCP_SYN, window: 1000 });
  await tick();
  assert.equal(tcp.flows.size, 1, "connecting");
  // The guest resets before the host connect completes.
  toGateway(guest, port, { dstPort: 80, seq: 101, ack: 0, flags: TCP_RST, window: 0 });
  await tick();
  assert.equal(tcp.flows.size, 0, "the flow is gone");
  conn.complete(); // a late completion finds nothing to do
  await tick();
  assert.deepEqual(conn.calls, ["reset"], "the pending connection is aborted, not closed");
  close();
});

Deno.test("`TcpTranslator` closes a listener that fails", async () => {
  const calls: string[] = [];
  let events: ListenerEvents | null = null;
  const listener: HostListener = {
    port: 1234,
    close: () => calls.push("close"),
  };
  const { tcp, close } = setup({
    host: scriptedHostTcp(() => new ScriptedConnection(), (e) => {
      events = e;
      return listener;
    }),
  });
  tcp.listen("127.0.0.1", 1234, 80);
  await tick();
  assert.deepEqual(calls, []);
  events!.failed(new Error("broken listener"));
  assert.deepEqual(calls, ["close"]);
  close();
  assert.deepEqual(calls, ["close"], "closed once: the translator forgot it");
});

/**
 * A guest connection established through a scripted host socket whose send buffer of
 * `sendBuffer` bytes holds `sendQueued`; `ackOf()` is the guest's last ACK header.
 */
async function connectedWithRoom(sendBuffer: number, sendQueued: number) {
  const conn = new ScriptedConnection();
  conn.sendBuffer = sendBuffer;
  conn.sendQueued = sendQueued;
  const { tcp, guest, close } = setup({ host: scriptedHostTcp(() => conn) });
  const c = guest.connect(TEST_GATEWAY4, 80);
  await guest.until(() => tcp.flows.size === 1, 2000, "the guest's SYN");
  conn.complete();
  await c.until(() => c.state === "established", 2000, "established");
  const ackOf = () => guest.headers.filter((h) => h.dstPort === c.localPort).at(-1)!;
  return { conn, guest, c, ackOf, close };
}

Deno.test("`TcpTranslator` advertises the room left in the host socket's send buffer, and updates it once the socket drains", async () => {
  const { conn, guest, c, ackOf, close } = await connectedWithRoom(400_000, 100_000);
  // The guest's first data: the ACK carries the room (400000 - 100000) less what the
  // socket took since it was asked, in units of 2^7.
  guest.write(c, new Uint8Array(1000));
  await guest.until(() => conn.sent === 1000, 2000, "data to the host socket");
  await tick();
  assert.equal(ackOf().window, Math.floor(299_000 / 128));
  // The host socket fills up: the window shrinks no further than its right edge, the
  // socket is asked to report its draining, and what it did not take is not acknowledged.
  conn.sendQueued = 390_000;
  conn.sendLimit = 500;
  const acked = c.sndUna;
  guest.write(c, new Uint8Array(2000));
  await guest.until(() => conn.sent === 1500, 2000, "the socket took 500 bytes");
  await tick();
  assert.equal((c.sndUna - acked) | 0, 500, "only what the socket took is acknowledged");
  assert.ok(conn.writableRequests > 0, "asked for a writable event");
  // It drains: the writable event brings a window update with the new room.
  conn.sendQueued = 0;
  conn.sendLimit = Infinity;
  const before = guest.headers.length;
  conn.handler(EVENT_WRITABLE, performance.now()); // the update goes out with the next flush
  await guest.until(() => guest.headers.length > before, 2000, "window update");
  const update = ackOf();
  assert.equal(update.window, Math.floor(400_000 / 128), "the whole buffer is free again");
  await c.until(() => conn.sent === 3000, 5000, "the rest, sent again by the guest");
  close();
});

Deno.test("`TcpTranslator` asks the host socket for its room again only once the guest has sent half of it", async () => {
  const { conn, guest, c, ackOf, close } = await connectedWithRoom(400_000, 100_000);
  guest.write(c, new Uint8Array(1000));
  await guest.until(() => conn.sent === 1000, 2000, "data to the host socket");
  await tick();
  const asked = conn.queueQueries;
  // A third of the room: the ACKs count down from it without asking the socket.
  guest.write(c, new Uint8Array(99_000));
  await guest.until(() => conn.sent === 100_000, 5000, "a third of the room sent");
  await tick();
  assert.equal(conn.queueQueries, asked, "not asked again");
  assert.equal(ackOf().window, Math.floor(200_000 / 128), "the room less what was sent");
  // The socket drains; past half of the room it is asked again and the window grows.
  conn.sendQueued = 0;
  guest.write(c, new Uint8Array(60_000));
  await guest.until(() => conn.sent === 160_000, 5000, "past half of the room");
  await tick();
  assert.ok(conn.queueQueries > asked, "asked again");
  assert.ok(ackOf().window * 128 > 300_000, `window ${ackOf().window * 128} reflects the drain`);
  close();
});

Deno.test("`TcpTranslator` sees the host's end of stream that came with its connect's completion", async () => {
  // The host peer answered and closed before the connect was even reported: one
  // edge-triggered event carries writable, readable and the peer's FIN.
  const data = new TextEncoder().encode("host done");
  const conn = new ScriptedConnection((offset, length) =>
    offset < data.length ? data.subarray(offset, offset + length) : null
  );
  const { tcp, guest, close } = setup({ host: scriptedHostTcp(() => conn) });
  const c = guest.connect(TEST_GATEWAY4, 80);
  await guest.until(() => tcp.flows.size === 1, 2000, "the guest's SYN");
  conn.handler(EVENT_WRITABLE | EVENT_READABLE | EVENT_PEER_CLOSED, performance.now());
  await c.until(() => c.eof, 5000, "the host's FIN");
  assert.equal(new TextDecoder().decode(c.takeReceived()), "host done");
  close();
});
