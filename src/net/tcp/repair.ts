/**
 * Moving one TCP connection between sockets with Linux's TCP repair mode (the way
 * CRIU and passt do): on the source, a socket in repair mode is dumped — sequence
 * numbers of both queues, window (TCP_REPAIR_WINDOW), MSS, window scales and the
 * other negotiated options (TCP_INFO), the timestamp clock (TCP_TIMESTAMP), and the
 * bytes of both queues (peeked with the queue selected); on the target, a fresh
 * socket is put in repair mode, given the sequence numbers, bound and connected
 * (no handshake in repair mode), given options, window, queued bytes and the
 * timestamp clock, and taken out of repair mode. A socket closed while in repair
 * mode leaves without a FIN or RST.
 *
 * Switching repair mode needs CAP_NET_ADMIN: {@link RepairSwitch} does it directly
 * ({@link directRepair}) or through a helper that owns the capability (passt-repair's
 * protocol, src/daemon/repair_helper.ts). Everything else works unprivileged on a
 * socket already in repair mode.
 *
 * @module
 */

import {
  bindSocket,
  closeFd,
  connectSocket,
  createTcpSocket,
  getIntOption,
  getQueueSeq,
  getRepairWindow,
  getTcpInfoOptions,
  getTcpTimestamp,
  MSG_PEEK,
  receiveWithFlags,
  selectRepairQueue,
  sendBytes,
  setIntOption,
  setQueueSeq,
  setRepairOptions,
  setRepairWindow,
  setTcpRepair,
  setTcpTimestamp,
  SO_PEEK_OFF,
  SO_RCVBUF,
  SO_RCVBUFFORCE,
  SO_SNDBUF,
  SO_SNDBUFFORCE,
  socketQueueLengths,
  SOL_SOCKET,
  SOL_TCP,
  TCP_MAXSEG,
  TCP_NODELAY,
  TCPI_OPT_SACK,
  TCPI_OPT_TIMESTAMPS,
  TCPI_OPT_WSCALE,
  TcpOptionKind,
  TcpRepairMode,
  TcpRepairQueue,
} from "../../../ffi/tcp_repair.ts";
import { Errno, NativeError } from "../../../ffi/native_error.ts";
import {
  MAX_QUEUE_BYTES,
  OPTION_SACK,
  OPTION_TIMESTAMPS,
  OPTION_WSCALE,
  type TcpSocketRepairState,
} from "../migration_state.ts";

/** Switches repair mode on a set of sockets: all of them, or throws. */
export interface RepairSwitch {
  /**
   * Sets TCP_REPAIR to `mode` on every socket of `fds`.
   * @throws Error when it could not be done for all of them
   */
  set(fds: readonly number[], mode: TcpRepairMode): void;
}

/** {@link RepairSwitch} by setsockopt in this process (needs CAP_NET_ADMIN). */
export const directRepair: RepairSwitch = {
  set(fds, mode) {
    for (const fd of fds) setTcpRepair(fd, mode);
  },
};

/** The two ends of a host socket. */
export interface SocketEnds {
  local: { address: Uint8Array; port: number };
  peer: { address: Uint8Array; port: number };
}

/** Linux's default TCP buffer (net.ipv4.tcp_rmem / tcp_wmem's middle value is 128 KiB or less). */
const DEFAULT_BUFFER = 128 * 1024;

/**
 * How long a restore waits, in all, for the source's socket to let go of the
 * connection's addresses (source and target on one machine, the source closing its
 * socket as the target restores).
 */
export const ADDRESS_WAIT_MS = 3_000;
/** Pause between attempts to take the addresses. */
const ADDRESS_RETRY_MS = 10;

/** Blocks the thread for `ms` (bounded waits during a migration's downtime only). */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Runs `step` until it does not fail with `errno` or `deadline` (performance.now()) passes. */
function retryWhileBusy(step: () => void, errnos: readonly number[], deadline: number): void {
  for (;;) {
    try {
      step();
      return;
    } catch (error) {
      const busy = error instanceof NativeError && errnos.includes(error.errno);
      if (!busy || performance.now() >= deadline) throw error;
      sleepSync(ADDRESS_RETRY_MS);
    }
  }
}

/** Most bytes moved per send into a queue being restored (one buffer each). */
const RESTORE_CHUNK = 256 * 1024;

/** Reads exactly `length` queued bytes of the selected queue without taking them. */
function peekQueue(fd: number, length: number, what: string): Uint8Array {
  if (length > MAX_QUEUE_BYTES) {
    throw new Error(`Cannot dump the ${what} of socket ${fd}: ${length} bytes queued`);
  }
  const bytes = new Uint8Array(length);
  if (length === 0) return bytes;
  const n = receiveWithFlags(fd, bytes, MSG_PEEK);
  if (n !== length) {
    throw new Error(`Cannot dump the ${what} of socket ${fd}: peeked ${n} of ${length} bytes`);
  }
  return bytes;
}

/**
 * Dumps a connected socket that is in repair mode. Turns SO_PEEK_OFF off (a peek
 * offset would skip bytes of the receive queue); the owner sets it again if the
 * socket goes back to work.
 * @throws NativeError or Error when a step fails
 */
export function dumpRepairSocket(fd: number): TcpSocketRepairState {
  setIntOption(fd, SOL_SOCKET, SO_PEEK_OFF, -1);
  const info = getTcpInfoOptions(fd);
  const mss = getIntOption(fd, SOL_TCP, TCP_MAXSEG);
  const timestamp = getTcpTimestamp(fd);
  const window = getRepairWindow(fd);
  const queues = socketQueueLengths(fd);
  selectRepairQueue(fd, TcpRepairQueue.SEND);
  const sendQueue = peekQueue(fd, queues.send, "send queue");
  const writeSeq = getQueueSeq(fd);
  selectRepairQueue(fd, TcpRepairQueue.RECEIVE);
  const recvQueue = peekQueue(fd, queues.receive, "receive queue");
  const rcvNxt = getQueueSeq(fd);
  selectRepairQueue(fd, TcpRepairQueue.NONE);
  let options = 0;
  if (info.options & TCPI_OPT_TIMESTAMPS) options |= OPTION_TIMESTAMPS;
  if (info.options & TCPI_OPT_SACK) options |= OPTION_SACK;
  if (info.options & TCPI_OPT_WSCALE) options |= OPTION_WSCALE;
  return {
    sendSeq: (writeSeq - sendQueue.length) >>> 0,
    recvSeq: (rcvNxt - recvQueue.length) >>> 0,
    mss,
    sndWscale: options & OPTION_WSCALE ? info.sndWscale : 0,
    rcvWscale: options & OPTION_WSCALE ? info.rcvWscale : 0,
    options,
    timestamp,
    ...window,
    sendQueue,
    recvQueue,
  };
}

/**
 * Least receive buffer asked for a restored socket whose receive queue needs a bigger
 * one than the default: setting it ends the kernel's autotuning of that socket for
 * good, so it gets the size the daemon fixed before it left receive buffers to
 * autotuning (the kernel doubles it, capped at twice rmem_max without CAP_NET_ADMIN),
 * rather than one just fitting the queue that would throttle the host's data after.
 */
const RESTORED_RECEIVE_BUFFER = 4 * 1024 * 1024;

/**
 * A new socket of the family of `ends`, for {@link restoreRepairSocket} once it is in
 * repair mode; its buffers are made big enough for `state`'s queues.
 */
export function createRestoreSocket(ends: SocketEnds, state: TcpSocketRepairState): number {
  const fd = createTcpSocket(ends.local.address.length === 4 ? 4 : 6);
  // A queue larger than the default buffer needs a buffer to match, with room for
  // the kernel's per-buffer overhead: forced past rmem_max / wmem_max where we may
  // (CAP_NET_ADMIN), else as far as those allow. The source's send queue grew under
  // the same wmem_max; its receive queue was autotuned, up to net.ipv4.tcp_rmem's
  // maximum, which can exceed twice rmem_max: such a queue does not fit unprivileged,
  // and its flow fails below. Smaller queues keep the default and its autotuning.
  const sizes: [number, number, number, number][] = [
    [state.recvQueue.length, SO_RCVBUFFORCE, SO_RCVBUF, RESTORED_RECEIVE_BUFFER],
    [state.sendQueue.length, SO_SNDBUFFORCE, SO_SNDBUF, 0],
  ];
  for (const [length, forced, capped, least] of sizes) {
    if (length <= DEFAULT_BUFFER) continue;
    const size = Math.max(length + (length >> 2) + RESTORE_CHUNK, least);
    try {
      setIntOption(fd, SOL_SOCKET, forced, size);
    } catch {
      try {
        setIntOption(fd, SOL_SOCKET, capped, size);
      } catch { /* the default then; a queue that does not fit fails below */ }
    }
  }
  return fd;
}

/** Sends all of `bytes` into the selected queue of a socket in repair mode. */
function fillQueue(fd: number, bytes: Uint8Array, what: string, partial: boolean): number {
  let at = 0;
  while (at < bytes.length) {
    let n: number;
    try {
      n = sendBytes(fd, bytes.subarray(at, Math.min(bytes.length, at + RESTORE_CHUNK)));
    } catch (error) {
      const full = error instanceof NativeError && error.errno === Errno.EAGAIN;
      if (partial && full) return at;
      throw error;
    }
    if (n <= 0) throw new Error(`Cannot restore the ${what} of socket ${fd}: send took ${n}`);
    at += n;
  }
  return at;
}

/**
 * Makes `fd` (from {@link createRestoreSocket}, now in repair mode) the connection
 * `state` describes between `ends`. The socket stays in repair mode: the caller
 * switches it off (for all restored sockets at once through a helper). Returns the
 * end of the send queue that did not fit the socket's buffer (usually nothing): the
 * caller sends it once repair mode is off, before anything else. While
 * another socket holds the addresses, binding and connecting are retried until
 * `addressDeadline` (performance.now() time; default: no retry).
 * @throws NativeError (EADDRNOTAVAIL when another socket still holds the addresses)
 *   or Error when a step fails; the caller closes the socket then
 */
export function restoreRepairSocket(
  fd: number,
  ends: SocketEnds,
  state: TcpSocketRepairState,
  addressDeadline: number = performance.now(),
): Uint8Array {
  // No SO_REUSEADDR: repair mode already lets bind() take a port in use
  // (SK_FORCE_REUSE), and setting it would turn that off again; a TIME_WAIT left on
  // the port by another connection would then refuse the bind.
  selectRepairQueue(fd, TcpRepairQueue.SEND);
  setQueueSeq(fd, state.sendSeq);
  selectRepairQueue(fd, TcpRepairQueue.RECEIVE);
  setQueueSeq(fd, state.recvSeq);
  // The source may still hold the addresses for a moment (same machine): wait for
  // them until `addressDeadline`.
  retryWhileBusy(() => bindSocket(fd, ends.local), [Errno.EADDRINUSE], addressDeadline);
  retryWhileBusy(() => connectSocket(fd, ends.peer), [Errno.EADDRNOTAVAIL], addressDeadline);
  const options: [number, number][] = [[TcpOptionKind.MSS, state.mss]];
  if (state.options & OPTION_WSCALE) {
    options.push([TcpOptionKind.WINDOW, state.sndWscale | (state.rcvWscale << 16)]);
  }
  if (state.options & OPTION_SACK) options.push([TcpOptionKind.SACK_PERMITTED, 0]);
  if (state.options & OPTION_TIMESTAMPS) options.push([TcpOptionKind.TIMESTAMP, 0]);
  setRepairOptions(fd, options);
  selectRepairQueue(fd, TcpRepairQueue.SEND);
  // The send buffer may be smaller than the source's was (without CAP_NET_ADMIN it
  // cannot be forced past wmem_max): what does not fit is sent normally afterwards.
  const injected = fillQueue(fd, state.sendQueue, "send queue", true);
  selectRepairQueue(fd, TcpRepairQueue.RECEIVE);
  fillQueue(fd, state.recvQueue, "receive queue", false);
  selectRepairQueue(fd, TcpRepairQueue.NONE);
  // After the receive queue: the kernel checks the window against rcv_nxt, which
  // the queued bytes have moved to where the source's was.
  setRepairWindow(fd, state);
  setTcpTimestamp(fd, state.timestamp);
  setIntOption(fd, SOL_TCP, TCP_NODELAY, 1);
  return state.sendQueue.subarray(injected);
}

/** Closes a socket in repair mode: the peer sees nothing (no FIN, no RST). */
export function closeInRepair(fd: number): void {
  closeFd(fd);
}

/** Whether `error` says the process lacks the capability for TCP_REPAIR. */
export function isPermissionError(error: unknown): boolean {
  return error instanceof NativeError && error.errno === Errno.EPERM;
}
