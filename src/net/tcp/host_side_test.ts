import assert from "node:assert/strict";
import {
  ScriptedConnection,
  scriptedHostTcp,
  wiredTranslator,
} from "../../../tests/support/net/tcp_host.ts";
import { TestGuest } from "../../../tests/support/net/tcp_guest.ts";
import { TEST_GATEWAY4 } from "../../../tests/support/net/tcp_plan.ts";
import type { SendResult } from "../../tap/frame_transport.ts";
import { EVENT_PEER_CLOSED, EVENT_READABLE } from "../../loop/event_loop.ts";
import { tcpStateName, type TcpTranslator } from "./translator.ts";

/** The states of `tcp`'s flows (tcpStateName). */
function flowStates(tcp: TcpTranslator): string[] {
  const states: string[] = [];
  tcp.flows.forEach((f) => states.push(tcpStateName(f)));
  return states;
}

/** The host stream's byte at position `p` (from its first byte). */
const streamByte = (p: number) => (p * 7 + 3) & 0xff;

/** `n` bytes of the host stream from position `at`. */
const streamSlice = (at: number, n: number) =>
  Uint8Array.from({ length: n }, (_, i) => streamByte(at + i));

/** Asserts that `got` is the host stream's first `length` bytes. */
function assertStream(got: Uint8Array, length: number): void {
  assert.equal(got.length, length);
  for (let i = 0; i < length; i++) {
    if (got[i] !== streamByte(i)) assert.fail(`byte ${i} is ${got[i]}, not ${streamByte(i)}`);
  }
}

/** A scripted guest class that logs its frames and the sender's flushes into `log`. */
function loggingGuest(log: string[]) {
  return class extends TestGuest {
    override sendFrame(frame: Uint8Array, checksumStart = 0, checksumOffset = 0): SendResult {
      log.push("frame");
      return super.sendFrame(frame, checksumStart, checksumOffset);
    }

    override flush(): void {
      log.push("flush");
    }
  };
}

/**
 * A host connection whose stream is `total` bytes of {@link streamByte}, logging its
 * discards and close into `log`; a peek's offset counts from the front of what it
 * still holds, as a kernel socket's does.
 */
class LoggingStream extends ScriptedConnection {
  failDiscard: Error | null = null;

  constructor(readonly log: string[], total: number) {
    super((offset, length) => {
      const at = this.discarded + offset;
      if (at >= total) return null;
      const n = Math.min(length, total - at);
      return streamSlice(at, n);
    });
  }

  override discard(length: number): void {
    if (this.failDiscard !== null) throw this.failDiscard;
    this.log.push(`discard ${length}`);
    super.discard(length);
  }

  override close(): void {
    this.log.push("close");
    super.close();
  }
}

/**
 * A translator whose one host connection is a {@link LoggingStream} of `total` bytes;
 * `log` also gets "in" for each guest segment handed to it and "end" at each end of a
 * guest batch.
 */
function streamSetup(total: number) {
  const log: string[] = [];
  const streams: LoggingStream[] = [];
  const wired = wiredTranslator(
    { host: scriptedHostTcp(() => streams[streams.push(new LoggingStream(log, total)) - 1]) },
    4,
    loggingGuest(log),
  );
  const { tcp } = wired;
  const handlePacket = tcp.handlePacket.bind(tcp);
  const endOfBatch = tcp.endOfBatch.bind(tcp);
  tcp.handlePacket = (p, now) => {
    log.push("in");
    handlePacket(p, now);
  };
  tcp.endOfBatch = (now) => {
    log.push("end");
    endOfBatch(now);
  };
  return { ...wired, log, streams };
}

Deno.test("`TcpTranslator` drops acknowledged host bytes after the batch's frames are out, peeking past them meanwhile", async () => {
  const total = 300_000;
  const { tcp, guest, close, log, streams } = streamSetup(total);
  try {
    guest.rcvWindow = 20_000; // many ACKs, each freeing bytes while more are peeked
    const c = guest.connect(TEST_GATEWAY4, 80);
    await guest.until(() => streams.length === 1, 2000, "the guest's SYN");
    const conn = streams[0];
    conn.complete();
    await c.until(() => c.totalReceived === total, 10_000, "the whole stream");
    assertStream(c.takeReceived(), total);
    await guest.until(() => conn.discarded === total, 2000, "every byte dropped");
    // No discard while a guest batch runs: they come after its end and its flush.
    let discards = 0;
    let inBatch = false;
    let flushedSinceEnd = false;
    for (let i = 0; i < log.length; i++) {
      const entry = log[i];
      if (entry === "in") inBatch = true;
      else if (entry === "end") [inBatch, flushedSinceEnd] = [false, false];
      else if (entry === "flush") flushedSinceEnd = true;
      else if (entry.startsWith("discard")) {
        discards++;
        assert.ok(
          !inBatch && flushedSinceEnd,
          `discard at ${i} inside a batch: ${log.slice(i - 6, i + 1)}`,
        );
      }
    }
    assert.ok(discards > 10, `acknowledged in many steps (${discards} discards)`);
    assert.equal(tcp.flows.size, 1);
  } finally {
    close();
  }
});

Deno.test("`TcpTranslator` resets a flow whose host socket fails as its acknowledged bytes are dropped", async () => {
  const { tcp, guest, close, streams } = streamSetup(1_000_000);
  try {
    guest.rcvWindow = 10_000;
    const c = guest.connect(TEST_GATEWAY4, 80);
    await guest.until(() => streams.length === 1, 2000, "the guest's SYN");
    const conn = streams[0];
    conn.failDiscard = new Error("connection reset by peer");
    conn.complete();
    await c.until(() => c.gotRst, 5000, "a RST once the discard failed");
    assert.equal(tcp.flows.size, 0);
    assert.deepEqual(conn.calls, ["reset"]);
    assert.ok(c.totalReceived > 0 && c.totalReceived <= 20_000, `${c.totalReceived} bytes`);
  } finally {
    close();
  }
});

Deno.test("`TcpTranslator` drops the last acknowledged bytes before closing a finished flow", async () => {
  const total = 5000;
  const { tcp, guest, close, log, streams } = streamSetup(total);
  try {
    guest.rcvWindow = 65_535;
    const c = guest.connect(TEST_GATEWAY4, 80);
    await guest.until(() => streams.length === 1, 2000, "the guest's SYN");
    const conn = streams[0];
    conn.complete();
    await c.until(() => c.totalReceived === total, 5000, "the data");
    conn.handler(EVENT_READABLE | EVENT_PEER_CLOSED, performance.now()); // the peer's FIN
    await c.until(() => c.eof, 5000, "the host's FIN");
    // The guest's FIN comes with its ACK of ours: one batch finishes the flow.
    guest.close(c);
    await guest.until(() => conn.calls.includes("close"), 2000, "the host side closed");
    const closedAt = log.indexOf("close");
    const dropped = log.slice(0, closedAt).filter((e) => e.startsWith("discard"))
      .reduce((n, e) => n + Number(e.split(" ")[1]), 0);
    assert.equal(dropped, total, "everything acknowledged was dropped before the close");
    assert.deepEqual(conn.calls, ["shutdownWrite", "close"]);
    assert.deepEqual(flowStates(tcp), ["closed"], "the flow lingers, its socket closed");
  } finally {
    close();
  }
});

/**
 * A stream of `total` bytes and then its end, peeked as on a kernel without
 * SO_PEEK_OFF: bytes before the offset are peeked and thrown away, so the end shows
 * only to a peek with nothing queued before it (host_socket.ts).
 */
class StreamWithoutPeekOffset extends ScriptedConnection {
  constructor(total: number) {
    super((offset, length) => {
      const queued = total - this.discarded;
      if (queued === 0) return null; // only the end is left
      if (queued <= offset) return "block"; // the peek returned no more than the offset
      const n = Math.min(length, queued - offset);
      const at = this.discarded + offset;
      return streamSlice(at, n);
    });
  }
}

Deno.test("`TcpTranslator` without SO_PEEK_OFF sends the host's FIN once a stream ending at the guest's window is acknowledged", async () => {
  const window = 20_480;
  const streams: StreamWithoutPeekOffset[] = [];
  const { guest, close } = wiredTranslator({
    host: scriptedHostTcp(() => streams[streams.push(new StreamWithoutPeekOffset(window)) - 1]),
  });
  try {
    guest.rcvWindow = window;
    const c = guest.connect(TEST_GATEWAY4, 80);
    await guest.until(() => streams.length === 1, 2000, "the guest's SYN");
    const conn = streams[0];
    // The peer's data and FIN are queued before the handshake ends; its one hang-up event.
    conn.handler(EVENT_READABLE | EVENT_PEER_CLOSED, performance.now());
    conn.complete();
    await c.until(() => c.totalReceived === window, 3000, "the data");
    await c.until(() => c.eof, 3000, "the host's FIN after the guest's ACK");
    assert.equal(conn.discarded, window);
  } finally {
    close();
  }
});

Deno.test("`TcpTranslator` still closes a finished flow's host socket when dropping its last acknowledged bytes fails", async () => {
  const total = 5000;
  const { tcp, guest, close, streams } = streamSetup(total);
  try {
    const c = guest.connect(TEST_GATEWAY4, 80);
    await guest.until(() => streams.length === 1, 2000, "the guest's SYN");
    const conn = streams[0];
    conn.handler(EVENT_READABLE | EVENT_PEER_CLOSED, performance.now()); // data and FIN queued
    c.onData = () => {
      // The guest's ACK of everything and its own FIN leave in one batch, whose drop fails.
      conn.failDiscard = new Error("connection reset by peer");
      c.finQueued = true;
    };
    conn.complete();
    await c.until(() => c.eof, 3000, "the host's FIN");
    await guest.until(() => conn.calls.length >= 2, 2000, "the host side ended");
    assert.deepEqual(conn.calls, ["shutdownWrite", "close"]);
    assert.deepEqual(flowStates(tcp), ["closed"], "the flow lingers, its socket closed");
  } finally {
    close();
  }
});

/** A host stream of which the first `available` bytes have arrived (more may come). */
class GrowingStream extends ScriptedConnection {
  available = 0;

  constructor() {
    super((offset, length) => {
      const at = this.discarded + offset;
      if (at >= this.available) return "block";
      const n = Math.min(length, this.available - at);
      return streamSlice(at, n);
    });
  }
}

Deno.test("`TcpTranslator` turns a host socket's readable events off while its bytes wait for the guest's window, and on once it is drained", async () => {
  const streams: GrowingStream[] = [];
  const { guest, close } = wiredTranslator({
    host: scriptedHostTcp(() => streams[streams.push(new GrowingStream()) - 1]),
  });
  try {
    guest.rcvWindow = 20_000;
    const c = guest.connect(TEST_GATEWAY4, 80);
    await guest.until(() => streams.length === 1, 2000, "the guest's SYN");
    const conn = streams[0];
    conn.available = 50_000;
    conn.complete();
    await c.until(() => c.totalReceived === 50_000, 3000, "what had arrived");
    assert.equal(conn.readableWanted, true, "drained: new data must wake the flow");
    assert.equal(conn.readableToggles, 0);

    // More than the guest's window arrives: the event sends what the window takes.
    conn.available = 300_000;
    conn.deliver(EVENT_READABLE);
    assert.equal(c.totalReceived, 50_000, "the frames are still on their way");
    assert.equal(conn.readableWanted, false, "bytes wait in the socket: no more events");
    conn.deliver(EVENT_READABLE); // a later arrival's event does not come
    // The guest's ACKs alone bring the rest; the drained socket wants events again.
    await c.until(() => c.totalReceived === 300_000, 5000, "the rest, driven by ACKs");
    await guest.until(() => conn.readableWanted, 2000, "readable events back on");
    assert.equal(conn.readableToggles, 2);

    conn.available = 310_000;
    conn.deliver(EVENT_READABLE);
    await c.until(() => c.totalReceived === 310_000, 3000, "data after the drain");
    assert.equal(conn.readableWanted, true, "drained again: events stay on");
    assert.equal(conn.readableToggles, 2);
    assertStream(c.takeReceived(), 310_000);
  } finally {
    close();
  }
});
