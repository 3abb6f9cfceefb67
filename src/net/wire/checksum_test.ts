import assert from "node:assert/strict";
import fc from "fast-check";
import {
  checksumAdjust128,
  checksumAdjust16,
  checksumAdjust32,
  foldSum,
  internetChecksum,
  ipv4PseudoSum,
  ipv6PseudoSum,
  l4ChecksumV4,
  sumBytes,
} from "./checksum.ts";
import { hexBytes } from "../../../tests/support/hex_bytes.ts";

/** Straightforward reference: 16-bit words, fold at the end. */
function referenceChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 2) {
    sum += (bytes[i] << 8) | (i + 1 < bytes.length ? bytes[i + 1] : 0);
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 65536);
  return ~sum & 0xffff;
}

Deno.test("`internetChecksum()` matches the RFC 1071 §3 example", () => {
  const bytes = new Uint8Array([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
  assert.equal(foldSum(sumBytes(bytes, 0, 8)), 0xddf2);
  assert.equal(internetChecksum(bytes, 0, 8), 0x220d);
});

Deno.test("`internetChecksum()` of a known IPv4 header is 0xb861", () => {
  const h = hexBytes(`
    45 00 00 73
    00 00 40 00
    40 11 00 00
    c0 a8 00 01
    c0 a8 00 c7
  `);
  assert.equal(internetChecksum(h, 0, 20), 0xb861);
  h[10] = 0xb8;
  h[11] = 0x61;
  assert.equal(internetChecksum(h, 0, 20), 0);
});

Deno.test("`internetChecksum()` equals a reference implementation on any bytes and range", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 3000 }),
      fc.nat(),
      fc.nat(),
      (bytes, a, b) => {
        const off = bytes.length ? a % (bytes.length + 1) : 0;
        const len = (bytes.length - off) ? b % (bytes.length - off + 1) : 0;
        assert.equal(
          internetChecksum(bytes, off, len),
          referenceChecksum(bytes.subarray(off, off + len)),
        );
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("`sumBytes()` clamps ranges past the end instead of throwing", () => {
  const b = new Uint8Array([1, 2, 3]);
  assert.equal(sumBytes(b, 0, 100), 0x0102 + 0x0300);
  assert.equal(sumBytes(b, 5, 10), 0);
});

Deno.test("`internetChecksum()` handles a 64 KiB buffer of 0xff", () => {
  const b = new Uint8Array(65536).fill(0xff);
  assert.equal(internetChecksum(b, 0, b.length), referenceChecksum(b));
});

Deno.test("`checksumAdjust16()` and `checksumAdjust32()` equal a full recomputation", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 8, maxLength: 64 }),
      fc.integer({ min: 0, max: 0xffff }),
      fc.integer({ min: 0, max: 0xffffffff }),
      (bytes, newWord, newLong) => {
        const before = internetChecksum(bytes, 0, bytes.length);
        const oldWord = (bytes[0] << 8) | bytes[1];
        bytes[0] = newWord >>> 8;
        bytes[1] = newWord & 0xff;
        const after16 = checksumAdjust16(before, oldWord, newWord);
        // One's complement arithmetic has two zeros; compare modulo 0xffff.
        assert.equal(after16 % 0xffff, internetChecksum(bytes, 0, bytes.length) % 0xffff);
        const oldLong = ((bytes[2] << 24) | (bytes[3] << 16) | (bytes[4] << 8) | bytes[5]) >>> 0;
        bytes[2] = newLong >>> 24;
        bytes[3] = (newLong >>> 16) & 0xff;
        bytes[4] = (newLong >>> 8) & 0xff;
        bytes[5] = newLong & 0xff;
        const after32 = checksumAdjust32(after16, oldLong, newLong);
        assert.equal(after32 % 0xffff, internetChecksum(bytes, 0, bytes.length) % 0xffff);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("`checksumAdjust128()` equals a full recomputation after an address rewrite", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 40, maxLength: 80 }),
      fc.uint8Array({ minLength: 16, maxLength: 16 }),
      (bytes, addr) => {
        const before = internetChecksum(bytes, 0, bytes.length);
        const old = bytes.slice(8, 24);
        bytes.set(addr, 8);
        const after = checksumAdjust128(before, old, 0, addr, 0);
        assert.equal(after % 0xffff, internetChecksum(bytes, 0, bytes.length) % 0xffff);
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("`ipv4PseudoSum()` and `ipv6PseudoSum()` equal summing a pseudo-header buffer", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 0, max: 255 }),
      fc.integer({ min: 0, max: 0xffff }),
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      (src, dst, proto, len, v6) => {
        const ph = new Uint8Array(12);
        const dv = new DataView(ph.buffer);
        dv.setUint32(0, src);
        dv.setUint32(4, dst);
        ph[9] = proto;
        dv.setUint16(10, len);
        assert.equal(foldSum(ipv4PseudoSum(src, dst, proto, len)), foldSum(sumBytes(ph, 0, 12)));
        const ph6 = new Uint8Array(40);
        ph6.set(v6, 0);
        new DataView(ph6.buffer).setUint32(32, len);
        ph6[39] = proto;
        assert.equal(
          foldSum(ipv6PseudoSum(v6, 0, v6, 16, proto, len)),
          foldSum(sumBytes(ph6, 0, 40)),
        );
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("`l4ChecksumV4()` makes a segment verify to zero once stored", () => {
  const seg = new Uint8Array([0x12, 0x34, 0x00, 0x35, 0x00, 0x0b, 0, 0, 0x61, 0x62, 0x63]);
  const c = l4ChecksumV4(seg, 0, seg.length, 17, 0x0a000001, 0x0a000002);
  seg[6] = c >>> 8;
  seg[7] = c & 0xff;
  assert.equal(l4ChecksumV4(seg, 0, seg.length, 17, 0x0a000001, 0x0a000002), 0);
});

Deno.test("`internetChecksum()` is right on views at any byte offset of their buffer", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 260, maxLength: 2000 }),
      fc.integer({ min: 0, max: 7 }),
      fc.integer({ min: 0, max: 9 }),
      (bytes, viewStart, off) => {
        const view = bytes.subarray(viewStart);
        const len = view.length - off;
        assert.equal(
          internetChecksum(view, off, len),
          referenceChecksum(view.slice(off, off + len)),
        );
      },
    ),
    { numRuns: 300 },
  );
});
