/**
 * One vhost-user connection served on the daemon's event loop: reads messages from
 * the nonblocking control socket, feeds them to the backend state machine, and
 * releases everything (rings, views, mappings, fds, watches) when the front-end goes
 * away or breaks the protocol. This is the daemon's SessionFactory for
 * `--vhost-user` mode.
 *
 * @module
 */

import { describeFd, EventFd, type FdDescription } from "../../ffi/event_fd.ts";
import { Errno, NativeError } from "../../ffi/native_error.ts";
import { fileSizeOfFd, MappedMemory } from "../../ffi/mapped_memory.ts";
import { closeFd } from "../../ffi/process.ts";
import type { UnixStream } from "../../ffi/unix_stream.ts";
import { log as defaultLog, type Logger } from "../log/logger.ts";
import {
  EVENT_EDGE_TRIGGERED,
  EVENT_ERROR,
  EVENT_HANGUP,
  EVENT_READABLE,
  type EventLoop,
} from "../loop/event_loop.ts";
import type { FrontendSession, SessionFactory } from "../tap/frontend_session.ts";
import { InvalidStateError, VhostUserBackend } from "./backend.ts";
import type { BackendEnvironment, DeviceStateHandler, Notifier } from "./backend_environment.ts";
import type { Mapping } from "./guest_memory_map.ts";
import type { LogMapping } from "./dirty_log.ts";
import { watchMemoryFaults } from "./memory_fault_watch.ts";
import {
  ConnectionClosedError,
  type MessageChannel,
  MessageFramer,
  ProtocolError,
  type ReceiveOutcome,
  ReplyWriter,
} from "./message_codec.ts";
import { MAX_FDS_PER_MESSAGE, Request, requestName } from "./protocol.ts";
import type { VringDatapath } from "../tap/vring_datapath.ts";

/** Creates the datapath behind one session (a recording double in tests). */
export type DatapathFactory = () => VringDatapath;

/** Optional hooks and settings of a session. */
export interface VhostUserSessionOptions {
  /** Where log lines go (the process-wide logger by default). */
  readonly logger?: Logger;
  /** The front-end asked to announce the guest (SEND_RARP). */
  readonly onRarp?: (mac: Uint8Array, now: number) => void;
  /** The front-end set the MTU (NET_SET_MTU). */
  readonly onMtu?: (mtu: number, now: number) => void;
  /** Saves and loads the device state in a migration (none offered without it). */
  readonly deviceState?: DeviceStateHandler;
  /**
   * Size of the file behind a received memory fd (fstat), or null when unknown.
   * Default: stat of /proc/self/fd/N, which Deno allows only with --allow-all; the
   * daemon should pass a native fstat here (see the SIGBUS note in backend.ts).
   */
  readonly fileSize?: (fd: number) => number | null;
  /**
   * Tells what a received kick, call or err fd is (default: {@link describeFd}, from
   * fstat and /proc/self; tests stand in for a system without /proc).
   */
  readonly describeFd?: (fd: number) => FdDescription;
  /** Called once with the session's end reason (tests, statistics). */
  readonly onClose?: (reason: string) => void;
}

/**
 * What a front-end needs to give a vhost-user backend guest memory it can map: said
 * when a front-end leaves before sending its memory table (QEMU without a shared
 * memory backend gives up there) or sends memory that cannot be mapped shared.
 */
export const SHARED_MEMORY_HINT = "QEMU must give a vhost-user backend shared guest memory, " +
  "e.g. -object memory-backend-memfd,id=mem,size=<guest RAM>,share=on -numa node,memdev=mem " +
  "(or -machine memory-backend=mem)";

/** Messages handled per readable event, so that one front-end cannot starve the loop. */
const MAX_MESSAGES_PER_EVENT = 64;

/**
 * Kick fds are watched edge-triggered: every write to an eventfd wakes its watchers
 * again, so no kick is missed though the counter is never read while the ring runs
 * (the ring's stop empties it), and a counter left non-empty does not make the loop
 * call the handler over and over.
 */
const KICK_EVENTS = (EVENT_READABLE | EVENT_EDGE_TRIGGERED) >>> 0;

/**
 * Reads per drain of a received eventfd. In normal mode one read empties the counter;
 * this bounds the reads of an fd whose mode could not be verified.
 */
const MAX_DRAIN_READS = 8;

let sessionCounter = 0;

/** The control socket as a {@link MessageChannel}. */
class SocketChannel implements MessageChannel {
  readonly #connection: UnixStream;

  constructor(connection: UnixStream) {
    this.#connection = connection;
  }

  receive(into: Uint8Array, fds: number[]): ReceiveOutcome {
    let got;
    try {
      got = this.#connection.recvWithFds(into, MAX_FDS_PER_MESSAGE);
    } catch (error) {
      // a front-end that dies with unread replies resets the connection: a disconnect
      if (error instanceof NativeError && error.errno === Errno.ECONNRESET) return { kind: "eof" };
      throw error;
    }
    for (const fd of got.fds) fds.push(fd);
    if (got.fdsDropped) {
      throw new ProtocolError(
        0,
        `more than ${MAX_FDS_PER_MESSAGE} fds came with one message (the extra ones were closed)`,
      );
    }
    if (got.bytes < 0) return { kind: "pending" };
    if (got.bytes === 0) return { kind: "eof" };
    return { kind: "data", bytes: got.bytes };
  }

  // Never waits: a reply that does not fit the socket buffer now is an error (a
  // front-end that does not read its replies), not a reason to block the loop.
  send(data: Uint8Array): void {
    let written;
    try {
      written = this.#connection.send(data);
    } catch (error) {
      if (
        error instanceof NativeError &&
        (error.errno === Errno.EPIPE || error.errno === Errno.ECONNRESET)
      ) {
        throw new ConnectionClosedError(`front-end closed the connection before our reply`);
      }
      throw error;
    }
    if (written === data.length) return;
    throw new Error(
      written < 0
        ? `socket buffer full (EAGAIN) with ${data.length} bytes to send`
        : `short write of ${written} of ${data.length} bytes`,
    );
  }
}

/**
 * An eventfd received from the front-end, switched to O_NONBLOCK: the front-end keeps
 * its own copy and could drain it between our readiness event and our read, or fill
 * its counter so that a signal would block.
 */
class ReceivedEventFd implements Notifier {
  readonly fd: number;
  readonly #eventFd: EventFd;
  /** A verified normal-mode eventfd: one read returns the whole counter and empties it. */
  readonly #oneReadEmpties: boolean;

  constructor(fd: number, kind: FdDescription) {
    this.fd = fd;
    this.#oneReadEmpties = kind.normalEventFd && kind.verified;
    this.#eventFd = EventFd.fromFd(fd);
    try {
      this.#eventFd.setNonBlocking(true);
    } catch (error) {
      this.#eventFd.close();
      throw error;
    }
  }

  signal(): void {
    this.#eventFd.signal();
  }

  drain(): void {
    // a read that finds the counter at 0 returns 0 (EAGAIN)
    for (let i = 0; i < MAX_DRAIN_READS; i++) {
      if (this.#eventFd.drain() === 0 || this.#oneReadEmpties) return;
    }
  }

  close(): void {
    this.#eventFd.close();
  }
}

function mapRegion(fd: number, size: number, offset: number): Mapping {
  const memory = MappedMemory.map(fd, size, offset);
  return {
    bytes: memory.bytes,
    get faulted() {
      return memory.faulted;
    },
    unmap: () => memory.close(),
  };
}

function mapLog(fd: number, size: number, offset: number): LogMapping {
  const memory = MappedMemory.map(fd, size, offset);
  return {
    size: memory.size,
    atomicOrByte: (index, mask) => memory.atomicOrByte(index, mask),
    unmap: () => memory.close(),
  };
}

function hex(value: number): string {
  return "0x" + value.toString(16);
}

class VhostUserSession implements FrontendSession {
  readonly closed: Promise<void>;
  readonly #connection: UnixStream;
  readonly #loop: EventLoop;
  readonly #log: Logger;
  readonly #label: string;
  readonly #options: VhostUserSessionOptions;
  readonly #framer: MessageFramer;
  readonly #replies: ReplyWriter;
  readonly #backend: VhostUserBackend;
  readonly #datapath: VringDatapath;
  readonly #socketFd: number;
  readonly #unwatchMemoryFaults: () => void;
  #resolve!: () => void;
  #done = false;
  /** Messages received, and whether a memory table or region came (for the hint). */
  #messages = 0;
  #memorySent = false;
  #mappingFailed = false;

  constructor(
    connection: UnixStream,
    loop: EventLoop,
    datapath: VringDatapath,
    options: VhostUserSessionOptions,
  ) {
    this.#connection = connection;
    this.#loop = loop;
    this.#options = options;
    this.#log = options.logger ?? defaultLog;
    this.#label = `vhost-user #${++sessionCounter}`;
    this.closed = new Promise((resolve) => (this.#resolve = resolve));
    const channel = new SocketChannel(connection);
    this.#framer = new MessageFramer(channel);
    this.#replies = new ReplyWriter(channel);
    const env: BackendEnvironment = {
      datapath,
      map: (fd, size, offset) => {
        try {
          return mapRegion(fd, size, offset);
        } catch (error) {
          this.#mappingFailed = true;
          throw error;
        }
      },
      mapLog,
      fileSize: options.fileSize ?? fileSizeOfFd,
      describeFd: options.describeFd ?? describeFd,
      notifier: (fd, kind) => new ReceivedEventFd(fd, kind),
      closeFd: (fd) => this.#closeFd(fd),
      watchReadable: (fd, onReadable) => this.#watchKick(fd, onReadable),
      log: this.#log,
      onRarp: options.onRarp,
      onMtu: options.onMtu,
      deviceState: options.deviceState,
    };
    this.#backend = new VhostUserBackend(env);
    this.#datapath = datapath;
    connection.setNonBlocking(true);
    this.#socketFd = connection.fd;
    this.#unwatchMemoryFaults = watchMemoryFaults(loop, () => this.#onMemoryFault());
    try {
      loop.watch(this.#socketFd, (events, now) => this.#onSocket(events, now));
    } catch (error) {
      this.#unwatchMemoryFaults();
      throw error;
    }
    this.#log.info(`${this.#label}: front-end connected`);
  }

  close(): void {
    this.#finish("closed by the daemon", "info");
  }

  #onSocket(events: number, now: number): void {
    if (this.#done) return;
    try {
      for (let i = 0; i < MAX_MESSAGES_PER_EVENT; i++) {
        const outcome = this.#framer.poll();
        if (outcome.kind === "pending") {
          // an error or hang-up with nothing left to read would be reported again on
          // every wake-up of the (level-triggered) watch: end the session instead
          if ((events & EVENT_ERROR) !== 0) {
            return this.#finish("socket error on the control connection", "warn");
          }
          if ((events & EVENT_HANGUP) !== 0) {
            return this.#finish("hang-up on the control connection", "warn");
          }
          return;
        }
        if (outcome.kind === "eof") {
          return this.#finish(outcome.detail, outcome.midMessage ? "warn" : "info", true);
        }
        const request = outcome.message.request;
        this.#messages++;
        if (request === Request.SET_MEM_TABLE || request === Request.ADD_MEM_REG) {
          this.#memorySent = true;
        }
        this.#backend.handle(outcome.message, now, this.#replies);
      }
    } catch (error) {
      this.#fail(error);
    }
  }

  /**
   * A guarded SIGBUS hit a mapping somewhere in the process: if it is one of ours,
   * its file shrank and the region reads zeros now. The front-end is dropped (which
   * unmaps its memory); until then the datapath saw an empty or broken ring.
   */
  #onMemoryFault(): void {
    if (this.#done) return;
    const region = this.#backend.memory.faultedRegion();
    if (region === null) return;
    this.#finish(
      `guest memory region guest ${hex(region.guestAddress)} size ${
        hex(region.size)
      } became unreadable (its file shrank): dropping the front-end`,
      "error",
    );
  }

  #watchKick(fd: number, onReadable: (now: number) => void): () => void {
    this.#loop.watch(fd, (events, now) => {
      if (this.#done) return;
      try {
        if ((events & (EVENT_HANGUP | EVENT_ERROR)) !== 0) {
          throw new Error(
            `kick fd ${fd} reported ${events & EVENT_ERROR ? "an error" : "hang-up"}`,
          );
        }
        onReadable(now);
      } catch (error) {
        this.#fail(error);
      }
    }, KICK_EVENTS);
    return () => this.#loop.unwatch(fd);
  }

  #fail(error: unknown): void {
    if (error instanceof ConnectionClosedError) {
      this.#finish(error.message, "info", true);
    } else if (error instanceof InvalidStateError) {
      this.#finish(`protocol error: ${error.message}`, "error");
    } else if (error instanceof ProtocolError) {
      this.#finish(
        `protocol error: ${error.message} (state ${this.#backend.state}${
          error.request ? `, request ${requestName(error.request)}` : ""
        })`,
        "error",
      );
    } else {
      const message = error instanceof Error ? error.message : String(error);
      this.#finish(`failed: ${message} (state ${this.#backend.state})`, "error");
    }
  }

  #closeFd(fd: number): void {
    try {
      closeFd(fd);
    } catch (error) {
      this.#log.warn(`${this.#label}: closing fd ${fd} failed: ${(error as Error).message}`);
    }
  }

  /** Releases everything the session holds; each step runs even when an earlier one fails. */
  #finish(reason: string, level: "info" | "warn" | "error", frontendLeft = false): void {
    if (this.#done) return;
    this.#done = true;
    this.#log.write(level, `${this.#label}: closing the connection: ${reason}`);
    if (this.#mappingFailed) {
      this.#log.warn(
        `${this.#label}: its guest memory could not be mapped shared: ` +
          SHARED_MEMORY_HINT,
      );
    } else if (frontendLeft && this.#messages > 0 && !this.#memorySent) {
      this.#log.warn(
        `${this.#label}: the front-end left before sending its memory table ` +
          `(SET_MEM_TABLE): if it could not start the device, ${SHARED_MEMORY_HINT}`,
      );
    }
    const steps: [string, () => void][] = [
      ["unwatching the control socket", () => this.#loop.unwatch(this.#socketFd)],
      ["unwatching memory faults", () => this.#unwatchMemoryFaults()],
      ["releasing the session", () => this.#backend.shutdown()],
      // after the rings stopped: flows held for a paused guest start counting down
      [
        "telling the datapath the front-end left",
        () => this.#datapath.frontendGone(performance.now()),
      ],
      ["closing unclaimed fds", () => {
        for (const fd of this.#framer.takeOrphanFds()) this.#closeFd(fd);
      }],
      ["closing the control socket", () => this.#connection.close()],
    ];
    for (const [what, step] of steps) {
      try {
        step();
      } catch (error) {
        this.#log.error(
          `${this.#label}: ${what} failed: ${
            error instanceof Error ? error.message : String(error)
          }`,
        );
      }
    }
    try {
      this.#options.onClose?.(reason);
    } finally {
      this.#resolve();
    }
  }
}

/**
 * Starts serving a vhost-user front-end on `connection`: the daemon's
 * {@link SessionFactory} once `datapathFactory` is bound (see {@link vhostUserSessionFactory}).
 */
export function createVhostUserSession(
  connection: UnixStream,
  loop: EventLoop,
  datapathFactory: DatapathFactory,
  options: VhostUserSessionOptions = {},
): FrontendSession {
  return new VhostUserSession(connection, loop, datapathFactory(), options);
}

/** The {@link SessionFactory} for `--vhost-user` mode over `datapathFactory`. */
export function vhostUserSessionFactory(
  datapathFactory: DatapathFactory,
  options: VhostUserSessionOptions = {},
): SessionFactory {
  return (connection, loop) => createVhostUserSession(connection, loop, datapathFactory, options);
}
