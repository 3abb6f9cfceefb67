/**
 * The vhost-user backend state machine for virtio-net: one flat switch over the
 * front-end's requests, one handler per message. It owns the guest memory map, the
 * rings' configuration and eventfds, and starts/stops rings on the datapath.
 *
 * Spec: QEMU docs/interop/vhost-user.rst ("Front-end message types", "Ring states").
 *
 * @module
 */

import { type Message, needsReply, ProtocolError, readU64Big } from "./message_codec.ts";
import {
  decodeLogDescription,
  decodeRegion,
  decodeRegionCount,
  decodeVringAddress,
  decodeVringState,
  regionEntryOffset,
  VRING_FLAGS_LOG,
} from "./payload_codec.ts";
import type { ReplyWriter } from "./message_codec.ts";
import {
  DEVICE_STATE_DIRECTION,
  DEVICE_STATE_LOAD,
  DEVICE_STATE_PARAMS_SIZE,
  DEVICE_STATE_PHASE,
  DEVICE_STATE_PHASE_STOPPED,
  DEVICE_STATE_REPLY_NO_FD,
  DEVICE_STATE_SAVE,
  featureBit,
  LOG_DESCRIPTION_SIZE,
  MAX_FDS_PER_MESSAGE,
  MAX_MEM_SLOTS,
  MAX_RING_SIZE,
  MEMORY_MAX_NREGIONS,
  MEMORY_REGIONS,
  MEMORY_TABLE_MAX_SIZE,
  OFFERED_FEATURES,
  OFFERED_PROTOCOL_FEATURES,
  ProtocolFeature,
  REGION_ENTRY_SIZE,
  Request,
  type RequestCode,
  requestName,
  SINGLE_REGION_ENTRY,
  SINGLE_REGION_SIZE,
  U64_PAYLOAD_SIZE,
  VHOST_F_LOG_ALL,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VRING_ADDR_SIZE,
  VRING_COUNT,
  VRING_FD_INDEX_MASK,
  VRING_FD_NOFD,
  VRING_STATE_SIZE,
} from "./protocol.ts";
import { GuestMemoryMap, MMAP_PAGE_SIZE, type RegionDescription } from "./guest_memory_map.ts";
import { DirtyLog, type LogMapping, RingWriteLog } from "./dirty_log.ts";
import type { BackendEnvironment, Notifier } from "./backend_environment.ts";
import type { FdDescription } from "../../ffi/event_fd.ts";
import { RateLimitedLog } from "../log/rate_limited_log.ts";
import { availableRingBytes, descriptorTableBytes, usedRingBytes } from "../virtio/ring_layout.ts";
import { type NegotiatedFeatures, type StartedVring } from "../virtio/started_vring.ts";
import { type GuestWriteLog } from "../virtio/guest_write_log.ts";
import {
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_MRG_RXBUF,
} from "../tap/net_features.ts";
import {
  descriptorRingBytes,
  EVENT_SUPPRESS_SIZE,
  frontendPackedState,
  INITIAL_PACKED_STATE,
} from "../virtio/packed_ring_layout.ts";
import { isTransmitRing, MAX_QUEUE_PAIRS } from "../tap/vring_datapath.ts";

/** Connection states: requests other than negotiation need SET_OWNER first. */
export type BackendState = "awaiting-owner" | "owned";

/** A request that is not valid in the backend's current state. */
export class InvalidStateError extends ProtocolError {
  /** The state the request arrived in. */
  readonly state: BackendState;
  constructor(request: number, state: BackendState, why: string) {
    super(request, `${requestName(request)} is not valid in state ${state}: ${why}`);
    this.name = "InvalidStateError";
    this.state = state;
  }
}

/**
 * Largest dirty log accepted: just under 4 GiB of bitmap, which covers 128 TiB of guest
 * memory; the atomic OR's byte index is a u32 (ffi/mapped_memory.ts), and the bitmap
 * may start up to a page into its mapping.
 */
const MAX_LOG_SIZE = 2 ** 32 - MMAP_PAGE_SIZE;
/** Addresses, sizes and offsets must stay below 2^53 (exact as doubles). */
const ADDRESS_LIMIT = 2 ** 53;

/** Smallest MTU accepted in NET_SET_MTU (virtio 1.2 §5.1.4: 68). */
const MIN_MTU = 68;
/** Largest MTU accepted in NET_SET_MTU. */
const MAX_MTU = 65535;

/** Handler outcome: the request succeeded / failed (for REPLY_ACK) / already replied. */
const OK = 0;
const FAILED = 1;
const REPLIED = 2;
type Outcome = typeof OK | typeof FAILED | typeof REPLIED;

/** Called when writing a ring's call fd failed. */
type CallFailureHandler = (vring: Vring, call: Notifier, error: unknown) => void;

/** Per-ring configuration as set by the front-end. */
class Vring {
  readonly index: number;
  size = 0;
  addressesSet = false;
  descriptorAddress = 0;
  usedAddress = 0;
  availableAddress = 0;
  /** VHOST_VRING_F_LOG: used-ring writes are logged at {@link logAddress}. */
  logUsed = false;
  /** The guest address the used ring's first byte is logged at (SET_VRING_ADDR `log`). */
  logAddress = 0;
  /**
   * SET_VRING_BASE `num` (split: the next available index; packed: both positions and
   * wrap counters), or the ring's state when it was last stopped; null before either.
   */
  base: number | null = null;
  kick: Notifier | null = null;
  call: Notifier | null = null;
  err: Notifier | null = null;
  /** Set when a write to `call` failed: it is not written again until replaced. */
  callFailed = false;
  /** SET_VRING_ENABLE value (meaningful when protocol features are negotiated). */
  enabled = false;
  started = false;
  /**
   * A TX ring disabled while it ran: it runs on, discarding (vhost-user.rst "Ring
   * states"), also across a memory table change, until enabled again or taken back
   * by GET_VRING_BASE.
   */
  runsDisabled = false;
  unwatchKick: (() => void) | null = null;
  /** Signals the current call fd; never throws (the datapath calls it mid-batch). */
  readonly notifyGuest: () => void;

  constructor(index: number, onCallFailure: CallFailureHandler) {
    this.index = index;
    this.notifyGuest = () => {
      const call = this.call;
      if (call === null || this.callFailed) return;
      try {
        call.signal();
      } catch (error) {
        this.callFailed = true;
        onCallFailure(this, call, error);
      }
    };
  }

  /** Replaces the call fd (closing the old one); a new fd is written again. */
  setCall(call: Notifier | null): void {
    const old = this.call;
    this.call = call;
    this.callFailed = false;
    old?.close();
  }
}

/** What each fd-carrying vring request calls its fd, for messages. */
const VRING_FD_ROLES: ReadonlyMap<number, string> = new Map([
  [Request.SET_VRING_KICK, "kick"],
  [Request.SET_VRING_CALL, "call"],
  [Request.SET_VRING_ERR, "err"],
]);

function hex(value: number): string {
  return "0x" + value.toString(16);
}

/** The backend side of one vhost-user connection. */
export class VhostUserBackend {
  readonly #env: BackendEnvironment;
  readonly #memory: GuestMemoryMap;
  readonly #vrings: Vring[] = [];
  #state: BackendState = "awaiting-owner";
  #features = 0n;
  #featuresSet = false;
  #protocolFeatures = 0n;
  #protocolNegotiated = false;
  #mtu = 0;
  /** One warning per session for notifier fds that could not be verified (no /proc). */
  #unverifiedFdWarned = false;
  /** The dirty log set by SET_LOG_BASE (null before one is set). */
  #dirtyLog: DirtyLog | null = null;
  /** SET_LOG_FD's eventfd: kept (never signalled) until replaced or the session ends. */
  #logFd: Notifier | null = null;
  /** Writes that could not be marked in the dirty log (rate-limited errors). */
  readonly #logMisses: RateLimitedLog;
  readonly #onLogMiss: (what: string) => void;
  readonly #callFailures: RateLimitedLog;
  readonly #onCallFailure: CallFailureHandler;
  #negotiated: NegotiatedFeatures = {
    eventIndex: false,
    indirectDescriptors: false,
    mergeableRxBuffers: false,
    checksumOffload: false,
    guestChecksum: false,
    packedRing: false,
  };

  constructor(env: BackendEnvironment) {
    this.#env = env;
    this.#memory = new GuestMemoryMap(env.map, MAX_MEM_SLOTS);
    this.#callFailures = new RateLimitedLog("error", undefined, env.log);
    this.#logMisses = new RateLimitedLog("error", undefined, env.log);
    this.#onLogMiss = (what) => {
      this.#logMisses.write(
        performance.now(),
        `vhost-user: dirty log: ${what}: the migration target may get a stale page`,
      );
    };
    this.#onCallFailure = (vring, call, error) => {
      this.#callFailures.write(
        performance.now(),
        `vhost-user: ring ${vring.index}: signalling the guest through call fd ${call.fd} failed: ${
          error instanceof Error ? error.message : String(error)
        }; the ring gets no more interrupts until SET_VRING_CALL replaces the fd`,
      );
    };
    // every ring of MAX_QUEUE_PAIRS pairs: a ring costs nothing until the front-end sets it up
    for (let i = 0; i < VRING_COUNT; i++) this.#vrings.push(new Vring(i, this.#onCallFailure));
  }

  /** The current connection state. */
  get state(): BackendState {
    return this.#state;
  }

  /** The guest memory map (for tests and the datapath). */
  get memory(): GuestMemoryMap {
    return this.#memory;
  }

  /** Acked virtio features (0n before SET_FEATURES). */
  get features(): bigint {
    return this.#features;
  }

  /** Acked protocol features. */
  get protocolFeatures(): bigint {
    return this.#protocolFeatures;
  }

  /** Whether writes into guest memory are marked in a dirty log now (LOG_ALL acked, log set). */
  get logging(): boolean {
    return this.#dirtyLog !== null && (this.#features & featureBit(VHOST_F_LOG_ALL)) !== 0n;
  }

  /** The MTU set by NET_SET_MTU, 0 when none was set. */
  get mtu(): number {
    return this.#mtu;
  }

  /** Whether ring `index` is started on the datapath. */
  isStarted(index: number): boolean {
    return this.#vrings[index]?.started ?? false;
  }

  /**
   * Handles one message. Takes ownership of `message.fds` (keeps or closes each).
   * Sends the reply (or REPLY_ACK) through `replies`.
   * @throws ProtocolError (or InvalidStateError) when the connection must be closed;
   *   a failure REPLY_ACK has been sent first when one was asked for
   */
  handle(message: Message, now: number, replies: ReplyWriter): void {
    const fds = message.fds;
    if (this.#env.log.enabled("trace")) {
      this.#env.log.trace(
        `vhost-user: ${requestName(message.request)} flags 0x${
          message.flags.toString(16)
        } size ${message.size} fds ${fds.length}`,
      );
    }
    let outcome: Outcome;
    try {
      if (fds.length > MAX_FDS_PER_MESSAGE) {
        throw new ProtocolError(
          message.request,
          `${
            requestName(message.request)
          }: ${fds.length} fds exceed the limit of ${MAX_FDS_PER_MESSAGE}`,
        );
      }
      outcome = this.#dispatch(message, now, replies);
    } catch (error) {
      if (error instanceof ProtocolError && this.#wantsAck(message)) {
        try {
          replies.sendU64(message.request, 1n);
        } catch { /* the connection is closing anyway */ }
      }
      throw error;
    } finally {
      // handlers remove the fds they keep; whatever is left is extra and closed here
      for (const fd of fds.splice(0)) this.#env.closeFd(fd);
    }
    if (outcome !== REPLIED && this.#wantsAck(message)) {
      replies.sendU64(message.request, outcome === OK ? 0n : 1n);
    }
  }

  /**
   * Ends the session: stops every ring, drops every view, unmaps memory and closes
   * every eventfd — all of it, whatever fails on the way (the first failure is
   * thrown at the end). Safe to call twice.
   */
  shutdown(): void {
    let failure: unknown = null;
    try {
      this.#stopAll();
    } catch (error) {
      failure = error;
    }
    // The datapath drops its views in stopVring even when that throws (see
    // VringDatapath.stopVring), so unmapping is safe now.
    try {
      this.#memory.clear();
    } catch (error) {
      failure ??= error;
    }
    for (const vring of this.#vrings) {
      try {
        this.#closeNotifiers(vring);
      } catch (error) {
        failure ??= error;
      }
    }
    // the rings are stopped: nothing writes to the log any more
    const log = this.#dirtyLog;
    const logFd = this.#logFd;
    this.#dirtyLog = null;
    this.#logFd = null;
    for (const close of [() => log?.close(), () => logFd?.close()]) {
      try {
        close();
      } catch (error) {
        failure ??= error;
      }
    }
    if (failure !== null) throw failure;
  }

  #wantsAck(message: Message): boolean {
    return needsReply(message.flags) && this.#hasProtocolFeature(ProtocolFeature.REPLY_ACK);
  }

  #hasProtocolFeature(bit: number): boolean {
    return (this.#protocolFeatures & featureBit(bit)) !== 0n;
  }

  #dispatch(message: Message, now: number, replies: ReplyWriter): Outcome {
    const request = message.request as RequestCode;
    switch (request) {
      case Request.GET_FEATURES:
        return this.#getFeatures(message, replies);
      case Request.SET_FEATURES:
        return this.#setFeatures(message);
      case Request.GET_PROTOCOL_FEATURES:
        return this.#getProtocolFeatures(message, replies);
      case Request.SET_PROTOCOL_FEATURES:
        return this.#setProtocolFeatures(message);
      case Request.SET_OWNER:
        return this.#setOwner(message);
      case Request.RESET_OWNER:
        return this.#resetOwner(message);
      case Request.SET_MEM_TABLE:
        return this.#setMemTable(message, now);
      case Request.GET_MAX_MEM_SLOTS:
        return this.#getMaxMemSlots(message, replies);
      case Request.ADD_MEM_REG:
        return this.#addMemReg(message, now);
      case Request.REM_MEM_REG:
        return this.#remMemReg(message, now);
      case Request.SET_VRING_NUM:
        return this.#setVringNum(message);
      case Request.SET_VRING_ADDR:
        return this.#setVringAddr(message, now);
      case Request.SET_VRING_BASE:
        return this.#setVringBase(message);
      case Request.GET_VRING_BASE:
        return this.#getVringBase(message, replies);
      case Request.SET_VRING_KICK:
        return this.#setVringKick(message, now);
      case Request.SET_VRING_CALL:
        return this.#setVringCall(message);
      case Request.SET_VRING_ERR:
        return this.#setVringErr(message);
      case Request.GET_QUEUE_NUM:
        return this.#getQueueNum(message, replies);
      case Request.SET_VRING_ENABLE:
        return this.#setVringEnable(message, now);
      case Request.SET_DEVICE_STATE_FD:
        return this.#setDeviceStateFd(message, now, replies);
      case Request.CHECK_DEVICE_STATE:
        return this.#checkDeviceState(message, now, replies);
      case Request.NET_SET_MTU:
        return this.#netSetMtu(message, now);
      case Request.SEND_RARP:
        return this.#sendRarp(message, now);
      case Request.SET_LOG_BASE:
        return this.#setLogBase(message, replies);
      case Request.SET_LOG_FD:
        return this.#setLogFd(message);
      case Request.SET_BACKEND_REQ_FD:
      case Request.IOTLB_MSG:
      case Request.SET_VRING_ENDIAN:
      case Request.GET_CONFIG:
      case Request.SET_CONFIG:
      case Request.CREATE_CRYPTO_SESSION:
      case Request.CLOSE_CRYPTO_SESSION:
      case Request.POSTCOPY_ADVISE:
      case Request.POSTCOPY_LISTEN:
      case Request.POSTCOPY_END:
      case Request.GET_INFLIGHT_FD:
      case Request.SET_INFLIGHT_FD:
      case Request.GPU_SET_SOCKET:
      case Request.RESET_DEVICE:
      case Request.VRING_KICK:
      case Request.SET_STATUS:
      case Request.GET_STATUS:
        return this.#unsupported(message, replies);
      default: {
        // exhaustiveness: every named request has a case above; numbers outside the
        // table reach this branch at run time only
        const unnamed: never = request;
        void unnamed;
        return this.#unsupported(message, replies);
      }
    }
  }

  // --- validation helpers ---------------------------------------------------------

  #expectSize(message: Message, ...sizes: number[]): void {
    if (!sizes.includes(message.size)) {
      throw new ProtocolError(
        message.request,
        `${requestName(message.request)}: payload size ${message.size} is not ${
          sizes.join(" or ")
        }`,
      );
    }
  }

  #expectFds(message: Message, count: number): void {
    if (message.fds.length !== count) {
      throw new ProtocolError(
        message.request,
        `${requestName(message.request)}: got ${message.fds.length} fds, expected ${count}`,
      );
    }
  }

  #requireOwner(message: Message): void {
    if (this.#state !== "owned") {
      throw new InvalidStateError(message.request, this.#state, "SET_OWNER has not been sent");
    }
  }

  #vring(message: Message, index: number): Vring {
    const vring = this.#vrings[index];
    if (vring === undefined) {
      throw new ProtocolError(
        message.request,
        `${
          requestName(message.request)
        }: queue index ${index} is not below ${VRING_COUNT} (${MAX_QUEUE_PAIRS} queue pairs)`,
      );
    }
    return vring;
  }

  #requireStopped(message: Message, vring: Vring): void {
    if (vring.started) {
      throw new InvalidStateError(
        message.request,
        this.#state,
        `ring ${vring.index} is started (send GET_VRING_BASE first)`,
      );
    }
  }

  // --- feature negotiation -----------------------------------------------------------

  #getFeatures(message: Message, replies: ReplyWriter): Outcome {
    this.#expectSize(message, 0, U64_PAYLOAD_SIZE);
    this.#expectFds(message, 0);
    replies.sendU64(message.request, OFFERED_FEATURES);
    return REPLIED;
  }

  #setFeatures(message: Message): Outcome {
    this.#requireOwner(message);
    this.#expectSize(message, U64_PAYLOAD_SIZE);
    this.#expectFds(message, 0);
    const features = readU64Big(message.payload, 0);
    const unoffered = features & ~OFFERED_FEATURES;
    if (unoffered !== 0n) {
      throw new ProtocolError(
        message.request,
        `SET_FEATURES: acked feature bits 0x${unoffered.toString(16)} were not offered`,
      );
    }
    if ((features & featureBit(VIRTIO_F_VERSION_1)) === 0n) {
      throw new ProtocolError(
        message.request,
        `SET_FEATURES: VIRTIO_F_VERSION_1 (bit 32) not acked: legacy virtio devices are not supported`,
      );
    }
    // Only VHOST_F_LOG_ALL may change under running rings: QEMU turns dirty logging
    // on and off while the guest runs (spec "Migration").
    const changed = features ^ this.#features;
    if (this.#featuresSet && (changed & ~featureBit(VHOST_F_LOG_ALL)) !== 0n) {
      const started = this.#vrings.find((v) => v.started);
      if (started) {
        throw new InvalidStateError(
          message.request,
          this.#state,
          `features changed while ring ${started.index} is started`,
        );
      }
    }
    this.#features = features;
    this.#featuresSet = true;
    if ((features & featureBit(VHOST_USER_F_PROTOCOL_FEATURES)) !== 0n) {
      this.#protocolNegotiated = true;
    }
    this.#negotiated = {
      eventIndex: (features & featureBit(VIRTIO_F_EVENT_IDX)) !== 0n,
      indirectDescriptors: (features & featureBit(VIRTIO_F_INDIRECT_DESC)) !== 0n,
      mergeableRxBuffers: (features & featureBit(VIRTIO_NET_F_MRG_RXBUF)) !== 0n,
      checksumOffload: (features & featureBit(VIRTIO_NET_F_CSUM)) !== 0n,
      guestChecksum: (features & featureBit(VIRTIO_NET_F_GUEST_CSUM)) !== 0n,
      packedRing: (features & featureBit(VIRTIO_F_RING_PACKED)) !== 0n,
      hostTso4: (features & featureBit(VIRTIO_NET_F_HOST_TSO4)) !== 0n,
      hostTso6: (features & featureBit(VIRTIO_NET_F_HOST_TSO6)) !== 0n,
      hostEcn: (features & featureBit(VIRTIO_NET_F_HOST_ECN)) !== 0n,
      guestTso4: (features & featureBit(VIRTIO_NET_F_GUEST_TSO4)) !== 0n,
      guestTso6: (features & featureBit(VIRTIO_NET_F_GUEST_TSO6)) !== 0n,
      mtu: this.#mtu, // NET_SET_MTU (sent only with VIRTIO_NET_F_MTU), before or after
    };
    this.#env.log.debug(`vhost-user: features 0x${features.toString(16)} acked`);
    if ((changed & featureBit(VHOST_F_LOG_ALL)) !== 0n) this.#logLoggingChange();
    this.#updateWriteLogs();
    return OK;
  }

  #getProtocolFeatures(message: Message, replies: ReplyWriter): Outcome {
    this.#expectSize(message, 0, U64_PAYLOAD_SIZE);
    this.#expectFds(message, 0);
    replies.sendU64(message.request, this.#offeredProtocolFeatures());
    return REPLIED;
  }

  #setProtocolFeatures(message: Message): Outcome {
    this.#expectSize(message, U64_PAYLOAD_SIZE);
    this.#expectFds(message, 0);
    const features = readU64Big(message.payload, 0);
    const unoffered = features & ~this.#offeredProtocolFeatures();
    if (unoffered !== 0n) {
      throw new ProtocolError(
        message.request,
        `SET_PROTOCOL_FEATURES: acked protocol feature bits 0x${
          unoffered.toString(16)
        } were not offered`,
      );
    }
    this.#protocolFeatures = features;
    this.#protocolNegotiated = true;
    this.#env.log.debug(`vhost-user: protocol features 0x${features.toString(16)} acked`);
    return OK;
  }

  /** The protocol features offered: device state only with a handler for it. */
  #offeredProtocolFeatures(): bigint {
    const deviceState = this.#env.deviceState ? featureBit(ProtocolFeature.DEVICE_STATE) : 0n;
    return OFFERED_PROTOCOL_FEATURES | deviceState;
  }

  #setOwner(message: Message): Outcome {
    this.#expectSize(message, 0, U64_PAYLOAD_SIZE);
    this.#expectFds(message, 0);
    if (this.#state === "owned") {
      throw new InvalidStateError(message.request, this.#state, "the session already has an owner");
    }
    this.#state = "owned";
    return OK;
  }

  #resetOwner(message: Message): Outcome {
    this.#requireOwner(message);
    this.#expectSize(message, 0, U64_PAYLOAD_SIZE);
    this.#expectFds(message, 0);
    this.shutdown();
    for (let i = 0; i < this.#vrings.length; i++) {
      this.#vrings[i] = new Vring(i, this.#onCallFailure);
    }
    this.#features = 0n;
    this.#featuresSet = false;
    this.#state = "awaiting-owner";
    this.#env.log.info("vhost-user: RESET_OWNER: rings stopped, memory unmapped");
    return OK;
  }

  #getQueueNum(message: Message, replies: ReplyWriter): Outcome {
    this.#expectSize(message, 0, U64_PAYLOAD_SIZE);
    this.#expectFds(message, 0);
    // in queue pairs: QEMU's vhost-user-net compares it with its `queues=N` (pairs)
    replies.sendU64(message.request, BigInt(MAX_QUEUE_PAIRS));
    return REPLIED;
  }

  #getMaxMemSlots(message: Message, replies: ReplyWriter): Outcome {
    this.#expectSize(message, 0, U64_PAYLOAD_SIZE);
    this.#expectFds(message, 0);
    replies.sendU64(message.request, BigInt(MAX_MEM_SLOTS));
    return REPLIED;
  }

  // --- memory ------------------------------------------------------------------------

  #setMemTable(message: Message, now: number): Outcome {
    this.#requireOwner(message);
    if (message.size < MEMORY_REGIONS) this.#expectSize(message, MEMORY_REGIONS);
    const count = decodeRegionCount(message.payload);
    if (count > MEMORY_MAX_NREGIONS) {
      throw new ProtocolError(
        message.request,
        `SET_MEM_TABLE: ${count} regions exceed the limit of ${MEMORY_MAX_NREGIONS}`,
      );
    }
    this.#expectSize(message, MEMORY_REGIONS + count * REGION_ENTRY_SIZE, MEMORY_TABLE_MAX_SIZE);
    if (message.fds.length !== count) {
      throw new ProtocolError(
        message.request,
        `SET_MEM_TABLE: ${count} regions but ${message.fds.length} fds`,
      );
    }
    const regions: RegionDescription[] = [];
    for (let i = 0; i < count; i++) {
      regions.push(decodeRegion(message.payload, regionEntryOffset(i), message.request));
    }
    const invalid = this.#memory.validate(regions, true);
    if (invalid !== null) throw new ProtocolError(message.request, `SET_MEM_TABLE: ${invalid}`);
    // stop rings first, drop every view, then unmap the old table
    this.#stopAll();
    this.#memory.clear();
    for (let i = 0; i < count; i++) this.#mapRegion(message, regions[i], message.fds[i]);
    this.#env.log.info(
      `vhost-user: memory table with ${count} regions: ${
        regions.map((r) => `${hex(r.guestAddress)}+${hex(r.size)}`).join(", ")
      }`,
    );
    this.#startReady(message, now);
    return OK;
  }

  /**
   * Checks that the file behind `fd` holds `size` bytes from `offset` (when its size
   * can be known); `what` names the range in errors, `fdOf` (default `what`) the fd's
   * owner in the error when the file cannot be examined.
   * @throws ProtocolError when the file cannot be examined or is too short
   */
  #requireFileRoom(
    message: Message,
    fd: number,
    offset: number,
    size: number,
    what: string,
    fdOf: string = what,
  ): void {
    const name = requestName(message.request);
    let fileSize: number | null;
    try {
      fileSize = this.#env.fileSize(fd);
    } catch (error) {
      throw new ProtocolError(
        message.request,
        `${name}: cannot examine the fd of ${fdOf}: ${(error as Error).message}`,
      );
    }
    if (fileSize !== null && size > fileSize - offset) {
      throw new ProtocolError(
        message.request,
        `${name}: ${what} ends beyond its ${fileSize}-byte file`,
      );
    }
  }

  /**
   * What the fd of a message is (eventfd or not); `whose` names it in the error,
   * e.g. "the log" or "ring 0's kick".
   * @throws ProtocolError when it cannot be examined
   */
  #describeFd(message: Message, fd: number, whose: string): FdDescription {
    try {
      return this.#env.describeFd(fd);
    } catch (error) {
      throw new ProtocolError(
        message.request,
        `${requestName(message.request)}: cannot examine ${whose} fd: ${(error as Error).message}`,
      );
    }
  }

  #mapRegion(message: Message, region: RegionDescription, fd: number): void {
    const what = `region guest ${hex(region.guestAddress)} size ${hex(region.size)} offset ${
      hex(region.mmapOffset)
    }`;
    this.#requireFileRoom(message, fd, region.mmapOffset, region.size, what);
    try {
      this.#memory.add(region, fd);
    } catch (error) {
      throw new ProtocolError(
        message.request,
        `${requestName(message.request)}: cannot map region guest ${
          hex(region.guestAddress)
        } size ${hex(region.size)} offset ${hex(region.mmapOffset)}: ${(error as Error).message}`,
      );
    }
    // the mapping keeps the memory; the fd itself is closed by handle()
  }

  #addMemReg(message: Message, now: number): Outcome {
    this.#requireOwner(message);
    this.#expectSize(message, SINGLE_REGION_SIZE);
    this.#expectFds(message, 1);
    const region = decodeRegion(message.payload, SINGLE_REGION_ENTRY, message.request);
    const invalid = this.#memory.validate([region], false);
    if (invalid !== null) throw new ProtocolError(message.request, `ADD_MEM_REG: ${invalid}`);
    this.#mapRegion(message, region, message.fds[0]);
    this.#env.log.debug(
      `vhost-user: added region ${hex(region.guestAddress)}+${hex(region.size)}`,
    );
    this.#startReady(message, now);
    return OK;
  }

  #remMemReg(message: Message, now: number): Outcome {
    this.#requireOwner(message);
    this.#expectSize(message, SINGLE_REGION_SIZE);
    // QEMU before 7.0 sent the region's fd along; it is not needed and closed by handle()
    if (message.fds.length > 1) this.#expectFds(message, 1);
    const region = decodeRegion(message.payload, SINGLE_REGION_ENTRY, message.request);
    this.#stopAll();
    const removed = this.#memory.remove(region.guestAddress, region.size);
    if (!removed) {
      this.#env.log.warn(
        `vhost-user: REM_MEM_REG: no region at guest ${hex(region.guestAddress)} size ${
          hex(region.size)
        }`,
      );
    }
    this.#startReady(message, now);
    return removed ? OK : FAILED;
  }

  // --- rings -------------------------------------------------------------------------

  #readState(message: Message): { vring: Vring; num: number } {
    this.#requireOwner(message);
    this.#expectSize(message, VRING_STATE_SIZE);
    this.#expectFds(message, 0);
    const { index, num } = decodeVringState(message.payload);
    return { vring: this.#vring(message, index), num };
  }

  #setVringNum(message: Message): Outcome {
    const { vring, num } = this.#readState(message);
    this.#requireStopped(message, vring);
    // Packed rings may have any size up to 2^15 (virtio 1.2 §2.8), split ones a power of two.
    const packed = this.#negotiated.packedRing === true;
    if (num === 0 || num > MAX_RING_SIZE || (!packed && (num & (num - 1)) !== 0)) {
      throw new ProtocolError(
        message.request,
        `SET_VRING_NUM: ring ${vring.index} size ${num} is not ${
          packed ? "a size" : "a power of two"
        } in 1..${MAX_RING_SIZE}`,
      );
    }
    vring.size = num;
    return OK;
  }

  #setVringAddr(message: Message, now: number): Outcome {
    this.#requireOwner(message);
    this.#expectSize(message, VRING_ADDR_SIZE);
    this.#expectFds(message, 0);
    const {
      index,
      flags,
      descriptor: descriptorAddress,
      used: usedAddress,
      available: availableAddress,
      log: logAddress,
    } = decodeVringAddress(message.payload, message.request);
    const vring = this.#vring(message, index);
    if ((flags & ~VRING_FLAGS_LOG) !== 0) {
      throw new ProtocolError(
        message.request,
        `SET_VRING_ADDR: ring ${vring.index} flags 0x${
          flags.toString(16)
        } has bits other than VHOST_VRING_F_LOG`,
      );
    }
    const logUsed = flags === VRING_FLAGS_LOG;
    if (logUsed && (this.#features & featureBit(VHOST_F_LOG_ALL)) === 0n) {
      throw new ProtocolError(
        message.request,
        `SET_VRING_ADDR: ring ${vring.index} asks for used-ring logging (VHOST_VRING_F_LOG) but VHOST_F_LOG_ALL is not acked`,
      );
    }
    if (
      vring.started && (descriptorAddress !== vring.descriptorAddress ||
        usedAddress !== vring.usedAddress || availableAddress !== vring.availableAddress)
    ) {
      this.#requireStopped(message, vring); // only the logging may change on a running ring
    }
    vring.logUsed = logUsed;
    vring.logAddress = logAddress;
    if (vring.started) {
      // QEMU turning used-ring logging on or off (spec "Migration"): the ring runs on
      this.#env.datapath.setWriteLog(vring.index, this.#ringWriteLog(vring));
      this.#env.log.debug(
        `vhost-user: ring ${vring.index}: used-ring logging ${
          logUsed ? `at guest ${hex(logAddress)}` : "off"
        }`,
      );
      return OK;
    }
    vring.descriptorAddress = descriptorAddress;
    vring.usedAddress = usedAddress;
    vring.availableAddress = availableAddress;
    vring.addressesSet = true;
    if (this.#memory.regionCount > 0 && vring.size > 0) this.#ringViews(message, vring);
    this.#tryStart(message, vring, now);
    return OK;
  }

  #setVringBase(message: Message): Outcome {
    const { vring, num } = this.#readState(message);
    this.#requireStopped(message, vring);
    // A packed ring's state fills all 32 bits (packed_ring_layout.ts); the engine checks
    // its positions against the ring size when the ring starts.
    if (num > 0xffff && this.#negotiated.packedRing !== true) {
      throw new ProtocolError(
        message.request,
        `SET_VRING_BASE: ring ${vring.index} base ${num} does not fit a 16-bit ring index`,
      );
    }
    vring.base = this.#negotiated.packedRing === true ? frontendPackedState(num) : num;
    return OK;
  }

  #getVringBase(message: Message, replies: ReplyWriter): Outcome {
    const { vring } = this.#readState(message);
    vring.runsDisabled = false; // the front-end takes the ring back
    try {
      if (vring.started) this.#stop(vring);
    } finally {
      // the ring is stopped until the front-end sets a kick fd again (spec "Ring states")
      vring.kick?.close();
      vring.kick = null;
      vring.setCall(null);
    }
    const base = this.#startBase(vring);
    replies.sendVringState(message.request, vring.index, base);
    this.#env.log.debug(`vhost-user: ring ${vring.index} stopped at 0x${base.toString(16)}`);
    return REPLIED;
  }

  /**
   * Parses the u64 of SET_VRING_KICK/CALL/ERR and takes its fd, which must be an
   * eventfd in normal mode; null notifier means NOFD. A refused fd stays in
   * `message.fds` (handle() closes it).
   */
  #readVringFd(message: Message): { vring: Vring; notifier: Notifier | null } {
    this.#requireOwner(message);
    this.#expectSize(message, U64_PAYLOAD_SIZE);
    const low = message.payload.getUint32(0, true);
    const high = message.payload.getUint32(4, true);
    const index = low & VRING_FD_INDEX_MASK;
    const noFd = (low & VRING_FD_NOFD) !== 0;
    if (high !== 0 || (low & ~(VRING_FD_INDEX_MASK | VRING_FD_NOFD)) !== 0) {
      throw new ProtocolError(
        message.request,
        `${requestName(message.request)}: reserved bits set in 0x${
          (high * 2 ** 32 + low).toString(16)
        }`,
      );
    }
    this.#expectFds(message, noFd ? 0 : 1);
    const vring = this.#vring(message, index);
    if (noFd) return { vring, notifier: null };
    const name = requestName(message.request);
    const role = VRING_FD_ROLES.get(message.request) ?? "notifier";
    const fd = message.fds[0];
    const kind = this.#describeFd(message, fd, `ring ${index}'s ${role}`);
    if (!kind.normalEventFd) {
      throw new ProtocolError(
        message.request,
        `${name}: ring ${index} ${role} fd is ${kind.text}, not an eventfd in normal mode`,
      );
    }
    if (!kind.verified && !this.#unverifiedFdWarned) {
      this.#unverifiedFdWarned = true;
      this.#env.log.warn(
        `vhost-user: ${name}: ring ${index} ${role} fd is ${kind.text}; used as an eventfd`,
      );
    }
    message.fds.pop();
    return { vring, notifier: this.#env.notifier(fd, kind) };
  }

  #setVringKick(message: Message, now: number): Outcome {
    const { vring, notifier } = this.#readVringFd(message);
    try {
      if (vring.started) this.#stop(vring);
    } finally {
      // the new fd is kept even when the stop failed: shutdown() closes it then
      vring.kick?.close();
      vring.kick = notifier;
    }
    if (notifier === null) {
      this.#env.log.warn(
        `vhost-user: ring ${vring.index}: kick without fd (polling mode) is not supported; ring stays stopped`,
      );
      return OK;
    }
    this.#tryStart(message, vring, now);
    return OK;
  }

  #setVringCall(message: Message): Outcome {
    const { vring, notifier } = this.#readVringFd(message);
    // a started ring keeps running; notifyGuest() reads the current call fd each time
    vring.setCall(notifier);
    // A running ring signals its new call fd once: an interrupt the ring decided on
    // while it had no call fd (it starts at SET_VRING_KICK, and QEMU sends CALL after
    // KICK) or one written to the fd just replaced never reached the guest, and with
    // VIRTIO_F_EVENT_IDX a guest waiting for it would get no other (virtio 1.2 §2.7.10).
    // A spurious interrupt costs the guest one look at its used ring.
    if (vring.started && notifier !== null) vring.notifyGuest();
    return OK;
  }

  #setVringErr(message: Message): Outcome {
    const { vring, notifier } = this.#readVringFd(message);
    vring.err?.close();
    vring.err = notifier;
    return OK;
  }

  #setVringEnable(message: Message, now: number): Outcome {
    const { vring, num } = this.#readState(message);
    if (num > 1) {
      throw new ProtocolError(
        message.request,
        `SET_VRING_ENABLE: ring ${vring.index} value ${num} is neither 0 nor 1`,
      );
    }
    const wasEnabled = vring.enabled;
    vring.enabled = num === 1;
    if (isTransmitRing(vring.index) && vring.started) {
      // Started but disabled, a TX ring is still served and its frames discarded
      // (vhost-user.rst "Ring states"): a guest leaving the queue (ethtool -L) gets
      // back what it queued there, whose buffers it would otherwise wait for.
      vring.runsDisabled = !vring.enabled;
      if (vring.enabled !== wasEnabled) {
        this.#env.datapath.setTransmitEnabled(vring.index, vring.enabled);
      }
    } else {
      if (!vring.enabled && vring.started) this.#stop(vring);
      if (vring.enabled) this.#tryStart(message, vring, now);
    }
    // A ring may be enabled before it is set up (QEMU enables before SET_MEM_TABLE on
    // a migration target; a front-end may enable pairs it never uses): it starts once
    // it has a size, addresses and a kick fd, and until then nothing serves it.
    this.#env.log.debug(
      `vhost-user: ring ${vring.index} ${vring.enabled ? "enabled" : "disabled"}${
        vring.enabled && !vring.started ? " (not started: not set up yet)" : ""
      }`,
    );
    return OK;
  }

  // --- net-specific ------------------------------------------------------------------

  #netSetMtu(message: Message, now: number): Outcome {
    this.#requireOwner(message);
    this.#expectSize(message, U64_PAYLOAD_SIZE);
    this.#expectFds(message, 0);
    const high = message.payload.getUint32(4, true);
    const mtu = message.payload.getUint32(0, true);
    if (high !== 0 || mtu < MIN_MTU || mtu > MAX_MTU) {
      this.#env.log.warn(
        `vhost-user: NET_SET_MTU: MTU ${
          high !== 0 ? "≥ 2^32" : mtu
        } is outside ${MIN_MTU}..${MAX_MTU}`,
      );
      return FAILED;
    }
    this.#mtu = mtu;
    // Rings started from now on run with it (QEMU sets it before it starts them).
    this.#negotiated = { ...this.#negotiated, mtu };
    this.#env.log.info(`vhost-user: front-end set MTU ${mtu}`);
    this.#env.onMtu?.(mtu, now);
    return OK;
  }

  #sendRarp(message: Message, now: number): Outcome {
    this.#requireOwner(message);
    this.#expectSize(message, U64_PAYLOAD_SIZE);
    this.#expectFds(message, 0);
    const mac = new Uint8Array(message.payload.buffer, message.payload.byteOffset, 6).slice();
    const text = Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join(":");
    this.#env.log.info(`vhost-user: SEND_RARP for guest MAC ${text}`);
    this.#env.onRarp?.(mac, now);
    return OK;
  }

  // --- device state (spec "Migrating back-end state") -----------------------------

  #deviceStateHandler(message: Message) {
    const handler = this.#env.deviceState;
    if (!handler || !this.#hasProtocolFeature(ProtocolFeature.DEVICE_STATE)) {
      throw new InvalidStateError(
        message.request,
        this.#state,
        "VHOST_USER_PROTOCOL_F_DEVICE_STATE was not negotiated",
      );
    }
    return handler;
  }

  #setDeviceStateFd(message: Message, now: number, replies: ReplyWriter): Outcome {
    this.#expectSize(message, DEVICE_STATE_PARAMS_SIZE);
    this.#expectFds(message, 1);
    const handler = this.#deviceStateHandler(message);
    const direction = message.payload.getUint32(DEVICE_STATE_DIRECTION, true);
    const phase = message.payload.getUint32(DEVICE_STATE_PHASE, true);
    let failure: string | null = null;
    if (direction !== DEVICE_STATE_SAVE && direction !== DEVICE_STATE_LOAD) {
      failure = `direction ${direction} is neither save (0) nor load (1)`;
    } else if (phase !== DEVICE_STATE_PHASE_STOPPED) {
      failure = `phase ${phase} is not "stopped" (0), the only one supported`;
    } else {
      // the handler owns the fd from here, even when it refuses
      const fd = message.fds.pop()!;
      try {
        handler.begin(direction === DEVICE_STATE_SAVE ? "save" : "load", fd, now);
      } catch (error) {
        failure = (error as Error).message;
      }
    }
    if (failure !== null) {
      this.#env.log.error(`vhost-user: SET_DEVICE_STATE_FD: ${failure}`);
      replies.sendU64(message.request, BigInt(DEVICE_STATE_REPLY_NO_FD | FAILED));
      return REPLIED;
    }
    // success, and no fd of our own: the front-end's pipe carries the state
    replies.sendU64(message.request, BigInt(DEVICE_STATE_REPLY_NO_FD));
    return REPLIED;
  }

  #checkDeviceState(message: Message, now: number, replies: ReplyWriter): Outcome {
    this.#expectSize(message, 0, U64_PAYLOAD_SIZE);
    this.#expectFds(message, 0);
    const failure = this.#deviceStateHandler(message).check(now);
    if (failure !== null) this.#env.log.error(`vhost-user: CHECK_DEVICE_STATE: ${failure}`);
    replies.sendU64(message.request, failure === null ? 0n : 1n);
    return REPLIED;
  }

  // --- dirty logging (spec "Migration") -------------------------------------------------

  /**
   * SET_LOG_BASE with LOG_SHMFD: maps the log bitmap from the fd (`log size` bytes at
   * `log offset`), checked like a memory region (non-zero, inside its file, below
   * 2^53), switches the rings to it, then unmaps the log it replaces. Replies with a
   * u64 0: with LOG_SHMFD the front-end waits for a reply (spec "Communication").
   */
  #setLogBase(message: Message, replies: ReplyWriter): Outcome {
    this.#requireOwner(message);
    if (!this.#hasProtocolFeature(ProtocolFeature.LOG_SHMFD)) {
      throw new ProtocolError(
        message.request,
        "SET_LOG_BASE: VHOST_USER_PROTOCOL_F_LOG_SHMFD is not acked: a log without an fd cannot be used",
      );
    }
    this.#expectSize(message, LOG_DESCRIPTION_SIZE);
    this.#expectFds(message, 1);
    const { size, offset } = decodeLogDescription(message.payload, message.request);
    const what = `log of ${size} bytes at offset ${hex(offset)}`;
    if (size === 0) throw new ProtocolError(message.request, `SET_LOG_BASE: ${what}: size 0`);
    if (size > MAX_LOG_SIZE) {
      throw new ProtocolError(
        message.request,
        `SET_LOG_BASE: ${what} exceeds the limit of ${MAX_LOG_SIZE} bytes`,
      );
    }
    if (size > ADDRESS_LIMIT - offset) {
      throw new ProtocolError(message.request, `SET_LOG_BASE: ${what} ends at or beyond 2^53`);
    }
    const fd = message.fds[0];
    this.#requireFileRoom(message, fd, offset, size, what, `the ${what}`);
    const slack = offset % MMAP_PAGE_SIZE;
    let mapping: LogMapping;
    try {
      mapping = this.#env.mapLog(fd, size + slack, offset - slack);
    } catch (error) {
      throw new ProtocolError(
        message.request,
        `SET_LOG_BASE: cannot map the ${what}: ${(error as Error).message}`,
      );
    }
    let log: DirtyLog;
    try {
      log = new DirtyLog(mapping, slack, size);
    } catch (error) {
      mapping.unmap();
      throw new ProtocolError(
        message.request,
        `SET_LOG_BASE: cannot map the ${what}: ${(error as Error).message}`,
      );
    }
    // the mapping keeps the log; the fd itself is closed by handle()
    const old = this.#dirtyLog;
    this.#dirtyLog = log;
    try {
      this.#updateWriteLogs(); // the rings mark the new log from now on...
    } finally {
      old?.close(); // ...so the old one can go
    }
    this.#env.log.info(
      `vhost-user: dirty log of ${size} bytes (guest memory up to ${hex(log.coveredBytes)}) set${
        old === null ? "" : ", replacing the previous one"
      }`,
    );
    if (this.#featuresSet && this.logging) this.#logLoggingChange();
    replies.sendU64(message.request, 0n);
    return REPLIED;
  }

  /** SET_LOG_FD: keeps the eventfd (closing the one it replaces); it is never signalled. */
  #setLogFd(message: Message): Outcome {
    this.#requireOwner(message);
    this.#expectSize(message, 0, U64_PAYLOAD_SIZE);
    this.#expectFds(message, 1);
    const fd = message.fds[0];
    const kind = this.#describeFd(message, fd, "the log");
    if (!kind.normalEventFd) {
      throw new ProtocolError(
        message.request,
        `SET_LOG_FD: the log fd is ${kind.text}, not an eventfd`,
      );
    }
    message.fds.pop();
    const old = this.#logFd;
    this.#logFd = this.#env.notifier(fd, kind);
    old?.close();
    return OK;
  }

  /** What ring `vring` reports its writes to now: null unless logging. */
  #ringWriteLog(vring: Vring): GuestWriteLog | null {
    if (!this.logging) return null;
    return new RingWriteLog(
      this.#dirtyLog!,
      this.#memory,
      vring.logUsed ? vring.logAddress : -1,
      this.#onLogMiss,
    );
  }

  /** Hands every started ring its current write log (after logging changed). */
  #updateWriteLogs(): void {
    for (const vring of this.#vrings) {
      if (vring.started) this.#env.datapath.setWriteLog(vring.index, this.#ringWriteLog(vring));
    }
  }

  /** One info line when dirty logging starts or stops (or waits for its log). */
  #logLoggingChange(): void {
    const acked = (this.#features & featureBit(VHOST_F_LOG_ALL)) !== 0n;
    if (!acked) {
      this.#env.log.info("vhost-user: dirty logging off (VHOST_F_LOG_ALL cleared)");
    } else if (this.#dirtyLog === null) {
      this.#env.log.warn(
        "vhost-user: VHOST_F_LOG_ALL acked before SET_LOG_BASE: writes are not logged until a log is set",
      );
    } else {
      this.#env.log.info("vhost-user: dirty logging on: every write into guest memory is marked");
    }
  }

  #unsupported(message: Message, replies: ReplyWriter): Outcome {
    this.#env.log.warn(
      `vhost-user: ${
        requestName(message.request)
      } (size ${message.size}, ${message.fds.length} fds) is not supported; ignored`,
    );
    // a failure reply when one was asked for, even without REPLY_ACK: the front-end waits
    if (needsReply(message.flags) && !this.#wantsAck(message)) {
      replies.sendU64(message.request, 1n);
      return REPLIED;
    }
    return FAILED;
  }

  // --- ring lifecycle ------------------------------------------------------------------

  /** Views of the three ring areas, or a ProtocolError naming the area outside memory. */
  #ringViews(
    message: Message,
    vring: Vring,
  ): { descriptors: Uint8Array; available: Uint8Array; used: Uint8Array } {
    const n = vring.size;
    const area = (name: string, address: number, length: number): Uint8Array => {
      const view = this.#memory.viewByUserAddress(address, length);
      if (view === null) {
        throw new ProtocolError(
          message.request,
          `${requestName(message.request)}: ring ${vring.index} ${name} ${
            hex(address)
          }+${length} is outside mapped memory`,
        );
      }
      return view;
    };
    if (this.#negotiated.packedRing === true) {
      // virtio 1.2 §2.8: descriptor ring, driver and device event suppression areas.
      return {
        descriptors: area("descriptor ring", vring.descriptorAddress, descriptorRingBytes(n)),
        available: area("driver area", vring.availableAddress, EVENT_SUPPRESS_SIZE),
        used: area("device area", vring.usedAddress, EVENT_SUPPRESS_SIZE),
      };
    }
    return {
      descriptors: area("descriptor table", vring.descriptorAddress, descriptorTableBytes(n)),
      available: area("available ring", vring.availableAddress, availableRingBytes(n)),
      used: area("used ring", vring.usedAddress, usedRingBytes(n)),
    };
  }

  #isEnabled(vring: Vring): boolean {
    // without VHOST_USER_F_PROTOCOL_FEATURES rings start enabled (spec "Ring states")
    return this.#protocolNegotiated ? vring.enabled : true;
  }

  #tryStart(message: Message, vring: Vring, now: number): void {
    if (
      vring.started || !this.#featuresSet || vring.size === 0 || !vring.addressesSet ||
      vring.kick === null || !(this.#isEnabled(vring) || vring.runsDisabled) ||
      this.#memory.regionCount === 0
    ) {
      return;
    }
    const views = this.#ringViews(message, vring);
    const ring: StartedVring = {
      index: vring.index,
      size: vring.size,
      descriptorTable: views.descriptors,
      availableRing: views.available,
      usedRing: views.used,
      lastAvailIndex: this.#startBase(vring),
      memory: this.#memory,
      features: this.#negotiated,
      writeLog: this.#ringWriteLog(vring),
      notifyGuest: vring.notifyGuest,
    };
    const kick = vring.kick;
    const index = vring.index;
    const datapath = this.#env.datapath;
    // Each kick is an edge (watchReadable): the counter is not read per kick, which
    // would be a system call per TX turn; the ring's stop empties it (#stop).
    const unwatch = this.#env.watchReadable(kick.fd, (kickNow) => datapath.kick(index, kickNow));
    try {
      datapath.startVring(ring, now);
    } catch (error) {
      // the datapath may have taken the ring's views before it failed: make it drop them
      try {
        datapath.stopVring(index);
      } catch { /* it had not taken the ring */ }
      unwatch();
      throw error;
    }
    vring.started = true;
    vring.unwatchKick = unwatch;
    // restarted (a new memory table, a new kick fd) while disabled: it discards again
    if (!this.#isEnabled(vring) && vring.runsDisabled) datapath.setTransmitEnabled(index, false);
    this.#env.log.debug(
      `vhost-user: ring ${index} started: size ${vring.size}, base 0x${
        ring.lastAvailIndex.toString(16)
      }, ${this.#negotiated.packedRing === true ? "packed" : "split"} ring`,
    );
  }

  /**
   * Where ring `vring` starts: its base, or before any, the start of a fresh ring (split:
   * index 0; packed: slot 0 with both wrap counters 1, virtio 1.2 §2.8.1).
   */
  #startBase(vring: Vring): number {
    if (vring.base !== null) return vring.base;
    return this.#negotiated.packedRing === true ? INITIAL_PACKED_STATE : 0;
  }

  /**
   * Stops a started ring. The ring counts as stopped and its kick fd is no longer
   * watched even when the datapath throws (it has dropped the ring's views all the
   * same: VringDatapath.stopVring); the base then stays the one the ring started from.
   */
  #stop(vring: Vring): void {
    vring.started = false;
    const unwatch = vring.unwatchKick;
    vring.unwatchKick = null;
    let unwatchFailure: unknown = null;
    try {
      unwatch?.();
      // The kicks were taken without reading the counter: emptied now, the front-end
      // finds none pending once the ring is stopped (QEMU reads it when it takes the
      // queue back), as when every kick was read.
      vring.kick?.drain();
    } catch (error) {
      unwatchFailure = error;
    }
    try {
      const base = this.#env.datapath.stopVring(vring.index);
      vring.base = this.#negotiated.packedRing === true ? base >>> 0 : base & 0xffff;
    } catch (error) {
      throw new Error(`datapath failed to stop ring ${vring.index}: ${(error as Error).message}`);
    }
    if (unwatchFailure !== null) throw unwatchFailure;
  }

  /** Stops every started ring, all of them even when one fails (the first failure is thrown). */
  #stopAll(): void {
    let failure: unknown = null;
    for (const vring of this.#vrings) {
      if (!vring.started) continue;
      try {
        this.#stop(vring);
      } catch (error) {
        failure ??= error;
      }
    }
    if (failure !== null) throw failure;
  }

  #startReady(message: Message, now: number): void {
    for (const vring of this.#vrings) this.#tryStart(message, vring, now);
  }

  /** Stops watching and closes the ring's kick, call and err fds (each even if another fails). */
  #closeNotifiers(vring: Vring): void {
    const unwatch = vring.unwatchKick;
    const { kick, err } = vring;
    vring.unwatchKick = null;
    vring.kick = vring.err = null;
    const steps = [
      () => unwatch?.(),
      () => kick?.close(),
      () => vring.setCall(null),
      () => err?.close(),
    ];
    let failure: unknown = null;
    for (const step of steps) {
      try {
        step();
      } catch (error) {
        failure ??= error;
      }
    }
    if (failure !== null) throw failure;
  }
}
