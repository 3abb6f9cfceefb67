/**
 * The host side of `-t` forwards: a nonblocking listening helper socket on the event
 * loop whose accepted connections go to the translator (host_side.ts), sized and
 * drained for bursts. Its backlog is the host's `net.core.somaxconn`, as a server
 * expecting bursts sets it, not the 128 of textbooks: a burst of connections larger
 * than the backlog overflows the kernel's accept queue while the daemon is busy, and
 * the kernel then drops the handshakes it cannot queue (the client may see a reset,
 * or a connection nobody ever accepts). Each readiness event accepts in batches until
 * the queue is empty (EAGAIN), at most {@link ACCEPTS_PER_TURN} per turn of the
 * event loop so that a burst does not hold up everything else; the rest follows on
 * the next turn (edge-triggered: no new event would come for them).
 *
 * @module
 */

import { readKernelFile } from "../../../ffi/kernel_file.ts";
import type { TcpListenSocket, TcpSocket } from "../../../ffi/tcp_socket.ts";
import {
  EVENT_EDGE_TRIGGERED,
  EVENT_READABLE,
  type EventLoop,
  runSoon,
  type SoonTask,
} from "../../loop/event_loop.ts";
import { RateLimitedLog } from "../../log/rate_limited_log.ts";
import type { HostConnection, HostListener, ListenerEvents } from "./host_socket.ts";
import { addressText } from "../../../ffi/ip_address_text.ts";

/**
 * Listen backlog where `/proc/sys/net/core/somaxconn` cannot be read: the kernel's
 * SOMAXCONN since Linux 5.4 (include/linux/socket.h), and somaxconn's default there.
 */
export const SOMAXCONN = 4096;

/** Most connections one listener accepts per turn of the event loop. */
export const ACCEPTS_PER_TURN = 256;

/** Wait before retrying an accept that failed (EMFILE...), in ms. */
const ACCEPT_RETRY_MS = 100;

/** Accept failures, one log line per interval. */
const acceptLog = new RateLimitedLog("warn");

/** The backlog given to listen(): net.core.somaxconn (the kernel caps it there anyway); read once. */
let backlog = 0;

/** The listen backlog for forwarded ports: the host's somaxconn, else {@link SOMAXCONN}. */
export function listenBacklog(): number {
  if (backlog > 0) return backlog;
  let value = 0;
  try {
    // Through the helper: Deno refuses /proc/sys without --allow-all.
    value = Number(readKernelFile("/proc/sys/net/core/somaxconn", 64)?.trim()) || 0;
  } catch { /* not readable: the default below */ }
  backlog = Number.isInteger(value) && value > 0 ? value : SOMAXCONN;
  return backlog;
}

/** A listener over a helper socket on the event loop; see the module comment. */
export class NativeHostListener implements HostListener {
  readonly #socket: TcpListenSocket;
  readonly #loop: EventLoop;
  readonly #fd: number;
  readonly #events: ListenerEvents;
  readonly #wrap: (socket: TcpSocket) => HostConnection;
  readonly port: number;
  #retry: ReturnType<typeof setTimeout> | undefined = undefined;
  #next: SoonTask | undefined = undefined;
  #closed = false;

  /**
   * @param socket the listening socket (closed with the listener)
   * @param events where accepted connections and a failure go
   * @param wrap turns an accepted socket into a connection on `loop`; throws (having
   *   closed the socket) when the loop refuses it
   */
  constructor(
    socket: TcpListenSocket,
    loop: EventLoop,
    events: ListenerEvents,
    wrap: (socket: TcpSocket) => HostConnection,
  ) {
    this.#socket = socket;
    this.#loop = loop;
    this.#fd = socket.fd;
    this.#events = events;
    this.#wrap = wrap;
    try {
      this.port = socket.localAddress().port;
      loop.watch(this.#fd, () => this.#drain(), (EVENT_READABLE | EVENT_EDGE_TRIGGERED) >>> 0);
    } catch (error) {
      this.#closed = true;
      socket.close();
      throw error;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#retry !== undefined) clearTimeout(this.#retry);
    this.#next?.cancel();
    this.#next = undefined;
    if (this.#loop.isWatching(this.#fd)) this.#loop.unwatch(this.#fd);
    this.#socket.close();
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

  /** Accepts until the queue is empty or this turn's budget is spent (then goes on soon). */
  #drain(): void {
    for (let budget = ACCEPTS_PER_TURN; !this.#closed; budget--) {
      if (budget === 0) {
        if (this.#next === undefined) {
          this.#next = runSoon(() => {
            this.#next = undefined;
            this.#drain();
          });
        }
        return;
      }
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
      let connection: HostConnection;
      try {
        connection = this.#wrap(accepted.socket);
      } catch (error) {
        // The loop refused the socket (closed, out of epoll watches), which closed it.
        acceptLog.write(
          performance.now(),
          `tcp: cannot take a forwarded connection: ${(error as Error).message}`,
        );
        continue;
      }
      this.#events.accepted({
        connection,
        peerHostname: addressText(accepted.peer.address),
        peerAddress: accepted.peer.address,
        peerPort: accepted.peer.port,
      });
    }
  }
}
