/**
 * An anonymous memory file (memfd): guest memory in the test harnesses, as QEMU's
 * memory-backend-memfd provides it.
 *
 * @module
 */
import { cString, helper } from "./library.ts";
import { NativeError } from "./native_error.ts";

/** A close-on-exec memfd of a fixed size (sparse: pages are allocated when touched). */
export class MemFd {
  #fd: number;
  readonly #size: number;

  private constructor(fd: number, size: number) {
    this.#fd = fd;
    this.#size = size;
  }

  /** Creates a memfd named `name` (visible in /proc/self/fd) of `size` bytes. */
  static create(name: string, size: number): MemFd {
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new RangeError(`Cannot create memfd of ${size} bytes: not a non-negative integer`);
    }
    const rc = helper().tp_memfd_create(cString(name), BigInt(size));
    if (rc < 0) throw new NativeError(-rc, `memfd_create(${JSON.stringify(name)}, ${size})`);
    return new MemFd(rc, size);
  }

  /** The descriptor, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /** The file size in bytes. */
  get size(): number {
    return this.#size;
  }

  /** Closes the memfd (existing mappings stay valid); later calls do nothing. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    helper().tp_close(fd);
  }
}
