/**
 * An eventfd counter: vhost-user kick/call notifiers and the event loop's stop signal;
 * and {@link describeFd}, which tells whether a received descriptor is an eventfd in
 * normal mode before it is used as one.
 *
 * @module
 */
import { cString, helper } from "./library.ts";
import { readKernelFile } from "./kernel_file.ts";
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

  /**
   * Creates a new nonblocking, close-on-exec eventfd with counter 0. `semaphore`
   * makes an EFD_SEMAPHORE eventfd (each read takes 1 off the counter), which only
   * tests need: the backend refuses those as notifiers.
   */
  static create(options: { readonly semaphore?: boolean } = {}): EventFd {
    const rc = helper().tp_eventfd_create(0, options.semaphore ? 1 : 0);
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

/** What {@link describeFd} found out about a descriptor. */
export interface FdDescription {
  /**
   * True for an eventfd in normal mode: one read returns the whole counter and resets
   * it to 0. Also true, with `verified` false, when /proc cannot tell (see there).
   */
  readonly normalEventFd: boolean;
  /**
   * False when `normalEventFd` is a guess: /proc/self/fd is unavailable and fstat
   * shows only an anonymous inode, or the kernel's fdinfo does not show the eventfd's
   * mode (kernels before the "eventfd-semaphore:" line).
   */
  readonly verified: boolean;
  /** What the descriptor is, for messages: "an eventfd", "a pipe (pipe:[1234])"… */
  readonly text: string;
}

/** File type bits of st_mode and their values (inode(7)). */
const S_IFMT = 0o170000;
const FILE_TYPE_NAMES: ReadonlyMap<number, string> = new Map([
  [0o140000, "a socket"], // S_IFSOCK
  [0o120000, "a symbolic link"], // S_IFLNK
  [0o100000, "a regular file"], // S_IFREG
  [0o060000, "a block device"], // S_IFBLK
  [0o040000, "a directory"], // S_IFDIR
  [0o020000, "a character device"], // S_IFCHR
  [0o010000, "a pipe"], // S_IFIFO
]);

/** The /proc/self/fd link of an eventfd (fs/eventfd.c: anon_inode_getfd("[eventfd]")). */
const EVENTFD_LINK = "anon_inode:[eventfd]";
/** Prefix of the /proc/self/fd link of every anonymous inode (timerfd, signalfd, epoll…). */
const ANON_INODE_PREFIX = "anon_inode:";
/** The line of an eventfd's fdinfo that shows EFD_SEMAPHORE (fs/eventfd.c eventfd_show_fdinfo). */
const EVENTFD_SEMAPHORE_LINE = /^eventfd-semaphore:\s*(\d+)\s*$/m;
/** Longest /proc/self/fd link kept (a path is cut there; it is only shown in messages). */
const LINK_LIMIT = 512;
/** Longest fdinfo read: an eventfd's is about 100 bytes. */
const FDINFO_LIMIT = 4096;

/** The target of a symbolic link, or null when it cannot be read (no /proc, EACCES…). */
function readLink(path: string): string | null {
  const buffer = new Uint8Array(LINK_LIMIT);
  const rc = helper().tp_readlink(cString(path), buffer, LINK_LIMIT);
  if (rc < 0) return null;
  return new TextDecoder().decode(buffer.subarray(0, rc));
}

/**
 * Tells what kind of file `fd` is and whether it is an eventfd in normal mode (not
 * EFD_SEMAPHORE), from fstat, the /proc/self/fd/N link ("anon_inode:[eventfd]") and
 * the "eventfd-semaphore:" line of /proc/self/fdinfo/N. Without /proc, an anonymous
 * inode is reported as a normal eventfd with `verified` false.
 * @throws NativeError when `fd` is not open (EBADF)
 */
export function describeFd(fd: number): FdDescription {
  const mode = helper().tp_fd_mode(fd);
  if (mode < 0) throw new NativeError(-mode, `fstat(fd ${fd})`);
  const link = readLink(`/proc/self/fd/${fd}`);
  const type = mode & S_IFMT;
  if (type !== 0) {
    const name = FILE_TYPE_NAMES.get(type) ?? `a file of type 0o${type.toString(8)}`;
    return {
      normalEventFd: false,
      verified: true,
      text: link === null ? name : `${name} (${link})`,
    };
  }
  if (link === null) {
    return {
      normalEventFd: true,
      verified: false,
      text: "an anonymous inode (without /proc/self/fd, not known to be an eventfd)",
    };
  }
  if (link !== EVENTFD_LINK) {
    const kind = link.startsWith(ANON_INODE_PREFIX)
      ? link.slice(ANON_INODE_PREFIX.length).replace(/^\[(.*)\]$/, "$1")
      : link;
    return {
      normalEventFd: false,
      verified: true,
      text: `an anonymous inode of kind ${kind} (${link})`,
    };
  }
  let fdinfo: string | null = null;
  try {
    fdinfo = readKernelFile(`/proc/self/fdinfo/${fd}`, FDINFO_LIMIT);
  } catch {
    // unreadable fdinfo: the mode stays unknown
  }
  const semaphore = fdinfo?.match(EVENTFD_SEMAPHORE_LINE);
  if (semaphore === null || semaphore === undefined) {
    return {
      normalEventFd: true,
      verified: false,
      text: "an eventfd (its mode is not shown in fdinfo)",
    };
  }
  if (semaphore[1] !== "0") {
    return {
      normalEventFd: false,
      verified: true,
      text: "a semaphore-mode eventfd (EFD_SEMAPHORE)",
    };
  }
  return { normalEventFd: true, verified: true, text: "an eventfd" };
}
