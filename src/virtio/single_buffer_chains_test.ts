import assert from "node:assert/strict";
import fc from "fast-check";
import { SplitRingDriver } from "../../tests/support/virtio/split_ring_driver.ts";
import { queueFixture } from "../../tests/support/virtio/queue_fixture.ts";
import { DescriptorChain } from "./descriptor_chain.ts";
import { SingleBufferChains } from "./single_buffer_chains.ts";
import { SplitVirtqueue } from "./virtqueue.ts";
import { PackedVirtqueue } from "./packed_virtqueue.ts";
import { PackedRingDriver } from "../../tests/support/virtio/packed_ring_driver.ts";
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "./ring_layout.ts";

const SIZE = 16;
/** The smallest buffer the tests ask for (the link asks for the virtio-net header's 12 bytes). */
const MIN_LENGTH = 12;

/** One raw descriptor: which address (an index into `addressChoices`), length, flags, next. */
interface RawDescriptor {
  readonly address: number;
  readonly length: number;
  readonly flags: number;
  readonly next: number;
}

/** A ring as a hostile or ordinary guest may leave it. */
interface RingSpec {
  readonly indirect: boolean;
  readonly descriptors: RawDescriptor[];
  readonly heads: number[];
}

const WRITE_ONLY = VIRTQ_DESC_F_WRITE;
const flagChoices = fc.oneof(
  { weight: 6, arbitrary: fc.constant(WRITE_ONLY) },
  { weight: 1, arbitrary: fc.constant(WRITE_ONLY | VIRTQ_DESC_F_NEXT) },
  { weight: 1, arbitrary: fc.constant(0) },
  { weight: 1, arbitrary: fc.constant(VIRTQ_DESC_F_NEXT) },
  { weight: 1, arbitrary: fc.constant(VIRTQ_DESC_F_INDIRECT) },
  { weight: 1, arbitrary: fc.constant(WRITE_ONLY | VIRTQ_DESC_F_INDIRECT) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
);

const ringSpec: fc.Arbitrary<RingSpec> = fc.record({
  indirect: fc.boolean(),
  descriptors: fc.array(
    fc.record({
      address: fc.nat({ max: 5 }),
      length: fc.oneof(
        fc.constantFrom(0, 1, MIN_LENGTH - 1, MIN_LENGTH, 4096),
        fc.integer({ min: 1, max: 5000 }),
      ),
      flags: flagChoices,
      next: fc.oneof({ weight: 4, arbitrary: fc.nat({ max: SIZE - 1 }) }, fc.nat({ max: 0xffff })),
    }),
    { minLength: SIZE, maxLength: SIZE },
  ),
  heads: fc.array(
    fc.oneof({ weight: 20, arbitrary: fc.nat({ max: SIZE - 1 }) }, fc.constant(SIZE + 3)),
    { maxLength: SIZE },
  ),
});

/** What one popped chain was: head, and each buffer's offset in its region and length. */
interface Popped {
  readonly head: number;
  readonly buffers: [number, number][];
}

/** A split ring laid out as `spec` says, with its queue. */
function splitRing(spec: RingSpec) {
  const setup = queueFixture(
    new SplitRingDriver({ size: SIZE, features: { indirectDescriptors: spec.indirect } }),
    (ring, options) => new SplitVirtqueue(ring, options),
  );
  const { driver } = setup;
  const buffers = [driver.alloc(8192), driver.alloc(8192), driver.alloc(64)];
  const end = driver.base + driver.bytes.length;
  // In memory, in memory, short, running past its end, outside, across 2^32.
  const addressChoices = [buffers[0], buffers[1], buffers[2], end - 100, 0x10, 0xffff_fff0];
  spec.descriptors.forEach((d, i) =>
    driver.setDescriptor(i, addressChoices[d.address], 0, d.length, d.flags, d.next)
  );
  for (const head of spec.heads) driver.offer(head);
  return setup;
}

/** Each chain `queue.pop()` returns until none is left, located. */
function popAll(queue: SplitVirtqueue): Popped[] {
  const chain = new DescriptorChain(SIZE);
  chain.located = true;
  const popped: Popped[] = [];
  while (queue.pop(chain, 0)) {
    const buffers: [number, number][] = [];
    for (let i = 0; i < chain.count; i++) buffers.push([chain.offsets[i], chain.lengths[i]]);
    popped.push({ head: chain.head, buffers });
    chain.release();
  }
  return popped;
}

Deno.test("SplitVirtqueue.popSingleBuffers: with pop() between its calls, the chains, walks and drops of pop() alone", () => {
  fc.assert(fc.property(
    ringSpec,
    fc.array(
      fc.record({ chains: fc.integer({ min: 0, max: 20 }), bytes: fc.nat({ max: 20_000 }) }),
      {
        minLength: 1,
        maxLength: 8,
      },
    ),
    (spec, calls) => {
      const alone = splitRing(spec);
      const expected = popAll(alone.queue);

      const mixed = splitRing(spec);
      const singles = new SingleBufferChains(SIZE);
      const chain = new DescriptorChain(SIZE);
      chain.located = true;
      const popped: Popped[] = [];
      for (let call = 0;; call++) {
        const { chains, bytes } = calls[call % calls.length];
        const taken = mixed.queue.popSingleBuffers(singles, chains, bytes, MIN_LENGTH);
        assert.equal(taken, singles.count);
        assert.ok(taken <= chains, "never more chains than asked for");
        let held = 0;
        for (let i = 0; i < taken; i++) {
          assert.ok(singles.lengths[i] >= MIN_LENGTH, "never a buffer shorter than asked for");
          assert.ok(held < bytes, "stops once the chains hold the bytes asked for");
          held += singles.lengths[i];
          popped.push({
            head: singles.heads[i],
            buffers: [[singles.offsets[i], singles.lengths[i]]],
          });
        }
        singles.release();
        const one = mixed.queue.pop(chain, 0);
        if (one) {
          const buffers: [number, number][] = [];
          for (let i = 0; i < chain.count; i++) buffers.push([chain.offsets[i], chain.lengths[i]]);
          popped.push({ head: chain.head, buffers });
          chain.release();
        }
        if (!one) break; // pop() found nothing more: the ring is drained
      }
      // The runs' chains included: each is one buffer for pop() too.
      assert.deepEqual(popped, expected);
      assert.equal(mixed.queue.descriptorsWalked, alone.queue.descriptorsWalked);
      assert.equal(mixed.queue.malformedCount, alone.queue.malformedCount);
      assert.equal(mixed.queue.lastAvailIndex, alone.queue.lastAvailIndex);
      assert.equal(mixed.queue.broken, alone.queue.broken);
      mixed.queue.publish();
      alone.queue.publish();
      assert.deepEqual(mixed.driver.takeUsed(), alone.driver.takeUsed(), "the same chains dropped");
    },
  ));
});

Deno.test("SplitVirtqueue.popSingleBuffers takes a run of one-buffer writable chains and stops at any other", () => {
  const { driver, queue } = queueFixture(
    new SplitRingDriver({ size: SIZE }),
    (ring, options) => new SplitVirtqueue(ring, options),
  );
  const a = driver.alloc(4096), b = driver.alloc(4096), c = driver.alloc(100);
  const first = driver.addChain([{ addr: a, length: 4096, writable: true }])!;
  const second = driver.addChain([{ addr: b, length: 4096, writable: true }])!;
  const twoBuffers = driver.addChain([
    { addr: c, length: 50, writable: true },
    { addr: c + 50, length: 50, writable: true },
  ])!;
  const last = driver.addChain([{ addr: a, length: 2048, writable: true }])!;
  const singles = new SingleBufferChains(SIZE);
  assert.equal(queue.popSingleBuffers(singles, SIZE, 1 << 20, MIN_LENGTH), 2);
  assert.deepEqual([...singles.heads.subarray(0, 2)], [first, second]);
  assert.deepEqual([...singles.lengths.subarray(0, 2)], [4096, 4096]);
  assert.equal(singles.bases[0].subarray(singles.offsets[0])[0], driver.read(a, 1)[0]);
  singles.release();
  assert.equal(singles.count, 0);
  const chain = new DescriptorChain(SIZE);
  assert.ok(queue.pop(chain, 0));
  assert.equal(chain.head, twoBuffers);
  // Asked for 2,048 bytes, it stops after the first chain that holds them.
  assert.equal(queue.popSingleBuffers(singles, SIZE, 2048, MIN_LENGTH), 1);
  assert.equal(singles.heads[0], last);
  assert.equal(queue.popSingleBuffers(singles, SIZE, 2048, MIN_LENGTH), 0, "nothing left");
});

Deno.test("SplitVirtqueue.popSingleBuffers leaves a descriptor another chain reached to pop(), which drops it", () => {
  const { driver, queue } = queueFixture(
    new SplitRingDriver({ size: SIZE }),
    (ring, options) => new SplitVirtqueue(ring, options),
  );
  const a = driver.alloc(4096);
  driver.setDescriptor(3, a, 0, 4096, VIRTQ_DESC_F_WRITE, 0);
  driver.offer(3);
  driver.offer(3); // the same descriptor again before the used index was published
  const singles = new SingleBufferChains(SIZE);
  assert.equal(queue.popSingleBuffers(singles, SIZE, 1 << 20, MIN_LENGTH), 1);
  assert.equal(queue.malformedCount, 0);
  const chain = new DescriptorChain(SIZE);
  assert.equal(queue.pop(chain, 0), false);
  assert.equal(queue.malformedCount, 1, "pop() dropped the shared one");
});

Deno.test("PackedVirtqueue.popSingleBuffers takes none: pop() takes each chain", () => {
  const { driver, queue } = queueFixture(
    new PackedRingDriver({ size: SIZE }),
    (ring, options) => new PackedVirtqueue(ring, options),
  );
  const a = driver.alloc(4096);
  driver.addChain([{ addr: a, length: 4096, writable: true }]);
  const singles = new SingleBufferChains(SIZE);
  assert.equal(queue.popSingleBuffers(singles, SIZE, 1 << 20, MIN_LENGTH), 0);
  assert.equal(singles.count, 0);
  assert.ok(queue.pop(new DescriptorChain(SIZE), 0));
});
