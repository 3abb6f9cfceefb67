/**
 * Serves frontends one at a time on the event loop: accepts connections on the
 * listening socket, hands the first to the session factory, and accepts and closes
 * (with a log line) any other while one is active; after a disconnect the next
 * connection is served. A connection that comes while a frontend is served waits up
 * to {@link NEXT_FRONTEND_WAIT_MS} for that one to go before it is refused: the
 * previous frontend's hang-up may sit in the same batch of events (a readiness probe
 * that connects and closes, then QEMU), and is only seen once that batch is handled.
 * With `--one-off` (or `--fd`) the server finishes when the first frontend goes away.
 *
 * @module
 */

import type { UnixListener } from "../../ffi/unix_listener.ts";
import type { UnixStream } from "../../ffi/unix_stream.ts";
import { log } from "../log/logger.ts";
import { RateLimitedLog } from "../log/rate_limited_log.ts";
import type { EventLoop } from "../loop/event_loop.ts";
import type { FrontendSession, SessionFactory } from "../tap/frontend_session.ts";

/** Connections accepted per readable event at most (then the loop gets a turn). */
const MAX_ACCEPTS_PER_EVENT = 16;

/** Pause before accepting again after accept() failed (e.g. EMFILE: out of fds). */
export const ACCEPT_BACKOFF_MS = 100;

/**
 * How long a connection that comes while a frontend is served waits for that frontend
 * to go before it is refused (one waits at a time; others are refused at once).
 */
export const NEXT_FRONTEND_WAIT_MS = 500;

/** Why {@link FrontendServer.finished} settled. */
export type FinishReason = "one-off" | "stopped";

/** Accepts and serves frontends; see the module comment. */
export class FrontendServer {
  readonly #loop: EventLoop;
  readonly #factory: SessionFactory;
  readonly #oneOff: boolean;
  #listener: UnixListener | null = null;
  #session: FrontendSession | null = null;
  #sessionsServed = 0;
  #refused = 0;
  #finished = false;
  #backoff: ReturnType<typeof setTimeout> | undefined = undefined;
  /** A connection that came while a frontend was served, waiting for it to go. */
  #waiting: UnixStream | null = null;
  #waitTimer: ReturnType<typeof setTimeout> | undefined = undefined;
  readonly #acceptErrors = new RateLimitedLog("error");
  #resolveFinished!: (reason: FinishReason) => void;
  /** Settles when the server is done: the one-off frontend left, or {@link stop} was called. */
  readonly finished: Promise<FinishReason>;

  /**
   * @param loop the loop the listener and sessions are watched on
   * @param factory builds the session for each served connection
   * @param oneOff finish once the first served frontend goes away
   */
  constructor(loop: EventLoop, factory: SessionFactory, oneOff: boolean) {
    this.#loop = loop;
    this.#factory = factory;
    this.#oneOff = oneOff;
    this.finished = new Promise((resolve) => (this.#resolveFinished = resolve));
  }

  /** Number of frontends served so far. */
  get sessionsServed(): number {
    return this.#sessionsServed;
  }

  /** Number of connections refused because a frontend was already being served. */
  get refused(): number {
    return this.#refused;
  }

  /** Starts accepting on `listener` (the server does not own it: {@link stop} unwatches it). */
  listen(listener: UnixListener): void {
    this.#listener = listener;
    this.#loop.watch(listener.fd, () => this.#onAcceptable());
  }

  /**
   * Serves an already connected frontend (`--fd`). Returns false (connection closed,
   * error logged) if the session could not be set up.
   */
  serveConnection(connection: UnixStream): boolean {
    return this.#startSession(connection);
  }

  /**
   * Stops accepting, closes the active session and waits until it released
   * everything; then {@link finished} settles with "stopped" (unless it already has).
   */
  async stop(): Promise<void> {
    if (this.#backoff !== undefined) {
      clearTimeout(this.#backoff);
      this.#backoff = undefined;
    }
    if (this.#listener !== null) {
      this.#loop.unwatch(this.#listener.fd);
      this.#listener = null;
    }
    const session = this.#session;
    if (session !== null) {
      session.close();
      await session.closed;
    }
    this.#finish("stopped");
  }

  #onAcceptable(): void {
    const listener = this.#listener;
    if (listener === null) return;
    for (let i = 0; i < MAX_ACCEPTS_PER_EVENT; i++) {
      let connection: UnixStream | null;
      try {
        connection = listener.accept();
      } catch (error) {
        // EMFILE and the like: the pending connection stays readable, so a
        // level-triggered watch would spin. Pause accepting for a while instead.
        this.#acceptErrors.write(
          performance.now(),
          `Cannot accept a frontend connection (retrying in ${ACCEPT_BACKOFF_MS} ms): ` +
            describe(error),
        );
        this.#pauseAccepting(listener);
        return;
      }
      if (connection === null) return;
      if (this.#finished) {
        this.#refuse(connection);
      } else if (this.#session === null) {
        log.info("Frontend connected");
        this.#startSession(connection);
      } else if (this.#waiting === null) {
        this.#waitForFree(connection);
      } else {
        this.#refuse(connection);
      }
    }
  }

  #refuse(connection: UnixStream): void {
    this.#refused++;
    log.warn(
      "Refusing a second frontend connection: one frontend is already connected " +
        "(tpasst serves one at a time)",
    );
    connection.close();
  }

  /** Holds `connection` until the served frontend goes, or refuses it after the wait. */
  #waitForFree(connection: UnixStream): void {
    this.#waiting = connection;
    this.#waitTimer = setTimeout(() => {
      this.#waitTimer = undefined;
      const waiting = this.#takeWaiting();
      if (waiting !== null) this.#refuse(waiting);
    }, NEXT_FRONTEND_WAIT_MS);
  }

  /** The waiting connection (no longer held), or null. */
  #takeWaiting(): UnixStream | null {
    const waiting = this.#waiting;
    this.#waiting = null;
    if (this.#waitTimer !== undefined) {
      clearTimeout(this.#waitTimer);
      this.#waitTimer = undefined;
    }
    return waiting;
  }

  #pauseAccepting(listener: UnixListener): void {
    this.#loop.unwatch(listener.fd);
    this.#backoff = setTimeout(() => {
      this.#backoff = undefined;
      if (this.#listener === listener && !this.#finished) {
        this.#loop.watch(listener.fd, () => this.#onAcceptable());
      }
    }, ACCEPT_BACKOFF_MS);
  }

  #startSession(connection: UnixStream): boolean {
    let session: FrontendSession;
    try {
      session = this.#factory(connection, this.#loop);
    } catch (error) {
      log.error(`Cannot start serving the frontend: ${describe(error)}`);
      connection.close();
      if (this.#oneOff) this.#finish("one-off");
      return false;
    }
    this.#session = session;
    this.#sessionsServed++;
    session.closed.then(() => {
      if (this.#session === session) this.#session = null;
      if (this.#oneOff) {
        log.info("Frontend gone and --one-off given: exiting");
        this.#finish("one-off");
      } else if (!this.#finished) {
        log.info("Frontend gone; waiting for the next connection");
        const waiting = this.#takeWaiting();
        if (waiting !== null) {
          log.info("Frontend connected");
          this.#startSession(waiting);
        }
      }
    });
    return true;
  }

  #finish(reason: FinishReason): void {
    if (this.#finished) return;
    this.#finished = true;
    const waiting = this.#takeWaiting();
    if (waiting !== null) this.#refuse(waiting);
    this.#resolveFinished(reason);
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
