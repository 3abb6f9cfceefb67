/**
 * A connected unix stream socket owned by the helper: the vhost-user control
 * connection (with file descriptors passed as SCM_RIGHTS) or passt's stream socket.
 *
 * @module
 */
import { cString, helper } from "./library.ts";
import { Errno, NativeError } from "./native_error.ts";

/** Most descriptors one message can carry (the kernel's SCM_MAX_FD). */
export const MAX_FDS_PER_MESSAGE = 253;

/** Flags of the recv info word (native/tpasst_helper.h). */
const RECV_FDS_DROPPED = 1;
const RECV_CTRUNC = 2;

/** Result of {@link UnixStream.recvWithFds}. */
export interface ReceivedMessage {
  /** Bytes received: 0 = the peer closed the connection, -1 = nothing now (would block). */
  bytes: number;
  /** Descriptors received (now owned by the caller), at most the `maxFds` asked for. */
  fds: number[];
  /** True when descriptors beyond `maxFds` were received and closed, or lost (MSG_CTRUNC). */
  fdsDropped: boolean;
}

/** How {@link UnixStream.shutdown} shuts the socket down. */
export type ShutdownHow = "read" | "write" | "both";

const SHUTDOWN_HOW: Readonly<Record<ShutdownHow, number>> = { read: 0, write: 1, both: 2 };

/** A connected AF_UNIX SOCK_STREAM socket. */
export class UnixStream {
  #fd: number;
  readonly #info = new Uint32Array(2);
  #fdBuffer = new Int32Array(8);

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** Connects (blocking) to the listener at `path`; the stream is blocking. */
  static connect(path: string): UnixStream {
    const rc = helper().tp_unix_connect(cString(path));
    if (rc < 0) throw new NativeError(-rc, `unix_connect(${JSON.stringify(path)})`);
    return new UnixStream(rc);
  }

  /** Adopts an open socket descriptor, e.g. an inherited `--fd 3`; closing the stream closes it. */
  static fromFd(fd: number): UnixStream {
    if (!Number.isInteger(fd) || fd < 0) {
      throw new RangeError(`Cannot adopt fd ${fd}: not a non-negative integer`);
    }
    return new UnixStream(fd);
  }

  /** Creates a connected pair of streams (blocking unless `nonblocking`). */
  static pair(nonblocking = false): [UnixStream, UnixStream] {
    const fds = new Int32Array(2);
    const rc = helper().tp_unix_socketpair(new Uint8Array(fds.buffer), nonblocking ? 1 : 0);
    if (rc < 0) throw new NativeError(-rc, "unix_socketpair");
    return [new UnixStream(fds[0]), new UnixStream(fds[1])];
  }

  /** The descriptor, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /** Sets or clears O_NONBLOCK. */
  setNonBlocking(on: boolean): void {
    const rc = helper().tp_set_nonblocking(this.#openFd("setNonBlocking"), on ? 1 : 0);
    if (rc < 0) throw new NativeError(-rc, `set_nonblocking(fd ${this.#fd})`);
  }

  /**
   * Reads into `buf` (not empty). Returns the byte count, 0 when the peer closed the
   * connection, -1 when a nonblocking socket has nothing now.
   * @throws NativeError for other failures (e.g. ECONNRESET)
   */
  recv(buf: Uint8Array): number {
    if (buf.byteLength === 0) throw new RangeError("Cannot recv into an empty buffer");
    const rc = helper().tp_read(this.#openFd("recv"), buf, buf.byteLength);
    if (rc >= 0) return rc;
    if (rc === -Errno.EAGAIN) return -1;
    throw new NativeError(-rc, `recv(fd ${this.#fd})`);
  }

  /**
   * Reads into `buf` and accepts up to `maxFds` descriptors sent with the data
   * (received descriptors are CLOEXEC and belong to the caller). Descriptors beyond
   * `maxFds` are closed at once and reported through `fdsDropped`.
   * @throws NativeError for failures other than would-block
   */
  recvWithFds(buf: Uint8Array, maxFds: number): ReceivedMessage {
    if (buf.byteLength === 0) throw new RangeError("Cannot recv into an empty buffer");
    if (!Number.isInteger(maxFds) || maxFds < 0) {
      throw new RangeError(`Cannot receive ${maxFds} fds: not a non-negative integer`);
    }
    if (this.#fdBuffer.length < maxFds) {
      this.#fdBuffer = new Int32Array(Math.min(maxFds, MAX_FDS_PER_MESSAGE));
    }
    const capacity = Math.min(maxFds, this.#fdBuffer.length);
    const rc = helper().tp_recv_fds(
      this.#openFd("recvWithFds"),
      buf,
      buf.byteLength,
      new Uint8Array(this.#fdBuffer.buffer),
      capacity,
      new Uint8Array(this.#info.buffer),
    );
    if (rc < 0) {
      if (rc === -Errno.EAGAIN) return { bytes: -1, fds: [], fdsDropped: false };
      throw new NativeError(-rc, `recv_fds(fd ${this.#fd})`);
    }
    const count = this.#info[0];
    const flags = this.#info[1];
    return {
      bytes: rc,
      fds: Array.from(this.#fdBuffer.subarray(0, count)),
      fdsDropped: (flags & (RECV_FDS_DROPPED | RECV_CTRUNC)) !== 0,
    };
  }

  /**
   * Writes `buf` (never raises SIGPIPE). Returns the bytes written, possibly fewer
   * than `buf.length`, or -1 when a nonblocking socket is full.
   * @throws NativeError for other failures (EPIPE when the peer is gone)
   */
  send(buf: Uint8Array): number {
    const rc = helper().tp_send_fds(this.#openFd("send"), buf, buf.byteLength, null, 0);
    if (rc >= 0) return rc;
    if (rc === -Errno.EAGAIN) return -1;
    throw new NativeError(-rc, `send(fd ${this.#fd})`);
  }

  /**
   * Writes `buf` with `fds` attached (the receiver gets duplicates; the caller keeps
   * its own). `buf` must not be empty when `fds` is not. Returns bytes written or -1
   * when a nonblocking socket is full.
   */
  sendWithFds(buf: Uint8Array, fds: number[]): number {
    if (fds.length > MAX_FDS_PER_MESSAGE) {
      throw new RangeError(`Cannot send ${fds.length} fds: at most ${MAX_FDS_PER_MESSAGE}`);
    }
    const fdBytes = fds.length > 0 ? new Uint8Array(Int32Array.from(fds).buffer) : null;
    const rc = helper().tp_send_fds(
      this.#openFd("sendWithFds"),
      buf,
      buf.byteLength,
      fdBytes,
      fds.length,
    );
    if (rc >= 0) return rc;
    if (rc === -Errno.EAGAIN) return -1;
    throw new NativeError(-rc, `send_fds(fd ${this.#fd}, ${fds.length} fds)`);
  }

  /** Shuts down reading, writing or both (the descriptor stays open until close()). */
  shutdown(how: ShutdownHow): void {
    const rc = helper().tp_shutdown(this.#openFd("shutdown"), SHUTDOWN_HOW[how]);
    if (rc < 0) throw new NativeError(-rc, `shutdown(fd ${this.#fd}, ${how})`);
  }

  /** Enables SO_PASSCRED (tests use it to provoke MSG_CTRUNC). */
  setPassCredentials(on: boolean): void {
    const rc = helper().tp_set_passcred(this.#openFd("setPassCredentials"), on ? 1 : 0);
    if (rc < 0) throw new NativeError(-rc, `set_passcred(fd ${this.#fd})`);
  }

  /** Closes the socket; later calls do nothing. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    helper().tp_close(fd);
  }

  #openFd(operation: string): number {
    if (this.#fd < 0) throw new Error(`Cannot ${operation}: the unix stream is closed`);
    return this.#fd;
  }
}
