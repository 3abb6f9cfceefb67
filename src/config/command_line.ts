/**
 * Command line → {@link Config}: passt's option names and short forms (passt(1)),
 * parsed with `node:util` parseArgs in strict mode, then every value validated.
 * Any problem raises a {@link ConfigError} whose message names the option.
 *
 * @module
 */

import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
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
  deepFreeze,
  type FamilyConfig,
  type Ipv4Config,
} from "./config.ts";
import { ConfigError } from "./config_error.ts";
import { parsePortForwardTable, type PortForwardTable, PortSpecError } from "./port_spec.ts";

/** Smallest MTU accepted by `-m` (ETH_MIN_MTU, as in passt). */
export const MIN_MTU = 68;
/** Largest MTU accepted by `-m` (ETH_MAX_MTU, as in passt). */
export const MAX_MTU = 65520;

/** Default `--log-size` in bytes (passt's default is 1 MiB). */
export const DEFAULT_LOG_SIZE = 1024 * 1024;
/** Smallest `--log-size` accepted, in bytes. */
export const MIN_LOG_SIZE = 4096;
/** Largest `--log-size` accepted, in bytes. */
export const MAX_LOG_SIZE = 1024 * 1024 * 1024;

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

/** The options, as parseArgs takes them; repeatable ones have `multiple`. */
const OPTIONS = {
  "socket": { type: "string", short: "s", multiple: true },
  "socket-path": { type: "string", multiple: true },
  "vhost-user": { type: "boolean" },
  "fd": { type: "string", short: "F", multiple: true },
  "one-off": { type: "boolean", short: "1" },
  "foreground": { type: "boolean", short: "f" },
  "quiet": { type: "boolean", short: "q" },
  "debug": { type: "boolean", short: "d" },
  "trace": { type: "boolean" },
  "stderr": { type: "boolean", short: "e" },
  "log-file": { type: "string", short: "l", multiple: true },
  "log-size": { type: "string", multiple: true },
  "pid": { type: "string", short: "P", multiple: true },
  "print-capabilities": { type: "boolean" },
  "mtu": { type: "string", short: "m", multiple: true },
  "address": { type: "string", short: "a", multiple: true },
  "netmask": { type: "string", short: "n", multiple: true },
  "gateway": { type: "string", short: "g", multiple: true },
  "mac-addr": { type: "string", short: "M", multiple: true },
  "interface": { type: "string", short: "i", multiple: true },
  "dns": { type: "string", short: "D", multiple: true },
  "search": { type: "string", short: "S", multiple: true },
  "fqdn": { type: "string", multiple: true },
  "no-dhcp-dns": { type: "boolean" },
  "no-dhcp-search": { type: "boolean" },
  "no-dhcp": { type: "boolean" },
  "no-dhcpv6": { type: "boolean" },
  "no-ndp": { type: "boolean" },
  "no-ra": { type: "boolean" },
  "no-tcp": { type: "boolean" },
  "no-udp": { type: "boolean" },
  "no-icmp": { type: "boolean" },
  "tcp-ports": { type: "string", short: "t", multiple: true },
  "udp-ports": { type: "string", short: "u", multiple: true },
  "pcap": { type: "string", short: "p", multiple: true },
  "map-host-loopback": { type: "string", multiple: true },
  "map-guest-addr": { type: "string", multiple: true },
  "no-map-gw": { type: "boolean" },
  "dns-forward": { type: "string", multiple: true },
  "dns-host": { type: "string", multiple: true },
  "outbound": { type: "string", short: "o", multiple: true },
  "outbound-if4": { type: "string", multiple: true },
  "outbound-if6": { type: "string", multiple: true },
  "ipv4-only": { type: "boolean", short: "4" },
  "ipv6-only": { type: "boolean", short: "6" },
  "freebind": { type: "boolean" },
  "runas": { type: "string", multiple: true },
  "hostname": { type: "string", short: "H", multiple: true },
  "repair-path": { type: "string", multiple: true },
  "migrate-exit": { type: "boolean" },
  "migrate-no-linger": { type: "boolean" },
  "help": { type: "boolean", short: "h" },
  "version": { type: "boolean" },
  [INTERNAL_LISTEN_FD_OPTION]: { type: "string", multiple: true },
  [INTERNAL_READY_FD_OPTION]: { type: "string", multiple: true },
  [INTERNAL_STATUS_FD_OPTION]: { type: "string", multiple: true },
} as const satisfies ParseArgsOptionsConfig;

type OptionName = keyof typeof OPTIONS;
type StringOption = { [K in OptionName]: (typeof OPTIONS)[K]["type"] extends "string" ? K : never }[
  OptionName
];
type Values = {
  [K in OptionName]?: (typeof OPTIONS)[K]["type"] extends "string" ? string[] : boolean;
};

function fail(option: string, value: string | null, reason: string): never {
  throw new ConfigError(
    value === null ? `--${option}: ${reason}` : `--${option}: "${value}" ${reason}`,
  );
}

/** Maps a parseArgs error to one line naming the option. */
function describeParseError(error: unknown): ConfigError {
  const code = (error as { code?: string }).code;
  const message = error instanceof Error ? error.message : String(error);
  const quoted = /'([^']*)'/.exec(message)?.[1] ?? "";
  const longName = /--([A-Za-z0-9-]+)/.exec(quoted)?.[1];
  switch (code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return new ConfigError(`unrecognized option '${quoted}'`);
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return new ConfigError(`unexpected argument '${quoted}' (tpasst takes options only)`);
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE": {
      const name = longName ?? shortToLong(quoted);
      if (/does not take an argument/.test(message)) {
        return new ConfigError(`--${name}: option takes no argument`);
      }
      if (/ambiguous/.test(message)) {
        return new ConfigError(
          `--${name}: option requires an argument (write --${name}=VALUE for a value starting with '-')`,
        );
      }
      return new ConfigError(`--${name}: option requires an argument`);
    }
    default:
      return new ConfigError(message.split("\n")[0]);
  }
}

function shortToLong(text: string): string {
  const short = /^-([A-Za-z0-9])/.exec(text)?.[1];
  for (const [name, spec] of Object.entries(OPTIONS)) {
    if ("short" in spec && spec.short === short) return name;
  }
  return text.replace(/^-+/, "");
}

/** The single value of a non-repeatable option, or `null`. */
function single(values: Values, option: StringOption): string | null {
  const list = values[option] as string[] | undefined;
  if (list === undefined || list.length === 0) return null;
  if (list.length > 1) fail(option, null, `given more than once ("${list.join('", "')}")`);
  return list[0];
}

function list(values: Values, option: StringOption): string[] {
  return (values[option] as string[] | undefined) ?? [];
}

function parseDecimal(option: StringOption, text: string, min: number, max: number, what: string) {
  if (!/^[0-9]+$/.test(text) || Number(text) < min || Number(text) > max) {
    fail(option, text, `is not a valid ${what} (${min}-${max})`);
  }
  return Number(text);
}

function parseAddress(option: StringOption, text: string): IpAddressText {
  const address = parseIpAddress(text);
  if (address === null) fail(option, text, "is not an IPv4 or IPv6 address");
  return address;
}

function parseUnicast(option: StringOption, text: string, allowLoopback = false): IpAddressText {
  const address = parseAddress(option, text);
  const problem = unicastProblem(address, allowLoopback);
  if (problem !== null) fail(option, text, problem);
  return address;
}

function parseInterface(option: StringOption, text: string): string {
  if (!isValidInterfaceName(text)) {
    fail(option, text, "is not a valid interface name (1-15 characters, no '/', ':' or spaces)");
  }
  return text;
}

function parsePath(option: StringOption, text: string | null): string | null {
  if (text === null) return null;
  if (text === "" || text.includes("\0")) fail(option, text, "is not a valid path");
  return text;
}

/** Sorts up to one address per family from a repeatable option into v4/v6 slots. */
function perFamily(
  values: Values,
  option: StringOption,
  parse: (text: string) => IpAddressText,
  allowNone: boolean,
): { v4: string | null; v6: string | null } {
  const out: { v4: string | null; v6: string | null } = { v4: null, v6: null };
  for (const text of list(values, option)) {
    if (allowNone && text === "none") {
      out.v4 = out.v6 = "none";
      continue;
    }
    const address = parse(text);
    const slot = address.family === 4 ? "v4" : "v6";
    if (out[slot] !== null && out[slot] !== "none") {
      fail(option, text, `is a second IPv${address.family} address (one per family)`);
    }
    out[slot] = address.text;
  }
  return out;
}

function parseForwards(option: StringOption, specs: string[]): PortForwardTable {
  try {
    return parsePortForwardTable(specs);
  } catch (error) {
    if (error instanceof PortSpecError) fail(option, null, error.message);
    throw error;
  }
}

/**
 * Parses and validates the command line (without the program name) into a deeply
 * frozen {@link Config}.
 * @throws ConfigError with a one-line message naming the bad option
 */
export function parseCommandLine(args: readonly string[]): Config {
  let values: Values;
  try {
    values = parseArgs({
      args: [...args],
      options: OPTIONS,
      strict: true,
      allowPositionals: false,
    }).values as Values;
  } catch (error) {
    throw describeParseError(error);
  }
  const flag = (name: OptionName): boolean => values[name] === true;

  const action: ConfigAction = flag("help")
    ? "help"
    : flag("version")
    ? "version"
    : flag("print-capabilities")
    ? "print-capabilities"
    : "run";

  // Logging.
  if (flag("quiet") && (flag("debug") || flag("trace"))) {
    throw new ConfigError(`--quiet cannot be combined with --${flag("debug") ? "debug" : "trace"}`);
  }
  const level: LogLevel = flag("trace")
    ? "trace"
    : flag("debug")
    ? "debug"
    : flag("quiet")
    ? "warn"
    : "info";
  const logSizeText = single(values, "log-size");
  const logSize = logSizeText === null
    ? DEFAULT_LOG_SIZE
    : parseDecimal("log-size", logSizeText, MIN_LOG_SIZE, MAX_LOG_SIZE, "log size in bytes");

  // Socket and process.
  const socketOptions = [...list(values, "socket"), ...list(values, "socket-path")];
  if (socketOptions.length > 1) fail("socket", null, "given more than once");
  const socketPath = parsePath("socket", socketOptions[0] ?? null);
  if (socketPath !== null && new TextEncoder().encode(socketPath).length > MAX_SOCKET_PATH_BYTES) {
    fail("socket", socketPath, `is longer than ${MAX_SOCKET_PATH_BYTES} bytes`);
  }
  const fdText = single(values, "fd");
  const fd = fdText === null ? null : parseDecimal("fd", fdText, 3, MAX_FD, "file descriptor");
  if (fd !== null && socketPath !== null) {
    throw new ConfigError(
      "--fd cannot be combined with --socket (the socket is already connected)",
    );
  }
  const listenFdText = single(values, INTERNAL_LISTEN_FD_OPTION);
  const listenFd = listenFdText === null
    ? null
    : parseDecimal(INTERNAL_LISTEN_FD_OPTION, listenFdText, 3, MAX_FD, "file descriptor");
  if (listenFd !== null && fd !== null) {
    throw new ConfigError(`--fd cannot be combined with --${INTERNAL_LISTEN_FD_OPTION}`);
  }
  const readyFdText = single(values, INTERNAL_READY_FD_OPTION);
  const readyFd = readyFdText === null
    ? null
    : parseDecimal(INTERNAL_READY_FD_OPTION, readyFdText, 3, MAX_FD, "file descriptor");
  const statusFdText = single(values, INTERNAL_STATUS_FD_OPTION);
  const statusFd = statusFdText === null
    ? null
    : parseDecimal(INTERNAL_STATUS_FD_OPTION, statusFdText, 3, MAX_FD, "file descriptor");

  // Interface-level settings.
  const mtuText = single(values, "mtu");
  const mtu = mtuText === null ? null : parseDecimal("mtu", mtuText, MIN_MTU, MAX_MTU, "MTU");
  const macText = single(values, "mac-addr");
  let macAddress: string | null = null;
  if (macText !== null) {
    macAddress = parseMacText(macText);
    if (macAddress === null) fail("mac-addr", macText, "is not a MAC address (xx:xx:xx:xx:xx:xx)");
    const firstOctet = parseInt(macAddress.slice(0, 2), 16);
    if (firstOctet & 1) fail("mac-addr", macText, "is a multicast MAC address");
    if (macAddress === "00:00:00:00:00:00") {
      fail("mac-addr", macText, "is the all-zero MAC address");
    }
  }
  const ifaceText = single(values, "interface");
  const interfaceName = ifaceText === null ? null : parseInterface("interface", ifaceText);

  const ipv4Only = flag("ipv4-only");
  const ipv6Only = flag("ipv6-only");
  if (ipv4Only && ipv6Only) {
    throw new ConfigError("--ipv4-only cannot be combined with --ipv6-only");
  }

  // `-a ADDR/PREFIX` sets the IPv4 prefix length like -n (passt accepts both forms).
  let addressPrefix: number | null = null;
  const addresses = perFamily(values, "address", (text) => {
    const slash = text.indexOf("/");
    if (slash < 0) return parseUnicast("address", text);
    const address = parseUnicast("address", text.slice(0, slash));
    const prefixText = text.slice(slash + 1);
    const max = address.family === 4 ? 32 : 128;
    if (!/^[0-9]{1,3}$/.test(prefixText) || Number(prefixText) < 1 || Number(prefixText) > max) {
      fail("address", text, `has an invalid prefix length (1-${max})`);
    }
    if (address.family === 4) addressPrefix = Number(prefixText);
    return address;
  }, false);
  const gateways = perFamily(values, "gateway", (t) => parseUnicast("gateway", t), false);
  const outbound = perFamily(values, "outbound", (t) => parseUnicast("outbound", t, true), false);
  const dnsForward = perFamily(values, "dns-forward", (t) => parseUnicast("dns-forward", t), false);
  const dnsHost = perFamily(values, "dns-host", (t) => parseUnicast("dns-host", t, true), false);
  const mapHostLoopback = perFamily(
    values,
    "map-host-loopback",
    (t) => parseUnicast("map-host-loopback", t),
    true,
  );
  const mapGuestAddr = perFamily(
    values,
    "map-guest-addr",
    (t) => parseUnicast("map-guest-addr", t),
    true,
  );
  if (flag("no-map-gw")) {
    if (list(values, "map-host-loopback").length > 0) {
      throw new ConfigError("--no-map-gw cannot be combined with --map-host-loopback");
    }
    mapHostLoopback.v4 = mapHostLoopback.v6 = "none";
  }
  for (
    const [option, slots] of [
      ["address", addresses],
      ["gateway", gateways],
      ["outbound", outbound],
    ] as const
  ) {
    if (ipv4Only && slots.v6 !== null) {
      fail(option, slots.v6, "is an IPv6 address but --ipv4-only was given");
    }
    if (ipv6Only && slots.v4 !== null) {
      fail(option, slots.v4, "is an IPv4 address but --ipv6-only was given");
    }
  }
  const netmaskText = single(values, "netmask");
  let prefixLength: number | null = addressPrefix;
  if (netmaskText !== null) {
    if (addressPrefix !== null) {
      fail("netmask", netmaskText, "conflicts with the prefix length given with --address");
    }
    prefixLength = parseNetmask(netmaskText);
    if (prefixLength === null) {
      fail("netmask", netmaskText, "is not a netmask (dotted, e.g. 255.255.255.0, or 1-32)");
    }
  }
  const outIf4 = single(values, "outbound-if4");
  const outIf6 = single(values, "outbound-if6");

  // DNS.
  const dnsTexts = list(values, "dns");
  let servers: string[] | null = null;
  if (dnsTexts.length > 0) {
    if (dnsTexts.includes("none")) {
      if (dnsTexts.length > 1) fail("dns", null, '"none" cannot be combined with addresses');
      servers = [];
    } else {
      servers = [];
      for (const text of dnsTexts) {
        const address = parseUnicast("dns", text, true);
        if (!servers.includes(address.text)) servers.push(address.text);
      }
    }
  }
  const searchText = single(values, "search");
  let search: string[] | null = null;
  if (searchText !== null) {
    if (searchText.trim() === "none") {
      search = [];
    } else {
      search = searchText.split(/\s+/).filter((d) => d !== "");
      if (search.length === 0) fail("search", searchText, "names no domain (use 'none')");
      for (const domain of search) {
        if (!isValidDomainName(domain)) fail("search", domain, "is not a valid domain name");
      }
    }
  }
  const fqdn = single(values, "fqdn");
  if (fqdn !== null && !isValidDomainName(fqdn)) fail("fqdn", fqdn, "is not a valid domain name");
  const hostname = single(values, "hostname");
  if (hostname !== null && (!isValidDomainName(hostname) || hostname.includes("."))) {
    fail("hostname", hostname, "is not a valid host name (one label: letters, digits, '-')");
  }

  // Protocols and forwarding.
  const protocols = {
    tcp: !flag("no-tcp"),
    udp: !flag("no-udp"),
    icmp: !flag("no-icmp"),
    dhcp: !flag("no-dhcp"),
    dhcpv6: !flag("no-dhcpv6"),
    ndp: !flag("no-ndp"),
    ra: !flag("no-ra"),
  };
  const tcpSpecs = list(values, "tcp-ports");
  const udpSpecs = list(values, "udp-ports");
  if (!protocols.tcp && tcpSpecs.some((s) => s !== "none")) {
    throw new ConfigError("--tcp-ports cannot be combined with --no-tcp");
  }
  if (!protocols.udp && udpSpecs.some((s) => s !== "none")) {
    throw new ConfigError("--udp-ports cannot be combined with --no-udp");
  }
  const tcpForwards = parseForwards("tcp-ports", tcpSpecs);
  const udpForwards = parseForwards("udp-ports", udpSpecs);

  const ipv4: Ipv4Config = {
    address: addresses.v4,
    prefixLength,
    gateway: gateways.v4,
    outbound: outbound.v4,
    outboundInterface: outIf4 === null ? null : parseInterface("outbound-if4", outIf4),
    dnsForward: dnsForward.v4,
    dnsHost: dnsHost.v4,
    mapHostLoopback: mapHostLoopback.v4,
    mapGuestAddr: mapGuestAddr.v4,
  };
  const ipv6: FamilyConfig = {
    address: addresses.v6,
    gateway: gateways.v6,
    outbound: outbound.v6,
    outboundInterface: outIf6 === null ? null : parseInterface("outbound-if6", outIf6),
    dnsForward: dnsForward.v6,
    dnsHost: dnsHost.v6,
    mapHostLoopback: mapHostLoopback.v6,
    mapGuestAddr: mapGuestAddr.v6,
  };

  const runas = single(values, "runas");
  if (runas !== null && !/^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$/.test(runas)) {
    fail("runas", runas, "is not UID[:GID] or LOGIN[:GROUP]");
  }

  const ignored: string[] = [];
  const repairPath = single(values, "repair-path");
  if (repairPath !== null) ignored.push(`--repair-path ${repairPath}`);
  if (flag("migrate-exit")) ignored.push("--migrate-exit");
  if (flag("migrate-no-linger")) ignored.push("--migrate-no-linger");

  const config: Config = {
    action,
    mode: flag("vhost-user") ? "vhost-user" : "stream",
    socketPath,
    fd,
    oneOff: flag("one-off") || fd !== null,
    foreground: flag("foreground"),
    pidFile: parsePath("pid", single(values, "pid")),
    pcapFile: parsePath("pcap", single(values, "pcap")),
    runas,
    ignoredOptions: ignored,
    log: { level, file: parsePath("log-file", single(values, "log-file")), maxSize: logSize },
    mtu,
    macAddress,
    interfaceName,
    ipv4Enabled: !ipv6Only,
    ipv6Enabled: !ipv4Only,
    ipv4,
    ipv6,
    dns: {
      servers,
      search,
      fqdn,
      hostname,
      sendServers: !flag("no-dhcp-dns"),
      sendSearch: !flag("no-dhcp-search"),
    },
    protocols,
    tcpForwards,
    udpForwards,
    freebind: flag("freebind"),
    internal: { listenFd, readyFd, statusFd },
  };
  return deepFreeze(config);
}
