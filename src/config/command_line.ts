/**
 * Command line → {@link Config}, with passt 2026's option names, short forms and
 * rules (passt(1), conf.c):
 *
 * - options are split as getopt_long() does (see getopt.ts): abbreviations, `-xVALUE`,
 *   clusters, `--name=value`;
 * - options are applied in order and, unless passt adds them up, the last one wins:
 *   `--quiet`, `--debug` and `--trace` each set the level as they come (`-q` after `-d`
 *   is quiet, `-d` after `-q` is debug); `-s` and `-F` replace each other;
 * - `-t`, `-u`, `-D` and `-S` add up (`-D none` / `-S none` clear what came before);
 *   `-a`, `-g`, `-o`, `--dns-forward`, `--dns-host`, `--map-host-loopback` and
 *   `--map-guest-addr` keep the last value per IP version;
 * - pasta-only options are refused, as passt refuses them in passt mode;
 * - options tpasst cannot honour are accepted with a note logged at start.
 *
 * Any problem raises a {@link ConfigError} whose one-line message names the option.
 *
 * @module
 */

import type { LogLevel } from "../log/logger.ts";
import {
  type IpAddressText,
  isValidDomainName,
  isValidInterfaceName,
  parseIpAddress,
  parseMacText,
  parseNetmask,
  unicastProblem,
} from "./address_text.ts";
import {
  type Config,
  type ConfigAction,
  type ConfigNote,
  deepFreeze,
  type FamilyConfig,
  type Ipv4Config,
} from "./config.ts";
import { ConfigError } from "./config_error.ts";
import { GetoptError, getoptLong, type OptionDefinition, type OptionOccurrence } from "./getopt.ts";
import { parsePortForwardTable, PortSpecError } from "./port_spec.ts";
import { type PortForwardTable } from "../net/plan/port_forward.ts";

/** Smallest MTU accepted by `-m` besides 0 (ETH_MIN_MTU, the IPv4 minimum, RFC 791). */
export const MIN_MTU = 68;
/** Largest MTU accepted by `-m` (passt's default: 65535 minus the Ethernet header, rounded down to 4). */
export const MAX_MTU = 65520;
/** `-m 0`: no MTU is advertised to the guest (passt(1) "--mtu"). */
export const NO_MTU = 0;

/** Default `--log-size` in bytes (passt's default is 1 MiB). */
export const DEFAULT_LOG_SIZE = 1024 * 1024;
/** Smallest `--log-size` accepted, in bytes. */
export const MIN_LOG_SIZE = 4096;
/** Largest `--log-size` accepted, in bytes. */
export const MAX_LOG_SIZE = 1024 * 1024 * 1024;

/** Longest `--stats` delay accepted, in seconds (one day). */
export const MAX_STATS_DELAY = 86400;

/** Longest unix socket path: sizeof(sun_path) (108, sys/un.h) minus the terminating NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;

/** Highest file descriptor number accepted for `--fd` (Linux's default fs.nr_open). */
export const MAX_FD = 1048575;

/** Internal option: inherited listening socket of a daemonized child. */
export const INTERNAL_LISTEN_FD_OPTION = "internal-listen-fd";

/**
 * Internal option: pipe the daemonized child writes its readiness byte to. Appended
 * as `--daemon-ready-fd=N` by ffi/process.ts spawnDaemon (DAEMON_READY_FD_OPTION).
 */
export const INTERNAL_READY_FD_OPTION = "daemon-ready-fd";

/** Internal option: socket the daemonized child reports start-up log lines to. */
export const INTERNAL_STATUS_FD_OPTION = "internal-status-fd";

const flag = (name: string, short?: string): OptionDefinition => ({ name, short, argument: false });
const value = (name: string, short?: string): OptionDefinition => ({ name, short, argument: true });

/**
 * passt 2026's whole option table (conf.c), pasta's options included so that
 * abbreviations resolve exactly as in passt, plus tpasst's internal options (never
 * abbreviated).
 */
const OPTIONS: readonly OptionDefinition[] = [
  flag("debug", "d"),
  flag("quiet", "q"),
  flag("foreground", "f"),
  flag("stderr", "e"),
  value("log-file", "l"),
  flag("help", "h"),
  { name: "socket", aliases: ["socket-path"], short: "s", argument: true },
  value("fd", "F"),
  value("ns-ifname", "I"),
  value("pcap", "p"),
  value("pid", "P"),
  value("mtu", "m"),
  value("address", "a"),
  value("netmask", "n"),
  value("mac-addr", "M"),
  value("gateway", "g"),
  value("interface", "i"),
  value("outbound", "o"),
  value("dns", "D"),
  value("search", "S"),
  value("hostname", "H"),
  flag("no-tcp"),
  flag("no-udp"),
  flag("no-icmp"),
  flag("no-dhcp"),
  flag("no-dhcpv6"),
  flag("no-ndp"),
  flag("no-ra"),
  flag("no-splice"),
  flag("splice-only"),
  flag("freebind"),
  flag("no-map-gw"),
  flag("ipv4-only", "4"),
  flag("ipv6-only", "6"),
  flag("one-off", "1"),
  value("tcp-ports", "t"),
  value("udp-ports", "u"),
  value("tcp-ns", "T"),
  value("udp-ns", "U"),
  value("userns"),
  value("netns"),
  value("ns-mac-addr"),
  flag("dhcp-dns"),
  flag("no-dhcp-dns"),
  flag("dhcp-search"),
  flag("no-dhcp-search"),
  value("dns-forward"),
  flag("no-netns-quit"),
  flag("trace"),
  value("runas"),
  value("log-size"),
  flag("version"),
  value("outbound-if4"),
  value("outbound-if6"),
  flag("config-net"),
  flag("no-copy-routes"),
  flag("no-copy-addrs"),
  flag("netns-only"),
  value("map-host-loopback"),
  value("map-guest-addr"),
  flag("host-lo-to-ns-lo"),
  value("dns-host"),
  flag("vhost-user"),
  flag("print-capabilities"),
  value("fqdn"),
  value("repair-path"),
  flag("migrate-exit"),
  flag("migrate-no-linger"),
  value("stats"),
  value("conf-path", "c"),
  flag("chroot-fallback"),
  { name: INTERNAL_LISTEN_FD_OPTION, argument: true, exactOnly: true },
  { name: INTERNAL_READY_FD_OPTION, argument: true, exactOnly: true },
  { name: INTERNAL_STATUS_FD_OPTION, argument: true, exactOnly: true },
];

/** Options that act at once when met, like passt's (getopt stops there). */
const ACTION_OPTIONS: ReadonlyMap<string, ConfigAction> = new Map([
  ["help", "help"],
  ["version", "version"],
  ["print-capabilities", "print-capabilities"],
]);

/** Options of pasta (namespace mode) that passt refuses in passt mode. */
const PASTA_ONLY_OPTIONS: ReadonlySet<string> = new Set([
  "ns-ifname",
  "tcp-ns",
  "udp-ns",
  "userns",
  "netns",
  "ns-mac-addr",
  "dhcp-dns",
  "dhcp-search",
  "no-netns-quit",
  "config-net",
  "no-copy-routes",
  "no-copy-addrs",
  "netns-only",
  "host-lo-to-ns-lo",
  "splice-only",
]);

/** passt options that exist only with `--vhost-user` (migration). */
const VHOST_USER_ONLY_OPTIONS: ReadonlySet<string> = new Set([
  "repair-path",
  "migrate-exit",
  "migrate-no-linger",
]);

function fail(option: string, text: string | null, reason: string): never {
  throw new ConfigError(
    text === null ? `--${option}: ${reason}` : `--${option}: "${text}" ${reason}`,
  );
}

function parseDecimal(option: string, text: string, min: number, max: number, what: string) {
  if (!/^[0-9]+$/.test(text) || Number(text) < min || Number(text) > max) {
    fail(option, text, `is not a valid ${what} (${min}-${max})`);
  }
  return Number(text);
}

function parseAddress(option: string, text: string): IpAddressText {
  const address = parseIpAddress(text);
  if (address === null) fail(option, text, "is not an IPv4 or IPv6 address");
  return address;
}

function parseUnicast(option: string, text: string, allowLoopback = false): IpAddressText {
  const address = parseAddress(option, text);
  const problem = unicastProblem(address, allowLoopback);
  if (problem !== null) fail(option, text, problem);
  return address;
}

function parseInterface(option: string, text: string): string {
  if (!isValidInterfaceName(text)) {
    fail(option, text, "is not a valid interface name (1-15 characters, no '/', ':' or spaces)");
  }
  return text;
}

function parsePath(option: string, text: string): string {
  if (text === "" || text.includes("\0")) fail(option, text, "is not a valid path");
  return text;
}

/** One address slot per IP version; the last value given for a version wins. */
interface PerFamily {
  v4: string | null;
  v6: string | null;
}

function perFamily(): PerFamily {
  return { v4: null, v6: null };
}

function setFamily(slots: PerFamily, address: IpAddressText): void {
  if (address.family === 4) slots.v4 = address.text;
  else slots.v6 = address.text;
}

/** The `-a` argument: an address with an optional `/prefix` (passt's conf_addr()). */
function parseGuestAddress(text: string): { address: IpAddressText; prefix: number | null } {
  const slash = text.indexOf("/");
  const address = parseUnicast("address", slash < 0 ? text : text.slice(0, slash));
  if (slash < 0) return { address, prefix: null };
  const prefixText = text.slice(slash + 1);
  const max = address.family === 4 ? 32 : 128;
  if (!/^[0-9]{1,3}$/.test(prefixText) || Number(prefixText) < 1 || Number(prefixText) > max) {
    fail("address", text, `has an invalid prefix length (1-${max})`);
  }
  return { address, prefix: Number(prefixText) };
}

function parseForwards(
  option: string,
  specs: string[],
  families: { ipv4: boolean; ipv6: boolean },
): PortForwardTable {
  try {
    return parsePortForwardTable(specs, families);
  } catch (error) {
    if (error instanceof PortSpecError) fail(option, null, error.message);
    throw error;
  }
}

/** Everything the options set, as they are applied in order. */
class Settings {
  action: ConfigAction = "run";
  // Logging: passt's three flags, each option setting them as it comes (conf.c).
  quiet = false;
  debug = false;
  trace = false;
  logFile: string | null = null;
  logSize = DEFAULT_LOG_SIZE;
  // Frontend and process.
  vhostUser = false;
  socketPath: string | null = null;
  fd: number | null = null;
  oneOff = false;
  foreground = false;
  pidFile: string | null = null;
  pcapFile: string | null = null;
  runas: string | null = null;
  statsDelay: number | null = null;
  repairPath: string | null = null;
  repairDisabled = false;
  migrateExit = false;
  migrateNoLinger = false;
  // Guest configuration.
  mtu: number | null = null;
  macAddress: string | null = null;
  interfaceName: string | null = null;
  outboundIf4: string | null = null;
  outboundIf6: string | null = null;
  addresses = perFamily();
  addressPrefix = { v4: null as number | null, v6: null as number | null };
  netmask: number | null = null;
  netmaskText: string | null = null;
  gateways = perFamily();
  outbound = perFamily();
  dnsForward = perFamily();
  dnsHost = perFamily();
  mapHostLoopback = perFamily();
  mapGuestAddr = perFamily();
  noMapGw = false;
  ipv4Only = false;
  ipv6Only = false;
  dnsServers: string[] | null = null;
  search: string[] | null = null;
  fqdn: string | null = null;
  hostname: string | null = null;
  readonly flags = new Set<string>();
  readonly tcpSpecs: string[] = [];
  readonly udpSpecs: string[] = [];
  readonly notes: ConfigNote[] = [];
  // Internal plumbing.
  listenFd: number | null = null;
  readyFd: number | null = null;
  statusFd: number | null = null;
}

/** Applies one option occurrence to `s`, as passt's conf() does. */
function apply(s: Settings, o: OptionOccurrence): void {
  const name = o.name;
  const text = o.value ?? "";
  if (PASTA_ONLY_OPTIONS.has(name)) {
    throw new ConfigError(`--${name} is for pasta mode only (tpasst works like passt)`);
  }
  if (VHOST_USER_ONLY_OPTIONS.has(name) && !s.vhostUser) {
    if (!(name === "repair-path" && text === "none")) {
      throw new ConfigError(`--${name} is for vhost-user mode only`);
    }
  }
  switch (name) {
    case "debug":
      s.debug = true;
      s.quiet = false;
      return;
    case "trace":
      s.trace = s.debug = true;
      s.quiet = false;
      return;
    case "quiet":
      s.quiet = true;
      s.debug = s.trace = false;
      return;
    case "stderr":
      // passt: "This option has no effect, and is maintained for compatibility".
      return;
    case "log-file":
      s.logFile = parsePath("log-file", text);
      return;
    case "log-size":
      s.logSize = parseDecimal("log-size", text, MIN_LOG_SIZE, MAX_LOG_SIZE, "log size in bytes");
      return;
    case "foreground":
      s.foreground = true;
      return;
    case "socket": {
      const path = parsePath("socket", text);
      if (new TextEncoder().encode(path).length > MAX_SOCKET_PATH_BYTES) {
        fail("socket", path, `is longer than ${MAX_SOCKET_PATH_BYTES} bytes`);
      }
      s.socketPath = path;
      s.fd = null;
      return;
    }
    case "fd":
      // passt accepts standard input (0) but not 1 and 2 (conf_tap_fd()).
      s.fd = text === "0" ? 0 : parseDecimal("fd", text, 3, MAX_FD, "file descriptor");
      s.socketPath = null;
      s.oneOff = true;
      return;
    case "one-off":
      s.oneOff = true;
      return;
    case "vhost-user":
      s.vhostUser = true;
      return;
    case "pcap":
      s.pcapFile = parsePath("pcap", text);
      return;
    case "pid":
      s.pidFile = parsePath("pid", text);
      return;
    case "runas":
      if (!/^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$/.test(text)) {
        fail("runas", text, "is not UID[:GID] or LOGIN[:GROUP]");
      }
      s.runas = text;
      return;
    case "stats":
      s.statsDelay = parseDecimal("stats", text, 0, MAX_STATS_DELAY, "delay in seconds");
      return;
    case "mtu":
      if (text === "0") {
        s.mtu = NO_MTU;
      } else if (!/^[0-9]+$/.test(text) || Number(text) < MIN_MTU || Number(text) > MAX_MTU) {
        fail("mtu", text, `is not a valid MTU (0 for none, or ${MIN_MTU}-${MAX_MTU})`);
      } else {
        s.mtu = Number(text);
      }
      return;
    case "address": {
      const { address, prefix } = parseGuestAddress(text);
      setFamily(s.addresses, address);
      if (address.family === 4) s.addressPrefix.v4 = prefix;
      else s.addressPrefix.v6 = prefix;
      return;
    }
    case "netmask": {
      const prefix = parseNetmask(text);
      if (prefix === null) {
        fail("netmask", text, "is not a netmask (dotted, e.g. 255.255.255.0, or 1-32)");
      }
      s.netmask = prefix;
      s.netmaskText = text;
      return;
    }
    case "mac-addr": {
      const mac = parseMacText(text);
      if (mac === null) fail("mac-addr", text, "is not a MAC address (xx:xx:xx:xx:xx:xx)");
      if (parseInt(mac.slice(0, 2), 16) & 1) fail("mac-addr", text, "is a multicast MAC address");
      if (mac === "00:00:00:00:00:00") fail("mac-addr", text, "is the all-zero MAC address");
      s.macAddress = mac;
      return;
    }
    case "gateway":
      setFamily(s.gateways, parseUnicast("gateway", text));
      return;
    case "interface":
      s.interfaceName = parseInterface("interface", text);
      return;
    case "outbound":
      setFamily(s.outbound, parseUnicast("outbound", text, true));
      return;
    case "outbound-if4":
      s.outboundIf4 = parseInterface("outbound-if4", text);
      return;
    case "outbound-if6":
      s.outboundIf6 = parseInterface("outbound-if6", text);
      return;
    case "dns":
      if (text === "none") {
        s.dnsServers = [];
        return;
      }
      s.dnsServers ??= [];
      {
        const address = parseUnicast("dns", text, true);
        if (!s.dnsServers.includes(address.text)) s.dnsServers.push(address.text);
      }
      return;
    case "search": {
      if (text.trim() === "none") {
        s.search = [];
        return;
      }
      const domains = text.split(/\s+/).filter((d) => d !== "");
      if (domains.length === 0) fail("search", text, "names no domain (use 'none')");
      for (const domain of domains) {
        if (!isValidDomainName(domain)) fail("search", domain, "is not a valid domain name");
      }
      s.search = [...(s.search ?? []), ...domains];
      return;
    }
    case "fqdn":
      if (!isValidDomainName(text)) fail("fqdn", text, "is not a valid domain name");
      s.fqdn = text;
      return;
    case "hostname":
      if (!isValidDomainName(text) || text.includes(".")) {
        fail("hostname", text, "is not a valid host name (one label: letters, digits, '-')");
      }
      s.hostname = text;
      return;
    case "dns-forward":
      setFamily(s.dnsForward, parseUnicast("dns-forward", text));
      return;
    case "dns-host":
      setFamily(s.dnsHost, parseUnicast("dns-host", text, true));
      return;
    case "map-host-loopback":
    case "map-guest-addr": {
      const slots = name === "map-host-loopback" ? s.mapHostLoopback : s.mapGuestAddr;
      if (text === "none") {
        slots.v4 = slots.v6 = "none";
        if (name === "map-host-loopback") s.noMapGw = true;
        return;
      }
      setFamily(slots, parseUnicast(name, text));
      return;
    }
    case "no-map-gw":
      s.noMapGw = true;
      return;
    case "ipv4-only":
      s.ipv4Only = true;
      s.ipv6Only = false;
      return;
    case "ipv6-only":
      s.ipv6Only = true;
      s.ipv4Only = false;
      return;
    case "tcp-ports":
      s.tcpSpecs.push(text);
      return;
    case "udp-ports":
      s.udpSpecs.push(text);
      return;
    case "no-tcp":
    case "no-udp":
    case "no-icmp":
    case "no-dhcp":
    case "no-dhcpv6":
    case "no-ndp":
    case "no-ra":
    case "no-dhcp-dns":
    case "no-dhcp-search":
    case "freebind":
      s.flags.add(name);
      return;
    case "no-splice":
      s.notes.push({
        level: "debug",
        message: "--no-splice: no effect in passt mode (there is no splice path)",
      });
      return;
    case "chroot-fallback":
      s.notes.push({
        level: "debug",
        message: "--chroot-fallback: no effect (tpasst does not change its root directory)",
      });
      return;
    case "conf-path":
      parsePath("conf-path", text);
      s.notes.push({
        level: "warn",
        message: `--conf-path ${text} ignored: tpasst has no configuration socket (pesto)`,
      });
      return;
    case "repair-path":
      // passt: "none" disables the helper socket; "./none" is a file called none
      s.repairDisabled = text === "none";
      s.repairPath = text === "none" ? null : parsePath(name, text);
      return;
    case "migrate-exit":
      s.migrateExit = true;
      return;
    case "migrate-no-linger":
      s.migrateNoLinger = true;
      return;
    case INTERNAL_LISTEN_FD_OPTION:
      s.listenFd = parseDecimal(name, text, 3, MAX_FD, "file descriptor");
      return;
    case INTERNAL_READY_FD_OPTION:
      s.readyFd = parseDecimal(name, text, 3, MAX_FD, "file descriptor");
      return;
    case INTERNAL_STATUS_FD_OPTION:
      s.statusFd = parseDecimal(name, text, 3, MAX_FD, "file descriptor");
      return;
    default: {
      const action = ACTION_OPTIONS.get(name);
      if (action === undefined) throw new Error(`Cannot apply option --${name}: no rule for it`);
      s.action = action;
    }
  }
}

/** Drops values of a disabled IP version, as passt ignores them, with a note. */
function dropDisabledFamily(s: Settings, family: "v4" | "v6", switchName: string): void {
  const slots: [string, PerFamily][] = [
    ["address", s.addresses],
    ["gateway", s.gateways],
    ["outbound", s.outbound],
    ["dns-forward", s.dnsForward],
    ["dns-host", s.dnsHost],
    ["map-host-loopback", s.mapHostLoopback],
    ["map-guest-addr", s.mapGuestAddr],
  ];
  for (const [option, slot] of slots) {
    const text = slot[family];
    if (text === null) continue;
    if (text !== "none") {
      s.notes.push({
        level: "warn",
        message: `--${option} ${text} ignored: IPv${family === "v4" ? 4 : 6} is disabled ` +
          `(--${switchName})`,
      });
    }
    slot[family] = null;
  }
}

/**
 * Parses and validates the command line (without the program name) into a deeply
 * frozen {@link Config}.
 * @throws ConfigError with a one-line message naming the bad option
 */
export function parseCommandLine(args: readonly string[]): Config {
  let occurrences: readonly OptionOccurrence[];
  try {
    const result = getoptLong(args, OPTIONS, new Set(ACTION_OPTIONS.keys()));
    if (result.operands.length > 0) {
      throw new ConfigError(
        `unexpected argument '${result.operands[0]}' (tpasst takes options only)`,
      );
    }
    occurrences = result.options;
  } catch (error) {
    if (error instanceof GetoptError) throw new ConfigError(error.message);
    throw error;
  }

  const s = new Settings();
  // passt decides the mode before anything else (conf_mode()).
  s.vhostUser = occurrences.some((o) => o.name === "vhost-user");
  for (const occurrence of occurrences) apply(s, occurrence);

  const level: LogLevel = s.trace ? "trace" : s.debug ? "debug" : s.quiet ? "warn" : "info";
  if (s.statsDelay !== null && s.statsDelay > 0 && !s.foreground) {
    throw new ConfigError("--stats: statistics are shown only in the foreground (give -f)");
  }
  if (s.listenFd !== null && s.fd !== null) {
    throw new ConfigError(`--fd cannot be combined with --${INTERNAL_LISTEN_FD_OPTION}`);
  }

  // A prefix length given with -a and -n are redundant (passt: "Redundant prefix length").
  const addressPrefix = s.addressPrefix.v4 ?? s.addressPrefix.v6;
  if (s.netmaskText !== null && addressPrefix !== null) {
    fail("netmask", s.netmaskText, "conflicts with the prefix length given with --address");
  }
  if (s.ipv4Only) dropDisabledFamily(s, "v6", "ipv4-only");
  if (s.ipv6Only) dropDisabledFamily(s, "v4", "ipv6-only");
  // --no-map-gw only drops the default mapping; an explicit address still maps.
  if (s.noMapGw) {
    s.mapHostLoopback.v4 ??= "none";
    s.mapHostLoopback.v6 ??= "none";
  }

  const has = (name: string) => s.flags.has(name);
  const protocols = {
    tcp: !has("no-tcp"),
    udp: !has("no-udp"),
    icmp: !has("no-icmp"),
    dhcp: !has("no-dhcp"),
    dhcpv6: !has("no-dhcpv6"),
    // passt: --no-icmp implies --no-ndp.
    ndp: !has("no-ndp") && !has("no-icmp"),
    ra: !has("no-ra"),
  };
  if (!protocols.tcp && s.tcpSpecs.some((spec) => spec !== "none")) {
    throw new ConfigError("--tcp-ports cannot be combined with --no-tcp");
  }
  if (!protocols.udp && s.udpSpecs.some((spec) => spec !== "none")) {
    throw new ConfigError("--udp-ports cannot be combined with --no-udp");
  }
  const families = { ipv4: !s.ipv6Only, ipv6: !s.ipv4Only };
  const tcpForwards = parseForwards("tcp-ports", s.tcpSpecs, families);
  const udpForwards = parseForwards("udp-ports", s.udpSpecs, families);

  const ipv4: Ipv4Config = {
    address: s.addresses.v4,
    prefixLength: s.addressPrefix.v4 ?? s.netmask,
    gateway: s.gateways.v4,
    outbound: s.outbound.v4,
    outboundInterface: s.outboundIf4,
    dnsForward: s.dnsForward.v4,
    dnsHost: s.dnsHost.v4,
    mapHostLoopback: s.mapHostLoopback.v4,
    mapGuestAddr: s.mapGuestAddr.v4,
  };
  const ipv6: FamilyConfig = {
    address: s.addresses.v6,
    gateway: s.gateways.v6,
    outbound: s.outbound.v6,
    outboundInterface: s.outboundIf6,
    dnsForward: s.dnsForward.v6,
    dnsHost: s.dnsHost.v6,
    mapHostLoopback: s.mapHostLoopback.v6,
    mapGuestAddr: s.mapGuestAddr.v6,
  };

  const config: Config = {
    action: s.action,
    mode: s.vhostUser ? "vhost-user" : "stream",
    socketPath: s.socketPath,
    fd: s.fd,
    oneOff: s.oneOff,
    foreground: s.foreground,
    pidFile: s.pidFile,
    pcapFile: s.pcapFile,
    runas: s.runas,
    statsDelay: s.statsDelay === 0 ? null : s.statsDelay,
    migration: {
      repairPath: s.repairPath,
      repairDisabled: s.repairDisabled,
      exitAfter: s.migrateExit,
      noLinger: s.migrateNoLinger,
    },
    notes: s.notes,
    log: { level, file: s.logFile, maxSize: s.logSize },
    mtu: s.mtu,
    macAddress: s.macAddress,
    interfaceName: s.interfaceName,
    ipv4Enabled: !s.ipv6Only,
    ipv6Enabled: !s.ipv4Only,
    ipv4,
    ipv6,
    dns: {
      servers: s.dnsServers,
      search: s.search,
      fqdn: s.fqdn,
      hostname: s.hostname,
      sendServers: !has("no-dhcp-dns"),
      sendSearch: !has("no-dhcp-search"),
    },
    protocols,
    tcpForwards,
    udpForwards,
    freebind: has("freebind"),
    internal: { listenFd: s.listenFd, readyFd: s.readyFd, statusFd: s.statusFd },
  };
  return deepFreeze(config);
}
