/**
 * Checks the connected socket inherited with `--fd` before relying on it, so that a
 * wrong number fails the start with a clear message instead of a later surprise.
 *
 * @module
 */

import { NativeError } from "../../ffi/native_error.ts";
import { UnixStream } from "../../ffi/unix_stream.ts";

/**
 * Adopts `fd` as a connected stream socket after checking it is one: a zero-length
 * send does nothing on a connected socket and fails on anything else (ENOTSOCK for a
 * file, EBADF if not open, EPIPE/ENOTCONN if the peer is gone).
 * @throws Error saying what is wrong with `--fd N`
 */
export function adoptConnectedSocket(fd: number): UnixStream {
  const stream = UnixStream.fromFd(fd);
  try {
    stream.send(new Uint8Array(0));
  } catch (error) {
    const reason = error instanceof NativeError ? error.errnoName : String(error);
    throw new Error(`--fd ${fd} is not a connected socket (${reason})`);
  }
  return stream;
}
