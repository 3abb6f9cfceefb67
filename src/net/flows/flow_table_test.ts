import assert from "node:assert/strict";
import fc from "fast-check";
import { FlowTable, initFlowKey, newFlowKey } from "./flow_table.ts";

Deno.test("`FlowTable` finds flows by the full 5-tuple, including key collisions", () => {
  const t = new FlowTable(10);
  const a = newFlowKey();
  initFlowKey(a, 4, 0x0a00020f, null, 1000, 0x7f000001, null, 80);
  const b = newFlowKey();
  // Same ports, remote differing only above the 21 key bits: same key, other flow.
  initFlowKey(b, 4, 0x0a00020f, null, 1000, 0x7f000001 + 0x400000, null, 80);
  assert.ok(t.insert(a));
  assert.ok(t.insert(b));
  assert.equal(a.tableKey, b.tableKey);
  assert.equal(t.find4(0x0a00020f, 1000, 0x7f000001, 80), a);
  assert.equal(t.find4(0x0a00020f, 1000, 0x7f400001, 80), b);
  assert.equal(t.find4(0x0a00020e, 1000, 0x7f000001, 80), null);
  t.remove(a);
  assert.equal(t.find4(0x0a00020f, 1000, 0x7f000001, 80), null);
  assert.equal(t.find4(0x0a00020f, 1000, 0x7f400001, 80), b);
  assert.equal(t.size, 1);
});

Deno.test("`FlowTable.insert()` refuses flows beyond the maximum and counts them", () => {
  const t = new FlowTable(2);
  for (let i = 0; i < 3; i++) {
    const f = newFlowKey();
    initFlowKey(f, 6, 0, new Uint8Array(16), 1000 + i, 0, new Uint8Array(16).fill(i), 80);
    assert.equal(t.insert(f), i < 2);
  }
  assert.equal(t.refused, 1);
  assert.equal(t.admit(), false);
  assert.equal(t.refused, 2);
});

Deno.test("`FlowTable` agrees with a Map model under random inserts and removals", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 3 })),
      ),
      (ops) => {
        const t = new FlowTable(1000);
        const model = new Map<string, ReturnType<typeof newFlowKey>>();
        for (const [add, addr, port] of ops) {
          const id = `${addr}/${port}`;
          const remote = (addr << 21) >>> 0; // all collide in the key
          if (add && !model.has(id)) {
            const f = newFlowKey();
            initFlowKey(f, 4, 1, null, 5, remote, null, port + 1);
            t.insert(f);
            model.set(id, f);
          } else if (!add && model.has(id)) {
            t.remove(model.get(id)!);
            model.delete(id);
          }
          for (let a = 0; a < 8; a++) {
            for (let p = 0; p < 4; p++) {
              const want = model.get(`${a}/${p}`) ?? null;
              if (t.find4(1, 5, (a << 21) >>> 0, p + 1) !== want) return false;
            }
          }
        }
        return t.size === model.size;
      },
    ),
    { numRuns: 200 },
  );
});
