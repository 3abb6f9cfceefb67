/**
 * A shared read/write mapping of a file descriptor: one guest memory region.
 *
 * ⚠ DANGER: {@link MappedMemory.bytes} is a zero-copy view of the mapping. Reading
 * or writing it — or any view derived from its buffer (subarray, DataView) — after
 * {@link MappedMemory.close} KILLS THE PROCESS WITH SIGSEGV; no exception can catch
 * it. The owner of a MappedMemory must make every user drop its views (rings,
 * cached descriptors, frames in flight) before calling close().
 *
 * Every mapping is guarded against SIGBUS ({@link MemoryGuard}): if the file behind
 * it shrinks, touching the lost part does not kill the process; the mapping turns
 * into zeros and {@link MappedMemory.faulted} becomes true.
 *
 * @module
 */
import { helper } from "./library.ts";
import { MemoryGuard } from "./memory_guard.ts";
import { NativeError } from "./native_error.ts";

/** Largest byte index {@link MappedMemory.atomicOrByte} takes (the C offset is a u32). */
const MAX_U32 = 0xffff_ffff;

/** A MAP_SHARED, PROT_READ|PROT_WRITE mapping of `size` bytes of an fd. */
export class MappedMemory {
  #pointer: Deno.PointerObject | null;
  #bytes: Uint8Array<ArrayBuffer> | null;
  readonly #size: number;
  /** The memory guard's registry slot. */
  readonly #guardSlot: number;

  private constructor(pointer: Deno.PointerObject, size: number, guardSlot: number) {
    this.#pointer = pointer;
    this.#size = size;
    this.#guardSlot = guardSlot;
    this.#bytes = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(pointer, size));
  }

  /**
   * Maps `size` bytes of `fd` from file offset `offset` (a multiple of the page
   * size). Both may exceed 4 GiB (measured: a 6 GiB mapping works). The fd may be
   * closed afterwards. The mapping is registered with the {@link MemoryGuard}.
   * @throws NativeError (EINVAL for size 0 or an unaligned offset, ENOMEM...; ENOSPC
   *   when the guard's registry is full: the mapping is then undone)
   */
  static map(fd: number, size: number, offset: number): MappedMemory {
    if (!Number.isSafeInteger(size) || size <= 0) {
      throw new RangeError(`Cannot map ${size} bytes: not a positive integer`);
    }
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new RangeError(`Cannot map at offset ${offset}: not a non-negative integer`);
    }
    const address = new Uint32Array(2);
    const rc = helper().tp_mmap_shared(
      fd,
      BigInt(size),
      BigInt(offset),
      new Uint8Array(address.buffer),
    );
    if (rc < 0) throw new NativeError(-rc, `mmap(fd ${fd}, size ${size}, offset ${offset})`);
    const pointer = Deno.UnsafePointer.create(
      (BigInt(address[1]) << 32n) | BigInt(address[0]),
    );
    if (pointer === null) throw new Error(`mmap(fd ${fd}) returned a null address`);
    let guardSlot = -1;
    try {
      guardSlot = MemoryGuard.register(pointer, size);
      return new MappedMemory(pointer, size, guardSlot);
    } catch (error) {
      if (guardSlot >= 0) MemoryGuard.unregister(guardSlot);
      helper().tp_munmap(pointer, BigInt(size));
      throw error;
    }
  }

  /**
   * The whole mapping as one long-lived zero-copy view (the same object on every
   * call). ⚠ Touching it after close() kills the process (SIGSEGV).
   * @throws Error once closed
   */
  get bytes(): Uint8Array<ArrayBuffer> {
    if (this.#bytes === null) throw new Error("Cannot use mapped memory: it has been unmapped");
    return this.#bytes;
  }

  /**
   * True once touching the mapping raised SIGBUS (its file no longer covers it) and
   * the memory guard replaced it with zero pages: reads see zeros, writes go
   * nowhere the file's other users can see. False once closed.
   */
  get faulted(): boolean {
    if (this.#pointer === null) return false;
    return MemoryGuard.faulted(this.#guardSlot);
  }

  /**
   * Sets the bits of `mask` in byte `index` of the mapping with one atomic
   * read-modify-write (a C `__atomic_fetch_or`), so that bits another process sets
   * or clears in the same byte at the same time are not lost (the vhost-user dirty
   * log). Does nothing once closed.
   * @throws RangeError when `index` is outside the mapping or not below 2^32
   */
  atomicOrByte(index: number, mask: number): void {
    const pointer = this.#pointer;
    if (pointer === null) return;
    if (!(index >= 0 && index < this.#size && index <= MAX_U32)) {
      throw new RangeError(`Cannot set bits at byte ${index}: outside ${this.#size} mapped bytes`);
    }
    helper().tp_atomic_or_u8(pointer, index, mask & 0xff);
  }

  /** The mapping's length in bytes. */
  get size(): number {
    return this.#size;
  }

  /** The mapping's address split in two u32 halves, for diagnostics: [low, high]. */
  get address(): [number, number] {
    if (this.#pointer === null) return [0, 0];
    const value = Deno.UnsafePointer.value(this.#pointer);
    const n = typeof value === "bigint" ? value : BigInt(value);
    return [Number(n & 0xffffffffn), Number(n >> 32n)];
  }

  /**
   * Unregisters the mapping from the memory guard and unmaps it; later calls do
   * nothing. ⚠ Every view of {@link bytes} must be dropped first: touching one
   * afterwards kills the process.
   */
  close(): void {
    if (this.#pointer === null) return;
    const pointer = this.#pointer;
    this.#pointer = null;
    this.#bytes = null;
    MemoryGuard.unregister(this.#guardSlot);
    const rc = helper().tp_munmap(pointer, BigInt(this.#size));
    if (rc < 0) throw new NativeError(-rc, `munmap(size ${this.#size})`);
  }
}

/** Size of a page for mapping offsets (x86_64). */
export const PAGE_SIZE = 4096;

/**
 * Returns the size of the file behind `fd` (fstat), so that a region can be checked
 * against it before mapping: touching a mapping beyond the end of its file raises
 * SIGBUS. Also adds F_SEAL_SHRINK where the file allows sealing, so the frontend
 * cannot shrink it afterwards (files that cannot be sealed may still shrink: the
 * {@link MemoryGuard} covers those).
 * @throws NativeError (EBADF...)
 */
export function fileSizeOfFd(fd: number): number {
  const size = new Uint32Array(2);
  const rc = helper().tp_fd_size(fd, new Uint8Array(size.buffer));
  if (rc < 0) throw new NativeError(-rc, `fstat(fd ${fd})`);
  return size[1] * 0x1_0000_0000 + size[0];
}
