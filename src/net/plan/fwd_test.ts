import assert from "node:assert/strict";
import {
  type HostTarget,
  newGuestSideAddress,
  newHostTarget,
  outboundAddress4,
  outboundAddress6,
  translateInboundAddress,
  translateOutbound4,
  translateOutbound6,
} from "./fwd.ts";
import {
  TEST_DNS4,
  TEST_GATEWAY4,
  TEST_GATEWAY6,
  TEST_GUEST4,
  testRules,
} from "../../../tests/support/net/tcp_plan.ts";
import { addressBytes, parseIpv4, parseIpv6 } from "../../../ffi/ip_address_text.ts";

/** The parts of a {@link HostTarget} a translation sets. */
function plain(t: HostTarget) {
  return { host: t.host, address: t.address.slice(), port: t.port };
}

/** The {@link plain} target `host`:`port`. */
function target(host: string, port: number) {
  return { host, address: addressBytes(host), port };
}

Deno.test("`translateOutbound4()` maps the gateway to the host loopback and DNS to the resolver", () => {
  const r = testRules("127.0.0.53");
  const t = newHostTarget();
  assert.deepEqual(plain(translateOutbound4(r, TEST_GATEWAY4, 80, t)), target("127.0.0.1", 80));
  assert.deepEqual(plain(translateOutbound4(r, TEST_DNS4, 53, t)), target("127.0.0.53", 53));
  assert.deepEqual(plain(translateOutbound4(r, TEST_DNS4, 54, t)), target("10.0.2.3", 54));
  assert.deepEqual(
    plain(translateOutbound4(r, parseIpv4("192.0.2.7")!, 9, t)),
    target("192.0.2.7", 9),
  );
  assert.deepEqual(plain(translateOutbound6(r, TEST_GATEWAY6, 22, t)), target("::1", 22));
  const r6 = testRules(null, { dnsForward6: "fd00::53", dnsHost6: "::1" });
  assert.deepEqual(plain(translateOutbound6(r6, parseIpv6("fd00::53")!, 53, t)), target("::1", 53));
});

Deno.test("`outboundAddress4/6()` map addresses as numbers and bytes, without the DNS rule", () => {
  const r = testRules("127.0.0.53");
  assert.equal(outboundAddress4(r, TEST_GATEWAY4), parseIpv4("127.0.0.1"));
  assert.equal(outboundAddress4(r, TEST_DNS4), TEST_DNS4);
  assert.equal(outboundAddress4(r, parseIpv4("192.0.2.7")!), parseIpv4("192.0.2.7"));
  assert.deepEqual(outboundAddress6(r, TEST_GATEWAY6), parseIpv6("::1"));
  const other = parseIpv6("2001:db8::7")!;
  assert.equal(outboundAddress6(r, other), other);
  const mapped = testRules(null, { mapGuestAddr4: "10.0.2.8" });
  assert.equal(outboundAddress4(mapped, parseIpv4("10.0.2.8")!), TEST_GUEST4);
});

Deno.test("`translateOutbound4()` honours --no-map-gw, --map-host-loopback and --map-guest-addr", () => {
  const t = newHostTarget();
  const noGw = testRules(null, { noMapGw: true });
  assert.equal(translateOutbound4(noGw, TEST_GATEWAY4, 80, t).host, "10.0.2.2");
  const other = testRules(null, { mapHostLoopback4: "10.0.2.9", mapGuestAddr4: "10.0.2.8" });
  assert.equal(translateOutbound4(other, parseIpv4("10.0.2.9")!, 80, t).host, "127.0.0.1");
  assert.equal(translateOutbound4(other, TEST_GATEWAY4, 80, t).host, "10.0.2.2");
  assert.equal(translateOutbound4(other, parseIpv4("10.0.2.8")!, 80, t).host, "10.0.2.15");
});

Deno.test("`translateInboundAddress()` shows loopback peers as the gateway and others as themselves", () => {
  const r = testRules();
  const a = newGuestSideAddress();
  const inbound = (text: string) => translateInboundAddress(r, addressBytes(text)!, a);
  assert.ok(inbound("127.0.0.1"));
  assert.equal(a.family, 4);
  assert.equal(a.addr4, TEST_GATEWAY4);
  assert.ok(inbound("::ffff:127.0.0.1"), "an IPv4-mapped peer counts as IPv4");
  assert.equal(a.family, 4);
  assert.equal(a.addr4, TEST_GATEWAY4);
  assert.ok(inbound("10.0.2.15"));
  assert.equal(a.addr4, TEST_GATEWAY4, "the host's own address is shown as the gateway");
  assert.ok(inbound("192.0.2.1"));
  assert.equal(a.addr4, parseIpv4("192.0.2.1"));
  assert.ok(inbound("::ffff:192.0.2.1"));
  assert.equal(a.addr4, parseIpv4("192.0.2.1"));
  assert.ok(inbound("::1"));
  assert.equal(a.family, 6);
  assert.deepEqual(a.addr6, TEST_GATEWAY6);
  assert.ok(inbound("2001:db8::5"));
  assert.deepEqual(a.addr6, parseIpv6("2001:db8::5"));
  assert.equal(translateInboundAddress(r, new Uint8Array(5), a), false, "neither 4 nor 16 bytes");
});

Deno.test("`translateOutbound4()` sends only port 53 of a gateway DNS address to the resolver", () => {
  const r = testRules(null, { dnsForward4: "10.0.2.2", dnsHost4: "127.0.0.53" });
  const t = newHostTarget();
  assert.deepEqual(plain(translateOutbound4(r, TEST_GATEWAY4, 53, t)), target("127.0.0.53", 53));
  assert.deepEqual(plain(translateOutbound4(r, TEST_GATEWAY4, 80, t)), target("127.0.0.1", 80));
});
