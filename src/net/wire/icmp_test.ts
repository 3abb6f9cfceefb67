import assert from "node:assert/strict";
import fc from "fast-check";
import {
  buildIcmp,
  buildIcmpEcho,
  icmpv4ChecksumOk,
  Icmpv4Type,
  icmpv6ChecksumOk,
  Icmpv6Type,
  isIcmpv4Error,
  isIcmpv6Error,
  newIcmpHeader,
  parseIcmp,
  setIcmpv4Checksum,
  setIcmpv6Checksum,
} from "./icmp.ts";

Deno.test("`parseIcmp()` inverts `buildIcmpEcho()`", () => {
  fc.assert(
    fc.property(
      fc.constantFrom(Icmpv4Type.EchoRequest, Icmpv4Type.EchoReply),
      fc.integer({ min: 0, max: 0xffff }),
      fc.integer({ min: 0, max: 0xffff }),
      fc.uint8Array({ maxLength: 64 }),
      (type, id, seq, payload) => {
        const b = new Uint8Array(8 + payload.length);
        buildIcmpEcho(b, 0, type, id, seq);
        b.set(payload, 8);
        setIcmpv4Checksum(b, 0, b.length);
        const h = newIcmpHeader();
        assert.equal(parseIcmp(b, 0, b.length, h), "ok");
        assert.equal(h.type, type);
        assert.equal(h.code, 0);
        assert.equal(h.id, id);
        assert.equal(h.seq, seq);
        assert.equal(h.rest, ((id << 16) | seq) >>> 0);
        assert.equal(h.payloadOffset, 8);
        assert.equal(h.payloadLength, payload.length);
        assert.ok(icmpv4ChecksumOk(b, 0, b.length));
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("`buildIcmp()` writes error messages with the 32-bit field", () => {
  const src = new Uint8Array(16).fill(1), dst = new Uint8Array(16).fill(2);
  const b = new Uint8Array(8 + 48);
  buildIcmp(b, 0, Icmpv6Type.PacketTooBig, 0, 1280);
  setIcmpv6Checksum(b, 0, b.length, src, dst);
  const h = newIcmpHeader();
  assert.equal(parseIcmp(b, 0, b.length, h), "ok");
  assert.equal(h.rest, 1280);
  assert.ok(icmpv6ChecksumOk(b, 0, b.length, src, dst));
  assert.ok(!icmpv6ChecksumOk(b, 0, b.length, dst, src.fill(3)));
  assert.ok(isIcmpv6Error(h.type));
  assert.ok(!isIcmpv6Error(Icmpv6Type.EchoRequest));
  assert.ok(isIcmpv4Error(Icmpv4Type.DestinationUnreachable));
  assert.ok(!isIcmpv4Error(Icmpv4Type.EchoRequest));
});

Deno.test("`parseIcmp()` rejects messages shorter than 8 bytes and never throws", () => {
  const h = newIcmpHeader();
  assert.equal(parseIcmp(new Uint8Array(7), 0, 7, h), "icmp-truncated");
  assert.throws(() => buildIcmp(new Uint8Array(7), 0, 8, 0, 0), RangeError);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 20 }), fc.integer({ min: -2, max: 30 }), (b, end) => {
      if (parseIcmp(b, 0, end, h) === "ok") assert.ok(h.payloadLength >= 0);
    }),
  );
});
