import assert from "node:assert/strict";
import {
  maxPayloadSize,
  MessageFramer,
  ProtocolError,
  readU64,
  ReplyWriter,
} from "./message_codec.ts";
import { ScriptedChannel } from "../../tests/support/vhost_user/backend_doubles.ts";
import { encodeRequest } from "../../tests/support/vhost_user/request_encoder.ts";
import { FLAGS_REPLY, FLAGS_VERSION, MAX_PAYLOAD_SIZE, Request } from "./protocol.ts";
import { u64Payload, vringStatePayload } from "./payload_codec.ts";

Deno.test("`MessageFramer.poll()` reassembles a message delivered one byte at a time", () => {
  const channel = new ScriptedChannel();
  const framer = new MessageFramer(channel);
  const bytes = encodeRequest(Request.SET_VRING_NUM, vringStatePayload(1, 256));
  for (let i = 0; i < bytes.length; i++) {
    assert.equal(framer.poll().kind, "pending");
    channel.push(bytes.subarray(i, i + 1), i === 0 ? [42] : []);
  }
  const outcome = framer.poll();
  assert.equal(outcome.kind, "message");
  if (outcome.kind !== "message") return;
  assert.equal(outcome.message.request, Request.SET_VRING_NUM);
  assert.equal(outcome.message.size, 8);
  assert.equal(outcome.message.payload.getUint32(0, true), 1);
  assert.equal(outcome.message.payload.getUint32(4, true), 256);
  assert.deepEqual(outcome.message.fds, [42]);
  assert.equal(framer.midMessage, false);
});

Deno.test("`MessageFramer.poll()` rejects a message whose pieces bring more than 8 fds in all", () => {
  const channel = new ScriptedChannel();
  const framer = new MessageFramer(channel);
  const bytes = encodeRequest(Request.SET_VRING_KICK, u64Payload(0));
  // each one-byte piece carries fds: a limit per read alone would let this add up
  let fd = 100;
  for (let i = 0; i < bytes.length; i++) {
    channel.push(bytes.subarray(i, i + 1), [fd++, fd++, fd++]);
  }
  assert.throws(() => framer.poll(), /9 fds arrived with one message, more than the 8 allowed/);
  assert.deepEqual(framer.takeOrphanFds(), [100, 101, 102, 103, 104, 105, 106, 107, 108]);
});

Deno.test("`MessageFramer.poll()` keeps each message's fds with that message", () => {
  const channel = new ScriptedChannel();
  const framer = new MessageFramer(channel);
  channel.push(encodeRequest(Request.SET_VRING_KICK, u64Payload(0)), [7]);
  channel.push(encodeRequest(Request.SET_VRING_CALL, u64Payload(0)), [8]);
  const first = framer.poll();
  const second = framer.poll();
  assert.ok(first.kind === "message" && second.kind === "message");
  assert.deepEqual(first.message.fds, [7]);
  assert.equal(second.message.request, Request.SET_VRING_CALL);
  assert.deepEqual(second.message.fds, [8]);
});

Deno.test("`MessageFramer.poll()` rejects a header size above the request's largest payload before reading it", () => {
  const channel = new ScriptedChannel();
  const framer = new MessageFramer(channel);
  channel.push(encodeRequest(Request.SET_VRING_NUM, new Uint8Array(0), { sizeField: 9 }));
  assert.throws(() => framer.poll(), (e: Error) => {
    assert.ok(e instanceof ProtocolError);
    assert.match(e.message, /SET_VRING_NUM: header payload size 9 exceeds the largest valid 8/);
    return true;
  });
});

Deno.test("`MessageFramer.poll()` rejects an unknown request larger than any payload", () => {
  const channel = new ScriptedChannel();
  const framer = new MessageFramer(channel);
  channel.push(encodeRequest(999, new Uint8Array(0), { sizeField: 0xffffffff }));
  assert.throws(() => framer.poll(), /UNKNOWN\(999\): header payload size 4294967295 exceeds/);
});

Deno.test("`MessageFramer.poll()` rejects a wrong protocol version", () => {
  const channel = new ScriptedChannel();
  const framer = new MessageFramer(channel);
  channel.push(encodeRequest(Request.GET_FEATURES, new Uint8Array(0), { flags: 2 }));
  assert.throws(() => framer.poll(), /header version 2 is not 1/);
});

Deno.test("`MessageFramer.poll()` reports EOF in mid-message with what was missing", () => {
  const channel = new ScriptedChannel();
  const framer = new MessageFramer(channel);
  channel.push(encodeRequest(Request.SET_FEATURES, u64Payload(1)).subarray(0, 15), [5]);
  channel.close();
  const outcome = framer.poll();
  assert.equal(outcome.kind, "eof");
  if (outcome.kind !== "eof") return;
  assert.equal(outcome.midMessage, true);
  assert.match(outcome.detail, /after 3 of 8 payload bytes of SET_FEATURES/);
  assert.deepEqual(framer.takeOrphanFds(), [5]);
});

Deno.test("`MessageFramer.poll()` reports a clean EOF between messages", () => {
  const channel = new ScriptedChannel();
  const framer = new MessageFramer(channel);
  channel.close();
  const outcome = framer.poll();
  assert.ok(outcome.kind === "eof" && !outcome.midMessage);
});

Deno.test("`maxPayloadSize()` bounds every request by its layout or the global maximum", () => {
  assert.equal(maxPayloadSize(Request.SET_VRING_ADDR), 40);
  assert.equal(maxPayloadSize(Request.SET_MEM_TABLE), 8 + 8 * 32);
  assert.equal(maxPayloadSize(Request.ADD_MEM_REG), 40);
  assert.equal(maxPayloadSize(12345), MAX_PAYLOAD_SIZE);
});

Deno.test("`readU64()` rejects values at or above 2^53 and reads smaller ones exactly", () => {
  const view = new DataView(new ArrayBuffer(16));
  view.setBigUint64(0, 2n ** 53n - 1n, true);
  view.setBigUint64(8, 2n ** 53n, true);
  assert.equal(readU64(view, 0, "x", 1), 2 ** 53 - 1);
  assert.throws(
    () => readU64(view, 8, "region size", 5),
    /region size 0x20000000000000 is not below 2\^53/,
  );
});

Deno.test("`ReplyWriter` sends header and payload in one write with the REPLY flag", () => {
  const channel = new ScriptedChannel();
  const writer = new ReplyWriter(channel);
  writer.sendVringState(Request.GET_VRING_BASE, 1, 77);
  assert.equal(channel.sent.length, 1);
  const view = new DataView(channel.sent[0].buffer);
  assert.equal(channel.sent[0].length, 20);
  assert.equal(view.getUint32(0, true), Request.GET_VRING_BASE);
  assert.equal(view.getUint32(4, true), FLAGS_VERSION | FLAGS_REPLY);
  assert.equal(view.getUint32(8, true), 8);
  assert.equal(view.getUint32(16, true), 77);
});

Deno.test("`ReplyWriter` reports a failed write as a ProtocolError naming the reply", () => {
  const channel = new ScriptedChannel();
  channel.failSends = true;
  const writer = new ReplyWriter(channel);
  assert.throws(
    () => writer.sendU64(Request.GET_FEATURES, 1n),
    /GET_FEATURES: cannot send the 20-byte reply: EPIPE/,
  );
});
