/**
 * Host TCP connections over the helper's nonblocking sockets (ffi/tcp_socket.ts),
 * driven by the daemon's event loop: the {@link HostStream} / {@link HostConnector} /
 * {@link HostListen} implementation the daemon gives the TCP translator.
 *
 * Compared with Deno's TCP API it adds what a faithful translation needs: a reset
 * from the guest reaches the host peer as a RST ({@link NativeHostStream.reset}), a
 * reset from the host peer is reported as one (the read rejects with ECONNRESET
 * instead of ending like a FIN), outbound sockets can be bound to `-o` addresses and
 * `--outbound-if4/6` interfaces, and a read or write that the kernel can serve at
 * once completes without a round trip through Deno's I/O threads.
 *
 * Deno's `--allow-net` still decides: every connect and listen first asks
 * `Deno.permissions` for the exact address and port, and anything not granted is
 * refused with Deno.errors.NotCapable, as Deno.connect would.
 *
 * Each socket is registered once with the loop, edge-triggered for reading, writing
 * and hang-ups. An operation always tries the system call first and waits for an
 * edge only after it would have blocked, so no readiness is lost between edges.
 *
 * @module
 */

import {
  type ConnectSource,
  type RawSocketAddress,
  TcpListenSocket,
  TcpSocket,
  WOULD_BLOCK,
} from "../../ffi/tcp_socket.ts";
import { EPOLLET, EPOLLRDHUP } from "../../ffi/epoll.ts";
import {
  EVENT_ERROR,
  EVENT_HANGUP,
  EVENT_READABLE,
  EVENT_WRITABLE,
  type EventLoop,
} from "../loop/event_loop.ts";
import { RateLimitedLog } from "../log/rate_limited_log.ts";
import { ipv6ToString, parseIpv4, parseIpv6, writeIpv4 } from "./address.ts";
import type {
  AcceptedStream,
  HostConnector,
  HostListen,
  HostListener,
  HostStream,
} from "./host_stream.ts";

/** Accept failures, one log line per interval. */
const acceptLog = new RateLimitedLog("warn");

/** Events a connection socket is registered for (edge-triggered). */
const STREAM_EVENTS = (EVENT_READABLE | EVENT_WRITABLE | EPOLLRDHUP | EPOLLET) >>> 0;

interface Pending<T> {
  readonly buffer: Uint8Array;
  readonly resolve: (value: T) => void;
  readonly reject: (error: unknown) => void;
}

/** Address text ("127.0.0.1", "::1") → raw bytes, or null when it is not a literal. */
export function addressBytes(hostname: string): Uint8Array | null {
  const v4 = parseIpv4(hostname);
  if (v4 !== null) {
    const bytes = new Uint8Array(4);
    writeIpv4(bytes, 0, v4);
    return bytes;
  }
  const text = hostname.startsWith("[") && hostname.endsWith("]")
    ? hostname.slice(1, -1)
    : hostname;
  return parseIpv6(text);
}

/** Raw bytes → address text; an IPv4-mapped IPv6 address keeps its dotted tail. */
export function addressText(address: Uint8Array): string {
  if (address.byteLength === 4) return address.join(".");
  const mapped = address.subarray(0, 10).every((b) => b === 0) && address[10] === 0xff &&
    address[11] === 0xff;
  return mapped ? `::ffff:${address.subarray(12).join(".")}` : ipv6ToString(address);
}

/** The host part of a `net` permission descriptor: IPv6 in brackets. */
function permissionHost(hostname: string, port: number): string {
  if (hostname.startsWith("[")) return `${hostname}:${port}`;
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

/**
 * Whether Deno's `net` permission is granted for `hostname`:`port` right now (a
 * "prompt" state counts as refused: the daemon never prompts).
 */
export function netPermissionGranted(hostname: string, port: number): boolean {
  const host = permissionHost(hostname, port);
  return Deno.permissions.querySync({ name: "net", host }).state === "granted";
}

/**
 * Throws Deno.errors.NotCapable unless Deno's `net` permission is granted for
 * `hostname`:`port` right now (see {@link netPermissionGranted}).
 */
export function requireNetPermission(hostname: string, port: number, what: string): void {
  if (!netPermissionGranted(hostname, port)) {
    const host = permissionHost(hostname, port);
    throw new Deno.errors.NotCapable(
      `Requires net access to "${host}" to ${what}, run again with the --allow-net flag`,
    );
  }
}

/** A host connection over a helper socket; see the module comment. */
export class NativeHostStream implements HostStream {
  readonly #socket: TcpSocket;
  readonly #loop: EventLoop;
  readonly #fd: number;
  #connecting: Pending<NativeHostStream> | null = null;
  #reading: Pending<number | null> | null = null;
  #writing: Pending<number> | null = null;
  #closed = false;

  private constructor(socket: TcpSocket, loop: EventLoop) {
    this.#socket = socket;
    this.#loop = loop;
    this.#fd = socket.fd;
    try {
      loop.watch(this.#fd, (events) => this.#onEvents(events), STREAM_EVENTS);
    } catch (error) {
      this.#closed = true;
      socket.close(); // the loop is closed: the socket must not outlive this failure
      throw error;
    }
  }

  /**
   * Connects to `destination` (permission already checked by the caller): resolves
   * once the connection is established, rejects with the connect's error.
   */
  static connect(
    loop: EventLoop,
    destination: RawSocketAddress,
    source: ConnectSource = {},
  ): Promise<NativeHostStream> {
    let stream: NativeHostStream;
    try {
      stream = new NativeHostStream(TcpSocket.connect(destination, source), loop);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      stream.#connecting = { buffer: new Uint8Array(0), resolve, reject };
    });
  }

  /** Wraps an accepted connection. */
  static accepted(socket: TcpSocket, loop: EventLoop): NativeHostStream {
    return new NativeHostStream(socket, loop);
  }

  /** {@inheritDoc HostStream.read} */
  read(p: Uint8Array): Promise<number | null> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("host stream is closed"));
    if (this.#reading !== null) return Promise.reject(new Error("a read is already pending"));
    try {
      const n = this.#socket.receive(p);
      if (n !== WOULD_BLOCK) return Promise.resolve(n === 0 ? null : n);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      this.#reading = { buffer: p, resolve, reject };
    });
  }

  /** {@inheritDoc HostStream.write} */
  write(p: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("host stream is closed"));
    if (this.#writing !== null) return Promise.reject(new Error("a write is already pending"));
    try {
      const n = this.#socket.send(p);
      if (n !== WOULD_BLOCK) return Promise.resolve(n);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      this.#writing = { buffer: p, resolve, reject };
    });
  }

  /** {@inheritDoc HostStream.closeWrite} */
  closeWrite(): Promise<void> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("host stream is closed"));
    try {
      this.#socket.shutdownWrite();
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** {@inheritDoc HostStream.close} Pending operations never settle. */
  close(): void {
    if (this.#release()) this.#socket.close();
  }

  /** {@inheritDoc HostStream.reset} */
  reset(): void {
    if (this.#release()) this.#socket.closeWithReset();
  }

  /** Stops watching and forgets pending operations; false when already closed. */
  #release(): boolean {
    if (this.#closed) return false;
    this.#closed = true;
    this.#connecting = null;
    this.#reading = null;
    this.#writing = null;
    if (this.#loop.isWatching(this.#fd)) this.#loop.unwatch(this.#fd);
    return true;
  }

  #onEvents(events: number): void {
    if (this.#closed) return;
    const connecting = this.#connecting;
    if (connecting !== null) {
      if ((events & (EVENT_WRITABLE | EVENT_ERROR | EVENT_HANGUP)) === 0) return;
      this.#connecting = null;
      const error = this.#socket.takeError();
      if (error === null) {
        connecting.resolve(this);
      } else {
        this.close();
        connecting.reject(error);
      }
      return;
    }
    const reading = this.#reading;
    if (reading !== null) {
      try {
        const n = this.#socket.receive(reading.buffer);
        if (n !== WOULD_BLOCK) {
          this.#reading = null;
          reading.resolve(n === 0 ? null : n);
        }
      } catch (error) {
        this.#reading = null;
        reading.reject(error);
      }
    }
    const writing = this.#writing;
    if (writing !== null && !this.#closed) {
      try {
        const n = this.#socket.send(writing.buffer);
        if (n !== WOULD_BLOCK) {
          this.#writing = null;
          writing.resolve(n);
        }
      } catch (error) {
        this.#writing = null;
        writing.reject(error);
      }
    }
  }
}

/** Where outbound connections come from, per family (`-o`, `--outbound-if4/6`). */
export interface OutboundSources {
  readonly address4?: string | null;
  readonly address6?: string | null;
  readonly interface4?: string | null;
  readonly interface6?: string | null;
}

/**
 * A {@link HostConnector} over helper sockets on `loop`, binding outbound connections
 * as `sources` says.
 * @throws Error when a source address is not an address of its family
 */
export function nativeConnector(loop: EventLoop, sources: OutboundSources = {}): HostConnector {
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
  return (hostname, port) => {
    try {
      requireNetPermission(hostname, port, "connect");
      const address = addressBytes(hostname);
      if (address === null) {
        throw new Error(`Cannot connect to ${hostname}: not an IPv4 or IPv6 address`);
      }
      const v4 = address.byteLength === 4;
      return NativeHostStream.connect(loop, { address, port }, {
        address: v4 ? source4 : source6,
        interfaceName: v4 ? sources.interface4 : sources.interface6,
      });
    } catch (error) {
      return Promise.reject(error);
    }
  };
}

/** Wait before retrying an accept that failed (EMFILE...), in ms. */
const ACCEPT_RETRY_MS = 100;

/** A listener over a helper socket on the event loop. */
class NativeHostListener implements HostListener {
  readonly #socket: TcpListenSocket;
  readonly #loop: EventLoop;
  readonly #fd: number;
  readonly #waiting: Pending<AcceptedStream>[] = [];
  /** {@inheritDoc HostListener.port} */
  readonly port: number;
  #retry: ReturnType<typeof setTimeout> | undefined = undefined;
  #closed = false;

  constructor(socket: TcpListenSocket, loop: EventLoop) {
    this.#socket = socket;
    this.#loop = loop;
    this.#fd = socket.fd;
    try {
      this.port = socket.localAddress().port;
      loop.watch(this.#fd, () => this.#drain(), (EVENT_READABLE | EPOLLET) >>> 0);
    } catch (error) {
      this.#closed = true;
      socket.close();
      throw error;
    }
  }

  accept(): Promise<AcceptedStream> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("listener is closed"));
    return new Promise((resolve, reject) => {
      this.#waiting.push({ buffer: new Uint8Array(0), resolve, reject });
      this.#drain();
    });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#retry !== undefined) clearTimeout(this.#retry);
    if (this.#loop.isWatching(this.#fd)) this.#loop.unwatch(this.#fd);
    this.#socket.close();
    for (const w of this.#waiting.splice(0)) {
      w.reject(new Deno.errors.BadResource("listener is closed"));
    }
  }

  #retryLater(error: unknown): void {
    if (this.#retry !== undefined) return;
    acceptLog.write(
      performance.now(),
      `tcp: cannot accept a forwarded connection (retrying): ${(error as Error).message}`,
    );
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      this.#drain();
    }, ACCEPT_RETRY_MS);
  }

  #drain(): void {
    while (!this.#closed && this.#waiting.length > 0) {
      let accepted;
      try {
        accepted = this.#socket.accept();
      } catch (error) {
        // EMFILE and the like: the connection stays pending. Edge-triggered, no new
        // edge may come for it: retry on a timer instead.
        this.#retryLater(error);
        return;
      }
      if (accepted === null) return;
      let stream: NativeHostStream;
      try {
        stream = NativeHostStream.accepted(accepted.socket, this.#loop);
      } catch (error) {
        // The loop refused the socket (closed, out of epoll watches), which closed it:
        // this connection is lost; the waiter stays for the next one.
        acceptLog.write(
          performance.now(),
          `tcp: cannot take a forwarded connection: ${(error as Error).message}`,
        );
        continue;
      }
      this.#waiting.shift()!.resolve({
        stream,
        peerHostname: addressText(accepted.peer.address),
        peerPort: accepted.peer.port,
      });
    }
  }
}

/**
 * A {@link HostListen} over helper sockets on `loop`; refuses, like Deno.listen,
 * what `--allow-net` does not grant.
 */
export function nativeListen(loop: EventLoop): HostListen {
  return (hostname, port, interfaceName) => {
    requireNetPermission(hostname, port, "listen");
    const address = addressBytes(hostname);
    if (address === null) {
      throw new Error(`Cannot listen on ${hostname}: not an IPv4 or IPv6 address`);
    }
    return new NativeHostListener(
      TcpListenSocket.listen({ address, port }, interfaceName ?? null),
      loop,
    );
  };
}
