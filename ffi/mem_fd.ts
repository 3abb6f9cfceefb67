/**
 * An anonymous memory file (memfd): guest memory in the test harnesses, as QEMU's
 * memory-backend-memfd provides it.
 *
 * @module
 */
import { cString, helper } from "./library.ts";
import { NativeError } from "./native_error.ts";

/** How a memfd is created. */
export interface MemFdOptions {
  /**
   * Create it with MFD_ALLOW_SEALING, so that seals (F_SEAL_SHRINK...) can be added
   * to it later, as QEMU's memory-backend-memfd does (default false: never sealable).
   */
  readonly allowSealing?: boolean;
}

/** A close-on-exec memfd (sparse: pages are allocated when touched). */
export class MemFd {
  #fd: number;
  #size: number;

  private constructor(fd: number, size: number) {
    this.#fd = fd;
    this.#size = size;
  }

  /** Creates a memfd named `name` (visible in /proc/self/fd) of `size` bytes. */
  static create(name: string, size: number, options: MemFdOptions = {}): MemFd {
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new RangeError(`Cannot create memfd of ${size} bytes: not a non-negative integer`);
    }
    const rc = helper().tp_memfd_create(cString(name), BigInt(size), options.allowSealing ? 1 : 0);
    if (rc < 0) throw new NativeError(-rc, `memfd_create(${JSON.stringify(name)}, ${size})`);
    return new MemFd(rc, size);
  }

  /** The descriptor, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /** The file size in bytes (as created or last truncated through this object). */
  get size(): number {
    return this.#size;
  }

  /**
   * Sets the file's size (ftruncate). Shrinking it under a mapping makes that
   * mapping's pages beyond the new end raise SIGBUS when touched.
   * @throws NativeError (EPERM when the file carries F_SEAL_SHRINK or F_SEAL_GROW)
   */
  truncate(size: number): void {
    if (this.#fd < 0) throw new Error("Cannot truncate: the memfd is closed");
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new RangeError(`Cannot truncate a memfd to ${size} bytes: not a non-negative integer`);
    }
    const rc = helper().tp_ftruncate(this.#fd, BigInt(size));
    if (rc < 0) throw new NativeError(-rc, `ftruncate(fd ${this.#fd}, ${size})`);
    this.#size = size;
  }

  /** Closes the memfd (existing mappings stay valid); later calls do nothing. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    helper().tp_close(fd);
  }
}
