import assert from "node:assert/strict";
import fc from "fast-check";
import {
  ipv4MaskToPrefix,
  ipv4PrefixMask,
  ipv4SameSubnet,
  isMulticastMac,
  macToString,
  parseMac,
  readMac,
  writeMac,
} from "./address.ts";

Deno.test("`parseMac()` and `macToString()` round-trip", () => {
  assert.equal(macToString(parseMac("9a:55:9A:55:9a:55")!), "9a:55:9a:55:9a:55");
  assert.equal(parseMac("9a:55:9a:55:9a"), null);
  assert.equal(parseMac("zz:55:9a:55:9a:55"), null);
  fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffffffff }), (m) => {
    assert.equal(parseMac(macToString(m)), m);
    const b = new Uint8Array(6);
    writeMac(b, 0, m);
    assert.equal(readMac(b, 0), m);
  }));
});

Deno.test("`isMulticastMac()` tests the group bit", () => {
  assert.equal(isMulticastMac(0xffffffffffff), true);
  assert.equal(isMulticastMac(0x333300000001), true);
  assert.equal(isMulticastMac(0x9a559a559a55), false);
});

Deno.test("`ipv4PrefixMask()` and `ipv4MaskToPrefix()` agree", () => {
  assert.equal(ipv4PrefixMask(24), 0xffffff00);
  assert.equal(ipv4PrefixMask(0), 0);
  assert.equal(ipv4PrefixMask(32), 0xffffffff);
  for (let p = 0; p <= 32; p++) assert.equal(ipv4MaskToPrefix(ipv4PrefixMask(p)), p);
  assert.equal(ipv4MaskToPrefix(0xff00ff00), null);
  assert.equal(ipv4SameSubnet(0x0a000001, 0x0a0000fe, 24), true);
  assert.equal(ipv4SameSubnet(0x0a000001, 0x0a0001fe, 24), false);
});
