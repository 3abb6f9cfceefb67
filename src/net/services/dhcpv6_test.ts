import assert from "node:assert/strict";
import fc from "fast-check";
import { decodeDomainList } from "../wire/dns_name.ts";
import {
  DHCPV6_CLIENT_PORT,
  DHCPV6_SERVER_PORT,
  Dhcpv6Message,
  Dhcpv6Option,
  Dhcpv6Status,
} from "./dhcpv6.ts";
import { buildNetworkPlan } from "../plan/network_plan.ts";
import { NetworkStack } from "../stack.ts";
import { decodeFrame, guestIpv6Frame, udpDatagram } from "../../../tests/support/net/frames.ts";
import { RecordingLink } from "../../../tests/support/net/recording_link.ts";
import { newUdpHeader, parseUdp, udpChecksumOkV6 } from "../wire/udp.ts";
import { IPPROTO_UDP } from "../wire/ip_protocol.ts";
import { ipv6ToString, parseIpv6 } from "../../../ffi/ip_address_text.ts";
import { NO_HOST } from "../../../tests/support/net/built_plan.ts";
import { recordingLogger } from "../../../tests/support/recording_logger.ts";

const GUEST_LL = parseIpv6("fe80::5054:ff:fe12:3456")!;
const ALL_SERVERS = parseIpv6("ff02::1:2")!;
const CLIENT_DUID = [0, 3, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56];
const SERVER_DUID = [0, 3, 0, 1, 0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55];
const OUR_ADDR = parseIpv6("2001:db8::15")!;

function setup() {
  const plan = buildNetworkPlan({
    address6: "2001:db8::15",
    gateway6: "fe80::1",
    dns: ["2001:db8::53"],
    search: ["example.org", "lab.example.org"],
    fqdn: "vm.example.org",
    ipv6Only: true,
  }, NO_HOST);
  const stack = new NetworkStack(plan);
  const link = new RecordingLink();
  stack.linkUp(link, 0);
  link.take();
  return { stack, link };
}

function option(code: number, data: number[]): number[] {
  return [code >> 8, code & 0xff, data.length >> 8, data.length & 0xff, ...data];
}

function iaNa(addr?: Uint8Array): number[] {
  const sub = addr ? option(Dhcpv6Option.IaAddr, [...addr, 0, 0, 0, 0, 0, 0, 0, 0]) : [];
  return option(Dhcpv6Option.IaNa, [0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, ...sub]);
}

function message(type: number, opts: number[]): Uint8Array {
  return new Uint8Array([type, 0xab, 0xcd, 0xef, ...opts]);
}

interface Reply {
  type: number;
  xid: number;
  options: Map<number, Uint8Array>;
  dst: string;
  src: string;
}

function send(stack: NetworkStack, link: RecordingLink, msg: Uint8Array): Reply | null {
  stack.handleFrame(
    guestIpv6Frame(IPPROTO_UDP, GUEST_LL, ALL_SERVERS, udpDatagram(546, 547, msg)),
    1,
  );
  const frames = link.take();
  if (frames.length === 0) return null;
  const d = decodeFrame(frames[0]);
  const u = newUdpHeader();
  assert.equal(parseUdp(d.l4, 0, d.l4.length, u), "ok");
  assert.equal(u.srcPort, DHCPV6_SERVER_PORT);
  assert.equal(u.dstPort, DHCPV6_CLIENT_PORT);
  assert.ok(udpChecksumOkV6(d.l4, 0, d.l4.length, d.ip6!.src, d.ip6!.dst));
  const m = d.l4.subarray(8);
  const options = new Map<number, Uint8Array>();
  for (let p = 4; p < m.length;) {
    const code = (m[p] << 8) | m[p + 1], len = (m[p + 2] << 8) | m[p + 3];
    assert.ok(p + 4 + len <= m.length);
    options.set(code, m.slice(p + 4, p + 4 + len));
    p += 4 + len;
  }
  return {
    type: m[0],
    xid: (m[1] << 16) | (m[2] << 8) | m[3],
    options,
    dst: ipv6ToString(d.ip6!.dst),
    src: ipv6ToString(d.ip6!.src),
  };
}

const CLIENT = option(Dhcpv6Option.ClientId, CLIENT_DUID);
const SERVER = option(Dhcpv6Option.ServerId, SERVER_DUID);

function iaAddress(ia: Uint8Array): string | null {
  // IAID, T1, T2, then sub-options.
  for (let p = 12; p < ia.length;) {
    const code = (ia[p] << 8) | ia[p + 1], len = (ia[p + 2] << 8) | ia[p + 3];
    if (code === Dhcpv6Option.IaAddr) return ipv6ToString(ia.slice(p + 4, p + 20));
    p += 4 + len;
  }
  return null;
}

function iaStatus(ia: Uint8Array): number | null {
  for (let p = 12; p < ia.length;) {
    const code = (ia[p] << 8) | ia[p + 1], len = (ia[p + 2] << 8) | ia[p + 3];
    if (code === Dhcpv6Option.StatusCode) return (ia[p + 4] << 8) | ia[p + 5];
    p += 4 + len;
  }
  return null;
}

Deno.test("`Dhcpv6Server.handle()` answers SOLICIT with an ADVERTISE offering the address", () => {
  const { stack, link } = setup();
  const r = send(stack, link, message(Dhcpv6Message.Solicit, [...CLIENT, ...iaNa()]))!;
  assert.equal(r.type, Dhcpv6Message.Advertise);
  assert.equal(r.xid, 0xabcdef);
  assert.equal(r.dst, ipv6ToString(GUEST_LL));
  assert.equal(r.src, "fe80::1");
  assert.deepEqual(Array.from(r.options.get(Dhcpv6Option.ServerId)!), SERVER_DUID);
  assert.deepEqual(Array.from(r.options.get(Dhcpv6Option.ClientId)!), CLIENT_DUID);
  const ia = r.options.get(Dhcpv6Option.IaNa)!;
  assert.deepEqual(Array.from(ia.slice(0, 4)), [0, 0, 0, 7]);
  assert.equal(iaAddress(ia), "2001:db8::15");
  assert.equal(ipv6ToString(r.options.get(Dhcpv6Option.DnsServers)!), "2001:db8::53");
  assert.deepEqual(decodeDomainList(r.options.get(Dhcpv6Option.DomainList)!), [
    "example.org",
    "lab.example.org",
  ]);
  const fqdn = r.options.get(Dhcpv6Option.ClientFqdn)!;
  assert.deepEqual(decodeDomainList(fqdn.slice(1)), ["vm.example.org"]);
});

Deno.test("`Dhcpv6Server.handle()` answers SOLICIT with rapid commit by a REPLY", () => {
  const { stack, link } = setup();
  const r = send(
    stack,
    link,
    message(Dhcpv6Message.Solicit, [...CLIENT, ...iaNa(), ...option(Dhcpv6Option.RapidCommit, [])]),
  )!;
  assert.equal(r.type, Dhcpv6Message.Reply);
  assert.ok(r.options.has(Dhcpv6Option.RapidCommit));
  assert.equal(iaAddress(r.options.get(Dhcpv6Option.IaNa)!), "2001:db8::15");
});

Deno.test("`Dhcpv6Server.handle()` replies to REQUEST, RENEW, REBIND and INFORMATION-REQUEST", () => {
  const { stack, link } = setup();
  for (const type of [Dhcpv6Message.Request, Dhcpv6Message.Renew]) {
    const r = send(stack, link, message(type, [...CLIENT, ...SERVER, ...iaNa(OUR_ADDR)]))!;
    assert.equal(r.type, Dhcpv6Message.Reply);
    assert.equal(iaAddress(r.options.get(Dhcpv6Option.IaNa)!), "2001:db8::15");
  }
  const rb = send(stack, link, message(Dhcpv6Message.Rebind, [...CLIENT, ...iaNa(OUR_ADDR)]))!;
  assert.equal(iaAddress(rb.options.get(Dhcpv6Option.IaNa)!), "2001:db8::15");
  const info = send(stack, link, message(Dhcpv6Message.InformationRequest, []))!;
  assert.equal(info.type, Dhcpv6Message.Reply);
  assert.equal(info.options.has(Dhcpv6Option.IaNa), false);
  assert.ok(info.options.has(Dhcpv6Option.DnsServers));
});

Deno.test("`Dhcpv6Server.handle()` gives NotOnLink for an IA naming another address", () => {
  const { stack, link } = setup();
  const other = parseIpv6("2001:db8:ffff::9")!;
  const r = send(
    stack,
    link,
    message(Dhcpv6Message.Request, [...CLIENT, ...SERVER, ...iaNa(other)]),
  )!;
  const ia = r.options.get(Dhcpv6Option.IaNa)!;
  assert.equal(iaStatus(ia), Dhcpv6Status.NotOnLink);
  assert.equal(iaAddress(ia), null);
  const c = send(stack, link, message(Dhcpv6Message.Confirm, [...CLIENT, ...iaNa(other)]))!;
  const st = c.options.get(Dhcpv6Option.StatusCode)!;
  assert.equal((st[0] << 8) | st[1], Dhcpv6Status.NotOnLink);
  const ok = send(stack, link, message(Dhcpv6Message.Confirm, [...CLIENT, ...iaNa(OUR_ADDR)]))!;
  const st2 = ok.options.get(Dhcpv6Option.StatusCode)!;
  assert.equal((st2[0] << 8) | st2[1], Dhcpv6Status.Success);
});

Deno.test("`Dhcpv6Server.handle()` ignores messages with missing or foreign identifiers", () => {
  const { stack, link } = setup();
  const foreign = option(Dhcpv6Option.ServerId, [0, 3, 0, 1, 1, 2, 3, 4, 5, 6]);
  assert.equal(send(stack, link, message(Dhcpv6Message.Solicit, [...iaNa()])), null);
  assert.equal(send(stack, link, message(Dhcpv6Message.Solicit, [...CLIENT, ...SERVER])), null);
  assert.equal(send(stack, link, message(Dhcpv6Message.Request, [...CLIENT, ...foreign])), null);
  assert.equal(send(stack, link, message(Dhcpv6Message.Request, [...CLIENT])), null);
  assert.equal(send(stack, link, message(Dhcpv6Message.Rebind, [...CLIENT, ...SERVER])), null);
  assert.equal(send(stack, link, message(Dhcpv6Message.Advertise, [...CLIENT])), null);
  assert.equal(stack.dhcpv6!.counters.ignored, 6);
});

Deno.test("`Dhcpv6Server.handle()` drops messages whose options run past the end", () => {
  const { stack, link } = setup();
  const bad = message(Dhcpv6Message.Solicit, [...CLIENT, 0, 3, 0, 40, 0, 0]);
  assert.equal(send(stack, link, bad), null);
  assert.equal(stack.drops["dhcpv6-bad-options"], 1);
  assert.equal(send(stack, link, new Uint8Array([1, 2])), null);
  assert.equal(stack.drops["dhcpv6-truncated"], 1);
  const shortIa = message(Dhcpv6Message.Solicit, [...CLIENT, ...option(Dhcpv6Option.IaNa, [1, 2])]);
  assert.equal(send(stack, link, shortIa), null);
  assert.equal(stack.drops["dhcpv6-bad-options"], 2);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 60 }), (opts) => {
      const r = send(stack, link, message(Dhcpv6Message.Solicit, [...CLIENT, ...opts]));
      if (r) assert.equal(r.type, Dhcpv6Message.Advertise);
    }),
    { numRuns: 300 },
  );
});

Deno.test("`Dhcpv6Server` logs one debug line per exchange, with addresses", () => {
  const plan = buildNetworkPlan(
    { address6: "2001:db8::15", gateway6: "fe80::1", ipv6Only: true },
    NO_HOST,
  );
  const { logger, lines } = recordingLogger({ level: "debug", withLevel: true });
  const stack = new NetworkStack(plan, { logger });
  const link = new RecordingLink();
  stack.linkUp(link, 0);
  lines.length = 0;
  const client = option(Dhcpv6Option.ClientId, CLIENT_DUID);
  send(stack, link, message(Dhcpv6Message.Solicit, [...client, ...iaNa()]));
  send(
    stack,
    link,
    message(Dhcpv6Message.Request, [
      ...client,
      ...option(Dhcpv6Option.ServerId, SERVER_DUID),
      ...iaNa(OUR_ADDR),
    ]),
  );
  send(
    stack,
    link,
    message(Dhcpv6Message.Confirm, [...client, ...iaNa(parseIpv6("2001:db8:9::1")!)]),
  );
  send(stack, link, message(Dhcpv6Message.Request, [...client, ...iaNa()]));
  assert.deepEqual(lines.filter((l) => l.includes("DHCPv6")), [
    "debug: DHCPv6: advertise to solicit from fe80::5054:ff:fe12:3456: 2001:db8::15",
    "debug: DHCPv6: reply to request from fe80::5054:ff:fe12:3456: 2001:db8::15",
    "debug: DHCPv6: reply to confirm from fe80::5054:ff:fe12:3456: the address asked for is not on link",
    "debug: DHCPv6: request from fe80::5054:ff:fe12:3456 ignored",
  ]);
});
