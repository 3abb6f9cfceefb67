/**
 * Nonblocking UDP sockets toward the host (native/udp_socket.c): open with an
 * optional local address, port and interface, and move datagrams in batches — one
 * recvmmsg / sendmmsg per batch — through one flat payload buffer described by
 * {@link UdpMessageRecords}. Readiness is followed by the caller's epoll; nothing here
 * waits. A socket may be connected to one peer ({@link UdpSocket.connect}); records
 * with no address then go to that peer. Permission to reach an address is not checked
 * here: callers query Deno's permissions first (src/net/udp/translator.ts).
 *
 * @module
 */
import { helper } from "./library.ts";
import { Errno, NativeError } from "./native_error.ts";
import { type RawSocketAddress, socketLocalAddress, WOULD_BLOCK } from "./tcp_socket.ts";
import { addressText } from "./ip_address_text.ts";
import { SO_REUSEADDR, SOL_SOCKET } from "./tcp_repair.ts";

/** Most datagrams one batch moves (TP_UDP_MAX_BATCH, native/tpasst_helper.h). */
export const UDP_MAX_BATCH = 64;

/** Byte offsets in one message record (TP_UDP_RECORD_*, native/tpasst_helper.h). */
const RECORD_OFFSET = 0;
const RECORD_LENGTH = 4;
const RECORD_FLAGS = 8;
const RECORD_ADDR_LEN = 12;
const RECORD_PORT = 16;
const RECORD_SCOPE = 20;
const RECORD_ADDR = 24;
/** Sent: UDP_SEGMENT size of a segmented message, 0 for one datagram. */
const RECORD_SEGMENT = 40;
/** Bytes per message record (TP_UDP_RECORD_SIZE). */
export const UDP_RECORD_SIZE = 44;
const RECORD_WORDS = UDP_RECORD_SIZE / 4;
/** TP_UDP_TRUNCATED: the datagram was longer than its slot. */
const FLAG_TRUNCATED = 1;

/** Flags of tp_udp_open (native/tpasst_helper.h). */
const TP_UDP_V6ONLY = 1;
const TP_UDP_REUSEADDR = 2;

/**
 * Most datagrams one segmented message carries (TP_UDP_MAX_SEGMENTS: the kernel's
 * UDP_MAX_SEGMENTS, include/linux/udp.h).
 */
export const UDP_MAX_SEGMENTS = 64;
/**
 * Most payload bytes one segmented message carries: those of one UDP datagram over
 * IPv4 (65,535 − 20 bytes of IP header − 8 of UDP header); the kernel refuses more
 * (EMSGSIZE).
 */
export const UDP_MAX_SEGMENTED_PAYLOAD = 65_507;

const NO_INTERFACE = new Uint8Array(1); // "" (NUL only)
const NO_ADDRESS = new Uint8Array(0);
const encoder = new TextEncoder();

/**
 * The message records of a batch, in the helper's layout: per message the payload's
 * offset and length in the batch buffer, a truncation flag (received), the peer's
 * address (source when received, destination when sent) and, sent, a segment size:
 * a message the kernel cuts into datagrams of that size (UDP GSO, `UDP_SEGMENT`,
 * man 7 udp). Reused from batch to batch.
 */
export class UdpMessageRecords {
  /** The records as bytes, for the helper. */
  readonly bytes: Uint8Array;
  /** How many records fit. */
  readonly capacity: number;
  /** The same memory as 32-bit words in host byte order, as the helper reads them. */
  readonly #words: Uint32Array;

  /** Room for `capacity` records (1..{@link UDP_MAX_BATCH} per call; more may be kept). */
  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`Cannot hold ${capacity} UDP message records: need at least 1`);
    }
    this.capacity = capacity;
    this.bytes = new Uint8Array(capacity * UDP_RECORD_SIZE);
    this.#words = new Uint32Array(this.bytes.buffer);
  }

  /** Offset of message `i`'s payload in the batch buffer. */
  offset(i: number): number {
    return this.#words[i * RECORD_WORDS + RECORD_OFFSET / 4];
  }

  /** Length of message `i`'s payload (bytes stored, for a received one). */
  length(i: number): number {
    return this.#words[i * RECORD_WORDS + RECORD_LENGTH / 4];
  }

  /** Whether received message `i` was longer than its slot and was cut. */
  truncated(i: number): boolean {
    return (this.#words[i * RECORD_WORDS + RECORD_FLAGS / 4] & FLAG_TRUNCATED) !== 0;
  }

  /** Segment size of message `i` to send: 0 for one datagram, else its datagrams' size. */
  segmentSize(i: number): number {
    return this.#words[i * RECORD_WORDS + RECORD_SEGMENT / 4];
  }

  /** How many datagrams message `i` to send carries (1 unless it is segmented). */
  datagrams(i: number): number {
    const segment = this.segmentSize(i);
    return segment === 0 ? 1 : Math.ceil(this.length(i) / segment);
  }

  /**
   * Makes message `i` to send `length` payload bytes cut into datagrams of `segmentSize`
   * bytes (the last possibly shorter) by the kernel; 0 makes it one datagram again.
   * The caller keeps to {@link UDP_MAX_SEGMENTS} and {@link UDP_MAX_SEGMENTED_PAYLOAD}.
   */
  setSegments(i: number, length: number, segmentSize: number): void {
    const base = i * RECORD_WORDS;
    this.#words[base + RECORD_LENGTH / 4] = length;
    this.#words[base + RECORD_SEGMENT / 4] = segmentSize;
  }

  /** Length of message `i`'s address: 4 (IPv4) or 16 (IPv6); 0 when unknown. */
  addressLength(i: number): number {
    return this.#words[i * RECORD_WORDS + RECORD_ADDR_LEN / 4];
  }

  /** Port of message `i`'s peer. */
  port(i: number): number {
    return this.#words[i * RECORD_WORDS + RECORD_PORT / 4];
  }

  /** IPv6 scope id of message `i`'s peer. */
  scopeId(i: number): number {
    return this.#words[i * RECORD_WORDS + RECORD_SCOPE / 4];
  }

  /** Where message `i`'s address bytes start in {@link bytes}. */
  addressOffset(i: number): number {
    return i * UDP_RECORD_SIZE + RECORD_ADDR;
  }

  /** A copy of message `i`'s address bytes (4 or 16). */
  address(i: number): Uint8Array {
    const at = this.addressOffset(i);
    return this.bytes.slice(at, at + this.addressLength(i));
  }

  /** Whether message `i`'s address is `address` (4 or 16 bytes) and its port `port`. */
  peerIs(i: number, address: Uint8Array, port: number): boolean {
    const length = address.byteLength;
    if (this.port(i) !== port || this.addressLength(i) !== length) return false;
    const b = this.bytes;
    const at = this.addressOffset(i);
    for (let k = 0; k < length; k++) if (b[at + k] !== address[k]) return false;
    return true;
  }

  /**
   * Describes message `i` to send: `length` payload bytes at `offset` of the batch
   * buffer, to `address` (4 or 16 bytes) port `port`.
   */
  set(
    i: number,
    offset: number,
    length: number,
    address: Uint8Array,
    port: number,
    scopeId = 0,
  ): void {
    const w = this.#words;
    const base = i * RECORD_WORDS;
    w[base + RECORD_OFFSET / 4] = offset;
    w[base + RECORD_LENGTH / 4] = length;
    w[base + RECORD_FLAGS / 4] = 0;
    w[base + RECORD_ADDR_LEN / 4] = address.byteLength;
    w[base + RECORD_PORT / 4] = port;
    w[base + RECORD_SCOPE / 4] = scopeId;
    w[base + RECORD_SEGMENT / 4] = 0;
    this.bytes.set(address, this.addressOffset(i));
  }

  /**
   * Describes message `i` to send to the connected peer of the socket that sends it:
   * `length` payload bytes at `offset` of the batch buffer, no address (ADDR_LEN 0).
   */
  setToPeer(i: number, offset: number, length: number): void {
    const w = this.#words;
    const base = i * RECORD_WORDS;
    w[base + RECORD_OFFSET / 4] = offset;
    w[base + RECORD_LENGTH / 4] = length;
    w[base + RECORD_FLAGS / 4] = 0;
    w[base + RECORD_ADDR_LEN / 4] = 0;
    w[base + RECORD_PORT / 4] = 0;
    w[base + RECORD_SCOPE / 4] = 0;
    w[base + RECORD_SEGMENT / 4] = 0;
  }

  /** Copies record `from` of `source` to record `to` of this set. */
  copyFrom(source: UdpMessageRecords, from: number, to: number): void {
    const at = from * UDP_RECORD_SIZE;
    this.bytes.set(source.bytes.subarray(at, at + UDP_RECORD_SIZE), to * UDP_RECORD_SIZE);
  }
}

/** How {@link UdpSocket.open} sets a socket up. */
export interface UdpOpenOptions {
  /** Local address bytes to bind to (4 or 16, of the socket's family; all zero for any). */
  readonly address?: Uint8Array | null;
  /** Local port to bind (0: the kernel's choice; needs `address`). */
  readonly port?: number;
  /** IPv6 scope id of a link-local `address`. */
  readonly scopeId?: number;
  /** Interface to bind to (SO_BINDTODEVICE), or null. */
  readonly interfaceName?: string | null;
  /** IPv6 only: IPV6_V6ONLY on (without it the host's net.ipv6.bindv6only decides). */
  readonly v6Only?: boolean;
  /** SO_REUSEADDR before binding. */
  readonly reuseAddress?: boolean;
}

function interfaceBytes(name: string | null | undefined): Uint8Array {
  if (!name) return NO_INTERFACE;
  if (name.includes("\0")) {
    throw new RangeError(`Cannot use interface name ${JSON.stringify(name)}`);
  }
  return encoder.encode(name + "\0");
}

function checkCount(count: number, limit: number, what: string): void {
  if (!Number.isInteger(count) || count < 1 || count > limit) {
    throw new RangeError(`Cannot ${what} ${count} datagrams: 1..${limit} per batch`);
  }
}

/** A nonblocking UDP socket of the helper. */
export class UdpSocket {
  #fd: number;
  readonly #family: 4 | 6;

  /** Takes ownership of `fd`. */
  private constructor(fd: number, family: 4 | 6) {
    this.#fd = fd;
    this.#family = family;
  }

  /**
   * Opens a UDP socket of `family`, bound to `options.address`:`options.port` when an
   * address is given (else the kernel binds an ephemeral port at the first send).
   * @throws RangeError for bad arguments, NativeError (EADDRINUSE, ENODEV for an
   * unknown interface, EPERM...)
   */
  static open(family: 4 | 6, options: UdpOpenOptions = {}): UdpSocket {
    const address = options.address ?? NO_ADDRESS;
    const port = options.port ?? 0;
    const where = address.byteLength ? ` on ${addressText(address)} port ${port}` : "";
    const what = `open a UDP socket${where}`;
    if (family !== 4 && family !== 6) {
      throw new RangeError(`Cannot ${what}: family ${family} is not 4 or 6`);
    }
    if (address.byteLength !== 0 && address.byteLength !== (family === 4 ? 4 : 16)) {
      throw new RangeError(
        `Cannot ${what}: an IPv${family} address has ${family === 4 ? 4 : 16} bytes, ` +
          `got ${address.byteLength}`,
      );
    }
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new RangeError(`Cannot ${what}: port ${port} is not 0..65535`);
    }
    if (port !== 0 && address.byteLength === 0) {
      throw new RangeError(`Cannot ${what}: port ${port} needs a local address`);
    }
    if (options.v6Only && family !== 6) {
      throw new RangeError(`Cannot ${what}: v6Only is for IPv6 sockets`);
    }
    const flags = (options.v6Only ? TP_UDP_V6ONLY : 0) |
      (options.reuseAddress ? TP_UDP_REUSEADDR : 0);
    const rc = helper().tp_udp_open(
      family,
      address,
      address.byteLength,
      port,
      options.scopeId ?? 0,
      interfaceBytes(options.interfaceName),
      flags,
    );
    if (rc < 0) {
      const on = options.interfaceName ? ` (interface ${options.interfaceName})` : "";
      throw new NativeError(-rc, `${what}${on}`);
    }
    return new UdpSocket(rc, family);
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
   * Receives up to `slots` datagrams, datagram i into `buffer` at i × `slotSize`, and
   * describes them in `records` (length, truncation, source). Returns how many were
   * received, or {@link WOULD_BLOCK} when none is pending.
   * @throws RangeError for bad sizes, NativeError for a socket error
   */
  receiveBatch(
    buffer: Uint8Array,
    slotSize: number,
    records: UdpMessageRecords,
    slots: number = Math.min(records.capacity, UDP_MAX_BATCH),
  ): number {
    checkCount(slots, Math.min(records.capacity, UDP_MAX_BATCH), "receive");
    if (!Number.isInteger(slotSize) || slotSize < 1 || slotSize * slots > buffer.byteLength) {
      throw new RangeError(
        `Cannot receive ${slots} datagrams of ${slotSize} bytes into ${buffer.byteLength} bytes`,
      );
    }
    const rc = helper().tp_udp_recv_batch(this.#open(), buffer, slotSize, slots, records.bytes);
    if (rc >= 0) return rc;
    if (rc === -Errno.EAGAIN) return WOULD_BLOCK;
    throw new NativeError(-rc, `recvmmsg(socket ${this.#fd})`);
  }

  /**
   * Sends the `count` datagrams described by `records` from index `first` (payloads in
   * `buffer`), in order; a record without an address goes to the connected peer, a
   * segmented one ({@link UdpMessageRecords.setSegments}) leaves as its datagrams.
   * Returns how many records the kernel took (>= 1; the first refused one ends the
   * batch and its error comes with the next call), or {@link WOULD_BLOCK} when the
   * socket buffer is full.
   * @throws RangeError for bad counts, NativeError when the first record is refused
   * (EINVAL for a record outside `buffer`, EMSGSIZE, ENETUNREACH, EPERM...; EIO,
   * EINVAL or ENOPROTOOPT when the kernel cannot send a segmented message so)
   */
  sendBatch(buffer: Uint8Array, records: UdpMessageRecords, count: number, first = 0): number {
    checkCount(count, UDP_MAX_BATCH, "send");
    if (!Number.isInteger(first) || first < 0 || first + count > records.capacity) {
      throw new RangeError(
        `Cannot send records ${first}..${first + count - 1}: only ${records.capacity} exist`,
      );
    }
    const described = first === 0 ? records.bytes : records.bytes.subarray(first * UDP_RECORD_SIZE);
    const rc = helper().tp_udp_send_batch(
      this.#open(),
      buffer,
      buffer.byteLength,
      described,
      count,
    );
    if (rc >= 0) return rc;
    if (rc === -Errno.EAGAIN) return WOULD_BLOCK;
    throw new NativeError(-rc, `sendmmsg(socket ${this.#fd})`);
  }

  /**
   * Connects the socket to `address`:`port` (connect(2)): it then receives only that
   * peer's datagrams (the kernel prefers it over an unconnected socket on the same
   * port), sends records without an address there ({@link UdpMessageRecords.setToPeer})
   * over the route chosen now, and reports ICMP errors from the peer (ECONNREFUSED...)
   * as a pending error, returned by the next send or receive or {@link takeError}.
   * An unbound socket gets an ephemeral port; one bound to any address gets the
   * route's source address.
   * @throws RangeError for a bad address or port, NativeError (ENETUNREACH, EACCES for
   * a broadcast address...)
   */
  connect(address: Uint8Array, port: number, scopeId = 0): void {
    if (address.byteLength !== (this.#family === 4 ? 4 : 16)) {
      throw new RangeError(
        `Cannot connect an IPv${this.#family} UDP socket to a ${address.byteLength}-byte address`,
      );
    }
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new RangeError(`Cannot connect a UDP socket to port ${port}: not 1..65535`);
    }
    const rc = helper().tp_socket_connect(this.#open(), address, address.byteLength, port, scopeId);
    if (rc < 0) {
      throw new NativeError(
        -rc,
        `connect(socket ${this.#fd}, ${addressText(address)} port ${port})`,
      );
    }
  }

  /**
   * Lets later sockets opened with `reuseAddress` bind this socket's address and port
   * (SO_REUSEADDR set after binding: this socket's own bind still failed if the port
   * was taken, and sockets without the option still cannot share it).
   * @throws NativeError
   */
  sharePort(): void {
    const rc = helper().tp_setsockopt_int(this.#open(), SOL_SOCKET, SO_REUSEADDR, 1);
    if (rc < 0) throw new NativeError(-rc, `setsockopt(socket ${this.#fd}, SO_REUSEADDR)`);
  }

  /** Takes the pending socket error (SO_ERROR): null when there is none. */
  takeError(): NativeError | null {
    const rc = helper().tp_socket_error(this.#open());
    return rc < 0 ? new NativeError(-rc, `socket ${this.#fd}`) : null;
  }

  /** The local address and port (the port the kernel chose for 0). */
  localAddress(): RawSocketAddress {
    return socketLocalAddress(this.#open());
  }

  /**
   * Sets the receive and send buffer sizes (SO_RCVBUF, SO_SNDBUF; 0 leaves one as it
   * is). The kernel caps them at net.core.rmem_max / wmem_max and doubles them.
   * @throws NativeError
   */
  setBuffers(receive: number, send: number): void {
    const rc = helper().tp_socket_set_buffers(this.#open(), receive, send);
    if (rc < 0) throw new NativeError(-rc, `setsockopt(socket ${this.#fd}, SO_RCVBUF/SO_SNDBUF)`);
  }

  /** Closes the socket; later calls do nothing. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    helper().tp_close(fd);
  }

  #open(): number {
    if (this.#fd < 0) throw new Error("Cannot use the UDP socket: it is closed");
    return this.#fd;
  }
}
