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

import type { NetworkPlan } from "./network_plan.ts";
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

/**
 * The IPv4 DNS rule: `--dns-forward` (else the plan's forward match), sent to
 * `--dns-host` (else the plan's loopback resolver, else the first advertised server).
 * Null when nothing is to be forwarded.
 */
export function dnsRule4(plan: NetworkPlan, o: DnsForwardOptions): DnsRule<number> | null {
  const p = plan.ipv4;
  if (!p) return null;
  const match = o.dnsForward4 ? parseIpv4(o.dnsForward4) : (p.dnsForward?.match ?? null);
  if (match === null) return null;
  let target = o.dnsHost4 ?? p.dnsForward?.target ?? null;
  if (target === null) {
    const first = p.dns.find((a) => a !== match);
    target = first !== undefined ? ipv4ToString(first) : null;
  }
  return target === null ? null : dnsRule(match, target, o);
}

/** The IPv6 DNS rule, like {@link dnsRule4}. */
export function dnsRule6(plan: NetworkPlan, o: DnsForwardOptions): DnsRule<Uint8Array> | null {
  const p = plan.ipv6;
  if (!p) return null;
  const match = o.dnsForward6 ? parseIpv6(o.dnsForward6) : (p.dnsForward?.match ?? null);
  if (match === null) return null;
  let target = o.dnsHost6 ?? p.dnsForward?.target ?? null;
  if (target === null) {
    const first = p.dns.find((a) => ipv6ToString(a) !== ipv6ToString(match));
    target = first !== undefined ? ipv6ToString(first) : null;
  }
  return target === null ? null : dnsRule(match, target, o);
}
