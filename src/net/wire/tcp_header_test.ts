import assert from "node:assert/strict";
import fc from "fast-check";
import {
  buildTcp,
  newTcpHeader,
  parseTcp,
  setTcpChecksumV4,
  setTcpChecksumV6,
  TCP_ACK_FLAG,
  TCP_SYN,
  tcpChecksumOkV4,
  tcpChecksumOkV6,
  tcpHeaderLength,
} from "./tcp_header.ts";

function withOptions(opts: number[], payload = 0): Uint8Array {
  const hl = 20 + Math.ceil(opts.length / 4) * 4;
  const b = new Uint8Array(hl + payload);
  buildTcp(b, 0, { srcPort: 1, dstPort: 2, seq: 3, ack: 4, flags: TCP_SYN, window: 5 });
  b[12] = (hl / 4) << 4;
  b.set(opts, 20);
  return b;
}

Deno.test("`parseTcp()` inverts `buildTcp()` including options", () => {
  fc.assert(
    fc.property(
      fc.record({
        srcPort: fc.integer({ min: 0, max: 0xffff }),
        dstPort: fc.integer({ min: 0, max: 0xffff }),
        seq: fc.integer({ min: 0, max: 0xffffffff }),
        ack: fc.integer({ min: 0, max: 0xffffffff }),
        flags: fc.integer({ min: 0, max: 255 }),
        window: fc.integer({ min: 0, max: 0xffff }),
        urgent: fc.integer({ min: 0, max: 0xffff }),
      }),
      fc.option(fc.integer({ min: 0, max: 0xffff }), { nil: undefined }),
      fc.option(fc.integer({ min: 0, max: 14 }), { nil: undefined }),
      fc.boolean(),
      fc.option(
        fc.record({
          tsVal: fc.integer({ min: 0, max: 0xffffffff }),
          tsEcr: fc.integer({ min: 0, max: 0xffffffff }),
        }),
        { nil: undefined },
      ),
      fc.integer({ min: 0, max: 50 }),
      (base, mss, windowScale, sackPermitted, timestamps, payload) => {
        const f = { ...base, mss, windowScale, sackPermitted, timestamps };
        const hl = tcpHeaderLength(f);
        const b = new Uint8Array(hl + payload);
        assert.equal(buildTcp(b, 0, f), hl);
        setTcpChecksumV4(b, 0, b.length, 0x7f000001, 0x7f000002);
        const h = newTcpHeader();
        assert.equal(parseTcp(b, 0, b.length, h), "ok");
        assert.ok(tcpChecksumOkV4(b, 0, b.length, 0x7f000001, 0x7f000002));
        assert.equal(h.srcPort, f.srcPort);
        assert.equal(h.dstPort, f.dstPort);
        assert.equal(h.seq, f.seq);
        assert.equal(h.ack, f.ack);
        assert.equal(h.flags, f.flags);
        assert.equal(h.window, f.window);
        assert.equal(h.urgent, f.urgent);
        assert.equal(h.headerLength, hl);
        assert.equal(h.mss, mss ?? -1);
        assert.equal(h.windowScale, windowScale ?? -1);
        assert.equal(h.sackPermitted, sackPermitted);
        assert.equal(h.hasTimestamps, timestamps !== undefined);
        assert.equal(h.tsVal, timestamps?.tsVal ?? 0);
        assert.equal(h.tsEcr, timestamps?.tsEcr ?? 0);
        assert.equal(h.optionsMalformed, false);
        assert.equal(h.payloadOffset, hl);
        assert.equal(h.payloadLength, payload);
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("`parseTcp()` parses a Linux SYN option block", () => {
  // MSS 1460, SACK-permitted, TS, NOP, WS 7 (Linux order)
  const b = withOptions([2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7]);
  const h = newTcpHeader();
  assert.equal(parseTcp(b, 0, b.length, h), "ok");
  assert.equal(h.mss, 1460);
  assert.equal(h.sackPermitted, true);
  assert.equal(h.hasTimestamps, true);
  assert.equal(h.tsVal, 1);
  assert.equal(h.windowScale, 7);
});

Deno.test("`parseTcp()` tolerates absurd option lengths", () => {
  const h = newTcpHeader();
  // MSS, then an option claiming 200 bytes.
  let b = withOptions([2, 4, 1, 0, 99, 200, 0, 0]);
  assert.equal(parseTcp(b, 0, b.length, h), "ok");
  assert.equal(h.mss, 256);
  assert.equal(h.optionsMalformed, true);
  // Length 0 and 1 would loop forever or overlap.
  for (const len of [0, 1]) {
    b = withOptions([3, len, 3, 0]);
    assert.equal(parseTcp(b, 0, b.length, h), "ok");
    assert.equal(h.optionsMalformed, true);
    assert.equal(h.windowScale, -1);
  }
  // Wrong length for its kind: ignored.
  b = withOptions([2, 3, 5, 1]);
  assert.equal(parseTcp(b, 0, b.length, h), "ok");
  assert.equal(h.mss, -1);
  assert.equal(h.optionsMalformed, false);
  // Kind byte as the last byte of the header.
  b = withOptions([1, 1, 1, 2]);
  assert.equal(parseTcp(b, 0, b.length, h), "ok");
  assert.equal(h.optionsMalformed, true);
  // Window scale above 14 is clamped.
  b = withOptions([3, 3, 200, 0]);
  assert.equal(parseTcp(b, 0, b.length, h), "ok");
  assert.equal(h.windowScale, 14);
});

Deno.test("`parseTcp()` rejects a bad data offset and truncation", () => {
  const h = newTcpHeader();
  assert.equal(parseTcp(new Uint8Array(19), 0, 19, h), "tcp-truncated");
  const b = withOptions([]);
  b[12] = 4 << 4;
  assert.equal(parseTcp(b, 0, b.length, h), "tcp-bad-data-offset");
  b[12] = 6 << 4;
  assert.equal(parseTcp(b, 0, b.length, h), "tcp-truncated");
});

Deno.test("`setTcpChecksumV6()` produces a checksum `tcpChecksumOkV6()` accepts", () => {
  const src = new Uint8Array(16), dst = new Uint8Array(16);
  src[15] = 1;
  dst[15] = 2;
  const b = new Uint8Array(25);
  buildTcp(b, 0, { srcPort: 1, dstPort: 2, seq: 3, ack: 4, flags: TCP_ACK_FLAG, window: 5 });
  b.set([1, 2, 3, 4, 5], 20);
  setTcpChecksumV6(b, 0, b.length, src, dst);
  assert.ok(tcpChecksumOkV6(b, 0, b.length, src, dst));
  b[24] ^= 1;
  assert.ok(!tcpChecksumOkV6(b, 0, b.length, src, dst));
});

Deno.test("`parseTcp()` never throws on arbitrary bytes", () => {
  const h = newTcpHeader();
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 80 }), fc.integer({ min: -2, max: 90 }), (b, end) => {
      if (parseTcp(b, 0, end, h) === "ok") {
        assert.ok(h.payloadOffset + h.payloadLength <= Math.min(end, b.length));
      }
    }),
    { numRuns: 500 },
  );
});
