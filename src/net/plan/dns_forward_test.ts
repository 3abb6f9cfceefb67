import assert from "node:assert/strict";
import { dnsRule4, dnsRule6 } from "./dns_forward.ts";
import { dualStackPlan } from "../../../tests/support/net/built_plan.ts";
import { parseIpv4, parseIpv6 } from "../../../ffi/ip_address_text.ts";

/** The dual-stack test plan advertising `dns4` and `dns6` as the guest's resolvers. */
function planWithResolvers(dns4: string[], dns6: string[]) {
  const plan = dualStackPlan();
  plan.ipv4!.dns = dns4.map((a) => parseIpv4(a)!);
  plan.ipv6!.dns = dns6.map((a) => parseIpv6(a)!);
  return plan;
}

Deno.test("`dnsRule4()` and `dnsRule6()` send the forwarded address to the first other advertised resolver", () => {
  const plan = planWithResolvers(["10.0.2.3", "192.0.2.53"], ["fd00::3", "2001:db8::53"]);
  const options = { dnsForward4: "10.0.2.3", dnsForward6: "fd00::3", dnsHostPort: 5353 };
  const rule4 = dnsRule4(plan, options)!;
  assert.deepEqual(
    [rule4.match, rule4.target, rule4.targetPort],
    [parseIpv4("10.0.2.3"), "192.0.2.53", 5353],
  );
  const rule6 = dnsRule6(plan, options)!;
  assert.deepEqual([rule6.match, rule6.target], [parseIpv6("fd00::3"), "2001:db8::53"]);
  assert.deepEqual(rule6.targetAddress, parseIpv6("2001:db8::53"));
});

Deno.test("`dnsRule4()` and `dnsRule6()` take --dns-host over the advertised resolvers, and give no rule without a match or a target", () => {
  const plan = planWithResolvers(["10.0.2.3", "192.0.2.53"], ["fd00::3", "2001:db8::53"]);
  const hosts = { dnsForward4: "10.0.2.3", dnsHost4: "127.0.0.1", dnsForward6: "fd00::3" };
  assert.equal(dnsRule4(plan, hosts)!.target, "127.0.0.1");
  assert.equal(dnsRule6(plan, { ...hosts, dnsHost6: "::1" })!.target, "::1");
  assert.equal(dnsRule4(planWithResolvers([], []), {}), null, "nothing to forward");
  assert.equal(dnsRule6(planWithResolvers(["10.0.2.3"], ["fd00::3"]), hosts), null, "no target");
});
