import assert from "node:assert/strict";
import {
  newGuestSideAddress,
  newHostTarget,
  translateInbound,
  translateOutbound4,
  translateOutbound6,
} from "./fwd.ts";
import { parseIpv4, parseIpv6 } from "../wire/address.ts";
import {
  TEST_DNS4,
  TEST_GATEWAY4,
  TEST_GATEWAY6,
  TEST_GUEST4,
  testRules,
} from "../../../tests/support/net/tcp_plan.ts";

Deno.test("`translateOutbound4()` maps the gateway to the host loopback and DNS to the resolver", () => {
  const r = testRules("127.0.0.53");
  const t = newHostTarget();
  assert.deepEqual(translateOutbound4(r, TEST_GATEWAY4, 80, t), { host: "127.0.0.1", port: 80 });
  assert.deepEqual(translateOutbound4(r, TEST_DNS4, 53, t), { host: "127.0.0.53", port: 53 });
  assert.deepEqual(translateOutbound4(r, TEST_DNS4, 54, t), { host: "10.0.2.3", port: 54 });
  assert.deepEqual(translateOutbound4(r, parseIpv4("192.0.2.7")!, 9, t), {
    host: "192.0.2.7",
    port: 9,
  });
  assert.deepEqual(translateOutbound6(r, TEST_GATEWAY6, 22, t), { host: "::1", port: 22 });
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

Deno.test("`translateInbound()` shows loopback peers as the gateway and others as themselves", () => {
  const r = testRules();
  const a = newGuestSideAddress();
  assert.ok(translateInbound(r, "127.0.0.1", a));
  assert.equal(a.family, 4);
  assert.equal(a.addr4, TEST_GATEWAY4);
  assert.ok(translateInbound(r, "::ffff:127.0.0.1", a));
  assert.equal(a.addr4, TEST_GATEWAY4);
  assert.ok(translateInbound(r, "10.0.2.15", a));
  assert.equal(a.addr4, TEST_GATEWAY4, "the host's own address is shown as the gateway");
  assert.ok(translateInbound(r, "192.0.2.1", a));
  assert.equal(a.addr4, parseIpv4("192.0.2.1"));
  assert.ok(translateInbound(r, "::1", a));
  assert.equal(a.family, 6);
  assert.deepEqual(a.addr6, TEST_GATEWAY6);
  assert.ok(translateInbound(r, "2001:db8::5", a));
  assert.deepEqual(a.addr6, parseIpv6("2001:db8::5"));
  assert.equal(translateInbound(r, "not an address", a), false);
  void TEST_GUEST4;
});

Deno.test("`translateOutbound4()` sends only port 53 of a gateway DNS address to the resolver", () => {
  const r = testRules(null, { dnsForward4: "10.0.2.2", dnsHost4: "127.0.0.53" });
  const t = newHostTarget();
  assert.deepEqual(translateOutbound4(r, TEST_GATEWAY4, 53, t), { host: "127.0.0.53", port: 53 });
  assert.deepEqual(translateOutbound4(r, TEST_GATEWAY4, 80, t), { host: "127.0.0.1", port: 80 });
});
