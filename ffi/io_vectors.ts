/**
 * A reusable `struct iovec` array for the helper's gather/scatter calls
 * (tp_tcp_recvmsg, tp_tcp_sendmsg): each entry holds the address and length of one
 * byte view, so that the kernel copies straight into (or out of) those views —
 * guest memory included — without a copy through a buffer of ours.
 *
 * An address is the view's ArrayBuffer base plus its byteOffset. The base of each
 * ArrayBuffer is asked of the helper once (tp_buffer_address: Deno.UnsafePointer
 * would need unrestricted --allow-ffi) and cached; only buffers whose contents V8
 * never moves are cached: those larger than V8's on-heap typed-array limit (64
 * bytes), whose backing stores live outside the JS heap. The views must stay alive (and their memory mapped) until the call using
 * the table returns.
 *
 * @module
 */

import { helper } from "./library.ts";

/** Bytes per `struct iovec` on x86-64 / aarch64 Linux: `void *iov_base; size_t iov_len`. */
export const IOVEC_SIZE = 16;
/** Buffers at most this large may live on V8's heap (and move): never cached. */
const ON_HEAP_LIMIT = 64;
/**
 * 2^32, to split a 64-bit address into u32 halves: `address >>> 0` and
 * `(address / TWO_32) >>> 0`, not `%` and `Math.floor` (a double `%` is a call into
 * the runtime, ~15 ns).
 */
const TWO_32 = 2 ** 32;

const addressWords = new Uint32Array(2);
const addressBytes = new Uint8Array(addressWords.buffer);
const baseCache = new WeakMap<ArrayBufferLike, number>();
let lastBuffer: ArrayBufferLike | null = null;
let lastBase = 0;
/**
 * The view {@link IoVectors.pushRange} took last and the address of its first byte: the
 * RX path adds ranges of one region's bytes over and over, and reading a view's
 * `buffer` is a call into the runtime (~20 ns), not an inlined field load. Only views
 * of more than {@link ON_HEAP_LIMIT} bytes are kept (their memory never moves).
 */
let lastView: Uint8Array | null = null;
let lastViewAddress = 0;

/** Address of the first byte of `buffer`'s memory. */
function bufferBase(buffer: ArrayBufferLike): number {
  if (buffer === lastBuffer) return lastBase;
  let base = baseCache.get(buffer);
  if (base === undefined) {
    helper().tp_buffer_address(new Uint8Array(buffer), addressBytes);
    base = addressWords[0] + addressWords[1] * TWO_32;
    if (buffer.byteLength <= ON_HEAP_LIMIT) return base;
    baseCache.set(buffer, base);
  }
  lastBuffer = buffer;
  lastBase = base;
  return base;
}

/** A fixed-capacity iovec table; see the module comment. */
export class IoVectors {
  /** The table's bytes, passed to the helper as `const struct iovec *`. */
  readonly bytes: Uint8Array;
  readonly #words: Uint32Array;
  readonly #capacity: number;
  #count = 0;
  #totalBytes = 0;

  /** @param capacity most entries the table holds (IOV_MAX is 1024) */
  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1024) {
      throw new RangeError(`Cannot make an iovec table of ${capacity} entries: 1..1024`);
    }
    this.#capacity = capacity;
    this.bytes = new Uint8Array(capacity * IOVEC_SIZE);
    this.#words = new Uint32Array(this.bytes.buffer);
  }

  /** Entries in use. */
  get count(): number {
    return this.#count;
  }

  /** Bytes the entries cover together. */
  get totalBytes(): number {
    return this.#totalBytes;
  }

  /** Whether another entry fits. */
  get full(): boolean {
    return this.#count === this.#capacity;
  }

  /** Empties the table. */
  clear(): void {
    this.#count = 0;
    this.#totalBytes = 0;
  }

  /**
   * Appends `view` (its first `length` bytes, all by default); an empty view adds
   * nothing.
   * @throws RangeError when the table is full
   */
  push(view: Uint8Array, length: number = view.byteLength): void {
    if (length <= 0) return;
    if (this.#count === this.#capacity) {
      throw new RangeError(`Cannot add to the iovec table: all ${this.#capacity} entries are used`);
    }
    const address = bufferBase(view.buffer) + view.byteOffset;
    const w = this.#words;
    const at = this.#count * (IOVEC_SIZE / 4);
    w[at] = address >>> 0; // the low half (ToUint32 is exact below 2^53)
    w[at + 1] = (address / TWO_32) >>> 0;
    w[at + 2] = Math.min(length, view.byteLength);
    w[at + 3] = 0;
    this.#count++;
    this.#totalBytes += Math.min(length, view.byteLength);
  }

  /**
   * Appends `length` bytes of `bytes` starting at `offset` (clamped to what `bytes`
   * holds), without making a view of them; nothing for an empty range.
   * @throws RangeError when the table is full
   */
  pushRange(bytes: Uint8Array, offset: number, length: number): void {
    const n = Math.min(length, bytes.byteLength - offset);
    if (!(n > 0) || offset < 0) return;
    if (this.#count === this.#capacity) {
      throw new RangeError(`Cannot add to the iovec table: all ${this.#capacity} entries are used`);
    }
    let start: number;
    if (bytes === lastView) {
      start = lastViewAddress;
    } else {
      start = bufferBase(bytes.buffer) + bytes.byteOffset;
      if (bytes.byteLength > ON_HEAP_LIMIT) {
        lastView = bytes;
        lastViewAddress = start;
      }
    }
    const address = start + offset;
    const w = this.#words;
    const at = this.#count * (IOVEC_SIZE / 4);
    w[at] = address >>> 0; // the low half (ToUint32 is exact below 2^53)
    w[at + 1] = (address / TWO_32) >>> 0;
    w[at + 2] = n;
    w[at + 3] = 0;
    this.#count++;
    this.#totalBytes += n;
  }

  /** Shortens the table to its first `length` bytes (entries past them are dropped). */
  truncate(length: number): void {
    if (length >= this.#totalBytes) return;
    const w = this.#words;
    let left = Math.max(0, length);
    let count = 0;
    while (count < this.#count && left > 0) {
      const at = count * (IOVEC_SIZE / 4);
      if (w[at + 2] > left) w[at + 2] = left;
      left -= w[at + 2];
      count++;
    }
    this.#count = count;
    this.#totalBytes = Math.max(0, length);
  }

  /**
   * Appends `length` bytes of `other`'s entries, starting `skip` bytes into them (for
   * a table that must start with entries of its own); stops early when this table
   * is full.
   */
  append(other: IoVectors, length: number, skip = 0): void {
    const from = other.#words;
    const w = this.#words;
    let left = length;
    let drop = skip;
    for (let i = 0; i < other.#count && left > 0; i++) {
      const src = i * (IOVEC_SIZE / 4);
      if (drop >= from[src + 2]) {
        drop -= from[src + 2];
        continue;
      }
      if (this.#count === this.#capacity) return;
      const at = this.#count * (IOVEC_SIZE / 4);
      const n = Math.min(from[src + 2] - drop, left);
      const address = from[src] + from[src + 1] * TWO_32 + drop;
      w[at] = address >>> 0; // the low half (ToUint32 is exact below 2^53)
      w[at + 1] = (address / TWO_32) >>> 0;
      w[at + 2] = n;
      w[at + 3] = 0;
      drop = 0;
      this.#count++;
      this.#totalBytes += n;
      left -= n;
    }
  }
}
