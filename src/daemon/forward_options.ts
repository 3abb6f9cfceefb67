/**
 * Maps the parsed command line ({@link Config}) to the forwarder's plain options:
 * src/net/ never reads the command line itself (imports point down, and `config/` is
 * read by `main` and `daemon/` alone).
 *
 * @module
 */

import type { Config } from "../config/config.ts";
import type { ForwardOptions } from "../net/plan/fwd.ts";
import type { ForwardingOptions } from "../net/fwd_setup.ts";

/** Maps the parsed command line to {@link ForwardOptions}. */
export function forwardOptionsFromConfig(c: Config): ForwardOptions {
  return {
    mapHostLoopback4: c.ipv4.mapHostLoopback,
    mapHostLoopback6: c.ipv6.mapHostLoopback,
    mapGuestAddr4: c.ipv4.mapGuestAddr,
    mapGuestAddr6: c.ipv6.mapGuestAddr,
    dnsForward4: c.ipv4.dnsForward,
    dnsHost4: c.ipv4.dnsHost,
    dnsForward6: c.ipv6.dnsForward,
    dnsHost6: c.ipv6.dnsHost,
    outbound4: c.ipv4.outbound,
    outbound6: c.ipv6.outbound,
    outboundIf4: c.ipv4.outboundInterface,
    outboundIf6: c.ipv6.outboundInterface,
  };
}

/** Maps the parsed command line to {@link ForwardingOptions}. */
export function forwardingOptionsFromConfig(c: Config): ForwardingOptions {
  return {
    tcpForwards: c.tcpForwards,
    udpForwards: c.udpForwards,
    tcp: c.protocols.tcp,
    udp: c.protocols.udp,
    freebind: c.freebind,
  };
}
