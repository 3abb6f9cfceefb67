import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decodeDomainList,
  domainLabels,
  encodeDomainList,
  encodeDomainListCompressed,
} from "./dns_name.ts";

Deno.test("`encodeDomainListCompressed()` matches the RFC 3397 §3 example", () => {
  const data = encodeDomainListCompressed(["eng.apple.com", "marketing.apple.com"]);
  assert.deepEqual(
    Array.from(data),
    [
      3,
      ..."eng".split("").map((c) => c.charCodeAt(0)),
      5,
      ..."apple".split("").map((c) => c.charCodeAt(0)),
      3,
      ..."com".split("").map((c) => c.charCodeAt(0)),
      0,
      9,
      ..."marketing".split("").map((c) => c.charCodeAt(0)),
      0xc0,
      0x04,
    ],
  );
});

Deno.test("`encodeDomainList()` writes uncompressed names", () => {
  assert.deepEqual(Array.from(encodeDomainList(["a.b", "c."])), [1, 97, 1, 98, 0, 1, 99, 0]);
});

Deno.test("`domainLabels()` rejects empty and oversize labels", () => {
  assert.equal(domainLabels(""), null);
  assert.equal(domainLabels("a..b"), null);
  assert.equal(domainLabels("x".repeat(64) + ".com"), null);
  assert.equal(domainLabels(("x".repeat(63) + ".").repeat(4) + "com"), null);
  assert.equal(domainLabels("ok.example.")!.length, 2);
  assert.deepEqual(decodeDomainList(encodeDomainList(["", "a..b", "fine"])), ["fine"]);
});

Deno.test("`decodeDomainList()` inverts both encoders", () => {
  const label = fc.stringMatching(/^[a-z0-9-]{1,10}$/);
  const name = fc.array(label, { minLength: 1, maxLength: 4 }).map((l) => l.join("."));
  fc.assert(
    fc.property(fc.array(name, { maxLength: 6 }), (names) => {
      assert.deepEqual(decodeDomainList(encodeDomainList(names)), names);
      assert.deepEqual(decodeDomainList(encodeDomainListCompressed(names)), names);
    }),
    { numRuns: 200 },
  );
});

Deno.test("`decodeDomainList()` returns null for pointer loops and overruns", () => {
  assert.equal(decodeDomainList(new Uint8Array([0xc0, 0x00])), null);
  assert.equal(decodeDomainList(new Uint8Array([5, 97])), null);
  fc.assert(fc.property(fc.uint8Array({ maxLength: 40 }), (b) => {
    decodeDomainList(b);
  }));
});
