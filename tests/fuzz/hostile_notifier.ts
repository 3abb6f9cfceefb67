/**
 * The kinds of fd a hostile vhost-user frontend can hand over as a ring's kick, call
 * or error notifier, each with what "kicking" through it means: an eventfd, a
 * semaphore-mode eventfd (each read takes only 1 off the counter), either end of a
 * pipe, one end of a socket pair, a regular file. The test keeps its own end of each
 * and closes it with {@link HostileNotifier.close}.
 *
 * @module
 */

import { EventFd } from "../../ffi/event_fd.ts";
import { OutputFile } from "../../ffi/output_file.ts";
import { Pipe } from "./hostile_pipe.ts";
import { UnixStream } from "../../ffi/unix_stream.ts";

/** Every fd kind, in the order reports list them. */
export const FD_KINDS = [
  "eventfd",
  "semaphore-eventfd",
  "pipe-read-end",
  "pipe-write-end",
  "socket",
  "regular-file",
] as const;

/** One kind of notifier fd. */
export type FdKind = typeof FD_KINDS[number];

/** Size of an eventfd counter transfer (eventfd(2)): what a backend reads per kick. */
const EVENTFD_VALUE_SIZE = 8;
/** Bytes written per kick through a pipe or socket: a whole counter, a short one, a flood. */
const STREAM_KICK_SIZES = [EVENTFD_VALUE_SIZE, 3, 1, 4096, 65536] as const;
/** Increments written to a semaphore-mode eventfd: each one is that many readable units. */
const SEMAPHORE_INCREMENTS = [1, 1000, 0xffff_fffe, 0xffff_fffe] as const;

/** Picks from a list using `random` (a number in [0, 1)). */
type Random = () => number;
function pick<T>(random: Random, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)];
}

/** One notifier fd of some kind, and the test's end of it. */
export class HostileNotifier {
  /** The kind. */
  readonly kind: FdKind;
  /** The fd to pass to the daemon (SCM_RIGHTS duplicates it; this one stays ours). */
  readonly fdForDaemon: number;
  readonly #eventFd: EventFd | null = null;
  readonly #pipe: Pipe | null = null;
  readonly #sockets: [UnixStream, UnixStream] | null = null;
  readonly #file: OutputFile | null = null;
  readonly #scratch = new Uint8Array(65536);

  /**
   * Creates a notifier of `kind`; a regular file is created at `filePath` (removed by
   * the caller).
   */
  constructor(kind: FdKind, filePath: string) {
    this.kind = kind;
    switch (kind) {
      case "eventfd":
      case "semaphore-eventfd":
        this.#eventFd = EventFd.create({ semaphore: kind === "semaphore-eventfd" });
        this.fdForDaemon = this.#eventFd.fd;
        break;
      case "pipe-read-end":
      case "pipe-write-end":
        this.#pipe = Pipe.create();
        this.fdForDaemon = kind === "pipe-read-end" ? this.#pipe.readFd : this.#pipe.writeFd;
        break;
      case "socket":
        this.#sockets = UnixStream.pair(true);
        this.fdForDaemon = this.#sockets[1].fd;
        break;
      case "regular-file":
        this.#file = OutputFile.open(filePath, { append: true });
        this.fdForDaemon = this.#file.fd;
        break;
    }
  }

  /**
   * Does what "kick" means for this kind, with some hostility: eventfds get an
   * increment (a huge one for a semaphore), pipes and sockets get a full counter, a
   * short one or a flood of bytes, and sometimes the test's end is closed (the daemon
   * then sees a hang-up, or EPIPE when it writes as if it were a call fd).
   * Returns a short description for the session log.
   */
  kick(random: Random): string {
    switch (this.kind) {
      case "eventfd":
        this.#eventFd!.signal();
        return "signal 1";
      case "semaphore-eventfd": {
        const increment = pick(random, SEMAPHORE_INCREMENTS);
        this.#eventFd!.signal(increment);
        return `signal ${increment}`;
      }
      case "pipe-read-end": {
        const pipe = this.#pipe!;
        if (pipe.writeFd < 0) return "write end already closed";
        if (random() < 0.1) {
          pipe.closeWrite();
          return "closed the write end";
        }
        const size = pick(random, STREAM_KICK_SIZES);
        const written = pipe.write(this.#scratch.subarray(0, size));
        return `wrote ${Math.max(written, 0)} of ${size} bytes`;
      }
      case "pipe-write-end": {
        // the daemon can only write into it (as a call fd) or wait on it: read what it
        // wrote, or close the read end so that it sees an error
        const pipe = this.#pipe!;
        if (pipe.readFd < 0) return "read end already closed";
        if (random() < 0.3) {
          pipe.closeRead();
          return "closed the read end";
        }
        const n = pipe.read(this.#scratch);
        return `read ${Math.max(n, 0)} bytes`;
      }
      case "socket": {
        const [ours] = this.#sockets!;
        if (ours.fd < 0) return "our end already closed";
        const r = random();
        if (r < 0.1) {
          ours.close();
          return "closed our end";
        }
        if (r < 0.2) {
          try {
            ours.shutdown("write");
          } catch { /* already shut down or the peer is gone */ }
          return "shut down our end for writing";
        }
        const size = pick(random, STREAM_KICK_SIZES);
        let sent = -1;
        try {
          sent = ours.send(this.#scratch.subarray(0, size));
        } catch { /* EPIPE after a shutdown: nothing to send */ }
        return `sent ${Math.max(sent, 0)} of ${size} bytes`;
      }
      case "regular-file":
        // a regular file is always "ready" and epoll refuses it: nothing to do
        return "nothing (regular file)";
    }
  }

  /** Closes the test's ends; safe twice. */
  close(): void {
    this.#eventFd?.close();
    this.#pipe?.close();
    if (this.#sockets !== null) { for (const socket of this.#sockets) socket.close(); }
    this.#file?.close();
  }
}
