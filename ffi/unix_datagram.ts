/**
 * A nonblocking AF_UNIX SOCK_DGRAM socket owned by the helper: the connection to the
 * system logger (/dev/log), and the receiver tests put in its place.
 *
 * @module
 */
import { cString, helper } from "./library.ts";
import { Errno, NativeError } from "./native_error.ts";

/** A unix datagram socket, connected (sender) or bound (receiver). */
export class UnixDatagramSocket {
  #fd: number;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * Connects to the datagram socket at `path`.
   * @throws NativeError (ENOENT when nothing is there, ECONNREFUSED when nobody reads)
   */
  static connect(path: string): UnixDatagramSocket {
    const rc = helper().tp_unix_dgram_connect(cString(path));
    if (rc < 0) throw new NativeError(-rc, `unix_dgram_connect(${JSON.stringify(path)})`);
    return new UnixDatagramSocket(rc);
  }

  /**
   * Binds a receiving socket at `path` (which must not exist yet).
   * @throws NativeError (EADDRINUSE...)
   */
  static bind(path: string): UnixDatagramSocket {
    const rc = helper().tp_unix_dgram_bind(cString(path));
    if (rc < 0) throw new NativeError(-rc, `unix_dgram_bind(${JSON.stringify(path)})`);
    return new UnixDatagramSocket(rc);
  }

  /** The descriptor, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /**
   * Sends `data` as one datagram without waiting.
   * @returns false when the receiver's queue is full (EAGAIN): the datagram is dropped
   * @throws NativeError for other failures (ECONNREFUSED once the receiver is gone...)
   */
  send(data: Uint8Array): boolean {
    const rc = helper().tp_send(this.#open("send"), data, data.length);
    if (rc === -Errno.EAGAIN) return false;
    if (rc < 0) throw new NativeError(-rc, "send(unix datagram)");
    return true;
  }

  /**
   * Receives one datagram into `buffer` without waiting.
   * @returns its length (cut to the buffer), or -1 when none is pending
   */
  receive(buffer: Uint8Array): number {
    const rc = helper().tp_recv(this.#open("receive"), buffer, buffer.length);
    if (rc === -Errno.EAGAIN) return -1;
    if (rc < 0) throw new NativeError(-rc, "recv(unix datagram)");
    return rc;
  }

  /** Closes the socket; later calls do nothing. */
  close(): void {
    if (this.#fd < 0) return;
    helper().tp_close(this.#fd);
    this.#fd = -1;
  }

  #open(what: string): number {
    if (this.#fd < 0) throw new Error(`Cannot ${what} on the datagram socket: it is closed`);
    return this.#fd;
  }
}
