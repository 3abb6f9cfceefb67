/**
 * A {@link SessionFactory} for tests of the daemon's connection lifecycle (accept,
 * one frontend at a time, one-off, shutdown): each session logs the connection,
 * reads and discards whatever the frontend sends, and ends on end of file. Not a
 * protocol implementation.
 *
 * @module
 */

import type { UnixStream } from "../../../ffi/unix_stream.ts";
import { log } from "../../../src/log/logger.ts";
import { EVENT_ERROR, EVENT_HANGUP, type EventLoop } from "../../../src/loop/event_loop.ts";
import type { FrontendSession, SessionFactory } from "../../../src/tap/frontend_session.ts";

/** Bytes read per readable event. */
const DISCARD_BUFFER_SIZE = 65536;

/** Reads at most this many buffers per readable event, so one peer cannot starve the loop. */
const MAX_READS_PER_EVENT = 16;

/** Creates discard sessions labelled with `mode` in their log lines. */
export function discardSessionFactory(mode: string): SessionFactory {
  let counter = 0;
  return (connection, loop) => new DiscardSession(connection, loop, `${mode} #${++counter}`);
}

class DiscardSession implements FrontendSession {
  readonly closed: Promise<void>;
  readonly #connection: UnixStream;
  readonly #loop: EventLoop;
  readonly #label: string;
  readonly #buffer = new Uint8Array(DISCARD_BUFFER_SIZE);
  #resolve!: () => void;
  #done = false;
  #received = 0;

  constructor(connection: UnixStream, loop: EventLoop, label: string) {
    this.#connection = connection;
    this.#loop = loop;
    this.#label = label;
    this.closed = new Promise((resolve) => (this.#resolve = resolve));
    connection.setNonBlocking(true);
    log.info(
      `frontend ${label} connected (discard session: input is discarded)`,
    );
    loop.watch(connection.fd, (events) => this.#onEvent(events));
  }

  #onEvent(events: number): void {
    try {
      for (let i = 0; i < MAX_READS_PER_EVENT; i++) {
        const n = this.#connection.recv(this.#buffer);
        if (n === 0) return this.#finish("disconnected");
        if (n < 0) break;
        this.#received += n;
      }
    } catch (error) {
      return this.#finish(`failed: ${error instanceof Error ? error.message : error}`);
    }
    if ((events & (EVENT_HANGUP | EVENT_ERROR)) !== 0) this.#finish("hung up");
  }

  close(): void {
    this.#finish("closed by the daemon");
  }

  #finish(reason: string): void {
    if (this.#done) return;
    this.#done = true;
    this.#loop.unwatch(this.#connection.fd);
    this.#connection.close();
    log.info(`frontend ${this.#label} ${reason} after ${this.#received} bytes`);
    this.#resolve();
  }
}
