import assert from "node:assert/strict";
import fc from "fast-check";
import {
  buildIpv4,
  IPV4_FLAG_DF,
  IPV4_FLAG_MF,
  type Ipv4Header,
  newIpv4Header,
  parseIpv4Header,
  updateIpv4Checksum,
} from "./ipv4.ts";
import { internetChecksum } from "./checksum.ts";
import { hexBytes } from "../../../tests/support/hex_bytes.ts";

const KNOWN = hexBytes(`
  45 00 00 1c
  12 34 40 00
  40 11 00 00
  c0 a8 00 01
  c0 a8 00 c7
  01 02 03 04
  05 06 07 08
`);

function known(): Uint8Array {
  const b = KNOWN.slice();
  updateIpv4Checksum(b, 0);
  return b;
}

Deno.test("`parseIpv4Header()` decodes a known header and ignores trailing padding", () => {
  const b = new Uint8Array(60);
  b.set(known());
  const h = newIpv4Header();
  assert.equal(parseIpv4Header(b, 0, b.length, h), "ok");
  assert.equal(h.headerLength, 20);
  assert.equal(h.totalLength, 28);
  assert.equal(h.id, 0x1234);
  assert.equal(h.flags, IPV4_FLAG_DF);
  assert.equal(h.protocol, 17);
  assert.equal(h.src, 0xc0a80001);
  assert.equal(h.dst, 0xc0a800c7);
  assert.equal(h.payloadOffset, 20);
  assert.equal(h.payloadLength, 8);
  assert.equal(h.isFragment, false);
});

Deno.test("`parseIpv4Header()` reports every malformation", () => {
  const h = newIpv4Header();
  const cases: [string, (b: Uint8Array) => void, number?][] = [
    ["ipv4-truncated", () => {}, 19],
    ["ipv4-bad-version", (b) => (b[0] = 0x65)],
    ["ipv4-bad-ihl", (b) => (b[0] = 0x44)],
    ["ipv4-truncated", (b) => (b[0] = 0x48), 28], // IHL 8 = 32 bytes > 28
    ["ipv4-bad-total-length", (b) => (b[3] = 19)],
    ["ipv4-length-beyond-frame", (b) => (b[3] = 29)],
  ];
  for (const [reason, mutate, len] of cases) {
    const b = known();
    mutate(b);
    updateIpv4Checksum(b, 0);
    assert.equal(parseIpv4Header(b, 0, len ?? b.length, h), reason, reason);
  }
  const b = known();
  b[8] ^= 1; // TTL changed without a checksum update
  assert.equal(parseIpv4Header(b, 0, b.length, h), "ipv4-bad-checksum");
});

Deno.test("`parseIpv4Header()` flags fragments (MF or non-zero offset)", () => {
  const h = newIpv4Header();
  const b = known();
  b[6] = 0x20; // MF
  updateIpv4Checksum(b, 0);
  assert.equal(parseIpv4Header(b, 0, b.length, h), "ok");
  assert.equal(h.isFragment, true);
  b[6] = 0x00;
  b[7] = 0x10; // offset 16
  updateIpv4Checksum(b, 0);
  assert.equal(parseIpv4Header(b, 0, b.length, h), "ok");
  assert.equal(h.isFragment, true);
  assert.equal(h.fragmentOffset, 16);
});

Deno.test("`parseIpv4Header()` inverts `buildIpv4()` with options", () => {
  fc.assert(
    fc.property(
      fc.record({
        tos: fc.integer({ min: 0, max: 255 }),
        payloadLength: fc.integer({ min: 0, max: 200 }),
        id: fc.integer({ min: 0, max: 0xffff }),
        flags: fc.constantFrom(0, IPV4_FLAG_DF, IPV4_FLAG_MF),
        fragmentOffset: fc.integer({ min: 0, max: 0x1fff }),
        ttl: fc.integer({ min: 0, max: 255 }),
        protocol: fc.integer({ min: 0, max: 255 }),
        src: fc.integer({ min: 0, max: 0xffffffff }),
        dst: fc.integer({ min: 0, max: 0xffffffff }),
      }),
      fc.integer({ min: 0, max: 10 }).chain((n) =>
        fc.uint8Array({ minLength: n * 4, maxLength: n * 4 })
      ),
      fc.integer({ min: 0, max: 8 }),
      (f, options, lead) => {
        const buf = new Uint8Array(lead + 60 + f.payloadLength);
        const hl = buildIpv4(buf, lead, { ...f, options });
        assert.equal(hl, 20 + options.length);
        assert.equal(internetChecksum(buf, lead, hl), 0);
        const h: Ipv4Header = newIpv4Header();
        assert.equal(parseIpv4Header(buf, lead, buf.length, h), "ok");
        assert.equal(h.tos, f.tos);
        assert.equal(h.totalLength, hl + f.payloadLength);
        assert.equal(h.id, f.id);
        assert.equal(h.flags, f.flags);
        assert.equal(h.fragmentOffset, f.fragmentOffset);
        assert.equal(h.ttl, f.ttl);
        assert.equal(h.protocol, f.protocol);
        assert.equal(h.src, f.src);
        assert.equal(h.dst, f.dst);
        assert.equal(h.payloadOffset, lead + hl);
        assert.equal(h.payloadLength, f.payloadLength);
        assert.equal(h.isFragment, f.flags === IPV4_FLAG_MF || f.fragmentOffset !== 0);
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("`buildIpv4()` rejects bad options and oversize packets", () => {
  const buf = new Uint8Array(100);
  const base = { payloadLength: 0, protocol: 6, src: 1, dst: 2 };
  assert.throws(() => buildIpv4(buf, 0, { ...base, options: new Uint8Array(3) }), RangeError);
  assert.throws(() => buildIpv4(buf, 0, { ...base, options: new Uint8Array(44) }), RangeError);
  assert.throws(() => buildIpv4(buf, 0, { ...base, payloadLength: 65516 }), RangeError);
  assert.throws(() => buildIpv4(buf, 90, base), RangeError);
});

Deno.test("`parseIpv4Header()` never throws on arbitrary bytes, offsets and ends", () => {
  const h = newIpv4Header();
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 100 }),
      fc.integer({ min: -5, max: 110 }),
      fc.integer({ min: -5, max: 120 }),
      (b, off, end) => {
        if (b.length > 0) b[0] = 0x40 | (b[0] & 0x0f); // mostly version 4 to go deeper
        const r = parseIpv4Header(b, off, end, h);
        if (r === "ok") {
          assert.ok(h.payloadOffset + h.payloadLength <= Math.min(end, b.length));
        }
      },
    ),
    { numRuns: 500 },
  );
});
