import assert from "node:assert/strict";
import {
  buildNetworkPlan,
  DEFAULT_MTU,
  DEFAULT_OUR_MAC,
  type HostInterfaceAddress,
  type HostSources,
  parseProcNetIpv6Route,
  parseProcNetRoute,
  parseResolvConf,
  renderNetworkPlan,
} from "./network_plan.ts";
import { ipv4ToString, ipv6ToString } from "../../../ffi/ip_address_text.ts";

const ROUTE = `Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
`;

const ROUTE6 =
  `fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
`;

const IFACES: HostInterfaceAddress[] = [
  { family: "IPv4", name: "lo", address: "127.0.0.1", netmask: "255.0.0.0" },
  { family: "IPv4", name: "eth0", address: "192.0.2.2", netmask: "255.255.255.0" },
  { family: "IPv4", name: "wlan0", address: "192.168.1.7", netmask: "255.255.255.0" },
  { family: "IPv6", name: "eth0", address: "fe80::fc:ff:fe00:1", netmask: "ffff:ffff:ffff:ffff::" },
  { family: "IPv6", name: "eth0", address: "fd00::2", netmask: "ffff:ffff:ffff:ffff::" },
];

function sources(files: Record<string, string>, ifaces = IFACES): HostSources {
  return {
    readFile: (p) => files[p] ?? null,
    networkInterfaces: () => ifaces,
  };
}

const BASE = {
  "/proc/net/route": ROUTE,
  "/proc/net/ipv6_route": ROUTE6,
  "/etc/resolv.conf": "# comment\nnameserver 10.255.255.53\nsearch example.org corp.example\n",
  "/sys/class/net/eth0/mtu": "1500\n",
};

Deno.test("`parseProcNetRoute()` returns default routes by metric with decoded gateways", () => {
  const r = parseProcNetRoute(ROUTE);
  assert.deepEqual(r.map((x) => [x.ifname, ipv4ToString(x.gateway), x.metric]), [
    ["eth0", "192.0.2.1", 100],
    ["wlan0", "192.168.1.1", 600],
  ]);
  assert.deepEqual(parseProcNetRoute("garbage\n\tnot a route\n"), []);
});

Deno.test("`parseProcNetIpv6Route()` skips non-default and reject routes", () => {
  const r = parseProcNetIpv6Route(ROUTE6);
  assert.equal(r.length, 1);
  assert.equal(r[0].ifname, "eth0");
  assert.equal(ipv6ToString(r[0].gateway), "fe80::1");
});

Deno.test("`parseResolvConf()` reads nameservers and the last search line", () => {
  const r = parseResolvConf(
    "nameserver 1.1.1.1 ; x\nsearch a.example\ndomain b.example\n" +
      "nameserver ::1\n#nameserver 9.9.9.9\n",
  );
  assert.deepEqual(r, { nameservers: ["1.1.1.1", "::1"], search: ["b.example"] });
});

Deno.test("`buildNetworkPlan()` copies the template interface's addresses and gateway", () => {
  const p = buildNetworkPlan({}, sources(BASE));
  assert.equal(p.ourMac, DEFAULT_OUR_MAC);
  assert.equal(p.mtu, DEFAULT_MTU);
  assert.equal(p.ipv4!.ifname, "eth0");
  assert.equal(ipv4ToString(p.ipv4!.address), "192.0.2.2");
  assert.equal(p.ipv4!.prefix, 24);
  assert.equal(ipv4ToString(p.ipv4!.gateway), "192.0.2.1");
  assert.deepEqual(p.ipv4!.dns.map(ipv4ToString), ["10.255.255.53"]);
  assert.equal(p.ipv4!.dnsForward, null);
  assert.equal(ipv6ToString(p.ipv6!.address!), "fd00::2");
  assert.equal(ipv6ToString(p.ipv6!.gateway), "fe80::1");
  assert.equal(ipv6ToString(p.ipv6!.routerLinkLocal), "fe80::1");
  assert.deepEqual(p.search, ["example.org", "corp.example"]);
  assert.equal(p.hostMtu, 1500);
  assert.equal(p.hostname, null);
  assert.equal(p.linkLocalFallback, false);
  assert.ok(p.enableDhcp && p.enableDhcpv6 && p.enableNdp && p.enableRa);
});

Deno.test("`buildNetworkPlan()` maps a loopback resolver to the gateway address", () => {
  const p = buildNetworkPlan(
    {},
    sources({ ...BASE, "/etc/resolv.conf": "nameserver 127.0.0.53\nsearch lan\n" }),
  );
  assert.deepEqual(p.ipv4!.dns.map(ipv4ToString), ["192.0.2.1"]);
  assert.equal(ipv4ToString(p.ipv4!.dnsForward!.match), "192.0.2.1");
  assert.equal(p.ipv4!.dnsForward!.target, "127.0.0.53");
  // No IPv6 resolver: IPv6 guests use the gateway too, forwarded to the same resolver.
  assert.deepEqual(p.ipv6!.dns.map((a) => ipv6ToString(a)), ["fe80::1"]);
  assert.equal(p.ipv6!.dnsForward!.target, "127.0.0.53");
  const p6 = buildNetworkPlan({}, sources({ ...BASE, "/etc/resolv.conf": "nameserver ::1\n" }));
  assert.equal(p6.ipv6!.dnsForward!.target, "::1");
  assert.deepEqual(p6.ipv4!.dns, []);
});

Deno.test("`buildNetworkPlan()` takes a resolver with a zone (fe80::1%eth0) by its address", () => {
  const resolv = "nameserver fd00::53%eth0\nnameserver 10.0.0.53\n";
  const p = buildNetworkPlan({}, sources({ ...BASE, "/etc/resolv.conf": resolv }));
  assert.deepEqual(p.ipv6!.dns.map((a) => ipv6ToString(a)), ["fd00::53"]);
  assert.deepEqual(p.ipv4!.dns.map(ipv4ToString), ["10.0.0.53"]);
});

Deno.test("`buildNetworkPlan()` advertises the --dns-forward address in place of a loopback resolver", () => {
  const resolv = "nameserver 127.0.0.53\nnameserver ::1\n";
  const p = buildNetworkPlan(
    { dnsForward4: "10.0.2.3", dnsForward6: "fd00::3" },
    sources({ ...BASE, "/etc/resolv.conf": resolv }),
  );
  assert.deepEqual(p.ipv4!.dns.map(ipv4ToString), ["10.0.2.3"]);
  assert.deepEqual(p.ipv4!.dnsForward, { match: p.ipv4!.dns[0], target: "127.0.0.53" });
  assert.deepEqual(p.ipv6!.dns.map((a) => ipv6ToString(a)), ["fd00::3"]);
  assert.equal(p.ipv6!.dnsForward!.target, "::1");
});

Deno.test("`buildNetworkPlan()` treats a resolver at the gateway, which maps to the host's loopback, like a loopback one", () => {
  // The guest's packets to the gateway reach the host's loopback (passt's
  // --map-host-loopback default), so the gateway's own resolver is advertised through
  // a DNS forward to its real address (passt conf.c, add_dns_resolv4/6).
  const resolv = "nameserver 192.0.2.1\nnameserver 198.51.100.53\n";
  const p = buildNetworkPlan({}, sources({ ...BASE, "/etc/resolv.conf": resolv }));
  assert.deepEqual(p.ipv4!.dns.map(ipv4ToString), ["192.0.2.1", "198.51.100.53"]);
  assert.equal(ipv4ToString(p.ipv4!.dnsForward!.match), "192.0.2.1");
  assert.equal(p.ipv4!.dnsForward!.target, "192.0.2.1");
  // With --dns-forward, that address is advertised instead of the gateway.
  const forwarded = buildNetworkPlan(
    { dnsForward4: "10.0.2.3" },
    sources({ ...BASE, "/etc/resolv.conf": resolv }),
  );
  assert.deepEqual(forwarded.ipv4!.dns.map(ipv4ToString), ["10.0.2.3", "198.51.100.53"]);
  assert.equal(ipv4ToString(forwarded.ipv4!.dnsForward!.match), "10.0.2.3");
  assert.equal(forwarded.ipv4!.dnsForward!.target, "192.0.2.1");
  // When another address (or none) maps to the host's loopback, the gateway's resolver
  // is reachable as it is.
  for (const mapHostLoopback4 of ["10.0.2.9", "none"]) {
    const plain = buildNetworkPlan(
      { mapHostLoopback4, dnsForward4: "10.0.2.3" },
      sources({ ...BASE, "/etc/resolv.conf": resolv }),
    );
    assert.deepEqual(plain.ipv4!.dns.map(ipv4ToString), ["192.0.2.1", "198.51.100.53"]);
    assert.equal(plain.ipv4!.dnsForward, null);
  }
});

Deno.test("`buildNetworkPlan()` treats an IPv6 resolver at the address mapped to the host's loopback like ::1", () => {
  const resolv = "nameserver 2001:db8::53\n";
  const p = buildNetworkPlan(
    { mapHostLoopback6: "2001:db8::53", dnsForward6: "fd00::3" },
    sources({ ...BASE, "/etc/resolv.conf": resolv }),
  );
  assert.deepEqual(p.ipv6!.dns.map((a) => ipv6ToString(a)), ["fd00::3"]);
  assert.equal(p.ipv6!.dnsForward!.target, "2001:db8::53");
});

Deno.test("`buildNetworkPlan()` honours an explicit interface name", () => {
  const p = buildNetworkPlan({ interface: "wlan0", ipv4Only: true }, sources(BASE));
  assert.equal(ipv4ToString(p.ipv4!.address), "192.168.1.7");
  assert.equal(ipv4ToString(p.ipv4!.gateway), "192.168.1.1");
  assert.equal(p.ipv6, null);
  assert.equal(p.enableDhcpv6, false);
});

Deno.test("`buildNetworkPlan()` applies overrides", () => {
  const p = buildNetworkPlan(
    {
      address4: "10.0.2.15/8",
      gateway4: "10.0.2.2",
      address6: "2001:db8::15",
      gateway6: "2001:db8::1",
      dns: ["10.0.2.3", "2001:db8::53"],
      search: ["x.example"],
      ourMac: "02:00:00:00:00:01",
      mtu: 1500,
      fqdn: "vm.example",
      noDhcpDns: true,
    },
    sources(BASE),
  );
  assert.equal(ipv4ToString(p.ipv4!.address), "10.0.2.15");
  assert.equal(p.ipv4!.prefix, 8);
  assert.equal(ipv4ToString(p.ipv4!.gateway), "10.0.2.2");
  assert.deepEqual(p.ipv4!.dns.map(ipv4ToString), ["10.0.2.3"]);
  assert.deepEqual(p.ipv6!.dns.map((a) => ipv6ToString(a)), ["2001:db8::53"]);
  assert.equal(ipv6ToString(p.ipv6!.address!), "2001:db8::15");
  // Global gateway: our router link-local is the default one.
  assert.equal(ipv6ToString(p.ipv6!.routerLinkLocal), "fe80::1");
  assert.equal(p.ourMac, 0x020000000001);
  assert.equal(p.mtu, 1500);
  assert.equal(p.fqdn, "vm.example");
  assert.equal(p.advertiseDns, false);
  assert.deepEqual(p.search, ["x.example"]);
});

Deno.test("`buildNetworkPlan()` rejects malformed overrides with the offending value", () => {
  const s = sources(BASE);
  assert.throws(() => buildNetworkPlan({ address4: "10.0.2" }, s), /IPv4 address "10.0.2"/);
  assert.throws(() => buildNetworkPlan({ netmask4: "255.0.255.0" }, s), /netmask/);
  assert.throws(() => buildNetworkPlan({ mtu: 40 }, s), /MTU 40/);
  assert.throws(() => buildNetworkPlan({ ourMac: "nope" }, s), /MAC "nope"/);
  assert.throws(() => buildNetworkPlan({ dns: ["x"] }, s), /DNS server "x"/);
  assert.throws(() => buildNetworkPlan({ ipv4Only: true, ipv6Only: true }, s), /both/);
});

Deno.test("`buildNetworkPlan()` disables IPv6 for an MTU below 1280", () => {
  const p = buildNetworkPlan({ mtu: 1000 }, sources(BASE));
  assert.equal(p.ipv6, null);
  assert.ok(p.notes.some((n) => n.includes("IPv6 disabled")));
});

Deno.test("`buildNetworkPlan()` falls back to link-local addresses without a host interface", () => {
  const p = buildNetworkPlan({}, sources({}, []));
  assert.equal(p.linkLocalFallback, true);
  assert.equal(ipv4ToString(p.ipv4!.address), "169.254.2.1");
  assert.equal(ipv4ToString(p.ipv4!.gateway), "169.254.2.2");
  assert.equal(p.ipv6!.address, null);
  assert.equal(p.enableDhcpv6, false);
  assert.equal(p.enableRa, true);
  const text = renderNetworkPlan(p).join("\n");
  assert.match(text, /link-local fallback/);
});

Deno.test("`renderNetworkPlan()` prints assignments passt-style", () => {
  const text = renderNetworkPlan(buildNetworkPlan({}, sources(BASE))).join("\n");
  assert.match(text, /host: 9a:55:9a:55:9a:55/);
  assert.match(text, /assign: 192\.0\.2\.2/);
  assert.match(text, /mask: 255\.255\.255\.0/);
  assert.match(text, /router: 192\.0\.2\.1/);
  assert.match(text, /assign: fd00::2/);
  assert.match(text, /DNS search list:\n {4}example\.org/);
});

Deno.test("`buildNetworkPlan()` reads the real host without throwing", () => {
  const p = buildNetworkPlan();
  assert.ok(p.ipv4 !== null || p.ipv6 !== null);
  assert.ok(renderNetworkPlan(p).length > 2);
});
