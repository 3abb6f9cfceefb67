import assert from "node:assert/strict";
import { openFdCount } from "../../ffi/process.ts";
import { UnixStream } from "../../ffi/unix_stream.ts";
import { Logger } from "../log/logger.ts";
import { EventLoop } from "../loop/event_loop.ts";
import { newFrameSpace, SendResult } from "./frame_transport.ts";
import { RecordingHandler } from "../../tests/support/tap/frame_handler.ts";
import { createStreamSession, streamSessionFactory, StreamTransport } from "./stream_transport.ts";
import { waitUntil } from "../../tests/support/wait_until.ts";

function frameOf(length: number, seed: number): Uint8Array {
  const f = new Uint8Array(length);
  for (let i = 0; i < length; i++) f[i] = (i * 13 + seed) & 0xff;
  return f;
}

function encode(...frames: Uint8Array[]): Uint8Array {
  const total = frames.reduce((n, f) => n + 4 + f.length, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  let at = 0;
  for (const f of frames) {
    view.setUint32(at, f.length);
    out.set(f, at + 4);
    at += 4 + f.length;
  }
  return out;
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs the loop in the background while `body` drives the peer end. */
async function withTransport(
  body: (ctx: {
    peer: UnixStream;
    transport: StreamTransport;
    handler: RecordingHandler;
    lines: string[];
    loop: EventLoop;
  }) => Promise<void>,
  maxQueuedBytes?: number,
) {
  const before = openFdCount();
  const loop = new EventLoop();
  const [ours, peer] = UnixStream.pair(true);
  const handler = new RecordingHandler();
  const lines: string[] = [];
  const logger = new Logger();
  logger.setSink((_level, line) => lines.push(line));
  const transport = new StreamTransport(ours, loop, handler, { logger, maxQueuedBytes });
  const running = loop.run();
  try {
    await body({ peer, transport, handler, lines, loop });
  } finally {
    transport.close();
    loop.stop();
    await running;
    loop.close();
    peer.close();
  }
  assert.equal(openFdCount(), before, "no fd leaked");
}

/** Writes all of `bytes` to a nonblocking peer, waiting while it is full. */
async function writeAll(peer: UnixStream, bytes: Uint8Array) {
  let at = 0;
  while (at < bytes.length) {
    const n = peer.send(bytes.subarray(at));
    if (n < 0) await delay(1);
    else at += n;
  }
}

async function readExactly(peer: UnixStream, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let at = 0;
  for (let spins = 0; at < length && spins < 2000; spins++) {
    const n = peer.recv(out.subarray(at));
    if (n > 0) at += n;
    else if (n === 0) break;
    else await delay(1);
  }
  assert.equal(at, length, `read ${at} of ${length} bytes`);
  return out;
}

Deno.test("StreamTransport delivers frames split across reads and several per read", async () => {
  await withTransport(async ({ peer, handler }) => {
    assert.deepEqual(handler.events, ["up"]);
    const frames = [frameOf(60, 1), frameOf(1514, 2), frameOf(65535, 3), frameOf(14, 4)];
    const bytes = encode(...frames);
    // First two frames and 3 bytes of the third's length in one write, the rest byte-sliced.
    const cut = 4 + 60 + 4 + 1514 + 3;
    await writeAll(peer, bytes.subarray(0, cut));
    await waitUntil("two frames", () => handler.frames.length === 2);
    await writeAll(peer, bytes.subarray(cut, cut + 1));
    await delay(5);
    assert.equal(handler.frames.length, 2, "a partial length is kept");
    await writeAll(peer, bytes.subarray(cut + 1, cut + 30000));
    await delay(5);
    await writeAll(peer, bytes.subarray(cut + 30000));
    await waitUntil("all frames", () => handler.frames.length === 4);
    assert.deepEqual(handler.frames, frames);
    assert.ok(handler.events.includes("batch:2"));
  });
});

Deno.test("StreamTransport.sendFrame() writes a big-endian length and the frame", async () => {
  await withTransport(async ({ peer, transport }) => {
    const frames = [frameOf(42, 7), frameOf(9000, 8)];
    for (const f of frames) assert.equal(transport.sendFrame(f), SendResult.Sent);
    transport.flush();
    const got = await readExactly(peer, 4 + 42 + 4 + 9000);
    assert.deepEqual(got, encode(...frames));
    assert.equal(transport.sendFrame(new Uint8Array(13)), SendResult.Dropped);
    assert.equal(transport.sendFrame(new Uint8Array(65536)), SendResult.Dropped);
  });
});

for (const [name, length] of [["below 14", 13], ["above 65535", 65536], ["zero", 0]] as const) {
  Deno.test(`StreamTransport resets the connection for a length ${name}`, async () => {
    await withTransport(async ({ peer, transport, handler, lines }) => {
      const bad = new Uint8Array(8);
      new DataView(bad.buffer).setUint32(0, length);
      await writeAll(peer, encode(frameOf(60, 0)));
      await writeAll(peer, bad);
      await transport.closed;
      assert.deepEqual(handler.frames, [frameOf(60, 0)]);
      assert.equal(handler.events.at(-1), "down");
      const resets = lines.filter((l) => l.includes("resetting"));
      assert.equal(resets.length, 1);
      assert.match(resets[0], new RegExp(`frame length ${length} is outside 14..65535`));
      assert.equal(peer.recv(new Uint8Array(4)), 0, "the peer sees the reset");
    });
  });
}

/** Sends and flushes `frame` until the transport answers NoRoom; returns how many were sent. */
function fillUntilNoRoom(transport: StreamTransport, frame: Uint8Array): number {
  let sent = 0;
  let result: SendResult = SendResult.Sent;
  for (let i = 0; i < 200 && result === SendResult.Sent; i++) {
    result = transport.sendFrame(frame);
    if (result === SendResult.Sent) sent++;
    transport.flush();
  }
  assert.equal(result, SendResult.NoRoom, "the bounded queue filled up");
  return sent;
}

Deno.test("StreamTransport returns NoRoom when its queue is full and calls back once drained", async () => {
  await withTransport(async ({ peer, transport }) => {
    let woken = 0;
    transport.onWritable(() => woken++);
    const frame = frameOf(65535, 1);
    const sent = fillUntilNoRoom(transport, frame);
    assert.equal(woken, 0);
    const received = await readExactly(peer, sent * (4 + 65535));
    assert.deepEqual(received.subarray(received.length - 65535), frame);
    await waitUntil("the writable callback", () => woken === 1);
    assert.equal(transport.sendFrame(frame), SendResult.Sent);
  }, 4 * 65539);
});

Deno.test("StreamTransport still calls back after a NoRoom when a flush, not the loop, empties its queue", async () => {
  await withTransport(async ({ peer, transport }) => {
    let woken = 0;
    transport.onWritable(() => woken++);
    const frame = frameOf(65535, 2);
    const sent = fillUntilNoRoom(transport, frame);
    // The peer takes what the socket holds and the stack flushes, both before the loop
    // runs again: the flush sends the rest and empties the queue, and the callback that
    // the NoRoom promised must still come.
    const buf = new Uint8Array(sent * (4 + 65535));
    let got = 0;
    for (let n = peer.recv(buf); n > 0; n = peer.recv(buf.subarray(got))) got += n;
    assert.ok(got > 0 && got < buf.length, `the socket held part of the queue (${got})`);
    transport.flush();
    const rest = await readExactly(peer, buf.length - got);
    buf.set(rest, got);
    assert.deepEqual(buf.subarray(buf.length - 65535), frame);
    await waitUntil("the writable callback after the flush emptied the queue", () => woken === 1);
    assert.equal(transport.sendFrame(frame), SendResult.Sent);
  }, 2 * 65539); // a queue smaller than the socket buffer: one flush can empty it
});

Deno.test("StreamTransport ends the session when the peer disconnects", async () => {
  await withTransport(async ({ peer, transport, handler, loop }) => {
    peer.close();
    await transport.closed;
    assert.deepEqual(handler.events, ["up", "down"]);
    assert.equal(handler.frontendGoneCalls, 1, "the stream was the front-end: gone with it");
    assert.equal(loop.size, 0, "unwatched");
    assert.equal(transport.sendFrame(frameOf(60, 0)), SendResult.Dropped);
  });
});

Deno.test("StreamTransport.close() logs a throwing linkDown instead of passing it on", async () => {
  const loop = new EventLoop();
  const [ours, peer] = UnixStream.pair(true);
  const handler = new RecordingHandler();
  handler.linkDown = () => {
    throw new Error("boom");
  };
  const lines: string[] = [];
  const logger = new Logger();
  logger.setSink((_level, line) => lines.push(line));
  const transport = new StreamTransport(ours, loop, handler, { logger });
  try {
    transport.close();
    await transport.closed;
    assert.ok(lines.some((l) => /linkDown threw: boom/.test(l)), lines.join("\n"));
    assert.equal(handler.frontendGoneCalls, 1, "told all the same");
  } finally {
    loop.close();
    peer.close();
  }
});

Deno.test("createStreamSession() and streamSessionFactory() return closable sessions", async () => {
  const before = openFdCount();
  const loop = new EventLoop();
  const handler = new RecordingHandler();
  const logger = new Logger();
  logger.setSink(() => {});
  const [a, b] = UnixStream.pair(true);
  const session = createStreamSession(a, loop, handler, { logger });
  session.close();
  session.close();
  await session.closed;
  const [c, d] = UnixStream.pair(true);
  const factory = streamSessionFactory(handler, { logger });
  const second = factory(c, loop);
  second.close();
  await second.closed;
  assert.deepEqual(handler.events, ["up", "down", "up", "down"]);
  loop.close();
  b.close();
  d.close();
  assert.equal(openFdCount(), before);
});

Deno.test("StreamTransport.reserveFrame() writes the frame straight into the queue toward the guest; cancel leaves nothing", async () => {
  await withTransport(async ({ peer, transport }) => {
    const space = newFrameSpace();
    assert.equal(transport.reserveFrame(space, 5000, 54), SendResult.Sent);
    assert.equal(space.count, 1);
    assert.equal(space.length, 5000);
    transport.cancelFrame();
    assert.equal(transport.reserveFrame(space, 70000, 54), SendResult.Sent);
    assert.equal(space.length, 65535, "at most the protocol's largest frame");
    const frame = frameOf(3000, 7);
    space.views[0].set(frame);
    assert.equal(transport.commitFrame(frame.length), SendResult.Sent);
    assert.equal(transport.commitFrame(frame.length), SendResult.Dropped, "committed once");
    transport.flush();
    assert.deepEqual(await readExactly(peer, 4 + frame.length), encode(frame));
  });
});

Deno.test("StreamTransport.reserveFrame() reports NoRoom when the queue is full", async () => {
  await withTransport(({ transport }) => {
    let called = 0;
    transport.onWritable(() => called++);
    const space = newFrameSpace();
    let reserved = 0;
    while (transport.reserveFrame(space, 65535, 54) === SendResult.Sent && reserved < 1000) {
      assert.equal(transport.commitFrame(65535), SendResult.Sent);
      reserved++;
    }
    assert.ok(reserved < 1000, "the bounded queue filled up");
    assert.equal(transport.reserveFrame(space, 65535, 54), SendResult.NoRoom);
    assert.equal(called, 0);
    return Promise.resolve();
  }, 4 * 65539);
});
