/**
 * A listening unix stream socket (the vhost-user or stream socket path QEMU connects to).
 *
 * @module
 */
import { cString, helper } from "./library.ts";
import { Errno, NativeError } from "./native_error.ts";
import { UnixStream } from "./unix_stream.ts";

/** listen() backlog: QEMU connects once; a few slots cover reconnects and probes. */
const LISTEN_BACKLOG = 16;

/** A nonblocking AF_UNIX SOCK_STREAM listener. Closing it does not remove the socket file. */
export class UnixListener {
  #fd: number;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * Binds and listens at `path` (nonblocking). The path must be free: remove a
   * stale socket file first (see {@link unixSocketInUse}).
   * @throws NativeError, e.g. EADDRINUSE when the path exists
   */
  static listen(path: string): UnixListener {
    const rc = helper().tp_unix_listen(cString(path), LISTEN_BACKLOG, 1);
    if (rc < 0) throw new NativeError(-rc, `unix_listen(${JSON.stringify(path)})`);
    return new UnixListener(rc);
  }

  /**
   * Adopts an inherited listening socket (the daemonized child receives its parent's
   * listener by fd number) and makes it nonblocking.
   * @throws NativeError when `fd` is not an open descriptor
   */
  static fromFd(fd: number): UnixListener {
    const rc = helper().tp_set_nonblocking(fd, 1);
    if (rc < 0) throw new NativeError(-rc, `set_nonblocking(fd ${fd})`);
    return new UnixListener(fd);
  }

  /** The listening descriptor (watch it for readability), or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /**
   * Accepts one pending connection as a nonblocking stream, or returns null when
   * none is pending.
   * @throws NativeError for failures other than would-block (e.g. EMFILE)
   */
  accept(): UnixStream | null {
    if (this.#fd < 0) throw new Error("Cannot accept: the unix listener is closed");
    const rc = helper().tp_unix_accept(this.#fd, 1);
    if (rc >= 0) return UnixStream.fromFd(rc);
    if (rc === -Errno.EAGAIN || rc === -Errno.ECONNABORTED || rc === -Errno.EINTR) return null;
    throw new NativeError(-rc, `unix_accept(fd ${this.#fd})`);
  }

  /** Closes the listener; later calls do nothing. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    helper().tp_close(fd);
  }
}

/**
 * Tells whether a live listener owns the socket path `path` (a connection to it
 * succeeds). False for a free path or a stale socket file left by a dead process.
 * @throws NativeError for other failures (e.g. EACCES)
 */
export function unixSocketInUse(path: string): boolean {
  const rc = helper().tp_unix_probe(cString(path));
  if (rc < 0) throw new NativeError(-rc, `unix_probe(${JSON.stringify(path)})`);
  return rc === 1;
}
