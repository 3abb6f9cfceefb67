/**
 * One end of a pipe received from elsewhere (QEMU's device state channel), read or
 * written without blocking (native/fd_io.c tp_read / tp_write).
 *
 * @module
 */
import { helper } from "./library.ts";
import { Errno, NativeError } from "./native_error.ts";

/** Returned by {@link PipeEnd.read} and {@link PipeEnd.write} when the call would block. */
export const PIPE_WOULD_BLOCK = -1;

/** A pipe end owned by this object; made nonblocking when taken. */
export class PipeEnd {
  #fd: number;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * Takes ownership of `fd` and makes it nonblocking.
   * @throws NativeError when the fd cannot be made nonblocking (it is closed then)
   */
  static adopt(fd: number): PipeEnd {
    const rc = helper().tp_set_nonblocking(fd, 1);
    if (rc < 0) {
      helper().tp_close(fd);
      throw new NativeError(-rc, `fcntl(fd ${fd}, O_NONBLOCK)`);
    }
    return new PipeEnd(fd);
  }

  /** The descriptor, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /**
   * Reads into `buf`: the byte count, 0 at the end of file, or {@link PIPE_WOULD_BLOCK}.
   * @throws NativeError on a read error
   */
  read(buf: Uint8Array): number {
    const rc = helper().tp_read(this.#open(), buf, buf.byteLength);
    if (rc === -Errno.EAGAIN) return PIPE_WOULD_BLOCK;
    if (rc < 0) throw new NativeError(-rc, `read(fd ${this.#fd})`);
    return rc;
  }

  /**
   * Writes from `buf`: the bytes taken (possibly fewer), or {@link PIPE_WOULD_BLOCK}.
   * @throws NativeError on a write error (EPIPE once the reader is gone)
   */
  write(buf: Uint8Array): number {
    const rc = helper().tp_write(this.#open(), buf, buf.byteLength);
    if (rc === -Errno.EAGAIN) return PIPE_WOULD_BLOCK;
    if (rc < 0) throw new NativeError(-rc, `write(fd ${this.#fd})`);
    return rc;
  }

  /** Closes the end (the reader of a written pipe then sees the end of file); safe twice. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    helper().tp_close(fd);
  }

  #open(): number {
    if (this.#fd < 0) throw new Error("Cannot use the pipe: it is closed");
    return this.#fd;
  }
}
