import assert from "node:assert/strict";
import fc from "fast-check";
import { TcpFlow } from "./flow.ts";
import { TimerHeap } from "./timer_heap.ts";

Deno.test("`TimerHeap` always yields the earliest armed deadline through any sequence of set and delete", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          flow: fc.integer({ min: 0, max: 19 }),
          at: fc.option(fc.integer({ min: 0, max: 1000 }), { nil: null }),
        }),
        { maxLength: 200 },
      ),
      (operations) => {
        const flows = Array.from({ length: 20 }, () => new TcpFlow());
        const heap = new TimerHeap();
        const armed = new Map<TcpFlow, number>();
        for (const { flow, at } of operations) {
          const f = flows[flow];
          if (at === null) {
            heap.delete(f);
            armed.delete(f);
            assert.equal(f.timerAt, Infinity);
          } else {
            heap.set(f, at);
            armed.set(f, at);
          }
          assert.equal(heap.size, armed.size);
          assert.equal(heap.earliest(), Math.min(Infinity, ...armed.values()));
        }
        // Draining in order gives the deadlines sorted.
        const drained: number[] = [];
        while (heap.size > 0) {
          const f = heap.peek()!;
          drained.push(f.timerAt);
          heap.delete(f);
          assert.equal(f.heapIndex, -1);
        }
        assert.deepEqual(drained, [...armed.values()].sort((a, b) => a - b));
      },
    ),
    { numRuns: 300 },
  );
});
