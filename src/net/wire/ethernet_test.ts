import assert from "node:assert/strict";
import fc from "fast-check";
import {
  buildEthernet,
  ETH_HEADER_LENGTH,
  ETHERTYPE_IPV6,
  newEthernetHeader,
  parseEthernet,
} from "./ethernet.ts";

Deno.test("`parseEthernet()` decodes a known header", () => {
  const f = new Uint8Array([
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0x52,
    0x54,
    0x00,
    0x12,
    0x34,
    0x56,
    0x08,
    0x06,
    0,
    1,
  ]);
  const h = newEthernetHeader();
  assert.equal(parseEthernet(f, h), "ok");
  assert.deepEqual(h, { dst: 0xffffffffffff, src: 0x525400123456, etherType: 0x0806 });
});

Deno.test("`parseEthernet()` rejects frames shorter than 14 bytes", () => {
  const h = newEthernetHeader();
  for (let n = 0; n < ETH_HEADER_LENGTH; n++) {
    assert.equal(parseEthernet(new Uint8Array(n), h), "eth-truncated");
  }
});

Deno.test("`parseEthernet()` inverts `buildEthernet()`", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 0xffffffffffff }),
      fc.integer({ min: 0, max: 0xffffffffffff }),
      fc.integer({ min: 0, max: 0xffff }),
      (dst, src, etherType) => {
        const f = new Uint8Array(20);
        assert.equal(buildEthernet(f, 0, dst, src, etherType), ETH_HEADER_LENGTH);
        const h = newEthernetHeader();
        assert.equal(parseEthernet(f, h), "ok");
        assert.deepEqual(h, { dst, src, etherType });
      },
    ),
  );
});

Deno.test("`buildEthernet()` throws a RangeError when the buffer is too short", () => {
  assert.throws(() => buildEthernet(new Uint8Array(13), 0, 1, 2, ETHERTYPE_IPV6), RangeError);
});

Deno.test("`parseEthernet()` never throws on arbitrary bytes", () => {
  const h = newEthernetHeader();
  fc.assert(fc.property(fc.uint8Array({ maxLength: 40 }), (b) => {
    const r = parseEthernet(b, h);
    assert.ok(r === "ok" || r === "eth-truncated");
  }));
});
