import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decodeLogDescription,
  decodeRegion,
  decodeRegionCount,
  decodeVringAddress,
  decodeVringState,
  logPayload,
  memTablePayload,
  regionEntryOffset,
  singleRegionPayload,
  u64Payload,
  VRING_FLAGS_LOG,
  vringAddrPayload,
  vringStatePayload,
} from "./payload_codec.ts";
import { ProtocolError, readU64 } from "./message_codec.ts";
import { Request, SINGLE_REGION_ENTRY } from "./protocol.ts";

const view = (bytes: Uint8Array) => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const address = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const region = fc.tuple(address, address, address, address).map((
  [guestAddress, size, userAddress, mmapOffset],
) => ({ guestAddress, size, userAddress, mmapOffset }));

Deno.test("vring state, address, log and u64 payloads decode to what was encoded", () => {
  fc.assert(fc.property(u32, u32, (index, num) => {
    assert.deepEqual(decodeVringState(view(vringStatePayload(index, num))), { index, num });
  }));
  fc.assert(
    fc.property(u32, address, address, address, address, fc.boolean(), (i, d, u, a, l, log) => {
      const flags = log ? VRING_FLAGS_LOG : 0;
      const payload = vringAddrPayload(i, { descriptor: d, used: u, available: a }, flags, l);
      assert.deepEqual(decodeVringAddress(view(payload), Request.SET_VRING_ADDR), {
        index: i,
        flags,
        descriptor: d,
        used: u,
        available: a,
        log: log ? l : 0,
      });
    }),
  );
  fc.assert(fc.property(address, address, (size, offset) => {
    const payload = view(logPayload(size, offset));
    assert.deepEqual(decodeLogDescription(payload, Request.SET_LOG_BASE), { size, offset });
  }));
  fc.assert(fc.property(address, (value) => {
    assert.equal(readU64(view(u64Payload(value)), 0, "value", Request.SET_FEATURES), value);
  }));
});

Deno.test("memory tables and single regions decode to the regions encoded", () => {
  fc.assert(fc.property(fc.array(region, { maxLength: 8 }), (regions) => {
    const payload = view(memTablePayload(regions));
    assert.equal(decodeRegionCount(payload), regions.length);
    regions.forEach((r, i) => {
      assert.deepEqual(decodeRegion(payload, regionEntryOffset(i), Request.SET_MEM_TABLE), r);
    });
  }));
  fc.assert(fc.property(region, (r) => {
    const payload = view(singleRegionPayload(r));
    assert.deepEqual(decodeRegion(payload, SINGLE_REGION_ENTRY, Request.ADD_MEM_REG), r);
  }));
});

Deno.test("an address of 2^53 or above is refused with the field named", () => {
  const far = 2n ** 53n;
  const payload = view(vringAddrPayload(0, { descriptor: 0, used: far, available: 0 }));
  assert.throws(
    () => decodeVringAddress(payload, Request.SET_VRING_ADDR),
    (e: unknown) =>
      e instanceof ProtocolError && /used ring address 0x20000000000000/.test(e.message),
  );
  // Without VHOST_VRING_F_LOG the log field is not read.
  const unlogged = view(vringAddrPayload(0, { descriptor: 0, used: 0, available: 0 }, 0, far));
  assert.equal(decodeVringAddress(unlogged, Request.SET_VRING_ADDR).log, 0);
  const table = view(
    memTablePayload([{ guestAddress: 0, size: far, userAddress: 0, mmapOffset: 0 }]),
  );
  assert.throws(
    () => decodeRegion(table, regionEntryOffset(0), Request.SET_MEM_TABLE),
    /region size 0x20000000000000 is not below 2\^53/,
  );
});
