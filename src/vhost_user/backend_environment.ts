/**
 * What the vhost-user backend state machine needs from the outside world, as
 * interfaces: telling what a received fd is, eventfds, closing fds, watching kick
 * fds, mapping memory, the datapath. The session wires them to the native helper and
 * the event loop; unit tests wire them to doubles over ArrayBuffers.
 *
 * @module
 */

import type { Logger } from "../log/logger.ts";
import type { VringDatapath } from "../tap/vring_datapath.ts";
import type { MapFunction } from "./guest_memory_map.ts";
import type { LogMapFunction } from "./dirty_log.ts";

// What a received kick, call or err fd is: the backend takes only normal-mode eventfds.
import type { FdDescription } from "../../ffi/event_fd.ts";

/** An eventfd received from the front-end (kick, call or error notifier). */
export interface Notifier {
  /** The descriptor number (for logs). */
  readonly fd: number;
  /**
   * Adds 1 to the counter without blocking; a full counter is ignored.
   * @throws Error when the write fails (the backend catches it: the guest is then
   *   not signalled through this fd again)
   */
  signal(): void;
  /**
   * Reads the counter until it is empty (EAGAIN), without blocking and with a bound
   * on the reads: a counter that never empties (a semaphore-mode eventfd) cannot keep
   * the caller busy.
   */
  drain(): void;
  /** Closes the fd; safe to call twice. */
  close(): void;
}

/** Which way a device state transfer goes (spec "Migrating back-end state"). */
export type DeviceStateDirection = "save" | "load";

/**
 * The back-end's internal state in a migration (VHOST_USER_PROTOCOL_F_DEVICE_STATE):
 * the network side behind the rings. Offered to the front-end only when present.
 */
export interface DeviceStateHandler {
  /**
   * Starts a transfer over `fd` (the front-end's end of a pipe; ownership passes
   * here): "save" writes the state into it and closes it, "load" reads it until the
   * end of file. Returns at once; the transfer runs on the event loop.
   * @throws Error when no transfer can start (the reply then says so)
   */
  begin(direction: DeviceStateDirection, fd: number, now: number): void;
  /**
   * The outcome of the last transfer, for CHECK_DEVICE_STATE: null when it succeeded,
   * else why not. A load still reading finishes first (the front-end has closed its
   * end by then).
   */
  check(now: number): string | null;
}

/** Everything the backend uses besides its own state. */
export interface BackendEnvironment {
  /** The datapath that runs started rings. */
  readonly datapath: VringDatapath;
  /** Maps a memory region's fd. */
  readonly map: MapFunction;
  /** Maps the dirty log's fd (SET_LOG_BASE). */
  readonly mapLog: LogMapFunction;
  /**
   * Size in bytes of the file behind `fd`, or null when it cannot be known. Memory
   * regions must lie inside their file: touching a mapping beyond the end of its
   * file raises SIGBUS (the memory guard turns it into a dropped front-end when the
   * file shrinks later; a region that never fitted is refused up front).
   * @throws Error when `fd` cannot be examined
   */
  fileSize(fd: number): number | null;
  /**
   * Tells what the file behind a received kick, call or err fd is, so that only
   * eventfds in normal mode are used as notifiers (a semaphore-mode eventfd never
   * empties; a pipe or socket is not a counter).
   * @throws Error when `fd` cannot be examined
   */
  describeFd(fd: number): FdDescription;
  /**
   * Takes ownership of an eventfd received from the front-end; `kind` is what
   * {@link describeFd} said of it (always a normal-mode eventfd, perhaps unverified).
   */
  notifier(fd: number, kind: FdDescription): Notifier;
  /** Closes a received fd the backend does not keep. */
  closeFd(fd: number): void;
  /**
   * Runs `onReadable(now)` when `fd` becomes readable: once per new signal
   * (edge-triggered), so a counter left non-empty does not call it again and again.
   * @returns a function that stops watching
   */
  watchReadable(fd: number, onReadable: (now: number) => void): () => void;
  /** Where log lines go. */
  readonly log: Logger;
  /** The front-end asked to announce the guest's MAC (SEND_RARP). */
  onRarp?(mac: Uint8Array, now: number): void;
  /** The front-end set the MTU (NET_SET_MTU). */
  onMtu?(mtu: number, now: number): void;
  /** Saves and loads the device state in a migration; without it none is offered. */
  readonly deviceState?: DeviceStateHandler;
}
