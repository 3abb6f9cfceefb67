import assert from "node:assert/strict";
import fc from "fast-check";
import {
  buildIpv6,
  IPV6_EXT_DEST_OPTS,
  IPV6_EXT_FRAGMENT,
  IPV6_EXT_HOP_BY_HOP,
  IPV6_HEADER_LENGTH,
  newIpv6Header,
  parseIpv6Header,
} from "./ipv6.ts";
import { parseIpv6 as parseAddr } from "../../../ffi/ip_address_text.ts";

const SRC = parseAddr("fe80::1")!;
const DST = parseAddr("2001:db8::2")!;

function packet(nextHeader: number, body: number[]): Uint8Array {
  const b = new Uint8Array(IPV6_HEADER_LENGTH + body.length);
  buildIpv6(b, 0, { payloadLength: body.length, nextHeader, hopLimit: 255, src: SRC, dst: DST });
  b.set(body, IPV6_HEADER_LENGTH);
  return b;
}

Deno.test("`parseIpv6Header()` inverts `buildIpv6()`", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 255 }),
      fc.integer({ min: 0, max: 0xfffff }),
      fc.integer({ min: 0, max: 100 }),
      fc.constantFrom(6, 17, 58, 59),
      fc.integer({ min: 0, max: 255 }),
      fc.uint8Array({ minLength: 16, maxLength: 16 }),
      fc.uint8Array({ minLength: 16, maxLength: 16 }),
      (trafficClass, flowLabel, payloadLength, nextHeader, hopLimit, src, dst) => {
        const b = new Uint8Array(IPV6_HEADER_LENGTH + payloadLength + 3);
        buildIpv6(b, 0, { trafficClass, flowLabel, payloadLength, nextHeader, hopLimit, src, dst });
        const h = newIpv6Header();
        assert.equal(parseIpv6Header(b, 0, b.length, h), "ok");
        assert.equal(h.trafficClass, trafficClass);
        assert.equal(h.flowLabel, flowLabel);
        assert.equal(h.payloadLength, payloadLength);
        assert.equal(h.nextHeader, nextHeader);
        assert.equal(h.protocol, nextHeader);
        assert.equal(h.hopLimit, hopLimit);
        assert.deepEqual(h.src, src);
        assert.deepEqual(h.dst, dst);
        assert.equal(h.l4Offset, 40);
        assert.equal(h.l4Length, payloadLength);
        assert.equal(h.isFragment, false);
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("`parseIpv6Header()` skips Hop-by-Hop and Destination Options headers", () => {
  // HBH (8 bytes, next = DestOpts) + DestOpts (16 bytes, next = ICMPv6) + 8 bytes ICMPv6
  const body = [
    IPV6_EXT_DEST_OPTS,
    0,
    5,
    2,
    0,
    0,
    1,
    0,
    58,
    1,
    1,
    4,
    0,
    0,
    0,
    0,
    1,
    6,
    0,
    0,
    0,
    0,
    0,
    0,
    143,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
  ];
  const b = packet(IPV6_EXT_HOP_BY_HOP, body);
  const h = newIpv6Header();
  assert.equal(parseIpv6Header(b, 0, b.length, h), "ok");
  assert.equal(h.protocol, 58);
  assert.equal(h.l4Offset, 40 + 24);
  assert.equal(h.l4Length, 8);
  assert.equal(h.isFragment, false);
});

Deno.test("`parseIpv6Header()` flags a Fragment header", () => {
  const b = packet(IPV6_EXT_FRAGMENT, [17, 0, 0, 1, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8]);
  const h = newIpv6Header();
  assert.equal(parseIpv6Header(b, 0, b.length, h), "ok");
  assert.equal(h.isFragment, true);
  assert.equal(h.protocol, 17);
});

Deno.test("`parseIpv6Header()` reports every malformation", () => {
  const h = newIpv6Header();
  assert.equal(parseIpv6Header(new Uint8Array(39), 0, 39, h), "ipv6-truncated");
  const v4 = packet(6, []);
  v4[0] = 0x45;
  assert.equal(parseIpv6Header(v4, 0, v4.length, h), "ipv6-bad-version");
  const long = packet(6, [1, 2, 3]);
  assert.equal(parseIpv6Header(long, 0, long.length - 1, h), "ipv6-length-beyond-frame");
  // Extension header length runs past the payload.
  const ext = packet(IPV6_EXT_DEST_OPTS, [58, 4, 0, 0, 0, 0, 0, 0]);
  assert.equal(parseIpv6Header(ext, 0, ext.length, h), "ipv6-bad-extension-header");
  // Extension header shorter than 8 bytes.
  const short = packet(IPV6_EXT_DEST_OPTS, [58, 0, 0]);
  assert.equal(parseIpv6Header(short, 0, short.length, h), "ipv6-bad-extension-header");
  // Hop-by-Hop not first.
  const hbh = packet(IPV6_EXT_DEST_OPTS, [0, 0, 0, 0, 0, 0, 0, 0, 58, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(parseIpv6Header(hbh, 0, hbh.length, h), "ipv6-bad-extension-header");
  // A chain of 9 Destination Options headers.
  const chain: number[] = [];
  for (let i = 0; i < 9; i++) chain.push(IPV6_EXT_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0);
  const many = packet(IPV6_EXT_DEST_OPTS, chain);
  assert.equal(parseIpv6Header(many, 0, many.length, h), "ipv6-too-many-extension-headers");
});

Deno.test("`parseIpv6Header()` never throws on arbitrary bytes", () => {
  const h = newIpv6Header();
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 120 }),
      fc.constantFrom(0, 43, 44, 60, 6),
      fc.integer({ min: -3, max: 130 }),
      (b, nh, end) => {
        if (b.length >= 40) {
          b[0] = 0x60;
          b[6] = nh;
          b[4] = 0;
          b[5] = Math.min(b[5], b.length - 40);
        }
        const r = parseIpv6Header(b, 0, end, h);
        if (r === "ok") assert.ok(h.l4Offset + h.l4Length <= Math.min(end, b.length));
      },
    ),
    { numRuns: 500 },
  );
});
