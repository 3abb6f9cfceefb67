/**
 * Address translation between what the guest sees and what the host's sockets use
 * (passt's "fwd" rules):
 *
 * - outbound, guest → host: the gateway address (or `--map-host-loopback ADDR`)
 *   reaches the host's 127.0.0.1 / ::1 unless `--no-map-gw`; `--map-guest-addr ADDR`
 *   reaches the host's own address; the advertised DNS address port 53 goes to the
 *   host's resolver (dns_forward.ts); anything else is connected to as is.
 * - inbound, host → guest: a loopback peer is shown as the mapped loopback address
 *   (the gateway by default); a peer using the host's own address is shown as the
 *   `--map-guest-addr` address (else the gateway); others as themselves.
 *
 * @module
 */

import { ipv6Equal, ipv6IsLoopback, readIpv4, writeIpv4 } from "../wire/address.ts";
import type { NetworkPlan } from "./network_plan.ts";
import {
  DNS_PORT,
  type DnsForwardOptions,
  type DnsRule,
  dnsRule4,
  dnsRule6,
} from "./dns_forward.ts";
import { ipv4ToString, ipv6ToString, parseIpv4, parseIpv6 } from "../../../ffi/ip_address_text.ts";

/** Translation options, the daemon maps them from the command line (src/daemon/forward_options.ts). */
export interface ForwardOptions extends DnsForwardOptions {
  /** `--map-host-loopback` for IPv4: undefined/null = the gateway, "none" = disabled. */
  mapHostLoopback4?: string | null;
  /** `--map-host-loopback` for IPv6. */
  mapHostLoopback6?: string | null;
  /** `--map-guest-addr` for IPv4: guest-side address reaching the host's own address. */
  mapGuestAddr4?: string | null;
  /** `--map-guest-addr` for IPv6. */
  mapGuestAddr6?: string | null;
  /** `--no-map-gw`: the gateway does not reach the host's loopback. */
  noMapGw?: boolean;
  /** `-o` for IPv4: source address of outbound sockets. */
  outbound4?: string | null;
  /** `-o` for IPv6. */
  outbound6?: string | null;
  /** `--outbound-if4`: interface for outbound IPv4 sockets. */
  outboundIf4?: string | null;
  /** `--outbound-if6`. */
  outboundIf6?: string | null;
}

/** Resolved translation rules (binary addresses, looked up per packet). */
export interface ForwardRules {
  /** Gateway announced to the guest (0 without IPv4). */
  gateway4: number;
  /** Address given to the guest / the host's own address (0 without IPv4). */
  guestAddr4: number;
  /** Guest-side address that reaches the host's 127.0.0.1, or null. */
  loopback4: number | null;
  /** Guest-side address that reaches the host's own address, or null. */
  mapGuest4: number | null;
  dns4: DnsRule<number> | null;
  gateway6: Uint8Array | null;
  guestAddr6: Uint8Array | null;
  loopback6: Uint8Array | null;
  mapGuest6: Uint8Array | null;
  dns6: DnsRule<Uint8Array> | null;
  /**
   * Outbound source addresses (`-o`) and interfaces (`--outbound-if4/6`): TCP and UDP
   * sockets toward the host bind to them (UDP ones toward the host's loopback do not).
   */
  outbound4: string | null;
  outbound6: string | null;
  outboundIf4: string | null;
  outboundIf6: string | null;
}

function pick4(text: string | null | undefined, fallback: number | null): number | null {
  if (text === "none") return null;
  if (text === undefined || text === null) return fallback;
  return parseIpv4(text);
}

function pick6(
  text: string | null | undefined,
  fallback: Uint8Array | null,
): Uint8Array | null {
  if (text === "none") return null;
  if (text === undefined || text === null) return fallback;
  return parseIpv6(text);
}

/** Resolves the rules from the network plan and the options. */
export function buildForwardRules(plan: NetworkPlan, o: ForwardOptions = {}): ForwardRules {
  const v4 = plan.ipv4;
  const v6 = plan.ipv6;
  const gw4 = v4 ? v4.gateway : 0;
  const gw6 = v6 ? v6.gateway : null;
  return {
    gateway4: gw4,
    guestAddr4: v4 ? v4.address : 0,
    loopback4: v4 ? pick4(o.mapHostLoopback4, o.noMapGw ? null : gw4) : null,
    mapGuest4: v4 ? pick4(o.mapGuestAddr4, null) : null,
    dns4: dnsRule4(plan, o),
    gateway6: gw6,
    guestAddr6: v6?.address ?? null,
    loopback6: v6 ? pick6(o.mapHostLoopback6, o.noMapGw ? null : gw6) : null,
    mapGuest6: v6 ? pick6(o.mapGuestAddr6, null) : null,
    dns6: dnsRule6(plan, o),
    outbound4: o.outbound4 ?? null,
    outbound6: o.outbound6 ?? null,
    outboundIf4: o.outboundIf4 ?? null,
    outboundIf6: o.outboundIf6 ?? null,
  };
}

/** A host-side destination: filled by {@link translateOutbound4} / {@link translateOutbound6}. */
export interface HostTarget {
  /** Address as text (a literal IPv4 or IPv6 address), for logs and permission checks. */
  host: string;
  /**
   * The same address as 4 or 16 bytes for the socket calls: a view of the target's
   * own buffer, overwritten by the next translation (copy it to keep it).
   */
  address: Uint8Array;
  port: number;
  /** Buffer behind {@link address} for IPv4. */
  readonly bytes4: Uint8Array;
  /** Buffer behind {@link address} for IPv6. */
  readonly bytes6: Uint8Array;
}

/** Creates an empty {@link HostTarget}. */
export function newHostTarget(): HostTarget {
  const bytes4 = new Uint8Array(4);
  return { host: "", address: bytes4, port: 0, bytes4, bytes6: new Uint8Array(16) };
}

/** The IPv4 loopback address 127.0.0.1 (RFC 1122 §3.2.1.3). */
const IPV4_LOOPBACK = 0x7f000001;
/** The IPv6 loopback address ::1 (RFC 4291 §2.5.3). */
const IPV6_LOOPBACK: Uint8Array = parseIpv6("::1")!;

/**
 * Where a guest packet to IPv4 `dst` goes on the host, as a number: the host's
 * loopback for the address mapped to it, the guest's own address for the
 * `--map-guest-addr` one, else `dst`. The DNS rule, which depends on the port, is
 * {@link translateOutbound4}'s.
 */
export function outboundAddress4(r: ForwardRules, dst: number): number {
  dst >>>= 0;
  if (r.loopback4 !== null && dst === r.loopback4) return IPV4_LOOPBACK;
  if (r.mapGuest4 !== null && dst === r.mapGuest4) return r.guestAddr4;
  return dst;
}

/**
 * Where a guest packet to IPv6 `dst` goes on the host, like {@link outboundAddress4}:
 * `dst` itself or an address of the rules (shared: do not write to it).
 */
export function outboundAddress6(r: ForwardRules, dst: Uint8Array): Uint8Array {
  if (r.loopback6 && ipv6Equal(dst, 0, r.loopback6, 0)) return IPV6_LOOPBACK;
  if (r.mapGuest6 && r.guestAddr6 && ipv6Equal(dst, 0, r.mapGuest6, 0)) return r.guestAddr6;
  return dst;
}

/** Where a guest packet to `dst`:`port` over IPv4 goes on the host (into `out`). */
export function translateOutbound4(
  r: ForwardRules,
  dst: number,
  port: number,
  out: HostTarget,
): HostTarget {
  if (r.dns4 && port === DNS_PORT && dst >>> 0 === r.dns4.match && r.dns4.targetAddress) {
    return dnsTarget(r.dns4, out);
  }
  const address = outboundAddress4(r, dst);
  out.host = ipv4ToString(address);
  out.address = out.bytes4;
  writeIpv4(out.bytes4, 0, address);
  out.port = port;
  return out;
}

/** Where a guest packet to `dst`:`port` over IPv6 goes on the host (into `out`). */
export function translateOutbound6(
  r: ForwardRules,
  dst: Uint8Array,
  port: number,
  out: HostTarget,
): HostTarget {
  if (
    r.dns6 && port === DNS_PORT && ipv6Equal(dst, 0, r.dns6.match, 0) && r.dns6.targetAddress
  ) {
    return dnsTarget(r.dns6, out);
  }
  const address = outboundAddress6(r, dst);
  out.host = ipv6ToString(address);
  out.address = out.bytes6;
  out.bytes6.set(address);
  out.port = port;
  return out;
}

/** Fills `out` with the host resolver of `rule`. */
function dnsTarget(rule: DnsRule<unknown>, out: HostTarget): HostTarget {
  const address = rule.targetAddress!;
  out.host = rule.target;
  out.address = address.byteLength === 4 ? out.bytes4 : out.bytes6;
  out.address.set(address);
  out.port = rule.targetPort;
  return out;
}

/** Where an inbound peer appears to the guest: filled by {@link translateInboundAddress}. */
export interface GuestSideAddress {
  family: 4 | 6;
  addr4: number;
  addr6: Uint8Array;
}

/** Creates an empty {@link GuestSideAddress}. */
export function newGuestSideAddress(): GuestSideAddress {
  return { family: 4, addr4: 0, addr6: new Uint8Array(16) };
}

/** Bytes before the IPv4 address in an IPv4-mapped IPv6 address (RFC 4291 §2.5.5.2). */
const V4_MAPPED_LENGTH = 12;

/** Whether the 16 bytes of `a` are an IPv4-mapped IPv6 address (::ffff:0:0/96). */
function isV4Mapped(a: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (a[i] !== 0) return false;
  return a[10] === 0xff && a[11] === 0xff;
}

/**
 * Translates a host peer address (4 or 16 bytes from a socket) into the source
 * address the guest sees, in `out`. An IPv4-mapped IPv6 peer counts as IPv4.
 * @returns false when the address has no valid length or its family is disabled
 */
export function translateInboundAddress(
  r: ForwardRules,
  address: Uint8Array,
  out: GuestSideAddress,
): boolean {
  const v4 = address.byteLength === 4
    ? 0
    : address.byteLength === 16 && isV4Mapped(address)
    ? V4_MAPPED_LENGTH
    : -1;
  if (v4 >= 0) {
    const a4 = readIpv4(address, v4);
    if (r.gateway4 === 0 && r.guestAddr4 === 0) return false;
    out.family = 4;
    if (a4 >>> 24 === 127) out.addr4 = r.loopback4 ?? r.gateway4;
    else if (a4 === r.guestAddr4) out.addr4 = r.mapGuest4 ?? r.gateway4;
    else out.addr4 = a4;
    return true;
  }
  if (address.byteLength !== 16 || !r.gateway6) return false;
  out.family = 6;
  if (ipv6IsLoopback(address)) out.addr6.set(r.loopback6 ?? r.gateway6);
  else if (r.guestAddr6 && ipv6Equal(address, 0, r.guestAddr6, 0)) {
    out.addr6.set(r.mapGuest6 ?? r.gateway6);
  } else out.addr6.set(address);
  return true;
}

/**
 * The guest-side destination of a forward with a target address (`-t ADDR/PORT:TARGET`,
 * `ADDR/all:TARGET`): what the forward sends to instead of the guest's own address, as
 * passt's fwd_nat_from_host() puts the rule's target address in the guest-side flow.
 */
export interface GuestTarget {
  family: 4 | 6;
  /** The IPv4 target (0 for IPv6). */
  addr4: number;
  /** The IPv6 target (null for IPv4). */
  addr6: Uint8Array | null;
}

/**
 * Parses a forward's target address text (from the port spec).
 * @throws RangeError when the text is no IPv4 or IPv6 address
 */
export function parseGuestTarget(text: string): GuestTarget {
  const a4 = parseIpv4(text);
  if (a4 !== null) return { family: 4, addr4: a4 >>> 0, addr6: null };
  const a6 = parseIpv6(text);
  if (a6 !== null) return { family: 6, addr4: 0, addr6: a6 };
  throw new RangeError(`Cannot forward to "${text}": not an IPv4 or IPv6 address`);
}
