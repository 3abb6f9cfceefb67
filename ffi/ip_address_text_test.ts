import assert from "node:assert/strict";
import fc from "fast-check";
import {
  addressBytes,
  addressText,
  ipv4ToString,
  ipv6ToString,
  parseIpv4,
  parseIpv6,
} from "./ip_address_text.ts";

Deno.test("`parseIpv4()` accepts dotted quads only", () => {
  assert.equal(parseIpv4("192.168.1.254"), 0xc0a801fe);
  assert.equal(ipv4ToString(0xc0a801fe), "192.168.1.254");
  for (
    const bad of [
      "1.2.3",
      "1.2.3.256",
      "a.b.c.d",
      "1.2.3.4.5",
      "",
      "1..2.3",
      "01.2.3.4",
      " 1.2.3.4",
    ]
  ) {
    assert.equal(parseIpv4(bad), null, bad);
  }
  fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), (a) => {
    assert.equal(parseIpv4(ipv4ToString(a)), a);
  }));
});

Deno.test("`parseIpv6()` handles compressed and embedded-IPv4 forms", () => {
  assert.equal(ipv6ToString(parseIpv6("fe80::1")!), "fe80::1");
  assert.equal(ipv6ToString(parseIpv6("2001:DB8:0:0:1:0:0:1")!), "2001:db8::1:0:0:1");
  assert.equal(ipv6ToString(parseIpv6("::")!), "::");
  assert.equal(ipv6ToString(parseIpv6("::ffff:1.2.3.4")!), "::ffff:1.2.3.4");
  assert.equal(ipv6ToString(parseIpv6("::1:2:3:4")!), "::1:2:3:4");
  assert.equal(ipv6ToString(parseIpv6("1:0:0:2:0:0:0:3")!), "1:0:0:2::3");
  assert.equal(ipv6ToString(parseIpv6("1:0:2:3:4:5:6:7")!), "1:0:2:3:4:5:6:7");
  for (
    const bad of [
      "1::2::3",
      "12345::",
      "1:2:3:4:5:6:7",
      "g::",
      ":::",
      "1:2:3:4:5:6:7:8:9",
      "fe80::1%eth0",
      "::1.2.3",
      "1.2.3.4::",
    ]
  ) {
    assert.equal(parseIpv6(bad), null, bad);
  }
});

Deno.test("`ipv6ToString()` output parses back to the same bytes", () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (a) => {
      assert.deepEqual(parseIpv6(ipv6ToString(a)), a);
    }),
  );
  // Zero runs are common in real addresses: bias toward them.
  fc.assert(
    fc.property(
      fc.array(fc.constantFrom(0, 0, 0, 1, 0xffff), { minLength: 8, maxLength: 8 }),
      (g) => {
        const a = new Uint8Array(16);
        g.forEach((x, i) => {
          a[2 * i] = x >> 8;
          a[2 * i + 1] = x & 0xff;
        });
        assert.deepEqual(parseIpv6(ipv6ToString(a)), a);
      },
    ),
  );
});

Deno.test("`addressBytes()` and `addressText()` round-trip IPv4, IPv6, mapped and bracketed forms", () => {
  const cases: [string, number[], string][] = [
    ["127.0.0.1", [127, 0, 0, 1], "127.0.0.1"],
    ["255.0.10.9", [255, 0, 10, 9], "255.0.10.9"],
    ["::1", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], "::1"],
    ["[::1]", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], "::1"],
    ["::", new Array(16).fill(0), "::"],
    ["::ffff:1.2.3.4", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4], "::ffff:1.2.3.4"],
    [
      "[::FFFF:127.0.0.1]",
      [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1],
      "::ffff:127.0.0.1",
    ],
    [
      "2001:DB8:0:0:1:0:0:1",
      [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
      "2001:db8::1:0:0:1",
    ],
    [
      "[fe80::a:b]",
      [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0, 0x0b],
      "fe80::a:b",
    ],
  ];
  for (const [input, bytes, text] of cases) {
    const got = addressBytes(input);
    assert.deepEqual(got && [...got], bytes, input);
    assert.equal(addressText(new Uint8Array(bytes)), text, input);
    assert.deepEqual([...addressBytes(text)!], bytes, `${text} parses back`);
  }
  for (
    const bad of [
      "localhost",
      "",
      "1.2.3",
      "1.2.3.256",
      "[127.0.0.1]",
      "::1]",
      "[::1",
      "1::2::3",
      "::g",
    ]
  ) {
    assert.equal(addressBytes(bad), null, JSON.stringify(bad));
  }
  // Any 4 or 16 bytes survive text and back.
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ minLength: 4, maxLength: 4 }),
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
      ),
      (bytes) => {
        assert.deepEqual(addressBytes(addressText(bytes)), bytes);
      },
    ),
    { numRuns: 500 },
  );
});
