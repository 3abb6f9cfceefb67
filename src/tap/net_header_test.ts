import assert from "node:assert/strict";
import fc from "fast-check";
import {
  createNetHeader,
  decodeNetHeader,
  encodeNetHeader,
  NET_HDR_NUM_BUFFERS,
  NET_HDR_SIZE,
  type NetHeader,
} from "./net_header.ts";

const headerArbitrary = fc.record({
  flags: fc.integer({ min: 0, max: 0xff }),
  gsoType: fc.integer({ min: 0, max: 0xff }),
  hdrLen: fc.integer({ min: 0, max: 0xffff }),
  gsoSize: fc.integer({ min: 0, max: 0xffff }),
  csumStart: fc.integer({ min: 0, max: 0xffff }),
  csumOffset: fc.integer({ min: 0, max: 0xffff }),
  numBuffers: fc.integer({ min: 0, max: 0xffff }),
});

Deno.test("encodeNetHeader() and decodeNetHeader() round-trip every header", () => {
  fc.assert(
    fc.property(headerArbitrary, fc.integer({ min: 0, max: 20 }), (header, offset) => {
      const bytes = new Uint8Array(offset + NET_HDR_SIZE + 3);
      encodeNetHeader(header, bytes, offset);
      assert.deepEqual(decodeNetHeader(bytes, offset, createNetHeader()), { ...header });
      assert.equal(bytes.subarray(0, offset).every((b) => b === 0), true);
      assert.equal(bytes.subarray(offset + NET_HDR_SIZE).every((b) => b === 0), true);
    }),
  );
});

Deno.test("decodeNetHeader() then encodeNetHeader() reproduces any 12 bytes", () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: NET_HDR_SIZE, maxLength: NET_HDR_SIZE }), (raw) => {
      const out = new Uint8Array(NET_HDR_SIZE);
      encodeNetHeader(decodeNetHeader(raw, 0, createNetHeader()), out, 0);
      assert.deepEqual(out, raw);
    }),
  );
});

Deno.test("decodeNetHeader() reads little-endian fields at the spec offsets", () => {
  const raw = Uint8Array.of(1, 4, 0x36, 0, 0xdc, 0x05, 0x22, 0, 0x10, 0, 3, 0);
  const h: NetHeader = decodeNetHeader(raw, 0, createNetHeader());
  assert.deepEqual(h, {
    flags: 1,
    gsoType: 4,
    hdrLen: 0x36,
    gsoSize: 1500,
    csumStart: 0x22,
    csumOffset: 16,
    numBuffers: 3,
  });
  assert.equal(raw[NET_HDR_NUM_BUFFERS], 3);
});

Deno.test("decodeNetHeader() and encodeNetHeader() reject short input", () => {
  assert.throws(() => decodeNetHeader(new Uint8Array(11), 0, createNetHeader()), RangeError);
  assert.throws(() => encodeNetHeader(createNetHeader(), new Uint8Array(20), 9), /need 12/);
});
