/**
 * Test support for the TCP translator: scripted host connections (a
 * {@link HostConnection} whose peeks, sends and connect completion a test decides,
 * recording the calls that end it, and a {@link HostTcp} handing them out), and
 * {@link wiredTranslator}, a translator wired to a sender and a scripted guest, and
 * {@link connectThroughGateway}, a guest connection to a real loopback host peer, which
 * {@link trickleFrom} can make send slowly. Not used by the daemon.
 *
 * @module
 */

import type { SocketQueues } from "../../../ffi/tcp_socket.ts";
import { Logger } from "../../../src/log/logger.ts";
import { EVENT_READABLE, EVENT_WRITABLE } from "../../../src/loop/event_loop.ts";
import type { FrameSpace, ScatteredFrame } from "../../../src/tap/frame_transport.ts";
import { GuestSender } from "../../../src/net/guest_sender.ts";
import { DEFAULT_OUR_MAC } from "../../../src/net/plan/network_plan.ts";
import type { L4Handler } from "../../../src/net/l4_handler.ts";
import { type GuestTcpConn, TestGuest } from "./tcp_guest.ts";
import { TEST_GATEWAY4, TEST_GUEST4, TEST_GUEST6, testRules } from "./tcp_plan.ts";
import { TcpTranslator, type TcpTranslatorOptions } from "../../../src/net/tcp/translator.ts";
import {
  type HostConnection,
  type HostEventHandler,
  type HostListener,
  type HostTcp,
  type ListenerEvents,
} from "../../../src/net/tcp/host_socket.ts";
import { WOULD_BLOCK } from "../../../ffi/tcp_socket.ts";

/** What a scripted peek returns: bytes, null for the end of stream, or "block". */
export type ScriptedPeek = (offset: number, length: number) => Uint8Array | null | "block";

/** A scripted {@link HostConnection}; see the module comment. */
export class ScriptedConnection implements HostConnection {
  /** close(), reset() and shutdownWrite() calls, in order. */
  readonly calls: string[] = [];
  /** Bytes discarded from the receive queue so far. */
  discarded = 0;
  /** Bytes the connection took from the guest. */
  sent = 0;
  /** The send buffer reported by queues(). */
  sendBuffer = 1 << 20;
  /** Bytes reported in use in the send buffer. */
  sendQueued = 0;
  /** queues() calls (the translator asking for the send buffer's room). */
  queueQueries = 0;
  /** Most bytes one send() takes. */
  sendLimit = Infinity;
  /** requestWritable() calls. */
  writableRequests = 0;
  /** Whether readable events are wanted (wantReadable). */
  readableWanted = true;
  /** wantReadable() calls that changed {@link readableWanted}. */
  readableToggles = 0;
  /** The connect's outcome reported by takeError() (null: success). */
  error: Error | null = null;
  handler: HostEventHandler = () => {};
  readonly #peek: ScriptedPeek;

  /** @param peek what the host has for the guest (default: nothing yet) */
  constructor(peek: ScriptedPeek = () => "block") {
    this.#peek = peek;
  }

  setHandler(handler: HostEventHandler): void {
    this.handler = handler;
  }

  peek(offset: number, space: FrameSpace, from: number, length: number): number {
    const r = this.#peek(offset, length);
    if (r === null) return 0;
    if (r === "block") return WOULD_BLOCK;
    if (space.vectors !== null) {
      throw new Error("A scripted host connection cannot peek into an iovec table");
    }
    let skip = from;
    let at = 0;
    for (let i = 0; i < space.count && at < r.length; i++) {
      const view = space.views[i];
      if (skip >= view.length) {
        skip -= view.length;
        continue;
      }
      const n = Math.min(view.length - skip, r.length - at);
      view.set(r.subarray(at, at + n), skip);
      at += n;
      skip = 0;
    }
    return at;
  }

  discard(length: number): void {
    this.discarded += length;
  }

  send(data: Uint8Array): number {
    const n = Math.min(data.length, this.sendLimit);
    this.sent += n;
    return n === 0 && data.length > 0 ? WOULD_BLOCK : n;
  }

  /** Takes the bytes as {@link send} would, without reading them. */
  sendScattered(_frame: ScatteredFrame, _from: number, length: number): number {
    const n = Math.min(length, this.sendLimit);
    this.sent += n;
    return n === 0 && length > 0 ? WOULD_BLOCK : n;
  }

  queues(out: SocketQueues): void {
    this.queueQueries++;
    out.sendBuffer = this.sendBuffer;
    out.sendQueued = this.sendQueued;
    out.receiveQueued = 0;
  }

  shutdownWrite(): void {
    this.calls.push("shutdownWrite");
  }

  takeError(): Error | null {
    return this.error;
  }

  requestWritable(): void {
    this.writableRequests++;
  }

  wantReadable(wanted: boolean): void {
    if (wanted !== this.readableWanted) this.readableToggles++;
    this.readableWanted = wanted;
  }

  /**
   * Hands `events` to the handler as the event loop would: without EVENT_READABLE
   * while readable events are off (nothing when no other event is left).
   */
  deliver(events: number, now = performance.now()): void {
    const delivered = this.readableWanted ? events : (events & ~EVENT_READABLE) >>> 0;
    if (delivered !== 0) this.handler(delivered, now);
  }

  close(): void {
    this.calls.push("close");
  }

  reset(): void {
    this.calls.push("reset");
  }

  /** Reports the connect as finished (writable), as the event loop would. */
  complete(): void {
    this.handler(EVENT_WRITABLE, performance.now());
  }
}

/** A {@link HostTcp} over `connect` (and `listen`, which throws when omitted). */
export function scriptedHostTcp(
  connect: (hostname: string, port: number) => HostConnection,
  listen?: (events: ListenerEvents) => HostListener,
): HostTcp {
  return {
    connect,
    listen(hostname, port, _interfaceName, events) {
      if (listen === undefined) throw new Error(`no listeners here (${hostname} port ${port})`);
      return listen(events);
    },
  };
}

/** A constructor of {@link TestGuest} or of a subclass with the same parameters. */
export type TestGuestClass<G extends TestGuest> = new (
  tcp: L4Handler,
  udp: L4Handler | null,
  family: 4 | 6,
  addr4: number,
  addr6?: Uint8Array,
) => G;

/** A translator, its sender and a scripted guest wired together ({@link wiredTranslator}). */
export interface WiredTranslator<G extends TestGuest> {
  readonly sender: GuestSender;
  readonly tcp: TcpTranslator;
  readonly guest: G;
  /** Stops the guest and closes the translator. */
  close(): void;
}

/**
 * A translator (with `options`; a silent logger unless they name one) sending through
 * a {@link GuestSender} to a scripted guest of `family` at TEST_GUEST4 / TEST_GUEST6,
 * the guest's writable callback wired to the translator's.
 * @param guestClass the guest to make (default {@link TestGuest})
 */
export function wiredTranslator<G extends TestGuest = TestGuest>(
  options: TcpTranslatorOptions = {},
  family: 4 | 6 = 4,
  guestClass: TestGuestClass<G> = TestGuest as TestGuestClass<G>,
): WiredTranslator<G> {
  const sender = new GuestSender(DEFAULT_OUR_MAC);
  const logger = new Logger();
  logger.setSink(() => {});
  const tcp = new TcpTranslator(sender, testRules(), { logger, ...options });
  const guest = new guestClass(tcp, null, family, TEST_GUEST4, TEST_GUEST6);
  sender.setLink(guest);
  guest.onWritable((now) => tcp.linkWritable(now));
  const close = () => {
    guest.stop();
    tcp.close();
  };
  return { sender, tcp, guest, close };
}

/** A loopback host server and one connection to it from a scripted guest ({@link connectThroughGateway}). */
export interface GatewayConnection {
  /** The host server on 127.0.0.1 (still listening: the caller closes it). */
  readonly server: Deno.Listener;
  /** Its port. */
  readonly port: number;
  /** The guest's end. */
  readonly c: GuestTcpConn;
  /** The host's end, accepted by `server`. */
  readonly host: Deno.Conn;
}

/**
 * Starts a host server on 127.0.0.1 and connects `guest` to it through the gateway
 * (TEST_GATEWAY4); resolves once the guest's end is established (within `timeoutMs`)
 * and the server accepted the host's end.
 */
export async function connectThroughGateway(
  guest: TestGuest,
  timeoutMs = 5000,
): Promise<GatewayConnection> {
  const { listener: server, port } = loopbackListener();
  const accepted = server.accept();
  const c = guest.connect(TEST_GATEWAY4, port);
  await c.until(() => c.state === "established", timeoutMs, "established");
  return { server, port, c, host: await accepted };
}

/** A host peer sending a little at a time ({@link trickleFrom}). */
export interface Trickle {
  /** Bytes written so far. */
  readonly written: number;
  /** Stops writing. */
  stop(): void;
}

/** Writes `bytes` bytes (0x5a) on `host` every `everyMs` until stopped; failed writes are dropped. */
export function trickleFrom(host: Deno.Conn, bytes: number, everyMs: number): Trickle {
  let written = 0;
  const chunk = new Uint8Array(bytes).fill(0x5a);
  const timer = setInterval(() => {
    host.write(chunk).then((n) => (written += n)).catch(() => {});
  }, everyMs);
  return {
    get written() {
      return written;
    },
    stop: () => clearInterval(timer),
  };
}

/** A TCP listener on the host's 127.0.0.1 at a port the kernel picked, and that port. */
export function loopbackListener(): { listener: Deno.TcpListener; port: number } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return { listener, port: listener.addr.port };
}

/** A port of 127.0.0.1 nobody listens on (listened on once, then closed). */
export function closedLoopbackPort(): number {
  const { listener, port } = loopbackListener();
  listener.close();
  return port;
}
