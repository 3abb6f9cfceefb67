/**
 * UDP translation between the guest and host datagram sockets: the helper's
 * nonblocking UDP sockets (ffi/udp_socket.ts), followed on the event loop and moved
 * in batches.
 *
 * - Guest → host: each guest source port (and host address family / loopback-ness
 *   of the destination) has a port socket, bound to the guest's own source port
 *   where possible (else an ephemeral one) and not connected, so that datagrams
 *   from any peer to that port come back to the guest. Each flow toward the host
 *   then has a socket of its own bound to the same address and port (SO_REUSEADDR,
 *   which the port socket allows after its own bind) and connected to the flow's
 *   peer: its datagrams leave without an address, over the route the kernel cached
 *   at connect() (no route lookup per datagram), and the kernel hands the peer's
 *   datagrams to it rather than to the port socket. A flow whose socket cannot be
 *   opened or connected sends from the port socket with an address. Destinations
 *   are translated by fwd.ts (gateway → host loopback, DNS address → resolver).
 *   Sockets toward non-loopback destinations are bound to `-o` and
 *   `--outbound-if4/6` when given. The datagrams of one guest TX batch are queued
 *   and leave with one sendmmsg per socket at {@link UdpTranslator.endOfBatch}
 *   (earlier when the queue fills). A run of datagrams of one flow queued back to
 *   back with one payload size (the last may be shorter) leaves as one message that
 *   the kernel cuts into those datagrams (UDP GSO, `UDP_SEGMENT`, man 7 udp): one
 *   pass through the send path and loopback for up to 64 datagrams. A flow socket
 *   whose send of such a message fails with EIO, EINVAL, ENOPROTOOPT or EMSGSIZE (a
 *   device or route that cannot segment, a segment above the route's MTU) sends that
 *   run and every later one datagram by datagram.
 * - Host → guest: replies, and datagrams arriving on `-u` listeners, are sent to
 *   the guest from the peer's address as the guest sees it (the address it used,
 *   or the inbound translation). A readable socket is read with recvmmsg, a batch at
 *   a time; the link is flushed once per batch. When the link has no room, the rest
 *   of the batch is kept and no socket is read (datagrams wait in the kernel) until
 *   the link's writable callback: nothing the guest can take is dropped. Each socket
 *   asks for a receive queue of 4 MiB (capped by net.core.rmem_max) to hold them.
 * - `--allow-net` decides every destination: before the first datagram of a flow
 *   toward the host, Deno's permission for that address and port is asked once (the
 *   answer stays with the flow); a listener is opened only where it is granted.
 *   Denied datagrams are dropped, counted and logged (rate-limited).
 * - Flows expire after 180 s without traffic; a flow's socket closes with it, a port
 *   socket with its last flow (listeners stay). Socket errors are counted and logged
 *   at debug level, rate-limited. A flow's connected socket reports the peer's ICMP
 *   errors (ECONNREFUSED...) as a pending error, which the next send or receive
 *   returns: a send that fails is tried once more, since the error may have been the
 *   pending one rather than the datagram's own; the flow stays. Port sockets and
 *   listeners are not connected and see no ICMP errors (no IP_RECVERR).
 *
 * @module
 */

import {
  UDP_MAX_BATCH,
  UDP_MAX_SEGMENTED_PAYLOAD,
  UDP_MAX_SEGMENTS,
  UdpMessageRecords,
  UdpSocket,
} from "../../../ffi/udp_socket.ts";
import { Errno, NativeError } from "../../../ffi/native_error.ts";
import { WOULD_BLOCK } from "../../../ffi/tcp_socket.ts";
import {
  EVENT_ERROR,
  EVENT_READABLE,
  type EventHandler,
  EventLoop,
} from "../../loop/event_loop.ts";
import { FlowTable, initFlowKey } from "../flows/flow_table.ts";
import { CountedFlowFields } from "../flows/flow_info.ts";
import {
  type ForwardRules,
  type GuestSideAddress,
  type GuestTarget,
  type HostTarget,
  newGuestSideAddress,
  newHostTarget,
  parseGuestTarget,
  translateInboundAddress,
  translateOutbound4,
  translateOutbound6,
} from "../plan/fwd.ts";
import { type GuestSender, L4_OFFSET_V4, L4_OFFSET_V6 } from "../guest_sender.ts";
import type { L4Handler, L4Packet, TranslatorOptions } from "../l4_handler.ts";
import {
  describeFlow,
  type FlowInfo,
  flowKeyEnds,
  formatDuration,
  formatEndpoint,
} from "../flows/flow_info.ts";
import { netPermissionGranted, requireNetPermission } from "../plan/net_permission.ts";
import { buildUdp, UDP_HEADER_LENGTH, udpChecksumOkV4, udpChecksumOkV6 } from "../wire/udp.ts";
import { MAX_FRAME_LENGTH, SendResult } from "../../tap/frame_transport.ts";
import { log as defaultLog, type Logger } from "../../log/logger.ts";
import { RateLimitedLog } from "../../log/rate_limited_log.ts";
import { IPPROTO_UDP } from "../wire/ip_protocol.ts";
import { addressBytes, addressText } from "../../../ffi/ip_address_text.ts";

/** Idle timeout of a UDP flow (passt: 180 s). */
export const UDP_IDLE_TIMEOUT_MS = 180_000;
/** Interval of the idle sweep. */
const SWEEP_MS = 5_000;
/** Largest UDP payload toward an IPv4 guest (a maximal frame minus headers). */
const MAX_TO_GUEST_V4 = MAX_FRAME_LENGTH - L4_OFFSET_V4 - UDP_HEADER_LENGTH;
/** Largest UDP payload toward an IPv6 guest. */
const MAX_TO_GUEST_V6 = MAX_FRAME_LENGTH - L4_OFFSET_V6 - UDP_HEADER_LENGTH;
/** Datagrams received per recvmmsg (passt reads 32 at a time too). */
const RX_SLOTS = 32;
/**
 * Room per received datagram: more than the largest payload a guest frame carries,
 * so that a longer datagram shows up as truncated and is dropped.
 */
const RX_SLOT_SIZE = 65536;
/**
 * SO_RCVBUF asked for every host socket (the kernel caps it at net.core.rmem_max, as
 * passt's 4 MiB RCVBUF_BIG): datagrams toward the guest wait in the kernel while the
 * daemon is busy or the guest's RX ring is full, and a queue of the default 208 KiB
 * overflowed at 10,000 datagrams per second (issue 16).
 */
const HOST_RECEIVE_BUFFER = 4 * 1024 * 1024;
/** recvmmsg batches read from one socket per readiness event before others get a turn. */
const MAX_READ_ROUNDS = 4;
/**
 * Bytes of guest payload queued toward the host before a flush is forced (the record
 * count, {@link UDP_MAX_BATCH}, forces one too). Above the largest UDP payload.
 */
const TX_BUFFER_BYTES = 256 * 1024;
/**
 * Flows that get a connected socket of their own, at most (the rest send from their
 * guest port's socket with an address): each costs a descriptor on top of its port's
 * socket, and the hard descriptor limit here is 20,000 (DESIGN.md) for everything.
 */
export const DEFAULT_MAX_FLOW_SOCKETS = 4096;

const LOOPBACK4 = new Uint8Array([127, 0, 0, 1]);
const LOOPBACK6 = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
const ANY4 = new Uint8Array(4);
const ANY6 = new Uint8Array(16);

/** How a socket opened for the guest's flows is bound (kept for the flows' own sockets). */
interface SocketBinding {
  readonly family: 4 | 6;
  readonly address: Uint8Array;
  readonly port: number;
  readonly interfaceName: string | null;
  readonly v6Only: boolean;
}

/**
 * Following the readiness of host sockets: the daemon's {@link EventLoop} (tests may
 * inject another).
 */
export interface UdpSocketWatcher {
  watch(fd: number, handler: EventHandler, events?: number): void;
  modify(fd: number, events: number): void;
  unwatch(fd: number): void;
}

/** Options of {@link UdpTranslator}. */
export interface UdpTranslatorOptions extends TranslatorOptions {
  /** Idle timeout in ms (default 180 s). */
  idleTimeoutMs?: number;
  /**
   * Follows the host sockets' readiness: the daemon's event loop. Default: an
   * {@link EventLoop} of the translator's own, started with its first socket and
   * closed by {@link UdpTranslator.close}.
   */
  watcher?: UdpSocketWatcher;
  /** Flows with a connected socket of their own, at most (default {@link DEFAULT_MAX_FLOW_SOCKETS}). */
  maxFlowSockets?: number;
}

/** Counters for diagnostics and tests. */
export interface UdpCounters {
  /** Datagrams the kernel took toward the host. */
  toHost: number;
  toGuest: number;
  /**
   * Times the link toward the guest had no room: the datagram was kept, and the
   * sockets were not read until the link had room again.
   */
  noRoom: number;
  /**
   * Datagrams dropped: table full, bad checksum, no socket, socket buffer full,
   * oversized, no link toward the guest.
   */
  dropped: number;
  tableFull: number;
  /** Sockets that could not take the guest's source port and use an ephemeral one. */
  ephemeralFallback: number;
  /**
   * Flows whose own connected socket could not be opened, or that found the most
   * flow sockets open: they send from their guest port's socket, with an address.
   */
  unconnectedFlows: number;
  socketErrors: number;
  /** Datagrams from the guest to destinations `--allow-net` does not grant. */
  notPermitted: number;
  /**
   * Messages sent toward the host as a run of datagrams the kernel segments
   * (`UDP_SEGMENT`); their datagrams count in {@link toHost} one by one.
   */
  segmentedSends: number;
  /** Flow sockets whose route refused a segmented message: they send datagram by datagram. */
  segmentationOff: number;
}

/**
 * "outbound": a guest source port's socket, not connected; "inbound": a `-u`
 * listener; "flow": one flow's socket, connected to its peer, sharing the address and
 * port of an outbound socket.
 */
type Role = "outbound" | "inbound" | "flow";

/** Permission state of a flow's destination. */
const Permission = { Unknown: 0, Granted: 1, Denied: 2 } as const;
type Permission = typeof Permission[keyof typeof Permission];

/** One host datagram socket. */
class HostSocket {
  readonly socket: UdpSocket;
  readonly fd: number;
  readonly role: Role;
  readonly key: string;
  /** Outbound and flow: the guest source port; inbound: the guest target port. */
  readonly guestPort: number;
  /** Inbound with a target address: where datagrams go instead of the guest's address. */
  readonly target: GuestTarget | null;
  /**
   * The flows of this socket by host peer; a flow's socket shares its outbound
   * socket's map (a datagram from another peer can reach it before connect()).
   */
  readonly flowsByHost: Map<string, UdpFlow>;
  /** The socket whose flows these are: itself, or a flow socket's outbound socket. */
  readonly home: HostSocket;
  /** Outbound: how it is bound, for its flows' sockets; null when they cannot share it. */
  binding: SocketBinding | null = null;
  closed = false;
  /** Not read (readable watch off) while the link toward the guest has no room. */
  paused = false;
  /** Indices of this socket's messages in the translator's TX records. */
  readonly queued: number[] = [];
  /**
   * A flow's socket: runs of one payload size leave as one segmented message; off
   * for good once its route refused one.
   */
  segmentation: boolean;
  /**
   * The flow of the last datagram received (one peer sending many is the usual case);
   * a flow's socket: that flow, for good.
   */
  lastFlow: UdpFlow | null = null;

  constructor(
    socket: UdpSocket,
    role: Role,
    key: string,
    guestPort: number,
    target: GuestTarget | null = null,
    home: HostSocket | null = null,
  ) {
    this.socket = socket;
    this.fd = socket.fd;
    this.role = role;
    this.key = key;
    this.guestPort = guestPort;
    this.target = target;
    this.home = home ?? this;
    this.flowsByHost = home?.flowsByHost ?? new Map<string, UdpFlow>();
    this.segmentation = role === "flow";
  }
}

/**
 * One UDP flow (guest-side 5-tuple ↔ host socket + peer). Its byte counts: payload from
 * the guest queued toward the host, payload from the host handed to the link.
 */
export class UdpFlow extends CountedFlowFields {
  /** The outbound socket or listener; null for a flow whose destination is not permitted. */
  socket: HostSocket | null = null;
  /** The flow's own socket, connected to its peer: its datagrams toward the host leave there. */
  own: HostSocket | null = null;
  /** Whether opening {@link own} was tried (it is tried once). */
  ownTried = false;
  hostAddr = "";
  /** The host peer's address bytes (4 or 16). */
  hostAddress: Uint8Array = ANY4;
  hostPort = 0;
  hostScope = 0;
  hostKey = "";
  permission: Permission = Permission.Unknown;
  lastUsed = 0;
  /** When the flow was created (clock ms), for statistics. */
  createdAt = 0;
  /** Started by a host peer (a forwarded port, or a new peer answering), for logs. */
  inbound = false;
}

/**
 * A UDP flow's ends for a log line, as the statistics dump shows them:
 * `udp outbound 10.0.2.15:41000 -> 10.0.2.2:53 (host 127.0.0.1:53)`.
 */
function udpFlowLabel(f: UdpFlow): string {
  const ends = flowKeyEnds(f);
  return `udp ${f.inbound ? "inbound" : "outbound"} ${ends.guest} ${f.inbound ? "<-" : "->"} ` +
    `${ends.remote} (host ${formatEndpoint(f.hostAddr, f.hostPort)})`;
}

/** The UDP translator: an {@link L4Handler} for protocol 17. */
export class UdpTranslator implements L4Handler {
  /** Flow table (guest-side 5-tuple → flow). */
  readonly flows: FlowTable<UdpFlow>;
  /** Event counters for diagnostics and tests. */
  readonly counters: UdpCounters = {
    toHost: 0,
    toGuest: 0,
    noRoom: 0,
    dropped: 0,
    tableFull: 0,
    ephemeralFallback: 0,
    unconnectedFlows: 0,
    socketErrors: 0,
    notPermitted: 0,
    segmentedSends: 0,
    segmentationOff: 0,
  };
  readonly #sender: GuestSender;
  readonly #rules: ForwardRules;
  readonly #log: Logger;
  readonly #errLog: RateLimitedLog;
  readonly #denyLog: RateLimitedLog;
  /** Flows that could not have a socket of their own (rate-limited apart from send errors). */
  readonly #ownLog: RateLimitedLog;
  readonly #clock: () => number;
  readonly #idleMs: number;
  readonly #verify: boolean;
  readonly #onTimersChanged: (() => void) | null;
  readonly #sockets = new Map<string, HostSocket>();
  readonly #listeners = new Set<HostSocket>();
  readonly #inAddr: GuestSideAddress = newGuestSideAddress();
  readonly #target: HostTarget = newHostTarget();
  /** `-o` source addresses of sockets toward non-loopback destinations. */
  readonly #source4: Uint8Array | null;
  readonly #source6: Uint8Array | null;
  #watcher: UdpSocketWatcher | null;
  readonly #maxFlowSockets: number;
  /** Flow sockets open now. */
  #flowSockets = 0;
  #ownLoop: EventLoop | null = null;
  #nextSweep = Infinity;

  // Guest → host: payloads of the current batch, described by #txRecords.
  readonly #tx = new Uint8Array(TX_BUFFER_BYTES);
  readonly #txRecords = new UdpMessageRecords(UDP_MAX_BATCH);
  /** Records of one socket gathered in order when several sockets share a batch. */
  readonly #txGathered = new UdpMessageRecords(UDP_MAX_BATCH);
  /** Segmented records cut back into one record per datagram, for a socket that cannot segment. */
  readonly #txSplit = new UdpMessageRecords(UDP_MAX_BATCH);
  readonly #txSockets: HostSocket[] = [];
  #txCount = 0;
  #txBytes = 0;

  // Host → guest: one received batch at a time.
  readonly #rx = new Uint8Array(RX_SLOTS * RX_SLOT_SIZE);
  readonly #rxRecords = new UdpMessageRecords(RX_SLOTS);
  /** The link answered NoRoom: no socket is read until it has room. */
  #blocked = false;
  /** Sockets whose readable watch is off while blocked. */
  readonly #paused = new Set<HostSocket>();
  /** The socket whose received batch is not all delivered (its rest: #heldNext..#heldCount). */
  #heldSocket: HostSocket | null = null;
  #heldNext = 0;
  #heldCount = 0;

  /**
   * @param sender the stack's frame builder (NetworkStack.sender)
   * @param rules address translation (fwd.ts buildForwardRules)
   */
  constructor(sender: GuestSender, rules: ForwardRules, options: UdpTranslatorOptions = {}) {
    this.#sender = sender;
    this.#rules = rules;
    this.flows = new FlowTable<UdpFlow>(options.maxFlows);
    this.#log = options.logger ?? defaultLog;
    this.#errLog = new RateLimitedLog("debug", 1000, this.#log);
    this.#denyLog = new RateLimitedLog("warn", 1000, this.#log);
    this.#ownLog = new RateLimitedLog("debug", 1000, this.#log);
    this.#clock = options.clock ?? (() => performance.now());
    this.#idleMs = options.idleTimeoutMs ?? UDP_IDLE_TIMEOUT_MS;
    this.#verify = options.verifyChecksums ?? true;
    this.#onTimersChanged = options.onTimersChanged ?? null;
    this.#watcher = options.watcher ?? null;
    this.#maxFlowSockets = options.maxFlowSockets ?? DEFAULT_MAX_FLOW_SOCKETS;
    this.#source4 = this.#sourceAddress(rules.outbound4, 4);
    this.#source6 = this.#sourceAddress(rules.outbound6, 16);
  }

  /** How many flows the table holds now. */
  flowCount(): number {
    return this.flows.size;
  }

  /**
   * The flows as plain objects, for a statistics dump (walks the table; nothing is
   * kept or counted on the datapath for it beyond per-flow byte counts).
   * @param now the clock's current time, for ages
   */
  describeFlows(now: number): FlowInfo[] {
    const out: FlowInfo[] = [];
    this.flows.forEach((f) => {
      const state = f.permission === Permission.Denied ? "denied" : "active";
      out.push(describeFlow("udp", f, f.hostAddr, f.hostPort, state, f.lastUsed, now));
    });
    return out;
  }

  /** Handles one datagram from the guest, its header as the stack parsed it (`p.udp`). */
  handlePacket(p: L4Packet, now: number): void {
    const u = p.udp;
    if (u === null || u.dstPort === 0 || u.srcPort === 0) {
      this.counters.dropped++;
      return;
    }
    if (this.#verify && !p.checksumPending) {
      const ok = p.family === 4
        ? udpChecksumOkV4(p.frame, p.l4Offset, u.length, p.src4, p.dst4)
        : udpChecksumOkV6(p.frame, p.l4Offset, u.length, p.src6, p.dst6);
      if (!ok) {
        this.counters.dropped++;
        return;
      }
    }
    let f = p.family === 4
      ? this.flows.find4(p.src4, u.srcPort, p.dst4, u.dstPort)
      : this.flows.find6(p.src6, u.srcPort, p.dst6, u.dstPort);
    if (!f) {
      f = this.#outboundFlow(p, u.srcPort, u.dstPort, now);
      if (!f) return;
    }
    f.lastUsed = now;
    if (f.permission === Permission.Unknown) this.#checkPermission(f, now);
    if (f.permission === Permission.Denied) {
      this.counters.notPermitted++;
      return;
    }
    let s = f.own;
    if (s === null) {
      s = f.socket!;
      if (!f.ownTried && s.role === "outbound") s = this.#openOwnSocket(f, s, now) ?? s;
    }
    if (s.closed) {
      this.counters.dropped++;
      return;
    }
    f.bytesFromGuest += u.payloadLength;
    this.#queueToHost(s, f, p.frame, u.payloadOffset, u.payloadLength);
  }

  /** Sends the batch's datagrams toward the host and flushes frames sent to the guest. */
  endOfBatch(_now: number): void {
    this.#flushToHost();
    this.#sender.flush();
  }

  /** Room appeared toward the guest: delivers what was kept and reads the sockets again. */
  linkWritable(_now: number): void {
    this.#resume();
  }

  /** A (new) link toward the guest: reading resumes if it had stopped. */
  linkUp(_now: number): void {
    this.#resume();
  }

  /** Expires idle flows. */
  tick(now: number): void {
    if (now < this.#nextSweep) return;
    this.#nextSweep = Infinity;
    this.flows.forEach((f) => {
      if (now - f.lastUsed >= this.#idleMs) {
        this.#removeFlow(f);
        this.#logClosed(f, `idle for ${formatDuration(now - f.lastUsed)}`, now);
      }
    });
    if (this.flows.size > 0) this.#nextSweep = now + Math.min(SWEEP_MS, this.#idleMs / 2);
  }

  /** Earliest time {@link tick} must run. */
  nextTimerAt(): number {
    return this.#nextSweep;
  }

  /**
   * Listens on host `hostname`:`port` (optionally only on interface `interfaceName`)
   * and forwards datagrams to guest port `guestPort` of the guest's address, or of
   * `targetAddress` (the forward's target address) when given; the guest's replies go
   * back out of this socket. An IPv6 listener takes IPv6 only ("::" and "0.0.0.0" are
   * two).
   * @returns the bound port (`port`, or the one chosen for 0)
   * @throws Deno.errors.NotCapable when `--allow-net` does not grant the address and
   * port, NativeError for bind errors, RangeError when `targetAddress` is no IP address
   */
  listen(
    hostname: string,
    port: number,
    guestPort: number,
    interfaceName: string | null = null,
    targetAddress: string | null = null,
  ): number {
    const target = targetAddress === null ? null : parseGuestTarget(targetAddress);
    requireNetPermission(hostname, port, "listen");
    const address = addressBytes(hostname);
    if (address === null) {
      throw new Error(`Cannot listen on ${hostname}: not an IPv4 or IPv6 address`);
    }
    const family = address.byteLength === 4 ? 4 : 6;
    const socket = UdpSocket.open(family, { address, port, interfaceName, v6Only: family === 6 });
    let bound: number;
    try {
      bound = socket.localAddress().port;
    } catch (error) {
      socket.close();
      throw error;
    }
    const hs = this.#adopt(
      new HostSocket(socket, "inbound", `in/${hostname}/${bound}`, guestPort, target),
    );
    this.#listeners.add(hs);
    return bound;
  }

  /** The host port a listener or an outbound socket is bound to (tests). */
  boundPort(guestPort: number): number | null {
    for (const s of [...this.#sockets.values(), ...this.#listeners]) {
      if (s.guestPort === guestPort && !s.closed) return s.socket.localAddress().port;
    }
    return null;
  }

  /** Closes every socket (datagrams still queued are dropped). */
  close(): void {
    this.flows.forEach((f) => this.flows.remove(f));
    for (const s of [...this.#sockets.values(), ...this.#listeners]) this.#closeSocket(s);
    this.#sockets.clear();
    this.#listeners.clear();
    this.#resetTx();
    this.#nextSweep = Infinity;
    if (this.#ownLoop !== null) {
      this.#ownLoop.close();
      this.#ownLoop = null;
      this.#watcher = null;
    }
  }

  // ---------------------------------------------------------------- guest → host

  /** A new flow for a guest datagram with no flow yet, or null when it is dropped. */
  #outboundFlow(p: L4Packet, srcPort: number, dstPort: number, now: number): UdpFlow | null {
    if (p.family === 4 && ((p.dst4 >>> 28) === 0xe || p.dst4 === 0xffffffff)) {
      this.counters.dropped++; // multicast / broadcast: not forwarded
      return null;
    }
    if (p.family === 6 && p.dst6[0] === 0xff) {
      this.counters.dropped++;
      return null;
    }
    if (!this.flows.admit()) {
      this.counters.tableFull++;
      this.counters.dropped++;
      return null;
    }
    const t = p.family === 4
      ? translateOutbound4(this.#rules, p.dst4, dstPort, this.#target)
      : translateOutbound6(this.#rules, p.dst6, dstPort, this.#target);
    const address = t.address.slice();
    const f = new UdpFlow();
    initFlowKey(f, p.family, p.src4, p.src6, srcPort, p.dst4, p.dst6, dstPort);
    f.hostAddr = t.host;
    f.hostAddress = address;
    f.hostPort = t.port;
    f.hostKey = hostKey(t.host, t.port);
    f.createdAt = now;
    this.#checkPermission(f, now);
    if (f.permission === Permission.Granted) {
      const socket = this.#outboundSocket(address, srcPort, now);
      if (socket === null) {
        this.counters.dropped++;
        return null;
      }
      f.socket = socket;
      socket.flowsByHost.set(f.hostKey, f);
    }
    this.flows.insert(f);
    this.#armSweep(now);
    this.#logOpened(
      f,
      f.permission === Permission.Granted
        ? "datagram from the guest"
        : "datagram from the guest, destination not permitted: dropped",
    );
    return f;
  }

  /** Asks Deno once whether the flow's destination is granted; logs a denial. */
  #checkPermission(f: UdpFlow, now: number): void {
    f.permission = netPermissionGranted(f.hostAddr, f.hostPort)
      ? Permission.Granted
      : Permission.Denied;
    if (f.permission === Permission.Denied) {
      this.#denyLog.write(
        now,
        `udp: datagrams from the guest to ${f.hostAddr} port ${f.hostPort} not permitted ` +
          `(--allow-net): dropped`,
      );
    }
  }

  /**
   * Queues one payload for `s` toward the flow's peer, as one more segment of the run
   * queued last when it can be; flushes first when full.
   */
  #queueToHost(
    s: HostSocket,
    f: UdpFlow,
    frame: Uint8Array,
    offset: number,
    length: number,
  ): void {
    if (this.#txBytes + length > TX_BUFFER_BYTES) {
      this.#flushToHost();
    } else if (s.segmentation && this.#extendRun(s, length)) {
      this.#tx.set(frame.subarray(offset, offset + length), this.#txBytes);
      this.#txBytes += length;
      return;
    } else if (this.#txCount === UDP_MAX_BATCH) {
      this.#flushToHost();
    }
    const at = this.#txBytes;
    this.#tx.set(frame.subarray(offset, offset + length), at);
    const i = this.#txCount;
    if (s.role === "flow") this.#txRecords.setToPeer(i, at, length);
    else this.#txRecords.set(i, at, length, f.hostAddress, f.hostPort, f.hostScope);
    if (s.queued.length === 0) this.#txSockets.push(s);
    s.queued.push(i);
    this.#txCount = i + 1;
    this.#txBytes = at + length;
  }

  /**
   * Makes the record queued last, if it is `s`'s, one datagram of `length` bytes
   * longer: a run of datagrams of its first datagram's size, the last one possibly
   * shorter, within {@link UDP_MAX_SEGMENTS} and {@link UDP_MAX_SEGMENTED_PAYLOAD}.
   * Its payload then ends where the next one is copied. False when it cannot.
   */
  #extendRun(s: HostSocket, length: number): boolean {
    const queued = s.queued;
    const last = this.#txCount - 1;
    if (queued.length === 0 || queued[queued.length - 1] !== last || length === 0) return false;
    const records = this.#txRecords;
    const runLength = records.length(last);
    const segment = records.segmentSize(last) || runLength;
    if (
      length > segment || runLength % segment !== 0 ||
      runLength / segment >= UDP_MAX_SEGMENTS ||
      runLength + length > UDP_MAX_SEGMENTED_PAYLOAD
    ) {
      return false;
    }
    records.setSegments(last, runLength + length, segment);
    return true;
  }

  /** Sends every queued datagram: one sendmmsg per socket (more after an error). */
  #flushToHost(): void {
    if (this.#txCount === 0) return;
    const sockets = this.#txSockets;
    if (sockets.length === 1) {
      this.#sendQueued(sockets[0], this.#txRecords, this.#txCount);
    } else {
      const gathered = this.#txGathered;
      for (const s of sockets) {
        const queued = s.queued;
        for (let k = 0; k < queued.length; k++) gathered.copyFrom(this.#txRecords, queued[k], k);
        this.#sendQueued(s, gathered, queued.length);
      }
    }
    this.#resetTx();
  }

  #resetTx(): void {
    for (const s of this.#txSockets) s.queued.length = 0;
    this.#txSockets.length = 0;
    this.#txCount = 0;
    this.#txBytes = 0;
  }

  /**
   * Sends records 0..count-1 on `s`; a refused message is counted (a socket error per
   * datagram) and skipped (on a flow's socket after a second try: the first refusal
   * may have been the socket's pending ICMP error, which the failed send took). A
   * segmented message refused as one the route cannot segment turns segmentation
   * off for `s` and leaves, with the rest, datagram by datagram.
   */
  #sendQueued(s: HostSocket, records: UdpMessageRecords, count: number): void {
    if (s.closed) {
      this.counters.dropped += datagramsOf(records, 0, count);
      return;
    }
    let first = 0;
    let retried = -1;
    while (first < count) {
      let sent: number;
      try {
        sent = s.socket.sendBatch(this.#tx, records, count - first, first);
      } catch (error) {
        if (records.segmentSize(first) !== 0 && cannotSegment(error)) {
          this.#stopSegmentation(s, records, first, error as Error);
          this.#sendSplit(s, records, first, count);
          return;
        }
        this.counters.socketErrors += records.datagrams(first);
        this.#errLog.write(
          this.#clock(),
          `udp: send to ${this.#destinationText(s, records, first)} failed: ` +
            (error as Error).message,
        );
        if (s.role === "flow" && retried !== first) retried = first;
        else first++;
        continue;
      }
      if (sent === WOULD_BLOCK) {
        const dropped = datagramsOf(records, first, count);
        this.counters.dropped += dropped;
        this.#errLog.write(
          this.#clock(),
          `udp: socket buffer full, ${dropped} datagram(s) toward the host dropped`,
        );
        return;
      }
      for (let i = first; i < first + sent; i++) {
        const datagrams = records.datagrams(i);
        this.counters.toHost += datagrams;
        if (datagrams > 1) this.counters.segmentedSends++;
      }
      first += sent;
    }
  }

  /**
   * Turns segmentation off for flow socket `s`, whose route refused segmented message
   * `i` of `records`.
   */
  #stopSegmentation(s: HostSocket, records: UdpMessageRecords, i: number, error: Error): void {
    s.segmentation = false;
    this.counters.segmentationOff++;
    this.#errLog.write(
      this.#clock(),
      `udp: toward ${this.#destinationText(s, records, i)} a run of datagrams ` +
        `cannot leave segmented (${error.message}); sending them one by one`,
    );
  }

  /** Sends records `from`..`count`-1 on `s` with every segmented one cut into its datagrams. */
  #sendSplit(s: HostSocket, records: UdpMessageRecords, from: number, count: number): void {
    const split = this.#txSplit;
    let n = 0;
    for (let i = from; i < count; i++) {
      if (n + records.datagrams(i) > UDP_MAX_BATCH) {
        this.#sendQueued(s, split, n);
        n = 0;
      }
      const segment = records.segmentSize(i);
      if (segment === 0) {
        split.copyFrom(records, i, n++);
        continue;
      }
      const offset = records.offset(i);
      const length = records.length(i);
      for (let at = 0; at < length; at += segment) {
        split.setToPeer(n++, offset + at, Math.min(segment, length - at));
      }
    }
    if (n > 0) this.#sendQueued(s, split, n);
  }

  /** Where record `i` sent on `s` goes, for a log line. */
  #destinationText(s: HostSocket, records: UdpMessageRecords, i: number): string {
    const peer = s.role === "flow" ? s.lastFlow : null;
    if (records.addressLength(i) === 0 && peer !== null) {
      return `${peer.hostAddr} port ${peer.hostPort}`;
    }
    return `${addressText(records.address(i))} port ${records.port(i)}`;
  }

  /** The socket for guest port `guestPort` toward `address`'s family and kind. */
  #outboundSocket(address: Uint8Array, guestPort: number, now: number): HostSocket | null {
    const v6 = address.byteLength === 16;
    const loop = v6 ? sameBytes(address, LOOPBACK6) : address[0] === 127;
    const key = `out/${v6 ? 6 : 4}/${loop ? "l" : "w"}/${guestPort}`;
    const existing = this.#sockets.get(key);
    if (existing && !existing.closed) return existing;
    const family = v6 ? 6 : 4;
    const local = loop
      ? (v6 ? LOOPBACK6 : LOOPBACK4)
      : (v6 ? this.#source6 ?? ANY6 : this.#source4 ?? ANY4);
    const interfaceName = loop ? null : v6 ? this.#rules.outboundIf6 : this.#rules.outboundIf4;
    const options = { address: local, interfaceName, v6Only: v6 };
    let socket: UdpSocket;
    try {
      socket = UdpSocket.open(family, { ...options, port: guestPort });
    } catch {
      try {
        socket = UdpSocket.open(family, { ...options, port: 0 });
        this.counters.ephemeralFallback++;
      } catch (error) {
        this.#errLog.write(
          now,
          `udp: cannot bind a socket for the guest: ${(error as Error).message}`,
        );
        return null;
      }
    }
    let hs: HostSocket;
    try {
      hs = this.#adopt(new HostSocket(socket, "outbound", key, guestPort));
    } catch (error) {
      this.#errLog.write(
        now,
        `udp: cannot watch a socket for the guest: ${(error as Error).message}`,
      );
      return null;
    }
    try {
      socket.sharePort();
      hs.binding = { family, ...options, port: socket.localAddress().port };
    } catch (error) {
      this.#errLog.write(
        now,
        `udp: flows from guest port ${guestPort} share one socket: ${(error as Error).message}`,
      );
    }
    this.#sockets.set(key, hs);
    return hs;
  }

  /**
   * Opens flow `f`'s own socket: bound as its outbound socket `home` is, connected to
   * the flow's peer. Null (the flow keeps sending from `home`) when that fails.
   */
  #openOwnSocket(f: UdpFlow, home: HostSocket, now: number): HostSocket | null {
    f.ownTried = true;
    const binding = home.binding;
    if (binding === null || home.closed || this.#flowSockets >= this.#maxFlowSockets) {
      this.counters.unconnectedFlows++;
      return null;
    }
    let socket: UdpSocket | null = null;
    try {
      socket = UdpSocket.open(binding.family, { ...binding, reuseAddress: true });
      socket.connect(f.hostAddress, f.hostPort, f.hostScope);
      const own = this.#adopt(
        new HostSocket(socket, "flow", home.key, home.guestPort, null, home),
      );
      own.lastFlow = f;
      f.own = own;
      this.#flowSockets++;
      return own;
    } catch (error) {
      socket?.close();
      this.counters.unconnectedFlows++;
      this.#ownLog.write(
        now,
        `udp: a socket of its own for ${udpFlowLabel(f)}: ${(error as Error).message}; ` +
          `sending from the guest port's socket`,
      );
      return null;
    }
  }

  /**
   * Gives the socket of `hs` a large receive queue and watches it for datagrams;
   * closes it if it cannot be watched.
   */
  #adopt(hs: HostSocket): HostSocket {
    const socket = hs.socket;
    try {
      socket.setBuffers(HOST_RECEIVE_BUFFER, 0);
    } catch (error) {
      this.#errLog.write(
        this.#clock(),
        `udp: cannot enlarge a socket's receive buffer: ${(error as Error).message}`,
      );
    }
    try {
      this.#watcherForSockets().watch(
        hs.fd,
        (events) => this.#onEvents(hs, events),
        EVENT_READABLE,
      );
    } catch (error) {
      socket.close();
      throw error;
    }
    if (this.#blocked) this.#pause(hs);
    return hs;
  }

  /** The injected watcher, or the translator's own loop (started on first use). */
  #watcherForSockets(): UdpSocketWatcher {
    if (this.#watcher !== null) return this.#watcher;
    const loop = new EventLoop();
    this.#ownLoop = loop;
    this.#watcher = loop;
    loop.run().catch((error) => this.#log.error(`udp: the socket loop stopped: ${error}`));
    return loop;
  }

  #sourceAddress(text: string | null, length: number): Uint8Array | null {
    if (!text) return null;
    const bytes = addressBytes(text);
    if (bytes?.byteLength === length) return bytes;
    this.#log.warn(`udp: -o ${text} is not an IPv${length === 4 ? 4 : 6} address; not used`);
    return null;
  }

  // ---------------------------------------------------------------- host → guest

  #onEvents(s: HostSocket, events: number): void {
    if (s.closed) return;
    if ((events & EVENT_ERROR) !== 0) {
      const error = s.socket.takeError();
      if (error !== null) this.#socketError(s, error);
    }
    if ((events & EVENT_READABLE) !== 0) this.#read(s);
  }

  /** Reads batches from `s` and delivers them, until it is empty, blocked or its turn ends. */
  #read(s: HostSocket): void {
    if (this.#blocked) {
      this.#pause(s);
      return;
    }
    const now = this.#clock();
    for (let round = 0; round < MAX_READ_ROUNDS; round++) {
      let count: number;
      try {
        count = s.socket.receiveBatch(this.#rx, RX_SLOT_SIZE, this.#rxRecords);
      } catch (error) {
        // The pending error (an ICMP error on a flow's socket) is taken: read on.
        this.#socketError(s, error as Error);
        continue;
      }
      if (count === WOULD_BLOCK) return;
      const delivered = this.#deliver(s, 0, count, now);
      this.#sender.flush();
      if (delivered < count) {
        this.#heldSocket = s;
        this.#heldNext = delivered;
        this.#heldCount = count;
        this.#pause(s);
        return;
      }
      if (count < RX_SLOTS) return;
    }
  }

  /**
   * Sends received datagrams `from`..`to`-1 to the guest; returns the index of the
   * first one the link had no room for (and marks the translator blocked), or `to`.
   */
  #deliver(s: HostSocket, from: number, to: number, now: number): number {
    const records = this.#rxRecords;
    for (let i = from; i < to; i++) {
      if (records.truncated(i)) {
        this.counters.dropped++; // longer than any frame toward the guest
        continue;
      }
      const f = this.#flowOf(s, i, now);
      if (f === null) continue;
      f.lastUsed = now;
      const r = this.#toGuest(f, records.offset(i), records.length(i));
      if (r === SendResult.NoRoom) {
        this.counters.noRoom++;
        this.#blocked = true;
        return i;
      }
      if (r === SendResult.Sent) f.bytesToGuest += records.length(i);
    }
    return to;
  }

  /**
   * The flow of received datagram `i` on `s`, created if needed (on `s`'s home
   * socket: a flow's socket can receive another peer's datagram before it is
   * connected); null when dropped.
   */
  #flowOf(s: HostSocket, i: number, now: number): UdpFlow | null {
    const records = this.#rxRecords;
    const port = records.port(i);
    const last = s.lastFlow;
    if (last !== null && last.inTable && records.peerIs(i, last.hostAddress, last.hostPort)) {
      return last;
    }
    const address = records.address(i);
    const text = addressText(address);
    const hk = hostKey(text, port);
    let f = s.flowsByHost.get(hk) ?? null;
    if (!f) {
      const a = this.#inAddr;
      if (!translateInboundAddress(this.#rules, address, a)) {
        this.counters.dropped++;
        return null;
      }
      const sender = this.#sender;
      let guest4 = 0;
      let guest6: Uint8Array | null = null;
      if (s.target !== null) {
        // The forward's target address (an answer from it finds this flow).
        if (s.target.family !== a.family) return this.#drop();
        guest4 = s.target.addr4;
        guest6 = s.target.addr6;
      } else if (a.family === 4) {
        guest4 = sender.guestIpv4Seen || this.#rules.guestAddr4;
        if (!guest4) return this.#drop();
      } else {
        guest6 = sender.guestIpv6Seen ?? this.#rules.guestAddr6 ?? sender.guestIpv6LinkLocalSeen;
        if (!guest6) return this.#drop();
      }
      const existing = a.family === 4
        ? this.flows.find4(guest4, s.guestPort, a.addr4, port)
        : this.flows.find6(guest6!, s.guestPort, a.addr6, port);
      if (existing) {
        f = existing;
      } else {
        if (!this.flows.admit()) {
          this.counters.tableFull++;
          return this.#drop();
        }
        f = new UdpFlow();
        initFlowKey(f, a.family, guest4, guest6, s.guestPort, a.addr4, a.addr6, port);
        f.socket = s.home;
        f.hostAddr = text;
        f.hostAddress = address;
        f.hostPort = port;
        f.hostScope = records.scopeId(i);
        f.hostKey = hk;
        f.createdAt = now;
        f.inbound = true;
        this.flows.insert(f);
        s.flowsByHost.set(hk, f);
        this.#armSweep(now);
        if (this.#log.enabled("debug")) {
          this.#logOpened(
            f,
            s.role === "inbound"
              ? `datagram on forwarded port ${s.socket.localAddress().port}`
              : "datagram from a new host peer to the guest's socket",
          );
        }
      }
    }
    if (s.role !== "flow") s.lastFlow = f;
    return f;
  }

  #drop(): null {
    this.counters.dropped++;
    return null;
  }

  /** Builds the frame for `length` received bytes at `offset` of the RX buffer. */
  #toGuest(f: UdpFlow, offset: number, length: number): SendResult {
    const s = this.#sender;
    const v4 = f.family === 4;
    const off = v4 ? L4_OFFSET_V4 : L4_OFFSET_V6;
    if (length > (v4 ? MAX_TO_GUEST_V4 : MAX_TO_GUEST_V6)) {
      this.counters.dropped++;
      return SendResult.Dropped;
    }
    buildUdp(s.buffer, off, f.remotePort, f.guestPort, length);
    s.buffer.set(this.#rx.subarray(offset, offset + length), off + UDP_HEADER_LENGTH);
    const r = v4
      ? s.sendIpv4(IPPROTO_UDP, f.remote4, f.guest4, UDP_HEADER_LENGTH + length)
      : s.sendIpv6(IPPROTO_UDP, f.remote6!, f.guest6!, UDP_HEADER_LENGTH + length);
    if (r === SendResult.Sent) this.counters.toGuest++;
    else if (r !== SendResult.NoRoom) this.counters.dropped++;
    return r;
  }

  /** Stops reading `s` until the link has room. */
  #pause(s: HostSocket): void {
    if (s.paused || s.closed) return;
    s.paused = true;
    this.#paused.add(s);
    this.#watcher!.modify(s.fd, 0);
  }

  /** Delivers the kept datagrams, then reads the paused sockets again. */
  #resume(): void {
    if (!this.#blocked && this.#paused.size === 0) return;
    this.#blocked = false;
    const held = this.#heldSocket;
    if (held !== null) {
      if (!held.closed) {
        const delivered = this.#deliver(held, this.#heldNext, this.#heldCount, this.#clock());
        this.#sender.flush();
        if (delivered < this.#heldCount) {
          this.#heldNext = delivered;
          return;
        }
      }
      this.#heldSocket = null;
    }
    for (const s of [...this.#paused]) {
      if (this.#blocked) return;
      this.#paused.delete(s);
      s.paused = false;
      if (s.closed) continue;
      this.#watcher!.modify(s.fd, EVENT_READABLE);
      this.#read(s);
    }
  }

  #socketError(s: HostSocket, error: Error): void {
    this.counters.socketErrors++;
    const peer = s.role === "flow" ? s.lastFlow : null;
    const toward = peer === null ? "" : ` toward ${peer.hostAddr} port ${peer.hostPort}`;
    // Mostly ICMP errors the peer's host sent (ECONNREFUSED...): traffic, not a fault.
    this.#errLog.write(this.#clock(), `udp: the host socket${toward} reports ${error.message}`);
  }

  // ---------------------------------------------------------------- flows, sockets

  /** Logs (debug) a new flow; `how` says what started it. */
  #logOpened(f: UdpFlow, how: string): void {
    if (this.#log.enabled("debug")) this.#log.debug(`${udpFlowLabel(f)} opened: ${how}`);
  }

  /** Logs (debug) a flow's end: why, its byte counts and age. */
  #logClosed(f: UdpFlow, reason: string, now: number): void {
    if (!this.#log.enabled("debug")) return;
    this.#log.debug(
      `${udpFlowLabel(f)} closed: ${reason}; guest->host ${f.bytesFromGuest} B, ` +
        `host->guest ${f.bytesToGuest} B, after ${formatDuration(now - f.createdAt)}`,
    );
  }

  #removeFlow(f: UdpFlow): void {
    this.flows.remove(f);
    this.#closeOwnSocket(f);
    const s = f.socket;
    if (!s) return;
    if (s.flowsByHost.get(f.hostKey) === f) s.flowsByHost.delete(f.hostKey);
    if (s.lastFlow === f) s.lastFlow = null;
    if (s.role === "outbound" && s.flowsByHost.size === 0) {
      this.#sockets.delete(s.key);
      this.#closeSocket(s);
    }
  }

  /** Closes flow `f`'s own socket, if it has one. */
  #closeOwnSocket(f: UdpFlow): void {
    const own = f.own;
    if (own === null) return;
    f.own = null;
    this.#closeSocket(own);
  }

  /** Closes `s`; an outbound socket or listener ends its flows (and their own sockets). */
  #closeSocket(s: HostSocket): void {
    if (s.closed) return;
    s.closed = true;
    if (s.role === "flow") {
      this.#flowSockets--;
    } else {
      for (const f of s.flowsByHost.values()) {
        this.flows.remove(f);
        this.#closeOwnSocket(f);
      }
      s.flowsByHost.clear();
    }
    s.lastFlow = null;
    if (this.#sockets.get(s.key) === s) this.#sockets.delete(s.key);
    this.#paused.delete(s);
    if (this.#heldSocket === s) this.#heldSocket = null;
    this.#watcher?.unwatch(s.fd);
    s.socket.close();
  }

  #armSweep(now: number): void {
    if (this.#nextSweep === Infinity) {
      this.#nextSweep = now + Math.min(SWEEP_MS, this.#idleMs / 2);
      this.#onTimersChanged?.();
    }
  }
}

/** How many datagrams records `from`..`to`-1 carry. */
function datagramsOf(records: UdpMessageRecords, from: number, to: number): number {
  let datagrams = 0;
  for (let i = from; i < to; i++) datagrams += records.datagrams(i);
  return datagrams;
}

/**
 * Whether a send error of a segmented message says the socket's route cannot send
 * it so, though its datagrams may leave one by one (net/ipv4/udp.c udp_send_skb:
 * EMSGSIZE on Linux 6.18, EINVAL on older kernels, when a segment plus headers is
 * above the route's MTU; EINVAL with UDP checksums off; EIO through IPsec;
 * ENOPROTOOPT from a kernel without UDP_SEGMENT). The translator keeps a message
 * within the kernel's own limits, so these do not mean the payload is too long.
 */
function cannotSegment(error: unknown): boolean {
  if (!(error instanceof NativeError)) return false;
  const errno = error.errno;
  return errno === Errno.EIO || errno === Errno.EINVAL || errno === Errno.ENOPROTOOPT ||
    errno === Errno.EMSGSIZE;
}

function hostKey(addr: string, port: number): string {
  return `${addr}|${port}`;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}
