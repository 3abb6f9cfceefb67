/**
 * The host side of translated TCP connections: nonblocking helper sockets
 * (ffi/tcp_socket.ts) driven synchronously by readiness callbacks of the daemon's
 * event loop, and the small interface ({@link HostConnection}, {@link HostTcp}) the
 * translator drives them through, so that tests can substitute scripted ones.
 *
 * A connection is read by peeking: {@link HostConnection.peek} copies bytes at a given
 * offset past the acknowledged edge straight into the frame being built toward the
 * guest (guest memory under vhost-user) and leaves them queued in the kernel;
 * {@link HostConnection.discard} drops them once the guest acknowledged them (the
 * translator does so at the end of each batch), and a retransmission peeks again. The
 * peek offset lives in the socket (SO_PEEK_OFF, Linux ≥ 6.9), kept in step with what
 * the translator asks for; a kernel without it gets the bytes before the offset
 * peeked into a scratch buffer and thrown away.
 *
 * A connection's receive buffer is left to the kernel's autotuning; its send buffer is
 * fixed (4 MiB asked, which the kernel doubles, capped at twice wmem_max) where
 * wmem_max is at least 2 MiB, autotuned otherwise, so that the room toward the guest
 * costs one ioctl to ask.
 *
 * Each socket is watched once, edge-triggered, for reading, writing and hang-ups;
 * the owner always tries the system call first and waits for an event only after it
 * would have blocked or gave less than asked (each arrival of data brings an event;
 * an end of stream only shows when a peek returns 0, so after a hang-up event the
 * owner peeks until then). {@link HostConnection.requestWritable} re-arms the watch so
 * that a socket whose send buffer is nearly full reports when it drains;
 * {@link HostConnection.wantReadable} turns readable events off while the owner knows
 * bytes wait in the socket, and on again once it took them all.
 *
 * Deno's `--allow-net` still decides: every connect and listen first asks
 * `Deno.permissions` for the exact address and port, and anything not granted is
 * refused with Deno.errors.NotCapable, as Deno.connect would.
 *
 * @module
 */

import { IoVectors } from "../../../ffi/io_vectors.ts";
import { readKernelFile } from "../../../ffi/kernel_file.ts";
import {
  type ConnectSource,
  type SocketQueues,
  TcpListenSocket,
  TcpSocket,
  WOULD_BLOCK,
} from "../../../ffi/tcp_socket.ts";
import {
  EVENT_EDGE_TRIGGERED,
  EVENT_PEER_CLOSED,
  EVENT_READABLE,
  EVENT_WRITABLE,
  type EventLoop,
} from "../../loop/event_loop.ts";
import type { FrameSpace, ScatteredFrame } from "../../tap/frame_transport.ts";
import { listenBacklog, NativeHostListener } from "./host_listener.ts";
import { requireNetPermission } from "../plan/net_permission.ts";
import { addressBytes } from "../../../ffi/ip_address_text.ts";

/** {@link HostConnection.sendScattered}: the frame's buffers do not fit one gather list; nothing sent. */
export const NOT_SENT = -2;

/** Called with the socket's events (EVENT_* bits) and the loop's time. */
export type HostEventHandler = (events: number, now: number) => void;

/** One host connection as the translator drives it; see the module comment. */
export interface HostConnection {
  /** Sets the callback for the socket's events (connect completion, readable, writable, errors). */
  setHandler(handler: HostEventHandler): void;
  /**
   * Copies up to `length` received bytes, starting `offset` bytes past the front of
   * the receive queue, into `space` starting `from` bytes into its views; the bytes
   * stay queued. Returns the count, 0 when the peer's stream ended there, or
   * {@link WOULD_BLOCK}.
   * @throws on a socket error (ECONNRESET for a peer's reset)
   */
  peek(offset: number, space: FrameSpace, from: number, length: number): number;
  /** Drops `length` bytes from the front of the receive queue (the guest acknowledged them). */
  discard(length: number): void;
  /**
   * Sends `data`: the bytes the kernel took (possibly fewer), or {@link WOULD_BLOCK}.
   * @throws on a socket error (EPIPE, ECONNRESET)
   */
  send(data: Uint8Array): number;
  /**
   * Sends `length` bytes of `frame` from byte `from` on, straight from the guest's
   * buffers: the bytes the kernel took (possibly fewer), {@link WOULD_BLOCK}, or
   * {@link NOT_SENT} when they are spread over more buffers than one call takes.
   * @throws on a socket error (EPIPE, ECONNRESET)
   */
  sendScattered(frame: ScatteredFrame, from: number, length: number): number;
  /**
   * Fills `out` with the send buffer's size and how much of it is in use
   * (`sendBuffer`, `sendQueued`; `receiveQueued` may be left as it was).
   */
  queues(out: SocketQueues): void;
  /** Ends our direction (the peer sees a FIN). */
  shutdownWrite(): void;
  /** Takes the pending socket error (a failed connect, a reset), or null. */
  takeError(): Error | null;
  /** Asks for a writable event once the send buffer has room (re-arms the edge). */
  requestWritable(): void;
  /**
   * Turns the socket's readable events on or off (on when made). Hang-ups, errors and
   * writable events come either way. Turned back on, a socket that holds data
   * reports it at once.
   */
  wantReadable(wanted: boolean): void;
  /** Closes (FIN after unsent data). */
  close(): void;
  /** Closes so that the peer sees a RST. */
  reset(): void;
  /**
   * The socket's descriptor, for moving the connection in a migration (TCP repair);
   * absent on connections that are no kernel socket (test doubles).
   */
  socketFd?(): number;
  /** Stops delivering the socket's events (frozen for a migration); it stays open. */
  suspend?(): void;
  /**
   * Delivers the socket's events again after {@link suspend}; the peek offset is set
   * afresh before the next peek (a repair-mode dump turned it off).
   */
  resume?(): void;
}

/** A connection accepted by a listener, with its peer's address. */
export interface AcceptedConnection {
  readonly connection: HostConnection;
  /** The peer's address as text ("127.0.0.1", "::1", "::ffff:127.0.0.1"), for logs. */
  readonly peerHostname: string;
  /** The same address as the socket gave it: 4 or 16 bytes. */
  readonly peerAddress: Uint8Array;
  readonly peerPort: number;
}

/** A listening host socket. */
export interface HostListener {
  /** The local port (the one the kernel chose when asked for port 0). */
  readonly port: number;
  /** Stops listening; later calls do nothing. */
  close(): void;
}

/** What a listener reports to its owner. */
export interface ListenerEvents {
  /** A connection was accepted; the owner sets its handler or closes it. */
  accepted(accepted: AcceptedConnection): void;
  /** The listener cannot accept any more (it is broken): the owner closes it. */
  failed(error: unknown): void;
}

/** Opens host connections and listeners. */
export interface HostTcp {
  /**
   * Starts connecting to `hostname` (an address literal; its bytes in `address` when the
   * caller has them, so that it is not parsed again) port `port`; the handler set
   * on the connection gets EVENT_WRITABLE (or an error) when the attempt ends, and
   * {@link HostConnection.takeError} then says how.
   * @throws Deno.errors.NotCapable when --allow-net refuses, NativeError when the
   *   connect fails at once
   */
  connect(hostname: string, port: number, address?: Uint8Array): HostConnection;
  /**
   * Listens on `hostname`:`port`, only on interface `interfaceName` when given.
   * @throws like Deno.listen (address in use, permission)
   */
  listen(
    hostname: string,
    port: number,
    interfaceName: string | null,
    events: ListenerEvents,
  ): HostListener;
  /**
   * Takes a connected socket restored in a migration (TCP repair) as a connection;
   * absent where sockets cannot be adopted (test doubles).
   */
  adopt?(fd: number): HostConnection;
}

/** Events a connection socket is watched for (edge-triggered). */
const STREAM_EVENTS =
  (EVENT_READABLE | EVENT_WRITABLE | EVENT_PEER_CLOSED | EVENT_EDGE_TRIGGERED) >>> 0;
/** The same without readable events (HostConnection.wantReadable(false)). */
const STREAM_EVENTS_UNREAD = (STREAM_EVENTS & ~EVENT_READABLE) >>> 0;

/**
 * Send buffer asked for each connection where the host allows big buffers: the window
 * toward the guest mirrors its room, and a fixed size is read once (the kernel then
 * never changes it), so asking for the room takes one ioctl instead of three system
 * calls. The kernel caps it at net.core.wmem_max; below {@link BIG_SEND_BUFFER_FLOOR} there,
 * autotuning is left alone instead.
 *
 * The receive buffer is always autotuned (as passt's since 2025): the host peer may
 * send as far ahead of the guest as the kernel's window lets it (what the guest has
 * not acknowledged stays in the receive queue). A fixed 8 MiB one measured alike both
 * ways, and held more kernel memory and more bytes to migrate (README, design note
 * "Host sockets' buffers").
 */
const BIG_SEND_BUFFER = 4 * 1024 * 1024;
/** Smallest wmem_max worth fixing the send buffer's size for. */
const BIG_SEND_BUFFER_FLOOR = 2 * 1024 * 1024;

/** Entries of the shared iovec table: a frame's payload over up to this many guest buffers. */
const MAX_IOVECS = 1024;

/** The iovec table every peek builds (calls are synchronous, one at a time). */
const vectors = new IoVectors(MAX_IOVECS);

/** Where bytes before the offset go on kernels without SO_PEEK_OFF; grows as needed. */
let skipped = new Uint8Array(0);

/** Adds `length` bytes of `space`, starting `from` bytes into it, to `table`. */
function addSpace(table: IoVectors, space: FrameSpace, from: number, length: number): void {
  let skip = from;
  let left = length;
  for (let i = 0; i < space.count && left > 0; i++) {
    const view = space.views[i];
    if (skip >= view.length) {
      skip -= view.length;
      continue;
    }
    const part = skip > 0 ? view.subarray(skip) : view;
    const n = Math.min(part.length, left);
    if (table.full) break;
    table.push(part, n);
    left -= n;
    skip = 0;
  }
  // With a table from the link, the views end at vectorsFrom and the table goes on.
  if (left > 0 && space.vectors !== null) table.append(space.vectors, left, skip);
}

function noEvents(): void {}

/** A host connection over a helper socket on the event loop. */
class NativeHostConnection implements HostConnection {
  readonly #socket: TcpSocket;
  readonly #loop: EventLoop;
  readonly #fd: number;
  #handler: HostEventHandler = noEvents;
  /** The socket's SO_PEEK_OFF as last set or moved (-1: off). */
  #peekOffset = -1;
  #closed = false;
  /** Whether SO_SNDBUF was set here (the kernel then never changes it: SOCK_SNDBUF_LOCK). */
  #sendBufferFixed = false;
  /** The fixed send buffer's size as the kernel reports it, once read (0: not yet). */
  #sendBuffer = 0;
  /** Whether readable events are watched (wantReadable). */
  #readableWanted = true;

  constructor(socket: TcpSocket, loop: EventLoop) {
    this.#socket = socket;
    this.#loop = loop;
    this.#fd = socket.fd;
    try {
      const send = sendBufferSize();
      if (send > 0) socket.setBuffers(0, send);
      this.#sendBufferFixed = send > 0;
    } catch { /* the kernel's sizes then */ }
    try {
      loop.watch(this.#fd, (events, now) => this.#handler(events, now), STREAM_EVENTS);
    } catch (error) {
      this.#closed = true;
      socket.close(); // the loop is closed: the socket must not outlive this failure
      throw error;
    }
  }

  setHandler(handler: HostEventHandler): void {
    this.#handler = handler;
  }

  peek(offset: number, space: FrameSpace, from: number, length: number): number {
    if (this.#peekOffset !== offset && !peekOffsetMissing) {
      if (this.#socket.setPeekOffset(offset)) this.#peekOffset = offset;
      else peekOffsetMissing = true;
    }
    const skip = peekOffsetMissing && offset > 0;
    let table = vectors;
    if (space.vectors !== null && from === space.vectorsFrom && !skip) {
      // The link gave the room as an iovec table already: peek straight into it.
      table = space.vectors;
      table.truncate(length);
    } else {
      vectors.clear();
      if (skip) {
        if (skipped.length < offset) {
          skipped = new Uint8Array(Math.max(offset, 2 * skipped.length));
        }
        vectors.push(skipped, offset);
      }
      addSpace(vectors, space, from, length);
    }
    const n = this.#socket.receiveVectors(table, true);
    if (n === WOULD_BLOCK) return WOULD_BLOCK;
    if (peekOffsetMissing && offset > 0) {
      // Only bytes before the offset: nothing new yet (an end of stream right at the
      // offset then shows only once more data or a hang-up event comes).
      if (n === 0) return 0;
      return n > offset ? n - offset : WOULD_BLOCK;
    }
    this.#peekOffset += n;
    return n;
  }

  discard(length: number): void {
    let left = length;
    while (left > 0) {
      const n = this.#socket.discard(left);
      if (n <= 0) break; // WOULD_BLOCK or end: nothing more is queued
      left -= n;
    }
    // The kernel moves the peek offset back by what was dropped.
    if (this.#peekOffset >= 0) this.#peekOffset = Math.max(0, this.#peekOffset - length);
  }

  send(data: Uint8Array): number {
    return this.#socket.send(data);
  }

  sendScattered(frame: ScatteredFrame, from: number, length: number): number {
    vectors.clear();
    if (frame.vectorsOf(from, length, vectors) < length) return NOT_SENT;
    return this.#socket.sendVectors(vectors);
  }

  queues(out: SocketQueues): void {
    if (this.#sendBuffer > 0) {
      // A fixed send buffer: one ioctl (SIOCOUTQ) instead of two and a getsockopt.
      out.sendQueued = this.#socket.sendQueued();
      out.sendBuffer = this.#sendBuffer;
      return;
    }
    this.#socket.queues(out);
    if (this.#sendBufferFixed) this.#sendBuffer = out.sendBuffer;
  }

  shutdownWrite(): void {
    this.#socket.shutdownWrite();
  }

  takeError(): Error | null {
    return this.#socket.takeError();
  }

  requestWritable(): void {
    if (!this.#closed && this.#loop.isWatching(this.#fd)) this.#loop.rearm(this.#fd);
  }

  wantReadable(wanted: boolean): void {
    if (wanted === this.#readableWanted) return;
    this.#readableWanted = wanted;
    // epoll_ctl's modify polls the socket: data that came meanwhile is reported now.
    if (!this.#closed && this.#loop.isWatching(this.#fd)) {
      this.#loop.modify(this.#fd, wanted ? STREAM_EVENTS : STREAM_EVENTS_UNREAD);
    }
  }

  socketFd(): number {
    return this.#fd;
  }

  suspend(): void {
    if (!this.#closed && this.#loop.isWatching(this.#fd)) this.#loop.unwatch(this.#fd);
    this.#peekOffset = -1;
  }

  resume(): void {
    if (this.#closed || this.#loop.isWatching(this.#fd)) return;
    this.#readableWanted = true; // the flows look at their sockets again after a migration
    this.#loop.watch(this.#fd, (events, now) => this.#handler(events, now), STREAM_EVENTS);
  }

  close(): void {
    if (this.#release()) this.#socket.close();
  }

  reset(): void {
    if (this.#release()) this.#socket.closeWithReset();
  }

  #release(): boolean {
    if (this.#closed) return false;
    this.#closed = true;
    this.#handler = noEvents;
    if (this.#loop.isWatching(this.#fd)) this.#loop.unwatch(this.#fd);
    return true;
  }
}

/** The send buffer size set on each connection (0: autotuned), from wmem_max; read once. */
let bigSendBuffer = -1;

function sendBufferSize(): number {
  if (bigSendBuffer >= 0) return bigSendBuffer;
  let limit = 0;
  try {
    // Through the helper: Deno refuses /proc/sys without --allow-all.
    limit = Number(readKernelFile("/proc/sys/net/core/wmem_max", 64)?.trim()) || 0;
  } catch { /* unreadable: autotuned */ }
  bigSendBuffer = limit >= BIG_SEND_BUFFER_FLOOR ? BIG_SEND_BUFFER : 0;
  return bigSendBuffer;
}

/** Set once a kernel refused SO_PEEK_OFF on a TCP socket: peeks skip through a scratch buffer. */
let peekOffsetMissing = false;

/** Where outbound connections come from, per family (`-o`, `--outbound-if4/6`). */
export interface OutboundSources {
  readonly address4?: string | null;
  readonly address6?: string | null;
  readonly interface4?: string | null;
  readonly interface6?: string | null;
}

/**
 * {@link HostTcp} over helper sockets on `loop`, binding outbound connections as
 * `sources` says.
 * @throws Error when a source address is not an address of its family
 */
export function nativeHostTcp(loop: EventLoop, sources: OutboundSources = {}): HostTcp {
  const source4 = sources.address4 ? addressBytes(sources.address4) : null;
  const source6 = sources.address6 ? addressBytes(sources.address6) : null;
  if (sources.address4 && source4?.byteLength !== 4) {
    throw new Error(
      `Cannot bind outbound IPv4 connections to ${sources.address4}: not an IPv4 address`,
    );
  }
  if (sources.address6 && source6?.byteLength !== 16) {
    throw new Error(
      `Cannot bind outbound IPv6 connections to ${sources.address6}: not an IPv6 address`,
    );
  }
  return {
    connect(hostname: string, port: number, known?: Uint8Array): HostConnection {
      requireNetPermission(hostname, port, "connect");
      const address = known ?? addressBytes(hostname);
      if (address === null) {
        throw new Error(`Cannot connect to ${hostname}: not an IPv4 or IPv6 address`);
      }
      const v4 = address.byteLength === 4;
      const source: ConnectSource = {
        address: v4 ? source4 : source6,
        interfaceName: v4 ? sources.interface4 : sources.interface6,
      };
      return new NativeHostConnection(TcpSocket.connect({ address, port }, source), loop);
    },
    listen(hostname, port, interfaceName, events): HostListener {
      requireNetPermission(hostname, port, "listen");
      const address = addressBytes(hostname);
      if (address === null) {
        throw new Error(`Cannot listen on ${hostname}: not an IPv4 or IPv6 address`);
      }
      return new NativeHostListener(
        TcpListenSocket.listen({ address, port }, interfaceName ?? null, listenBacklog()),
        loop,
        events,
        (socket) => new NativeHostConnection(socket, loop),
      );
    },
    adopt(fd: number): HostConnection {
      return new NativeHostConnection(TcpSocket.fromAccepted(fd), loop);
    },
  };
}
