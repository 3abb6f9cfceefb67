/**
 * State the TCP modules share: the translator's options, counters, logs, flow
 * table, timer heap and per-batch work lists, plus the scratch objects the hot
 * paths reuse instead of allocating. One per {@link TcpTranslator}; the other tcp/
 * modules are functions over it (guest side, host side, segment output, timers,
 * closing), in the manner of passt's tcp.c split.
 *
 * @module
 */

import type { SocketQueues } from "../../../ffi/tcp_socket.ts";
import type { Logger } from "../../log/logger.ts";
import { RateLimitedLog } from "../../log/rate_limited_log.ts";
import { type FrameSpace, newFrameSpace } from "../../tap/frame_transport.ts";
import { FlowTable } from "../flows/flow_table.ts";
import {
  type ForwardRules,
  type GuestSideAddress,
  type HostTarget,
  newGuestSideAddress,
  newHostTarget,
} from "../plan/fwd.ts";
import type { GuestSender } from "../guest_sender.ts";
import { newTcpHeader, type TcpBuildFields } from "../wire/tcp_header.ts";
import { TcpFlow } from "./flow.ts";
import type { HostListener, HostTcp } from "./host_socket.ts";
import { TimerHeap } from "./timer_heap.ts";

/** Counters for diagnostics and tests. */
export interface TcpCounters {
  /** Connections accepted from the guest and established with the host. */
  outbound: number;
  /** Connections from host listeners. */
  inbound: number;
  /** Host connects that failed (refused, unreachable, not permitted, timeout). */
  connectFailed: number;
  /** Of which: denied by Deno's permissions. */
  notPermitted: number;
  /** New flows refused because the table was full. */
  tableFull: number;
  /** RSTs sent to the guest. */
  rstSent: number;
  /** Guest segments dropped as invalid (checksum, header, out of window). */
  badSegments: number;
  /** Segment retransmissions to the guest. */
  retransmits: number;
  /** Sends that found no room toward the guest. */
  noRoom: number;
  /** Guest data bytes the host socket did not take (the guest sends them again). */
  hostBackpressure: number;
  /** Challenge ACKs sent (RFC 5961: in-window RST, SYN, ACK of unsent data). */
  challengeAcks: number;
  /** Challenge ACKs not sent: over the rate limit (RFC 5961 §7). */
  challengeAcksLimited: number;
}

/**
 * Zero that is not a small integer (-0): V8 keeps a field that starts with it as a
 * double, so a byte count passing 2^30 does not change the shape of the counters object
 * and deoptimise the receive path (README, design: "Counters that never change shape").
 * It compares (===), prints and serialises as 0.
 */
const BYTE_COUNT_START = -0;

/** What {@link TcpContext.ackDue} holds past its flows: no flow of any table. */
const NO_FLOW = new TcpFlow();

/** The settings a {@link TcpContext} is built from. */
export interface TcpSettings {
  readonly sender: GuestSender;
  readonly rules: ForwardRules;
  readonly host: HostTcp;
  readonly maxFlows?: number;
  /** Largest window advertised to the guest. */
  readonly maxWindow: number;
  readonly mtu: number;
  readonly logger: Logger;
  readonly clock: () => number;
  readonly onTimersChanged: (() => void) | null;
  readonly verifyChecksums: boolean;
  readonly idleTimeoutMs: number;
  readonly maxRetries: number;
}

/** The translator's shared state; see the module comment. */
export class TcpContext {
  readonly sender: GuestSender;
  readonly rules: ForwardRules;
  readonly host: HostTcp;
  readonly flows: FlowTable<TcpFlow>;
  readonly maxWindow: number;
  readonly mtu: number;
  readonly log: Logger;
  /** Permission denials, one line per interval. */
  readonly denyLog: RateLimitedLog;
  /** Host connect and socket failures, one line per interval. */
  readonly failLog: RateLimitedLog;
  readonly clock: () => number;
  readonly verifyChecksums: boolean;
  readonly idleTimeoutMs: number;
  /** Timeouts in a row without an answer after which a flow is given up. */
  readonly maxRetries: number;
  readonly counters: TcpCounters = {
    outbound: 0,
    inbound: 0,
    connectFailed: 0,
    notPermitted: 0,
    tableFull: 0,
    rstSent: 0,
    badSegments: 0,
    retransmits: 0,
    noRoom: 0,
    hostBackpressure: BYTE_COUNT_START,
    challengeAcks: 0,
    challengeAcksLimited: 0,
  };
  /** Every flow's deadline. */
  readonly timers = new TimerHeap();
  /** Flows waiting for room toward the guest. */
  readonly blocked = new Set<TcpFlow>();
  /**
   * The link is down with the front-end still connected (a VM paused, a guest resetting
   * its device): established flows wait for it without counting their timeouts; link
   * up sends again, and the front-end leaving starts the count (link_events.ts).
   */
  guestPaused = false;
  /**
   * Flows owing the guest an ACK at the end of the batch: the first
   * {@link ackDueCount} entries; the rest hold {@link NO_FLOW}. The array keeps its
   * room from batch to batch (emptying it with `length = 0` would drop its backing
   * store, and every batch's first push would allocate a new one).
   */
  readonly ackDue: TcpFlow[] = [];
  /** How many entries of {@link ackDue} are flows owing an ACK. */
  ackDueCount = 0;
  /**
   * Flows with acknowledged bytes to drop from their host socket at the end of the
   * batch (TcpFlow.discardOwed): the first {@link discardDueCount} entries, kept like
   * {@link ackDue}.
   */
  readonly discardDue: TcpFlow[] = [];
  /** How many entries of {@link discardDue} are flows owing a discard. */
  discardDueCount = 0;
  readonly listeners = new Set<HostListener>();
  /** Start of the current challenge ACK interval, and the ACKs sent in it (challenge_ack.ts). */
  challengeSince = -Infinity;
  challengeAcks = 0;

  // Scratch objects of the hot paths (everything runs synchronously, one at a time).
  /** The guest segment being handled. */
  readonly header = newTcpHeader();
  /** Fields of the segment being built. */
  readonly fields: TcpBuildFields = {
    srcPort: 0,
    dstPort: 0,
    seq: 0,
    ack: 0,
    flags: 0,
    window: 0,
    mss: -1,
    windowScale: -1,
  };
  /** The frame reserved toward the guest. */
  readonly space: FrameSpace = newFrameSpace();
  /** A host socket's queue levels. */
  readonly queues: SocketQueues = { sendQueued: 0, receiveQueued: 0, sendBuffer: 0 };
  readonly inAddress: GuestSideAddress = newGuestSideAddress();
  readonly target: HostTarget = newHostTarget();
  readonly #onTimersChanged: (() => void) | null;
  readonly #random = new Uint32Array(1);
  /** The earliest deadline last reported (see {@link arm}). */
  reportedNext = Infinity;

  constructor(s: TcpSettings) {
    this.sender = s.sender;
    this.rules = s.rules;
    this.host = s.host;
    this.flows = new FlowTable<TcpFlow>(s.maxFlows);
    this.maxWindow = s.maxWindow;
    this.mtu = s.mtu;
    this.log = s.logger;
    this.denyLog = new RateLimitedLog("warn", 1000, s.logger);
    this.failLog = new RateLimitedLog("debug", 1000, s.logger);
    this.clock = s.clock;
    this.verifyChecksums = s.verifyChecksums;
    this.idleTimeoutMs = s.idleTimeoutMs;
    this.maxRetries = s.maxRetries;
    this.#onTimersChanged = s.onTimersChanged;
  }

  /** Arms `f`'s one timer at `at`; tells the driver when it is the earliest now. */
  arm(f: TcpFlow, at: number): void {
    this.timers.set(f, at);
    if (at < this.reportedNext) {
      this.reportedNext = at;
      this.#onTimersChanged?.();
    }
  }

  /** Cancels `f`'s timer. */
  disarm(f: TcpFlow): void {
    this.timers.delete(f);
  }

  /** Marks `f` as waiting for room toward the guest. */
  block(f: TcpFlow): void {
    this.counters.noRoom++;
    f.blocked = true;
    this.blocked.add(f);
  }

  /** Owes the guest an ACK from `f` at the end of the batch. */
  scheduleAck(f: TcpFlow): void {
    if (f.ackDue) return;
    f.ackDue = true;
    this.ackDue[this.ackDueCount++] = f;
  }

  /**
   * Records that the guest acknowledged `length` more bytes of `f`: they are dropped
   * from its host socket at the end of the batch (host_side.ts settleDiscards).
   */
  oweDiscard(f: TcpFlow, length: number): void {
    if (f.discardOwed === 0) this.discardDue[this.discardDueCount++] = f;
    f.discardOwed += length;
  }

  /** Forgets the flows of {@link discardDue} (settled), keeping its room. */
  clearDiscardDue(): void {
    const due = this.discardDue;
    for (let i = 0; i < this.discardDueCount; i++) due[i] = NO_FLOW;
    this.discardDueCount = 0;
  }

  /** Forgets the flows of {@link ackDue} (their ACKs were sent), keeping its room. */
  clearAckDue(): void {
    const due = this.ackDue;
    for (let i = 0; i < this.ackDueCount; i++) due[i] = NO_FLOW;
    this.ackDueCount = 0;
  }

  /** A random initial sequence number. */
  isn(): number {
    crypto.getRandomValues(this.#random);
    return this.#random[0];
  }

  /** The flow's name for log lines. */
  name(f: TcpFlow): string {
    return `guest port ${f.guestPort} <-> ${f.hostName} port ${f.hostPort}`;
  }
}
