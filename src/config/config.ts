/**
 * The daemon's configuration: everything the command line says, validated and
 * deeply frozen. Produced once by {@link parseCommandLine} and never changed.
 *
 * Addresses are kept as canonical text (`192.0.2.1`, `2001:db8::1`, lowercase
 * `52:54:00:12:34:56`) so that the object can be frozen and printed; each layer
 * converts them to its own binary form once at start.
 *
 * @module
 */

import type { LogLevel } from "../log/logger.ts";
import { type PortForwardTable } from "../net/plan/port_forward.ts";

/** What the process was asked to do. */
export type ConfigAction = "run" | "help" | "version" | "print-capabilities";

/** A line logged at start about an option accepted without (full) effect. */
export interface ConfigNote {
  /** `warn` when tpasst cannot honour what was asked; `debug`/`info` when it changes nothing. */
  readonly level: "debug" | "info" | "warn";
  readonly message: string;
}

/** Which protocol the frontend speaks on the socket. */
export type FrontendMode = "vhost-user" | "stream";

/** Per-address-family settings; `null` means "derive from the host" (net/plan/network_plan.ts discovery). */
export interface FamilyConfig {
  /** Address assigned to the guest (`-a`). */
  readonly address: string | null;
  /** Default gateway announced to the guest (`-g`). */
  readonly gateway: string | null;
  /** Source address bound for outbound sockets (`-o`). */
  readonly outbound: string | null;
  /** Host interface outbound sockets are bound to (`--outbound-if4` / `--outbound-if6`). */
  readonly outboundInterface: string | null;
  /** Guest-side address mapped to the first DNS resolver (`--dns-forward`). */
  readonly dnsForward: string | null;
  /** Host-side resolver that forwarded DNS queries go to (`--dns-host`). */
  readonly dnsHost: string | null;
  /**
   * Guest-side address that reaches the host's loopback (`--map-host-loopback`):
   * `null` = default (the gateway), `"none"` = disabled (also by `--no-map-gw`).
   */
  readonly mapHostLoopback: string | null;
  /** Guest-side address translated to the guest's own address (`--map-guest-addr`); `"none"` disables. */
  readonly mapGuestAddr: string | null;
}

/** IPv4-only settings. */
export interface Ipv4Config extends FamilyConfig {
  /** Prefix length of the assigned address (`-n`, dotted or bits); `null` = derive. */
  readonly prefixLength: number | null;
}

/** Which built-in protocol handlers are enabled (`--no-*` turns them off). */
export interface ProtocolSwitches {
  readonly tcp: boolean;
  readonly udp: boolean;
  readonly icmp: boolean;
  readonly dhcp: boolean;
  readonly dhcpv6: boolean;
  readonly ndp: boolean;
  readonly ra: boolean;
}

/** DNS settings handed to the guest and used for DNS forwarding. */
export interface DnsConfig {
  /** Resolvers (`-D`, repeatable): `null` = read the host's, `[]` = `-D none`. */
  readonly servers: readonly string[] | null;
  /** Search domains (`-S`): `null` = read the host's, `[]` = `-S none`. */
  readonly search: readonly string[] | null;
  /** Fully qualified domain name sent to the guest (`--fqdn`). */
  readonly fqdn: string | null;
  /** Host name sent to the guest via DHCP option 12 (`-H`/`--hostname`). */
  readonly hostname: string | null;
  /** Whether resolvers are sent via DHCP/DHCPv6/NDP (`--no-dhcp-dns` clears it). */
  readonly sendServers: boolean;
  /** Whether the search list is sent via DHCP/DHCPv6/NDP (`--no-dhcp-search` clears it). */
  readonly sendSearch: boolean;
}

/** Logging settings. */
export interface LogConfig {
  /** Least severe level written (`-q` → warn, default info, `-d` → debug, `--trace` → trace). */
  readonly level: LogLevel;
  /** Log file (`-l`), opened through the helper; `null` = standard error. */
  readonly file: string | null;
  /** Maximum log file size in bytes (`--log-size`). */
  readonly maxSize: number;
}

/** Options that exist only between a daemonizing parent and its child. */
export interface InternalConfig {
  /** Inherited listening socket, already bound at {@link Config.socketPath}. */
  readonly listenFd: number | null;
  /** Pipe to write the readiness byte to once started (passed by `spawnDaemon`). */
  readonly readyFd: number | null;
  /** Socket to send start-up log lines to, relayed by the parent to its stderr. */
  readonly statusFd: number | null;
}

/** vhost-user live migration (`--repair-path`, `--migrate-exit`, `--migrate-no-linger`). */
export interface MigrationConfig {
  /**
   * Where a passt-repair helper connects (`--repair-path`); null = the socket path
   * plus ".repair"; ignored when {@link repairDisabled}.
   */
  readonly repairPath: string | null;
  /** `--repair-path none`: no helper socket (repair mode only with CAP_NET_ADMIN). */
  readonly repairDisabled: boolean;
  /** Exit after a completed migration as source (`--migrate-exit`). */
  readonly exitAfter: boolean;
  /** Close migrated sockets at once, without FIN or RST (`--migrate-no-linger`). */
  readonly noLinger: boolean;
}

/** The validated, immutable configuration of one tpasst process. */
export interface Config {
  /** What to do: run the daemon, or print something and exit. */
  readonly action: ConfigAction;
  /** Protocol spoken with the frontend (`--vhost-user` or passt's stream protocol). */
  readonly mode: FrontendMode;
  /** Unix socket to listen on (`-s`); `null` = first free `/tmp/tpasst_N.socket`. */
  readonly socketPath: string | null;
  /** Inherited connected socket (`-F`/`--fd`), used instead of listening. */
  readonly fd: number | null;
  /** Exit once the first frontend goes away (`-1`, implied by `--fd`). */
  readonly oneOff: boolean;
  /** Stay in the foreground (`-f`) instead of daemonizing. */
  readonly foreground: boolean;
  /** PID file written once started (`-P`). */
  readonly pidFile: string | null;
  /** Packet capture file (`-p`). */
  readonly pcapFile: string | null;
  /** Requested user to run as (`--runas`); accepted but never acted on. */
  readonly runas: string | null;
  /** Seconds between statistics lines on standard error (`--stats`); `null` = none. */
  readonly statsDelay: number | null;
  /** Live migration settings (vhost-user). */
  readonly migration: MigrationConfig;
  /**
   * What to log at start about options accepted without (full) effect: vhost-user
   * migration, `--conf-path`, values of a disabled IP version...
   */
  readonly notes: readonly ConfigNote[];
  /** Logging settings. */
  readonly log: LogConfig;
  /** MTU announced to the guest (`-m`); `0` = none announced; `null` = the default. */
  readonly mtu: number | null;
  /** MAC address we use toward the guest (`-M`); `null` = derive. */
  readonly macAddress: string | null;
  /** Host interface to derive addresses and routes from (`-i`). */
  readonly interfaceName: string | null;
  /** Whether IPv4 is enabled (`-6` clears it). */
  readonly ipv4Enabled: boolean;
  /** Whether IPv6 is enabled (`-4` clears it). */
  readonly ipv6Enabled: boolean;
  /** IPv4 settings. */
  readonly ipv4: Ipv4Config;
  /** IPv6 settings. */
  readonly ipv6: FamilyConfig;
  /** DNS settings. */
  readonly dns: DnsConfig;
  /** Enabled protocol handlers. */
  readonly protocols: ProtocolSwitches;
  /** Host ports forwarded to the guest (`-t`). */
  readonly tcpForwards: PortForwardTable;
  /** Host ports forwarded to the guest (`-u`). */
  readonly udpForwards: PortForwardTable;
  /** Allow binding forwarded ports to non-local addresses (`--freebind`, IP_FREEBIND). */
  readonly freebind: boolean;
  /** Parent/child plumbing of daemonizing. */
  readonly internal: InternalConfig;
}

/** Freezes `value` and everything reachable from it; returns it typed as read-only. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key of Object.keys(value)) {
      deepFreeze((value as Record<string, unknown>)[key]);
    }
  }
  return value;
}
