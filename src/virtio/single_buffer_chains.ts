/**
 * The chains one {@link Virtqueue.popSingleBuffers} call took: each a single
 * device-writable buffer inside one memory region — what a Linux guest posts as
 * mergeable RX buffers (virtio 1.2 §5.1.6.3.1), one page-sized buffer per chain, ~16
 * of them per 64 KiB frame. Each buffer is given located, as the region's bytes, an
 * offset into them and a length (like a located {@link DescriptorChain}), with no view.
 *
 * Objects are reused: the engine refills one per call instead of allocating.
 *
 * @module
 */

const EMPTY = new Uint8Array(0);

/** A reusable holder for a run of single-buffer chains. */
export class SingleBufferChains {
  /** Number of chains taken; only `[0, count)` of each array is used. */
  count = 0;
  /** Head index of each chain: the id returned in the used ring. */
  readonly heads: Uint16Array;
  /** The bytes (a whole region) each buffer lies in. */
  readonly bases: Uint8Array[];
  /** Where each buffer starts in its base. */
  readonly offsets: Float64Array;
  /** Each buffer's length. */
  readonly lengths: Uint32Array;

  /** @param capacity the most chains one call may take (the queue size) */
  constructor(capacity: number) {
    this.heads = new Uint16Array(capacity);
    this.bases = new Array<Uint8Array>(capacity).fill(EMPTY);
    this.offsets = new Float64Array(capacity);
    this.lengths = new Uint32Array(capacity);
  }

  /** The most chains this holder takes. */
  get capacity(): number {
    return this.heads.length;
  }

  /** Drops the references into guest memory so that none outlives the batch. */
  release(): void {
    for (let i = 0; i < this.count; i++) this.bases[i] = EMPTY;
    this.count = 0;
  }
}
