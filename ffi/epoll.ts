/**
 * Low-level epoll instance. src/loop/event_loop.ts builds the daemon's event loop on it.
 *
 * Wait results land in a caller-supplied buffer of packed `struct epoll_event`
 * (x86_64: 12 bytes: u32 events at 0, u64 data at 4 — low half at 4, high at 8).
 *
 * @module
 */
import { helper } from "./library.ts";
import { Errno, NativeError } from "./native_error.ts";

/** Readable (EPOLLIN, sys/epoll.h). */
export const EPOLLIN = 0x001;
/** Urgent data (EPOLLPRI). */
export const EPOLLPRI = 0x002;
/** Writable (EPOLLOUT). */
export const EPOLLOUT = 0x004;
/** Error condition (EPOLLERR), always reported. */
export const EPOLLERR = 0x008;
/** Hang-up (EPOLLHUP), always reported. */
export const EPOLLHUP = 0x010;
/** Peer shut down writing (EPOLLRDHUP). */
export const EPOLLRDHUP = 0x2000;
/** Edge-triggered (EPOLLET). */
export const EPOLLET = 0x80000000;

/** Size of one packed struct epoll_event on x86_64. */
export const EPOLL_EVENT_SIZE = 12;
/** Offset of the u32 events field in an epoll_event. */
export const EPOLL_EVENT_EVENTS = 0;
/** Offset of the low u32 half of the u64 data field. */
export const EPOLL_EVENT_DATA_LOW = 4;
/** Offset of the high u32 half of the u64 data field. */
export const EPOLL_EVENT_DATA_HIGH = 8;

const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLL_CTL_MOD = 3;

/** epoll_pwait2 answered ENOSYS (Linux before 5.11): wait in milliseconds instead. */
let microsecondWaitMissing = false;

/** An epoll instance; each watched fd carries a 64-bit tag given as two u32 halves. */
export class Epoll {
  #fd: number;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** Creates a close-on-exec epoll instance. */
  static create(): Epoll {
    const size = helper().tp_epoll_event_size();
    if (size !== EPOLL_EVENT_SIZE) {
      throw new Error(`Cannot use epoll: struct epoll_event is ${size} bytes, expected 12`);
    }
    const rc = helper().tp_epoll_create();
    if (rc < 0) throw new NativeError(-rc, "epoll_create");
    return new Epoll(rc);
  }

  /** The epoll descriptor, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /** Starts watching `fd` for `events`, tagging its events with (dataLow, dataHigh). */
  add(fd: number, events: number, dataLow: number, dataHigh = 0): void {
    const rc = helper().tp_epoll_ctl(this.#open(), EPOLL_CTL_ADD, fd, events, dataLow, dataHigh);
    if (rc < 0) throw new NativeError(-rc, `epoll_ctl(ADD, fd ${fd})`);
  }

  /** Changes the events and tag of a watched `fd`. */
  modify(fd: number, events: number, dataLow: number, dataHigh = 0): void {
    const rc = helper().tp_epoll_ctl(this.#open(), EPOLL_CTL_MOD, fd, events, dataLow, dataHigh);
    if (rc < 0) throw new NativeError(-rc, `epoll_ctl(MOD, fd ${fd})`);
  }

  /**
   * Stops watching `fd`. Returns false when it was not watched or is already closed
   * (closing an fd removes it from epoll by itself).
   */
  remove(fd: number): boolean {
    const rc = helper().tp_epoll_ctl(this.#open(), EPOLL_CTL_DEL, fd, 0, 0, 0);
    if (rc === 0) return true;
    if (rc === -Errno.ENOENT || rc === -Errno.EBADF) return false;
    throw new NativeError(-rc, `epoll_ctl(DEL, fd ${fd})`);
  }

  /**
   * Waits synchronously (blocking the JS thread while `timeoutMs` runs; use 0 to poll)
   * and stores up to `maxEvents` events in `buffer`. Returns the number of events.
   */
  wait(buffer: Uint8Array, maxEvents: number, timeoutMs: number): number {
    checkCapacity(buffer, maxEvents);
    const rc = helper().tp_epoll_wait(this.#open(), buffer, maxEvents, timeoutMs);
    if (rc < 0) throw new NativeError(-rc, `epoll_wait(fd ${this.#fd})`);
    return rc;
  }

  /**
   * Like {@link wait}, with the timeout in microseconds (epoll_pwait2; -1 waits
   * forever). Where the kernel lacks epoll_pwait2 (before Linux 5.11) it waits the
   * timeout rounded up to whole milliseconds instead.
   */
  waitMicroseconds(buffer: Uint8Array, maxEvents: number, timeoutUs: number): number {
    checkCapacity(buffer, maxEvents);
    const fd = this.#open();
    if (!microsecondWaitMissing) {
      const rc = helper().tp_epoll_wait_us(fd, buffer, maxEvents, timeoutUs);
      if (rc >= 0) return rc;
      if (rc !== -Errno.ENOSYS) throw new NativeError(-rc, `epoll_pwait2(fd ${fd})`);
      microsecondWaitMissing = true;
    }
    return this.wait(buffer, maxEvents, timeoutUs < 0 ? -1 : Math.ceil(timeoutUs / 1000));
  }

  /**
   * Waits on a Deno worker thread without blocking the JS thread. `buffer` must stay
   * untouched until the promise settles. A pending wait cannot be cancelled: watch an
   * eventfd and signal it to end the wait early. Resolves to the number of events.
   */
  async waitAsync(buffer: Uint8Array, maxEvents: number, timeoutMs: number): Promise<number> {
    checkCapacity(buffer, maxEvents);
    const fd = this.#open();
    const rc = await helper().tp_epoll_wait_nonblocking(fd, buffer, maxEvents, timeoutMs);
    if (rc < 0) throw new NativeError(-rc, `epoll_wait(fd ${fd})`);
    return rc;
  }

  /** Closes the instance; later calls do nothing. Do not close while a waitAsync is pending. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    helper().tp_close(fd);
  }

  #open(): number {
    if (this.#fd < 0) throw new Error("Cannot use epoll: it is closed");
    return this.#fd;
  }
}

function checkCapacity(buffer: Uint8Array, maxEvents: number): void {
  if (!Number.isInteger(maxEvents) || maxEvents <= 0) {
    throw new RangeError(`Cannot wait for ${maxEvents} events: not a positive integer`);
  }
  if (buffer.byteLength < maxEvents * EPOLL_EVENT_SIZE) {
    throw new RangeError(
      `Cannot wait for ${maxEvents} events: buffer of ${buffer.byteLength} bytes ` +
        `is smaller than ${maxEvents * EPOLL_EVENT_SIZE}`,
    );
  }
}
