/**
 * The TCP_REPAIR helper interface, speaking the protocol of passt's `passt-repair`
 * so that an existing deployment works unchanged: tpasst listens on a unix socket
 * (`--repair-path`, default the vhost-user socket's path plus ".repair"); the
 * helper, which owns CAP_NET_ADMIN, connects to it. For each batch tpasst sends one
 * message of one byte, the TCP_REPAIR value as a signed 8-bit integer (1 on, 0 off,
 * -1 off without window probe), with 1 to 253 sockets attached (SCM_RIGHTS); the
 * helper sets that value on each and echoes the byte back, or exits on failure
 * (the connection closes). One helper at a time: a second connection is closed.
 *
 * While no helper is connected, repair mode is switched directly, which works when
 * tpasst itself has CAP_NET_ADMIN (as root).
 *
 * @module
 */

import { UnixListener } from "../../ffi/unix_listener.ts";
import type { UnixStream } from "../../ffi/unix_stream.ts";
import { MAX_FDS_PER_MESSAGE } from "../../ffi/unix_stream.ts";
import { type TcpRepairMode, waitReadable } from "../../ffi/tcp_repair.ts";
import { removeFile } from "../../ffi/output_file.ts";
import type { Logger } from "../log/logger.ts";
import type { EventLoop } from "../loop/event_loop.ts";
import { directRepair, type RepairSwitch } from "../net/tcp/repair.ts";

/** How long a batch waits for the helper's echo before giving up (the VM is paused meanwhile). */
export const REPAIR_REPLY_TIMEOUT_MS = 5_000;
/** How long a migration waits for a helper that has not connected yet (passt: 10 ms). */
export const REPAIR_ACCEPT_WAIT_MS = 10;

/** The default helper socket path for the vhost-user socket at `socketPath`. */
export function defaultRepairPath(socketPath: string): string {
  return `${socketPath}.repair`;
}

/** Listens for a passt-repair helper and switches repair mode through it; see the module comment. */
export class RepairHelperServer implements RepairSwitch {
  readonly #listener: UnixListener;
  readonly #loop: EventLoop;
  readonly #log: Logger;
  readonly #path: string;
  #helper: UnixStream | null = null;
  #closed = false;

  /**
   * Listens at `path` (a stale socket file there is replaced).
   * @throws NativeError when the path cannot be bound
   */
  constructor(path: string, loop: EventLoop, log: Logger) {
    this.#path = path;
    this.#loop = loop;
    this.#log = log;
    try {
      this.#listener = UnixListener.listen(path);
    } catch {
      removeFile(path);
      this.#listener = UnixListener.listen(path);
    }
    loop.watch(this.#listener.fd, () => this.#acceptPending());
  }

  /** Whether a helper is connected now. */
  get connected(): boolean {
    return this.#helper !== null;
  }

  /**
   * Sets TCP_REPAIR `mode` on every socket of `fds` through the helper, or directly
   * when none is connected.
   * @throws Error when the helper fails, or the direct way is not permitted
   */
  set(fds: readonly number[], mode: TcpRepairMode): void {
    if (fds.length === 0) return;
    if (this.#helper === null) {
      if (waitReadable(this.#listener.fd, REPAIR_ACCEPT_WAIT_MS)) this.#acceptPending();
    }
    const helper = this.#helper;
    if (helper === null) {
      directRepair.set(fds, mode);
      return;
    }
    const command = new Uint8Array([mode & 0xff]);
    const reply = new Uint8Array(1);
    try {
      for (let at = 0; at < fds.length; at += MAX_FDS_PER_MESSAGE) {
        const batch = fds.slice(at, at + MAX_FDS_PER_MESSAGE);
        if (helper.sendWithFds(command, batch) !== 1) {
          throw new Error("the helper's socket is full");
        }
        if (!waitReadable(helper.fd, REPAIR_REPLY_TIMEOUT_MS)) {
          throw new Error(`no reply within ${REPAIR_REPLY_TIMEOUT_MS} ms`);
        }
        const n = helper.recv(reply);
        if (n === 0) {
          throw new Error("the helper closed the connection (it could not set TCP_REPAIR)");
        }
        if (n !== 1 || reply[0] !== command[0]) {
          throw new Error(`unexpected reply ${reply[0]} to command ${mode}`);
        }
      }
    } catch (error) {
      this.#dropHelper();
      throw new Error(`TCP_REPAIR helper: ${(error as Error).message}`);
    }
  }

  /** Stops listening, drops the helper (it exits on the end of file) and removes the socket file. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#dropHelper();
    if (this.#loop.isWatching(this.#listener.fd)) this.#loop.unwatch(this.#listener.fd);
    this.#listener.close();
    removeFile(this.#path);
  }

  #acceptPending(): void {
    for (;;) {
      let stream: UnixStream | null;
      try {
        stream = this.#listener.accept();
      } catch (error) {
        this.#log.warn(`Cannot accept a TCP_REPAIR helper: ${(error as Error).message}`);
        return;
      }
      if (stream === null) return;
      if (this.#helper !== null) {
        this.#log.info("Closing a second TCP_REPAIR helper connection: one is connected");
        stream.close();
        continue;
      }
      this.#helper = stream;
      this.#log.info(`TCP_REPAIR helper connected on ${this.#path}`);
      // a hang-up (the helper exited) ends it
      this.#loop.watch(stream.fd, () => {
        const probe = new Uint8Array(1);
        try {
          if (stream!.recv(probe) === -1) return; // nothing: spurious
        } catch { /* reset: gone */ }
        this.#log.info("TCP_REPAIR helper disconnected");
        this.#dropHelper();
      });
    }
  }

  #dropHelper(): void {
    const helper = this.#helper;
    this.#helper = null;
    if (helper === null) return;
    if (this.#loop.isWatching(helper.fd)) this.#loop.unwatch(helper.fd);
    helper.close();
  }
}
