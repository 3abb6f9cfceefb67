/**
 * Nonblocking TCP sockets toward the host (native/tcp_socket.c): connect with an
 * optional source address and interface, send/receive without blocking (also over
 * iovec tables, and peeking from SO_PEEK_OFF), drop received bytes without copying
 * them, read queue levels, close with a reset, listen and accept. Readiness is
 * followed by the caller's epoll; nothing here waits. Permission to reach an address is not checked here: callers query Deno's
 * permissions first (src/net/tcp/host_socket.ts).
 *
 * @module
 */
import type { IoVectors } from "./io_vectors.ts";
import { helper } from "./library.ts";
import { addressText } from "./ip_address_text.ts";
import { Errno, NativeError } from "./native_error.ts";

/** Returned by {@link TcpSocket.receive} and {@link TcpSocket.send} when the call would block. */
export const WOULD_BLOCK = -1;

/** recvmsg flag: leave the bytes queued (sys/socket.h MSG_PEEK). */
export const MSG_PEEK = 0x2;

/** How full a socket's queues are ({@link TcpSocket.queues}). */
export interface SocketQueues {
  /** Bytes not yet acknowledged by the peer, sent or not (SIOCOUTQ). */
  sendQueued: number;
  /** Bytes received and not yet read (SIOCINQ). */
  receiveQueued: number;
  /** Size of the send buffer (SO_SNDBUF as getsockopt reports it). */
  sendBuffer: number;
}

/** A socket address as raw bytes: 4 (IPv4) or 16 (IPv6) bytes in network order. */
export interface RawSocketAddress {
  /** 4 or 16 address bytes. */
  readonly address: Uint8Array;
  readonly port: number;
}

/** Where an outbound connection comes from (`-o`, `--outbound-if4/6`). */
export interface ConnectSource {
  /** Source address bytes (same family as the destination), or null for the kernel's choice. */
  readonly address?: Uint8Array | null;
  /** Interface name to bind to (SO_BINDTODEVICE), or null. */
  readonly interfaceName?: string | null;
}

const EMPTY = new Uint8Array(0);
/** Output of tp_tcp_queues, shared: the call is synchronous. */
const queueWords = new Uint32Array(3);
const queueBytes = new Uint8Array(queueWords.buffer);
const NO_INTERFACE = new Uint8Array(1); // "" (NUL only)
const encoder = new TextEncoder();

function cString(text: string | null | undefined): Uint8Array {
  if (!text) return NO_INTERFACE;
  if (text.includes("\0")) {
    throw new RangeError(`Cannot use interface name ${JSON.stringify(text)}`);
  }
  return encoder.encode(text + "\0");
}

function checkAddress(address: Uint8Array, what: string): void {
  if (address.byteLength !== 4 && address.byteLength !== 16) {
    throw new RangeError(`Cannot ${what}: an address has 4 or 16 bytes, got ${address.byteLength}`);
  }
}

function checkPort(port: number, what: string): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`Cannot ${what}: port ${port} is not 0..65535`);
  }
}

/** A connected (or connecting) nonblocking TCP socket. */
export class TcpSocket {
  #fd: number;

  /** Takes ownership of `fd`. */
  private constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * Starts connecting to `destination`; the socket becomes writable when the
   * connect finished, and {@link takeError} then says how.
   * @throws NativeError when the connect fails at once (bind refused, no route...)
   */
  static connect(destination: RawSocketAddress, source: ConnectSource = {}): TcpSocket {
    const what = `connect to ${addressText(destination.address)} port ${destination.port}`;
    checkAddress(destination.address, what);
    checkPort(destination.port, what);
    const from = source.address ?? EMPTY;
    if (from.byteLength !== 0 && from.byteLength !== destination.address.byteLength) {
      throw new RangeError(`Cannot ${what}: the source address is of another family`);
    }
    const rc = helper().tp_tcp_connect(
      destination.address,
      destination.address.byteLength,
      destination.port,
      0,
      from,
      from.byteLength,
      cString(source.interfaceName),
    );
    if (rc < 0) throw new NativeError(-rc, what);
    return new TcpSocket(rc);
  }

  /** Wraps a connection returned by {@link TcpListenSocket.accept}. */
  static fromAccepted(fd: number): TcpSocket {
    return new TcpSocket(fd);
  }

  /** The descriptor, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /** Takes the pending socket error (SO_ERROR): null when there is none. */
  takeError(): NativeError | null {
    const rc = helper().tp_socket_error(this.#open());
    return rc < 0 ? new NativeError(-rc, `socket ${this.#fd}`) : null;
  }

  /**
   * Receives into `buf`: the byte count, 0 at the end of the peer's stream, or
   * {@link WOULD_BLOCK}.
   * @throws NativeError (ECONNRESET when the peer reset the connection)
   */
  receive(buf: Uint8Array): number {
    if (buf.byteLength === 0) throw new RangeError("Cannot receive into an empty buffer");
    const rc = helper().tp_recv(this.#open(), buf, buf.byteLength);
    if (rc >= 0) return rc;
    if (rc === -Errno.EAGAIN) return WOULD_BLOCK;
    throw new NativeError(-rc, `recv(socket ${this.#fd})`);
  }

  /**
   * Sends from `buf`: the bytes the kernel took (possibly fewer), or {@link WOULD_BLOCK}.
   * @throws NativeError (EPIPE, ECONNRESET...)
   */
  send(buf: Uint8Array): number {
    const rc = helper().tp_send(this.#open(), buf, buf.byteLength);
    if (rc >= 0) return rc;
    if (rc === -Errno.EAGAIN) return WOULD_BLOCK;
    throw new NativeError(-rc, `send(socket ${this.#fd})`);
  }

  /**
   * Receives into the views of `vectors`, or with `peek` copies without dequeuing
   * (from the peek offset when one is set, {@link setPeekOffset}): the byte count, 0
   * at the end of the peer's stream, or {@link WOULD_BLOCK}.
   * @throws NativeError (ECONNRESET when the peer reset the connection)
   */
  receiveVectors(vectors: IoVectors, peek: boolean): number {
    if (vectors.totalBytes === 0) throw new RangeError("Cannot receive into no buffer");
    const rc = helper().tp_tcp_recvmsg(
      this.#open(),
      vectors.bytes,
      vectors.count,
      peek ? MSG_PEEK : 0,
    );
    if (rc >= 0) return rc;
    if (rc === -Errno.EAGAIN) return WOULD_BLOCK;
    throw new NativeError(-rc, `recvmsg(socket ${this.#fd})`);
  }

  /**
   * Sends the views of `vectors` in order: the bytes the kernel took (possibly
   * fewer), or {@link WOULD_BLOCK}.
   * @throws NativeError (EPIPE, ECONNRESET...)
   */
  sendVectors(vectors: IoVectors): number {
    const rc = helper().tp_tcp_sendmsg(this.#open(), vectors.bytes, vectors.count, 0);
    if (rc >= 0) return rc;
    if (rc === -Errno.EAGAIN) return WOULD_BLOCK;
    throw new NativeError(-rc, `sendmsg(socket ${this.#fd})`);
  }

  /**
   * Drops up to `length` bytes from the front of the receive queue without copying
   * them (MSG_TRUNC): the bytes dropped, 0 at the end of stream, or {@link WOULD_BLOCK}.
   * A peek offset moves back by as much.
   * @throws NativeError
   */
  discard(length: number): number {
    const rc = helper().tp_tcp_discard(this.#open(), length);
    if (rc >= 0) return rc;
    if (rc === -Errno.EAGAIN) return WOULD_BLOCK;
    throw new NativeError(-rc, `recv(socket ${this.#fd}, MSG_TRUNC)`);
  }

  /**
   * Sets where the next peek starts, in bytes from the front of the receive queue
   * (SO_PEEK_OFF; -1 turns it off). Each peek then moves it on by what it returned.
   * @returns false when the kernel's TCP has no peek offset (Linux before 6.9)
   * @throws NativeError for other failures
   */
  setPeekOffset(offset: number): boolean {
    const rc = helper().tp_tcp_set_peek_offset(this.#open(), offset);
    if (rc === 0) return true;
    if (rc === -Errno.EOPNOTSUPP || rc === -Errno.ENOPROTOOPT) return false;
    throw new NativeError(-rc, `setsockopt(socket ${this.#fd}, SO_PEEK_OFF)`);
  }

  /**
   * Fills `out` with how full the socket's queues are.
   * @throws NativeError
   */
  queues(out: SocketQueues): void {
    const words = queueWords;
    const rc = helper().tp_tcp_queues(this.#open(), queueBytes);
    if (rc < 0) throw new NativeError(-rc, `ioctl(socket ${this.#fd}, SIOCOUTQ/SIOCINQ)`);
    out.sendQueued = words[0];
    out.receiveQueued = words[1];
    out.sendBuffer = words[2];
  }

  /**
   * Bytes in the send queue, sent and not yet acknowledged or not yet sent (SIOCOUTQ):
   * {@link queues}' `sendQueued` in one system call instead of three.
   * @throws NativeError
   */
  sendQueued(): number {
    const rc = helper().tp_tcp_send_queued(this.#open());
    if (rc < 0) throw new NativeError(-rc, `ioctl(socket ${this.#fd}, SIOCOUTQ)`);
    return rc;
  }

  /**
   * Sets the receive and send buffer sizes (SO_RCVBUF, SO_SNDBUF; 0 leaves one as it
   * is, autotuned). The kernel caps them at net.core.rmem_max / wmem_max.
   * @throws NativeError
   */
  setBuffers(receive: number, send: number): void {
    const rc = helper().tp_socket_set_buffers(this.#open(), receive, send);
    if (rc < 0) throw new NativeError(-rc, `setsockopt(socket ${this.#fd}, SO_RCVBUF/SO_SNDBUF)`);
  }

  /** Ends our direction of the stream (the peer reads end of stream: FIN). */
  shutdownWrite(): void {
    const SHUT_WR = 1; // sys/socket.h
    const rc = helper().tp_shutdown(this.#open(), SHUT_WR);
    if (rc < 0) throw new NativeError(-rc, `shutdown(socket ${this.#fd}, SHUT_WR)`);
  }

  /** The local address and port. */
  localAddress(): RawSocketAddress {
    return socketLocalAddress(this.#open());
  }

  /** Closes the socket (FIN after unsent data); later calls do nothing. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    helper().tp_close(fd);
  }

  /** Closes the socket so that the peer gets a RST; later calls do nothing. */
  closeWithReset(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    helper().tp_tcp_close_reset(fd);
  }

  #open(): number {
    if (this.#fd < 0) throw new Error("Cannot use the TCP socket: it is closed");
    return this.#fd;
  }
}

/** tp_tcp_listen flag (tpasst_helper.h): IP_FREEBIND / IPV6_FREEBIND. */
const TP_LISTEN_FREEBIND = 1;

/** Whether listeners get IP_FREEBIND unless told otherwise (`--freebind`). */
let freebindByDefault = false;

/**
 * Makes every later {@link TcpListenSocket.listen} that does not say otherwise set
 * IP_FREEBIND (`--freebind`: forwards may bind an address the host does not have yet).
 */
export function setListenFreebind(enabled: boolean): void {
  freebindByDefault = enabled;
}

/** A nonblocking listening TCP socket. */
export class TcpListenSocket {
  #fd: number;
  readonly #peer = new Uint8Array(16);
  readonly #meta = new Uint32Array(2);

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * Listens on `local` (all-zero address bytes for any), optionally only on interface
   * `interfaceName`; with `freebind` (default: see {@link setListenFreebind}) the
   * address need not be configured on the host.
   * @throws NativeError (EADDRINUSE, EACCES, EADDRNOTAVAIL...)
   */
  static listen(
    local: RawSocketAddress,
    interfaceName: string | null = null,
    backlog = 128,
    freebind: boolean = freebindByDefault,
  ): TcpListenSocket {
    const what = `listen on ${addressText(local.address)} port ${local.port}`;
    checkAddress(local.address, what);
    checkPort(local.port, what);
    const rc = helper().tp_tcp_listen(
      local.address,
      local.address.byteLength,
      local.port,
      0,
      cString(interfaceName),
      backlog,
      freebind ? TP_LISTEN_FREEBIND : 0,
    );
    if (rc < 0) throw new NativeError(-rc, what);
    return new TcpListenSocket(rc);
  }

  /** The descriptor, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /** The local address and port (the port the kernel chose for port 0). */
  localAddress(): RawSocketAddress {
    return socketLocalAddress(this.#open());
  }

  /**
   * Accepts one pending connection with its peer address, or returns null when none
   * is pending.
   * @throws NativeError (EMFILE...)
   */
  accept(): { socket: TcpSocket; peer: RawSocketAddress } | null {
    let rc = helper().tp_tcp_accept(this.#open(), this.#peer, new Uint8Array(this.#meta.buffer));
    // A connection aborted while queued is gone; the next one may be right behind it.
    while (rc === -Errno.ECONNABORTED) {
      rc = helper().tp_tcp_accept(this.#fd, this.#peer, new Uint8Array(this.#meta.buffer));
    }
    if (rc < 0) {
      if (rc === -Errno.EAGAIN) return null;
      throw new NativeError(-rc, `accept(socket ${this.#fd})`);
    }
    return {
      socket: TcpSocket.fromAccepted(rc),
      peer: { address: this.#peer.slice(0, this.#meta[0]), port: this.#meta[1] },
    };
  }

  /** Stops listening; later calls do nothing. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    helper().tp_close(fd);
  }

  #open(): number {
    if (this.#fd < 0) throw new Error("Cannot use the listening socket: it is closed");
    return this.#fd;
  }
}

/** The local address and port of any socket `fd` (getsockname). */
export function socketLocalAddress(fd: number): RawSocketAddress {
  const address = new Uint8Array(16);
  const meta = new Uint32Array(2);
  const rc = helper().tp_socket_local_address(fd, address, new Uint8Array(meta.buffer));
  if (rc < 0) throw new NativeError(-rc, `getsockname(socket ${fd})`);
  return { address: address.slice(0, meta[0]), port: meta[1] };
}
