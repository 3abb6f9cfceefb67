/**
 * The "network plan": which addresses, gateway, DNS servers, search list and MTU
 * the guest gets, derived from the host the way passt does it. The guest receives
 * a copy of the host's address on the template interface (the first interface with
 * a default route, or the one named), the host's gateway as its router, and the
 * host's resolvers. A loopback resolver (systemd-resolved's 127.0.0.53, ::1) cannot
 * be reached from the guest, nor can one at the address that maps to the host's
 * loopback (by default the gateway), so the `--dns-forward` address (default: that
 * mapped address, else the gateway) is advertised as DNS server instead and DNS sent
 * there is to be forwarded to that resolver.
 *
 * Discovery reads only /proc/net/route,
 * /proc/net/ipv6_route, /etc/resolv.conf, /sys/class/net/IF/mtu and
 * `Deno.networkInterfaces()`. Every source is injectable for tests.
 *
 * @module
 */

import {
  ipv4MaskToPrefix,
  ipv4PrefixMask,
  ipv6IsLinkLocal,
  ipv6IsLoopback,
  ipv6IsMulticast,
  ipv6IsUnspecified,
  macToString,
  parseMac,
} from "../wire/address.ts";
import { readKernelFile } from "../../../ffi/kernel_file.ts";
import { log } from "../../log/logger.ts";
import { ipv4ToString, ipv6ToString, parseIpv4, parseIpv6 } from "../../../ffi/ip_address_text.ts";

/** Our MAC address unless overridden (passt's default, locally administered). */
export const DEFAULT_OUR_MAC = 0x9a559a559a55;
/** MTU given to the guest unless overridden (passt's default: 65535 minus headroom). */
export const DEFAULT_MTU = 65520;
/** Smallest MTU accepted: IPv4 minimum reassembly size (RFC 791) ... */
export const MIN_MTU_IPV4 = 68;
/** ... and IPv6 minimum link MTU (RFC 8200 §5): below it IPv6 is turned off. */
export const MIN_MTU_IPV6 = 1280;
/** Largest MTU: an Ethernet frame of 65535 bytes minus the 14-byte header. */
export const MAX_MTU = 65521;
/** Guest address in the link-local fallback (RFC 3927 range, as passt's local mode). */
export const FALLBACK_GUEST_V4 = 0xa9fe0201; // 169.254.2.1
/** Gateway address in the link-local fallback. */
export const FALLBACK_GATEWAY_V4 = 0xa9fe0202; // 169.254.2.2
/** Prefix length in the link-local fallback. */
export const FALLBACK_PREFIX_V4 = 16;
/** Our link-local router address when the host's IPv6 gateway is not link-local. */
export const DEFAULT_ROUTER_LL = "fe80::1";
/** Most DNS servers advertised per family. */
export const MAX_DNS_SERVERS = 4;
/** Most search domains taken from resolv.conf. */
export const MAX_SEARCH_DOMAINS = 8;

/** Route flags in /proc/net/route and /proc/net/ipv6_route (linux/route.h). */
const RTF_UP = 0x0001;
const RTF_GATEWAY = 0x0002;
const RTF_REJECT = 0x0200;

/**
 * Overrides of discovered values; the daemon maps the command line onto this
 * (`hostConfigOverrides` in daemon/network_wiring.ts).
 */
export interface HostConfigOverrides {
  /** Template interface name for both families (passt -i). */
  interface?: string;
  /** Template interface for IPv4 only / IPv6 only. */
  interface4?: string;
  interface6?: string;
  /** Guest IPv4 address, optionally with "/prefix" (passt -a). */
  address4?: string;
  /** Guest IPv4 prefix length or netmask (passt -n). */
  prefix4?: number;
  netmask4?: string;
  /** Guest IPv6 address (passt -a). */
  address6?: string;
  /** Gateways (passt -g). */
  gateway4?: string;
  gateway6?: string;
  /** DNS servers advertised to the guest, verbatim (passt -D). */
  dns?: string[];
  /**
   * Guest-side address advertised instead of a loopback host resolver (passt
   * --dns-forward); default: the gateway.
   */
  dnsForward4?: string;
  dnsForward6?: string;
  /**
   * Guest-side address that reaches the host's loopback (passt --map-host-loopback,
   * "none" for none, as after --no-map-gw); default: the gateway. A host resolver at
   * this address is shadowed and, like a loopback one, reached through a DNS forward.
   */
  mapHostLoopback4?: string;
  mapHostLoopback6?: string;
  /** Search domains (passt -S). */
  search?: string[];
  /** Our MAC address (passt -M). */
  ourMac?: string;
  /** MTU (passt -m). 0 means "do not advertise". */
  mtu?: number;
  ipv4Only?: boolean;
  ipv6Only?: boolean;
  /** FQDN given to the guest (passt --fqdn): DHCP option 12 (first label) / DHCPv6 39. */
  fqdn?: string;
  /** Host name given to the guest in DHCP option 12 (passt -H); default: none. */
  hostname?: string;
  /** Do not advertise DNS servers (passt --no-dhcp-dns). */
  noDhcpDns?: boolean;
  /** Do not advertise the search list (passt --no-dhcp-search). */
  noDhcpSearch?: boolean;
  noDhcp?: boolean;
  noNdp?: boolean;
  noDhcpv6?: boolean;
  noRa?: boolean;
}

/** DNS traffic the guest sends to `match` port 53 goes to `target` port 53 on the host. */
export interface DnsForward<A> {
  match: A;
  target: string;
}

/** The IPv4 half of the plan. */
export interface Ipv4Plan {
  ifname: string;
  address: number;
  prefix: number;
  gateway: number;
  /** Servers advertised through DHCP. */
  dns: number[];
  dnsForward: DnsForward<number> | null;
}

/** The IPv6 half of the plan. */
export interface Ipv6Plan {
  ifname: string;
  /** Global address given to the guest (DHCPv6, and /64 prefix by SLAAC); null in fallback. */
  address: Uint8Array | null;
  /** Prefix length of the on-link prefix advertised (64). */
  prefix: number;
  /** The host's gateway; equal to routerLinkLocal when the host has none. */
  gateway: Uint8Array;
  /** Our link-local address, source of RAs and DHCPv6 replies. */
  routerLinkLocal: Uint8Array;
  dns: Uint8Array[];
  dnsForward: DnsForward<Uint8Array> | null;
}

/** Everything the guest-facing services need to know. */
export interface NetworkPlan {
  ourMac: number;
  /** MTU to advertise; 0 means none. */
  mtu: number;
  ipv4: Ipv4Plan | null;
  ipv6: Ipv6Plan | null;
  search: string[];
  fqdn: string | null;
  hostname: string | null;
  advertiseDns: boolean;
  advertiseSearch: boolean;
  enableDhcp: boolean;
  enableNdp: boolean;
  enableDhcpv6: boolean;
  enableRa: boolean;
  /** True when no host interface was usable and link-local addresses are used. */
  linkLocalFallback: boolean;
  /** MTU of the template interface on the host, if known (for information). */
  hostMtu: number | null;
  /** Human-readable notes about decisions taken (fallbacks, ignored values). */
  notes: string[];
}

/** One entry of `Deno.networkInterfaces()` (the fields used). */
export interface HostInterfaceAddress {
  family: "IPv4" | "IPv6";
  name: string;
  address: string;
  netmask: string;
  mac?: string;
}

/** Where discovery reads from; tests inject fabricated contents. */
export interface HostSources {
  /** Returns the file's text or null when it cannot be read. */
  readFile(path: string): string | null;
  networkInterfaces(): HostInterfaceAddress[];
}

/** Where each kind of host file is read: kernel tables through the helper, the rest through Deno. */
function readHostFile(path: string): string | null {
  if (path.startsWith("/proc/") || path.startsWith("/sys/")) return readKernelFile(path);
  try {
    return Deno.readTextFileSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

/**
 * Tells whether the host has a network interface called `name` (up or down, with or
 * without addresses): /sys/class/net/NAME exists (sysfs-class-net).
 */
export function hostInterfaceExists(name: string): boolean {
  if (!/^[^/\0]{1,15}$/.test(name) || name === "." || name === "..") return false;
  try {
    return readKernelFile(`/sys/class/net/${name}/ifindex`) !== null;
  } catch {
    return false;
  }
}

/**
 * Reads the real host. /etc files need the daemon's read permission; /proc/net and
 * /sys/class/net go through the helper (Deno refuses them without --allow-all). A
 * source that cannot be read counts as empty, with a warning naming it and why.
 */
export const realHostSources: HostSources = {
  readFile(path) {
    try {
      return readHostFile(path);
    } catch (error) {
      log.warn(`host configuration: cannot read ${path}: ${(error as Error).message}`);
      return null;
    }
  },
  networkInterfaces() {
    try {
      return Deno.networkInterfaces() as HostInterfaceAddress[];
    } catch (error) {
      log.warn(`host configuration: cannot list interfaces: ${(error as Error).message}`);
      return [];
    }
  },
};

/** A default route found in a routing table. */
export interface DefaultRoute<A> {
  ifname: string;
  gateway: A;
  metric: number;
}

function hexLeU32(s: string): number | null {
  if (!/^[0-9a-fA-F]{8}$/.test(s)) return null;
  const v = parseInt(s, 16);
  // /proc/net/route prints the in-memory (network order) u32 as a host-order number.
  return (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>> 0;
}

/** Parses /proc/net/route and returns its usable IPv4 default routes, lowest metric first. */
export function parseProcNetRoute(text: string): DefaultRoute<number>[] {
  const out: DefaultRoute<number>[] = [];
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const dest = hexLeU32(f[1]), gw = hexLeU32(f[2]), mask = hexLeU32(f[7]);
    const flags = parseInt(f[3], 16), metric = parseInt(f[6], 10);
    if (dest === null || gw === null || mask === null || !Number.isFinite(flags)) continue;
    if (dest !== 0 || mask !== 0 || !(flags & RTF_UP) || (flags & RTF_REJECT)) continue;
    out.push({
      ifname: f[0],
      gateway: flags & RTF_GATEWAY ? gw : 0,
      metric: Number.isFinite(metric) ? metric : 0,
    });
  }
  return out.sort((a, b) => a.metric - b.metric);
}

function hexAddr6(s: string): Uint8Array | null {
  if (!/^[0-9a-fA-F]{32}$/.test(s)) return null;
  const a = new Uint8Array(16);
  for (let i = 0; i < 16; i++) a[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return a;
}

/** Parses /proc/net/ipv6_route and returns usable IPv6 default routes, lowest metric first. */
export function parseProcNetIpv6Route(text: string): DefaultRoute<Uint8Array>[] {
  const out: DefaultRoute<Uint8Array>[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    const dest = hexAddr6(f[0]), gw = hexAddr6(f[4]);
    const plen = parseInt(f[1], 16), metric = parseInt(f[5], 16), flags = parseInt(f[8], 16);
    if (!dest || !gw || !Number.isFinite(flags)) continue;
    if (!ipv6IsUnspecified(dest) || plen !== 0) continue;
    if (!(flags & RTF_UP) || (flags & RTF_REJECT) || f[9] === "lo") continue;
    out.push({ ifname: f[9], gateway: gw, metric: Number.isFinite(metric) ? metric : 0 });
  }
  return out.sort((a, b) => a.metric - b.metric);
}

/** Contents of /etc/resolv.conf that matter. */
export interface ResolvConf {
  nameservers: string[];
  search: string[];
}

/** Parses resolv.conf(5): "nameserver" lines (without a zone) and the last "search"/"domain" line. */
export function parseResolvConf(text: string): ResolvConf {
  const nameservers: string[] = [];
  let search: string[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/[#;].*$/, "").trim();
    const f = line.split(/\s+/);
    // An IPv6 resolver may carry the host's zone ("fe80::1%eth0"): the address is what counts.
    if (f[0] === "nameserver" && f[1]) nameservers.push(f[1].split("%")[0]);
    else if ((f[0] === "search" || f[0] === "domain") && f.length > 1) {
      search = f.slice(1).filter((d) => d !== "." && d.length > 0 && d.length <= 253);
    }
  }
  return { nameservers, search: search.slice(0, MAX_SEARCH_DOMAINS) };
}

function parseAddrPrefix4(text: string): { addr: number; prefix: number | null } | null {
  const [a, p] = text.split("/");
  const addr = parseIpv4(a);
  if (addr === null) return null;
  if (p === undefined) return { addr, prefix: null };
  const n = Number(p);
  if (!Number.isInteger(n) || n < 0 || n > 32) return null;
  return { addr, prefix: n };
}

function fail(what: string): never {
  throw new RangeError(`Cannot build network plan: ${what}`);
}

function isUsableGlobal6(a: Uint8Array): boolean {
  return !ipv6IsLinkLocal(a) && !ipv6IsLoopback(a) && !ipv6IsMulticast(a) &&
    !ipv6IsUnspecified(a);
}

/**
 * Builds the network plan from the host (through `sources`) and `overrides`.
 * @throws RangeError when an override is malformed (names the option and value)
 */
export function buildNetworkPlan(
  overrides: HostConfigOverrides = {},
  sources: HostSources = realHostSources,
): NetworkPlan {
  const notes: string[] = [];
  const ourMac = overrides.ourMac !== undefined
    ? parseMac(overrides.ourMac) ?? fail(`our MAC "${overrides.ourMac}" is not aa:bb:cc:dd:ee:ff`)
    : DEFAULT_OUR_MAC;
  const mtu = overrides.mtu ?? DEFAULT_MTU;
  if (!Number.isInteger(mtu) || (mtu !== 0 && (mtu < MIN_MTU_IPV4 || mtu > MAX_MTU))) {
    fail(`MTU ${overrides.mtu} is not 0 or ${MIN_MTU_IPV4}..${MAX_MTU}`);
  }
  if (overrides.ipv4Only && overrides.ipv6Only) fail("IPv4-only and IPv6-only both given");
  const interfaces = sources.networkInterfaces();
  const resolv = parseResolvConf(sources.readFile("/etc/resolv.conf") ?? "");
  const routes4 = parseProcNetRoute(sources.readFile("/proc/net/route") ?? "");
  const routes6 = parseProcNetIpv6Route(sources.readFile("/proc/net/ipv6_route") ?? "");

  const want4 = !overrides.ipv6Only;
  let want6 = !overrides.ipv4Only;
  if (mtu !== 0 && mtu < MIN_MTU_IPV6 && want6) {
    notes.push(`MTU ${mtu} is below ${MIN_MTU_IPV6}: IPv6 disabled`);
    want6 = false;
  }

  // ---- IPv4 ----
  let ipv4: Ipv4Plan | null = null;
  let fallback = false;
  if (want4) {
    const ifWanted = overrides.interface4 ?? overrides.interface;
    const route = ifWanted ? routes4.find((r) => r.ifname === ifWanted) : routes4[0];
    const ifname = ifWanted ?? route?.ifname ?? "";
    const hostAddr = interfaces.find((i) => i.family === "IPv4" && i.name === ifname);
    let address: number | null = null;
    let prefix: number | null = null;
    if (overrides.address4 !== undefined) {
      const ap = parseAddrPrefix4(overrides.address4) ??
        fail(`IPv4 address "${overrides.address4}" is not a.b.c.d[/prefix]`);
      address = ap.addr;
      prefix = ap.prefix;
    } else if (hostAddr) {
      address = parseIpv4(hostAddr.address);
      prefix = ipv4MaskToPrefix(parseIpv4(hostAddr.netmask) ?? 0);
    }
    if (overrides.prefix4 !== undefined) {
      if (!Number.isInteger(overrides.prefix4) || overrides.prefix4 < 0 || overrides.prefix4 > 32) {
        fail(`IPv4 prefix length ${overrides.prefix4} is not 0..32`);
      }
      prefix = overrides.prefix4;
    } else if (overrides.netmask4 !== undefined) {
      const m = parseIpv4(overrides.netmask4);
      prefix = m === null ? null : ipv4MaskToPrefix(m);
      if (prefix === null) fail(`IPv4 netmask "${overrides.netmask4}" is not contiguous`);
    }
    let gateway: number | null = null;
    if (overrides.gateway4 !== undefined) {
      gateway = parseIpv4(overrides.gateway4) ??
        fail(`IPv4 gateway "${overrides.gateway4}" is not a.b.c.d`);
    } else if (route && route.gateway !== 0) gateway = route.gateway;
    if (address !== null && address !== 0) {
      if (prefix === null) {
        // Classful-free default: the smallest subnet holding the gateway, else /24.
        prefix = 24;
        if (gateway !== null) {
          while (prefix > 0 && ((address ^ gateway) & ipv4PrefixMask(prefix)) !== 0) prefix--;
        }
      }
      if (gateway === null) {
        notes.push("no IPv4 default route: using the guest's address + 1 as gateway");
        gateway = ((address & ipv4PrefixMask(prefix)) + 1) >>> 0;
        if (gateway === address) gateway = (gateway + 1) >>> 0;
      }
      ipv4 = {
        ifname: ifname || "(none)",
        address,
        prefix,
        gateway,
        dns: [],
        dnsForward: null,
      };
    } else {
      fallback = true;
      notes.push(
        "no usable IPv4 host interface: link-local fallback " +
          `${ipv4ToString(FALLBACK_GUEST_V4)}/${FALLBACK_PREFIX_V4}`,
      );
      ipv4 = {
        ifname: "(none)",
        address: FALLBACK_GUEST_V4,
        prefix: FALLBACK_PREFIX_V4,
        gateway: FALLBACK_GATEWAY_V4,
        dns: [],
        dnsForward: null,
      };
    }
  }

  // ---- IPv6 ----
  let ipv6: Ipv6Plan | null = null;
  if (want6) {
    const ifWanted = overrides.interface6 ?? overrides.interface;
    const route = ifWanted ? routes6.find((r) => r.ifname === ifWanted) : routes6[0];
    const ifname = ifWanted ?? route?.ifname ?? "";
    let address: Uint8Array | null = null;
    if (overrides.address6 !== undefined) {
      address = parseIpv6(overrides.address6.split("/")[0]) ??
        fail(`IPv6 address "${overrides.address6}" is not valid`);
    } else {
      for (const i of interfaces) {
        if (i.family !== "IPv6" || i.name !== ifname) continue;
        const a = parseIpv6(i.address);
        if (a && isUsableGlobal6(a)) {
          address = a;
          break;
        }
      }
    }
    let gateway: Uint8Array | null = null;
    if (overrides.gateway6 !== undefined) {
      gateway = parseIpv6(overrides.gateway6) ??
        fail(`IPv6 gateway "${overrides.gateway6}" is not valid`);
    } else if (route && !ipv6IsUnspecified(route.gateway)) gateway = route.gateway;
    const routerLinkLocal = gateway && ipv6IsLinkLocal(gateway)
      ? gateway
      : parseIpv6(DEFAULT_ROUTER_LL)!;
    if (!address) {
      fallback = true;
      notes.push("no usable global IPv6 address: guest gets link-local IPv6 only");
    }
    ipv6 = {
      ifname: ifname || "(none)",
      address,
      prefix: 64,
      gateway: gateway ?? routerLinkLocal,
      routerLinkLocal,
      dns: [],
      dnsForward: null,
    };
  }

  // ---- DNS ----
  const match4 = overrides.dnsForward4 === undefined ? null : parseIpv4(overrides.dnsForward4) ??
    fail(`DNS forward address "${overrides.dnsForward4}" is not a.b.c.d`);
  const match6 = overrides.dnsForward6 === undefined ? null : parseIpv6(overrides.dnsForward6) ??
    fail(`DNS forward address "${overrides.dnsForward6}" is not an IPv6 address`);
  // Resolvers at these addresses are shadowed: the guest's packets to them reach the
  // host's loopback instead (passt conf.c, add_dns_resolv4/6).
  const hostLoopback4 = !ipv4 || overrides.mapHostLoopback4 === "none"
    ? null
    : overrides.mapHostLoopback4 === undefined
    ? ipv4.gateway
    : parseIpv4(overrides.mapHostLoopback4) ??
      fail(`host loopback address "${overrides.mapHostLoopback4}" is not a.b.c.d`);
  const hostLoopback6 = !ipv6 || overrides.mapHostLoopback6 === "none"
    ? null
    : overrides.mapHostLoopback6 === undefined
    ? ipv6.gateway
    : parseIpv6(overrides.mapHostLoopback6) ??
      fail(`host loopback address "${overrides.mapHostLoopback6}" is not an IPv6 address`);
  if (overrides.dns !== undefined) {
    for (const s of overrides.dns) {
      const v4 = parseIpv4(s);
      const v6 = v4 === null ? parseIpv6(s) : null;
      if (v4 === null && v6 === null) fail(`DNS server "${s}" is not an address`);
      if (v4 !== null && ipv4 && ipv4.dns.length < MAX_DNS_SERVERS) ipv4.dns.push(v4);
      if (v6 && ipv6 && ipv6.dns.length < MAX_DNS_SERVERS) ipv6.dns.push(v6);
    }
  } else {
    for (const s of resolv.nameservers) {
      const v4 = parseIpv4(s);
      const v6 = v4 === null ? parseIpv6(s) : null;
      if (v4 !== null) {
        if (!ipv4) continue;
        const loopback = v4 >>> 24 === 127;
        if (loopback || v4 === hostLoopback4) {
          if (!ipv4.dnsForward) {
            ipv4.dnsForward = { match: match4 ?? hostLoopback4 ?? ipv4.gateway, target: s };
            ipv4.dns.push(ipv4.dnsForward.match);
            notes.push(
              `${loopback ? "loopback resolver" : "resolver at the host-loopback address"} ${s}: ` +
                `advertising ${ipv4ToString(ipv4.dnsForward.match)}`,
            );
          }
        } else if (ipv4.dns.length < MAX_DNS_SERVERS && !ipv4.dns.includes(v4)) {
          ipv4.dns.push(v4);
        }
      } else if (v6) {
        if (!ipv6) continue;
        const loopback = ipv6IsLoopback(v6);
        if (
          loopback || (hostLoopback6 !== null && ipv6ToString(v6) === ipv6ToString(hostLoopback6))
        ) {
          if (!ipv6.dnsForward) {
            const target = loopback ? "::1" : ipv6ToString(v6);
            ipv6.dnsForward = { match: match6 ?? hostLoopback6 ?? ipv6.gateway, target };
            ipv6.dns.push(ipv6.dnsForward.match);
            notes.push(
              `${loopback ? "loopback resolver" : "resolver at the host-loopback address"} ` +
                `${target}: advertising ${ipv6ToString(ipv6.dnsForward.match)}`,
            );
          }
        } else if (ipv6IsLinkLocal(v6)) {
          notes.push(`link-local resolver ${s} ignored`);
        } else if (ipv6.dns.length < MAX_DNS_SERVERS) {
          ipv6.dns.push(v6);
        }
      } else {
        notes.push(`resolv.conf nameserver "${s}" ignored`);
      }
    }
    // A host with only an IPv4 loopback resolver still serves IPv6 guests through it.
    if (ipv6 && ipv6.dns.length === 0 && ipv4?.dnsForward) {
      ipv6.dnsForward = { match: match6 ?? ipv6.gateway, target: ipv4.dnsForward.target };
      ipv6.dns.push(ipv6.dnsForward.match);
    }
  }

  let hostMtu: number | null = null;
  const tmpl = ipv4?.ifname ?? ipv6?.ifname;
  if (tmpl && tmpl !== "(none)" && /^[^/\0]{1,15}$/.test(tmpl)) {
    const t = sources.readFile(`/sys/class/net/${tmpl}/mtu`);
    const n = t === null ? NaN : Number(t.trim());
    if (Number.isInteger(n) && n > 0) hostMtu = n;
  }

  const search = overrides.search ?? resolv.search;
  return {
    ourMac,
    mtu,
    ipv4,
    ipv6,
    search: search.filter((d) => d.length > 0 && d.length <= 253),
    fqdn: overrides.fqdn ?? null,
    hostname: overrides.hostname ?? null,
    advertiseDns: !overrides.noDhcpDns,
    advertiseSearch: !overrides.noDhcpSearch,
    enableDhcp: !overrides.noDhcp && ipv4 !== null,
    enableNdp: !overrides.noNdp && ipv6 !== null,
    enableDhcpv6: !overrides.noDhcpv6 && ipv6 !== null && ipv6.address !== null,
    enableRa: !overrides.noRa && !overrides.noNdp && ipv6 !== null,
    linkLocalFallback: fallback,
    hostMtu,
    notes,
  };
}

/** Renders the plan as passt-like information lines (one string per line). */
export function renderNetworkPlan(plan: NetworkPlan): string[] {
  const lines: string[] = [];
  lines.push(`MAC:`, `    host: ${macToString(plan.ourMac)}`);
  if (plan.mtu) lines.push(`MTU: ${plan.mtu}`);
  if (plan.ipv4) {
    const v4 = plan.ipv4;
    lines.push(
      plan.enableDhcp ? `DHCP:` : `IPv4:`,
      `    interface: ${v4.ifname}`,
      `    assign: ${ipv4ToString(v4.address)}`,
      `    mask: ${ipv4ToString(ipv4PrefixMask(v4.prefix))}`,
      `    router: ${ipv4ToString(v4.gateway)}`,
    );
    if (plan.advertiseDns && v4.dns.length) {
      lines.push(`DNS:`, ...v4.dns.map((d) => `    ${ipv4ToString(d)}`));
    }
    if (v4.dnsForward) {
      lines.push(`    (${ipv4ToString(v4.dnsForward.match)}:53 -> ${v4.dnsForward.target}:53)`);
    }
  }
  if (plan.ipv6) {
    const v6 = plan.ipv6;
    lines.push(
      plan.enableDhcpv6 ? `NDP/DHCPv6:` : `NDP:`,
      `    interface: ${v6.ifname}`,
    );
    if (v6.address) {
      lines.push(`    assign: ${ipv6ToString(v6.address)}`);
      lines.push(`    prefix: ${ipv6ToString(prefix64(v6.address))}/64`);
    }
    lines.push(
      `    router: ${ipv6ToString(v6.gateway)}`,
      `    our link-local: ${ipv6ToString(v6.routerLinkLocal)}`,
    );
    if (plan.advertiseDns && v6.dns.length) {
      lines.push(`DNS:`, ...v6.dns.map((d) => `    ${ipv6ToString(d)}`));
    }
    if (v6.dnsForward) {
      lines.push(`    ([${ipv6ToString(v6.dnsForward.match)}]:53 -> ${v6.dnsForward.target}:53)`);
    }
  }
  if (plan.advertiseSearch && plan.search.length) {
    lines.push(`DNS search list:`, ...plan.search.map((d) => `    ${d}`));
  }
  if (plan.linkLocalFallback) lines.push(`Note: no usable host interface, link-local fallback`);
  for (const n of plan.notes) lines.push(`Note: ${n}`);
  return lines;
}

/** The first 64 bits of `addr`, the rest zero (the on-link prefix advertised by RA). */
export function prefix64(addr: Uint8Array): Uint8Array {
  const p = new Uint8Array(16);
  p.set(addr.subarray(0, 8));
  return p;
}
