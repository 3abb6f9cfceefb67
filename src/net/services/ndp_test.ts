import assert from "node:assert/strict";
import { l4ChecksumV6 } from "../wire/checksum.ts";
import { decodeDomainList } from "../wire/dns_name.ts";
import { buildNetworkPlan, type HostConfigOverrides } from "../plan/network_plan.ts";
import { Icmpv6Type } from "../wire/icmp.ts";
import {
  MAX_RTR_ADV_INTERVAL_MS,
  MIN_RTR_ADV_INTERVAL_MS,
  NA_FLAG_OVERRIDE,
  NA_FLAG_ROUTER,
  NA_FLAG_SOLICITED,
  NdpResponder,
  RA_FLAG_MANAGED,
} from "./ndp.ts";
import { GuestSender } from "../guest_sender.ts";
import { NetworkStack } from "../stack.ts";
import { decodeFrame, guestIpv6Frame, TEST_GUEST_MAC } from "../../../tests/support/net/frames.ts";
import { nextTask, RecordingLink } from "../../../tests/support/net/recording_link.ts";
import { IPPROTO_ICMPV6 } from "../wire/ip_protocol.ts";
import { ipv6ToString, parseIpv6 } from "../../../ffi/ip_address_text.ts";
import { NO_HOST } from "../../../tests/support/net/built_plan.ts";
import { recordingLogger } from "../../../tests/support/recording_logger.ts";

const GUEST_LL = parseIpv6("fe80::5054:ff:fe12:3456")!;
const ROUTER = parseIpv6("fe80::1")!;
const SOLICITED_NODE_GW = parseIpv6("ff02::1:ff00:1")!;

function setup(overrides: HostConfigOverrides = {}, random = () => 0.5) {
  const plan = buildNetworkPlan({
    address6: "2001:db8:1:2::15",
    gateway6: "fe80::1",
    dns: ["2001:db8::53"],
    search: ["example.org"],
    mtu: 1500,
    ipv6Only: true,
    ...overrides,
  }, NO_HOST);
  const stack = new NetworkStack(plan, { random });
  const link = new RecordingLink();
  stack.linkUp(link, 0);
  return { stack, link };
}

function ns(target: Uint8Array, options: number[] = [1, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]) {
  return new Uint8Array([135, 0, 0, 0, 0, 0, 0, 0, ...target, ...options]);
}

function options(l4: Uint8Array, start: number): Map<number, Uint8Array[]> {
  const m = new Map<number, Uint8Array[]>();
  for (let p = start; p < l4.length;) {
    const len = l4[p + 1] * 8;
    assert.ok(len > 0 && p + len <= l4.length, "option within the message");
    m.set(l4[p], [...(m.get(l4[p]) ?? []), l4.slice(p, p + len)]);
    p += len;
  }
  return m;
}

Deno.test("`NdpResponder.handle()` answers an NS for the gateway with our MAC", () => {
  const { stack, link } = setup();
  stack.handleFrame(
    guestIpv6Frame(IPPROTO_ICMPV6, GUEST_LL, SOLICITED_NODE_GW, ns(ROUTER), { hopLimit: 255 }),
    1,
  );
  const [f] = link.take();
  const d = decodeFrame(f);
  assert.equal(d.eth.dst, TEST_GUEST_MAC);
  assert.equal(d.ip6!.hopLimit, 255);
  assert.equal(ipv6ToString(d.ip6!.src), "fe80::1");
  assert.equal(ipv6ToString(d.ip6!.dst), ipv6ToString(GUEST_LL));
  assert.equal(l4ChecksumV6(d.l4, 0, d.l4.length, IPPROTO_ICMPV6, d.ip6!.src, 0, d.ip6!.dst, 0), 0);
  assert.equal(d.l4[0], Icmpv6Type.NeighborAdvertisement);
  assert.equal(d.l4[4], NA_FLAG_ROUTER | NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE);
  assert.deepEqual(d.l4.slice(8, 24), ROUTER);
  assert.deepEqual(Array.from(d.l4.slice(24)), [2, 1, 0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55]);
});

Deno.test("`NdpResponder.handle()` leaves DAD probes and the guest's own address alone", () => {
  const { stack, link } = setup();
  const own = parseIpv6("2001:db8:1:2::15")!;
  stack.handleFrame(
    guestIpv6Frame(IPPROTO_ICMPV6, new Uint8Array(16), SOLICITED_NODE_GW, ns(ROUTER, []), {
      hopLimit: 255,
    }),
    1,
  );
  stack.handleFrame(
    guestIpv6Frame(IPPROTO_ICMPV6, GUEST_LL, SOLICITED_NODE_GW, ns(own), { hopLimit: 255 }),
    1,
  );
  // The guest's link-local address was learnt from the frame above.
  stack.handleFrame(
    guestIpv6Frame(IPPROTO_ICMPV6, GUEST_LL, SOLICITED_NODE_GW, ns(GUEST_LL), { hopLimit: 255 }),
    1,
  );
  assert.equal(link.frames.length, 0);
  assert.equal(stack.ndp!.counters.ignored, 3);
});

Deno.test("`NdpResponder.handle()` drops NS/RS with bad hop limit, code, length or options", () => {
  const { stack, link } = setup();
  const send = (l4: Uint8Array, hopLimit = 255) =>
    stack.handleFrame(
      guestIpv6Frame(IPPROTO_ICMPV6, GUEST_LL, SOLICITED_NODE_GW, l4, { hopLimit }),
      1,
    );
  send(ns(ROUTER), 64);
  const badCode = ns(ROUTER);
  badCode[1] = 1;
  send(badCode);
  send(ns(ROUTER).slice(0, 20));
  send(ns(ROUTER, [1, 0, 0, 0, 0, 0, 0, 0])); // option length 0
  send(ns(ROUTER, [1, 2, 0, 0, 0, 0, 0, 0])); // option past the end
  send(ns(SOLICITED_NODE_GW)); // multicast target
  send(new Uint8Array([133, 0, 0, 0, 0, 0, 0, 0, 1, 5, 0, 0]));
  assert.equal(link.frames.length, 0);
  assert.equal(stack.drops["ndp-bad-hop-limit"], 1);
  assert.equal(stack.drops["ndp-bad-code"], 1);
  assert.equal(stack.drops["ndp-truncated"], 1);
  assert.equal(stack.drops["ndp-bad-option"], 4);
});

Deno.test("`NdpResponder.handle()` answers an RS with a complete RA", () => {
  const { stack, link } = setup();
  const rs = new Uint8Array([133, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]);
  stack.handleFrame(
    guestIpv6Frame(IPPROTO_ICMPV6, GUEST_LL, parseIpv6("ff02::2")!, rs, { hopLimit: 255 }),
    1,
  );
  const [f] = link.take();
  const d = decodeFrame(f);
  assert.equal(ipv6ToString(d.ip6!.dst), ipv6ToString(GUEST_LL));
  assert.equal(d.ip6!.hopLimit, 255);
  const ra = d.l4;
  assert.equal(l4ChecksumV6(ra, 0, ra.length, IPPROTO_ICMPV6, d.ip6!.src, 0, d.ip6!.dst, 0), 0);
  assert.equal(ra[0], Icmpv6Type.RouterAdvertisement);
  assert.equal(ra[5] & RA_FLAG_MANAGED, RA_FLAG_MANAGED);
  assert.equal((ra[6] << 8) | ra[7], 65535);
  const o = options(ra, 16);
  const prefix = o.get(3)![0];
  assert.equal(prefix[2], 64);
  assert.equal(prefix[3], 0xc0);
  assert.equal(ipv6ToString(prefix.slice(16, 32)), "2001:db8:1:2::");
  const mtu = o.get(5)![0];
  assert.equal(new DataView(mtu.buffer).getUint32(4), 1500);
  assert.equal(ipv6ToString(o.get(25)![0].slice(8, 24)), "2001:db8::53");
  const dnssl = o.get(31)![0];
  assert.deepEqual(decodeDomainList(dnssl.slice(8).subarray(0, 13)), ["example.org"]);
  assert.deepEqual(Array.from(o.get(1)![0]), [1, 1, 0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55]);
});

Deno.test("`NdpResponder.tick()` sends unsolicited RAs at randomized intervals", () => {
  let r = 0;
  const { stack, link } = setup({}, () => r);
  assert.equal(stack.nextTimerAt(), 0);
  stack.tick(0);
  let [f] = link.take();
  const d = decodeFrame(f);
  assert.equal(ipv6ToString(d.ip6!.dst), "ff02::1");
  assert.equal(d.eth.dst, 0x333300000001);
  // Initial advertisements come within 16 s.
  assert.equal(stack.nextTimerAt(), 8000);
  stack.tick(7999);
  assert.equal(link.frames.length, 0);
  stack.tick(8000);
  [f] = link.take();
  assert.ok(f);
  stack.tick(stack.nextTimerAt());
  link.take();
  // Then between MinRtrAdvInterval and MaxRtrAdvInterval.
  r = 0.999;
  const t = stack.nextTimerAt();
  stack.tick(t);
  link.take();
  const gap = stack.nextTimerAt() - t;
  assert.ok(gap >= MIN_RTR_ADV_INTERVAL_MS && gap <= MAX_RTR_ADV_INTERVAL_MS, `${gap}`);
  assert.equal(stack.ndp!.counters.unsolicitedRouterAdvertisements, 4);
  // Link down: no more RAs.
  stack.linkDown(t + gap);
  stack.tick(t + gap);
  assert.equal(stack.nextTimerAt(), Infinity);
});

Deno.test("`NdpResponder.tick()` run by a timer on its own ends with a flush of its RA", async () => {
  const plan = buildNetworkPlan(
    { address6: "2001:db8:1:2::15", gateway6: "fe80::1", ipv6Only: true },
    NO_HOST,
  );
  const sender = new GuestSender(plan.ourMac);
  const link = new RecordingLink();
  sender.setLink(link);
  const ndp = new NdpResponder(plan, sender, () => 0.5);
  ndp.linkUp(0);
  ndp.tick(0); // not through NetworkStack.tick, which flushes after its services
  assert.equal(link.frames.length, 1, "unsolicited RA sent");
  await nextTask();
  assert.equal(link.unflushedFrames, 0);
  assert.equal(link.flushes, 1);
});

Deno.test("`NdpResponder` omits the prefix without a global address and M without DHCPv6", () => {
  const plan = buildNetworkPlan({ ipv6Only: true }, NO_HOST);
  const stack = new NetworkStack(plan);
  const link = new RecordingLink();
  stack.linkUp(link, 0);
  stack.tick(0);
  const d = decodeFrame(link.take()[0]);
  assert.equal(d.l4[5], 0);
  const o = options(d.l4, 16);
  assert.equal(o.get(3), undefined);
  assert.ok(o.get(1));
});

Deno.test("`NdpResponder` logs one debug line per exchange, with addresses", () => {
  const plan = buildNetworkPlan({
    address6: "2001:db8:1:2::15",
    gateway6: "fe80::1",
    mtu: 1500,
    ipv6Only: true,
  }, NO_HOST);
  const { logger, lines } = recordingLogger({ level: "debug", withLevel: true });
  const stack = new NetworkStack(plan, { random: () => 0.5, logger });
  const link = new RecordingLink();
  stack.linkUp(link, 0);
  stack.handleFrame(
    guestIpv6Frame(IPPROTO_ICMPV6, GUEST_LL, SOLICITED_NODE_GW, ns(ROUTER), { hopLimit: 255 }),
    1,
  );
  const rs = new Uint8Array([133, 0, 0, 0, 0, 0, 0, 0]);
  stack.handleFrame(
    guestIpv6Frame(IPPROTO_ICMPV6, GUEST_LL, parseIpv6("ff02::2")!, rs, { hopLimit: 255 }),
    2,
  );
  stack.handleFrame(
    guestIpv6Frame(IPPROTO_ICMPV6, new Uint8Array(16), SOLICITED_NODE_GW, ns(ROUTER, []), {
      hopLimit: 255,
    }),
    3,
  );
  assert.deepEqual(lines, [
    "debug: NDP: NS from fe80::5054:ff:fe12:3456 for fe80::1, sending NA",
    "debug: NDP: RS from fe80::5054:ff:fe12:3456, sending RA to fe80::5054:ff:fe12:3456: " +
    "prefix 2001:db8:1:2::/64, router fe80::1, MTU 1500",
    "debug: NDP: NS from :: for fe80::1 ignored (duplicate address detection)",
  ]);
});

Deno.test("`NdpResponder` RAs carry the plan's MTU bounded by the guest device's MTU", () => {
  const { stack, link } = setup({ mtu: 65520 });
  const rs = new Uint8Array([133, 0, 0, 0, 0, 0, 0, 0]);
  const raMtu = () => {
    stack.handleFrame(
      guestIpv6Frame(IPPROTO_ICMPV6, GUEST_LL, parseIpv6("ff02::2")!, rs, { hopLimit: 255 }),
      1,
    );
    const frames = link.take();
    const ra = decodeFrame(frames[frames.length - 1]).l4;
    const mtu = options(ra, 16).get(5)![0];
    return new DataView(mtu.buffer, mtu.byteOffset).getUint32(4);
  };
  assert.equal(raMtu(), 65520);
  link.deviceMtu = 1500; // QEMU host_mtu=1500
  assert.equal(raMtu(), 1500);
  link.deviceMtu = 9000;
  assert.equal(raMtu(), 9000);
});
