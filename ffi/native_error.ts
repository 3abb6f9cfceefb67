/**
 * Errors from the C helper: every helper function returns `-errno` on failure,
 * which {@link check} turns into a {@link NativeError}.
 *
 * @module
 */

/** Linux x86_64 errno values (asm-generic/errno-base.h, errno.h) by name. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  EPIPE: 32,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENOTSOCK: 88,
  EDESTADDRREQ: 89,
  EMSGSIZE: 90,
  EPROTOTYPE: 91,
  ENOPROTOOPT: 92,
  EPROTONOSUPPORT: 93,
  ESOCKTNOSUPPORT: 94,
  EOPNOTSUPP: 95,
  EPFNOSUPPORT: 96,
  EAFNOSUPPORT: 97,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ENETUNREACH: 101,
  ENETRESET: 102,
  ECONNABORTED: 103,
  ECONNRESET: 104,
  ENOBUFS: 105,
  EISCONN: 106,
  ENOTCONN: 107,
  ESHUTDOWN: 108,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EHOSTDOWN: 112,
  EHOSTUNREACH: 113,
  EALREADY: 114,
  EINPROGRESS: 115,
} as const;

const NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(Errno).map(([name, value]) => [value, name]),
);

/** Returns the symbolic name of a positive errno value, e.g. 11 → "EAGAIN". */
export function errnoName(errno: number): string {
  return NAMES.get(errno) ?? `errno ${errno}`;
}

/** A helper call failed; carries the errno and the name of the call. */
export class NativeError extends Error {
  /** The positive errno value, e.g. 13. */
  readonly errno: number;
  /** Its symbolic name, e.g. "EACCES". */
  readonly errnoName: string;
  /** The failed call with its salient arguments, e.g. `unix_listen("/tmp/s")`. */
  readonly call: string;

  /** Builds the error for `call` failing with `errno` (positive). */
  constructor(errno: number, call: string) {
    const name = errnoName(errno);
    super(`${call} failed: ${name}`);
    this.name = "NativeError";
    this.errno = errno;
    this.errnoName = name;
    this.call = call;
  }
}

/**
 * Returns `rc` when it is >= 0; throws a {@link NativeError} for a negative
 * (`-errno`) result.
 */
export function check(rc: number, call: string): number {
  if (rc < 0) throw new NativeError(-rc, call);
  return rc;
}
