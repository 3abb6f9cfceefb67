/**
 * Runs a vhost-user session in this process on its own event loop, connected to a
 * {@link VhostUserFrontend} through a socketpair: the quickest way to test the
 * control plane and datapath together over a real socket with real fds.
 *
 * @module
 */

import { UnixStream } from "../../../ffi/unix_stream.ts";
import { Logger } from "../../../src/log/logger.ts";
import { EventLoop } from "../../../src/loop/event_loop.ts";
import type { FrontendSession } from "../../../src/tap/frontend_session.ts";
import {
  createVhostUserSession,
  type VhostUserSessionOptions,
} from "../../../src/vhost_user/session.ts";
import type { VringDatapath } from "../../../src/tap/vring_datapath.ts";
import type { HarnessMemoryOptions } from "./shared_memory.ts";
import { VhostUserFrontend } from "./vhost_user_frontend.ts";

/** A running loop that sessions can be attached to. */
export class InProcessBackend {
  /** The event loop the sessions run on (running until close()). */
  readonly loop = new EventLoop();
  /** Every line the sessions logged as "level: line", oldest first. */
  readonly lines: string[] = [];
  /** The logger given to the sessions; writes into {@link lines}. */
  readonly logger = new Logger();
  readonly #running: Promise<void>;
  /** The sessions started by connect(), oldest first. */
  readonly sessions: FrontendSession[] = [];

  constructor() {
    this.logger.setLevel("debug");
    this.logger.setSink((level, line) => this.lines.push(`${level}: ${line}`));
    this.#running = this.loop.run();
  }

  /**
   * Connects a new front-end to a new session over `datapath`, with session `options`
   * besides the logger and the front-end's memory laid out by `memoryOptions`.
   */
  connect(
    datapath: VringDatapath,
    options: Omit<VhostUserSessionOptions, "logger"> = {},
    memoryOptions: HarnessMemoryOptions = {},
  ): { frontend: VhostUserFrontend; session: FrontendSession } {
    const [ours, theirs] = UnixStream.pair(true);
    let session: FrontendSession;
    try {
      session = createVhostUserSession(theirs, this.loop, () => datapath, {
        ...options,
        logger: this.logger,
      });
    } catch (error) {
      ours.close();
      theirs.close();
      throw error;
    }
    this.sessions.push(session);
    return { frontend: new VhostUserFrontend(ours, memoryOptions), session };
  }

  /** Lines logged at `level` ("error", "warn"...). */
  linesAt(level: string): string[] {
    return this.lines.filter((line) => line.startsWith(`${level}: `));
  }

  /** Closes every session and the loop. */
  async close(): Promise<void> {
    for (const session of this.sessions) session.close();
    await Promise.all(this.sessions.map((s) => s.closed));
    this.loop.stop();
    await this.#running;
    this.loop.close();
  }
}
