/**
 * A fixed network plan and forwarding rules for the translators' tests: guest
 * 10.0.2.15/24 and fd00::15, gateway 10.0.2.2 / fd00::2 (mapped to the host's
 * loopback), DNS address 10.0.2.3 / fd00::3 forwarded to a resolver the test names.
 * Not used by the daemon.
 *
 * @module
 */

import {
  buildForwardRules,
  type ForwardOptions,
  type ForwardRules,
} from "../../../src/net/plan/fwd.ts";
import type { NetworkPlan } from "../../../src/net/plan/network_plan.ts";
import { parseIpv4, parseIpv6 } from "../../../ffi/ip_address_text.ts";

/** The guest's IPv4 address in test plans. */
export const TEST_GUEST4 = parseIpv4("10.0.2.15")!;
/** The gateway (reaches the host's 127.0.0.1). */
export const TEST_GATEWAY4 = parseIpv4("10.0.2.2")!;
/** The advertised DNS address. */
export const TEST_DNS4 = parseIpv4("10.0.2.3")!;
/** The guest's IPv6 address. */
export const TEST_GUEST6 = parseIpv6("fd00::15")!;
/** The IPv6 gateway (reaches ::1). */
export const TEST_GATEWAY6 = parseIpv6("fd00::2")!;

/** Builds the test plan; `dnsTarget` is the host resolver DNS goes to (e.g. "127.0.0.1"). */
export function testPlan(dnsTarget: string | null = null): NetworkPlan {
  return {
    ourMac: 0x9a559a559a55,
    mtu: 65520,
    ipv4: {
      ifname: "test0",
      address: TEST_GUEST4,
      prefix: 24,
      gateway: TEST_GATEWAY4,
      dns: [TEST_DNS4],
      dnsForward: dnsTarget ? { match: TEST_DNS4, target: dnsTarget } : null,
    },
    ipv6: {
      ifname: "test0",
      address: TEST_GUEST6,
      prefix: 64,
      gateway: TEST_GATEWAY6,
      routerLinkLocal: parseIpv6("fe80::1")!,
      dns: [],
      dnsForward: null,
    },
    search: [],
    fqdn: null,
    hostname: null,
    advertiseDns: true,
    advertiseSearch: false,
    enableDhcp: false,
    enableNdp: false,
    enableDhcpv6: false,
    enableRa: false,
    linkLocalFallback: false,
    hostMtu: null,
    notes: [],
  };
}

/** Forwarding rules over {@link testPlan}. */
export function testRules(dnsTarget: string | null = null, o: ForwardOptions = {}): ForwardRules {
  return buildForwardRules(testPlan(dnsTarget), o);
}
