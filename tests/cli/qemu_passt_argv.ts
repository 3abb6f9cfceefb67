/**
 * The argv QEMU ≥ 10.1 builds for `-netdev passt` (net/passt.c,
 * net_passt_decode_args()), rebuilt from the same netdev options in the same order, so
 * that tests can run bin/tpasst exactly as QEMU would:
 *
 * ```
 * PATH [--vhost-user] [--quiet] [--mtu N] [--address A] [--netmask M] [--mac-addr M]
 *   [--gateway G] [--interface I] [--outbound O] [--outbound-if4 I] [--outbound-if6 I]
 *   [--dns D] [--fqdn F] [--no-dhcp-dns] [--no-dhcp-search] [--map-host-loopback A]
 *   [--map-guest-addr A] [--dns-forward A] [--dns-host A] [--no-tcp] [--no-udp]
 *   [--no-icmp] [--no-dhcp] [--no-ndp] [--no-dhcpv6] [--no-ra] [--freebind]
 *   [--ipv6-only] [--ipv4-only] [--search "D1 D2"] [--tcp-ports P1,P2] [--udp-ports P1,P2]
 *   [PARAM...] --pid FILE --fd 3
 * ```
 *
 * `--quiet` is there unless `quiet=off`; booleans that default to on appear as `--no-…`
 * only when turned off; `ipv4=off` gives `--ipv6-only` and `ipv6=off` `--ipv4-only`;
 * list options are joined (search with spaces, ports with commas); every `param=` value
 * is one argument of its own, after QEMU's and before `--pid`. The pid file is one QEMU
 * created empty beforehand (g_file_open_tmp("passt-XXXXXX.pid")); the socket is fd 3.
 *
 * @module
 */

/** The `-netdev passt` options (QEMU's NetDevPasstOptions), by their QAPI meaning. */
export interface QemuPasstOptions {
  /** `vhost-user=on`. */
  vhostUser?: boolean;
  /** `quiet=off` drops the default `--quiet`. */
  quiet?: boolean;
  mtu?: number;
  address?: string;
  netmask?: string;
  mac?: string;
  gateway?: string;
  interface?: string;
  outbound?: string;
  outboundIf4?: string;
  outboundIf6?: string;
  dns?: string;
  fqdn?: string;
  /** `dhcp-dns=off`. */
  dhcpDns?: boolean;
  /** `dhcp-search=off`. */
  dhcpSearch?: boolean;
  mapHostLoopback?: string;
  mapGuestAddr?: string;
  dnsForward?: string;
  dnsHost?: string;
  tcp?: boolean;
  udp?: boolean;
  icmp?: boolean;
  dhcp?: boolean;
  ndp?: boolean;
  dhcpv6?: boolean;
  ra?: boolean;
  freebind?: boolean;
  ipv4?: boolean;
  ipv6?: boolean;
  /** `search.0=…,search.1=…`. */
  search?: readonly string[];
  /** `tcp-ports.0=…,tcp-ports.1=…`. */
  tcpPorts?: readonly string[];
  udpPorts?: readonly string[];
  /** `param.0=…,param.1=…`: passed through as they are. */
  param?: readonly string[];
}

/** The descriptor QEMU hands the backend its end of the socketpair on. */
export const QEMU_PASST_FD = 3;

/** The arguments after argv[0] (QEMU's `path=`) that QEMU 10.1 passes for `o`. */
export function qemuPasstArgv(o: QemuPasstOptions, pidFile: string): string[] {
  const args: string[] = [];
  const valued = (flag: string, value: string | number | undefined) => {
    if (value !== undefined) args.push(flag, String(value));
  };
  const off = (flag: string, value: boolean | undefined) => {
    if (value === false) args.push(flag);
  };
  if (o.vhostUser === true) args.push("--vhost-user");
  if (o.quiet !== false) args.push("--quiet");
  valued("--mtu", o.mtu);
  valued("--address", o.address);
  valued("--netmask", o.netmask);
  valued("--mac-addr", o.mac);
  valued("--gateway", o.gateway);
  valued("--interface", o.interface);
  valued("--outbound", o.outbound);
  valued("--outbound-if4", o.outboundIf4);
  valued("--outbound-if6", o.outboundIf6);
  valued("--dns", o.dns);
  valued("--fqdn", o.fqdn);
  off("--no-dhcp-dns", o.dhcpDns);
  off("--no-dhcp-search", o.dhcpSearch);
  valued("--map-host-loopback", o.mapHostLoopback);
  valued("--map-guest-addr", o.mapGuestAddr);
  valued("--dns-forward", o.dnsForward);
  valued("--dns-host", o.dnsHost);
  off("--no-tcp", o.tcp);
  off("--no-udp", o.udp);
  off("--no-icmp", o.icmp);
  off("--no-dhcp", o.dhcp);
  off("--no-ndp", o.ndp);
  off("--no-dhcpv6", o.dhcpv6);
  off("--no-ra", o.ra);
  if (o.freebind === true) args.push("--freebind");
  off("--ipv6-only", o.ipv4);
  off("--ipv4-only", o.ipv6);
  if (o.search !== undefined && o.search.length > 0) args.push("--search", o.search.join(" "));
  if (o.tcpPorts !== undefined && o.tcpPorts.length > 0) {
    args.push("--tcp-ports", o.tcpPorts.join(","));
  }
  if (o.udpPorts !== undefined && o.udpPorts.length > 0) {
    args.push("--udp-ports", o.udpPorts.join(","));
  }
  args.push(...(o.param ?? []));
  args.push("--pid", pidFile, "--fd", String(QEMU_PASST_FD));
  return args;
}
