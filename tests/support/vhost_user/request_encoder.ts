/**
 * Encodes front-end → back-end request messages (a header before a given payload):
 * what QEMU sends. Used by the test harness (tests/support/frontend/) and the backend's unit
 * tests; the daemon itself never sends requests. The payloads are encoded by
 * src/vhost_user/payload_codec.ts, beside their decoders.
 *
 * Spec: QEMU docs/interop/vhost-user.rst, "Message Specification".
 *
 * @module
 */

import {
  FLAGS_NEED_REPLY,
  FLAGS_VERSION,
  HEADER_FLAGS,
  HEADER_REQUEST,
  HEADER_SIZE,
  HEADER_SIZE_FIELD,
} from "../../../src/vhost_user/protocol.ts";

/** Options for an encoded request. */
export interface EncodeOptions {
  /** Set NEED_REPLY (flags bit 3). */
  needReply?: boolean;
  /** Override the whole flags word (fuzzing). */
  flags?: number;
  /** Override the header's size field (fuzzing). */
  sizeField?: number;
}

/** Encodes a request with `payload` (copied after the 12-byte header). */
export function encodeRequest(
  request: number,
  payload: Uint8Array = new Uint8Array(0),
  options: EncodeOptions = {},
): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(HEADER_REQUEST, request, true);
  view.setUint32(
    HEADER_FLAGS,
    options.flags ?? (FLAGS_VERSION | (options.needReply ? FLAGS_NEED_REPLY : 0)),
    true,
  );
  view.setUint32(HEADER_SIZE_FIELD, options.sizeField ?? payload.length, true);
  out.set(payload, HEADER_SIZE);
  return out;
}
