/**
 * Unprivileged ICMP / ICMPv6 echo ("ping") sockets for the guest's pings.
 *
 * The kernel allows them only to groups in net.ipv4.ping_group_range (default
 * "1 0": nobody); then {@link PingSocket.open} throws a NativeError with errno EACCES.
 * The kernel rewrites the echo identifier to the socket's own.
 *
 * @module
 */
import { helper } from "./library.ts";
import { Errno, NativeError } from "./native_error.ts";

/** Result of {@link PingSocket.receive}. */
export interface PingReply {
  /** Bytes of the ICMP message stored in the buffer (header included). */
  length: number;
  /** The source address, 4 or 16 bytes (a fresh copy). */
  address: Uint8Array;
}

/** A nonblocking SOCK_DGRAM ICMP (family 4) or ICMPv6 (family 6) socket. */
export class PingSocket {
  #fd: number;
  readonly #family: 4 | 6;
  readonly #address = new Uint8Array(16);
  readonly #meta = new Uint32Array(2);

  private constructor(fd: number, family: 4 | 6) {
    this.#fd = fd;
    this.#family = family;
  }

  /**
   * Opens a ping socket.
   * @throws NativeError with errno EACCES when ping_group_range forbids it
   */
  static open(family: 4 | 6): PingSocket {
    if (family !== 4 && family !== 6) {
      throw new RangeError(`Cannot open a ping socket for family ${family}: use 4 or 6`);
    }
    const rc = helper().tp_ping_open(family);
    if (rc < 0) throw new NativeError(-rc, `ping_open(IPv${family})`);
    return new PingSocket(rc, family);
  }

  /** The descriptor, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /** 4 or 6. */
  get family(): 4 | 6 {
    return this.#family;
  }

  /**
   * Sends an ICMP echo request (`payload` starts with the ICMP header) to
   * `address` (4 bytes for IPv4, 16 for IPv6). Returns the bytes sent, or -1 when the
   * socket buffer is full.
   * @throws NativeError for other failures (ENETUNREACH...)
   */
  sendTo(payload: Uint8Array, address: Uint8Array, scopeId = 0): number {
    const expected = this.#family === 4 ? 4 : 16;
    if (address.byteLength !== expected) {
      throw new RangeError(
        `Cannot ping: an IPv${this.#family} address has ${expected} bytes, got ${address.byteLength}`,
      );
    }
    const rc = helper().tp_ping_sendto(
      this.#open(),
      payload,
      payload.byteLength,
      address,
      address.byteLength,
      scopeId,
    );
    if (rc >= 0) return rc;
    if (rc === -Errno.EAGAIN) return -1;
    throw new NativeError(-rc, `ping_sendto(fd ${this.#fd})`);
  }

  /**
   * Receives one ICMP message (header included) into `buf`, or returns null when
   * nothing is pending.
   */
  receive(buf: Uint8Array): PingReply | null {
    const rc = helper().tp_ping_recvfrom(
      this.#open(),
      buf,
      buf.byteLength,
      this.#address,
      new Uint8Array(this.#meta.buffer),
    );
    if (rc < 0) {
      if (rc === -Errno.EAGAIN) return null;
      throw new NativeError(-rc, `ping_recvfrom(fd ${this.#fd})`);
    }
    return { length: rc, address: this.#address.slice(0, this.#meta[0]) };
  }

  /** Closes the socket; later calls do nothing. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    helper().tp_close(fd);
  }

  #open(): number {
    if (this.#fd < 0) throw new Error("Cannot use the ping socket: it is closed");
    return this.#fd;
  }
}
