/**
 * Process-level helpers: daemonizing (Deno cannot fork), the open-fd count for leak
 * tests, closing raw descriptors, and trimming the C heap.
 *
 * Daemonizing: the parent calls {@link spawnDaemon}, which starts a detached copy of
 * the running program (same executable, same command line — `deno run … main.ts args`
 * or a `deno compile`d binary alike) with `extraArgs` appended and, last,
 * `--daemon-ready-fd=N`. The copy sees that option, does NOT daemonize again, sets
 * itself up, then calls {@link signalDaemonReady}(N). Meanwhile the parent calls
 * {@link waitForDaemonReady} and exits once the child reports ready.
 *
 * @module
 */
import { cString, helper } from "./library.ts";
import { NativeError } from "./native_error.ts";

/** Option appended to the child's command line as `--daemon-ready-fd=N`. */
export const DAEMON_READY_FD_OPTION = "--daemon-ready-fd";

/** Results of tp_daemon_wait_ready (native/tpasst_helper.h). */
const DAEMON_TIMEOUT = 0;
const DAEMON_READY = 1;
const DAEMON_EXITED = 2;

/** A spawned daemon child: its pid and the read end of its readiness pipe. */
export interface SpawnedDaemon {
  /** The child's process id. */
  pid: number;
  /** Read end of the readiness pipe; pass it to {@link waitForDaemonReady}. */
  readyFd: number;
}

/** Outcome of {@link waitForDaemonReady}. */
export type DaemonReadiness =
  | { state: "ready" }
  | { state: "exited"; status: number }
  | { state: "timeout" };

/** Pids of spawned children by readiness fd, so the wait can reap the right child. */
const childByReadyFd = new Map<number, number>();

/**
 * Starts a detached copy of this program: new session, stdin/stdout/stderr on
 * /dev/null, only `keepFds` (same numbers, each >= 3) and the readiness pipe open,
 * same working directory and environment. Its command line is this process's plus
 * `extraArgs` plus `--daemon-ready-fd=N`.
 * @throws NativeError (EBADF when a kept fd is not open, EINVAL for a kept fd < 3)
 */
export function spawnDaemon(extraArgs: string[], keepFds: number[]): SpawnedDaemon {
  const parts = extraArgs.map((arg) => cString(arg));
  const packed = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    packed.set(part, offset);
    offset += part.length;
  }
  const keep = Int32Array.from(keepFds);
  const out = new Int32Array(2);
  const rc = helper().tp_daemon_spawn(
    packed,
    packed.length,
    new Uint8Array(keep.buffer),
    keep.length,
    cString(DAEMON_READY_FD_OPTION),
    new Uint8Array(out.buffer),
  );
  if (rc < 0) throw new NativeError(-rc, `daemon_spawn(keep fds [${keepFds.join(", ")}])`);
  childByReadyFd.set(out[1], out[0]);
  return { pid: out[0], readyFd: out[1] };
}

/**
 * Waits up to `timeoutMs` for the child spawned with `readyFd` to report readiness
 * (blocking the JS thread). On "ready" and "exited" the readiness fd is closed; on
 * "timeout" it stays open (wait again, or kill the child and {@link closeFd} it).
 * `status` is the exit code, or 128 + the signal number if the child was killed.
 */
export function waitForDaemonReady(readyFd: number, timeoutMs: number): DaemonReadiness {
  const pid = childByReadyFd.get(readyFd);
  if (pid === undefined) {
    throw new Error(`Cannot wait for daemon readiness on fd ${readyFd}: not from spawnDaemon()`);
  }
  const status = new Int32Array(1);
  const rc = helper().tp_daemon_wait_ready(
    readyFd,
    pid,
    Math.max(0, Math.min(Math.floor(timeoutMs), 0x7fffffff)),
    new Uint8Array(status.buffer),
  );
  if (rc < 0) throw new NativeError(-rc, `daemon_wait_ready(pid ${pid})`);
  if (rc === DAEMON_TIMEOUT) return { state: "timeout" };
  childByReadyFd.delete(readyFd);
  helper().tp_close(readyFd);
  if (rc === DAEMON_READY) return { state: "ready" };
  if (rc === DAEMON_EXITED) return { state: "exited", status: status[0] };
  throw new Error(`daemon_wait_ready returned unknown state ${rc}`);
}

/**
 * Child side: reports readiness to the parent through `fd` (the N of
 * `--daemon-ready-fd=N`) and closes it. Returns false if the parent is gone already.
 */
export function signalDaemonReady(fd: number): boolean {
  return helper().tp_daemon_signal_ready(fd) === 0;
}

/**
 * Parses `--daemon-ready-fd=N` out of `args`; returns N, or null if absent.
 * @throws RangeError when the value is not a descriptor number
 */
export function daemonReadyFdFromArgs(args: readonly string[]): number | null {
  const prefix = DAEMON_READY_FD_OPTION + "=";
  for (const arg of args) {
    if (!arg.startsWith(prefix)) continue;
    const text = arg.slice(prefix.length);
    const fd = Number(text);
    if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(fd)) {
      throw new RangeError(`Invalid ${DAEMON_READY_FD_OPTION} value ${JSON.stringify(text)}`);
    }
    return fd;
  }
  return null;
}

/**
 * Reaps the child `pid`: returns its exit status (128 + signal if killed), or null if
 * it still runs and `block` is false. Blocks the JS thread when `block` is true.
 * @throws NativeError ECHILD if `pid` is not an unreaped child of this process
 */
export function reapChild(pid: number, block: boolean): number | null {
  const status = new Int32Array(1);
  const rc = helper().tp_waitpid(pid, block ? 0 : 1, new Uint8Array(status.buffer));
  if (rc < 0) throw new NativeError(-rc, `waitpid(${pid})`);
  return rc === 0 ? null : status[0];
}

/** Number of open file descriptors of this process (entries of /proc/self/fd). */
export function openFdCount(): number {
  const rc = helper().tp_open_fd_count();
  if (rc < 0) throw new NativeError(-rc, "open_fd_count");
  return rc;
}

/**
 * Gives the free pages of the C heap (glibc's malloc arenas, where the runtime's
 * native side allocates) back to the kernel: malloc_trim(0).
 * @returns whether any memory was released
 */
export function trimNativeHeap(): boolean {
  return helper().tp_malloc_trim() === 1;
}

/**
 * Drops this process's page-table entries of `length` bytes at `address`
 * (madvise MADV_DONTNEED; both page-aligned). Only for a private file mapping that
 * was never written: its pages stay in the page cache and come back on the next
 * access; anywhere else the contents would be lost.
 * @throws NativeError (EINVAL for an unaligned or locked range, ENOMEM for a hole)
 */
export function dropCleanPages(address: bigint, length: bigint): void {
  const rc = helper().tp_madvise_dontneed(address, length);
  if (rc < 0) throw new NativeError(-rc, "madvise(MADV_DONTNEED)");
}

/**
 * Creates a close-on-exec pipe; returns its read end, then its write end (raw fds:
 * close them with {@link closeFd}). Tests hand these over where eventfds belong.
 */
export function createPipe(): [number, number] {
  const fds = new Int32Array(2);
  const rc = helper().tp_pipe(new Uint8Array(fds.buffer));
  if (rc < 0) throw new NativeError(-rc, "pipe");
  return [fds[0], fds[1]];
}

/** Closes a raw descriptor (e.g. one received via SCM_RIGHTS and not adopted). */
export function closeFd(fd: number): void {
  const rc = helper().tp_close(fd);
  if (rc < 0) throw new NativeError(-rc, `close(fd ${fd})`);
}
