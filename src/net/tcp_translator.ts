/**
 * TCP translation between the guest and ordinary host sockets. There is no full TCP
 * stack here: the guest's TCP and the host kernel's TCP provide reliability and
 * congestion control; this module terminates the guest's connection just enough to
 * move bytes in order between the guest's segments and a host `Deno.TcpConn`.
 *
 * - Guest → host: in-order data is copied into a per-flow ring of
 *   {@link TcpTranslatorOptions.bufferSize} bytes and written to the host socket; the
 *   ACK sent to the guest covers only what the host socket accepted (the write
 *   resolved). The right edge of the advertised window is "written + ring size", so
 *   the window is always buffer we really have; out-of-order segments are dropped
 *   (the guest retransmits), duplicates trimmed.
 * - Host → guest: the host socket is read into a second ring only while it has room
 *   and the link toward the guest has room; segments up to the guest's MSS and
 *   window are sent from it and kept until acknowledged; retransmission (go-back-N
 *   from the first unacknowledged byte) on a timer with exponential backoff and on
 *   three duplicate ACKs; zero windows are probed.
 * - Memory per connection: a guest→host ring of `bufferSize` (default 256 KiB, from
 *   the guest's first data byte), a host→guest ring that starts at 64 KiB when the
 *   connection is established and doubles each time it fills, up to
 *   `hostToGuestBufferSize` (default 512 KiB), plus about 1 KiB of state: at most
 *   768 KiB by default; nothing else grows with traffic. Only a flow the guest
 *   cannot keep up with grows its ring; a bulk download needs more data in flight
 *   than 256 KiB to keep a guest busy (measured under TCG: 2.6-3.6 Gbit/s with a
 *   fixed 256 KiB ring, 4.3 with 512 KiB, no better with 1-2 MiB).
 * - Connections: guest SYN → `Deno.connect` → SYN-ACK only once connected, RST when
 *   refused / unreachable / not permitted (one log line for a permission denial);
 *   listeners from {@link TcpTranslator.listen} turn accepted host connections into
 *   SYNs toward the guest. FIN and half-close both ways (`closeWrite()`), RST both
 *   ways (a guest RST can only close the host socket: Deno offers no SO_LINGER),
 *   SYN / idle timeouts; flows survive a link down / up.
 *
 * @module
 */

import { IPPROTO_TCP } from "./checksum.ts";
import { type FlowKey, FlowTable, initFlowKey } from "./flow_table.ts";
import {
  type ForwardRules,
  type GuestSideAddress,
  type HostTarget,
  newGuestSideAddress,
  newHostTarget,
  translateInbound,
  translateOutbound4,
  translateOutbound6,
} from "./fwd.ts";
import { type GuestSender, L4_OFFSET_V4, L4_OFFSET_V6 } from "./guest_sender.ts";
import {
  type AcceptedStream,
  denoConnect,
  denoListen,
  type HostConnector,
  type HostListen,
  type HostListener,
  type HostStream,
} from "./host_stream.ts";
import type { L4Handler, L4Packet } from "./l4_handler.ts";
import {
  buildTcp,
  newTcpHeader,
  parseTcp,
  TCP_ACK_FLAG,
  TCP_FIN,
  TCP_HEADER_MIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  type TcpBuildFields,
  tcpChecksumOkV4,
  tcpChecksumOkV6,
} from "./tcp_header.ts";
import { SendResult } from "../tap/frame_transport.ts";
import { log as defaultLog, type Logger } from "../log/logger.ts";
import { RateLimitedLog } from "../log/rate_limited_log.ts";

/** Default size of the guest→host ring (it also bounds the window we advertise). */
export const DEFAULT_TCP_BUFFER = 256 * 1024;
/** Default largest size of the host→guest ring (see the module comment). */
export const DEFAULT_HOST_TO_GUEST_BUFFER = 512 * 1024;
/** Size the host→guest ring starts at. */
export const INITIAL_HOST_TO_GUEST_BUFFER = 64 * 1024;
/** Smallest allowed ring size. */
export const MIN_TCP_BUFFER = 16 * 1024;
/** Window scale shift we offer (RFC 7323 §2.2): 65535 << 7 covers an 8 MiB ring. */
export const OUR_WINDOW_SCALE = 7;
/** MSS assumed when an IPv4 guest sends none (RFC 9293 §3.7.1). */
export const DEFAULT_MSS_V4 = 536;
/** MSS assumed when an IPv6 guest sends none (1280-byte minimum MTU, RFC 8200 §5). */
export const DEFAULT_MSS_V6 = 1220;
/** IPv4 + TCP header bytes (no options) subtracted from the MTU for the MSS. */
const HEADERS_V4 = 40;
/** IPv6 + TCP header bytes. */
const HEADERS_V6 = 60;
/** Largest TCP payload the 65535-byte output frame buffer carries behind the headers (data segments carry no options). */
const MAX_PAYLOAD_V4 = 65535 - L4_OFFSET_V4 - 20;
const MAX_PAYLOAD_V6 = 65535 - L4_OFFSET_V6 - 20;
/** Initial retransmission timeout (RFC 6298 §2 uses 1 s; the guest is one hop away: Linux's 200 ms minimum). */
export const RTO_INITIAL_MS = 200;
/** Largest retransmission timeout (RFC 6298 §2.5). */
export const RTO_MAX_MS = 60_000;
/** Retransmissions of one segment before the connection is given up. */
export const MAX_RETRIES = 10;
/** Time allowed for the host connect before the guest gets a RST. */
export const CONNECT_TIMEOUT_MS = 10_000;
/** Idle time after which an established flow is reset both ways (passt: 2 h). */
export const IDLE_TIMEOUT_MS = 2 * 3600 * 1000;
/** How long a closed flow lingers to re-ACK retransmitted FINs. */
export const LINGER_MS = 2_000;
/** Interval of the idle sweep. */
const IDLE_SWEEP_MS = 10_000;
/** Smallest host read worth issuing (bytes of room in the ring). */
const READ_MIN = 8 * 1024;

/** Flow states. */
export const TcpState = {
  /** Guest SYN received, host connect in progress. */
  Connecting: 0,
  /** SYN-ACK sent to the guest, waiting for its ACK. */
  SynAckSent: 1,
  /** Inbound: SYN sent to the guest, waiting for its SYN-ACK. */
  SynSent: 2,
  /** Data may flow (including half-closed directions). */
  Established: 3,
  /** Finished; kept briefly to answer retransmitted FINs. */
  Closed: 4,
} as const;
/** One of {@link TcpState}. */
export type TcpState = typeof TcpState[keyof typeof TcpState];

export type { HostConnector, HostStream } from "./host_stream.ts";

/** Options of {@link TcpTranslator}. */
export interface TcpTranslatorOptions {
  /** Maximum number of flows (default 16384). */
  maxFlows?: number;
  /** Size of the guest→host ring in bytes (default 256 KiB). */
  bufferSize?: number;
  /** Largest size of the host→guest ring in bytes (default 512 KiB). */
  hostToGuestBufferSize?: number;
  /** MTU toward the guest (default 65520). */
  mtu?: number;
  logger?: Logger;
  /** Clock for events that arrive from host sockets (default performance.now). */
  clock?: () => number;
  /** Opens host connections (default Deno.connect). */
  connect?: HostConnector;
  /** Opens host listeners for `-t` forwards (default Deno.listen). */
  listen?: HostListen;
  /** Called when a timer earlier than the previous {@link TcpTranslator.nextTimerAt} is armed. */
  onTimersChanged?: () => void;
  /** Verify the checksum of guest segments (default true). */
  verifyChecksums?: boolean;
  /** Idle timeout in ms (default 2 h). */
  idleTimeoutMs?: number;
}

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
}

const ACK_RST = TCP_ACK_FLAG | TCP_RST;

function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}
function seqLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}
function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}

/** One translated connection. */
class TcpFlow implements FlowKey {
  family: 4 | 6 = 4;
  guest4 = 0;
  remote4 = 0;
  guest6: Uint8Array | null = null;
  remote6: Uint8Array | null = null;
  guestPort = 0;
  remotePort = 0;
  tableKey = 0;
  chainNext: FlowKey | null = null;
  inTable = false;

  state: TcpState = TcpState.Connecting;
  conn: HostStream | null = null;
  /** Host-side target or peer, for logs. */
  hostName = "";
  hostPort = 0;
  closed = false;

  // guest → host
  /** Next sequence number expected from the guest. */
  rcvNxt = 0;
  /** Sequence number of the first byte not yet accepted by the host socket. */
  writtenSeq = 0;
  g2h: Uint8Array | null = null;
  g2hHead = 0;
  g2hLen = 0;
  writing = false;
  guestFin = false;
  /** The guest's FIN was passed on (closeWrite done) and may be acknowledged. */
  guestFinDone = false;
  ourShift = 0;
  guestShift = 0;
  lastAckSent = 0;

  // host → guest
  iss = 0;
  sndUna = 0;
  sndNxt = 0;
  sndMax = 0;
  /** Sequence number after the last byte read from the host. */
  bufEnd = 0;
  h2g: Uint8Array | null = null;
  h2gHead = 0;
  sndWndRight = 0;
  mss = DEFAULT_MSS_V4;
  hostEof = false;
  finSent = false;
  finAcked = false;
  reading = false;
  blocked = false;
  dupAcks = 0;
  /** Highest sequence sent when the last go-back-N started (no new one before it is acked). */
  recover = 0;

  // timers
  timerAt = Infinity;
  rto = RTO_INITIAL_MS;
  retries = 0;
  lastActivity = 0;
}

/** The TCP translator: an {@link L4Handler} for protocol 6. */
export class TcpTranslator implements L4Handler {
  /** Flow table (guest-side 5-tuple → flow). */
  readonly flows: FlowTable<TcpFlow>;
  /** Event counters for diagnostics and tests. */
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
  };
  readonly #sender: GuestSender;
  readonly #rules: ForwardRules;
  readonly #bufferSize: number;
  readonly #h2gMax: number;
  readonly #mtu: number;
  readonly #log: Logger;
  readonly #denyLog: RateLimitedLog;
  readonly #failLog: RateLimitedLog;
  readonly #clock: () => number;
  readonly #connect: HostConnector;
  readonly #onTimersChanged: (() => void) | null;
  readonly #verify: boolean;
  readonly #idleMs: number;
  readonly #hdr = newTcpHeader();
  readonly #fields: TcpBuildFields = {
    srcPort: 0,
    dstPort: 0,
    seq: 0,
    ack: 0,
    flags: 0,
    window: 0,
    mss: -1,
    windowScale: -1,
  };
  readonly #timed = new Set<TcpFlow>();
  readonly #blocked = new Set<TcpFlow>();
  readonly #listen: HostListen;
  readonly #listeners = new Set<HostListener>();
  readonly #rand = new Uint32Array(1);
  readonly #inAddr: GuestSideAddress = newGuestSideAddress();
  readonly #target: HostTarget = newHostTarget();
  #nextSweep = 0;
  #cachedNext = Infinity;

  /**
   * @param sender the stack's frame builder (NetworkStack.sender)
   * @param rules address translation (fwd.ts buildForwardRules)
   */
  constructor(sender: GuestSender, rules: ForwardRules, options: TcpTranslatorOptions = {}) {
    this.#sender = sender;
    this.#rules = rules;
    this.flows = new FlowTable<TcpFlow>(options.maxFlows);
    const size = options.bufferSize ?? DEFAULT_TCP_BUFFER;
    if (!Number.isInteger(size) || size < MIN_TCP_BUFFER || size > (65535 << OUR_WINDOW_SCALE)) {
      throw new RangeError(
        `Cannot use a TCP buffer of ${size} bytes: must be ${MIN_TCP_BUFFER}..${
          65535 << OUR_WINDOW_SCALE
        }`,
      );
    }
    this.#bufferSize = size;
    const h2gMax = options.hostToGuestBufferSize ?? DEFAULT_HOST_TO_GUEST_BUFFER;
    if (!Number.isInteger(h2gMax) || h2gMax < MIN_TCP_BUFFER) {
      throw new RangeError(
        `Cannot use a host-to-guest TCP buffer of ${h2gMax} bytes: must be at least ${MIN_TCP_BUFFER}`,
      );
    }
    this.#h2gMax = h2gMax;
    this.#mtu = options.mtu && options.mtu > 0 ? options.mtu : 65520;
    this.#log = options.logger ?? defaultLog;
    this.#denyLog = new RateLimitedLog("warn", 1000, this.#log);
    this.#failLog = new RateLimitedLog("debug", 1000, this.#log);
    this.#clock = options.clock ?? (() => performance.now());
    this.#connect = options.connect ?? denoConnect;
    this.#listen = options.listen ?? denoListen;
    this.#onTimersChanged = options.onTimersChanged ?? null;
    this.#verify = options.verifyChecksums ?? true;
    this.#idleMs = options.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
  }

  // ---------------------------------------------------------------- L4Handler

  /** Handles one TCP segment from the guest. */
  handlePacket(p: L4Packet, now: number): void {
    const h = this.#hdr;
    const end = p.l4Offset + p.l4Length;
    if (parseTcp(p.frame, p.l4Offset, end, h) !== "ok") {
      this.counters.badSegments++;
      return;
    }
    if (this.#verify && !p.checksumPending) {
      const ok = p.family === 4
        ? tcpChecksumOkV4(p.frame, p.l4Offset, p.l4Length, p.src4, p.dst4)
        : tcpChecksumOkV6(p.frame, p.l4Offset, p.l4Length, p.src6, p.dst6);
      if (!ok) {
        this.counters.badSegments++;
        return;
      }
    }
    if (h.srcPort === 0 || h.dstPort === 0) {
      this.counters.badSegments++;
      return;
    }
    let flow = p.family === 4
      ? this.flows.find4(p.src4, h.srcPort, p.dst4, h.dstPort)
      : this.flows.find6(p.src6, h.srcPort, p.dst6, h.dstPort);
    if (
      flow && flow.state === TcpState.Closed &&
      (h.flags & (TCP_SYN | TCP_ACK_FLAG)) === TCP_SYN
    ) {
      // The guest reuses the 4-tuple of a lingering flow: start afresh.
      this.#destroy(flow);
      flow = null;
    }
    if (!flow) {
      if ((h.flags & (TCP_SYN | TCP_ACK_FLAG | TCP_RST | TCP_FIN)) === TCP_SYN) {
        this.#newOutbound(p, now);
      } else if (!(h.flags & TCP_RST)) {
        this.#rstForPacket(p);
      }
      return;
    }
    flow.lastActivity = now;
    try {
      this.#segment(flow, p, now);
    } catch (e) {
      this.#internalError(flow, e);
    }
  }

  /** Flushes frames sent during the batch. */
  endOfBatch(_now: number): void {
    this.#sender.flush();
  }

  /** Resumes every flow once a link is back (retransmits what was outstanding). */
  linkUp(now: number): void {
    this.flows.forEach((f) => {
      if (f.state === TcpState.Established) {
        f.blocked = false;
        f.sndNxt = f.sndUna;
        f.finSent = false;
        try {
          this.#output(f, now);
          this.#sendAck(f);
          this.#startRead(f);
        } catch (e) {
          this.#internalError(f, e);
        }
      }
    });
    this.#blocked.clear();
    this.#sender.flush();
  }

  /** Nothing to do: sends find no link and flows wait. */
  linkDown(_now: number): void {}

  /** Resumes the flows that found no room toward the guest. */
  linkWritable(now: number): void {
    const list = [...this.#blocked];
    this.#blocked.clear();
    for (const f of list) {
      f.blocked = false;
      if (f.closed) continue;
      if (f.state === TcpState.Established) {
        try {
          this.#output(f, now);
          this.#startRead(f);
        } catch (e) {
          this.#internalError(f, e);
        }
      }
    }
    this.#sender.flush();
  }

  /** Runs due timers. */
  tick(now: number): void {
    this.#cachedNext = Infinity;
    for (const f of [...this.#timed]) {
      if (f.timerAt > now) continue;
      try {
        this.#timer(f, now);
      } catch (e) {
        this.#internalError(f, e);
      }
    }
    if (now >= this.#nextSweep) {
      this.#nextSweep = now + Math.min(IDLE_SWEEP_MS, this.#idleMs / 2);
      this.flows.forEach((f) => {
        if (f.state === TcpState.Established && now - f.lastActivity > this.#idleMs) {
          this.#log.debug(`tcp: ${this.#name(f)} idle, resetting`);
          this.#abort(f, true);
        }
      });
    }
    this.#sender.flush();
  }

  /** Bytes held by the flows' rings now (both directions): what traffic costs in memory. */
  ringBytes(): number {
    let total = 0;
    this.flows.forEach((f) => {
      total += (f.h2g?.length ?? 0) + (f.g2h?.length ?? 0);
    });
    return total;
  }

  /** Earliest time {@link tick} must run. */
  nextTimerAt(): number {
    let t = this.flows.size > 0 ? this.#nextSweep : Infinity;
    for (const f of this.#timed) if (f.timerAt < t) t = f.timerAt;
    this.#cachedNext = t;
    return t;
  }

  // ---------------------------------------------------------------- inbound listeners

  /**
   * Listens on host `hostname`:`port` (only on interface `interfaceName` when given)
   * and forwards each accepted connection to guest port `guestPort` (the SYN comes
   * from the translated peer address).
   * @returns the listener (closed by {@link close})
   * @throws what the listen option throws (address in use, permission)
   */
  listen(
    hostname: string,
    port: number,
    guestPort: number,
    interfaceName: string | null = null,
  ): HostListener {
    const l = this.#listen(hostname, port, interfaceName);
    this.#listeners.add(l);
    this.#acceptLoop(l, guestPort);
    return l;
  }

  /** Closes listeners and all host connections; flows are forgotten. */
  close(): void {
    for (const l of this.#listeners) {
      try {
        l.close();
      } catch { /* already closed */ }
    }
    this.#listeners.clear();
    this.flows.forEach((f) => this.#abort(f, false));
  }

  async #acceptLoop(l: HostListener, guestPort: number): Promise<void> {
    while (true) {
      let accepted: AcceptedStream;
      try {
        accepted = await l.accept();
      } catch {
        // Closed, or broken: either way nobody accepts on it any more.
        this.#listeners.delete(l);
        try {
          l.close();
        } catch { /* already closed */ }
        return;
      }
      try {
        this.#newInbound(accepted, guestPort, this.#clock());
      } catch (e) {
        this.#log.warn(`tcp: cannot forward an inbound connection: ${e}`);
        try {
          accepted.stream.close();
        } catch { /* closed */ }
      }
    }
  }

  #newInbound(accepted: AcceptedStream, guestPort: number, now: number): void {
    const conn = accepted.stream;
    const peer = { hostname: accepted.peerHostname, port: accepted.peerPort };
    const a = this.#inAddr;
    const s = this.#sender;
    let ok = translateInbound(this.#rules, peer.hostname, a);
    let guest4 = 0;
    let guest6: Uint8Array | null = null;
    if (ok && a.family === 4) {
      guest4 = s.guestIpv4Seen || this.#rules.guestAddr4;
      ok = guest4 !== 0;
    } else if (ok) {
      guest6 = s.guestIpv6Seen ?? this.#rules.guestAddr6 ?? s.guestIpv6LinkLocalSeen;
      ok = guest6 !== null;
    }
    if (!ok || !this.flows.admit()) {
      if (ok) this.counters.tableFull++;
      if (conn.reset) conn.reset(); // refused: a RST, not an orderly end
      else conn.close();
      return;
    }
    const f = new TcpFlow();
    initFlowKey(f, a.family, a.addr4, guest6, guestPort, a.addr4, a.addr6, peer.port);
    f.guest4 = guest4 >>> 0;
    f.conn = conn;
    f.hostName = peer.hostname;
    f.hostPort = peer.port;
    f.state = TcpState.SynSent;
    f.lastActivity = now;
    f.iss = this.#isn();
    f.sndUna = f.iss;
    f.sndNxt = (f.iss + 1) >>> 0;
    f.sndMax = f.sndNxt;
    f.bufEnd = f.sndNxt;
    f.recover = f.sndNxt;
    try {
      conn.setNoDelay?.(true);
    } catch { /* not fatal */ }
    if (!this.flows.insert(f)) {
      conn.close();
      return;
    }
    this.counters.inbound++;
    this.#sendSyn(f, false);
    this.#arm(f, now + f.rto);
  }

  // ---------------------------------------------------------------- outbound setup

  #newOutbound(p: L4Packet, now: number): void {
    const h = this.#hdr;
    if (!this.flows.admit()) {
      this.counters.tableFull++;
      this.#rstForPacket(p);
      return;
    }
    const f = new TcpFlow();
    initFlowKey(f, p.family, p.src4, p.src6, h.srcPort, p.dst4, p.dst6, h.dstPort);
    this.flows.insert(f);
    f.state = TcpState.Connecting;
    f.lastActivity = now;
    this.#takeGuestSyn(f, now);
    const t = p.family === 4
      ? translateOutbound4(this.#rules, p.dst4, h.dstPort, this.#target)
      : translateOutbound6(this.#rules, p.dst6, h.dstPort, this.#target);
    const host = t.host;
    f.hostName = host;
    f.hostPort = t.port;
    this.#arm(f, now + CONNECT_TIMEOUT_MS);
    let pending: Promise<HostStream>;
    try {
      pending = this.#connect(host, f.hostPort);
    } catch (e) {
      this.#connectFailed(f, e, now);
      return;
    }
    pending.then(
      (conn) => {
        const t = this.#clock();
        if (f.closed) {
          // The guest gave up (RST or timeout) while we connected: abort this side too.
          try {
            if (conn.reset) conn.reset();
            else conn.close();
          } catch { /* closed */ }
          return;
        }
        f.conn = conn;
        try {
          conn.setNoDelay?.(true);
        } catch { /* not fatal */ }
        f.state = TcpState.SynAckSent;
        f.iss = this.#isn();
        f.sndUna = f.iss;
        f.sndNxt = (f.iss + 1) >>> 0;
        f.sndMax = f.sndNxt;
        f.bufEnd = f.sndNxt;
        f.recover = f.sndNxt;
        f.rto = RTO_INITIAL_MS;
        f.retries = 0;
        this.#sendSyn(f, true);
        this.#arm(f, t + f.rto);
      },
      (e) => {
        if (!f.closed) this.#connectFailed(f, e, this.#clock());
      },
    ).catch((e) => this.#internalError(f, e));
  }

  /** Records the guest's SYN (ISN, options) in `f`. */
  #takeGuestSyn(f: TcpFlow, _now: number): void {
    const h = this.#hdr;
    f.rcvNxt = (h.seq + 1) >>> 0;
    f.writtenSeq = f.rcvNxt;
    const ceiling = f.family === 4 ? this.#mtu - HEADERS_V4 : this.#mtu - HEADERS_V6;
    const maxPayload = f.family === 4 ? MAX_PAYLOAD_V4 : MAX_PAYLOAD_V6;
    let mss = h.mss > 0 ? h.mss : (f.family === 4 ? DEFAULT_MSS_V4 : DEFAULT_MSS_V6);
    mss = Math.min(mss, ceiling, maxPayload);
    f.mss = Math.max(mss, 64);
    if (h.windowScale >= 0) {
      f.guestShift = h.windowScale;
      f.ourShift = OUR_WINDOW_SCALE;
    } else {
      f.guestShift = 0;
      f.ourShift = 0;
    }
  }

  #connectFailed(f: TcpFlow, e: unknown, now: number): void {
    this.counters.connectFailed++;
    const denied = e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied;
    if (denied) {
      this.counters.notPermitted++;
      this.#denyLog.write(
        now,
        `tcp: connection from the guest to ${f.hostName} port ${f.hostPort} not permitted ` +
          `(--allow-net): ${(e as Error).message}`,
      );
    } else {
      this.#failLog.write(
        now,
        `tcp: connect to ${f.hostName} port ${f.hostPort} failed: ${(e as Error)?.message ?? e}`,
      );
    }
    // RST+ACK acknowledging the SYN (RFC 9293 §3.10.7.2 "connection refused").
    this.#sendFlags(f, ACK_RST, 0, f.rcvNxt);
    this.counters.rstSent++;
    this.#destroy(f);
  }

  // ---------------------------------------------------------------- segments

  #segment(f: TcpFlow, p: L4Packet, now: number): void {
    const h = this.#hdr;
    const flags = h.flags;
    switch (f.state) {
      case TcpState.Connecting:
        // Retransmitted SYN while the host connect runs: nothing to do yet.
        if (flags & TCP_RST) this.#abort(f, false);
        return;
      case TcpState.SynSent: {
        if (flags & TCP_RST) {
          if ((flags & TCP_ACK_FLAG) && h.ack === f.sndNxt) this.#abort(f, false);
          return;
        }
        if ((flags & (TCP_SYN | TCP_ACK_FLAG)) === (TCP_SYN | TCP_ACK_FLAG) && h.ack === f.sndNxt) {
          this.#takeGuestSyn(f, now);
          f.sndUna = h.ack;
          f.sndWndRight = (h.ack + h.window) >>> 0; // SYN windows are never scaled
          f.state = TcpState.Established;
          f.rto = RTO_INITIAL_MS;
          f.retries = 0;
          this.#disarm(f);
          this.#sendAck(f);
          this.#startRead(f);
          return;
        }
        if (flags & TCP_ACK_FLAG) this.#rstForPacket(p);
        return;
      }
      case TcpState.SynAckSent: {
        if (flags & TCP_RST) {
          this.#abort(f, false);
          return;
        }
        if (flags & TCP_SYN) {
          // Retransmitted SYN: our SYN-ACK was lost.
          if (!(flags & TCP_ACK_FLAG) && h.seq === ((f.rcvNxt - 1) >>> 0)) this.#sendSyn(f, true);
          return;
        }
        if (!(flags & TCP_ACK_FLAG)) return;
        if (h.ack !== f.sndNxt) {
          this.#rstForPacket(p);
          return;
        }
        f.sndUna = h.ack;
        f.state = TcpState.Established;
        f.rto = RTO_INITIAL_MS;
        f.retries = 0;
        f.sndWndRight = (h.ack + (h.window << f.guestShift)) >>> 0;
        this.#disarm(f);
        this.counters.outbound++;
        this.#startRead(f);
        // The ACK may carry data and FIN.
        this.#established(f, p, now);
        return;
      }
      case TcpState.Established:
        this.#established(f, p, now);
        return;
      case TcpState.Closed:
        if (flags & TCP_RST) return;
        if (flags & (TCP_FIN | TCP_SYN)) this.#sendAck(f);
        return;
    }
  }

  #established(f: TcpFlow, p: L4Packet, now: number): void {
    const h = this.#hdr;
    const flags = h.flags;
    const rightEdge = (f.writtenSeq + this.#capacity(f)) >>> 0;
    if (flags & TCP_RST) {
      // RFC 5961 §3.2: exact match aborts; inside the window draws a challenge ACK.
      if (h.seq === f.rcvNxt) this.#abort(f, false);
      else if (seqLe(f.writtenSeq, h.seq) && seqLt(h.seq, rightEdge)) this.#sendAck(f);
      return;
    }
    if (flags & TCP_SYN) {
      this.#sendAck(f); // RFC 5961 §4.2 challenge ACK
      return;
    }
    if (!(flags & TCP_ACK_FLAG)) return;
    this.#processAck(f, h.ack, h.window, h.payloadLength === 0 && !(flags & TCP_FIN), now);
    if (f.closed) return;
    let len = h.payloadLength;
    let off = h.payloadOffset;
    let seq = h.seq;
    const fin = (flags & TCP_FIN) !== 0;
    if (len === 0 && !fin) {
      // Pure ACK, or a keepalive probe (seq = rcvNxt - 1): answer the probe.
      if (seqLt(seq, f.rcvNxt)) this.#sendAck(f);
      this.#maybeFinish(f);
      return;
    }
    if (f.guestFin) {
      // Anything after the FIN is a retransmission.
      if (fin) this.#sendAck(f);
      return;
    }
    if (seqLt(f.rcvNxt, seq)) {
      // Out of order: dropped, the duplicate ACK makes the guest retransmit.
      this.counters.badSegments++;
      this.#sendAck(f);
      return;
    }
    const dup = seqDiff(f.rcvNxt, seq);
    if (dup > 0) {
      if (dup >= len) {
        if (dup > len || !fin) {
          // Already held: acknowledge only what was already written.
          if (seqLe((seq + len) >>> 0, f.writtenSeq)) this.#sendAck(f);
          return;
        }
        len = 0;
      } else {
        off += dup;
        len -= dup;
      }
      seq = f.rcvNxt;
    }
    const room = seqDiff(rightEdge, f.rcvNxt);
    let finOk = fin;
    if (len > room) {
      this.counters.badSegments++;
      len = Math.max(room, 0);
      finOk = false;
    }
    if (len > 0) {
      this.#ringPut(f, p.frame, off, len);
      f.rcvNxt = (f.rcvNxt + len) >>> 0;
    } else if (!finOk) {
      this.#sendAck(f); // zero window: tell the guest where we are
      return;
    }
    if (finOk) f.guestFin = true;
    this.#flushToHost(f);
  }

  #processAck(f: TcpFlow, ack: number, window: number, pureAck: boolean, now: number): void {
    if (seqLt(f.sndMax, ack)) {
      // Acknowledges something never sent.
      this.#sendAck(f);
      return;
    }
    const wndRight = (ack + (window << f.guestShift)) >>> 0;
    if (seqLt(ack, f.sndUna)) return; // old ACK
    const acked = seqDiff(ack, f.sndUna);
    if (acked > 0) {
      let dataAcked = acked;
      if (f.hostEof && ack === ((f.bufEnd + 1) >>> 0)) {
        f.finAcked = true;
        dataAcked = acked - 1;
      }
      if (dataAcked > 0) f.h2gHead = (f.h2gHead + dataAcked) % f.h2g!.length;
      f.sndUna = ack;
      if (seqLt(f.sndNxt, ack)) f.sndNxt = ack;
      f.dupAcks = 0;
      f.rto = RTO_INITIAL_MS;
      f.retries = 0;
      f.sndWndRight = wndRight;
      if (f.sndNxt === f.sndUna || f.finAcked) this.#disarm(f);
      else this.#arm(f, now + f.rto);
      // Outside recovery, recover follows una: left at the ISN it would fall 2^31 behind
      // after 2 GiB, and sequence comparisons with it would then read every ACK as a
      // partial ACK during recovery (and keep fast retransmit off).
      const inRecovery = seqLt(ack, f.recover);
      if (!inRecovery) f.recover = ack;
      if (inRecovery && !f.blocked) {
        // Partial ACK during recovery: the next hole goes out now (RFC 6582 §3.2 step 3).
        // Only data sent before: bytes past sndMax would reach the guest unrecorded, and
        // its ACK for them would then look like an ACK for data never sent. (sndMax
        // counts a FIN, which is not data: bufEnd bounds it too.)
        const n = Math.min(
          this.#segmentSize(f),
          seqDiff(f.sndMax, f.sndUna),
          seqDiff(f.bufEnd, f.sndUna),
        );
        if (n > 0) this.#sendData(f, TCP_ACK_FLAG, f.sndUna, n);
        else if (f.finSent) this.#sendData(f, TCP_ACK_FLAG | TCP_FIN, f.bufEnd, 0);
        this.counters.retransmits++;
      }
    } else {
      const moved = wndRight !== f.sndWndRight;
      if (seqLt(f.sndWndRight, wndRight) || !seqLt(f.sndUna, f.sndNxt)) f.sndWndRight = wndRight;
      if (pureAck && !moved && seqLt(f.sndUna, f.sndNxt)) {
        // Fast retransmit (RFC 5681 §3.2), once per window (RFC 6582 "recover").
        if (++f.dupAcks === 3 && !seqLt(f.sndUna, f.recover)) {
          this.counters.retransmits++;
          f.recover = f.sndMax;
          f.sndNxt = f.sndUna;
          if (f.finSent && !f.finAcked) f.finSent = false;
        }
      }
    }
    this.#output(f, now);
    this.#startRead(f);
    this.#maybeFinish(f);
  }

  // ---------------------------------------------------------------- guest → host

  #capacity(f: TcpFlow): number {
    return Math.min(this.#bufferSize, 65535 << f.ourShift);
  }

  #ringPut(f: TcpFlow, src: Uint8Array, off: number, len: number): void {
    const ring = (f.g2h ??= new Uint8Array(this.#bufferSize)); // allocated on first use
    const cap = ring.length;
    let tail = (f.g2hHead + f.g2hLen) % cap;
    const first = Math.min(len, cap - tail);
    ring.set(src.subarray(off, off + first), tail);
    if (first < len) ring.set(src.subarray(off + first, off + len), 0);
    tail = (tail + len) % cap;
    f.g2hLen += len;
  }

  #flushToHost(f: TcpFlow): void {
    if (f.writing || f.closed || !f.conn) return;
    if (f.g2hLen === 0) {
      if (f.guestFin && !f.guestFinDone) {
        f.writing = true;
        f.conn.closeWrite().then(
          () => {
            f.writing = false;
            if (f.closed) return;
            f.guestFinDone = true;
            this.#sendAck(f);
            this.#maybeFinish(f);
          },
          (e) => {
            f.writing = false;
            if (!f.closed) this.#hostError(f, e);
          },
        ).catch((e) => this.#internalError(f, e));
      }
      return;
    }
    const ring = f.g2h!;
    const n = Math.min(f.g2hLen, ring.length - f.g2hHead);
    f.writing = true;
    f.conn.write(ring.subarray(f.g2hHead, f.g2hHead + n)).then(
      (written) => {
        f.writing = false;
        if (f.closed) return;
        f.g2hHead = (f.g2hHead + written) % ring.length;
        f.g2hLen -= written;
        f.writtenSeq = (f.writtenSeq + written) >>> 0;
        f.lastActivity = this.#clock();
        this.#flushToHost(f);
        if (!f.writing || f.g2hLen === 0) this.#sendAck(f);
        else if (seqDiff(f.writtenSeq, f.lastAckSent) >= this.#capacity(f) >> 2) this.#sendAck(f);
      },
      (e) => {
        f.writing = false;
        if (!f.closed) this.#hostError(f, e);
      },
    ).catch((e) => this.#internalError(f, e));
  }

  // ---------------------------------------------------------------- host → guest

  #startRead(f: TcpFlow): void {
    if (f.reading || f.hostEof || f.closed || f.blocked || !f.conn) return;
    if (f.state !== TcpState.Established) return;
    const used = seqDiff(f.bufEnd, f.sndUna);
    let ring = f.h2g ??= new Uint8Array(Math.min(INITIAL_HOST_TO_GUEST_BUFFER, this.#h2gMax));
    if (ring.length - used < Math.min(READ_MIN, ring.length)) {
      if (ring.length >= this.#h2gMax) return;
      ring = this.#growHostToGuest(f, used);
    }
    const cap = ring.length;
    const free = cap - used;
    const tail = (f.h2gHead + used) % cap;
    const n = Math.min(free, cap - tail);
    f.reading = true;
    f.conn.read(f.h2g.subarray(tail, tail + n)).then(
      (got) => {
        f.reading = false;
        if (f.closed) return;
        const now = this.#clock();
        f.lastActivity = now;
        if (got === null) f.hostEof = true;
        else f.bufEnd = (f.bufEnd + got) >>> 0;
        this.#output(f, now);
        this.#startRead(f);
        this.#maybeFinish(f);
      },
      (e) => {
        f.reading = false;
        if (!f.closed) this.#hostError(f, e);
      },
    ).catch((e) => this.#internalError(f, e));
  }

  /** Doubles the host→guest ring (up to its limit), keeping its `used` bytes in order. */
  #growHostToGuest(f: TcpFlow, used: number): Uint8Array {
    const old = f.h2g!;
    const ring = new Uint8Array(Math.min(old.length * 2, this.#h2gMax));
    const first = Math.min(used, old.length - f.h2gHead);
    ring.set(old.subarray(f.h2gHead, f.h2gHead + first), 0);
    if (first < used) ring.set(old.subarray(0, used - first), first);
    f.h2g = ring;
    f.h2gHead = 0;
    return ring;
  }

  /** Sends what the guest's window allows. */
  #output(f: TcpFlow, now: number): void {
    if (f.state !== TcpState.Established || f.blocked || f.closed) return;
    while (true) {
      const avail = seqDiff(f.bufEnd, f.sndNxt);
      if (avail > 0) {
        const wnd = seqDiff(f.sndWndRight, f.sndNxt);
        const n = Math.min(avail, wnd, this.#segmentSize(f));
        if (n <= 0) {
          // Zero window: probe on the timer if nothing else is outstanding.
          if (f.timerAt === Infinity) this.#arm(f, now + f.rto);
          return;
        }
        const push = n === avail ? TCP_PSH : 0;
        const r = this.#sendData(f, TCP_ACK_FLAG | push, f.sndNxt, n);
        if (r === SendResult.NoRoom || this.#sender.link === null) {
          this.#block(f);
          return;
        }
        f.sndNxt = (f.sndNxt + n) >>> 0;
        if (seqLt(f.sndMax, f.sndNxt)) f.sndMax = f.sndNxt;
        if (f.timerAt === Infinity) this.#arm(f, now + f.rto);
        continue;
      }
      if (f.hostEof && !f.finSent && avail === 0) {
        const r = this.#sendData(f, TCP_ACK_FLAG | TCP_FIN, f.bufEnd, 0);
        if (r === SendResult.NoRoom || this.#sender.link === null) {
          this.#block(f);
          return;
        }
        f.finSent = true;
        f.sndNxt = (f.bufEnd + 1) >>> 0;
        if (seqLt(f.sndMax, f.sndNxt)) f.sndMax = f.sndNxt;
        if (f.timerAt === Infinity) this.#arm(f, now + f.rto);
      }
      return;
    }
  }

  #block(f: TcpFlow): void {
    this.counters.noRoom++;
    f.blocked = true;
    this.#blocked.add(f);
  }

  // ---------------------------------------------------------------- timers

  #timer(f: TcpFlow, now: number): void {
    this.#disarm(f);
    switch (f.state) {
      case TcpState.Connecting:
        this.#connectFailed(f, new Error(`no answer within ${CONNECT_TIMEOUT_MS} ms`), now);
        return;
      case TcpState.SynAckSent:
      case TcpState.SynSent:
        if (this.#sender.link !== null && ++f.retries > MAX_RETRIES) {
          this.#abort(f, f.state === TcpState.SynAckSent);
          return;
        }
        f.rto = Math.min(f.rto * 2, RTO_MAX_MS);
        this.#sendSyn(f, f.state === TcpState.SynAckSent);
        this.#arm(f, now + f.rto);
        return;
      case TcpState.Established: {
        const outstanding = seqLt(f.sndUna, f.sndNxt) || (f.finSent && !f.finAcked);
        if (outstanding) {
          if (this.#sender.link !== null && ++f.retries > MAX_RETRIES) {
            this.#log.debug(`tcp: ${this.#name(f)} guest stopped acknowledging, resetting`);
            this.#abort(f, true);
            return;
          }
          this.counters.retransmits++;
          f.rto = Math.min(f.rto * 2, RTO_MAX_MS);
          f.recover = f.sndMax;
          f.sndNxt = f.sndUna;
          if (f.finSent && !f.finAcked) f.finSent = false;
          f.blocked = false;
          this.#blocked.delete(f);
          this.#output(f, now);
          if (f.timerAt === Infinity) this.#arm(f, now + f.rto);
        } else if (seqLt(f.sndNxt, f.bufEnd)) {
          // Zero-window probe: one byte past the window (RFC 9293 §3.8.6.1).
          this.#sendData(f, TCP_ACK_FLAG, f.sndNxt, 1);
          const probeEnd = (f.sndNxt + 1) >>> 0;
          if (seqLt(f.sndMax, probeEnd)) f.sndMax = probeEnd;
          f.rto = Math.min(f.rto * 2, RTO_MAX_MS);
          this.#arm(f, now + f.rto);
        }
        return;
      }
      case TcpState.Closed:
        this.#destroy(f);
        return;
    }
  }

  #arm(f: TcpFlow, at: number): void {
    f.timerAt = at;
    this.#timed.add(f);
    if (at < this.#cachedNext) {
      this.#cachedNext = at;
      this.#onTimersChanged?.();
    }
  }

  #disarm(f: TcpFlow): void {
    f.timerAt = Infinity;
    this.#timed.delete(f);
  }

  // ---------------------------------------------------------------- closing

  /** Closes the flow once both directions are finished. */
  #maybeFinish(f: TcpFlow): void {
    if (f.closed || f.state !== TcpState.Established) return;
    if (!(f.finAcked && f.guestFinDone)) return;
    try {
      f.conn?.close();
    } catch { /* closed */ }
    f.conn = null;
    f.state = TcpState.Closed;
    f.g2h = null;
    f.h2g = null;
    this.#blocked.delete(f);
    this.#arm(f, this.#clock() + LINGER_MS);
  }

  /** A bug in a host-socket callback: log it, reset the flow, never let it escape. */
  #internalError(f: TcpFlow, e: unknown): void {
    this.#log.error(`tcp: internal error on ${this.#name(f)}: ${(e as Error)?.stack ?? e}`);
    try {
      this.#abort(f, true);
    } catch { /* nothing more to do */ }
  }

  #hostError(f: TcpFlow, e: unknown): void {
    this.#failLog.write(
      this.#clock(),
      `tcp: ${this.#name(f)} host socket error: ${(e as Error)?.message ?? e}`,
    );
    this.#abort(f, true);
  }

  /** Ends the flow at once, optionally sending a RST to the guest. */
  #abort(f: TcpFlow, rstGuest: boolean): void {
    if (f.closed) return;
    if (rstGuest && f.state !== TcpState.Connecting && f.state !== TcpState.Closed) {
      this.#sendFlags(f, ACK_RST, f.sndNxt, this.#ackOut(f));
      this.counters.rstSent++;
    }
    this.#destroy(f, true);
  }

  /**
   * Forgets the flow and closes its host connection: with a RST to the host peer when
   * `resetHost` (an aborted connection, RFC 9293 §3.10.5) and the stream can, else
   * with a FIN.
   */
  #destroy(f: TcpFlow, resetHost = false): void {
    f.closed = true;
    this.#disarm(f);
    this.#blocked.delete(f);
    this.flows.remove(f);
    if (f.conn) {
      try {
        if (resetHost && f.conn.reset) f.conn.reset();
        else f.conn.close();
      } catch { /* closed */ }
      f.conn = null;
    }
    f.g2h = null;
    f.h2g = null;
  }

  // ---------------------------------------------------------------- output helpers

  #ackOut(f: TcpFlow): number {
    return (f.writtenSeq + (f.guestFinDone ? 1 : 0)) >>> 0;
  }

  #windowOut(f: TcpFlow): number {
    const ack = this.#ackOut(f);
    const right = (f.writtenSeq + this.#capacity(f)) >>> 0;
    const w = Math.max(seqDiff(right, ack), 0) >>> f.ourShift;
    return Math.min(w, 65535);
  }

  /**
   * Payload bytes per segment: the guest's MSS, and no more than fits one frame the
   * guest can receive now (its RX buffers bound frames when they cannot be merged).
   */
  #segmentSize(f: TcpFlow): number {
    const link = this.#sender.link;
    if (link === null) return f.mss;
    const headers = (f.family === 4 ? L4_OFFSET_V4 : L4_OFFSET_V6) + TCP_HEADER_MIN;
    return Math.max(1, Math.min(f.mss, link.maxFrameLength - headers));
  }

  #sendAck(f: TcpFlow): void {
    if (f.closed && f.state !== TcpState.Closed) return;
    this.#sendData(f, TCP_ACK_FLAG, f.sndNxt, 0);
  }

  #sendSyn(f: TcpFlow, withAck: boolean): void {
    const fl = this.#fields;
    fl.mss = Math.min(
      f.family === 4 ? this.#mtu - HEADERS_V4 : this.#mtu - HEADERS_V6,
      f.family === 4 ? MAX_PAYLOAD_V4 : MAX_PAYLOAD_V6,
    );
    // In a SYN-ACK we scale only if the guest offered to; in our SYN we always offer.
    fl.windowScale = !withAck || f.ourShift > 0 ? OUR_WINDOW_SCALE : -1;
    const win = Math.min(this.#bufferSize, 65535);
    this.#emit(f, withAck ? (TCP_SYN | TCP_ACK_FLAG) : TCP_SYN, f.iss, f.rcvNxt, win, 0);
    fl.mss = -1;
    fl.windowScale = -1;
  }

  #sendFlags(f: TcpFlow, flags: number, seq: number, ack: number): SendResult {
    return this.#emit(f, flags, seq, ack, 0, 0);
  }

  /** Sends a segment carrying `len` bytes of the host→guest ring starting at `seq`. */
  #sendData(f: TcpFlow, flags: number, seq: number, len: number): SendResult {
    const ack = this.#ackOut(f);
    f.lastAckSent = ack;
    return this.#emit(f, flags, seq, ack, this.#windowOut(f), len);
  }

  #emit(f: TcpFlow, flags: number, seq: number, ack: number, win: number, len: number): SendResult {
    const s = this.#sender;
    const b = s.buffer;
    const off = f.family === 4 ? L4_OFFSET_V4 : L4_OFFSET_V6;
    const fl = this.#fields;
    fl.srcPort = f.remotePort;
    fl.dstPort = f.guestPort;
    fl.seq = seq >>> 0;
    fl.ack = flags & TCP_ACK_FLAG ? ack >>> 0 : 0;
    fl.flags = flags;
    fl.window = win;
    const hl = buildTcp(b, off, fl);
    if (len > 0) {
      const ring = f.h2g!;
      const cap = ring.length;
      const start = (f.h2gHead + seqDiff(seq, f.sndUna)) % cap;
      const first = Math.min(len, cap - start);
      b.set(ring.subarray(start, start + first), off + hl);
      if (first < len) b.set(ring.subarray(0, len - first), off + hl + first);
    }
    const r = f.family === 4
      ? s.sendIpv4(IPPROTO_TCP, f.remote4, f.guest4, hl + len)
      : s.sendIpv6(IPPROTO_TCP, f.remote6!, f.guest6!, hl + len);
    if (r === SendResult.NoRoom) this.counters.noRoom++;
    return r;
  }

  /** RST for a segment matching no flow (RFC 9293 §3.10.7.1); never for a RST. */
  #rstForPacket(p: L4Packet): void {
    const h = this.#hdr;
    if (h.flags & TCP_RST) return;
    const s = this.#sender;
    const off = p.family === 4 ? L4_OFFSET_V4 : L4_OFFSET_V6;
    const fl = this.#fields;
    fl.srcPort = h.dstPort;
    fl.dstPort = h.srcPort;
    fl.window = 0;
    if (h.flags & TCP_ACK_FLAG) {
      fl.seq = h.ack;
      fl.ack = 0;
      fl.flags = TCP_RST;
    } else {
      fl.seq = 0;
      const segLen = h.payloadLength + (h.flags & TCP_SYN ? 1 : 0) + (h.flags & TCP_FIN ? 1 : 0);
      fl.ack = (h.seq + segLen) >>> 0;
      fl.flags = ACK_RST;
    }
    const hl = buildTcp(s.buffer, off, fl);
    if (p.family === 4) s.sendIpv4(IPPROTO_TCP, p.dst4, p.src4, hl);
    else s.sendIpv6(IPPROTO_TCP, p.dst6, p.src6, hl);
    this.counters.rstSent++;
  }

  #isn(): number {
    crypto.getRandomValues(this.#rand);
    return this.#rand[0];
  }

  #name(f: TcpFlow): string {
    return `guest port ${f.guestPort} <-> ${f.hostName} port ${f.hostPort}`;
  }
}
