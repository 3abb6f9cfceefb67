/**
 * The seam between the daemon's lifecycle and the protocols: the daemon accepts one
 * frontend connection at a time and hands it to a {@link SessionFactory} chosen by
 * mode (vhost-user: src/vhost_user/, stream: src/tap/). The daemon knows nothing of
 * the protocol spoken on the connection.
 *
 * @module
 */

import type { UnixStream } from "../../ffi/unix_stream.ts";
import type { EventLoop } from "../loop/event_loop.ts";

/** Serves one connected frontend (QEMU) until it goes away or is closed. */
export interface FrontendSession {
  /**
   * Settles once the session is over: the frontend disconnected, a protocol error
   * ended it, or {@link close} was called. Never rejects; errors are logged. By then
   * every resource of the session is released (fds closed, guest memory unmapped,
   * loop watches removed), the connection included.
   */
  readonly closed: Promise<void>;

  /**
   * Ends the session now (shutdown, signal): releases everything as above and
   * settles {@link closed}. Safe to call more than once, and after the end.
   */
  close(): void;
}

/**
 * Starts serving `connection` on `loop`. The session owns the connection from now on
 * (it closes it). Must not throw for anything the frontend sends; may throw only if
 * the session cannot be set up at all, in which case the daemon closes the connection.
 */
export type SessionFactory = (connection: UnixStream, loop: EventLoop) => FrontendSession;
