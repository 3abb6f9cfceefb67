/**
 * Maps the command line's {@link Config} onto the {@link HostConfigOverrides} that
 * {@link buildNetworkPlan} takes, so that the daemon builds its network plan with
 * `buildNetworkPlan(overridesFromConfig(config))`.
 *
 * @module
 */

import type { Config } from "../config/config.ts";
import type { HostConfigOverrides } from "./host_config.ts";

/** The network-plan overrides the command line asks for (unset options stay undefined). */
export function overridesFromConfig(config: Config): HostConfigOverrides {
  const o: HostConfigOverrides = {};
  if (config.interfaceName !== null) o.interface = config.interfaceName;
  if (config.ipv4.address !== null) o.address4 = config.ipv4.address;
  if (config.ipv4.prefixLength !== null) o.prefix4 = config.ipv4.prefixLength;
  if (config.ipv4.gateway !== null) o.gateway4 = config.ipv4.gateway;
  if (config.ipv6.address !== null) o.address6 = config.ipv6.address;
  if (config.ipv6.gateway !== null) o.gateway6 = config.ipv6.gateway;
  if (config.ipv4.dnsForward !== null) o.dnsForward4 = config.ipv4.dnsForward;
  if (config.ipv6.dnsForward !== null) o.dnsForward6 = config.ipv6.dnsForward;
  if (config.dns.servers !== null) o.dns = [...config.dns.servers];
  if (config.dns.search !== null) o.search = [...config.dns.search];
  if (config.dns.fqdn !== null) o.fqdn = config.dns.fqdn;
  if (config.macAddress !== null) o.ourMac = config.macAddress;
  if (config.mtu !== null) o.mtu = config.mtu;
  if (!config.ipv6Enabled) o.ipv4Only = true;
  if (!config.ipv4Enabled) o.ipv6Only = true;
  if (!config.dns.sendServers) o.noDhcpDns = true;
  if (!config.dns.sendSearch) o.noDhcpSearch = true;
  if (!config.protocols.dhcp) o.noDhcp = true;
  if (!config.protocols.dhcpv6) o.noDhcpv6 = true;
  if (!config.protocols.ndp) o.noNdp = true;
  if (!config.protocols.ra) o.noRa = true;
  return o;
}
