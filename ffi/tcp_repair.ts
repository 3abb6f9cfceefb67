/**
 * The kernel calls that move a TCP connection from one socket to another
 * (native/socket_options.c): TCP_REPAIR and its companion options (Linux
 * include/uapi/linux/tcp.h), TCP_INFO's option bits, a bare socket bound and
 * connected in separate steps, the peer's address, receiving with MSG_PEEK, and a
 * bounded wait for readability. Each function is one system call on a descriptor the
 * caller owns; what to do with them is src/net/tcp/repair.ts's business.
 *
 * @module
 */
import { helper } from "./library.ts";
import { NativeError } from "./native_error.ts";
import type { RawSocketAddress } from "./tcp_socket.ts";

/** IPPROTO_TCP / SOL_TCP (netinet/in.h). */
export const SOL_TCP = 6;
/** SOL_SOCKET (asm-generic/socket.h). */
export const SOL_SOCKET = 1;
/** SO_REUSEADDR (asm-generic/socket.h). */
export const SO_REUSEADDR = 2;
/** SO_SNDBUF, SO_RCVBUF (asm-generic/socket.h): capped at wmem_max / rmem_max. */
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
/** SO_SNDBUFFORCE, SO_RCVBUFFORCE (asm-generic/socket.h): not capped; need CAP_NET_ADMIN. */
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;
/** SO_PEEK_OFF (asm-generic/socket.h). */
export const SO_PEEK_OFF = 42;
/** TCP_NODELAY (linux/tcp.h). */
export const TCP_NODELAY = 1;
/** TCP_MAXSEG (linux/tcp.h). */
export const TCP_MAXSEG = 2;
/** TCP_INFO (linux/tcp.h). */
export const TCP_INFO = 11;
/** TCP_REPAIR (linux/tcp.h): switch repair mode (needs CAP_NET_ADMIN). */
export const TCP_REPAIR = 19;
/** TCP_REPAIR_QUEUE (linux/tcp.h): which queue TCP_QUEUE_SEQ and send/recv act on. */
export const TCP_REPAIR_QUEUE = 20;
/** TCP_QUEUE_SEQ (linux/tcp.h): the selected queue's sequence number. */
export const TCP_QUEUE_SEQ = 21;
/** TCP_REPAIR_OPTIONS (linux/tcp.h): the options negotiated in the handshake. */
export const TCP_REPAIR_OPTIONS = 22;
/** TCP_TIMESTAMP (linux/tcp.h): the socket's timestamp clock. */
export const TCP_TIMESTAMP = 24;
/** TCP_REPAIR_WINDOW (linux/tcp.h): struct tcp_repair_window. */
export const TCP_REPAIR_WINDOW = 29;

/** TCP_REPAIR values (linux/tcp.h). */
export const TcpRepairMode = {
  ON: 1,
  OFF: 0,
  /** Off without sending a window probe. */
  OFF_NO_WINDOW_PROBE: -1,
} as const;
/** One of {@link TcpRepairMode}. */
export type TcpRepairMode = typeof TcpRepairMode[keyof typeof TcpRepairMode];

/** TCP_REPAIR_QUEUE values (linux/tcp.h). */
export const TcpRepairQueue = { NONE: 0, RECEIVE: 1, SEND: 2 } as const;
/** One of {@link TcpRepairQueue}. */
export type TcpRepairQueue = typeof TcpRepairQueue[keyof typeof TcpRepairQueue];

/** TCP option kinds for TCP_REPAIR_OPTIONS (RFC 9293 §3.2, RFC 7323, RFC 2018). */
export const TcpOptionKind = { MSS: 2, WINDOW: 3, SACK_PERMITTED: 4, TIMESTAMP: 8 } as const;

/** struct tcp_info: tcpi_options (u8) offset. */
const TCPI_OPTIONS = 5;
/** struct tcp_info: tcpi_snd_wscale:4, tcpi_rcv_wscale:4 share this byte (low nibble first). */
const TCPI_WSCALE = 6;
/** Bytes of struct tcp_info read (the fields above and a little more). */
const TCPI_READ = 8;
/** tcpi_options bits (linux/tcp.h TCPI_OPT_*). */
export const TCPI_OPT_TIMESTAMPS = 1;
export const TCPI_OPT_SACK = 2;
export const TCPI_OPT_WSCALE = 4;

/** struct tcp_repair_window: five u32 in host order. */
export interface TcpRepairWindow {
  sndWl1: number;
  sndWnd: number;
  maxWindow: number;
  rcvWnd: number;
  rcvWup: number;
}
const REPAIR_WINDOW_SIZE = 20;

/** What TCP_INFO says of the negotiated options. */
export interface TcpInfoOptions {
  /** tcpi_options: TCPI_OPT_* bits. */
  options: number;
  sndWscale: number;
  rcvWscale: number;
}

const intOut = new Int32Array(1);
const intOutBytes = new Uint8Array(intOut.buffer);

function check(rc: number, what: string): number {
  if (rc < 0) throw new NativeError(-rc, what);
  return rc;
}

/** setsockopt(fd, level, name, &int). */
export function setIntOption(fd: number, level: number, name: number, value: number): void {
  check(
    helper().tp_setsockopt_int(fd, level, name, value),
    `setsockopt(socket ${fd}, ${level}, ${name}, ${value})`,
  );
}

/** getsockopt(fd, level, name) of an int. */
export function getIntOption(fd: number, level: number, name: number): number {
  check(
    helper().tp_getsockopt_int(fd, level, name, intOutBytes),
    `getsockopt(socket ${fd}, ${level}, ${name})`,
  );
  return intOut[0];
}

/** Switches TCP repair mode on `fd` (CAP_NET_ADMIN needed: EPERM otherwise). */
export function setTcpRepair(fd: number, mode: TcpRepairMode): void {
  check(helper().tp_setsockopt_int(fd, SOL_TCP, TCP_REPAIR, mode), `TCP_REPAIR ${mode} on ${fd}`);
}

/** Selects the queue that TCP_QUEUE_SEQ, send and MSG_PEEK receives act on (repair mode). */
export function selectRepairQueue(fd: number, queue: TcpRepairQueue): void {
  setIntOption(fd, SOL_TCP, TCP_REPAIR_QUEUE, queue);
}

/** The selected queue's sequence: write_seq (send) or rcv_nxt (receive). */
export function getQueueSeq(fd: number): number {
  return getIntOption(fd, SOL_TCP, TCP_QUEUE_SEQ) >>> 0;
}

/** Sets the selected queue's sequence (repair mode, before connect). */
export function setQueueSeq(fd: number, seq: number): void {
  setIntOption(fd, SOL_TCP, TCP_QUEUE_SEQ, seq | 0);
}

/** The socket's timestamp clock (TCP_TIMESTAMP). */
export function getTcpTimestamp(fd: number): number {
  return getIntOption(fd, SOL_TCP, TCP_TIMESTAMP) >>> 0;
}

/** Sets the socket's timestamp clock (repair mode). */
export function setTcpTimestamp(fd: number, value: number): void {
  setIntOption(fd, SOL_TCP, TCP_TIMESTAMP, value | 0);
}

/** TCP_REPAIR_WINDOW of a socket in repair mode. */
export function getRepairWindow(fd: number): TcpRepairWindow {
  const words = new Uint32Array(REPAIR_WINDOW_SIZE / 4);
  const n = check(
    helper().tp_getsockopt_bytes(
      fd,
      SOL_TCP,
      TCP_REPAIR_WINDOW,
      new Uint8Array(words.buffer),
      REPAIR_WINDOW_SIZE,
    ),
    `TCP_REPAIR_WINDOW of ${fd}`,
  );
  if (n !== REPAIR_WINDOW_SIZE) {
    throw new Error(`TCP_REPAIR_WINDOW of socket ${fd}: ${n} bytes, not ${REPAIR_WINDOW_SIZE}`);
  }
  return {
    sndWl1: words[0],
    sndWnd: words[1],
    maxWindow: words[2],
    rcvWnd: words[3],
    rcvWup: words[4],
  };
}

/** Sets TCP_REPAIR_WINDOW (repair mode, connected). */
export function setRepairWindow(fd: number, w: TcpRepairWindow): void {
  const words = new Uint32Array([w.sndWl1, w.sndWnd, w.maxWindow, w.rcvWnd, w.rcvWup]);
  check(
    helper().tp_setsockopt_bytes(
      fd,
      SOL_TCP,
      TCP_REPAIR_WINDOW,
      new Uint8Array(words.buffer),
      REPAIR_WINDOW_SIZE,
    ),
    `set TCP_REPAIR_WINDOW on ${fd}`,
  );
}

/** Sets TCP_REPAIR_OPTIONS: pairs of (TcpOptionKind, value) (repair mode, connected). */
export function setRepairOptions(fd: number, options: readonly [number, number][]): void {
  const words = new Uint32Array(options.length * 2);
  options.forEach(([kind, value], i) => {
    words[2 * i] = kind;
    words[2 * i + 1] = value;
  });
  check(
    helper().tp_setsockopt_bytes(
      fd,
      SOL_TCP,
      TCP_REPAIR_OPTIONS,
      new Uint8Array(words.buffer),
      words.byteLength,
    ),
    `TCP_REPAIR_OPTIONS on ${fd}`,
  );
}

/** The negotiated options and window scales from TCP_INFO. */
export function getTcpInfoOptions(fd: number): TcpInfoOptions {
  const info = new Uint8Array(TCPI_READ);
  const n = check(
    helper().tp_getsockopt_bytes(fd, SOL_TCP, TCP_INFO, info, TCPI_READ),
    `TCP_INFO of ${fd}`,
  );
  if (n < TCPI_READ) throw new Error(`TCP_INFO of socket ${fd}: only ${n} bytes`);
  return {
    options: info[TCPI_OPTIONS],
    sndWscale: info[TCPI_WSCALE] & 0xf,
    rcvWscale: info[TCPI_WSCALE] >> 4,
  };
}

/** A new unbound nonblocking TCP socket of `family`. */
export function createTcpSocket(family: 4 | 6): number {
  return check(helper().tp_tcp_socket(family), `socket(IPv${family}, TCP)`);
}

/** bind(2) to `local`. */
export function bindSocket(fd: number, local: RawSocketAddress): void {
  check(
    helper().tp_socket_bind(fd, local.address, local.address.byteLength, local.port, 0),
    `bind(socket ${fd}, port ${local.port})`,
  );
}

/** connect(2) to `peer`: done at once in repair mode. */
export function connectSocket(fd: number, peer: RawSocketAddress): void {
  check(
    helper().tp_socket_connect(fd, peer.address, peer.address.byteLength, peer.port, 0),
    `connect(socket ${fd}, port ${peer.port})`,
  );
}

/** The peer of a connected socket (getpeername). */
export function socketPeerAddress(fd: number): RawSocketAddress {
  const address = new Uint8Array(16);
  const meta = new Uint32Array(2);
  check(
    helper().tp_socket_peer_address(fd, address, new Uint8Array(meta.buffer)),
    `getpeername(socket ${fd})`,
  );
  return { address: address.slice(0, meta[0]), port: meta[1] };
}

/** recv flag: leave the bytes queued (sys/socket.h MSG_PEEK). */
export const MSG_PEEK = 0x2;

/**
 * recv(2) without blocking, with `flags` added: bytes stored, 0 at the end of stream.
 * @throws NativeError (EAGAIN included)
 */
export function receiveWithFlags(fd: number, buf: Uint8Array, flags: number): number {
  return check(helper().tp_recv_flags(fd, buf, buf.byteLength, flags), `recv(socket ${fd})`);
}

/**
 * send(2) without blocking: the bytes the kernel took.
 * @throws NativeError (EAGAIN included)
 */
export function sendBytes(fd: number, buf: Uint8Array): number {
  return check(helper().tp_send(fd, buf, buf.byteLength), `send(socket ${fd})`);
}

/** Waits up to `timeoutMs` for `fd` to be readable: true if it is (or hung up). */
export function waitReadable(fd: number, timeoutMs: number): boolean {
  return check(helper().tp_wait_readable(fd, timeoutMs), `poll(fd ${fd})`) === 1;
}

/** SIOCOUTQ and SIOCINQ: bytes in the send queue (sent or not) and in the receive queue. */
export function socketQueueLengths(fd: number): { send: number; receive: number } {
  const words = new Uint32Array(3);
  check(helper().tp_tcp_queues(fd, new Uint8Array(words.buffer)), `SIOCOUTQ/SIOCINQ of ${fd}`);
  return { send: words[0], receive: words[1] };
}

/** Closes `fd` (a socket in repair mode leaves without FIN or RST). */
export function closeFd(fd: number): void {
  helper().tp_close(fd);
}
