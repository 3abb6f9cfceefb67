/**
 * The network stack facing the guest: receives the guest's Ethernet frames,
 * validates every layer, and dispatches them to ARP, DHCP, NDP, DHCPv6, ICMP echo
 * and the TCP/UDP translators registered through {@link NetworkStack.registerL4}.
 * Malformed frames are dropped with a per-reason counter and a rate-limited debug
 * line; no exception escapes {@link NetworkStack.handleFrame}.
 *
 * Wiring (daemon/network_wiring.ts, simplified):
 * ```ts
 * const plan = networkPlanFor(config);
 * const stack = new NetworkStack(plan, {
 *   echoSocketFactory: pingSocketFactory,
 *   fdWatcher: loop,
 *   forward: forwardOptionsFromConfig(config),
 * });
 * startForwarding(stack, options); // registers the TCP/UDP translators, opens -t/-u listeners
 * // the transport calls handleFrame/endOfBatch/linkUp/linkDown (FrameHandler);
 * // the daemon's TimerDriver calls stack.tick(now) no later than stack.nextTimerAt().
 * ```
 *
 * @module
 */

import { ipv4PrefixMask, ipv6IsUnspecified, isMulticastMac } from "./wire/address.ts";
import { ArpResponder } from "./services/arp.ts";
import {
  ETH_HEADER_LENGTH,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  newEthernetHeader,
  parseEthernet,
} from "./wire/ethernet.ts";
import type { FlowInfo } from "./flows/flow_info.ts";
import { describeFrame } from "./wire/frame_summary.ts";
import { GuestSender } from "./guest_sender.ts";
import { DEFAULT_MTU, type NetworkPlan } from "./plan/network_plan.ts";
import { IPV4_HEADER_MAX, newIpv4Header, parseIpv4Header } from "./wire/ipv4.ts";
import { IPV6_HEADER_LENGTH, newIpv6Header, parseIpv6Header } from "./wire/ipv6.ts";
import { type L4Handler, type L4Packet, newL4Packet } from "./l4_handler.ts";
import { TCP_DATA_OFFSET, TCP_HEADER_MAX } from "./wire/tcp_header.ts";
import { DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DhcpServer } from "./services/dhcp.ts";
import { DHCPV6_SERVER_PORT, Dhcpv6Server } from "./services/dhcpv6.ts";
import { NdpResponder } from "./services/ndp.ts";
import { type EchoSocketFactory, type FdWatcher, IcmpEcho } from "./icmp/echo.ts";
import { buildForwardRules, type ForwardOptions, type ForwardRules } from "./plan/fwd.ts";
import { icmpv6ChecksumOk, Icmpv6Type, newIcmpHeader, parseIcmp } from "./wire/icmp.ts";
import { newUdpHeader, parseUdp, udpChecksumOkV4, udpChecksumOkV6 } from "./wire/udp.ts";
import {
  type FrameHandler,
  FrameInfo,
  type GuestLink,
  type ScatteredFrame,
} from "../tap/frame_transport.ts";
import { log, type Logger } from "../log/logger.ts";
import { RateLimitedLog } from "../log/rate_limited_log.ts";
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP } from "./wire/ip_protocol.ts";

/** Options of {@link NetworkStack}. */
export interface NetworkStackOptions {
  /** Opens ping sockets for the guest's echo requests; without it, echo is not forwarded. */
  echoSocketFactory?: EchoSocketFactory;
  /** Watches ping socket fds (the daemon's EventLoop); required with echoSocketFactory. */
  fdWatcher?: FdWatcher;
  /** Whether the guest may ping an address (default: Deno's `net` permission for it). */
  echoPermitted?: (address: string) => boolean;
  /**
   * Address translation (`--map-host-loopback`, `--no-map-gw`, `--map-guest-addr`,
   * DNS forwarding, outbound options): built once into {@link NetworkStack.forwardRules},
   * which ICMP echo and the TCP/UDP translators all follow. Default: the gateway
   * reaches the host's loopback.
   */
  forward?: ForwardOptions;
  /** Uniform [0, 1) generator used for RA intervals (tests inject a fixed one). */
  random?: () => number;
  logger?: Logger;
}

/** Dispatches guest frames to the stack's services; implements {@link FrameHandler}. */
export class NetworkStack implements FrameHandler {
  /** The frame builder and what was learnt about the guest; shared with L4 handlers. */
  readonly sender: GuestSender;
  /** The configuration the services answer with. */
  readonly plan: NetworkPlan;
  /** Frames dropped, by reason. */
  readonly drops: Record<string, number> = {};
  /**
   * Bytes of every frame from the guest, accepted or dropped (statistics), in a
   * Float64Array: a number field would change V8's representation of this object when
   * it first passes 2^30 (1 GiB) and deoptimise the whole receive path (README,
   * design: "Counters that never change shape").
   */
  readonly #bytesFromGuest = new Float64Array(1);
  /** Frames accepted, by kind (diagnostics). */
  readonly accepted: Record<string, number> = {};
  /** ARP responder (null without IPv4). */
  readonly arp: ArpResponder | null;
  /** DHCP server (null without IPv4 or with DHCP disabled). */
  readonly dhcp: DhcpServer | null;
  /** NS/RS responder and RA sender (null without IPv6 or with NDP disabled). */
  readonly ndp: NdpResponder | null;
  /** DHCPv6 server (null without a global IPv6 address or with DHCPv6 disabled). */
  readonly dhcpv6: Dhcpv6Server | null;
  /** How guest destinations map to host ones, for every protocol (see NetworkStackOptions.forward). */
  readonly forwardRules: ForwardRules;
  /** Echo forwarding through ping sockets (null without a socket factory). */
  readonly icmpEcho: IcmpEcho | null;
  readonly #l4 = new Map<number, L4Handler>();
  /** The registered handlers, in order (walked at each batch's end without an iterator). */
  readonly #l4List: L4Handler[] = [];
  readonly #eth = newEthernetHeader();
  readonly #ip4 = newIpv4Header();
  readonly #ip6 = newIpv6Header();
  readonly #udp = newUdpHeader();
  readonly #icmp = newIcmpHeader();
  readonly #packet: L4Packet = newL4Packet();
  /** The frame being handled carries FrameInfo.ChecksumPending. */
  #checksumPending = false;
  /** The frame being handled has its payload still in guest memory (TCP only). */
  #scattered: ScatteredFrame | null = null;
  /** Guest frames may come scattered: TCP sends their payload from guest memory. */
  readonly acceptsScattered = true;
  /** The frame being handled's FrameInfo.SegmentedTcp4 / SegmentedTcp6 bit (0: none). */
  #segmented = 0;
  readonly #dropLog: RateLimitedLog;
  readonly #errorLog: RateLimitedLog;
  readonly #log: Logger;
  /** Directed broadcast address of the guest's subnet (-1 for /31 and /32). */
  readonly #subnetBroadcast4: number;

  /** Builds the services the plan enables. */
  constructor(plan: NetworkPlan, options: NetworkStackOptions = {}) {
    this.plan = plan;
    this.#log = options.logger ?? log;
    this.#dropLog = new RateLimitedLog("debug", 1000, this.#log);
    this.#errorLog = new RateLimitedLog("warn", 1000, this.#log);
    this.sender = new GuestSender(plan.ourMac, this.#log);
    const v4 = plan.ipv4;
    this.#subnetBroadcast4 = v4 && v4.prefix <= 30
      ? (v4.address | ~ipv4PrefixMask(v4.prefix)) >>> 0
      : -1;
    this.arp = plan.ipv4 ? new ArpResponder(this.sender, plan.ipv4.address) : null;
    this.dhcp = plan.ipv4 && plan.enableDhcp ? new DhcpServer(plan, this.sender, this.#log) : null;
    this.ndp = plan.ipv6 && plan.enableNdp
      ? new NdpResponder(plan, this.sender, options.random ?? Math.random, this.#log)
      : null;
    this.dhcpv6 = plan.ipv6 && plan.enableDhcpv6
      ? new Dhcpv6Server(plan, this.sender, this.#log)
      : null;
    this.forwardRules = buildForwardRules(plan, options.forward ?? {});
    this.icmpEcho = options.echoSocketFactory && options.fdWatcher
      ? new IcmpEcho(
        this.sender,
        options.echoSocketFactory,
        options.fdWatcher,
        this.#log,
        { rules: this.forwardRules, permitted: options.echoPermitted },
      )
      : null;
  }
  /** Bytes of every frame from the guest, accepted or dropped (statistics). */
  get bytesFromGuest(): number {
    return this.#bytesFromGuest[0];
  }

  /**
   * Registers the translator for IP protocol `protocol` (6 TCP, 17 UDP) for both
   * families. UDP to the DHCP/DHCPv6 server ports is kept by the stack.
   * @throws Error when a handler is already registered for the protocol
   */
  registerL4(protocol: number, handler: L4Handler): void {
    if (this.#l4.has(protocol)) {
      throw new Error(`Cannot register an L4 handler for protocol ${protocol}: already registered`);
    }
    this.#l4.set(protocol, handler);
    this.#l4List.push(handler);
  }

  /**
   * Handles one guest frame; never throws. With `--trace`, one line per frame. A
   * scattered frame stays so only when it is a TCP segment over IPv4 or IPv6 (no
   * extension header) whose checksum is left to us (nothing reads its payload) and
   * whose headers are all in the bytes copied; every other frame is gathered first.
   */
  handleFrame(
    frame: Uint8Array,
    now: number,
    info: number = FrameInfo.None,
    scattered?: ScatteredFrame,
  ): void {
    this.#checksumPending = (info & FrameInfo.ChecksumPending) !== 0;
    this.#segmented = info & (FrameInfo.SegmentedTcp4 | FrameInfo.SegmentedTcp6);
    this.#scattered = null;
    if (scattered !== undefined) {
      if (
        this.#checksumPending && !this.#log.enabled("trace") &&
        tcpHeadersCopied(frame, scattered)
      ) {
        this.#scattered = scattered;
      } else {
        scattered.gather();
      }
    }
    if (this.#log.enabled("trace")) this.#log.trace(`from guest: ${describeFrame(frame)}`);
    this.#bytesFromGuest[0] += frame.length;
    try {
      this.#handle(frame, now);
    } catch (error) {
      this.#count(this.drops, "exception");
      this.#errorLog.write(now, `network stack: exception while handling a frame: ${error}`);
    }
  }

  /** Flushes replies and lets the L4 handlers flush theirs. */
  endOfBatch(now: number): void {
    const handlers = this.#l4List;
    for (let i = 0; i < handlers.length; i++) {
      const h = handlers[i];
      if (h.endOfBatch === undefined) continue;
      try {
        h.endOfBatch(now);
      } catch (error) {
        this.#handlerThrew(now, error);
      }
    }
    this.sender.flush();
  }

  /** Starts sending over `link`; sends an unsolicited RA soon. */
  linkUp(link: GuestLink, now: number): void {
    this.sender.setLink(link);
    const mtu = this.sender.mtuFor(this.plan.mtu || DEFAULT_MTU);
    if (link.deviceMtu > 0) {
      this.#log.info(
        `guest device MTU ${link.deviceMtu}: DHCP, NDP and TCP use MTU ${mtu}` +
          (link.tcpSegmentation !== 0 ? ", with TCP segmentation offload toward the guest" : ""),
      );
    }
    link.onWritable((t) => {
      for (const h of this.#l4.values()) this.#guard(t, () => h.linkWritable?.(t));
      this.sender.flush();
    });
    this.ndp?.linkUp(now);
    for (const h of this.#l4.values()) this.#guard(now, () => h.linkUp?.(now));
  }

  /** Stops sending; flows stay. Logs {@link describeCounters} at debug level. */
  linkDown(now: number): void {
    if (this.#log.enabled("debug")) this.#log.debug(this.describeCounters());
    this.sender.setLink(null);
    for (const h of this.#l4.values()) this.#guard(now, () => h.linkDown?.(now));
  }

  /** The front-end left (after linkDown): tells the translators. */
  frontendGone(now: number): void {
    for (const h of this.#l4.values()) this.#guard(now, () => h.frontendGone?.(now));
  }

  /**
   * One line summing up what the stack has seen: frames accepted and dropped by kind,
   * and each translator's counters (those that are not zero).
   */
  describeCounters(): string {
    const parts = [
      `accepted ${formatCounts(this.accepted)}`,
      `dropped ${formatCounts(this.drops)}`,
    ];
    for (const [protocol, handler] of this.#l4) {
      if (handler.counters === undefined) continue;
      parts.push(
        `${L4_NAMES[protocol] ?? `protocol ${protocol}`} ${formatCounts(handler.counters)}`,
      );
    }
    return `network stack: ${parts.join("; ")}`;
  }

  /**
   * Every flow of the translators and of ICMP echo, as plain objects, for a
   * statistics dump (SIGUSR1, `--stats`).
   * @param now the clock's current time, for ages
   */
  describeFlows(now: number): FlowInfo[] {
    const flows: FlowInfo[] = [];
    for (const handler of this.#l4.values()) flows.push(...(handler.describeFlows?.(now) ?? []));
    flows.push(...(this.icmpEcho?.describeFlows(now) ?? []));
    return flows;
  }

  /** How many TCP and UDP flows the translators hold now (cheap: the tables' sizes). */
  flowCount(): number {
    let n = 0;
    for (const handler of this.#l4.values()) n += handler.flowCount?.() ?? 0;
    return n;
  }

  /** Each translator's counters by protocol name ("tcp", "udp"), for statistics. */
  protocolCounters(): Record<string, object> {
    const out: Record<string, object> = {};
    for (const [protocol, handler] of this.#l4) {
      if (handler.counters !== undefined) {
        out[L4_NAMES[protocol] ?? `protocol ${protocol}`] = handler.counters;
      }
    }
    if (this.icmpEcho !== null) out.icmp = this.icmpEcho.counters;
    return out;
  }

  /** Runs due timers (unsolicited RAs, ping socket idle timeouts, L4 timers). */
  tick(now: number): void {
    this.#guard(now, () => this.ndp?.tick(now));
    this.#guard(now, () => this.icmpEcho?.tick(now));
    for (const h of this.#l4.values()) this.#guard(now, () => h.tick?.(now));
    this.sender.flush();
  }

  /** Earliest time {@link tick} needs to run (Infinity when nothing is pending). */
  nextTimerAt(): number {
    let t = Math.min(this.ndp?.nextTimerAt() ?? Infinity, this.icmpEcho?.nextTimerAt() ?? Infinity);
    // Asked after every batch: the handlers' array, no Map iterator.
    const handlers = this.#l4List;
    for (let i = 0; i < handlers.length; i++) {
      t = Math.min(t, handlers[i].nextTimerAt?.() ?? Infinity);
    }
    return t;
  }

  /** Closes host resources owned by the stack (ping sockets). */
  close(): void {
    this.icmpEcho?.close();
  }

  #guard(now: number, fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.#handlerThrew(now, error);
    }
  }

  /** Counts and logs (rate-limited) an exception a handler threw. */
  #handlerThrew(now: number, error: unknown): void {
    this.#count(this.drops, "exception");
    this.#errorLog.write(now, `network stack: exception in a handler: ${error}`);
  }

  #count(table: Record<string, number>, key: string): void {
    table[key] = (table[key] ?? 0) + 1;
  }

  #drop(reason: string, now: number): void {
    this.#count(this.drops, reason);
    if (this.#log.enabled("debug")) this.#dropLog.write(now, `dropped guest frame: ${reason}`);
  }

  #handle(frame: Uint8Array, now: number): void {
    const eth = this.#eth;
    const st = parseEthernet(frame, eth);
    if (st !== "ok") return this.#drop(st, now);
    const src = eth.src;
    if (!isMulticastMac(src) && src !== this.sender.ourMac && src !== 0) {
      this.sender.guestMac = src;
    }
    const end = frame.length;
    // A large frame the guest left for the device to segment must be TCP over the IP
    // version its gso_type names (virtio 1.2 §5.1.6.2); the IP layers check the rest.
    if (
      this.#segmented !== 0 &&
      eth.etherType !==
        (this.#segmented === FrameInfo.SegmentedTcp4 ? ETHERTYPE_IPV4 : ETHERTYPE_IPV6)
    ) {
      return this.#drop("gso-ip-version-mismatch", now);
    }
    switch (eth.etherType) {
      case ETHERTYPE_ARP: {
        if (!this.arp) return this.#drop("arp-ipv4-disabled", now);
        const s = this.arp.handle(frame, ETH_HEADER_LENGTH, end);
        if (s !== "ok") return this.#drop(s, now);
        this.#count(this.accepted, "arp");
        return;
      }
      case ETHERTYPE_IPV4:
        return this.#handleIpv4(frame, end, now);
      case ETHERTYPE_IPV6:
        return this.#handleIpv6(frame, end, now);
      default:
        return this.#drop("unknown-ethertype", now);
    }
  }

  #handleIpv4(frame: Uint8Array, end: number, now: number): void {
    if (!this.plan.ipv4) return this.#drop("ipv4-disabled", now);
    const ip = this.#ip4;
    const st = parseIpv4Header(frame, ETH_HEADER_LENGTH, end, ip);
    if (st !== "ok") return this.#drop(st, now);
    if (ip.isFragment) return this.#drop("ipv4-fragment", now);
    if (this.#segmented !== 0 && ip.protocol !== IPPROTO_TCP) return this.#drop("gso-not-tcp", now);
    if (ip.src !== 0 && ip.src !== 0xffffffff && this.sender.guestIpv4Seen !== ip.src) {
      this.sender.guestIpv4Seen = ip.src;
    }
    const l4End = ip.payloadOffset + ip.payloadLength;
    switch (ip.protocol) {
      case IPPROTO_UDP: {
        const u = this.#udp;
        const us = parseUdp(frame, ip.payloadOffset, l4End, u);
        if (us !== "ok") return this.#drop(us, now);
        if (u.dstPort === DHCP_SERVER_PORT && u.srcPort === DHCP_CLIENT_PORT) {
          if (!this.dhcp) return this.#drop("dhcp-disabled", now);
          if (
            !this.#checksumPending &&
            !udpChecksumOkV4(frame, ip.payloadOffset, u.length, ip.src, ip.dst)
          ) {
            return this.#drop("udp-bad-checksum", now);
          }
          const ds = this.dhcp.handle(frame, u.payloadOffset, u.payloadLength, now);
          if (ds !== "ok") return this.#drop(ds, now);
          this.#count(this.accepted, "dhcp");
          return;
        }
        return this.#toL4(4, ip.protocol, frame, ip.payloadOffset, ip.payloadLength, now);
      }
      case IPPROTO_ICMP: {
        if (!this.icmpEcho) return this.#drop("icmp-echo-disabled", now);
        const s = this.icmpEcho.handleIpv4(frame, ip, now);
        if (s !== "ok") return this.#drop(s, now);
        this.#count(this.accepted, "icmp");
        return;
      }
      default:
        return this.#toL4(4, ip.protocol, frame, ip.payloadOffset, ip.payloadLength, now);
    }
  }

  #handleIpv6(frame: Uint8Array, end: number, now: number): void {
    if (!this.plan.ipv6) return this.#drop("ipv6-disabled", now);
    const ip = this.#ip6;
    const st = parseIpv6Header(frame, ETH_HEADER_LENGTH, end, ip);
    if (st !== "ok") return this.#drop(st, now);
    if (ip.isFragment) return this.#drop("ipv6-fragment", now);
    if (this.#segmented !== 0 && ip.protocol !== IPPROTO_TCP) return this.#drop("gso-not-tcp", now);
    const src = ip.src;
    if (src[0] !== 0xff && !ipv6IsUnspecified(src)) this.sender.noteGuestIpv6(src);
    const l4End = ip.l4Offset + ip.l4Length;
    switch (ip.protocol) {
      case IPPROTO_ICMPV6:
        return this.#handleIcmpv6(frame, l4End, now);
      case IPPROTO_UDP: {
        const u = this.#udp;
        const us = parseUdp(frame, ip.l4Offset, l4End, u);
        if (us !== "ok") return this.#drop(us, now);
        if (u.dstPort === DHCPV6_SERVER_PORT) {
          if (!this.dhcpv6) return this.#drop("dhcpv6-disabled", now);
          if (
            !this.#checksumPending && !udpChecksumOkV6(frame, ip.l4Offset, u.length, ip.src, ip.dst)
          ) {
            return this.#drop("udp-bad-checksum", now);
          }
          const ds = this.dhcpv6.handle(frame, ip, u, now);
          if (ds !== "ok") return this.#drop(ds, now);
          this.#count(this.accepted, "dhcpv6");
          return;
        }
        return this.#toL4(6, ip.protocol, frame, ip.l4Offset, ip.l4Length, now);
      }
      default:
        return this.#toL4(6, ip.protocol, frame, ip.l4Offset, ip.l4Length, now);
    }
  }

  #handleIcmpv6(frame: Uint8Array, l4End: number, now: number): void {
    const ip = this.#ip6;
    const ic = this.#icmp;
    const s = parseIcmp(frame, ip.l4Offset, l4End, ic);
    if (s !== "ok") return this.#drop(s, now);
    if (
      !this.#checksumPending && !icmpv6ChecksumOk(frame, ip.l4Offset, ip.l4Length, ip.src, ip.dst)
    ) {
      return this.#drop("icmpv6-bad-checksum", now);
    }
    switch (ic.type) {
      case Icmpv6Type.RouterSolicitation:
      case Icmpv6Type.NeighborSolicitation: {
        if (!this.ndp) return this.#drop("ndp-disabled", now);
        const ns = this.ndp.handle(frame, ip, ic, now);
        if (ns !== "ok") return this.#drop(ns, now);
        this.#count(this.accepted, "ndp");
        return;
      }
      case Icmpv6Type.EchoRequest: {
        if (!this.icmpEcho) return this.#drop("icmp-echo-disabled", now);
        const es = this.icmpEcho.handleIpv6(frame, ip, now);
        if (es !== "ok") return this.#drop(es, now);
        this.#count(this.accepted, "icmpv6");
        return;
      }
      default:
        // MLD reports, NAs, RAs from the guest, echo replies...: nothing to do.
        this.#count(this.accepted, "icmpv6-ignored");
        return;
    }
  }

  #toL4(
    family: 4 | 6,
    protocol: number,
    frame: Uint8Array,
    l4Offset: number,
    l4Length: number,
    now: number,
  ): void {
    const h = this.#l4.get(protocol);
    if (!h) {
      return this.#drop(family === 4 ? "ipv4-unhandled-protocol" : "ipv6-unhandled-protocol", now);
    }
    // Multicast and broadcast have no host-socket equivalent: not for the translators.
    if (family === 4) {
      const dst = this.#ip4.dst;
      if (dst >>> 28 >= 14) return this.#drop("ipv4-multicast-destination", now);
      if (dst === this.#subnetBroadcast4) return this.#drop("ipv4-broadcast-destination", now);
    } else if (this.#ip6.dst[0] === 0xff) {
      return this.#drop("ipv6-multicast-destination", now);
    }
    const p = this.#packet;
    p.family = family;
    p.protocol = protocol;
    if (family === 4) {
      p.src4 = this.#ip4.src;
      p.dst4 = this.#ip4.dst;
      p.ttl = this.#ip4.ttl;
      p.tos = this.#ip4.tos;
    } else {
      p.src4 = 0;
      p.dst4 = 0;
      p.src6.set(this.#ip6.src);
      p.dst6.set(this.#ip6.dst);
      p.ttl = this.#ip6.hopLimit;
      p.tos = this.#ip6.trafficClass;
    }
    p.frame = frame;
    p.ipOffset = ETH_HEADER_LENGTH;
    p.l4Offset = l4Offset;
    p.l4Length = l4Length;
    p.checksumPending = this.#checksumPending;
    p.scattered = protocol === IPPROTO_TCP ? this.#scattered : null;
    p.udp = protocol === IPPROTO_UDP ? this.#udp : null;
    this.#count(this.accepted, protocol === IPPROTO_UDP ? "udp" : protocol === 6 ? "tcp" : "other");
    h.handlePacket(p, now);
  }
}

/** The longest Ethernet, IP (IPv4 with options, or IPv6) and TCP headers. */
const TCP_HEADERS_MAX_BYTES = ETH_HEADER_LENGTH + IPV4_HEADER_MAX + TCP_HEADER_MAX;

/** Ethernet type field, IPv4 IHL/protocol and IPv6 next-header positions in a frame. */
const ETHERTYPE_AT = 12;
const IPV4_IHL_AT = ETH_HEADER_LENGTH;
const IPV4_PROTOCOL_AT = ETH_HEADER_LENGTH + 9;
const IPV6_NEXT_HEADER_AT = ETH_HEADER_LENGTH + 6;

/**
 * Whether the first `filled` bytes of `frame` hold an IPv4 TCP segment's or an IPv6
 * one's (TCP straight after the fixed header) Ethernet, IP and TCP headers, options
 * included (as long as its data offset says).
 */
function tcpHeadersWithin(frame: Uint8Array, filled: number): boolean {
  if (filled < ETH_HEADER_LENGTH + 1) return false;
  const etherType = (frame[ETHERTYPE_AT] << 8) | frame[ETHERTYPE_AT + 1];
  let tcpAt: number;
  if (etherType === ETHERTYPE_IPV4) {
    if (filled <= IPV4_PROTOCOL_AT || frame[IPV4_PROTOCOL_AT] !== IPPROTO_TCP) return false;
    tcpAt = ETH_HEADER_LENGTH + (frame[IPV4_IHL_AT] & 0x0f) * 4;
  } else if (etherType === ETHERTYPE_IPV6) {
    if (filled <= IPV6_NEXT_HEADER_AT || frame[IPV6_NEXT_HEADER_AT] !== IPPROTO_TCP) return false;
    tcpAt = ETH_HEADER_LENGTH + IPV6_HEADER_LENGTH;
  } else {
    return false;
  }
  if (tcpAt + TCP_DATA_OFFSET >= filled) return false;
  return tcpAt + (frame[tcpAt + TCP_DATA_OFFSET] >> 4) * 4 <= filled;
}

/**
 * Whether `scattered`'s Ethernet, IP and TCP headers are in `frame`: among the bytes
 * copied already, or once the longest headers are (the transport copied only part).
 */
function tcpHeadersCopied(frame: Uint8Array, scattered: ScatteredFrame): boolean {
  if (tcpHeadersWithin(frame, scattered.filled)) return true;
  // With the longest headers' bytes copied already, more would not help (not TCP).
  if (scattered.filled >= TCP_HEADERS_MAX_BYTES) return false;
  scattered.gather(TCP_HEADERS_MAX_BYTES);
  return tcpHeadersWithin(frame, scattered.filled);
}

/** Names of the translators' protocols in {@link NetworkStack.describeCounters}. */
const L4_NAMES: Readonly<Record<number, string>> = {
  [IPPROTO_TCP]: "tcp",
  [IPPROTO_UDP]: "udp",
};

/** "name N, name N" for the non-zero numeric fields of `counts`, or "nothing". */
function formatCounts(counts: object): string {
  const parts: string[] = [];
  for (const [name, value] of Object.entries(counts)) {
    if (typeof value === "number" && value !== 0) parts.push(`${name} ${value}`);
  }
  return parts.length === 0 ? "nothing" : parts.join(", ");
}
