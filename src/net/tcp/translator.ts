/**
 * TCP translation between the guest and ordinary host sockets. There is no full TCP
 * stack here: the guest's TCP and the host kernel's TCP provide reliability and
 * congestion control; this module terminates the guest's connection just enough to
 * move bytes in order between the guest's segments and a host socket, and it holds
 * no data of its own — each connection mirrors its host socket:
 *
 * - Host → guest: bytes stay in the host socket's receive queue until the guest
 *   acknowledges them. They are peeked (MSG_PEEK from SO_PEEK_OFF) straight into the
 *   guest's RX buffers behind the headers, dropped (MSG_TRUNC) once acknowledged, and
 *   peeked again from the acknowledged edge to retransmit (output.ts, guest_side.ts).
 * - Guest → host: data is sent from the guest's frame straight into the host socket;
 *   the ACK covers only what the socket took, and the window advertised is the room
 *   left in its send buffer (SO_SNDBUF − SIOCOUTQ), capped by `bufferSize`.
 * - Host sockets are nonblocking helper sockets driven synchronously by the event
 *   loop's edge-triggered readiness callbacks (host_socket.ts, host_side.ts); ACKs
 *   owed are sent, and the link flushed, once per batch of events or guest frames.
 * - One timer per flow in one heap (timer_heap.ts, timers.ts): retransmission with
 *   exponential backoff (and fast retransmit on three duplicate ACKs), zero-window
 *   probes, SYN retries, connect timeout, linger, plus the idle sweep.
 * - Connections: guest SYN → host connect → SYN-ACK only once connected, RST when
 *   refused / unreachable / not permitted (one log line for a permission denial);
 *   listeners from {@link TcpTranslator.listen} turn accepted host connections into
 *   SYNs toward the guest. FIN and half-close both ways, RST both ways (a guest RST
 *   resets the host peer, a host RST resets the guest), SYN / idle timeouts; flows
 *   survive a link down / up, and are given up after about 100 s without a link.
 *
 * @module
 */

import { EventLoop } from "../../loop/event_loop.ts";
import { log as defaultLog } from "../../log/logger.ts";
import { describeFlow, type FlowInfo } from "../flows/flow_info.ts";
import { type ForwardRules, parseGuestTarget } from "../plan/fwd.ts";
import type { GuestSender } from "../guest_sender.ts";
import type { L4Handler, L4Packet, TranslatorOptions } from "../l4_handler.ts";
import {
  parseTcp,
  TCP_ACK_FLAG,
  TCP_FIN,
  TCP_RST,
  TCP_SYN,
  tcpChecksumOkV4,
  tcpChecksumOkV6,
} from "../wire/tcp_header.ts";
import { TcpContext, type TcpCounters } from "./context.ts";
import {
  DEFAULT_MAX_WINDOW,
  IDLE_TIMEOUT_MS,
  MAX_RETRIES,
  MAX_WINDOW,
  MIN_WINDOW_CAP,
  type TcpFlow,
  TcpState,
} from "./flow.ts";
import { type HostListener, type HostTcp, nativeHostTcp } from "./host_socket.ts";
import { abort, destroy, internalError } from "./closing.ts";
import { guestSegment, newOutbound } from "./guest_side.ts";
import { settleDiscards, startListening } from "./host_side.ts";
import { rstForPacket, sendAck } from "./output.ts";
import {
  holdOnFrontendGone,
  pauseOnLinkDown,
  resumeOnLinkUp,
  resumeOnWritable,
} from "./link_events.ts";
import { IDLE_SWEEP_MS, runTimers, sweepIdle } from "./timers.ts";
import {
  dropFrozenFlows,
  freezeFlows,
  type FreezeOutcome,
  type FrozenTcpFlow,
  restoreFlows,
  type RestoreOutcome,
  thawFlows,
} from "./migrate.ts";
import type { RepairSwitch } from "./repair.ts";
import type { MigratedTcpFlow } from "../migration_state.ts";

/** Options of {@link TcpTranslator}. */
export interface TcpTranslatorOptions extends TranslatorOptions {
  /** Largest window advertised to the guest in bytes (default 4 MiB; the host socket's room bounds it too). */
  bufferSize?: number;
  /** MTU toward the guest (default 65520). */
  mtu?: number;
  /**
   * Opens host connections and listeners. Default: helper sockets on `loop`, or on
   * an event loop of the translator's own, run until {@link TcpTranslator.close}.
   */
  host?: HostTcp;
  /** The event loop whose batches end with the ACKs owed and a flush (and that runs the default host sockets). */
  loop?: EventLoop;
  /** Idle timeout in ms (default 2 h). */
  idleTimeoutMs?: number;
  /**
   * Timeouts in a row without an answer from the guest after which a flow is given up
   * (default {@link MAX_RETRIES}); tests shorten it.
   */
  maxRetries?: number;
}

/** The TCP translator: an {@link L4Handler} for protocol 6; see the module comment. */
export class TcpTranslator implements L4Handler {
  readonly #ctx: TcpContext;
  readonly #loop: EventLoop | null;
  readonly #ownLoop: EventLoop | null;
  readonly #batchEnd = (_now: number) => this.#flushBatch();
  #nextSweep = 0;
  /** Flows frozen for a migration in progress (source side). */
  #frozen: FrozenTcpFlow[] = [];

  /**
   * @param sender the stack's frame builder (NetworkStack.sender)
   * @param rules address translation (fwd.ts buildForwardRules)
   */
  constructor(sender: GuestSender, rules: ForwardRules, options: TcpTranslatorOptions = {}) {
    const window = options.bufferSize ?? DEFAULT_MAX_WINDOW;
    if (!Number.isInteger(window) || window < MIN_WINDOW_CAP || window > MAX_WINDOW) {
      throw new RangeError(
        `Cannot use a TCP window of ${window} bytes: must be ${MIN_WINDOW_CAP}..${MAX_WINDOW}`,
      );
    }
    let loop = options.loop ?? null;
    let own: EventLoop | null = null;
    let host = options.host;
    if (host === undefined) {
      if (loop === null) {
        // Its peers run on Deno's own I/O in this same thread: no synchronous waits
        // (EventLoopOptions.hotWaitMs stays 0).
        own = loop = new EventLoop();
        own.run().catch((e) => (options.logger ?? defaultLog).error(`tcp: event loop: ${e}`));
      }
      host = nativeHostTcp(loop);
    }
    this.#loop = loop;
    this.#ownLoop = own;
    loop?.onBatchEnd(this.#batchEnd);
    this.#ctx = new TcpContext({
      sender,
      rules,
      host,
      maxFlows: options.maxFlows,
      maxWindow: window,
      mtu: options.mtu && options.mtu > 0 ? options.mtu : 65520,
      logger: options.logger ?? defaultLog,
      clock: options.clock ?? (() => performance.now()),
      onTimersChanged: options.onTimersChanged ?? null,
      verifyChecksums: options.verifyChecksums ?? true,
      idleTimeoutMs: options.idleTimeoutMs ?? IDLE_TIMEOUT_MS,
      maxRetries: options.maxRetries ?? MAX_RETRIES,
    });
  }

  /** Flow table (guest-side 5-tuple → flow). */
  get flows(): TcpContext["flows"] {
    return this.#ctx.flows;
  }

  /** Event counters for diagnostics and tests. */
  get counters(): TcpCounters {
    return this.#ctx.counters;
  }

  /** How many flows the table holds now. */
  flowCount(): number {
    return this.#ctx.flows.size;
  }

  /**
   * The flows as plain objects, for a statistics dump (walks the table; nothing is
   * kept or counted on the datapath for it).
   * @param now the clock's current time, for ages
   */
  describeFlows(now: number): FlowInfo[] {
    const out: FlowInfo[] = [];
    this.#ctx.flows.forEach((f) => {
      out.push(
        describeFlow("tcp", f, f.hostName, f.hostPort, tcpStateName(f), f.lastActivity, now),
      );
    });
    return out;
  }

  // ---------------------------------------------------------------- L4Handler

  /** Handles one TCP segment from the guest. */
  handlePacket(p: L4Packet, now: number): void {
    const ctx = this.#ctx;
    const h = ctx.header;
    const end = p.l4Offset + p.l4Length;
    if (parseTcp(p.frame, p.l4Offset, end, h) !== "ok") {
      ctx.counters.badSegments++;
      return;
    }
    if (ctx.verifyChecksums && !p.checksumPending) {
      const ok = p.family === 4
        ? tcpChecksumOkV4(p.frame, p.l4Offset, p.l4Length, p.src4, p.dst4)
        : tcpChecksumOkV6(p.frame, p.l4Offset, p.l4Length, p.src6, p.dst6);
      if (!ok) {
        ctx.counters.badSegments++;
        return;
      }
    }
    if (h.srcPort === 0 || h.dstPort === 0) {
      ctx.counters.badSegments++;
      return;
    }
    let flow = p.family === 4
      ? ctx.flows.find4(p.src4, h.srcPort, p.dst4, h.dstPort)
      : ctx.flows.find6(p.src6, h.srcPort, p.dst6, h.dstPort);
    if (
      flow && flow.state === TcpState.Closed &&
      (h.flags & (TCP_SYN | TCP_ACK_FLAG)) === TCP_SYN
    ) {
      // The guest reuses the 4-tuple of a lingering flow: start afresh.
      destroy(ctx, flow, false, "its 4-tuple reused by a new SYN");
      flow = null;
    }
    if (!flow) {
      if ((h.flags & (TCP_SYN | TCP_ACK_FLAG | TCP_RST | TCP_FIN)) === TCP_SYN) {
        newOutbound(ctx, p, now);
      } else if (!(h.flags & TCP_RST)) {
        rstForPacket(ctx, p);
      }
      return;
    }
    // A connection frozen for a migration takes nothing: its socket is in repair mode.
    if (flow.frozen) return;
    flow.lastActivity = now;
    try {
      guestSegment(ctx, flow, p, now);
    } catch (e) {
      internalError(ctx, flow, e);
    }
  }

  /** Sends the ACKs owed and flushes the frames of the batch. */
  endOfBatch(_now: number): void {
    this.#flushBatch();
  }

  /** Resumes every flow once a link is back (retransmits what was outstanding). */
  linkUp(now: number): void {
    resumeOnLinkUp(this.#ctx, now);
    this.#flushBatch();
  }

  /** Sends find no link; established flows wait for it without a give-up count (link_events.ts). */
  linkDown(_now: number): void {
    pauseOnLinkDown(this.#ctx);
  }

  /** The front-end left: flows wait for a new link, counting their timeouts (link_events.ts). */
  frontendGone(now: number): void {
    holdOnFrontendGone(this.#ctx, now);
  }

  /** Resumes the flows that found no room toward the guest. */
  linkWritable(now: number): void {
    resumeOnWritable(this.#ctx, now);
    this.#flushBatch();
  }

  /** Runs due timers. */
  tick(now: number): void {
    const ctx = this.#ctx;
    ctx.reportedNext = Infinity;
    runTimers(ctx, now);
    if (now >= this.#nextSweep) {
      this.#nextSweep = now + Math.min(IDLE_SWEEP_MS, ctx.idleTimeoutMs / 2);
      sweepIdle(ctx, now);
    }
    this.#flushBatch();
  }

  /** Earliest time {@link tick} must run. */
  nextTimerAt(): number {
    const ctx = this.#ctx;
    const t = Math.min(ctx.timers.earliest(), ctx.flows.size > 0 ? this.#nextSweep : Infinity);
    ctx.reportedNext = t;
    return t;
  }

  // ---------------------------------------------------------------- migration

  /**
   * Source side of a migration: freezes every connection open both ways (its host
   * socket in TCP repair mode through `repair`, no events, no timers) and returns
   * their dumps; see migrate.ts. Until {@link thawMigrated} or {@link dropMigrated}.
   */
  freezeForMigration(repair: RepairSwitch): FreezeOutcome {
    if (this.#frozen.length > 0) {
      // a second save without an outcome for the first: they are frozen already
      return { frozen: this.#frozen.slice(), failures: [] };
    }
    const outcome = freezeFlows(this.#ctx, repair);
    this.#frozen = outcome.frozen;
    return outcome;
  }

  /** Flows frozen by {@link freezeForMigration} and not yet thawed or dropped. */
  get frozenFlows(): number {
    return this.#frozen.length;
  }

  /** A cancelled migration: the frozen flows run again; returns failures, one line each. */
  thawMigrated(repair: RepairSwitch, now: number): string[] {
    const frozen = this.#frozen;
    this.#frozen = [];
    return thawFlows(this.#ctx, frozen, repair, now);
  }

  /** A completed migration: the frozen flows are forgotten, their sockets closed silently. */
  dropMigrated(): void {
    const frozen = this.#frozen;
    this.#frozen = [];
    dropFrozenFlows(this.#ctx, frozen);
  }

  /** Target side of a migration: rebuilds the connections dumped on the source. */
  restoreMigrated(
    records: readonly MigratedTcpFlow[],
    repair: RepairSwitch,
    now: number,
  ): RestoreOutcome {
    return restoreFlows(this.#ctx, records, repair, now);
  }

  // ---------------------------------------------------------------- inbound listeners

  /**
   * Listens on host `hostname`:`port` (only on interface `interfaceName` when given)
   * and forwards each accepted connection to guest port `guestPort` (the SYN comes
   * from the translated peer address and goes to the guest's address, or to
   * `targetAddress`, the forward's target address, when given).
   * @returns the listener (closed by {@link close})
   * @throws what the host's listen throws (address in use, permission); RangeError
   *   when `targetAddress` is no IP address
   */
  listen(
    hostname: string,
    port: number,
    guestPort: number,
    interfaceName: string | null = null,
    targetAddress: string | null = null,
  ): HostListener {
    const target = targetAddress === null ? null : parseGuestTarget(targetAddress);
    return startListening(this.#ctx, hostname, port, guestPort, interfaceName, target);
  }

  /** Closes listeners and all host connections; flows are forgotten. */
  close(): void {
    const ctx = this.#ctx;
    for (const l of ctx.listeners) {
      try {
        l.close();
      } catch { /* already closed */ }
    }
    ctx.listeners.clear();
    ctx.flows.forEach((f) => abort(ctx, f, false, "tpasst shutting down"));
    this.#loop?.offBatchEnd(this.#batchEnd);
    this.#ownLoop?.close();
  }

  /** Sends the ACKs owed to the guest, then publishes the frames sent. */
  #flushBatch(): void {
    const ctx = this.#ctx;
    const due = ctx.ackDue;
    for (let i = 0; i < ctx.ackDueCount; i++) {
      const f = due[i];
      if (!f.ackDue) continue;
      f.ackDue = false;
      if (f.closed && f.state !== TcpState.Closed) continue;
      try {
        sendAck(ctx, f);
      } catch (e) {
        internalError(ctx, f, e);
      }
    }
    ctx.clearAckDue();
    ctx.sender.flush();
    if (settleDiscards(ctx)) ctx.sender.flush();
  }
}

/** A flow's state for statistics: the TcpState's name, and which directions ended. */
export function tcpStateName(f: TcpFlow): string {
  switch (f.state) {
    case TcpState.Connecting:
      return "connecting";
    case TcpState.SynAckSent:
      return "syn-ack-sent";
    case TcpState.SynSent:
      return "syn-sent";
    case TcpState.Closed:
      return "closed";
  }
  const ended = [];
  if (f.guestFin) ended.push("guest-fin");
  if (f.finSent) ended.push("host-fin");
  return ended.length === 0 ? "established" : `established (${ended.join(", ")})`;
}
