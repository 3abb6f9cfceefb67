import { parseCommandLine } from "../config/command_line.ts";
import type { HostSources } from "../net/plan/network_plan.ts";
import { assertEquals, assertThrows } from "../../tests/support/assert.ts";
import { checkNamedInterfaces, hostConfigOverrides, networkPlanFor } from "./network_wiring.ts";
import { ipv4ToString, ipv6ToString } from "../../ffi/ip_address_text.ts";

/** A host whose only resolver is a loopback one (systemd-resolved), nothing else discovered. */
const LOOPBACK_RESOLVER_HOST: HostSources = {
  readFile: (path) =>
    path === "/etc/resolv.conf" ? "nameserver 127.0.0.53\nnameserver ::1\n" : null,
  networkInterfaces: () => [],
};

/** The guest addresses and gateways a host without discovered interfaces needs. */
const GUEST_ADDRESSES = [
  "-a",
  "10.0.2.15",
  "-g",
  "10.0.2.2",
  "-a",
  "2001:db8::15",
  "-g",
  "fe80::1",
];

Deno.test("hostConfigOverrides() leaves everything to discovery by default", () => {
  assertEquals(hostConfigOverrides(parseCommandLine([])), {});
});

Deno.test("hostConfigOverrides() maps every guest-configuration option, and --outbound-if* to none of them", () => {
  const config = parseCommandLine([
    ...["-i", "eth0", "--outbound-if4", "eth1", "--outbound-if6", "eth2"],
    ...["-a", "10.0.2.15", "-n", "255.255.255.0", "-a", "2001:db8::15"],
    ...["-g", "10.0.2.2", "-g", "fe80::1", "-D", "10.0.2.3", "-S", "a.example b.example"],
    ...["-M", "52:54:00:00:00:01", "-m", "1500", "--fqdn", "vm.example", "-H", "vm"],
    ...["--no-dhcp-dns", "--no-dhcp-search", "--no-dhcp", "--no-ndp", "--no-dhcpv6", "--no-ra"],
  ]);
  assertEquals(hostConfigOverrides(config), {
    interface: "eth0",
    address4: "10.0.2.15",
    prefix4: 24,
    address6: "2001:db8::15",
    gateway4: "10.0.2.2",
    gateway6: "fe80::1",
    dns: ["10.0.2.3"],
    search: ["a.example", "b.example"],
    ourMac: "52:54:00:00:00:01",
    mtu: 1500,
    fqdn: "vm.example",
    hostname: "vm",
    noDhcpDns: true,
    noDhcpSearch: true,
    noDhcp: true,
    noNdp: true,
    noDhcpv6: true,
    noRa: true,
  });
});

Deno.test("hostConfigOverrides() maps -4, -6, -D none and -S none", () => {
  assertEquals(hostConfigOverrides(parseCommandLine(["-4", "-D", "none", "-S", "none"])), {
    ipv4Only: true,
    dns: [],
    search: [],
  });
  assertEquals(hostConfigOverrides(parseCommandLine(["-6"])), { ipv6Only: true });
});

Deno.test("hostConfigOverrides() maps --dns-forward for each family", () => {
  const config = parseCommandLine(["--dns-forward", "10.0.2.3", "--dns-forward", "fd00::3"]);
  assertEquals(hostConfigOverrides(config), { dnsForward4: "10.0.2.3", dnsForward6: "fd00::3" });
});

Deno.test("networkPlanFor() advertises the --dns-forward address in place of a loopback host resolver", () => {
  const config = parseCommandLine([
    ...GUEST_ADDRESSES,
    ...["--dns-forward", "10.0.2.3", "--dns-forward", "fd00::3"],
  ]);
  const plan = networkPlanFor(config, LOOPBACK_RESOLVER_HOST);
  assertEquals(plan.ipv4!.dns.map(ipv4ToString), ["10.0.2.3"]);
  assertEquals(ipv4ToString(plan.ipv4!.dnsForward!.match), "10.0.2.3");
  assertEquals(plan.ipv4!.dnsForward!.target, "127.0.0.53");
  assertEquals(plan.ipv6!.dns.map(ipv6ToString), ["fd00::3"]);
  assertEquals(ipv6ToString(plan.ipv6!.dnsForward!.match), "fd00::3");
  assertEquals(plan.ipv6!.dnsForward!.target, "::1");
});

Deno.test("hostConfigOverrides() maps --map-host-loopback, and --no-map-gw to none", () => {
  const config = parseCommandLine(["--map-host-loopback", "10.0.2.9"]);
  assertEquals(hostConfigOverrides(config), { mapHostLoopback4: "10.0.2.9" });
  assertEquals(hostConfigOverrides(parseCommandLine(["--no-map-gw"])), {
    mapHostLoopback4: "none",
    mapHostLoopback6: "none",
  });
});

Deno.test("networkPlanFor() advertises --dns-forward for a host resolver at the gateway only while the gateway maps to the host's loopback", () => {
  const gatewayResolver: HostSources = {
    readFile: (path) => path === "/etc/resolv.conf" ? "nameserver 10.0.2.2\n" : null,
    networkInterfaces: () => [],
  };
  const forward = [...GUEST_ADDRESSES, "-4", "--dns-forward", "10.0.2.3"];
  const shadowed = networkPlanFor(parseCommandLine(forward), gatewayResolver);
  assertEquals(shadowed.ipv4!.dns.map(ipv4ToString), ["10.0.2.3"]);
  assertEquals(shadowed.ipv4!.dnsForward!.target, "10.0.2.2");
  const plain = networkPlanFor(parseCommandLine([...forward, "--no-map-gw"]), gatewayResolver);
  assertEquals(plain.ipv4!.dns.map(ipv4ToString), ["10.0.2.2"]);
  assertEquals(plain.ipv4!.dnsForward, null);
});

Deno.test("networkPlanFor() advertises the gateway for a loopback host resolver without --dns-forward", () => {
  const plan = networkPlanFor(parseCommandLine(GUEST_ADDRESSES), LOOPBACK_RESOLVER_HOST);
  assertEquals(plan.ipv4!.dns.map(ipv4ToString), ["10.0.2.2"]);
  assertEquals(plan.ipv6!.dns.map(ipv6ToString), ["fe80::1"]);
});

Deno.test("networkPlanFor() applies the address, prefix and protocol options", () => {
  const config = parseCommandLine([
    ...GUEST_ADDRESSES,
    ...["-n", "16", "-4", "--dns-forward", "10.0.2.3", "--no-dhcp-dns", "--no-ra"],
  ]);
  const plan = networkPlanFor(config, LOOPBACK_RESOLVER_HOST);
  assertEquals(ipv4ToString(plan.ipv4!.address), "10.0.2.15");
  assertEquals(plan.ipv4!.prefix, 16);
  assertEquals(plan.ipv6, null);
  assertEquals(plan.enableRa, false);
  assertEquals(plan.advertiseDns, false);
});

Deno.test("checkNamedInterfaces() refuses an interface the host lacks, naming the option", () => {
  const exists = (name: string) => name === "eth0";
  checkNamedInterfaces(parseCommandLine(["-i", "eth0", "--outbound-if4", "eth0"]), exists);
  assertThrows(
    () => checkNamedInterfaces(parseCommandLine(["-i", "nosuchif"]), exists),
    /^--interface nosuchif: no such network interface on this host$/,
  );
  assertThrows(
    () => checkNamedInterfaces(parseCommandLine(["--outbound-if6", "wg9"]), exists),
    /^--outbound-if6 wg9: no such network interface on this host$/,
  );
  // Checked against the real host: "lo" always exists.
  checkNamedInterfaces(parseCommandLine(["-i", "lo"]));
  assertThrows(
    () => checkNamedInterfaces(parseCommandLine(["-i", "tpnosuch0"])),
    /no such network interface/,
  );
});
