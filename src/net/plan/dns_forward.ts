/**
 * DNS forwarding rules: which guest-side address (the advertised resolver) is
 * redirected, port 53, to which host resolver. Derived from the network plan (a
 * loopback resolver on the host, or one at the address mapped to the host's loopback,
 * is advertised as the `--dns-forward` address or the gateway and forwarded to) and
 * from `--dns-forward` / `--dns-host`. The UDP and TCP translators apply the rule
 * through {@link translateOutbound4} / {@link translateOutbound6} in fwd.ts.
 *
 * @module
 */

import type { DnsForward, NetworkPlan } from "./network_plan.ts";
import {
  addressBytes,
  ipv4ToString,
  ipv6ToString,
  parseIpv4,
  parseIpv6,
} from "../../../ffi/ip_address_text.ts";

/** The DNS port (RFC 1035 §4.2). */
export const DNS_PORT = 53;

/** One forwarding rule: guest → `match`:53 goes to host `target`:53. */
export interface DnsRule<A> {
  match: A;
  /** Host resolver address as text, for logs and permission checks. */
  target: string;
  /** The same address as 4 or 16 bytes for the socket calls, or null when `target` is no literal. */
  targetAddress: Uint8Array | null;
  /** Host resolver port (53 except in tests). */
  targetPort: number;
}

/** DNS options from the command line (all optional). */
export interface DnsForwardOptions {
  /** `--dns-forward` for IPv4: guest-side address to redirect. */
  dnsForward4?: string | null;
  /** `--dns-host` for IPv4: host resolver the redirect goes to. */
  dnsHost4?: string | null;
  /** `--dns-forward` for IPv6. */
  dnsForward6?: string | null;
  /** `--dns-host` for IPv6. */
  dnsHost6?: string | null;
  /** Port of the host resolver (default 53; tests run resolvers on other ports). */
  dnsHostPort?: number;
}

function dnsRule<A>(match: A, target: string, o: DnsForwardOptions): DnsRule<A> {
  return {
    match,
    target,
    targetAddress: addressBytes(target),
    targetPort: o.dnsHostPort ?? DNS_PORT,
  };
}

/** IPv4 addresses (unsigned 32-bit numbers) to and from text. */
const IPV4_TEXT = { parse: parseIpv4, text: ipv4ToString };
/** IPv6 addresses (16 bytes) to and from text. */
const IPV6_TEXT = { parse: parseIpv6, text: ipv6ToString };

/**
 * The DNS rule of one family's half of the plan `p`: guest-side address `forward`
 * (`--dns-forward`, else the plan's forward match), sent to `host` (`--dns-host`, else
 * the plan's loopback resolver, else the first advertised server other than the match).
 * Null when nothing is to be forwarded.
 */
function familyDnsRule<A>(
  p: { dns: readonly A[]; dnsForward: DnsForward<A> | null } | null,
  forward: string | null | undefined,
  host: string | null | undefined,
  address: { parse(text: string): A | null; text(address: A): string },
  o: DnsForwardOptions,
): DnsRule<A> | null {
  if (!p) return null;
  const match = forward ? address.parse(forward) : (p.dnsForward?.match ?? null);
  if (match === null) return null;
  let target = host ?? p.dnsForward?.target ?? null;
  if (target === null) {
    const first = p.dns.find((a) => address.text(a) !== address.text(match));
    target = first !== undefined ? address.text(first) : null;
  }
  return target === null ? null : dnsRule(match, target, o);
}

/**
 * The IPv4 DNS rule: `--dns-forward` (else the plan's forward match), sent to
 * `--dns-host` (else the plan's loopback resolver, else the first advertised server).
 * Null when nothing is to be forwarded.
 */
export function dnsRule4(plan: NetworkPlan, o: DnsForwardOptions): DnsRule<number> | null {
  return familyDnsRule(plan.ipv4, o.dnsForward4, o.dnsHost4, IPV4_TEXT, o);
}

/** The IPv6 DNS rule, like {@link dnsRule4}. */
export function dnsRule6(plan: NetworkPlan, o: DnsForwardOptions): DnsRule<Uint8Array> | null {
  return familyDnsRule(plan.ipv6, o.dnsForward6, o.dnsHost6, IPV6_TEXT, o);
}
