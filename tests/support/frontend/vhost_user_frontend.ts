/**
 * A vhost-user FRONT-END in TypeScript, standing in for QEMU in tests: it shares
 * memfd guest memory, lays out the rings, creates kick/call eventfds, negotiates in
 * QEMU 7.2's order for virtio-net, and lets tests push TX frames, post RX buffers,
 * kick, wait for calls and read used rings. It talks over a real unix socket to an
 * in-process session (socketpair) or to the daemon (bin/tpasst --vhost-user).
 *
 * All waits are asynchronous polls with a deadline so that an in-process backend on
 * the same JS thread keeps running.
 *
 * ```ts
 * const backend = new InProcessBackend();              // tests/support/frontend/in_process.ts
 * const { frontend, session } = backend.connect(new VhostUserLink(stack));
 * // or: const frontend = VhostUserFrontend.connect("/run/tpasst.sock");
 * await frontend.negotiate();                          // QEMU 7.2's order
 * frontend.sendFrame(ethernetFrame);                   // TX: guest → stack, kicks
 * frontend.postRxBuffers(64);                          // RX buffers, kicks
 * const used = await frontend.waitUsed(RX, 1);         // RX used ring
 * const [reply] = frontend.rxFrames(used);             // header stripped, MRG_RXBUF joined
 * frontend.close(); await session.closed; await backend.close();
 * ```
 *
 * @module
 */

import { EventFd } from "../../../ffi/event_fd.ts";
import { MappedMemory } from "../../../ffi/mapped_memory.ts";
import { MemFd } from "../../../ffi/mem_fd.ts";
import { UnixStream } from "../../../ffi/unix_stream.ts";
import { encodeRequest } from "../vhost_user/request_encoder.ts";
import {
  featureBit,
  FLAGS_REPLY,
  HEADER_SIZE,
  ProtocolFeature,
  Request,
  requestName,
  VHOST_F_LOG_ALL,
  VHOST_LOG_PAGE,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_VRING_F_LOG,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
} from "../../../src/vhost_user/protocol.ts";
import { HarnessMemory, type HarnessMemoryOptions } from "./shared_memory.ts";
import { ringFootprint, SplitRingDriver, type UsedChain } from "../virtio/split_ring_driver.ts";
import { PackedRingDriver } from "../virtio/packed_ring_driver.ts";
import {
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
} from "../../../src/tap/net_features.ts";
import {
  logPayload,
  memTablePayload,
  singleRegionPayload,
  u64Payload,
  vringAddrPayload,
  vringStatePayload,
} from "../../../src/vhost_user/payload_codec.ts";

/** virtio-net header with VERSION_1 (num_buffers included), virtio 1.2 §5.1.6. */
export const NET_HEADER_SIZE = 12;
/** Offset of num_buffers (u16) in the virtio-net header (virtio 1.2 §5.1.6). */
export const NET_HEADER_NUM_BUFFERS = 10;
/** virtio-net receive queue (virtio 1.2 §5.1.2). */
export const RX = 0;
/** virtio-net transmit queue. */
export const TX = 1;
/** Ring index of queue pair `pair`'s receive queue (virtio 1.2 §5.1.2: receiveq(pair+1)). */
export function rxRing(pair: number): number {
  return 2 * pair;
}
/** Ring index of queue pair `pair`'s transmit queue. */
export function txRing(pair: number): number {
  return 2 * pair + 1;
}

/** Features a QEMU 7.2 virtio-net front-end would ack from our offer (no MTU unless asked). */
export const QEMU_NET_FEATURES: bigint = featureBit(VIRTIO_F_VERSION_1) |
  featureBit(VIRTIO_NET_F_MRG_RXBUF) | featureBit(VIRTIO_F_EVENT_IDX) |
  featureBit(VIRTIO_F_INDIRECT_DESC);

/** How to negotiate. */
export interface NegotiateOptions {
  /** Use VHOST_USER_F_PROTOCOL_FEATURES (default true). */
  readonly protocolFeatures?: boolean;
  /** Ack REPLY_ACK and ask for replies where QEMU does (default true). */
  readonly replyAck?: boolean;
  /** Ack CONFIGURE_MEM_SLOTS: memory goes as ADD_MEM_REG per region (default true). */
  readonly memSlots?: boolean;
  /** Ack LOG_SHMFD (dirty log shared as an fd), as QEMU does (default true). */
  readonly logShmfd?: boolean;
  /** Virtio features to ack (default {@link QEMU_NET_FEATURES}). */
  readonly features?: bigint;
  /** Ring size (default 256). */
  readonly ringSize?: number;
  /** NET_SET_MTU value to send, if any. */
  readonly mtu?: number;
  /** Send SET_VRING_ENABLE 1 at the end (default true). */
  readonly enable?: boolean;
  /**
   * Queue pairs to set up (default 1). More than one acks VHOST_USER_PROTOCOL_F_MQ
   * and VIRTIO_NET_F_MQ, checks GET_QUEUE_NUM and sets up rings 0..2N-1 as QEMU's
   * vhost_dev per pair does (SET_FEATURES, then the pair's rings).
   */
  readonly queuePairs?: number;
  /** Of those pairs, how many get SET_VRING_ENABLE 1 (default all). */
  readonly enabledPairs?: number;
  /** Ack VHOST_USER_PROTOCOL_F_DEVICE_STATE when offered (default false). */
  readonly deviceState?: boolean;
  /**
   * Runs after the ring notifiers are set and before SET_FEATURES and the memory
   * table: where QEMU 10 loads a migrated device state on the destination.
   */
  readonly beforeFeatures?: () => Promise<void>;
  /**
   * Descriptors to send instead of the harness's own eventfds, by queue index (tests
   * of what the backend accepts as notifiers); the caller keeps and closes them.
   */
  readonly fds?: NotifierFds;
}

/** Per queue index, a descriptor to send instead of the harness's eventfd (undefined: its own). */
export interface NotifierFds {
  readonly kick?: readonly (number | undefined)[];
  readonly call?: readonly (number | undefined)[];
  readonly err?: readonly (number | undefined)[];
}

/** A decoded reply. */
export interface Reply {
  readonly request: number;
  readonly flags: number;
  readonly payload: DataView;
}

/** The dirty log a front-end shared with SET_LOG_BASE (see {@link VhostUserFrontend.startLogging}). */
export class HarnessDirtyLog {
  /** The file shared with the backend. */
  readonly memfd: MemFd;
  /** This process's mapping of the bitmap. */
  readonly mapping: MappedMemory;

  constructor(size: number) {
    this.memfd = MemFd.create("tpasst-harness-log", size);
    try {
      this.mapping = MappedMemory.map(this.memfd.fd, size, 0);
    } catch (error) {
      this.memfd.close();
      throw error;
    }
  }

  /** Page numbers (guest address / 4096) whose bits are set, ascending. */
  dirtyPages(): number[] {
    const bytes = this.mapping.bytes;
    const pages: number[] = [];
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] === 0) continue;
      for (let bit = 0; bit < 8; bit++) if ((bytes[i] >> bit) & 1) pages.push(i * 8 + bit);
    }
    return pages;
  }

  /** Clears every bit, as QEMU does after it copied the marked pages. */
  clear(): void {
    this.mapping.bytes.fill(0);
  }

  /** Unmaps and closes; safe twice. */
  close(): void {
    this.mapping.close();
    this.memfd.close();
  }
}

/** How long a wait may take before the harness gives up (a hang, not a timing check). */
export const DEFAULT_WAIT_MS = 5000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** One front-end connection. */
export class VhostUserFrontend {
  /** The control socket to the backend. */
  readonly connection: UnixStream;
  /** The guest memory shared with the backend. */
  readonly memory: HarnessMemory;
  /** Kick eventfds by queue index (front-end → backend). */
  readonly kicks: EventFd[] = [];
  /** Call eventfds by queue index (backend → front-end). */
  readonly calls: EventFd[] = [];
  /** Error eventfds by queue index. */
  readonly errs: EventFd[] = [];
  /** The driver side of each ring, by queue index (packed once VIRTIO_F_RING_PACKED is acked). */
  vrings: (SplitRingDriver | PackedRingDriver)[] = [];
  /** Protocol features acked in the negotiation. */
  protocolFeatures = 0n;
  /** The backend's GET_FEATURES answer. */
  offeredFeatures = 0n;
  /** Virtio features acked by the last SET_FEATURES. */
  ackedFeatures = 0n;
  /** Requests sent, for tests that compare the order with QEMU's. */
  readonly sentLog: string[] = [];
  #buffer = new Uint8Array(4096);
  #fill = 0;
  #bumpNext = 0;
  #closed = false;

  /** Wraps a connected stream (made nonblocking). */
  constructor(connection: UnixStream, memoryOptions: HarnessMemoryOptions = {}) {
    this.connection = connection;
    connection.setNonBlocking(true);
    this.memory = new HarnessMemory(memoryOptions);
    for (let i = 0; i < 2; i++) {
      this.kicks.push(EventFd.create());
      this.calls.push(EventFd.create());
      this.errs.push(EventFd.create());
    }
  }

  /** Connects to a listening backend at `path`. */
  static connect(path: string, memoryOptions: HarnessMemoryOptions = {}): VhostUserFrontend {
    return new VhostUserFrontend(UnixStream.connect(path), memoryOptions);
  }

  /** Sends raw bytes with optional fds (fuzzing, malformed messages). */
  sendRaw(bytes: Uint8Array, fds: number[] = []): void {
    let offset = 0;
    let first = true;
    while (offset < bytes.length) {
      const chunk = bytes.subarray(offset);
      const n = first && fds.length > 0
        ? this.connection.sendWithFds(chunk, fds)
        : this.connection.send(chunk);
      if (n < 0) {
        throw new Error(`cannot send: socket full after ${offset} of ${bytes.length} bytes`);
      }
      if (n > 0) first = false;
      offset += n;
    }
  }

  /** Sends one request. */
  send(request: number, payload?: Uint8Array, fds: number[] = [], needReply = false): void {
    this.sentLog.push(requestName(request));
    this.sendRaw(encodeRequest(request, payload, { needReply }), fds);
  }

  /**
   * Waits for one reply.
   * @throws Error on EOF, a malformed reply or after `timeoutMs`
   */
  async reply(expectedRequest: number, timeoutMs = DEFAULT_WAIT_MS): Promise<Reply> {
    const deadline = performance.now() + timeoutMs;
    while (true) {
      if (this.#fill >= HEADER_SIZE) {
        const view = new DataView(this.#buffer.buffer);
        const size = view.getUint32(8, true);
        if (size > 256) throw new Error(`reply size ${size} is implausible`);
        if (this.#fill >= HEADER_SIZE + size) {
          const request = view.getUint32(0, true);
          const flags = view.getUint32(4, true);
          const payload = new DataView(this.#buffer.slice(HEADER_SIZE, HEADER_SIZE + size).buffer);
          this.#buffer.copyWithin(0, HEADER_SIZE + size, this.#fill);
          this.#fill -= HEADER_SIZE + size;
          if (request !== expectedRequest || (flags & FLAGS_REPLY) === 0) {
            throw new Error(
              `expected a reply to ${requestName(expectedRequest)}, got ${
                requestName(request)
              } flags ${flags}`,
            );
          }
          return { request, flags, payload };
        }
      }
      const n = this.connection.recv(this.#buffer.subarray(this.#fill));
      if (n === 0) {
        throw new Error(`backend closed the connection awaiting ${requestName(expectedRequest)}`);
      }
      if (n > 0) {
        this.#fill += n;
        continue;
      }
      if (performance.now() > deadline) {
        throw new Error(`no reply to ${requestName(expectedRequest)} within ${timeoutMs} ms`);
      }
      await sleep(1);
    }
  }

  /** Sends a request and returns the u64 of its reply. */
  async requestU64(request: number, payload?: Uint8Array, needReply = false): Promise<bigint> {
    this.send(request, payload, [], needReply);
    return (await this.reply(request)).payload.getBigUint64(0, true);
  }

  /** Sends a request; with REPLY_ACK negotiated asks for and checks the ack. */
  async requestAcked(request: number, payload?: Uint8Array, fds: number[] = []): Promise<void> {
    const ack = (this.protocolFeatures & featureBit(ProtocolFeature.REPLY_ACK)) !== 0n;
    this.send(request, payload, fds, ack);
    if (!ack) return;
    const status = (await this.reply(request)).payload.getBigUint64(0, true);
    if (status !== 0n) {
      throw new Error(`${requestName(request)} failed: REPLY_ACK status ${status}`);
    }
  }

  /**
   * Negotiates in the order QEMU 7.2's vhost-user-net uses (recorded from
   * qemu-system-x86_64 7.2 against this backend: vhost_user_backend_init, vhost_dev_init
   * with vhost_virtqueue_init, the driver's SET_VRING_ENABLE, then vhost_dev_start):
   * GET_FEATURES, GET/SET_PROTOCOL_FEATURES, GET_MAX_MEM_SLOTS, SET_OWNER, GET_FEATURES,
   * per ring SET_VRING_CALL + SET_VRING_ERR, SET_VRING_ENABLE 1 per ring, SET_FEATURES,
   * memory (ADD_MEM_REG per region with NEED_REPLY, or SET_MEM_TABLE), then per ring
   * SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_KICK, SET_VRING_CALL.
   * The rings start at their kick: they were enabled before they were configured.
   */
  async negotiate(options: NegotiateOptions = {}): Promise<void> {
    const useProtocol = options.protocolFeatures ?? true;
    const ringSize = options.ringSize ?? 256;
    const pairs = options.queuePairs ?? 1;
    const rings = Array.from({ length: 2 * pairs }, (_, i) => i);
    const enabledRings = rings.slice(0, 2 * (options.enabledPairs ?? pairs));
    while (this.kicks.length < rings.length) {
      this.kicks.push(EventFd.create());
      this.calls.push(EventFd.create());
      this.errs.push(EventFd.create());
    }
    this.offeredFeatures = await this.requestU64(Request.GET_FEATURES);
    const hasProtocol = (this.offeredFeatures & featureBit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n;
    const protocol = useProtocol && hasProtocol;
    let wantProtocol = 0n;
    if (protocol) {
      const offered = await this.requestU64(Request.GET_PROTOCOL_FEATURES);
      wantProtocol = offered & (featureBit(ProtocolFeature.RARP) | featureBit(ProtocolFeature.MTU));
      if (options.replyAck ?? true) wantProtocol |= offered & featureBit(ProtocolFeature.REPLY_ACK);
      if (options.memSlots ?? true) {
        wantProtocol |= offered & featureBit(ProtocolFeature.CONFIGURE_MEM_SLOTS);
      }
      if (options.deviceState) wantProtocol |= offered & featureBit(ProtocolFeature.DEVICE_STATE);
      if (options.logShmfd ?? true) wantProtocol |= offered & featureBit(ProtocolFeature.LOG_SHMFD);
      if (pairs > 1) wantProtocol |= offered & featureBit(ProtocolFeature.MQ);
      this.send(Request.SET_PROTOCOL_FEATURES, u64Payload(wantProtocol));
      this.protocolFeatures = wantProtocol;
      if (pairs > 1) {
        if ((wantProtocol & featureBit(ProtocolFeature.MQ)) === 0n) {
          throw new Error("backend does not offer VHOST_USER_PROTOCOL_F_MQ");
        }
        const most = await this.requestU64(Request.GET_QUEUE_NUM);
        if (most < BigInt(pairs)) throw new Error(`backend serves only ${most} queue pairs`);
      }
      if ((wantProtocol & featureBit(ProtocolFeature.CONFIGURE_MEM_SLOTS)) !== 0n) {
        const slots = await this.requestU64(Request.GET_MAX_MEM_SLOTS);
        if (slots < 2n) throw new Error(`backend offers only ${slots} memory slots`);
      }
    }
    this.send(Request.SET_OWNER);
    await this.requestU64(Request.GET_FEATURES);
    const kickFd = (i: number) => options.fds?.kick?.[i] ?? this.kicks[i].fd;
    const callFd = (i: number) => options.fds?.call?.[i] ?? this.calls[i].fd;
    const errFd = (i: number) => options.fds?.err?.[i] ?? this.errs[i].fd;
    for (const i of rings) {
      this.send(Request.SET_VRING_CALL, u64Payload(i), [callFd(i)]);
      this.send(Request.SET_VRING_ERR, u64Payload(i), [errFd(i)]);
    }
    if (protocol && (options.enable ?? true)) {
      for (const i of enabledRings) this.send(Request.SET_VRING_ENABLE, vringStatePayload(i, 1));
    }
    if (options.mtu !== undefined) {
      await this.requestAcked(Request.NET_SET_MTU, u64Payload(options.mtu));
    }
    await options.beforeFeatures?.();
    let features = options.features ?? QEMU_NET_FEATURES;
    if (protocol) features |= featureBit(VHOST_USER_F_PROTOCOL_FEATURES);
    if (options.mtu !== undefined) features |= featureBit(VIRTIO_NET_F_MTU);
    if (pairs > 1) features |= featureBit(VIRTIO_NET_F_MQ);
    this.send(Request.SET_FEATURES, u64Payload(features));
    this.ackedFeatures = features;
    await this.shareMemory();
    this.vrings = [];
    for (const i of rings) {
      // QEMU's vhost_dev of each further pair sends the features again before its rings
      if (i > 1 && i % 2 === 0) this.send(Request.SET_FEATURES, u64Payload(features));
      const base = 0x10000 + i * ringFootprint(ringSize);
      const region = this.memory.view(base, ringFootprint(ringSize));
      // ringFootprint() of a split ring also holds a packed ring of the same size
      const vring = (features & featureBit(VIRTIO_F_RING_PACKED)) !== 0n
        ? new PackedRingDriver({ index: i, base, size: ringSize, region })
        : new SplitRingDriver({ index: i, base, size: ringSize, region });
      this.vrings.push(vring);
      this.send(Request.SET_VRING_NUM, vringStatePayload(i, ringSize));
      // a packed ring starts at slot 0 with both wrap counters 1 (QEMU sends 0x80008000)
      const start = vring instanceof PackedRingDriver ? vring.state : 0;
      this.send(Request.SET_VRING_BASE, vringStatePayload(i, start));
      this.send(
        Request.SET_VRING_ADDR,
        vringAddrPayload(i, {
          descriptor: this.memory.userAddress(vring.areas.descriptor),
          used: this.memory.userAddress(vring.areas.used),
          available: this.memory.userAddress(vring.areas.available),
        }),
      );
      this.send(Request.SET_VRING_KICK, u64Payload(i), [kickFd(i)]);
      this.send(Request.SET_VRING_CALL, u64Payload(i), [callFd(i)]);
    }
    this.#bumpNext = 0x10000 + rings.length * ringFootprint(ringSize);
    // a round trip makes sure everything above was processed
    await this.requestU64(Request.GET_FEATURES);
  }

  /**
   * SET_DEVICE_STATE_FD: hands `fd` (a pipe end; the caller keeps its own copy) over
   * for a transfer in `direction` (0 save, 1 load) in the stopped phase; returns the
   * reply's u64 (0x100: success, no fd of the backend's).
   */
  async setDeviceStateFd(direction: number, fd: number): Promise<bigint> {
    const payload = new Uint8Array(8);
    new DataView(payload.buffer).setUint32(0, direction, true);
    this.send(Request.SET_DEVICE_STATE_FD, payload, [fd]);
    const reply = await this.reply(Request.SET_DEVICE_STATE_FD);
    return reply.payload.getBigUint64(0, true);
  }

  /** CHECK_DEVICE_STATE: 0 when the backend's transfer succeeded. */
  checkDeviceState(): Promise<bigint> {
    return this.requestU64(Request.CHECK_DEVICE_STATE);
  }

  /**
   * Starts dirty logging as QEMU 10 does when a migration starts, on running rings:
   * SET_LOG_BASE with a new log covering every region (waits for its reply),
   * SET_FEATURES adding VHOST_F_LOG_ALL, then SET_VRING_ADDR per ring with
   * VHOST_VRING_F_LOG and the used ring's guest address (each with NEED_REPLY under
   * REPLY_ACK).
   * @returns the log; the caller closes it (after the session or stopLogging())
   */
  async startLogging(): Promise<HarnessDirtyLog> {
    const top = Math.max(
      ...this.memory.regions.map((r) => r.description.guestAddress + r.description.size),
    );
    const log = new HarnessDirtyLog(Math.ceil(top / VHOST_LOG_PAGE / 8));
    try {
      this.send(Request.SET_LOG_BASE, logPayload(log.mapping.size), [log.memfd.fd]);
      const status = (await this.reply(Request.SET_LOG_BASE)).payload.getBigUint64(0, true);
      if (status !== 0n) throw new Error(`SET_LOG_BASE failed: ${status}`);
      await this.#setLogging(true);
    } catch (error) {
      log.close();
      throw error;
    }
    return log;
  }

  /** Stops dirty logging as QEMU does when a migration is cancelled. */
  async stopLogging(): Promise<void> {
    await this.#setLogging(false);
  }

  async #setLogging(on: boolean): Promise<void> {
    const logAll = featureBit(VHOST_F_LOG_ALL);
    this.ackedFeatures = on ? this.ackedFeatures | logAll : this.ackedFeatures & ~logAll;
    await this.requestAcked(Request.SET_FEATURES, u64Payload(this.ackedFeatures));
    for (let i = 0; i < this.vrings.length; i++) {
      const areas = this.vrings[i].areas;
      await this.requestAcked(
        Request.SET_VRING_ADDR,
        vringAddrPayload(
          i,
          {
            descriptor: this.memory.userAddress(areas.descriptor),
            used: this.memory.userAddress(areas.used),
            available: this.memory.userAddress(areas.available),
          },
          on ? 1 << VHOST_VRING_F_LOG : 0,
          on ? areas.used : 0,
        ),
      );
    }
  }

  /** Enables or disables ring `index` (SET_VRING_ENABLE). */
  setRingEnabled(index: number, enabled: boolean): void {
    this.send(Request.SET_VRING_ENABLE, vringStatePayload(index, enabled ? 1 : 0));
  }

  /** Shares both memory regions: ADD_MEM_REG each with CONFIGURE_MEM_SLOTS, else SET_MEM_TABLE. */
  async shareMemory(): Promise<void> {
    const regions = this.memory.regions;
    if ((this.protocolFeatures & featureBit(ProtocolFeature.CONFIGURE_MEM_SLOTS)) !== 0n) {
      for (const region of regions) {
        await this.requestAcked(
          Request.ADD_MEM_REG,
          singleRegionPayload(region.description),
          [region.memfd.fd],
        );
      }
    } else {
      await this.requestAcked(
        Request.SET_MEM_TABLE,
        memTablePayload(regions.map((r) => r.description)),
        regions.map((r) => r.memfd.fd),
      );
    }
  }

  /** Stops ring `index` (GET_VRING_BASE) and returns the backend's next avail index. */
  async stopRing(index: number): Promise<number> {
    this.send(Request.GET_VRING_BASE, vringStatePayload(index, 0));
    const reply = await this.reply(Request.GET_VRING_BASE);
    return reply.payload.getUint32(4, true);
  }

  /**
   * Starts ring `index` again after {@link stopRing}, as QEMU does when it resumes
   * the guest (a cancelled migration): same size and addresses, `base` (what
   * GET_VRING_BASE answered), then the kick and call fds.
   */
  async restartRing(index: number, base: number): Promise<void> {
    const vring = this.vrings[index];
    this.send(Request.SET_VRING_NUM, vringStatePayload(index, vring.size));
    this.send(Request.SET_VRING_BASE, vringStatePayload(index, base));
    this.send(
      Request.SET_VRING_ADDR,
      vringAddrPayload(index, {
        descriptor: this.memory.userAddress(vring.areas.descriptor),
        used: this.memory.userAddress(vring.areas.used),
        available: this.memory.userAddress(vring.areas.available),
      }),
    );
    this.send(Request.SET_VRING_KICK, u64Payload(index), [this.kicks[index].fd]);
    this.send(Request.SET_VRING_CALL, u64Payload(index), [this.calls[index].fd]);
    // a round trip makes sure the ring is running
    await this.requestU64(Request.GET_FEATURES);
  }

  /** Allocates `length` bytes of buffer space in region 1 (wraps around when full). */
  allocate(length: number): number {
    const region = this.memory.regions[1].description;
    let offset = Math.ceil(this.#bumpNext / 64) * 64;
    if (offset + length > region.size) offset = 0;
    this.#bumpNext = offset + length;
    return region.guestAddress + offset;
  }

  /** Puts one frame (preceded by a zero virtio-net header) on pair `pair`'s TX ring and kicks. */
  sendFrame(frame: Uint8Array, pair = 0): number {
    const head = this.queueFrame(frame, pair);
    this.kicks[txRing(pair)].signal();
    return head;
  }

  /**
   * Puts one frame (preceded by a zero virtio-net header) on the TX ring without
   * kicking: the backend sees it at the next TX kick.
   * @returns the chain's head descriptor
   */
  queueFrame(frame: Uint8Array, pair = 0): number {
    const gpa = this.allocate(NET_HEADER_SIZE + frame.length);
    const bytes = this.memory.view(gpa, NET_HEADER_SIZE + frame.length);
    bytes.fill(0, 0, NET_HEADER_SIZE);
    bytes.set(frame, NET_HEADER_SIZE);
    const head = this.vrings[txRing(pair)].addChain([
      { addr: gpa, length: bytes.length, writable: false },
    ]);
    if (head === null) throw new Error("TX ring full");
    return head;
  }

  /** Posts `count` device-writable RX buffers of `size` bytes on pair `pair`'s RX ring and kicks it. */
  postRxBuffers(count: number, size = 2048, pair = 0): void {
    const ring = rxRing(pair);
    for (let i = 0; i < count; i++) {
      const gpa = this.allocate(size);
      if (this.vrings[ring].addChain([{ addr: gpa, length: size, writable: true }]) === null) {
        break;
      }
    }
    this.kicks[ring].signal();
  }

  /**
   * Frames received in used RX elements, header stripped. With MRG_RXBUF a frame may
   * span several used elements: the first buffer's header carries num_buffers
   * (virtio 1.2 §5.1.6.4); the following elements' bytes are appended.
   * @throws Error when the elements end in the middle of a frame
   */
  rxFrames(used: readonly UsedChain[]): Uint8Array[] {
    const frames: Uint8Array[] = [];
    for (let i = 0; i < used.length;) {
      const first = used[i].segments[0];
      const header = this.memory.view(first.addr, NET_HEADER_SIZE);
      const buffers = Math.max(
        1,
        header[NET_HEADER_NUM_BUFFERS] | (header[NET_HEADER_NUM_BUFFERS + 1] << 8),
      );
      if (i + buffers > used.length) {
        throw new Error(
          `frame at used element ${i} spans ${buffers} buffers, only ${used.length - i} left`,
        );
      }
      const parts: Uint8Array[] = [];
      for (let b = 0; b < buffers; b++) {
        const element = used[i + b];
        const skip = b === 0 ? NET_HEADER_SIZE : 0;
        parts.push(this.#usedBytes(element).subarray(skip));
      }
      const frame = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      let at = 0;
      for (const part of parts) {
        frame.set(part, at);
        at += part.length;
      }
      frames.push(frame);
      i += buffers;
    }
    return frames;
  }

  /** The bytes the device wrote into one used element's chain (its `len` bytes, in order). */
  #usedBytes(element: UsedChain): Uint8Array {
    const out = new Uint8Array(element.len);
    let at = 0;
    for (const segment of element.segments) {
      if (at >= element.len) break;
      const n = Math.min(segment.length, element.len - at);
      out.set(this.memory.view(segment.addr, n), at);
      at += n;
    }
    return out;
  }

  /** Waits until ring `index` has at least `count` new used elements. */
  async waitUsed(
    index: number,
    count: number,
    timeoutMs = DEFAULT_WAIT_MS,
  ): Promise<UsedChain[]> {
    const deadline = performance.now() + timeoutMs;
    const got: UsedChain[] = [];
    while (true) {
      got.push(...this.vrings[index].takeUsedChains());
      if (got.length >= count) return got;
      if (performance.now() > deadline) {
        throw new Error(
          `ring ${index}: ${got.length} of ${count} used elements within ${timeoutMs} ms`,
        );
      }
      await sleep(1);
    }
  }

  /** Waits until the backend signals ring `index`'s call eventfd. */
  async waitCall(index: number, timeoutMs = DEFAULT_WAIT_MS): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    while (true) {
      const count = this.calls[index].drain();
      if (count > 0) return count;
      if (performance.now() > deadline) {
        throw new Error(`no call on ring ${index} within ${timeoutMs} ms`);
      }
      await sleep(1);
    }
  }

  /** Waits until the backend closes the connection (EOF); discards anything it sends. */
  async waitClosed(timeoutMs = DEFAULT_WAIT_MS): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    const scratch = new Uint8Array(4096);
    while (true) {
      let n: number;
      try {
        n = this.connection.recv(scratch);
      } catch {
        return; // ECONNRESET counts as closed
      }
      if (n === 0) return;
      if (n < 0) {
        if (performance.now() > deadline) {
          throw new Error(`backend kept the connection open ${timeoutMs} ms`);
        }
        await sleep(1);
      }
    }
  }

  /** Closes the connection, the eventfds and the memory; safe twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.connection.close();
    for (const fd of [...this.kicks, ...this.calls, ...this.errs]) fd.close();
    this.memory.close();
  }
}
