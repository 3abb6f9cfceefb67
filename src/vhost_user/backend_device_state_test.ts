import { assertEquals, assertTrue } from "../../tests/support/assert.ts";
import type { DeviceStateDirection, DeviceStateHandler } from "./backend_environment.ts";
import { BackendRig, FAKE_PIPE } from "../../tests/support/vhost_user/backend_doubles.ts";
import { encodeRequest } from "../../tests/support/vhost_user/request_encoder.ts";
import {
  DEVICE_STATE_REPLY_NO_FD,
  featureBit,
  OFFERED_PROTOCOL_FEATURES,
  ProtocolFeature,
  Request,
} from "./protocol.ts";
import { InvalidStateError } from "./backend.ts";
import { u64Payload } from "./payload_codec.ts";

/** A handler that records transfers and answers CHECK_DEVICE_STATE as told. */
class RecordingDeviceState implements DeviceStateHandler {
  readonly begun: { direction: DeviceStateDirection; fd: number }[] = [];
  outcome: string | null = null;
  refuse: string | null = null;
  constructor(readonly rig: () => BackendRig) {}
  begin(direction: DeviceStateDirection, fd: number): void {
    // the handler owns the fd, even when it refuses
    this.rig().fds.close(fd);
    if (this.refuse !== null) throw new Error(this.refuse);
    this.begun.push({ direction, fd });
  }
  check(): string | null {
    return this.outcome;
  }
}

function params(direction: number, phase: number): Uint8Array {
  const bytes = new Uint8Array(8);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, direction, true);
  view.setUint32(4, phase, true);
  return bytes;
}

const DEVICE_STATE = featureBit(ProtocolFeature.DEVICE_STATE);

function rigWithDeviceState(negotiate = true) {
  const holder: { rig: BackendRig | null } = { rig: null };
  const handler = new RecordingDeviceState(() => holder.rig!);
  const rig = new BackendRig({ deviceState: handler });
  holder.rig = rig;
  const [offered] = rig.send(encodeRequest(Request.GET_PROTOCOL_FEATURES));
  const features = offered.payload.getBigUint64(0, true);
  if (negotiate) rig.send(encodeRequest(Request.SET_PROTOCOL_FEATURES, u64Payload(features)));
  rig.send(encodeRequest(Request.SET_OWNER));
  return { rig, handler, offered: features };
}

function u64(reply: { payload: DataView }): bigint {
  return reply.payload.getBigUint64(0, true);
}

Deno.test("GET_PROTOCOL_FEATURES offers DEVICE_STATE only with a device state handler", () => {
  const plain = new BackendRig();
  const [reply] = plain.send(encodeRequest(Request.GET_PROTOCOL_FEATURES));
  assertEquals(u64(reply), OFFERED_PROTOCOL_FEATURES);
  assertEquals(u64(reply) & DEVICE_STATE, 0n);
  const { offered } = rigWithDeviceState();
  assertEquals(offered, OFFERED_PROTOCOL_FEATURES | DEVICE_STATE);
});

Deno.test("SET_DEVICE_STATE_FD hands the pipe to the handler and replies success without an fd", () => {
  const { rig, handler } = rigWithDeviceState();
  const save = rig.fds.create(FAKE_PIPE);
  const [reply] = rig.send(encodeRequest(Request.SET_DEVICE_STATE_FD, params(0, 0)), [save]);
  assertEquals(reply.request, Request.SET_DEVICE_STATE_FD);
  assertEquals(u64(reply), BigInt(DEVICE_STATE_REPLY_NO_FD));
  const load = rig.fds.create(FAKE_PIPE);
  const [second] = rig.send(encodeRequest(Request.SET_DEVICE_STATE_FD, params(1, 0)), [load]);
  assertEquals(u64(second), BigInt(DEVICE_STATE_REPLY_NO_FD));
  assertEquals(handler.begun, [{ direction: "save", fd: save }, { direction: "load", fd: load }]);
  assertEquals(rig.error, null);
  assertEquals(rig.fds.open.size, 0);
});

Deno.test("SET_DEVICE_STATE_FD with an unknown direction or phase fails in its reply and closes the fd", () => {
  const { rig, handler } = rigWithDeviceState();
  for (const [direction, phase] of [[2, 0], [0, 1]]) {
    const fd = rig.fds.create(FAKE_PIPE);
    const [reply] = rig.send(
      encodeRequest(Request.SET_DEVICE_STATE_FD, params(direction, phase)),
      [fd],
    );
    assertEquals(u64(reply) & 0xffn, 1n);
    assertEquals(u64(reply) & BigInt(DEVICE_STATE_REPLY_NO_FD), BigInt(DEVICE_STATE_REPLY_NO_FD));
  }
  assertEquals(handler.begun.length, 0);
  assertEquals(rig.fds.open.size, 0);
  assertEquals(rig.error, null);
  assertTrue(rig.log.lines.some((l) => l.includes("direction 2")));
});

Deno.test("SET_DEVICE_STATE_FD that the handler refuses fails in its reply", () => {
  const { rig, handler } = rigWithDeviceState();
  handler.refuse = "a transfer is already running";
  const fd = rig.fds.create(FAKE_PIPE);
  const [reply] = rig.send(encodeRequest(Request.SET_DEVICE_STATE_FD, params(0, 0)), [fd]);
  assertEquals(u64(reply), BigInt(DEVICE_STATE_REPLY_NO_FD | 1));
  assertTrue(rig.log.lines.some((l) => l.includes("already running")));
  assertEquals(rig.fds.open.size, 0);
});

Deno.test("SET_DEVICE_STATE_FD without its fd is a protocol error", () => {
  const { rig } = rigWithDeviceState();
  rig.send(encodeRequest(Request.SET_DEVICE_STATE_FD, params(0, 0)));
  assertTrue(rig.protocolError !== null);
});

Deno.test("CHECK_DEVICE_STATE replies 0 on success and 1 with the handler's reason logged", () => {
  const { rig, handler } = rigWithDeviceState();
  const [ok] = rig.send(encodeRequest(Request.CHECK_DEVICE_STATE));
  assertEquals(u64(ok), 0n);
  handler.outcome = "truncated stream";
  const [failed] = rig.send(encodeRequest(Request.CHECK_DEVICE_STATE));
  assertEquals(u64(failed), 1n);
  assertTrue(rig.log.lines.some((l) => l.includes("CHECK_DEVICE_STATE: truncated stream")));
  assertEquals(rig.error, null);
});

Deno.test("device state requests without DEVICE_STATE negotiated end the connection", () => {
  const { rig } = rigWithDeviceState(false);
  const fd = rig.fds.create(FAKE_PIPE);
  rig.send(encodeRequest(Request.SET_DEVICE_STATE_FD, params(0, 0)), [fd]);
  assertTrue(rig.error instanceof InvalidStateError, String(rig.error));
  assertEquals(rig.fds.open.size, 0);
});
