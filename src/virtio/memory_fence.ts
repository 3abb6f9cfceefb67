/**
 * A full memory barrier for code that shares memory with a guest on another CPU.
 *
 * JavaScript offers no fence on plain (non-shared) ArrayBuffers, which is what
 * mapped guest memory is. V8 compiles a sequentially consistent `Atomics` store to
 * a locked instruction (`xchg` on x86-64, a `dmb`-bracketed store on arm64), which
 * orders every earlier store before every later load of the thread — the
 * store→load ordering that split virtqueues need between "publish the used index"
 * and "read used_event", and between "write avail_event" and "re-read the avail
 * index" (virtio 1.2 §2.7.7.2, §2.7.10). Loads after loads and stores after stores
 * are already ordered by x86-64 (TSO); V8 does not reorder typed-array accesses
 * across calls such as this one.
 *
 * @module
 */

const cell = new Int32Array(new SharedArrayBuffer(4));

/** Orders all earlier memory accesses of this thread before all later ones. */
export function memoryFence(): void {
  Atomics.store(cell, 0, 0);
}
