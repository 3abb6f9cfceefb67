/**
 * One hostile vhost-user frontend session against the daemon, generated from a seed:
 * it negotiates like QEMU (random ring size up to 32,768 and random features, packed
 * rings included), then
 * takes random steps while the rings run —
 *
 * - ring layouts: descriptor loops, one chain through the whole table with a head at
 *   every descriptor, many heads sharing one large indirect table, nested and
 *   malformed indirect descriptors, addresses outside memory, the available index
 *   running ahead, random garbage, and valid traffic (ARP requests for the gateway,
 *   posted RX buffers);
 * - notifier fds: kick, call and error fds replaced by eventfds, semaphore-mode
 *   eventfds, pipe ends, socket ends or regular files, kicked accordingly;
 * - memory: memfds truncated to 0 or to half (sealable and unsealable ones), grown
 *   back, new SET_MEM_TABLEs, ADD_MEM_REG / REM_MEM_REG, several regions;
 * - ring control: disable/enable, stop (GET_VRING_BASE) and restart —
 *
 * and finally measures how long the daemon takes to answer GET_FEATURES on the same
 * connection and how much CPU it uses while the frontend is idle. Every step is
 * logged in {@link SessionResult.actions}.
 *
 * The test process maps the same memfds: after truncating one it never touches the
 * truncated part again (that would be a SIGBUS in the test), until it grows it back.
 *
 * @module
 */

import { EventFd } from "../../ffi/event_fd.ts";
import { MemFd } from "../../ffi/mem_fd.ts";
import { Errno, NativeError } from "../../ffi/native_error.ts";
import {
  featureBit,
  ProtocolFeature,
  Request,
  requestName,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
} from "../../src/vhost_user/protocol.ts";
import type { RegionDescription } from "../../src/vhost_user/guest_memory_map.ts";
import { MAX_QUEUE_SIZE, VIRTQ_DESC_F_WRITE } from "../../src/virtio/ring_layout.ts";
import type { HarnessRegion } from "../support/frontend/shared_memory.ts";
import {
  NET_HEADER_SIZE,
  RX,
  TX,
  VhostUserFrontend,
} from "../support/frontend/vhost_user_frontend.ts";
import { gatewayArpRequest } from "./gateway_probe.ts";
import { FD_KINDS, type FdKind, HostileNotifier } from "./hostile_notifier.ts";
import { RawRing } from "./hostile_ring.ts";
import { type Layout, type LayoutContext, LAYOUTS, writeLayout } from "./hostile_layouts.ts";
import type { FuzzDaemon } from "./hostile_daemon.ts";
import { VIRTIO_NET_F_MRG_RXBUF } from "../../src/tap/net_features.ts";
import {
  memTablePayload,
  singleRegionPayload,
  u64Payload,
  vringStatePayload,
} from "../../src/vhost_user/payload_codec.ts";

/** Counts over a whole fuzz run, for the closing report. */
export interface FuzzCounters {
  sessions: number;
  negotiationsFailed: number;
  endedByDaemon: number;
  steps: number;
  messages: number;
  kicks: number;
  kicksByKind: Record<FdKind, number>;
  fdsHandedOver: Record<FdKind, number>;
  layouts: Record<Layout, number>;
  ringSizes: Map<number, number>;
  truncations: number;
  truncationsRefusedBySeal: number;
  regrowths: number;
  memTables: number;
  addedRegions: number;
  removedRegions: number;
  ringRestarts: number;
  ringToggles: number;
  arpRequestsSent: number;
  rxBuffersPosted: number;
}

/** Fresh zero counters. */
export function newCounters(): FuzzCounters {
  const perKind = () => Object.fromEntries(FD_KINDS.map((k) => [k, 0])) as Record<FdKind, number>;
  return {
    sessions: 0,
    negotiationsFailed: 0,
    endedByDaemon: 0,
    steps: 0,
    messages: 0,
    kicks: 0,
    kicksByKind: perKind(),
    fdsHandedOver: perKind(),
    layouts: Object.fromEntries(LAYOUTS.map((l) => [l, 0])) as Record<Layout, number>,
    ringSizes: new Map(),
    truncations: 0,
    truncationsRefusedBySeal: 0,
    regrowths: 0,
    memTables: 0,
    addedRegions: 0,
    removedRegions: 0,
    ringRestarts: 0,
    ringToggles: 0,
    arpRequestsSent: 0,
    rxBuffersPosted: 0,
  };
}

/** What one hostile session did and saw. */
export interface SessionResult {
  /** Every step, in order, for failure reports. */
  readonly actions: string[];
  /** The daemon closed the connection before the session's end. */
  readonly endedByDaemon: boolean;
  /**
   * The slowest answer the daemon gave on this connection (acks, GET_VRING_BASE, the
   * final GET_FEATURES), null when nothing was answered.
   */
  readonly slowestAnswer: { readonly request: string; readonly ms: number } | null;
  /** GET_FEATURES after the last step got no answer within the stuck limit: the daemon hangs. */
  readonly unanswered: boolean;
  /** Share of a core the daemon used while this frontend sat idle (null when not measured). */
  readonly cpuShareWhileIdle: number | null;
}

/** Settings of one session. */
export interface SessionOptions {
  readonly socketPath: string;
  readonly daemon: FuzzDaemon;
  /** The run's seed and this session's number: together they decide every choice. */
  readonly seed: number;
  readonly index: number;
  /** Holds the regular files used as notifiers (removed by the caller). */
  readonly scratchDir: string;
  /** Prefix of every memfd name of this session (for the maps check). */
  readonly memfdPrefix: string;
  readonly counters: FuzzCounters;
  /** Longest wait for an answer before the daemon counts as blocked. */
  readonly controlLimitMs: number;
  /** Longest wait for an answer at all (then the daemon counts as stuck). */
  readonly stuckLimitMs: number;
  /** Window over which idle CPU use is measured. */
  readonly idleWindowMs: number;
  /** Share of a core above which the idle daemon is measured again (a spin stays above). */
  readonly idleCpuLimit: number;
}

/** What a session mostly does: every kind of step, or mostly one kind. */
const PROFILES = ["mixed", "rings", "notifiers", "memory"] as const;
type Profile = typeof PROFILES[number];
/**
 * Cumulative step weights per profile, in the order layout, notifier, memory, kick
 * burst, valid traffic, ring control.
 */
const STEP_WEIGHTS: Readonly<Record<Profile, readonly number[]>> = {
  mixed: [0.4, 0.6, 0.76, 0.86, 0.94, 1],
  rings: [0.6, 0.6, 0.6, 0.75, 0.95, 1],
  notifiers: [0.2, 0.6, 0.6, 0.85, 0.97, 1],
  memory: [0.25, 0.25, 0.65, 0.8, 0.97, 1],
};

/** Most steps one session takes. */
export const MAX_STEPS_PER_SESSION = 25;
/** Harness region sizes (each of the two regions): big enough for two 32,768 rings in region 0. */
const REGION_SIZES = [2 << 20, 4 << 20] as const;
/** Extra regions a session may add, at most. */
const MAX_EXTRA_REGIONS = 6;
/** Sizes of extra regions. */
const EXTRA_REGION_SIZES = [64 << 10, 1 << 20] as const;
/** Guest-physical and front-end addresses of extra region k: base + k × stride. */
const EXTRA_GPA_BASE = 0x2_0000_0000;
const EXTRA_USER_BASE = 0x7e00_0000_0000;
const EXTRA_STRIDE = 0x1000_0000;
/** RX buffer size for valid traffic (virtio-net header and a full 1514-byte frame fit). */
const RX_BUFFER_SIZE = 2048;
/** Page size: truncation keeps whole pages. */
const PAGE_SIZE = 4096;
/** A TX chain's length: virtio-net header plus a minimal Ethernet frame. */
const TX_PROBE_FRAME_SIZE = NET_HEADER_SIZE + 60;
/** Pauses between steps, milliseconds: none, a turn of the event loop, a little, a while. */
const STEP_PAUSES_MS = [0, 1, 5, 20] as const;

type Random = () => number;

/** The random source of session `index` of a run seeded `seed` (xorshift32). */
export function sessionRandom(seed: number, index: number): Random {
  let state = ((seed >>> 0) ^ Math.imul(index + 1, 0x9e37_79b1)) >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 2 ** 32;
  };
}

function pick<T>(random: Random, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)];
}

function below(random: Random, n: number): number {
  return Math.floor(random() * n);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Ring sizes, weighted toward the largest (where per-kick work hurts most). */
function pickRingSize(random: Random): number {
  const r = random();
  if (r < 0.35) return MAX_QUEUE_SIZE;
  if (r < 0.55) return pick(random, [8192, 16384]);
  return 1 << below(random, 16);
}

/** Something a step can kick through: the harness's eventfd or a hostile notifier. */
interface Kicker {
  readonly kind: FdKind;
  kick(random: Random): string;
}

/** A region added with ADD_MEM_REG or a SET_MEM_TABLE beyond the harness's two. */
interface ExtraRegion {
  readonly description: RegionDescription;
  readonly memfd: MemFd;
  /** The region's current file size (truncation changes it). */
  fileSize: number;
}

/** Why a control exchange ended. */
type ExchangeOutcome = "ok" | "failed" | "closed" | "timeout";

class HostileSession {
  readonly actions: string[] = [];
  readonly #options: SessionOptions;
  readonly #random: Random;
  readonly #counters: FuzzCounters;
  readonly #frontend: VhostUserFrontend;
  readonly #notifiers: HostileNotifier[] = [];
  readonly #eventFds: EventFd[] = [];
  readonly #extras: ExtraRegion[] = [];
  /** Harness regions (0: rings, 1: buffers) truncated below their full size now. */
  readonly #truncated = new Set<number>();
  #rings: RawRing[] = [];
  #kickers: Kicker[] = [];
  /** Hostile call and error notifiers by queue, acted on in kick bursts. */
  readonly #callNotifiers: HostileNotifier[][] = [[], []];
  #ringSize = 0;
  #profile: Profile = "mixed";
  readonly #layoutContext: LayoutContext;
  #closed = false;
  /** An exchange went unanswered: the daemon is blocked, no more steps. */
  #blocked = false;
  #slowestAnswer: { request: string; ms: number } | null = null;
  #serial = 0;

  constructor(options: SessionOptions, random: Random, frontend: VhostUserFrontend) {
    this.#options = options;
    this.#random = random;
    this.#counters = options.counters;
    this.#frontend = frontend;
    this.#layoutContext = {
      random,
      allocate: (length) => frontend.allocate(length),
      // every buffer lies in harness region 1 (see VhostUserFrontend.allocate)
      writableView: (address, length) =>
        this.#truncated.has(1) ? null : frontend.memory.view(address, length),
      harnessRegions: frontend.memory.regions.map((region) => region.description),
      extraRegions: this.#extras,
    };
  }

  /** The session cannot go on: the daemon closed the connection or stopped answering. */
  get over(): boolean {
    return this.#closed || this.#blocked;
  }

  /** The daemon closed the connection. */
  get closed(): boolean {
    return this.#closed;
  }

  /** The slowest answer so far (see {@link SessionResult.slowestAnswer}). */
  get slowestAnswer(): { request: string; ms: number } | null {
    return this.#slowestAnswer;
  }

  /** Negotiates with random ring size and features; false when the daemon refused. */
  async negotiate(): Promise<boolean> {
    const random = this.#random;
    this.#profile = pick(random, PROFILES);
    this.#ringSize = pickRingSize(random);
    let features = featureBit(VIRTIO_F_VERSION_1);
    if (random() < 0.85) features |= featureBit(VIRTIO_F_INDIRECT_DESC);
    if (random() < 0.5) features |= featureBit(VIRTIO_F_EVENT_IDX);
    if (random() < 0.5) features |= featureBit(VIRTIO_NET_F_MRG_RXBUF);
    // Packed rings (virtio 1.2 §2.8) get the same split-format garbage, read as packed
    // descriptors, driver and device areas.
    if (random() < 0.3) features |= featureBit(VIRTIO_F_RING_PACKED);
    const memSlots = random() < 0.5;
    const replyAck = random() < 0.7;
    this.#log(
      `profile ${this.#profile}; negotiate: ring size ${this.#ringSize}, features 0x${
        features.toString(16)
      }, ` +
        `mem slots ${memSlots}, reply-ack ${replyAck}`,
    );
    this.#counters.ringSizes.set(
      this.#ringSize,
      (this.#counters.ringSizes.get(this.#ringSize) ?? 0) + 1,
    );
    try {
      await this.#frontend.negotiate({ ringSize: this.#ringSize, features, memSlots, replyAck });
    } catch (error) {
      this.#log(`negotiation failed: ${(error as Error).message}`);
      return false;
    }
    this.#rings = [RX, TX].map((q) => {
      const ring = this.#frontend.vrings[q];
      return new RawRing(this.#frontend.memory, ring.areas, ring.size, ring.availIndex);
    });
    this.#kickers = [RX, TX].map((q) => {
      const eventFd = this.#frontend.kicks[q];
      return {
        kind: "eventfd" as const,
        kick: () => {
          eventFd.signal();
          return "signal 1";
        },
      };
    });
    if (this.#profile === "mixed" || this.#profile === "notifiers") {
      // half the rings start with another kind of kick fd, a third with another call fd
      // (the other profiles keep eventfds, which the daemon will not drop them for)
      try {
        for (const queue of [RX, TX]) {
          if (random() < 0.5) this.#handOver(queue, "kick", pick(random, FD_KINDS));
          if (random() < 0.3) this.#handOver(queue, "call", pick(random, FD_KINDS));
        }
      } catch (error) {
        if (!isDisconnect(error)) throw error;
        this.#markClosed(`send failed: ${(error as Error).message}`);
      }
    }
    return true;
  }

  /** Takes one random step. */
  async step(): Promise<void> {
    const random = this.#random;
    this.#counters.steps++;
    const r = random();
    const [layout, notifier, memory, kick, traffic] = STEP_WEIGHTS[this.#profile];
    try {
      if (r < layout) await this.#layoutStep();
      else if (r < notifier) await this.#notifierStep();
      else if (r < memory) await this.#memoryStep();
      else if (r < kick) this.#kickBurst();
      else if (r < traffic) this.#validTraffic(pick(random, [RX, TX]));
      else await this.#ringControlStep();
    } catch (error) {
      if (isDisconnect(error)) {
        this.#markClosed(`send failed: ${(error as Error).message}`);
      } else if (/^cannot send: socket full/.test((error as Error).message)) {
        // the daemon stopped reading its socket: it is blocked
        this.#blocked = true;
        this.#log(`send failed: ${(error as Error).message}`);
      } else {
        throw error;
      }
    }
    await sleep(pick(random, STEP_PAUSES_MS));
    if (!this.#blocked) this.#checkOpen();
  }

  /**
   * Sends GET_FEATURES and waits for the answer, up to the stuck limit. Returns false
   * when no answer came (the daemon hangs); true when it came or the connection was
   * closed.
   */
  async answersControl(): Promise<boolean> {
    if (this.#closed) return true;
    try {
      this.#frontend.send(Request.GET_FEATURES);
    } catch (error) {
      if (isDisconnect(error)) {
        this.#markClosed("GET_FEATURES could not be sent");
        return true;
      }
      if (!/^cannot send: socket full/.test((error as Error).message)) throw error;
      this.#log("GET_FEATURES could not be sent: the daemon does not read its socket");
      return false;
    }
    const outcome = await this.#awaitReply(Request.GET_FEATURES, this.#options.stuckLimitMs, false);
    this.#log(`GET_FEATURES after the last step: ${outcome}`);
    return outcome !== "timeout";
  }

  /** The daemon's CPU share while this frontend does nothing, or null if closed. */
  async measureIdleCpu(): Promise<number | null> {
    if (this.#closed) return null;
    const share = await this.#options.daemon.sustainedCpuShare(
      this.#options.idleWindowMs,
      this.#options.idleCpuLimit,
    );
    if (!this.#blocked) this.#checkOpen();
    this.#log(`daemon CPU while the frontend idles: ${(share * 100).toFixed(0)} %`);
    return this.#closed ? null : share;
  }

  /** Closes the frontend and everything the session created. */
  close(): void {
    this.#counters.messages += this.#frontend.sentLog.length;
    this.#frontend.close();
    for (const notifier of this.#notifiers) notifier.close();
    for (const eventFd of this.#eventFds) eventFd.close();
    for (const extra of this.#extras) extra.memfd.close();
  }

  // --- ring layouts ------------------------------------------------------------------

  async #layoutStep(): Promise<void> {
    const random = this.#random;
    const layout = pick(random, LAYOUTS);
    const queue = random() < 0.65 ? TX : RX;
    this.#counters.layouts[layout]++;
    if (layout === "valid-traffic") return this.#validTraffic(queue);
    if (this.#truncated.has(0)) {
      // the rings live in region 0: writing them now would kill the test process
      this.#log(`layout ${layout} on ring ${queue}: skipped, ring memory is truncated`);
      this.#kick(queue);
      return;
    }
    const detail = writeLayout(layout, this.#rings[queue], queue === RX, this.#layoutContext);
    this.#log(`layout ${layout} on ring ${queue}: ${detail}; kick: ${this.#kick(queue)}`);
    await sleep(0);
  }

  /** A guest address for `length` bytes of buffer in region 1 (nothing is written there). */
  #dataAddress(length: number): number {
    return this.#frontend.allocate(length);
  }

  /** Posts RX buffers or puts an ARP request for the gateway on TX, and kicks. */
  #validTraffic(queue: number): void {
    const random = this.#random;
    if (this.#truncated.has(0)) {
      this.#log(`valid traffic on ring ${queue}: skipped, ring memory is truncated`);
      return;
    }
    const ring = this.#rings[queue];
    const first = below(random, ring.size);
    // with EVENT_IDX: ask for a call after the next used element, or at some random index
    ring.setUsedEvent(random() < 0.5 ? below(random, 0x10000) : ring.availIndex);
    if (queue === RX) {
      const count = Math.min(ring.size, 1 + below(random, 32));
      for (let i = 0; i < count; i++) {
        ring.setDescriptor(
          (first + i) % ring.size,
          this.#dataAddress(RX_BUFFER_SIZE),
          RX_BUFFER_SIZE,
          VIRTQ_DESC_F_WRITE,
          0,
        );
      }
      ring.publish(Array.from({ length: count }, (_, i) => (first + i) % ring.size));
      this.#counters.rxBuffersPosted += count;
      this.#log(`valid traffic: ${count} RX buffers posted; kick: ${this.#kick(RX)}`);
    } else {
      const frame = gatewayArpRequest();
      const address = this.#dataAddress(NET_HEADER_SIZE + frame.length);
      if (!this.#truncated.has(1)) {
        const bytes = this.#frontend.memory.view(address, NET_HEADER_SIZE + frame.length);
        bytes.fill(0, 0, NET_HEADER_SIZE);
        bytes.set(frame, NET_HEADER_SIZE);
      }
      ring.setDescriptor(first, address, NET_HEADER_SIZE + frame.length, 0, 0);
      ring.publish([first]);
      this.#counters.arpRequestsSent++;
      this.#log(`valid traffic: ARP request for the gateway on TX; kick: ${this.#kick(TX)}`);
    }
  }

  // --- notifiers ---------------------------------------------------------------------

  /** A fresh path for a regular-file notifier. */
  #scratchFile(): string {
    return `${this.#options.scratchDir}/notifier-${this.#options.index}-${this.#serial++}`;
  }

  async #notifierStep(): Promise<void> {
    const random = this.#random;
    const queue = pick(random, [RX, TX]);
    const role = pick(random, ["kick", "kick", "call", "call", "err"] as const);
    this.#handOver(queue, role, pick(random, FD_KINDS));
    await sleep(0);
  }

  /** Makes a notifier of `kind` ring `queue`'s `role` fd (and kicks through a new kick fd). */
  #handOver(queue: number, role: "kick" | "call" | "err", kind: FdKind): void {
    const notifier = new HostileNotifier(kind, this.#scratchFile());
    this.#notifiers.push(notifier);
    const request = role === "kick"
      ? Request.SET_VRING_KICK
      : role === "call"
      ? Request.SET_VRING_CALL
      : Request.SET_VRING_ERR;
    this.#counters.fdsHandedOver[kind]++;
    this.#frontend.send(request, u64Payload(queue), [notifier.fdForDaemon]);
    let detail = "";
    if (role === "kick") {
      this.#kickers[queue] = notifier;
      detail = `; kick: ${this.#kick(queue)}`;
    } else {
      this.#callNotifiers[queue].push(notifier);
    }
    this.#log(`ring ${queue} ${role} fd is now a ${kind}${detail}`);
  }

  #kickBurst(): void {
    const random = this.#random;
    for (const queue of [RX, TX]) {
      const times = 1 + below(random, 3);
      const results: string[] = [];
      for (let i = 0; i < times; i++) results.push(this.#kick(queue));
      this.#log(`kick ring ${queue} ×${times}: ${results.join("; ")}`);
      // the call and error fds' other ends: read, flooded or closed under the daemon
      for (const notifier of this.#callNotifiers[queue]) {
        let what: string;
        try {
          what = notifier.kick(random);
        } catch (error) {
          what = `failed: ${(error as Error).message}`;
        }
        this.#log(`ring ${queue} ${notifier.kind} call/err fd: ${what}`);
      }
    }
  }

  #kick(queue: number): string {
    const kicker = this.#kickers[queue];
    this.#counters.kicks++;
    this.#counters.kicksByKind[kicker.kind]++;
    try {
      return `${kicker.kind} ${kicker.kick(this.#random)}`;
    } catch (error) {
      return `${kicker.kind} kick failed: ${(error as Error).message}`;
    }
  }

  // --- memory ------------------------------------------------------------------------

  async #memoryStep(): Promise<void> {
    const random = this.#random;
    const r = random();
    if (r < 0.35) await this.#truncate();
    else if (r < 0.45) this.#regrow();
    else if (r < 0.6) await this.#setMemTable();
    else if (r < 0.8) await this.#addRegion();
    else await this.#removeRegion();
  }

  async #truncate(): Promise<void> {
    const random = this.#random;
    const harness = this.#frontend.memory.regions;
    const targets: {
      name: string;
      memfd: MemFd;
      fileSize: number;
      harnessIndex: number;
      description: RegionDescription;
    }[] = [
      ...harness.map((region, i) => ({
        name: `harness region ${i}`,
        memfd: region.memfd,
        fileSize: region.memfd.size,
        harnessIndex: i,
        description: region.description,
      })),
      ...this.#extras.map((extra) => ({
        name: `extra region ${hex(extra.description.guestAddress)}`,
        memfd: extra.memfd,
        fileSize: extra.memfd.size,
        harnessIndex: -1,
        description: extra.description,
      })),
    ];
    const target = pick(random, targets);
    const half = Math.floor(target.fileSize / 2 / PAGE_SIZE) * PAGE_SIZE;
    const size = random() < 0.5 ? 0 : half;
    const sealed = !resizeMemfd(target.memfd, size);
    if (sealed) {
      this.#counters.truncationsRefusedBySeal++;
      this.#log(`truncate ${target.name} to ${size}: refused (sealed against shrinking)`);
    } else {
      this.#counters.truncations++;
      if (target.harnessIndex >= 0) this.#truncated.add(target.harnessIndex);
      const extra = this.#extras.find((e) => e.memfd === target.memfd);
      if (extra !== undefined) extra.fileSize = size;
      this.#log(`truncated ${target.name} from ${target.fileSize} to ${size} bytes`);
    }
    // make the daemon touch the memory: the rings through kicks, and (while the rings
    // can be written) a TX frame in the region's last page, past any truncation
    if (target.harnessIndex !== 0 && !this.#truncated.has(0)) {
      const ring = this.#rings[TX];
      const head = below(random, ring.size);
      const { guestAddress, size: regionSize } = target.description;
      ring.setDescriptor(head, guestAddress + regionSize - PAGE_SIZE, TX_PROBE_FRAME_SIZE, 0, 0);
      ring.publish([head]);
      this.#log(`a TX frame in the last page of ${target.name}`);
    }
    this.#log(`kick after truncation: ${this.#kick(TX)}; ${this.#kick(RX)}`);
    await sleep(pick(random, [0, 5, 20]));
  }

  #regrow(): void {
    for (const index of this.#truncated) {
      const region = this.#frontend.memory.regions[index];
      resizeMemfd(region.memfd, region.memfd.size);
      this.#counters.regrowths++;
      this.#log(`grew harness region ${index} back to ${region.memfd.size} bytes (zeros)`);
    }
    this.#truncated.clear();
    for (const extra of this.#extras) {
      if (extra.fileSize === extra.memfd.size) continue;
      resizeMemfd(extra.memfd, extra.memfd.size);
      extra.fileSize = extra.memfd.size;
      this.#counters.regrowths++;
      this.#log(`grew extra region ${hex(extra.description.guestAddress)} back`);
    }
  }

  async #setMemTable(): Promise<void> {
    const random = this.#random;
    const harness = this.#frontend.memory.regions;
    let entries: { description: RegionDescription; fd: number; name: string }[] = [
      ...harness.map((r: HarnessRegion, i) => ({
        description: r.description,
        fd: r.memfd.fd,
        name: `harness ${i}`,
      })),
      ...this.#extras.map((e) => ({
        description: e.description,
        fd: e.memfd.fd,
        name: `extra ${hex(e.description.guestAddress)}`,
      })),
    ];
    const variant = pick(random, ["same", "without-rings", "without-buffers", "reversed"]);
    if (variant === "without-rings") entries = entries.slice(1);
    else if (variant === "without-buffers") entries = entries.filter((_, i) => i !== 1);
    else if (variant === "reversed") entries.reverse();
    entries = entries.slice(0, 8);
    if (entries.length === 0) return;
    this.#counters.memTables++;
    const outcome = await this.#acked(
      Request.SET_MEM_TABLE,
      memTablePayload(entries.map((e) => e.description)),
      entries.map((e) => e.fd),
    );
    this.#log(
      `SET_MEM_TABLE (${variant}): ${entries.map((e) => e.name).join(", ")}: ${outcome}`,
    );
  }

  async #addRegion(): Promise<void> {
    const random = this.#random;
    if (this.#extras.length >= MAX_EXTRA_REGIONS) return await this.#removeRegion();
    const k = this.#extras.length;
    const size = pick(random, EXTRA_REGION_SIZES);
    const sealable = random() < 0.5;
    const memfd = MemFd.create(`${this.#options.memfdPrefix}extra${k}`, size, {
      allowSealing: sealable,
    });
    const description: RegionDescription = {
      guestAddress: EXTRA_GPA_BASE + k * EXTRA_STRIDE,
      size,
      userAddress: EXTRA_USER_BASE + k * EXTRA_STRIDE,
      mmapOffset: 0,
    };
    this.#extras.push({ description, memfd, fileSize: size });
    this.#counters.addedRegions++;
    const outcome = await this.#acked(
      Request.ADD_MEM_REG,
      singleRegionPayload(description),
      [memfd.fd],
    );
    this.#log(
      `ADD_MEM_REG ${hex(description.guestAddress)}+${hex(size)} (${
        sealable ? "sealable" : "unsealable"
      }): ${outcome}`,
    );
  }

  async #removeRegion(): Promise<void> {
    const random = this.#random;
    const candidates = [
      ...this.#frontend.memory.regions.map((r) => r.description),
      ...this.#extras.map((e) => e.description),
    ];
    const description = pick(random, candidates);
    this.#counters.removedRegions++;
    const outcome = await this.#acked(Request.REM_MEM_REG, singleRegionPayload(description));
    this.#log(`REM_MEM_REG ${hex(description.guestAddress)}+${hex(description.size)}: ${outcome}`);
  }

  // --- ring control ------------------------------------------------------------------

  async #ringControlStep(): Promise<void> {
    const random = this.#random;
    const queue = pick(random, [RX, TX]);
    if (random() < 0.5) {
      this.#counters.ringToggles++;
      this.#frontend.send(Request.SET_VRING_ENABLE, vringStatePayload(queue, 0));
      this.#frontend.send(Request.SET_VRING_ENABLE, vringStatePayload(queue, 1));
      this.#log(`ring ${queue} disabled and enabled; kick: ${this.#kick(queue)}`);
      return;
    }
    // stop the ring, then restart it with a new kick notifier of any kind
    this.#counters.ringRestarts++;
    this.#frontend.send(Request.GET_VRING_BASE, vringStatePayload(queue, 0));
    const outcome = await this.#awaitReply(
      Request.GET_VRING_BASE,
      this.#options.controlLimitMs,
      false,
    );
    const kind = pick(random, FD_KINDS);
    const kick = new HostileNotifier(kind, this.#scratchFile());
    this.#notifiers.push(kick);
    const call = EventFd.create();
    this.#eventFds.push(call);
    const base = random() < 0.2 ? below(random, 0x10000) : this.#rings[queue].availIndex;
    this.#frontend.send(Request.SET_VRING_BASE, vringStatePayload(queue, base));
    this.#counters.fdsHandedOver[kind]++;
    this.#frontend.send(Request.SET_VRING_KICK, u64Payload(queue), [kick.fdForDaemon]);
    this.#frontend.send(Request.SET_VRING_CALL, u64Payload(queue), [call.fd]);
    this.#kickers[queue] = kick;
    this.#log(
      `ring ${queue} stopped (GET_VRING_BASE: ${outcome}) and restarted at base ${base} ` +
        `with a ${kind} kick; kick: ${this.#kick(queue)}`,
    );
  }

  // --- control exchanges -------------------------------------------------------------

  /** Sends `request`, asking for REPLY_ACK when negotiated, and waits for the ack. */
  async #acked(request: number, payload: Uint8Array, fds: number[] = []): Promise<ExchangeOutcome> {
    const ack = (this.#frontend.protocolFeatures & featureBit(ProtocolFeature.REPLY_ACK)) !== 0n;
    this.#frontend.send(request, payload, fds, ack);
    if (!ack) return "ok";
    return await this.#awaitReply(request, this.#options.controlLimitMs, true);
  }

  /**
   * Waits up to `limitMs` for the reply to `request`, skipping late replies to
   * requests given up on before: ok, failed (a non-zero REPLY_ACK when `isAck`),
   * closed, or timeout (then the session counts as blocked).
   */
  async #awaitReply(request: number, limitMs: number, isAck: boolean): Promise<ExchangeOutcome> {
    const started = performance.now();
    const deadline = started + limitMs;
    while (true) {
      try {
        const reply = await this.#frontend.reply(
          request,
          Math.max(1, deadline - performance.now()),
        );
        const ms = performance.now() - started;
        if (this.#slowestAnswer === null || ms > this.#slowestAnswer.ms) {
          this.#slowestAnswer = { request: requestName(request), ms };
        }
        if (ms > this.#options.controlLimitMs) {
          this.#log(`${requestName(request)} was answered after ${ms.toFixed(0)} ms`);
        }
        return isAck && reply.payload.getBigUint64(0, true) !== 0n ? "failed" : "ok";
      } catch (error) {
        const message = (error as Error).message;
        if (isDisconnect(error) || /closed the connection/.test(message)) {
          this.#markClosed(`while awaiting a reply to ${requestName(request)}`);
          return "closed";
        }
        if (/^no reply to/.test(message)) {
          // at least this slow: the answer may still come, but no step waits for it
          const ms = performance.now() - started;
          if (this.#slowestAnswer === null || ms > this.#slowestAnswer.ms) {
            this.#slowestAnswer = { request: `${requestName(request)} (not answered yet)`, ms };
          }
          this.#blocked = true;
          return "timeout";
        }
        // a late reply to an earlier request was consumed: keep waiting for ours
        if (/^expected a reply to/.test(message) && performance.now() < deadline) continue;
        throw error;
      }
    }
  }

  /** Notices the daemon closing the connection (reads nothing it would need: no reply is due). */
  #checkOpen(): void {
    if (this.#closed) return;
    try {
      const n = this.#frontend.connection.recv(new Uint8Array(256));
      if (n === 0) this.#markClosed("end of file");
    } catch (error) {
      if (!isDisconnect(error)) throw error;
      this.#markClosed((error as Error).message);
    }
  }

  #markClosed(why: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#log(`the daemon closed the connection (${why})`);
  }

  #log(line: string): void {
    this.actions.push(line);
  }
}

/** Whether `error` says the daemon closed or reset the connection. */
function isDisconnect(error: unknown): boolean {
  return error instanceof NativeError &&
    (error.errno === Errno.EPIPE || error.errno === Errno.ECONNRESET);
}

/**
 * Sets the file size of `memfd` (through /proc/self/fd, which reopens the memfd).
 * Returns false when a seal refuses it (EPERM).
 */
function resizeMemfd(memfd: MemFd, size: number): boolean {
  const file = Deno.openSync(`/proc/self/fd/${memfd.fd}`, { write: true });
  try {
    file.truncateSync(size);
    return true;
  } catch (error) {
    // F_SEAL_SHRINK makes ftruncate fail with EPERM (fcntl(2), "File seals")
    if (error instanceof Deno.errors.PermissionDenied) return false;
    throw error;
  } finally {
    file.close();
  }
}

function hex(value: number): string {
  return "0x" + value.toString(16);
}

/**
 * Runs hostile session `options.index`: connects, negotiates, takes 1 to
 * {@link MAX_STEPS_PER_SESSION} steps, measures the daemon's answer time and idle
 * CPU, and closes everything it opened. Never throws for what the daemon does.
 */
export async function runHostileSession(options: SessionOptions): Promise<SessionResult> {
  const random = sessionRandom(options.seed, options.index);
  const counters = options.counters;
  counters.sessions++;
  const regionSize = pick(random, REGION_SIZES);
  const sealable = random() < 0.5;
  const frontend = VhostUserFrontend.connect(options.socketPath, {
    regionSize,
    allowSealing: sealable,
    namePrefix: `${options.memfdPrefix}ram`,
  });
  const session = new HostileSession(options, random, frontend);
  session.actions.push(
    `memory: two ${regionSize >> 20} MiB ${sealable ? "sealable" : "unsealable"} memfds`,
  );
  try {
    if (!(await session.negotiate())) {
      counters.negotiationsFailed++;
      return {
        actions: session.actions,
        endedByDaemon: true,
        slowestAnswer: session.slowestAnswer,
        unanswered: false,
        cpuShareWhileIdle: null,
      };
    }
    const steps = 1 + below(random, MAX_STEPS_PER_SESSION);
    for (let i = 0; i < steps && !session.over; i++) await session.step();
    const answered = await session.answersControl();
    const cpu = answered ? await session.measureIdleCpu() : null;
    if (session.closed) counters.endedByDaemon++;
    return {
      actions: session.actions,
      endedByDaemon: session.closed,
      slowestAnswer: session.slowestAnswer,
      unanswered: !answered,
      cpuShareWhileIdle: cpu,
    };
  } finally {
    session.close();
  }
}
