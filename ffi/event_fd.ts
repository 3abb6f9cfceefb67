/**
 * An eventfd counter: vhost-user kick/call notifiers and the event loop's stop signal.
 *
 * @module
 */
import { helper } from "./library.ts";
import { Errno, NativeError } from "./native_error.ts";

const TWO_POW_32 = 2 ** 32;

/** A nonblocking eventfd (or an adopted eventfd received from QEMU). */
export class EventFd {
  #fd: number;
  readonly #value = new Uint32Array(2);
  readonly #valueBytes = new Uint8Array(this.#value.buffer);

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** Creates a new nonblocking, close-on-exec eventfd with counter 0. */
  static create(): EventFd {
    const rc = helper().tp_eventfd_create(0);
    if (rc < 0) throw new NativeError(-rc, "eventfd_create");
    return new EventFd(rc);
  }

  /**
   * Adopts an eventfd descriptor, e.g. one received via SCM_RIGHTS; closing the
   * EventFd closes it. It may be blocking: then drain() blocks while the counter is 0,
   * so only drain it when epoll reported it readable (or set it nonblocking first).
   */
  static fromFd(fd: number): EventFd {
    if (!Number.isInteger(fd) || fd < 0) {
      throw new RangeError(`Cannot adopt fd ${fd}: not a non-negative integer`);
    }
    return new EventFd(fd);
  }

  /** The descriptor, or -1 once closed. */
  /** Sets or clears O_NONBLOCK (an eventfd received from a frontend may be blocking). */
  setNonBlocking(on: boolean): void {
    if (this.#fd < 0) throw new Error("Cannot set O_NONBLOCK: the eventfd is closed");
    const rc = helper().tp_set_nonblocking(this.#fd, on ? 1 : 0);
    if (rc < 0) throw new NativeError(-rc, `set_nonblocking(fd ${this.#fd})`);
  }

  /** The descriptor number (-1 once closed). */
  get fd(): number {
    return this.#fd;
  }

  /**
   * Adds `value` (1..2^32-1) to the counter, waking readers. A full counter (which already
   * means "signalled") is not an error.
   */
  signal(value = 1): void {
    if (this.#fd < 0) throw new Error("Cannot signal: the eventfd is closed");
    if (!Number.isInteger(value) || value < 1 || value > 0xffffffff) {
      throw new RangeError(`Cannot signal ${value}: the increment must be 1..2^32-1`);
    }
    const rc = helper().tp_eventfd_write(this.#fd, value);
    if (rc < 0 && rc !== -Errno.EAGAIN) throw new NativeError(-rc, `eventfd_write(fd ${this.#fd})`);
  }

  /**
   * Reads and resets the counter. Returns its value (above 2^53 it is rounded), or 0
   * when nothing was pending.
   */
  drain(): number {
    if (this.#fd < 0) throw new Error("Cannot drain: the eventfd is closed");
    const rc = helper().tp_eventfd_read(this.#fd, this.#valueBytes);
    if (rc < 0) throw new NativeError(-rc, `eventfd_read(fd ${this.#fd})`);
    return this.#value[0] + this.#value[1] * TWO_POW_32;
  }

  /** Closes the eventfd; later calls do nothing. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    helper().tp_close(fd);
  }
}
