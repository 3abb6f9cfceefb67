/**
 * The parent side of daemonizing, like passt: validate, bind the socket (so errors
 * show before the command returns), start a detached copy that inherits the socket,
 * wait until it reports ready (it has written its pid file by then), relay what it
 * logged meanwhile (the QEMU options hint, or its reason for failing) to standard
 * error, and exit 0; or exit 1.
 *
 * @module
 */

import { spawnDaemon, waitForDaemonReady } from "../../ffi/process.ts";
import { UnixStream } from "../../ffi/unix_stream.ts";
import { removeFile } from "../../ffi/output_file.ts";
import { INTERNAL_LISTEN_FD_OPTION, INTERNAL_STATUS_FD_OPTION } from "../config/command_line.ts";
import type { Config } from "../config/config.ts";
import { log } from "../log/logger.ts";
import { adoptConnectedSocket } from "./inherited_socket.ts";
import { bindSocket, type BoundSocket, SocketPathError } from "./socket_path.ts";

/** How long the parent waits for the child to report ready. */
export const DAEMON_READY_TIMEOUT_MS = 30_000;

/** Bytes read per call when relaying the child's start-up log. */
const RELAY_BUFFER_SIZE = 65536;

/**
 * Runs the daemonizing parent; resolves to the process exit code (0 once the child
 * is ready).
 */
export function daemonize(config: Config): number {
  let bound: BoundSocket | null = null;
  const keepFds: number[] = [];
  const extraArgs: string[] = [];
  if (config.fd !== null) {
    try {
      adoptConnectedSocket(config.fd);
    } catch (error) {
      log.error(error instanceof Error ? error.message : String(error));
      return 1;
    }
    keepFds.push(config.fd);
  } else {
    try {
      bound = bindSocket(config.socketPath);
    } catch (error) {
      if (error instanceof SocketPathError) {
        log.error(error.message);
        return 1;
      }
      throw error;
    }
    keepFds.push(bound.listener.fd);
    extraArgs.push(`--${INTERNAL_LISTEN_FD_OPTION}=${bound.listener.fd}`);
    if (config.socketPath === null) extraArgs.push(`--socket=${bound.path}`);
  }

  const [status, childStatus] = UnixStream.pair(true);
  let exitCode = 1;
  try {
    keepFds.push(childStatus.fd);
    extraArgs.push(`--${INTERNAL_STATUS_FD_OPTION}=${childStatus.fd}`);
    let spawned;
    try {
      spawned = spawnDaemon(extraArgs, keepFds);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      log.error(
        config.fd !== null
          ? `Cannot start the daemon with --fd ${config.fd}: ${reason}`
          : `Cannot start the daemon: ${reason}`,
      );
      return 1;
    } finally {
      childStatus.close();
    }
    const result = waitForDaemonReady(spawned.readyFd, DAEMON_READY_TIMEOUT_MS);
    relayStatus(status);
    switch (result.state) {
      case "ready":
        exitCode = 0;
        break;
      case "exited":
        log.error(
          `The daemon (pid ${spawned.pid}) exited with status ${result.status} during start-up`,
        );
        break;
      case "timeout":
        log.error(
          `The daemon (pid ${spawned.pid}) did not report ready within ` +
            `${DAEMON_READY_TIMEOUT_MS / 1000} s`,
        );
        break;
    }
    return exitCode;
  } finally {
    status.close();
    if (bound !== null) {
      // The child owns the socket now; if it failed, the socket file is ours to remove.
      bound.listener.close();
      if (exitCode !== 0) removeFile(bound.path);
    }
  }
}

/** Copies what the child logged before it was ready to our standard error. */
function relayStatus(stream: UnixStream): void {
  const buffer = new Uint8Array(RELAY_BUFFER_SIZE);
  for (;;) {
    let n: number;
    try {
      n = stream.recv(buffer);
    } catch {
      return;
    }
    if (n <= 0) return;
    Deno.stderr.writeSync(buffer.subarray(0, n));
  }
}
