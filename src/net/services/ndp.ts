/**
 * Neighbor Discovery (RFC 4861) toward the guest: Neighbor Solicitations are
 * answered with our MAC for every target except the guest's own addresses (as ARP
 * does for IPv4, so that the guest sends everything to us, the gateway and our
 * link-local router address included); Router Solicitations are answered with a
 * Router Advertisement carrying the /64 prefix (on-link, autonomous), the MTU, the
 * DNS servers (RDNSS) and search list (DNSSL, RFC 8106) and our link-layer address;
 * unsolicited RAs go out at randomized intervals driven by {@link NdpResponder.tick}.
 * Duplicate Address Detection probes (NS from ::) are left alone. Each exchange is
 * one debug line.
 *
 * @module
 */

import { ipv6Equal, ipv6IsMulticast, ipv6IsUnspecified, writeMac } from "../wire/address.ts";
import { encodeDomainList } from "../wire/dns_name.ts";
import type { GuestSender } from "../guest_sender.ts";
import { L4_OFFSET_V6 } from "../guest_sender.ts";
import type { NetworkPlan } from "../plan/network_plan.ts";
import { buildIcmp, type IcmpHeader, Icmpv6Type } from "../wire/icmp.ts";
import type { Ipv6Header } from "../wire/ipv6.ts";
import { log as defaultLog, type Logger } from "../../log/logger.ts";
import { IPPROTO_ICMPV6 } from "../wire/ip_protocol.ts";
import { ipv6ToString } from "../../../ffi/ip_address_text.ts";

/** Hop limit of every ND message; received ones must carry it too (RFC 4861 §6.1.1, §7.1.1). */
export const NDP_HOP_LIMIT = 255;
/** Offset of the target address in NS/NA (RFC 4861 §4.3, §4.4). */
export const NS_TARGET = 8;
/** Length of NS/NA before the options. */
export const NS_HEADER_LENGTH = 24;
/** Length of RS before the options (RFC 4861 §4.1). */
export const RS_HEADER_LENGTH = 8;
/** Offset of the current hop limit in an RA (RFC 4861 §4.2). */
export const RA_CUR_HOP_LIMIT = 4;
/** Offset of the M/O flags in an RA. */
export const RA_FLAGS = 5;
/** Offset of the router lifetime in an RA. */
export const RA_ROUTER_LIFETIME = 6;
/** Offset of the reachable time in an RA. */
export const RA_REACHABLE_TIME = 8;
/** Offset of the retransmission timer in an RA. */
export const RA_RETRANS_TIMER = 12;
/** Length of an RA before the options. */
export const RA_HEADER_LENGTH = 16;
/** RA flag: addresses via DHCPv6 ("managed", RFC 4861 §4.2). */
export const RA_FLAG_MANAGED = 0x80;
/** RA flag: other configuration via DHCPv6. */
export const RA_FLAG_OTHER = 0x40;
/** NA flag: sender is a router (RFC 4861 §4.4). */
export const NA_FLAG_ROUTER = 0x80;
/** NA flag: response to a solicitation. */
export const NA_FLAG_SOLICITED = 0x40;
/** NA flag: override an existing cache entry. */
export const NA_FLAG_OVERRIDE = 0x20;

/** ND option types (RFC 4861 §4.6, RFC 8106 §5). */
export const NdOption = {
  SourceLinkLayerAddress: 1,
  TargetLinkLayerAddress: 2,
  PrefixInformation: 3,
  Mtu: 5,
  Rdnss: 25,
  Dnssl: 31,
} as const;

/** Prefix option flag: on-link (RFC 4861 §4.6.2). */
export const PREFIX_FLAG_ON_LINK = 0x80;
/** Prefix option flag: usable for SLAAC. */
export const PREFIX_FLAG_AUTONOMOUS = 0x40;
/** Lifetime meaning "forever" (RFC 4861 §4.6.2). */
export const INFINITE_LIFETIME = 0xffffffff;
/** Router lifetime we advertise, the largest allowed (RFC 8319 §4). */
export const ROUTER_LIFETIME = 65535;
/** Unsolicited RA interval bounds (RFC 4861 §6.2.1 defaults MaxRtrAdvInterval 600 s). */
export const MAX_RTR_ADV_INTERVAL_MS = 600_000;
/** MinRtrAdvInterval default 0.33 × MaxRtrAdvInterval. */
export const MIN_RTR_ADV_INTERVAL_MS = 198_000;
/** First advertisements after the link comes up (RFC 4861 §10 MAX_INITIAL_RTR_ADVERTISEMENTS). */
export const MAX_INITIAL_RTR_ADVERTISEMENTS = 3;
/** Longest interval between initial advertisements (MAX_INITIAL_RTR_ADVERT_INTERVAL 16 s). */
export const MAX_INITIAL_RTR_ADVERT_INTERVAL_MS = 16_000;

/** All-nodes multicast address ff02::1 (RFC 4291 §2.7.1). */
export const ALL_NODES = new Uint8Array([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);

/** Result of {@link NdpResponder.handle}. */
export type NdpStatus =
  | "ok"
  | "ndp-bad-hop-limit"
  | "ndp-bad-code"
  | "ndp-truncated"
  | "ndp-bad-option";

/** Counters of the NDP responder. */
export interface NdpCounters {
  neighborAdvertisements: number;
  solicitedRouterAdvertisements: number;
  unsolicitedRouterAdvertisements: number;
  ignored: number;
}

/** Answers the guest's NS/RS and sends periodic RAs. */
export class NdpResponder {
  /** Event counters for diagnostics. */
  readonly counters: NdpCounters = {
    neighborAdvertisements: 0,
    solicitedRouterAdvertisements: 0,
    unsolicitedRouterAdvertisements: 0,
    ignored: 0,
  };
  readonly #sender: GuestSender;
  readonly #log: Logger;
  /** What an RA carries, for the debug lines. */
  readonly #raSummary: string;
  readonly #router: Uint8Array;
  readonly #guestAddress: Uint8Array | null;
  readonly #enableRa: boolean;
  readonly #random: () => number;
  /** Options of every RA after the fixed header, pre-encoded. */
  readonly #raOptions: Uint8Array;
  /** The plan's MTU (0: no MTU option). */
  readonly #configuredMtu: number;
  /** Where the MTU option's value sits in {@link #raOptions} (-1: no MTU option). */
  #mtuValueAt = -1;
  readonly #raFlags: number;
  readonly #target = new Uint8Array(16);
  readonly #dst = new Uint8Array(16);
  #nextRaAt = Infinity;
  #initialLeft = 0;

  /**
   * @param random uniform [0, 1) generator for the unsolicited RA interval
   * @throws Error when the plan has no IPv6 configuration
   */
  constructor(
    plan: NetworkPlan,
    sender: GuestSender,
    random: () => number = Math.random,
    logger: Logger = defaultLog,
  ) {
    const v6 = plan.ipv6;
    if (!v6) throw new Error("Cannot start NDP: the plan has no IPv6 configuration");
    this.#sender = sender;
    this.#log = logger;
    const prefix = new Uint8Array(16);
    if (v6.address) prefix.set(v6.address.subarray(0, 8));
    this.#raSummary = (v6.address ? `prefix ${ipv6ToString(prefix)}/64` : "no prefix") +
      `, router ${ipv6ToString(v6.routerLinkLocal)}` + (plan.mtu ? `, MTU ${plan.mtu}` : "");
    this.#router = v6.routerLinkLocal;
    this.#guestAddress = v6.address;
    this.#enableRa = plan.enableRa;
    this.#random = random;
    this.#raFlags = plan.enableDhcpv6 ? RA_FLAG_MANAGED | RA_FLAG_OTHER : 0;
    const opts: number[] = [];
    if (v6.address) {
      // Prefix Information (RFC 4861 §4.6.2): type, len 4, prefix length, L|A, valid,
      // preferred, reserved, prefix.
      opts.push(NdOption.PrefixInformation, 4, 64, PREFIX_FLAG_ON_LINK | PREFIX_FLAG_AUTONOMOUS);
      opts.push(...be32(INFINITE_LIFETIME), ...be32(INFINITE_LIFETIME), 0, 0, 0, 0);
      opts.push(...v6.address.subarray(0, 8), 0, 0, 0, 0, 0, 0, 0, 0);
    }
    this.#configuredMtu = plan.mtu;
    if (plan.mtu) {
      // RFC 4861 §4.6.4: type, length 1, reserved u16, MTU u32 (rewritten per RA: the
      // device's MTU may bound it, see #sendRa).
      this.#mtuValueAt = opts.length + 4;
      opts.push(NdOption.Mtu, 1, 0, 0, ...be32(plan.mtu));
    }
    if (plan.advertiseDns && v6.dns.length > 0) {
      // RDNSS (RFC 8106 §5.1): type, len 1+2n, reserved, lifetime, addresses.
      opts.push(NdOption.Rdnss, 1 + 2 * v6.dns.length, 0, 0, ...be32(INFINITE_LIFETIME));
      for (const a of v6.dns) opts.push(...a);
    }
    if (plan.advertiseSearch && plan.search.length > 0) {
      const names = encodeDomainList(plan.search);
      // DNSSL (RFC 8106 §5.2): padded with zeros to a multiple of 8 bytes; length ≤ 255 units.
      const len = Math.ceil((8 + names.length) / 8);
      if (names.length > 0 && len <= 255) {
        opts.push(NdOption.Dnssl, len, 0, 0, ...be32(INFINITE_LIFETIME), ...names);
        while (opts.length % 8 !== 0) opts.push(0);
      }
    }
    const mac = new Uint8Array(6);
    writeMac(mac, 0, sender.ourMac);
    opts.push(NdOption.SourceLinkLayerAddress, 1, ...mac);
    this.#raOptions = new Uint8Array(opts);
  }

  /** The link came up: schedule the initial unsolicited RAs, the first one at once. */
  linkUp(now: number): void {
    if (!this.#enableRa) return;
    this.#initialLeft = MAX_INITIAL_RTR_ADVERTISEMENTS;
    this.#nextRaAt = now;
  }

  /** Sends an unsolicited RA when one is due. */
  tick(now: number): void {
    if (!this.#enableRa || now < this.#nextRaAt) return;
    if (this.#sender.link === null) {
      this.#nextRaAt = Infinity;
      return;
    }
    this.#sendRa(ALL_NODES);
    this.counters.unsolicitedRouterAdvertisements++;
    if (this.#log.enabled("debug")) {
      this.#log.debug(`NDP: sending unsolicited RA to ff02::1: ${this.#raSummary}`);
    }
    if (this.#initialLeft > 0) this.#initialLeft--;
    const r = this.#random();
    const interval = this.#initialLeft > 0
      ? MAX_INITIAL_RTR_ADVERT_INTERVAL_MS * (0.5 + r / 2)
      : MIN_RTR_ADV_INTERVAL_MS + r * (MAX_RTR_ADV_INTERVAL_MS - MIN_RTR_ADV_INTERVAL_MS);
    this.#nextRaAt = now + interval;
  }

  /** When {@link tick} must run next (Infinity when no RA is scheduled). */
  nextTimerAt(): number {
    return this.#nextRaAt;
  }

  /**
   * Handles an RS or NS whose ICMPv6 header (checksum already verified) is `icmp`.
   * @returns "ok" when answered or deliberately ignored, else why it was dropped
   */
  handle(frame: Uint8Array, ip: Ipv6Header, icmp: IcmpHeader, _now: number): NdpStatus {
    if (ip.hopLimit !== NDP_HOP_LIMIT) return "ndp-bad-hop-limit";
    if (icmp.code !== 0) return "ndp-bad-code";
    const start = ip.l4Offset, end = ip.l4Offset + ip.l4Length;
    if (icmp.type === Icmpv6Type.RouterSolicitation) {
      if (end - start < RS_HEADER_LENGTH) return "ndp-truncated";
      if (!optionsValid(frame, start + RS_HEADER_LENGTH, end)) return "ndp-bad-option";
      if (!this.#enableRa) {
        this.counters.ignored++;
        if (this.#log.enabled("debug")) {
          this.#log.debug(`NDP: RS from ${ipv6ToString(ip.src)} ignored (--no-ra)`);
        }
        return "ok";
      }
      // From :: (no address yet) the answer goes to all nodes (RFC 4861 §6.2.6).
      const dst = ipv6IsUnspecified(ip.src) ? ALL_NODES : ip.src;
      if (this.#log.enabled("debug")) {
        this.#log.debug(
          `NDP: RS from ${ipv6ToString(ip.src)}, sending RA to ${ipv6ToString(dst)}: ` +
            this.#raSummary,
        );
      }
      this.#sendRa(dst);
      this.counters.solicitedRouterAdvertisements++;
      return "ok";
    }
    // Neighbor Solicitation.
    if (end - start < NS_HEADER_LENGTH) return "ndp-truncated";
    const target = this.#target;
    for (let i = 0; i < 16; i++) target[i] = frame[start + NS_TARGET + i];
    if (ipv6IsMulticast(target)) return "ndp-bad-option";
    if (!optionsValid(frame, start + NS_HEADER_LENGTH, end)) return "ndp-bad-option";
    if (ipv6IsUnspecified(ip.src) || this.#isGuestAddress(target)) {
      // DAD probe, or a question about the guest's own address: not ours to answer.
      this.counters.ignored++;
      if (this.#log.enabled("debug")) {
        this.#log.debug(
          `NDP: NS from ${ipv6ToString(ip.src)} for ${ipv6ToString(target)} ignored (` +
            (ipv6IsUnspecified(ip.src) ? "duplicate address detection" : "the guest's own") + ")",
        );
      }
      return "ok";
    }
    if (this.#log.enabled("debug")) {
      this.#log.debug(
        `NDP: NS from ${ipv6ToString(ip.src)} for ${ipv6ToString(target)}, sending NA`,
      );
    }
    this.#dst.set(ip.src);
    this.#sendNa(target, this.#dst);
    this.counters.neighborAdvertisements++;
    return "ok";
  }

  #isGuestAddress(a: Uint8Array): boolean {
    const s = this.#sender;
    return (this.#guestAddress !== null && ipv6Equal(a, 0, this.#guestAddress, 0)) ||
      (s.guestIpv6Seen !== null && ipv6Equal(a, 0, s.guestIpv6Seen, 0)) ||
      (s.guestIpv6LinkLocalSeen !== null && ipv6Equal(a, 0, s.guestIpv6LinkLocalSeen, 0));
  }

  #sendNa(target: Uint8Array, dst: Uint8Array): void {
    const b = this.#sender.buffer;
    const o = L4_OFFSET_V6;
    // RFC 4861 §4.4: the flags are the top bits of the 32-bit field after the checksum.
    const naFlags = NA_FLAG_ROUTER | NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE;
    buildIcmp(b, o, Icmpv6Type.NeighborAdvertisement, 0, (naFlags << 24) >>> 0);
    b.set(target, o + NS_TARGET);
    b[o + 24] = NdOption.TargetLinkLayerAddress;
    b[o + 25] = 1;
    writeMac(b, o + 26, this.#sender.ourMac);
    this.#sender.sendIpv6(IPPROTO_ICMPV6, this.#router, dst, 32, { hopLimit: NDP_HOP_LIMIT });
  }

  #sendRa(dst: Uint8Array): void {
    const b = this.#sender.buffer;
    const o = L4_OFFSET_V6;
    buildIcmp(b, o, Icmpv6Type.RouterAdvertisement, 0, 0);
    b[o + RA_CUR_HOP_LIMIT] = 64;
    b[o + RA_FLAGS] = this.#raFlags;
    b[o + RA_ROUTER_LIFETIME] = ROUTER_LIFETIME >> 8;
    b[o + RA_ROUTER_LIFETIME + 1] = ROUTER_LIFETIME & 0xff;
    b.fill(0, o + RA_REACHABLE_TIME, o + RA_HEADER_LENGTH);
    b.set(this.#raOptions, o + RA_HEADER_LENGTH);
    if (this.#mtuValueAt >= 0) {
      const at = o + RA_HEADER_LENGTH + this.#mtuValueAt;
      const mtu = this.#sender.mtuFor(this.#configuredMtu);
      b[at] = mtu >>> 24;
      b[at + 1] = (mtu >>> 16) & 0xff;
      b[at + 2] = (mtu >>> 8) & 0xff;
      b[at + 3] = mtu & 0xff;
    }
    this.#sender.sendIpv6(
      IPPROTO_ICMPV6,
      this.#router,
      dst,
      RA_HEADER_LENGTH + this.#raOptions.length,
      { hopLimit: NDP_HOP_LIMIT },
    );
  }
}

function be32(v: number): number[] {
  return [v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
}

/** Whether the ND options in `buf[p, end)` are well-formed (no zero length, no overrun). */
export function optionsValid(buf: Uint8Array, p: number, end: number): boolean {
  while (p < end) {
    if (p + 2 > end) return false;
    const len = buf[p + 1] * 8;
    if (len === 0 || p + len > end) return false; // RFC 4861 §4.6: length 0 is invalid
    p += len;
  }
  return true;
}
