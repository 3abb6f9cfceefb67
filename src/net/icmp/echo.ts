/**
 * The guest's pings (ICMP/ICMPv6 echo requests, RFC 792 / RFC 4443 §4.1) to any
 * address go out through unprivileged ping sockets, one per (family, guest echo
 * identifier, destination); the kernel gives each socket its own identifier, so the
 * replies read from a socket are sent back to the guest with the guest's identifier
 * restored. A socket unused for {@link ECHO_IDLE_TIMEOUT_MS} is closed by
 * {@link IcmpEcho.tick}. When the host forbids ping sockets
 * (net.ipv4.ping_group_range), one warning is logged and pings are dropped.
 *
 * Pings are held to Deno's `net` permission like TCP and UDP: before a socket is
 * opened for a new destination, the address the socket would send to (after the
 * gateway → host loopback translation) must be granted for every port
 * (net_permission.ts). A refused echo request is answered with an ICMP destination
 * unreachable, "administratively prohibited" (RFC 1812 §5.2.7.1 for IPv4, RFC 4443
 * §3.1 code 1 for IPv6), counted and logged (one line per second at most).
 *
 * Sockets come from an injected factory and their fds are watched through an
 * injected {@link FdWatcher} (the daemon's EventLoop), so tests need no kernel.
 *
 * @module
 */

import { readIpv4, writeIpv4 } from "../wire/address.ts";
import { type FlowInfo, formatDuration } from "../flows/flow_info.ts";
import type { GuestSender } from "../guest_sender.ts";
import { L4_OFFSET_V4, L4_OFFSET_V6 } from "../guest_sender.ts";
import {
  ICMP_ECHO_ID,
  ICMP_HEADER_LENGTH,
  icmpv4ChecksumOk,
  Icmpv4Type,
  Icmpv6Type,
} from "../wire/icmp.ts";
import type { Ipv4Header } from "../wire/ipv4.ts";
import type { Ipv6Header } from "../wire/ipv6.ts";
import { type ForwardRules, outboundAddress4, outboundAddress6 } from "../plan/fwd.ts";
import { log as defaultLog, type Logger } from "../../log/logger.ts";
import { RateLimitedLog } from "../../log/rate_limited_log.ts";
import { ETH_HEADER_LENGTH } from "../wire/ethernet.ts";
import { sendIcmpv4Error, sendIcmpv6Error } from "./error.ts";
import { addressPermissionGranted } from "../plan/net_permission.ts";
import { IPPROTO_ICMP, IPPROTO_ICMPV6 } from "../wire/ip_protocol.ts";
import { ipv4ToString, ipv6ToString } from "../../../ffi/ip_address_text.ts";

/** Idle time after which a ping socket is closed (passt uses 60 s). */
export const ECHO_IDLE_TIMEOUT_MS = 60_000;
/** Most ping sockets open at once; the least recently used one is closed beyond it. */
export const MAX_ECHO_FLOWS = 256;
/** Most replies read from one socket per readiness event. */
const MAX_READS_PER_EVENT = 64;
/** After a failed open, how long before trying again. */
const REOPEN_BACKOFF_MS = 10_000;
/** errno EACCES (asm-generic/errno-base.h). */
const EACCES = 13;
/** errno EPERM. */
const EPERM = 1;
/** ICMPv4 destination unreachable code: communication administratively prohibited (RFC 1812 §5.2.7.1). */
export const ICMPV4_ADMIN_PROHIBITED = 13;
/** ICMPv6 destination unreachable code: communication administratively prohibited (RFC 4443 §3.1). */
export const ICMPV6_ADMIN_PROHIBITED = 1;

/** A ping socket as the echo service uses it (ffi/ping_socket.ts's PingSocket fits). */
export interface EchoSocket {
  /** The descriptor to watch for readability. */
  readonly fd: number;
  /** Sends an ICMP message (header included); returns bytes sent or -1 when the buffer is full. */
  sendTo(payload: Uint8Array, address: Uint8Array): number;
  /** Reads one ICMP message into `buf`, or null when nothing is pending. */
  receive(buf: Uint8Array): { length: number; address: Uint8Array } | null;
  close(): void;
}

/** Opens a ping socket; throws (errno EACCES when forbidden) on failure. */
export type EchoSocketFactory = (family: 4 | 6) => EchoSocket;

/** Watches fds for readability (the daemon's EventLoop fits). */
export interface FdWatcher {
  watch(fd: number, handler: (events: number, now: number) => void): void;
  unwatch(fd: number): void;
}

/** Result of the handle methods. */
export type IcmpEchoStatus = "ok" | "icmp-truncated" | "icmp-bad-checksum" | "icmp-bad-destination";

/** Counters of the echo service. */
export interface IcmpEchoCounters {
  requests: number;
  replies: number;
  sendErrors: number;
  socketsOpened: number;
  socketsClosed: number;
  /** Echo requests dropped because the host forbids ping sockets. */
  notPermitted: number;
  /** Echo requests refused by Deno's `net` permission (answered with "prohibited"). */
  netDenied: number;
  ignored: number;
}

/** An echo flow's ends as the statistics dump shows them (guest "address id N"). */
function echoEnds(f: EchoFlow): { guest: string; remote: string; host: string } {
  const text = (a: Uint8Array) => f.family === 4 ? ipv4ToString(readIpv4(a, 0)) : ipv6ToString(a);
  return {
    guest: `${text(f.guestAddress)} id ${f.guestId}`,
    remote: text(f.destination),
    host: text(f.target),
  };
}

/** An echo flow for a log line: `icmp 10.0.2.15 id 7 -> 10.0.2.2 (host 127.0.0.1)`. */
function echoLabel(f: EchoFlow): string {
  const ends = echoEnds(f);
  return `${
    f.family === 4 ? "icmp" : "icmpv6"
  } ${ends.guest} -> ${ends.remote} (host ${ends.host})`;
}

interface EchoFlow {
  key: string;
  family: 4 | 6;
  guestId: number;
  /** The guest's source address (4 or 16 bytes). */
  guestAddress: Uint8Array;
  /** Destination as the guest sent it (source of the replies we forward). */
  destination: Uint8Array;
  /** Where the socket actually sends (differs for the mapped host-loopback address). */
  target: Uint8Array;
  socket: EchoSocket;
  lastUsed: number;
  /** When the flow was created (clock ms), for statistics. */
  createdAt: number;
  /** ICMP bytes (header included) of the echo requests sent for the guest. */
  bytesFromGuest: number;
  /** ICMP bytes of the echo replies relayed to the guest. */
  bytesToGuest: number;
}

/** Options of {@link IcmpEcho}. */
export interface IcmpEchoOptions {
  /**
   * The translation rules TCP and UDP use too (gateway → host loopback,
   * `--map-guest-addr` → the host's own address); without them echo requests go
   * to the destination the guest named.
   */
  rules?: ForwardRules;
  /**
   * Whether the guest may ping `address` (the text of the address the socket would
   * send to); Deno's `net` permission for the whole address by default.
   */
  permitted?: (address: string) => boolean;
}

/** Forwards the guest's echo requests through ping sockets and relays the replies. */
export class IcmpEcho {
  /** Event counters for diagnostics. */
  readonly counters: IcmpEchoCounters = {
    requests: 0,
    replies: 0,
    sendErrors: 0,
    socketsOpened: 0,
    socketsClosed: 0,
    notPermitted: 0,
    netDenied: 0,
    ignored: 0,
  };
  readonly #sender: GuestSender;
  readonly #factory: EchoSocketFactory;
  readonly #watcher: FdWatcher;
  readonly #log: Logger;
  readonly #errors: RateLimitedLog;
  readonly #denyLog: RateLimitedLog;
  readonly #permitted: (address: string) => boolean;
  readonly #options: IcmpEchoOptions;
  readonly #flows = new Map<string, EchoFlow>();
  readonly #payload = new Uint8Array(65535);
  readonly #rx = new Uint8Array(65535);
  #warnedNotPermitted = false;
  #blockedUntil: [number, number] = [-Infinity, -Infinity];

  /** @param logger where the one-time warning and rate-limited errors go */
  constructor(
    sender: GuestSender,
    factory: EchoSocketFactory,
    watcher: FdWatcher,
    logger: Logger = defaultLog,
    options: IcmpEchoOptions = {},
  ) {
    this.#sender = sender;
    this.#factory = factory;
    this.#watcher = watcher;
    this.#log = logger;
    this.#errors = new RateLimitedLog("debug", 1000, logger);
    this.#denyLog = new RateLimitedLog("warn", 1000, logger);
    this.#options = options;
    this.#permitted = options.permitted ?? addressPermissionGranted;
  }

  /** Number of open ping sockets. */
  get size(): number {
    return this.#flows.size;
  }

  /** Handles an ICMPv4 message from the guest (IPv4 header already validated). */
  handleIpv4(frame: Uint8Array, ip: Ipv4Header, now: number): IcmpEchoStatus {
    const off = ip.payloadOffset, len = ip.payloadLength;
    if (len < ICMP_HEADER_LENGTH) return "icmp-truncated";
    // Copy first, then check: the frame may change under us (TOCTOU).
    const p = this.#payload;
    p.set(frame.subarray(off, off + len));
    if (!icmpv4ChecksumOk(p, 0, len)) return "icmp-bad-checksum";
    if (p[0] !== Icmpv4Type.EchoRequest || p[1] !== 0) {
      this.counters.ignored++;
      return "ok";
    }
    const dst = ip.dst;
    const top = dst >>> 24;
    if (dst === 0 || top >= 224 || top === 0) return "icmp-bad-destination";
    const dstBytes = new Uint8Array(4);
    writeIpv4(dstBytes, 0, dst);
    const srcBytes = new Uint8Array(4);
    writeIpv4(srcBytes, 0, ip.src);
    const rules = this.#options.rules;
    let target = dstBytes;
    if (rules) {
      const host = outboundAddress4(rules, dst);
      if (host !== dst) {
        target = new Uint8Array(4);
        writeIpv4(target, 0, host);
      }
    }
    const quoted = frame.subarray(ETH_HEADER_LENGTH, off + len);
    return this.#forward(4, p, len, srcBytes, dstBytes, target, quoted, now);
  }

  /** Handles an ICMPv6 echo request (header and checksum already validated by the stack). */
  handleIpv6(frame: Uint8Array, ip: Ipv6Header, now: number): IcmpEchoStatus {
    const off = ip.l4Offset, len = ip.l4Length;
    if (len < ICMP_HEADER_LENGTH) return "icmp-truncated";
    const p = this.#payload;
    p.set(frame.subarray(off, off + len));
    if (p[0] !== Icmpv6Type.EchoRequest || p[1] !== 0) {
      this.counters.ignored++;
      return "ok";
    }
    if (ip.dst[0] === 0xff || ip.dst.every((b) => b === 0)) return "icmp-bad-destination";
    const dst = ip.dst.slice();
    const rules = this.#options.rules;
    const mapped = rules ? outboundAddress6(rules, dst) : dst;
    const target = mapped === dst ? dst : mapped.slice();
    const quoted = frame.subarray(ETH_HEADER_LENGTH, off + len);
    return this.#forward(6, p, len, ip.src.slice(), dst, target, quoted, now);
  }

  /** Closes sockets idle for {@link ECHO_IDLE_TIMEOUT_MS}. */
  /**
   * The echo flows as plain objects, for a statistics dump.
   * @param now the clock's current time, for ages
   */
  describeFlows(now: number): FlowInfo[] {
    const out: FlowInfo[] = [];
    for (const f of this.#flows.values()) {
      out.push({
        protocol: f.family === 4 ? "icmp" : "icmpv6",
        ...echoEnds(f),
        state: "active",
        bytesFromGuest: f.bytesFromGuest,
        bytesToGuest: f.bytesToGuest,
        ageMs: Math.max(0, now - f.createdAt),
        idleMs: Math.max(0, now - f.lastUsed),
      });
    }
    return out;
  }

  tick(now: number): void {
    for (const f of this.#flows.values()) {
      if (now - f.lastUsed < ECHO_IDLE_TIMEOUT_MS) continue;
      this.#close(f);
      if (this.#log.enabled("debug")) {
        this.#log.debug(
          `${echoLabel(f)} closed: idle for ${formatDuration(now - f.lastUsed)}; ` +
            `guest->host ${f.bytesFromGuest} B, host->guest ${f.bytesToGuest} B, ` +
            `after ${formatDuration(now - f.createdAt)}`,
        );
      }
    }
  }

  /** When {@link tick} must run next (Infinity with no socket open). */
  nextTimerAt(): number {
    let t = Infinity;
    for (const f of this.#flows.values()) t = Math.min(t, f.lastUsed + ECHO_IDLE_TIMEOUT_MS);
    return t;
  }

  /** Closes every ping socket. */
  close(): void {
    for (const f of [...this.#flows.values()]) this.#close(f);
  }

  #forward(
    family: 4 | 6,
    payload: Uint8Array,
    len: number,
    guestAddress: Uint8Array,
    destination: Uint8Array,
    target: Uint8Array,
    quoted: Uint8Array,
    now: number,
  ): IcmpEchoStatus {
    this.counters.requests++;
    const guestId = (payload[ICMP_ECHO_ID] << 8) | payload[ICMP_ECHO_ID + 1];
    const key = `${family}/${guestId}/${destination.join(".")}/${guestAddress.join(".")}`;
    let flow = this.#flows.get(key);
    if (!flow) {
      const targetText = family === 4 ? ipv4ToString(readIpv4(target, 0)) : ipv6ToString(target);
      if (!this.#permitted(targetText)) {
        this.#refuse(family, guestAddress, destination, targetText, quoted, now);
        return "ok";
      }
      const opened = this.#open(family, now);
      if (!opened) return "ok";
      if (this.#flows.size >= MAX_ECHO_FLOWS) this.#evictOldest();
      flow = {
        key,
        family,
        guestId,
        guestAddress,
        destination,
        target,
        socket: opened,
        lastUsed: now,
        createdAt: now,
        bytesFromGuest: 0,
        bytesToGuest: 0,
      };
      this.#flows.set(key, flow);
      const f = flow;
      try {
        this.#watcher.watch(opened.fd, (_events, t) => this.#readable(f, t));
      } catch (error) {
        this.#flows.delete(key);
        opened.close();
        this.counters.sendErrors++;
        this.#errors.write(now, `ping: cannot watch the ping socket: ${error}`);
        return "ok";
      }
      this.counters.socketsOpened++;
      if (this.#log.enabled("debug")) {
        this.#log.debug(`${echoLabel(f)} opened: echo request from the guest`);
      }
    }
    flow.lastUsed = now;
    try {
      if (flow.socket.sendTo(payload.subarray(0, len), flow.target) < 0) this.counters.sendErrors++;
      else flow.bytesFromGuest += len;
    } catch (error) {
      this.counters.sendErrors++;
      this.#errors.write(now, `ping: cannot send an echo request: ${error}`);
    }
    return "ok";
  }

  /** Answers a refused echo request with "administratively prohibited" and logs it. */
  #refuse(
    family: 4 | 6,
    guestAddress: Uint8Array,
    destination: Uint8Array,
    targetText: string,
    quoted: Uint8Array,
    now: number,
  ): void {
    this.counters.netDenied++;
    this.#denyLog.write(
      now,
      `ping: echo requests from the guest to ${targetText} not permitted (--allow-net): ` +
        "answered with administratively prohibited",
    );
    if (family === 4) {
      sendIcmpv4Error(
        this.#sender,
        Icmpv4Type.DestinationUnreachable,
        ICMPV4_ADMIN_PROHIBITED,
        0,
        readIpv4(destination, 0),
        readIpv4(guestAddress, 0),
        quoted,
      );
    } else {
      sendIcmpv6Error(
        this.#sender,
        Icmpv6Type.DestinationUnreachable,
        ICMPV6_ADMIN_PROHIBITED,
        0,
        destination,
        guestAddress,
        quoted,
      );
    }
  }

  #open(family: 4 | 6, now: number): EchoSocket | null {
    if (now < this.#blockedUntil[family === 4 ? 0 : 1]) {
      this.counters.notPermitted++;
      return null;
    }
    try {
      return this.#factory(family);
    } catch (error) {
      const errno = (error as { errno?: number }).errno;
      this.#blockedUntil[family === 4 ? 0 : 1] = now + REOPEN_BACKOFF_MS;
      if (errno === EACCES || errno === EPERM) {
        this.counters.notPermitted++;
        if (!this.#warnedNotPermitted) {
          this.#warnedNotPermitted = true;
          this.#log.warn(
            "ping: the host does not permit ping sockets for this user " +
              "(sysctl net.ipv4.ping_group_range); the guest's pings are dropped",
          );
        }
      } else {
        this.counters.sendErrors++;
        this.#errors.write(now, `ping: cannot open an IPv${family} ping socket: ${error}`);
      }
      return null;
    }
  }

  #readable(flow: EchoFlow, now: number): void {
    if (this.#flows.get(flow.key) !== flow) return;
    const rx = this.#rx;
    for (let i = 0; i < MAX_READS_PER_EVENT; i++) {
      let r: { length: number; address: Uint8Array } | null;
      try {
        r = flow.socket.receive(rx);
      } catch (error) {
        this.#errors.write(now, `ping: cannot receive: ${error}`);
        this.#close(flow);
        return;
      }
      if (r === null) break;
      const n = Math.min(r.length, rx.length);
      const replyType = flow.family === 4 ? Icmpv4Type.EchoReply : Icmpv6Type.EchoReply;
      if (n < ICMP_HEADER_LENGTH || rx[0] !== replyType) continue;
      flow.lastUsed = now;
      this.#relay(flow, n);
    }
  }

  #relay(flow: EchoFlow, n: number): void {
    const s = this.#sender;
    const b = s.buffer;
    const off = flow.family === 4 ? L4_OFFSET_V4 : L4_OFFSET_V6;
    if (off + n > b.length) return;
    b.set(this.#rx.subarray(0, n), off);
    b[off + ICMP_ECHO_ID] = flow.guestId >> 8;
    b[off + ICMP_ECHO_ID + 1] = flow.guestId & 0xff;
    if (flow.family === 4) {
      s.sendIpv4(IPPROTO_ICMP, readIpv4(flow.destination, 0), readIpv4(flow.guestAddress, 0), n);
    } else {
      s.sendIpv6(IPPROTO_ICMPV6, flow.destination, flow.guestAddress, n);
    }
    this.counters.replies++;
    flow.bytesToGuest += n;
  }

  #evictOldest(): void {
    let oldest: EchoFlow | null = null;
    for (const f of this.#flows.values()) if (!oldest || f.lastUsed < oldest.lastUsed) oldest = f;
    if (oldest) this.#close(oldest);
  }

  #close(flow: EchoFlow): void {
    if (this.#flows.get(flow.key) !== flow) return;
    this.#flows.delete(flow.key);
    try {
      this.#watcher.unwatch(flow.socket.fd);
    } finally {
      flow.socket.close();
      this.counters.socketsClosed++;
    }
  }
}
