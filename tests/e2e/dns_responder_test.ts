import assert from "node:assert/strict";
import dgram from "node:dgram";
import { buildDnsAnswer, parseDnsQuery, startDnsResponder } from "./dns_responder.ts";

/** A query as busybox nslookup sends it: id 0x1234, RD, one question. */
function query(name: string, type: number, id = 0x1234): Uint8Array {
  const labels = name.split(".").flatMap((l) => [l.length, ...new TextEncoder().encode(l)]);
  return new Uint8Array([
    id >> 8,
    id & 0xff,
    0x01,
    0x00,
    0,
    1,
    0,
    0,
    0,
    0,
    0,
    0,
    ...labels,
    0,
    type >> 8,
    type & 0xff,
    0,
    1,
  ]);
}

Deno.test("`parseDnsQuery()` reads id, name and type of a one-question query", () => {
  const parsed = parseDnsQuery(query("Tpasst.Test", 28, 0xbeef));
  assert.equal(parsed?.id, 0xbeef);
  assert.deepEqual(parsed?.question, { name: "tpasst.test", type: 28 });
});

Deno.test("`parseDnsQuery()` rejects truncated names and responses", () => {
  const full = query("tpasst.test", 1);
  assert.equal(parseDnsQuery(full.subarray(0, 16)), null);
  const response = full.slice();
  response[2] |= 0x80;
  assert.equal(parseDnsQuery(response), null);
});

Deno.test("`buildDnsAnswer()` answers A for a known name and NXDOMAIN otherwise", () => {
  const records = new Map([["tpasst.test", "198.51.100.7"]]);
  const packet = query("tpasst.test", 1);
  const answer = buildDnsAnswer(packet, parseDnsQuery(packet), records);
  const view = new DataView(answer.buffer);
  assert.equal(view.getUint16(0), 0x1234);
  assert.equal(view.getUint16(2) & 0x8000, 0x8000);
  assert.equal(view.getUint16(2) & 0xf, 0);
  assert.equal(view.getUint16(6), 1);
  assert.deepEqual([...answer.subarray(answer.length - 4)], [198, 51, 100, 7]);

  const other = query("other.test", 1);
  const nx = buildDnsAnswer(other, parseDnsQuery(other), records);
  assert.equal(new DataView(nx.buffer).getUint16(2) & 0xf, 3);
  assert.equal(new DataView(nx.buffer).getUint16(6), 0);
});

Deno.test("`startDnsResponder()` answers over UDP on loopback and records questions", async () => {
  const responder = await startDnsResponder({ "tpasst.test": "198.51.100.7" });
  const client = dgram.createSocket("udp4");
  try {
    const reply = await new Promise<Uint8Array>((resolve, reject) => {
      client.once("message", (m) => resolve(new Uint8Array(m)));
      client.once("error", reject);
      client.send(query("tpasst.test", 1), responder.port, "127.0.0.1");
    });
    assert.deepEqual([...reply.subarray(reply.length - 4)], [198, 51, 100, 7]);
    assert.deepEqual(responder.questions, [{ name: "tpasst.test", type: 1 }]);
  } finally {
    client.close();
    await responder.close();
  }
});
