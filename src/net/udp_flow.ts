/**
 * UDP translation between the guest and host datagram sockets (node:dgram, which
 * needs no unstable flag; its bind() also honours `-o`).
 *
 * - Guest → host: datagrams leave from a host socket bound to the guest's own
 *   source port where possible (else an ephemeral one), one socket per guest
 *   source port (and host address family / loopback-ness of the destination), so
 *   that replies from any peer come back to the guest; destinations are translated
 *   by fwd.ts (gateway → host loopback, DNS address → resolver).
 * - Host → guest: replies, and datagrams arriving on `-u` listeners, are sent to
 *   the guest from the peer's address as the guest sees it (the address it used,
 *   or the inbound translation).
 * - Flows expire after 180 s without traffic; sockets close with their last flow
 *   (listeners stay). When the link toward the guest has no room the datagram is
 *   dropped and counted. Socket errors (ICMP errors surfaced by the kernel) are
 *   logged at debug level, rate-limited.
 *
 * @module
 */

import dgram from "node:dgram";
import { Buffer } from "node:buffer";
import { IPPROTO_UDP } from "./checksum.ts";
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
import { type GuestSender, L4_OFFSET_V4, L4_OFFSET_V6, MAX_FRAME_LENGTH } from "./guest_sender.ts";
import type { L4Handler, L4Packet } from "./l4_handler.ts";
import {
  buildUdp,
  newUdpHeader,
  parseUdp,
  UDP_HEADER_LENGTH,
  udpChecksumOkV4,
  udpChecksumOkV6,
} from "./udp.ts";
import { SendResult } from "../tap/frame_transport.ts";
import { log as defaultLog, type Logger } from "../log/logger.ts";
import { RateLimitedLog } from "../log/rate_limited_log.ts";

/** Idle timeout of a UDP flow (passt: 180 s). */
export const UDP_IDLE_TIMEOUT_MS = 180_000;
/** Interval of the idle sweep. */
const SWEEP_MS = 5_000;
/** Datagrams held per socket while it is still binding. */
const MAX_PENDING = 32;
/** Largest UDP payload toward an IPv4 guest (a maximal frame minus headers). */
const MAX_TO_GUEST_V4 = MAX_FRAME_LENGTH - L4_OFFSET_V4 - UDP_HEADER_LENGTH;
/** Largest UDP payload toward an IPv6 guest. */
const MAX_TO_GUEST_V6 = MAX_FRAME_LENGTH - L4_OFFSET_V6 - UDP_HEADER_LENGTH;

/** Options of {@link UdpTranslator}. */
export interface UdpTranslatorOptions {
  /** Maximum number of flows (default 16384). */
  maxFlows?: number;
  logger?: Logger;
  /** Clock for events from host sockets (default performance.now). */
  clock?: () => number;
  /** Idle timeout in ms (default 180 s). */
  idleTimeoutMs?: number;
  /** Verify the checksum of guest datagrams (default true). */
  verifyChecksums?: boolean;
  /** Called when the earliest timer moves earlier. */
  onTimersChanged?: () => void;
}

/** Counters for diagnostics and tests. */
export interface UdpCounters {
  toHost: number;
  toGuest: number;
  /** Datagrams toward the guest dropped because the link had no room. */
  noRoom: number;
  /** Datagrams dropped: table full, bad checksum, socket not ready, oversized. */
  dropped: number;
  tableFull: number;
  /** Sockets that could not take the guest's source port and use an ephemeral one. */
  ephemeralFallback: number;
  socketErrors: number;
}

type Role = "outbound" | "inbound";

/** One host datagram socket. */
class HostSocket {
  readonly sock: dgram.Socket;
  readonly role: Role;
  readonly key: string;
  /** Outbound: the guest source port; inbound: the guest target port. */
  readonly guestPort: number;
  readonly flowsByHost = new Map<string, UdpFlow>();
  ready = false;
  closed = false;
  pending: { data: Buffer; port: number; host: string }[] = [];

  constructor(sock: dgram.Socket, role: Role, key: string, guestPort: number) {
    this.sock = sock;
    this.role = role;
    this.key = key;
    this.guestPort = guestPort;
  }
}

/** One UDP flow (guest-side 5-tuple ↔ host socket + peer). */
class UdpFlow implements FlowKey {
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
  socket: HostSocket | null = null;
  hostAddr = "";
  hostPort = 0;
  hostKey = "";
  lastUsed = 0;
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
    socketErrors: 0,
  };
  readonly #sender: GuestSender;
  readonly #rules: ForwardRules;
  readonly #log: Logger;
  readonly #errLog: RateLimitedLog;
  readonly #clock: () => number;
  readonly #idleMs: number;
  readonly #verify: boolean;
  readonly #onTimersChanged: (() => void) | null;
  readonly #udp = newUdpHeader();
  readonly #sockets = new Map<string, HostSocket>();
  readonly #listeners = new Set<HostSocket>();
  readonly #inAddr: GuestSideAddress = newGuestSideAddress();
  readonly #target: HostTarget = newHostTarget();
  #nextSweep = Infinity;

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
    this.#clock = options.clock ?? (() => performance.now());
    this.#idleMs = options.idleTimeoutMs ?? UDP_IDLE_TIMEOUT_MS;
    this.#verify = options.verifyChecksums ?? true;
    this.#onTimersChanged = options.onTimersChanged ?? null;
  }

  /** Handles one datagram from the guest. */
  handlePacket(p: L4Packet, now: number): void {
    const u = this.#udp;
    const end = p.l4Offset + p.l4Length;
    if (parseUdp(p.frame, p.l4Offset, end, u) !== "ok" || u.dstPort === 0 || u.srcPort === 0) {
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
      if (p.family === 4 && ((p.dst4 >>> 28) === 0xe || p.dst4 === 0xffffffff)) {
        this.counters.dropped++; // multicast / broadcast: not forwarded
        return;
      }
      if (p.family === 6 && p.dst6[0] === 0xff) {
        this.counters.dropped++;
        return;
      }
      if (!this.flows.admit()) {
        this.counters.tableFull++;
        this.counters.dropped++;
        return;
      }
      const t = p.family === 4
        ? translateOutbound4(this.#rules, p.dst4, u.dstPort, this.#target)
        : translateOutbound6(this.#rules, p.dst6, u.dstPort, this.#target);
      const host = t.host;
      const sock = this.#outboundSocket(host, u.srcPort);
      f = new UdpFlow();
      initFlowKey(f, p.family, p.src4, p.src6, u.srcPort, p.dst4, p.dst6, u.dstPort);
      f.socket = sock;
      f.hostAddr = host;
      f.hostPort = t.port;
      f.hostKey = hostKey(host, t.port);
      this.flows.insert(f);
      sock.flowsByHost.set(f.hostKey, f);
      this.#armSweep(now);
    }
    f.lastUsed = now;
    const s = f.socket!;
    if (s.closed) {
      this.counters.dropped++;
      return;
    }
    const data = Buffer.from(p.frame.subarray(u.payloadOffset, u.payloadOffset + u.payloadLength));
    if (!s.ready) {
      if (s.pending.length < MAX_PENDING) {
        s.pending.push({ data, port: f.hostPort, host: f.hostAddr });
      } else this.counters.dropped++;
      return;
    }
    this.#sendHost(s, data, f.hostPort, f.hostAddr);
  }

  /** Flushes frames sent during the batch. */
  endOfBatch(_now: number): void {
    this.#sender.flush();
  }

  /** Expires idle flows. */
  tick(now: number): void {
    if (now < this.#nextSweep) return;
    this.#nextSweep = Infinity;
    this.flows.forEach((f) => {
      if (now - f.lastUsed >= this.#idleMs) this.#removeFlow(f);
    });
    if (this.flows.size > 0) this.#nextSweep = now + Math.min(SWEEP_MS, this.#idleMs / 2);
  }

  /** Earliest time {@link tick} must run. */
  nextTimerAt(): number {
    return this.#nextSweep;
  }

  /**
   * Listens on host `hostname`:`port` and forwards datagrams to guest port
   * `guestPort`; the guest's replies go back out of this socket.
   * @returns a promise of the bound port (`port`, or the one chosen for 0); rejects on
   * bind errors
   */
  listen(hostname: string, port: number, guestPort: number): Promise<number> {
    const type = hostname.includes(":") ? "udp6" : "udp4";
    const sock = dgram.createSocket({ type, ipv6Only: type === "udp6" });
    const hs = new HostSocket(sock, "inbound", `in/${hostname}/${port}`, guestPort);
    this.#listeners.add(hs);
    this.#wire(hs);
    return new Promise((resolve, reject) => {
      const onError = (e: Error) => {
        hs.closed = true;
        this.#listeners.delete(hs);
        try {
          sock.close();
        } catch { /* closed */ }
        reject(e);
      };
      sock.once("error", onError);
      sock.bind({ port, address: hostname }, () => {
        sock.off("error", onError);
        hs.ready = true;
        resolve(sock.address().port);
      });
    });
  }

  /** The host port a listener or an outbound socket is bound to (tests). */
  boundPort(guestPort: number): number | null {
    for (const s of this.#sockets.values()) {
      if (s.guestPort === guestPort && s.ready) return s.sock.address().port;
    }
    return null;
  }

  /** Closes every socket. */
  close(): void {
    this.flows.forEach((f) => this.flows.remove(f));
    for (const s of [...this.#sockets.values(), ...this.#listeners]) this.#closeSocket(s);
    this.#sockets.clear();
    this.#listeners.clear();
    this.#nextSweep = Infinity;
  }

  // ----------------------------------------------------------------

  #outboundSocket(host: string, guestPort: number): HostSocket {
    const v6 = host.includes(":");
    const loop = v6 ? host === "::1" : host.startsWith("127.");
    const key = `out/${v6 ? 6 : 4}/${loop ? "l" : "w"}/${guestPort}`;
    const existing = this.#sockets.get(key);
    if (existing && !existing.closed) return existing;
    const type = v6 ? "udp6" : "udp4";
    const sock = dgram.createSocket({ type, ipv6Only: v6 });
    const hs = new HostSocket(sock, "outbound", key, guestPort);
    this.#sockets.set(key, hs);
    this.#wire(hs);
    const outbound = v6 ? this.#rules.outbound6 : this.#rules.outbound4;
    const address = loop ? (v6 ? "::1" : "127.0.0.1") : (outbound ?? (v6 ? "::" : "0.0.0.0"));
    const bound = () => {
      hs.ready = true;
      const q = hs.pending.splice(0);
      for (const d of q) this.#sendHost(hs, d.data, d.port, d.host);
    };
    const tryEphemeral = () => {
      this.counters.ephemeralFallback++;
      sock.once("error", (e: Error) => {
        this.#errLog.write(this.#clock(), `udp: cannot bind a socket for the guest: ${e.message}`);
        this.#closeSocket(hs);
      });
      sock.bind({ port: 0, address }, bound);
    };
    sock.once("error", tryEphemeral);
    sock.bind({ port: guestPort, address }, () => {
      sock.off("error", tryEphemeral);
      bound();
    });
    return hs;
  }

  #wire(hs: HostSocket): void {
    hs.sock.on("message", (msg: Buffer, rinfo: dgram.RemoteInfo) => {
      try {
        this.#fromHost(hs, msg, rinfo);
      } catch (e) {
        this.#errLog.write(this.#clock(), `udp: error forwarding a datagram to the guest: ${e}`);
      }
    });
    hs.sock.on("error", (e: Error) => {
      this.counters.socketErrors++;
      if (hs.ready) this.#errLog.write(this.#clock(), `udp: socket error: ${e.message}`);
    });
  }

  #sendHost(s: HostSocket, data: Buffer, port: number, host: string): void {
    try {
      s.sock.send(data, port, host, (e) => {
        if (e) {
          this.counters.socketErrors++;
          this.#errLog.write(
            this.#clock(),
            `udp: send to ${host} port ${port} failed: ${e.message}`,
          );
        }
      });
      this.counters.toHost++;
    } catch (e) {
      this.counters.dropped++;
      this.#errLog.write(this.#clock(), `udp: send to ${host} port ${port} failed: ${e}`);
    }
  }

  #fromHost(hs: HostSocket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const now = this.#clock();
    const hk = hostKey(rinfo.address, rinfo.port);
    let f = hs.flowsByHost.get(hk) ?? null;
    if (!f) {
      const a = this.#inAddr;
      if (!translateInbound(this.#rules, rinfo.address, a)) {
        this.counters.dropped++;
        return;
      }
      const s = this.#sender;
      let guest4 = 0;
      let guest6: Uint8Array | null = null;
      if (a.family === 4) {
        guest4 = s.guestIpv4Seen || this.#rules.guestAddr4;
        if (!guest4) return void this.counters.dropped++;
      } else {
        guest6 = s.guestIpv6Seen ?? this.#rules.guestAddr6 ?? s.guestIpv6LinkLocalSeen;
        if (!guest6) return void this.counters.dropped++;
      }
      const existing = a.family === 4
        ? this.flows.find4(guest4, hs.guestPort, a.addr4, rinfo.port)
        : this.flows.find6(guest6!, hs.guestPort, a.addr6, rinfo.port);
      if (existing) {
        f = existing;
      } else {
        if (!this.flows.admit()) {
          this.counters.tableFull++;
          this.counters.dropped++;
          return;
        }
        f = new UdpFlow();
        initFlowKey(f, a.family, guest4, guest6, hs.guestPort, a.addr4, a.addr6, rinfo.port);
        f.socket = hs;
        f.hostAddr = rinfo.address;
        f.hostPort = rinfo.port;
        f.hostKey = hk;
        this.flows.insert(f);
        hs.flowsByHost.set(hk, f);
        this.#armSweep(now);
      }
    }
    f.lastUsed = now;
    this.#toGuest(f, msg);
  }

  #toGuest(f: UdpFlow, msg: Uint8Array): void {
    const s = this.#sender;
    const v4 = f.family === 4;
    const off = v4 ? L4_OFFSET_V4 : L4_OFFSET_V6;
    if (msg.length > (v4 ? MAX_TO_GUEST_V4 : MAX_TO_GUEST_V6)) {
      this.counters.dropped++;
      return;
    }
    buildUdp(s.buffer, off, f.remotePort, f.guestPort, msg.length);
    s.buffer.set(msg, off + UDP_HEADER_LENGTH);
    const r = v4
      ? s.sendIpv4(IPPROTO_UDP, f.remote4, f.guest4, UDP_HEADER_LENGTH + msg.length)
      : s.sendIpv6(IPPROTO_UDP, f.remote6!, f.guest6!, UDP_HEADER_LENGTH + msg.length);
    if (r === SendResult.Sent) this.counters.toGuest++;
    else if (r === SendResult.NoRoom) this.counters.noRoom++;
    else this.counters.dropped++;
  }

  #removeFlow(f: UdpFlow): void {
    this.flows.remove(f);
    const s = f.socket;
    if (!s) return;
    if (s.flowsByHost.get(f.hostKey) === f) s.flowsByHost.delete(f.hostKey);
    if (s.role === "outbound" && s.flowsByHost.size === 0) {
      this.#sockets.delete(s.key);
      this.#closeSocket(s);
    }
  }

  #closeSocket(s: HostSocket): void {
    if (s.closed) return;
    s.closed = true;
    s.pending = [];
    for (const f of s.flowsByHost.values()) this.flows.remove(f);
    s.flowsByHost.clear();
    if (this.#sockets.get(s.key) === s) this.#sockets.delete(s.key);
    try {
      s.sock.close();
    } catch { /* not running */ }
  }

  #armSweep(now: number): void {
    if (this.#nextSweep === Infinity) {
      this.#nextSweep = now + Math.min(SWEEP_MS, this.#idleMs / 2);
      this.#onTimersChanged?.();
    }
  }
}

function hostKey(addr: string, port: number): string {
  return `${addr}|${port}`;
}
