import assert from "node:assert/strict";
import { parseCommandLine } from "../config/command_line.ts";
import { ipv4ToString, ipv6ToString } from "./address.ts";
import { buildNetworkPlan } from "./host_config.ts";
import { overridesFromConfig } from "./plan_from_config.ts";

const NO_HOST = { readFile: () => null, networkInterfaces: () => [] };

Deno.test("`overridesFromConfig()` leaves everything to discovery without options", () => {
  assert.deepEqual(overridesFromConfig(parseCommandLine([])), {});
});

Deno.test("`overridesFromConfig()` maps passt's address, DNS and protocol options", () => {
  const config = parseCommandLine([
    "-a",
    "10.0.2.15",
    "-n",
    "16",
    "-g",
    "10.0.2.2",
    "-a",
    "2001:db8::15",
    "-g",
    "fe80::1",
    "-D",
    "10.0.2.3",
    "-S",
    "example.org",
    "-M",
    "02:00:00:00:00:01",
    "-m",
    "1500",
    "--fqdn",
    "vm.example.org",
    "--no-dhcp-dns",
    "--no-ra",
  ]);
  const o = overridesFromConfig(config);
  assert.equal(o.address4, "10.0.2.15");
  assert.equal(o.prefix4, 16);
  assert.equal(o.gateway4, "10.0.2.2");
  assert.equal(o.address6, "2001:db8::15");
  assert.equal(o.gateway6, "fe80::1");
  assert.deepEqual(o.dns, ["10.0.2.3"]);
  assert.deepEqual(o.search, ["example.org"]);
  assert.equal(o.ourMac, "02:00:00:00:00:01");
  assert.equal(o.mtu, 1500);
  assert.equal(o.fqdn, "vm.example.org");
  assert.equal(o.noDhcpDns, true);
  assert.equal(o.noRa, true);
  assert.equal(o.noDhcp, undefined);
  const plan = buildNetworkPlan(o, NO_HOST);
  assert.equal(ipv4ToString(plan.ipv4!.address), "10.0.2.15");
  assert.equal(plan.ipv4!.prefix, 16);
  assert.equal(ipv6ToString(plan.ipv6!.address!), "2001:db8::15");
  assert.equal(plan.enableRa, false);
  assert.equal(plan.advertiseDns, false);
});

Deno.test("`overridesFromConfig()` maps -4 and --dns-forward", () => {
  const o = overridesFromConfig(parseCommandLine(["-4", "--dns-forward", "10.0.2.3"]));
  assert.equal(o.ipv4Only, true);
  assert.equal(o.dnsForward4, "10.0.2.3");
  const plan = buildNetworkPlan(
    { ...o, address4: "10.0.2.15/24", gateway4: "10.0.2.2" },
    {
      readFile: (p) => p === "/etc/resolv.conf" ? "nameserver 127.0.0.53\n" : null,
      networkInterfaces: () => [],
    },
  );
  assert.equal(plan.ipv6, null);
  assert.deepEqual(plan.ipv4!.dns.map(ipv4ToString), ["10.0.2.3"]);
  assert.equal(ipv4ToString(plan.ipv4!.dnsForward!.match), "10.0.2.3");
  assert.equal(plan.ipv4!.dnsForward!.target, "127.0.0.53");
});
