import assert from "node:assert/strict";
import fc from "fast-check";
import { SplitRingDriver } from "../../tests/support/virtio/split_ring_driver.ts";
import { queueFixture } from "../../tests/support/virtio/queue_fixture.ts";
import { DescriptorChain } from "./descriptor_chain.ts";
import { SplitVirtqueue } from "./virtqueue.ts";

/** A chain of `lengths.length` buffers, the first `readable` of them device-readable. */
interface ChainShape {
  readonly lengths: number[];
  readonly readable: number;
}

const chainShape: fc.Arbitrary<ChainShape> = fc.array(fc.integer({ min: 1, max: 64 }), {
  minLength: 1,
  maxLength: 8,
}).chain((lengths) =>
  fc.integer({ min: 0, max: lengths.length }).map((readable) => ({ lengths, readable }))
);

/** Pops the chain `shape` describes (filled with a known pattern) twice: as views, then located. */
function popBoth(shape: ChainShape) {
  const { driver, queue } = queueFixture(
    new SplitRingDriver({ size: 16 }),
    (ring, options) => new SplitVirtqueue(ring, options),
  );
  const segments = shape.lengths.map((length, i) => {
    const addr = driver.alloc(length);
    driver.write(addr, Uint8Array.from({ length }, (_, j) => (i * 31 + j * 7) & 0xff));
    return { addr, length, writable: i >= shape.readable };
  });
  driver.addChain(segments);
  driver.addChain(segments);
  const views = new DescriptorChain(16);
  const located = new DescriptorChain(16);
  located.located = true;
  assert.ok(queue.pop(views, 0));
  assert.ok(queue.pop(located, 0));
  return { driver, segments, views, located };
}

Deno.test("DescriptorChain.readInto: a located chain reads what the same chain as views reads", () => {
  fc.assert(fc.property(
    chainShape,
    fc.nat({ max: 600 }),
    fc.nat({ max: 600 }),
    (shape, offset, length) => {
      const { views, located } = popBoth(shape);
      assert.equal(located.readableCount, views.readableCount);
      assert.equal(located.readableBytes, views.readableBytes);
      const fromViews = new Uint8Array(length);
      const fromLocated = new Uint8Array(length);
      assert.equal(located.readInto(offset, fromLocated), views.readInto(offset, fromViews));
      assert.deepEqual(fromLocated, fromViews);
    },
  ));
});

/** The buffers' bytes after writing `source` `offset` bytes into the writable ones, as one stream. */
function expectedAfterWrite(
  before: Uint8Array[],
  readable: number,
  offset: number,
  source: Uint8Array,
): Uint8Array[] {
  const after = before.map((b) => b.slice());
  let skip = offset;
  let at = 0;
  for (let i = readable; i < after.length && at < source.length; i++) {
    const buffer = after[i];
    if (skip >= buffer.length) {
      skip -= buffer.length;
      continue;
    }
    const n = Math.min(buffer.length - skip, source.length - at);
    buffer.set(source.subarray(at, at + n), skip);
    at += n;
    skip = 0;
  }
  return after;
}

Deno.test("DescriptorChain.writeFrom: located and view chains write exactly the bytes a byte-stream model says", () => {
  fc.assert(fc.property(
    chainShape,
    fc.nat({ max: 600 }),
    fc.uint8Array({ maxLength: 600 }),
    fc.boolean(),
    (shape, offset, source, useLocated) => {
      const { driver, segments, views, located } = popBoth(shape);
      const before = segments.map((s) => driver.read(s.addr, s.length));
      const written = (useLocated ? located : views).writeFrom(offset, source);
      const writable = shape.lengths.slice(shape.readable).reduce((a, b) => a + b, 0);
      assert.equal(written, Math.max(0, Math.min(source.length, writable - offset)));
      assert.deepEqual(
        segments.map((s) => driver.read(s.addr, s.length)),
        expectedAfterWrite(before, shape.readable, offset, source),
      );
    },
  ));
});
