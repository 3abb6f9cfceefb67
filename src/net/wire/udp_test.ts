import assert from "node:assert/strict";
import fc from "fast-check";
import {
  buildUdp,
  newUdpHeader,
  parseUdp,
  setUdpChecksumV4,
  setUdpChecksumV6,
  udpChecksumOkV4,
  udpChecksumOkV6,
} from "./udp.ts";
import { parseIpv6 as parseAddr } from "../../../ffi/ip_address_text.ts";

Deno.test("`parseUdp()` inverts `buildUdp()`", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 0xffff }),
      fc.integer({ min: 0, max: 0xffff }),
      fc.uint8Array({ maxLength: 100 }),
      fc.integer({ min: 0, max: 5 }),
      (srcPort, dstPort, payload, pad) => {
        const b = new Uint8Array(8 + payload.length + pad);
        buildUdp(b, 0, srcPort, dstPort, payload.length);
        b.set(payload, 8);
        setUdpChecksumV4(b, 0, 0x0a000002, 0x0a000001);
        const h = newUdpHeader();
        assert.equal(parseUdp(b, 0, b.length, h), "ok");
        assert.equal(h.srcPort, srcPort);
        assert.equal(h.dstPort, dstPort);
        assert.equal(h.length, 8 + payload.length);
        assert.equal(h.payloadOffset, 8);
        assert.equal(h.payloadLength, payload.length);
        assert.notEqual(h.checksum, 0);
        assert.ok(udpChecksumOkV4(b, 0, h.length, 0x0a000002, 0x0a000001));
        assert.ok(!udpChecksumOkV4(b, 0, h.length, 0x0a000003, 0x0a000001));
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("`setUdpChecksumV6()` produces a checksum `udpChecksumOkV6()` accepts", () => {
  const src = parseAddr("fe80::1")!, dst = parseAddr("ff02::1:2")!;
  const b = new Uint8Array(12);
  buildUdp(b, 0, 546, 547, 4);
  b.set([1, 2, 3, 4], 8);
  setUdpChecksumV6(b, 0, src, dst);
  assert.ok(udpChecksumOkV6(b, 0, 12, src, dst));
  b[9] ^= 0xff;
  assert.ok(!udpChecksumOkV6(b, 0, 12, src, dst));
  b[6] = b[7] = 0; // zero is not allowed over IPv6
  assert.ok(!udpChecksumOkV6(b, 0, 12, src, dst));
  assert.ok(udpChecksumOkV4(b, 0, 12, 1, 2)); // but means "none" over IPv4
});

Deno.test("`parseUdp()` rejects truncated headers and bad lengths", () => {
  const h = newUdpHeader();
  assert.equal(parseUdp(new Uint8Array(7), 0, 7, h), "udp-truncated");
  const b = new Uint8Array(12);
  buildUdp(b, 0, 1, 2, 4);
  assert.equal(parseUdp(b, 0, 11, h), "udp-bad-length");
  b[5] = 7;
  assert.equal(parseUdp(b, 0, 12, h), "udp-bad-length");
});

Deno.test("`parseUdp()` never throws on arbitrary bytes", () => {
  const h = newUdpHeader();
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 30 }), fc.integer({ min: -2, max: 40 }), (b, end) => {
      if (parseUdp(b, 0, end, h) === "ok") assert.ok(h.length <= Math.min(end, b.length));
    }),
    { numRuns: 300 },
  );
});

Deno.test("`setUdpChecksumV4()` and `setUdpChecksumV6()` send a computed zero as 0xffff", () => {
  const src6 = parseAddr("fd00::1")!;
  const dst6 = parseAddr("fd00::2")!;
  const cases: [string, (buf: Uint8Array) => void, (buf: Uint8Array) => boolean][] = [
    [
      "v4",
      (b) => setUdpChecksumV4(b, 0, 0x0a000001, 0x0a000002),
      (b) => udpChecksumOkV4(b, 0, b.length, 0x0a000001, 0x0a000002),
    ],
    [
      "v6",
      (b) => setUdpChecksumV6(b, 0, src6, dst6),
      (b) => udpChecksumOkV6(b, 0, b.length, src6, dst6),
    ],
  ];
  for (const [family, set, ok] of cases) {
    const buf = new Uint8Array(10);
    buildUdp(buf, 0, 1000, 2000, 2);
    set(buf);
    // Adding the complement of the sum as a data word makes the sum 0xffff: checksum 0.
    const complement = (buf[6] << 8) | buf[7];
    buf[8] = complement >>> 8;
    buf[9] = complement;
    set(buf);
    assert.deepEqual([buf[6], buf[7]], [0xff, 0xff], family);
    assert.ok(ok(buf), `${family}: 0xffff verifies`);
  }
});
