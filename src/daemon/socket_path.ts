/**
 * Chooses and binds the unix socket QEMU connects to, like passt: the path given
 * with `-s`, or else the first free `/tmp/tpasst_N.socket` for N = 1..64. A path is
 * free when no file exists or when it is a stale socket nobody listens on (which is
 * then removed); it is in use when a connection to it succeeds.
 *
 * @module
 */

import { Errno, NativeError } from "../../ffi/native_error.ts";
import { OutputFile, removeFile } from "../../ffi/output_file.ts";
import { UnixListener, unixSocketInUse } from "../../ffi/unix_listener.ts";

/** First N of the default `/tmp/tpasst_N.socket` paths (passt probes 1..64 too). */
export const FIRST_DEFAULT_SOCKET = 1;
/** Last N of the default `/tmp/tpasst_N.socket` paths. */
export const LAST_DEFAULT_SOCKET = 64;

/** The default socket path number `n`. */
export function defaultSocketPath(n: number): string {
  return `/tmp/tpasst_${n}.socket`;
}

/** A listening socket and the path it is bound to. */
export interface BoundSocket {
  readonly listener: UnixListener;
  readonly path: string;
}

/** Why no socket could be bound; the message is meant for the operator. */
export class SocketPathError extends Error {
  override name = "SocketPathError";
}

/**
 * Tells whether the existing file at `path` is a socket, without read permission on
 * its directory: open(2) for writing fails with ENXIO on a socket; a regular file
 * opens (in append mode, so nothing is changed) and is closed again.
 */
export function isSocketFile(path: string): boolean {
  try {
    OutputFile.open(path, { append: true }).close();
    return false;
  } catch (error) {
    return error instanceof NativeError && error.errno === Errno.ENXIO;
  }
}

/**
 * Binds `path` if it is free, removing a stale socket file first.
 * Returns null if a live listener owns it.
 * @throws NativeError for other failures (EACCES, ENAMETOOLONG…)
 */
export function tryListen(path: string): UnixListener | null {
  if (unixSocketInUse(path)) return null;
  try {
    return UnixListener.listen(path);
  } catch (error) {
    if (!(error instanceof NativeError) || error.errno !== Errno.EADDRINUSE) throw error;
  }
  // Something is at the path but nobody listens: a stale socket of a dead process,
  // unless it is some other kind of file, which is never removed.
  if (!isSocketFile(path)) {
    throw new SocketPathError(`${path} exists and is not a socket; not removing it`);
  }
  removeFile(path);
  try {
    return UnixListener.listen(path);
  } catch (error) {
    // Another process bound it between our removal and our bind.
    if (error instanceof NativeError && error.errno === Errno.EADDRINUSE) return null;
    throw error;
  }
}

/**
 * Binds the socket given with `-s`, or the first free default path.
 * @throws SocketPathError saying which path is in use, or why binding failed
 */
export function bindSocket(explicitPath: string | null): BoundSocket {
  if (explicitPath !== null) {
    let listener: UnixListener | null;
    try {
      listener = tryListen(explicitPath);
    } catch (error) {
      if (error instanceof SocketPathError) throw error;
      throw new SocketPathError(`Cannot listen on ${explicitPath}: ${describe(error)}`);
    }
    if (listener === null) {
      throw new SocketPathError(`Socket path ${explicitPath} is in use by another process`);
    }
    return { listener, path: explicitPath };
  }
  const failures: string[] = [];
  for (let n = FIRST_DEFAULT_SOCKET; n <= LAST_DEFAULT_SOCKET; n++) {
    const path = defaultSocketPath(n);
    try {
      const listener = tryListen(path);
      if (listener !== null) return { listener, path };
    } catch (error) {
      failures.push(`${path}: ${describe(error)}`);
    }
  }
  throw new SocketPathError(
    `No free socket path among ${defaultSocketPath(FIRST_DEFAULT_SOCKET)} .. ` +
      `${defaultSocketPath(LAST_DEFAULT_SOCKET)}` +
      (failures.length > 0 ? ` (first failure: ${failures[0]})` : " (all in use)"),
  );
}

function describe(error: unknown): string {
  if (error instanceof NativeError) return error.errnoName;
  return error instanceof Error ? error.message : String(error);
}
