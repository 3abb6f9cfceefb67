/**
 * Test doubles for the vhost-user backend: fake fds and memory over ArrayBuffers,
 * a recording datapath, a scripted message channel and a rig that feeds encoded
 * requests through the real framer and backend. Used only by tests.
 *
 * @module
 */

import { recordingLogger } from "../recording_logger.ts";
import type {
  BackendEnvironment,
  DeviceStateHandler,
  Notifier,
} from "../../../src/vhost_user/backend_environment.ts";
import { VhostUserBackend } from "../../../src/vhost_user/backend.ts";
import type { Mapping } from "../../../src/vhost_user/guest_memory_map.ts";
import type { LogMapping } from "../../../src/vhost_user/dirty_log.ts";
import {
  type MessageChannel,
  MessageFramer,
  ProtocolError,
  type ReceiveOutcome,
  ReplyWriter,
} from "../../../src/vhost_user/message_codec.ts";
import {
  featureBit,
  HEADER_SIZE,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_VERSION_1,
} from "../../../src/vhost_user/protocol.ts";
import { memTablePayload } from "../../../src/vhost_user/payload_codec.ts";
import { VIRTIO_NET_F_MRG_RXBUF } from "../../../src/tap/net_features.ts";
import type { VringDatapath } from "../../../src/tap/vring_datapath.ts";
import { type FdDescription } from "../../../ffi/event_fd.ts";
import { type StartedVring } from "../../../src/virtio/started_vring.ts";
import { type GuestWriteLog } from "../../../src/virtio/guest_write_log.ts";

/** What describeFd() says of a fake fd created without a kind: a normal-mode eventfd. */
export const FAKE_EVENTFD: FdDescription = {
  normalEventFd: true,
  verified: true,
  text: "an eventfd",
};
/** A fake semaphore-mode eventfd. */
export const FAKE_SEMAPHORE_EVENTFD: FdDescription = {
  normalEventFd: false,
  verified: true,
  text: "a semaphore-mode eventfd (EFD_SEMAPHORE)",
};
/** A fake pipe. */
export const FAKE_PIPE: FdDescription = {
  normalEventFd: false,
  verified: true,
  text: "a pipe (pipe:[4242])",
};
/** A fake socket. */
export const FAKE_SOCKET: FdDescription = {
  normalEventFd: false,
  verified: true,
  text: "a socket (socket:[4343])",
};
/** A fake anonymous inode seen without /proc: accepted as an eventfd, unverified. */
export const FAKE_UNVERIFIED: FdDescription = {
  normalEventFd: true,
  verified: false,
  text: "an anonymous inode (without /proc/self/fd, not known to be an eventfd)",
};

/** Fake file descriptors; some are backed by an ArrayBuffer ("memfd"). */
export class FakeFds {
  #next = 100;
  readonly open = new Set<number>();
  readonly #memory = new Map<number, ArrayBuffer>();
  readonly #kinds = new Map<number, FdDescription>();
  /** Live mappings (not yet unmapped). */
  mappings = 0;
  /** Sizes and offsets asked of map(). */
  readonly mapCalls: { fd: number; size: number; offset: number }[] = [];

  /** Size of a fake fd's file (0 for fds without memory). */
  readonly size = (fd: number): number => {
    if (!this.open.has(fd)) throw new Error(`fstat: fd ${fd} is not open (EBADF)`);
    return this.#memory.get(fd)?.byteLength ?? 0;
  };

  /** A new fake fd without memory: a normal-mode eventfd unless `kind` says otherwise. */
  create(kind: FdDescription = FAKE_EVENTFD): number {
    const fd = this.#next++;
    this.open.add(fd);
    this.#kinds.set(fd, kind);
    return fd;
  }

  /** What a fake fd is (the BackendEnvironment's describeFd; tests may replace it). */
  describe(fd: number): FdDescription {
    if (!this.open.has(fd)) throw new Error(`fstat: fd ${fd} is not open (EBADF)`);
    return this.#kinds.get(fd) ?? { normalEventFd: false, verified: true, text: "a regular file" };
  }

  /** A fake memfd of `size` bytes; returns the fd and its bytes. */
  memfd(size: number): { fd: number; bytes: Uint8Array } {
    const fd = this.create({ normalEventFd: false, verified: true, text: "a regular file" });
    const buffer = new ArrayBuffer(size);
    this.#memory.set(fd, buffer);
    return { fd, bytes: new Uint8Array(buffer) };
  }

  /** A new fake fd for the same file as `fd` (as dup(2)): same kind, same memory. */
  dup(fd: number): number {
    if (!this.open.has(fd)) throw new Error(`dup: fd ${fd} is not open (EBADF)`);
    const copy = this.create(this.describe(fd));
    const buffer = this.#memory.get(fd);
    if (buffer !== undefined) this.#memory.set(copy, buffer);
    return copy;
  }

  /** Closes a fake fd; closing one that is not open is a test failure. */
  close(fd: number): void {
    if (!this.open.delete(fd)) throw new Error(`fd ${fd} closed twice or never opened`);
  }

  /** The MapFunction over the fake memfds. */
  readonly map = (fd: number, size: number, offset: number): Mapping => {
    this.mapCalls.push({ fd, size, offset });
    if (!this.open.has(fd)) throw new Error(`mmap: fd ${fd} is not open (EBADF)`);
    const buffer = this.#memory.get(fd);
    if (buffer === undefined) throw new Error(`mmap: fd ${fd} has no memory (ENODEV)`);
    if (offset + size > buffer.byteLength) {
      throw new Error(`mmap: ${offset}+${size} is beyond the ${buffer.byteLength}-byte file`);
    }
    this.mappings++;
    let mapped = true;
    return {
      bytes: new Uint8Array(buffer, offset, size),
      unmap: () => {
        if (!mapped) throw new Error("unmapped twice");
        mapped = false;
        this.mappings--;
      },
    };
  };
}

/**
 * The LogMapFunction over the fake memfds: `Atomics.or` on the fake file's bytes
 * (atomic within this process, all a test needs). Counts in `fds.mappings` too.
 */
export function fakeLogMap(fds: FakeFds): (fd: number, size: number, offset: number) => LogMapping {
  return (fd, size, offset) => {
    const mapping = fds.map(fd, size, offset);
    const bytes = mapping.bytes;
    let mapped = true;
    return {
      size: bytes.length,
      atomicOrByte: (index, mask) => {
        if (!mapped) throw new Error("log written after unmap");
        if (!(index >= 0 && index < bytes.length)) throw new RangeError(`log byte ${index}`);
        Atomics.or(bytes, index, mask);
      },
      unmap: () => {
        if (!mapped) return;
        mapped = false;
        mapping.unmap();
      },
    };
  };
}

/** A notifier over a fake fd that counts signals and drains. */
export class FakeNotifier implements Notifier {
  readonly fd: number;
  /** What describeFd() said of the fd when the backend took it. */
  readonly kind: FdDescription;
  signals = 0;
  /** signal() calls that threw because of {@link failSignals}. */
  failedSignals = 0;
  drains = 0;
  closed = false;
  /** Makes signal() throw, as writing to a call fd that is not writable would. */
  failSignals = false;
  readonly #fds: FakeFds;

  constructor(fd: number, kind: FdDescription, fds: FakeFds) {
    this.fd = fd;
    this.kind = kind;
    this.#fds = fds;
  }

  signal(): void {
    if (this.closed) throw new Error(`signal on closed fd ${this.fd}`);
    if (this.failSignals) {
      this.failedSignals++;
      throw new Error(`eventfd_write(fd ${this.fd}) failed: EBADF`);
    }
    this.signals++;
  }

  drain(): void {
    if (this.closed) throw new Error(`drain on closed fd ${this.fd}`);
    this.drains++;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.#fds.close(this.fd);
  }
}

/** One call on the recording datapath. */
export type DatapathEvent =
  | { call: "start"; index: number; size: number; lastAvailIndex: number; now: number }
  | { call: "kick"; index: number; now: number }
  | { call: "transmit-enabled"; index: number; enabled: boolean }
  | { call: "stop"; index: number };

/** A datapath that records calls and keeps the started rings. */
export class RecordingDatapath implements VringDatapath {
  readonly events: DatapathEvent[] = [];
  readonly rings = new Map<number, StartedVring>();
  /** The write log each started ring reports to now (from its start or setWriteLog). */
  readonly writeLogs = new Map<number, GuestWriteLog | null>();
  /** What stopVring() returns per ring: lastAvailIndex + this. */
  advance = 0;
  /** Makes stopVring() signal the guest first, as VhostUserLink's RX publish does. */
  signalOnStop = false;
  /** Makes startVring() throw after taking the ring (views held, as a half-started link). */
  failStarts = false;

  startVring(ring: StartedVring, now: number): void {
    if (this.rings.has(ring.index)) throw new Error(`ring ${ring.index} started twice`);
    this.rings.set(ring.index, ring);
    this.writeLogs.set(ring.index, ring.writeLog ?? null);
    if (this.failStarts) throw new Error(`datapath cannot start ring ${ring.index}`);
    this.events.push({
      call: "start",
      index: ring.index,
      size: ring.size,
      lastAvailIndex: ring.lastAvailIndex,
      now,
    });
  }

  kick(index: number, now: number): void {
    this.events.push({ call: "kick", index, now });
  }

  /** Times frontendGone() was called. */
  frontendGoneCalls = 0;

  frontendGone(_now: number): void {
    this.frontendGoneCalls++;
  }

  setTransmitEnabled(index: number, enabled: boolean): void {
    this.events.push({ call: "transmit-enabled", index, enabled });
  }

  setWriteLog(index: number, log: GuestWriteLog | null): void {
    if (!this.rings.has(index)) throw new Error(`write log set on ring ${index}, not started`);
    this.writeLogs.set(index, log);
  }

  stopVring(index: number): number {
    const ring = this.rings.get(index);
    if (ring === undefined) throw new Error(`ring ${index} stopped while not started`);
    if (this.signalOnStop) ring.notifyGuest();
    this.rings.delete(index);
    this.writeLogs.delete(index);
    this.events.push({ call: "stop", index });
    const base = ring.lastAvailIndex + this.advance;
    return ring.features.packedRing === true ? base >>> 0 : base & 0xffff;
  }
}

/** A channel fed by the test; records what the backend sends. */
export class ScriptedChannel implements MessageChannel {
  readonly #chunks: { bytes: Uint8Array; fds: number[] }[] = [];
  #eof = false;
  readonly sent: Uint8Array[] = [];
  /** Makes send() fail (to test reply failures). */
  failSends = false;

  /** Queues bytes (and fds delivered with their first byte). */
  push(bytes: Uint8Array, fds: number[] = []): void {
    this.#chunks.push({ bytes: bytes.slice(), fds: [...fds] });
  }

  /** Queues an EOF after the queued bytes. */
  close(): void {
    this.#eof = true;
  }

  receive(into: Uint8Array, fds: number[]): ReceiveOutcome {
    const chunk = this.#chunks[0];
    if (chunk === undefined) return this.#eof ? { kind: "eof" } : { kind: "pending" };
    const n = Math.min(into.length, chunk.bytes.length);
    into.set(chunk.bytes.subarray(0, n));
    fds.push(...chunk.fds.splice(0));
    chunk.bytes = chunk.bytes.subarray(n);
    if (chunk.bytes.length === 0) this.#chunks.shift();
    return { kind: "data", bytes: n };
  }

  send(data: Uint8Array): void {
    if (this.failSends) throw new Error("EPIPE");
    this.sent.push(data.slice());
  }
}

/** A reply as decoded by the rig. */
export interface DecodedReply {
  request: number;
  flags: number;
  size: number;
  payload: DataView;
}

/** The u64 payload of a reply (features, a count, a REPLY_ACK status). */
export function u64Reply(reply: DecodedReply): bigint {
  return reply.payload.getBigUint64(0, true);
}

/** The front-end (user) address the backend tests map their one guest memory region at. */
export const USER_ADDRESS = 0x7f12_3400_0000;
/** The size of the rings the backend tests set up. */
export const RING_SIZE = 256;

/**
 * The virtio features the backend tests ack unless a test says otherwise: version 1,
 * mergeable RX buffers, EVENT_IDX and the vhost-user protocol features.
 */
export const RIG_FEATURES: bigint = featureBit(VIRTIO_F_VERSION_1) |
  featureBit(VIRTIO_NET_F_MRG_RXBUF) | featureBit(VIRTIO_F_EVENT_IDX) |
  featureBit(VHOST_USER_F_PROTOCOL_FEATURES);

/**
 * SET_MEM_TABLE's payload for the backend tests' one region: `size` bytes at guest
 * address 0, mapped by the front-end at {@link USER_ADDRESS}, from offset 0 of its fd.
 */
export function wholeMemoryTable(size: number): Uint8Array {
  return memTablePayload([{ guestAddress: 0, size, userAddress: USER_ADDRESS, mmapOffset: 0 }]);
}

/** The page numbers whose bits are set in a dirty-log bitmap, counted from byte `start`. */
export function dirtyPages(bitmap: Uint8Array, start = 0): number[] {
  const pages: number[] = [];
  for (let byte = start; byte < bitmap.length; byte++) {
    for (let bit = 0; bit < 8; bit++) {
      if ((bitmap[byte] & (1 << bit)) !== 0) pages.push((byte - start) * 8 + bit);
    }
  }
  return pages;
}

/** Ring i's areas, as guest-physical offsets in the one region (rings 0x8000 bytes apart). */
export function ringAreas(i: number): { descriptor: number; available: number; used: number } {
  return {
    descriptor: 0x1000 + i * 0x8000,
    available: 0x3000 + i * 0x8000,
    used: 0x4000 + i * 0x8000,
  };
}

/** Ring i's areas as front-end (user) addresses, as SET_VRING_ADDR carries them. */
export function userRingAreas(i: number): { descriptor: number; available: number; used: number } {
  const r = ringAreas(i);
  return {
    descriptor: USER_ADDRESS + r.descriptor,
    available: USER_ADDRESS + r.available,
    used: USER_ADDRESS + r.used,
  };
}

/** Drives a real framer + backend over doubles. */
export class BackendRig {
  readonly fds = new FakeFds();
  readonly datapath = new RecordingDatapath();
  readonly channel = new ScriptedChannel();
  readonly notifiers = new Map<number, FakeNotifier>();
  readonly watchers = new Map<number, (now: number) => void>();
  readonly log = recordingLogger({ level: "debug", withLevel: true });
  readonly backend: VhostUserBackend;
  readonly framer: MessageFramer;
  readonly replies: ReplyWriter;
  /** The error that ended the connection, if any. */
  error: Error | null = null;
  /** "eof" outcomes seen. */
  eofDetail: string | null = null;
  rarps: Uint8Array[] = [];
  /** Whether env.fileSize() reports sizes (true) or "unknown" (false). */
  fileSizes = true;
  now = 1000;

  constructor(options: { deviceState?: DeviceStateHandler } = {}) {
    const env: BackendEnvironment = {
      datapath: this.datapath,
      map: this.fds.map,
      mapLog: fakeLogMap(this.fds),
      fileSize: (fd) => this.fileSizes ? this.fds.size(fd) : null,
      describeFd: (fd) => this.fds.describe(fd),
      notifier: (fd, kind) => {
        const notifier = new FakeNotifier(fd, kind, this.fds);
        this.notifiers.set(fd, notifier);
        return notifier;
      },
      closeFd: (fd) => this.fds.close(fd),
      watchReadable: (fd, handler) => {
        if (this.watchers.has(fd)) throw new Error(`fd ${fd} watched twice`);
        this.watchers.set(fd, handler);
        return () => this.watchers.delete(fd);
      },
      log: this.log.logger,
      onRarp: (mac) => this.rarps.push(mac),
      deviceState: options.deviceState,
    };
    this.backend = new VhostUserBackend(env);
    this.framer = new MessageFramer(this.channel);
    this.replies = new ReplyWriter(this.channel);
  }

  /** Queues bytes + fds and processes every complete message; returns replies sent. */
  send(bytes: Uint8Array, fds: number[] = []): DecodedReply[] {
    this.channel.push(bytes, fds);
    return this.pump();
  }

  /** Processes what is queued, as the session does. */
  pump(): DecodedReply[] {
    const before = this.channel.sent.length;
    while (this.error === null) {
      let outcome;
      try {
        outcome = this.framer.poll();
        if (outcome.kind === "pending") break;
        if (outcome.kind === "eof") {
          this.eofDetail = outcome.detail;
          break;
        }
        this.backend.handle(outcome.message, this.now, this.replies);
      } catch (error) {
        this.error = error as Error;
        for (const fd of this.framer.takeOrphanFds()) this.fds.close(fd);
        this.backend.shutdown();
      }
    }
    return this.channel.sent.slice(before).map((bytes) => {
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
      return {
        request: view.getUint32(0, true),
        flags: view.getUint32(4, true),
        size: view.getUint32(8, true),
        payload: new DataView(bytes.buffer, bytes.byteOffset + HEADER_SIZE),
      };
    });
  }

  /** Asserts-style accessor: the error as a ProtocolError, or null. */
  get protocolError(): ProtocolError | null {
    return this.error instanceof ProtocolError ? this.error : null;
  }

  /** Fires the kick watcher of ring fd `fd`. */
  kick(fd: number, now: number): void {
    const watcher = this.watchers.get(fd);
    if (watcher === undefined) throw new Error(`fd ${fd} is not watched`);
    watcher(now);
  }
}
