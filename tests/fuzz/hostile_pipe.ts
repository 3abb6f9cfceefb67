/**
 * A pipe for the hostile frontend: the notifier QEMU's event_notifier falls back to
 * without eventfd. The fuzzer hands either end to the daemon as a kick or call fd.
 * Built on the helper's pipe (ffi/process.ts createPipe), both ends made nonblocking.
 *
 * @module
 */
import { helper } from "../../ffi/library.ts";
import { Errno, NativeError } from "../../ffi/native_error.ts";
import { createPipe } from "../../ffi/process.ts";

/** Both ends of a close-on-exec pipe, as raw descriptors. */
export class Pipe {
  #readFd: number;
  #writeFd: number;

  private constructor(readFd: number, writeFd: number) {
    this.#readFd = readFd;
    this.#writeFd = writeFd;
  }

  /** Creates a pipe; with `nonblocking` (the default) both ends have O_NONBLOCK. */
  static create(nonblocking = true): Pipe {
    const [readFd, writeFd] = createPipe();
    const pipe = new Pipe(readFd, writeFd);
    for (const fd of nonblocking ? [readFd, writeFd] : []) {
      const rc = helper().tp_set_nonblocking(fd, 1);
      if (rc < 0) {
        pipe.closeRead();
        pipe.closeWrite();
        throw new NativeError(-rc, `set O_NONBLOCK on pipe fd ${fd}`);
      }
    }
    return pipe;
  }

  /** The read end (-1 once closed). */
  get readFd(): number {
    return this.#readFd;
  }

  /** The write end (-1 once closed). */
  get writeFd(): number {
    return this.#writeFd;
  }

  /**
   * Writes as much of `bytes` as fits into the write end now.
   * @returns the bytes written, or -1 when the pipe is full (EAGAIN)
   * @throws NativeError EPIPE when the read end is closed everywhere
   */
  write(bytes: Uint8Array): number {
    if (this.#writeFd < 0) throw new Error("Cannot write: the write end is closed");
    const rc = helper().tp_write(this.#writeFd, bytes, bytes.byteLength);
    if (rc === -Errno.EAGAIN) return -1;
    if (rc < 0) throw new NativeError(-rc, `write(pipe fd ${this.#writeFd})`);
    return rc;
  }

  /**
   * Reads what is pending at the read end into `into`.
   * @returns the bytes read, 0 at end of file, or -1 when nothing is pending (EAGAIN)
   */
  read(into: Uint8Array): number {
    if (this.#readFd < 0) throw new Error("Cannot read: the read end is closed");
    const rc = helper().tp_read(this.#readFd, into, into.byteLength);
    if (rc === -Errno.EAGAIN) return -1;
    if (rc < 0) throw new NativeError(-rc, `read(pipe fd ${this.#readFd})`);
    return rc;
  }

  /** Closes the read end; later calls do nothing. */
  closeRead(): void {
    if (this.#readFd < 0) return;
    const fd = this.#readFd;
    this.#readFd = -1;
    helper().tp_close(fd);
  }

  /** Closes the write end; later calls do nothing. */
  closeWrite(): void {
    if (this.#writeFd < 0) return;
    const fd = this.#writeFd;
    this.#writeFd = -1;
    helper().tp_close(fd);
  }

  /** Closes both ends; safe twice. */
  close(): void {
    this.closeRead();
    this.closeWrite();
  }
}
