import assert from "node:assert/strict";
import fc from "fast-check";
import { MAC_BROADCAST, readIpv4 } from "../wire/address.ts";
import { decodeDomainList } from "../wire/dns_name.ts";
import {
  BOOTREPLY,
  DHCP_CLIENT_PORT,
  DHCP_FLAG_BROADCAST,
  DHCP_MAGIC_COOKIE,
  DHCP_SERVER_PORT,
  DhcpMessageType,
  DhcpOption,
  DhcpServer,
} from "./dhcp.ts";
import { newEthernetHeader, parseEthernet } from "../wire/ethernet.ts";
import { GuestSender } from "../guest_sender.ts";
import { buildNetworkPlan, type HostConfigOverrides } from "../plan/network_plan.ts";
import { newIpv4Header, parseIpv4Header } from "../wire/ipv4.ts";
import { newUdpHeader, parseUdp, udpChecksumOkV4 } from "../wire/udp.ts";
import { RecordingLink } from "../../../tests/support/net/recording_link.ts";
import { ipv4ToString } from "../../../ffi/ip_address_text.ts";
import { NO_HOST } from "../../../tests/support/net/built_plan.ts";
import { recordingLogger } from "../../../tests/support/recording_logger.ts";

const CLIENT_MAC = 0x525400abcdef;

function setup(overrides: HostConfigOverrides = {}) {
  const plan = buildNetworkPlan({
    address4: "10.0.2.15/24",
    gateway4: "10.0.2.2",
    dns: ["10.0.2.3", "10.0.2.4"],
    search: ["a.example.org", "b.example.org"],
    mtu: 1500,
    ipv4Only: true,
    ...overrides,
  }, NO_HOST);
  const sender = new GuestSender(plan.ourMac);
  const link = new RecordingLink();
  sender.setLink(link);
  return { plan, link, server: new DhcpServer(plan, sender) };
}

/** Builds a BOOTREQUEST with the given options (message type first). */
function request(
  type: number,
  options: [number, number[]][] = [],
  fields: { ciaddr?: number; flags?: number; xid?: number } = {},
): Uint8Array {
  const opts: number[] = [DhcpOption.MessageType, 1, type];
  for (const [code, data] of options) opts.push(code, data.length, ...data);
  opts.push(DhcpOption.End);
  const b = new Uint8Array(240 + opts.length);
  const dv = new DataView(b.buffer);
  b[0] = 1;
  b[1] = 1;
  b[2] = 6;
  dv.setUint32(4, fields.xid ?? 0x12345678);
  dv.setUint16(10, fields.flags ?? 0);
  dv.setUint32(12, fields.ciaddr ?? 0);
  dv.setUint16(28, Math.floor(CLIENT_MAC / 2 ** 32));
  dv.setUint32(30, CLIENT_MAC >>> 0);
  dv.setUint32(236, DHCP_MAGIC_COOKIE);
  b.set(opts, 240);
  return b;
}

interface Reply {
  dstMac: number;
  srcIp: string;
  dstIp: string;
  yiaddr: string;
  ciaddr: string;
  xid: number;
  options: [number, Uint8Array][];
  length: number;
}

function decode(frame: Uint8Array): Reply {
  const eth = newEthernetHeader();
  assert.equal(parseEthernet(frame, eth), "ok");
  const ip = newIpv4Header();
  assert.equal(parseIpv4Header(frame, 14, frame.length, ip), "ok");
  const udp = newUdpHeader();
  assert.equal(parseUdp(frame, ip.payloadOffset, ip.payloadOffset + ip.payloadLength, udp), "ok");
  assert.equal(udp.srcPort, DHCP_SERVER_PORT);
  assert.equal(udp.dstPort, DHCP_CLIENT_PORT);
  assert.ok(udpChecksumOkV4(frame, ip.payloadOffset, udp.length, ip.src, ip.dst));
  const m = frame.subarray(udp.payloadOffset, udp.payloadOffset + udp.payloadLength);
  assert.equal(m[0], BOOTREPLY);
  assert.equal(readIpv4(m, 236), DHCP_MAGIC_COOKIE);
  const options: [number, Uint8Array][] = [];
  let p = 240;
  while (m[p] !== 255) {
    if (m[p] === 0) {
      p++;
      continue;
    }
    options.push([m[p], m.slice(p + 2, p + 2 + m[p + 1])]);
    p += 2 + m[p + 1];
  }
  return {
    dstMac: eth.dst,
    srcIp: ipv4ToString(ip.src),
    dstIp: ipv4ToString(ip.dst),
    yiaddr: ipv4ToString(readIpv4(m, 16)),
    ciaddr: ipv4ToString(readIpv4(m, 12)),
    xid: readIpv4(m, 4),
    options,
    length: m.length,
  };
}

function opt(r: Reply, code: number): Uint8Array | undefined {
  return r.options.find(([c]) => c === code)?.[1];
}

Deno.test("`DhcpServer.handle()` answers DISCOVER with an OFFER carrying the plan", () => {
  const { server, link } = setup();
  assert.equal(server.handle(request(DhcpMessageType.Discover), 0, 244, 0), "ok");
  const [f] = link.take();
  const r = decode(f);
  assert.equal(r.xid, 0x12345678);
  assert.equal(r.yiaddr, "10.0.2.15");
  assert.equal(r.srcIp, "10.0.2.2");
  assert.equal(r.dstIp, "10.0.2.15");
  assert.equal(r.dstMac, CLIENT_MAC);
  assert.ok(r.length >= 300);
  assert.deepEqual(r.options[0], [53, new Uint8Array([DhcpMessageType.Offer])]);
  assert.deepEqual(r.options[1], [54, new Uint8Array([10, 0, 2, 2])]);
  assert.deepEqual(opt(r, 1), new Uint8Array([255, 255, 255, 0]));
  assert.deepEqual(opt(r, 3), new Uint8Array([10, 0, 2, 2]));
  assert.deepEqual(opt(r, 6), new Uint8Array([10, 0, 2, 3, 10, 0, 2, 4]));
  assert.deepEqual(opt(r, 26), new Uint8Array([0x05, 0xdc]));
  assert.deepEqual(opt(r, 51), new Uint8Array([255, 255, 255, 255]));
  assert.deepEqual(new TextDecoder().decode(opt(r, 15)), "a.example.org");
  assert.deepEqual(decodeDomainList(opt(r, 119)!), ["a.example.org", "b.example.org"]);
  assert.equal(opt(r, 121), undefined);
  assert.equal(opt(r, 12), undefined);
  assert.equal(server.counters.offers, 1);
});

Deno.test("`DhcpServer.handle()` follows the order of the parameter request list", () => {
  const { server, link } = setup();
  server.handle(request(DhcpMessageType.Discover, [[55, [26, 6, 119, 3, 1, 99, 6]]]), 0, 253, 0);
  const r = decode(link.take()[0]);
  assert.deepEqual(r.options.map(([c]) => c), [53, 54, 26, 6, 119, 3, 1, 15, 51]);
});

Deno.test("`DhcpServer.handle()` honours rapid commit with an immediate ACK", () => {
  const { server, link } = setup();
  server.handle(request(DhcpMessageType.Discover, [[80, []]]), 0, 246, 0);
  const r = decode(link.take()[0]);
  assert.deepEqual(opt(r, 53), new Uint8Array([DhcpMessageType.Ack]));
  assert.deepEqual(opt(r, 80), new Uint8Array([]));
  assert.equal(r.yiaddr, "10.0.2.15");
});

Deno.test("`DhcpServer.handle()` ACKs a REQUEST for our address and NAKs another", () => {
  const { server, link } = setup();
  server.handle(
    request(DhcpMessageType.Request, [[50, [10, 0, 2, 15]], [54, [10, 0, 2, 2]]]),
    0,
    256,
    0,
  );
  let r = decode(link.take()[0]);
  assert.deepEqual(opt(r, 53), new Uint8Array([DhcpMessageType.Ack]));
  assert.equal(r.yiaddr, "10.0.2.15");
  server.handle(request(DhcpMessageType.Request, [[50, [10, 0, 2, 99]]]), 0, 250, 0);
  r = decode(link.take()[0]);
  assert.deepEqual(opt(r, 53), new Uint8Array([DhcpMessageType.Nak]));
  assert.equal(r.yiaddr, "0.0.0.0");
  assert.equal(r.dstIp, "255.255.255.255");
  assert.equal(r.dstMac, MAC_BROADCAST);
  assert.equal(opt(r, 51), undefined);
  // Renewal: ciaddr set, no option 50, unicast back to ciaddr.
  server.handle(request(DhcpMessageType.Request, [], { ciaddr: 0x0a00020f }), 0, 244, 0);
  r = decode(link.take()[0]);
  assert.deepEqual(opt(r, 53), new Uint8Array([DhcpMessageType.Ack]));
  assert.equal(r.dstIp, "10.0.2.15");
  assert.equal(r.ciaddr, "10.0.2.15");
  // REQUEST addressed to another server: silence.
  server.handle(request(DhcpMessageType.Request, [[54, [10, 9, 9, 9]]]), 0, 250, 0);
  assert.equal(link.frames.length, 0);
  assert.deepEqual(server.counters, {
    offers: 0,
    acks: 2,
    naks: 1,
    ignored: 1,
    optionsOmitted: 0,
  });
});

Deno.test("`DhcpServer.handle()` broadcasts when the client sets the broadcast flag", () => {
  const { server, link } = setup();
  server.handle(request(DhcpMessageType.Discover, [], { flags: DHCP_FLAG_BROADCAST }), 0, 244, 0);
  const r = decode(link.take()[0]);
  assert.equal(r.dstIp, "255.255.255.255");
  assert.equal(r.dstMac, MAC_BROADCAST);
});

Deno.test("`DhcpServer.handle()` answers INFORM without address or lease", () => {
  const { server, link } = setup();
  server.handle(request(DhcpMessageType.Inform, [], { ciaddr: 0x0a00020f }), 0, 244, 0);
  const r = decode(link.take()[0]);
  assert.deepEqual(opt(r, 53), new Uint8Array([DhcpMessageType.Ack]));
  assert.equal(r.yiaddr, "0.0.0.0");
  assert.equal(opt(r, 51), undefined);
  assert.deepEqual(opt(r, 6), new Uint8Array([10, 0, 2, 3, 10, 0, 2, 4]));
});

Deno.test("`DhcpServer.handle()` adds option 121 when the gateway is off-subnet", () => {
  const { server, link } = setup({ address4: "203.0.113.7/32", gateway4: "203.0.113.1" });
  server.handle(request(DhcpMessageType.Discover), 0, 244, 0);
  const r = decode(link.take()[0]);
  assert.deepEqual(
    opt(r, 121),
    new Uint8Array([32, 203, 0, 113, 1, 0, 0, 0, 0, 0, 203, 0, 113, 1]),
  );
  assert.deepEqual(opt(r, 1), new Uint8Array([255, 255, 255, 255]));
});

Deno.test("`DhcpServer.handle()` sends a host name and splits long search lists", () => {
  const search = Array.from({ length: 30 }, (_, i) => `d${i}-${"x".repeat(10)}.example${i}.net`);
  const { server, link } = setup({ fqdn: "vm1.example.com", search, noDhcpDns: true });
  // Option 57: the client takes datagrams up to 1500 bytes.
  const req = request(DhcpMessageType.Discover, [[57, [0x05, 0xdc]]]);
  server.handle(req, 0, req.length, 0);
  const r = decode(link.take()[0]);
  assert.ok(r.length <= 1500 - 28);
  assert.equal(new TextDecoder().decode(opt(r, 12)), "vm1");
  assert.equal(opt(r, 6), undefined);
  const parts = r.options.filter(([c]) => c === 119).map(([, d]) => d);
  assert.ok(parts.length >= 2);
  const joined = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    joined.set(p, o);
    o += p.length;
  }
  assert.deepEqual(decodeDomainList(joined), search);
});

Deno.test("`DhcpServer.handle()` leaves out what exceeds the default 576-byte datagram", () => {
  const search = Array.from({ length: 30 }, (_, i) => `d${i}-${"x".repeat(10)}.example${i}.net`);
  const { server, link } = setup({ search });
  server.handle(request(DhcpMessageType.Discover), 0, 244, 0);
  const [f] = link.take();
  assert.ok(f.length - 14 <= 576, `${f.length}`);
  const r = decode(f);
  assert.equal(opt(r, 119), undefined);
  assert.ok(opt(r, 1) && opt(r, 3) && opt(r, 51) && opt(r, 6));
  assert.equal(server.counters.optionsOmitted, 1);
});

Deno.test("`DhcpServer.handle()` drops malformed messages with a reason", () => {
  const { server, link } = setup();
  const good = request(DhcpMessageType.Discover);
  assert.equal(server.handle(good, 0, 239, 0), "dhcp-truncated");
  let b: Uint8Array = good.slice();
  b[0] = 2;
  assert.equal(server.handle(b, 0, b.length, 0), "dhcp-not-request");
  b = good.slice();
  b[2] = 16;
  assert.equal(server.handle(b, 0, b.length, 0), "dhcp-bad-hardware");
  b = good.slice();
  b[236] = 0;
  assert.equal(server.handle(b, 0, b.length, 0), "dhcp-bad-cookie");
  b = request(DhcpMessageType.Discover, [[55, [1, 2, 3]]]);
  b[b.length - 5] = 200; // option 55 claims 200 bytes
  assert.equal(server.handle(b, 0, b.length, 0), "dhcp-bad-options");
  b = good.slice(0, 241);
  b[240] = 53; // code without a length byte
  assert.equal(server.handle(b, 0, b.length, 0), "dhcp-bad-options");
  b = good.slice();
  b[240] = 0;
  b[241] = 0;
  b[242] = 0;
  assert.equal(server.handle(b, 0, b.length, 0), "dhcp-no-message-type");
  assert.equal(link.frames.length, 0);
});

Deno.test("`DhcpServer.handle()` never throws on arbitrary options", () => {
  const { server, link } = setup();
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 120 }), (opts) => {
      const b = new Uint8Array(240 + opts.length);
      b.set(request(DhcpMessageType.Discover).subarray(0, 240));
      b.set(opts, 240);
      server.handle(b, 0, b.length, 0);
      for (const f of link.take()) decode(f);
    }),
    { numRuns: 300 },
  );
});

Deno.test("`DhcpServer.handle()` sends --fqdn as option 81 (RFC 4702) only to a client asking for it", () => {
  const { server, link } = setup({ fqdn: "vm1.example.com" });
  const wire = [3, ...new TextEncoder().encode("vm1"), 7, ...new TextEncoder().encode("example")];
  const name = [...wire, 3, ...new TextEncoder().encode("com"), 0];
  // Not asked: no option 81.
  server.handle(request(DhcpMessageType.Discover), 0, 244, 0);
  assert.equal(opt(decode(link.take()[0]), 81), undefined);
  // Listed in the parameter request list: N and E set, RCODEs 255, wire-format name.
  let req = request(DhcpMessageType.Discover, [[55, [1, 3, 81]]]);
  server.handle(req, 0, req.length, 0);
  assert.deepEqual(opt(decode(link.take()[0]), 81), new Uint8Array([0x0c, 255, 255, ...name]));
  // The client's own option 81 asking the server to update the A record (S): overridden (O).
  req = request(DhcpMessageType.Request, [[81, [0x05, 0, 0, 3, 0x61, 0x62, 0x63, 0]]]);
  server.handle(req, 0, req.length, 0);
  assert.deepEqual(opt(decode(link.take()[0]), 81), new Uint8Array([0x0e, 255, 255, ...name]));
  // A client using the deprecated ASCII encoding (E clear) gets the name as text.
  req = request(DhcpMessageType.Request, [[81, [0x00, 0, 0, ...new TextEncoder().encode("abc")]]]);
  server.handle(req, 0, req.length, 0);
  assert.deepEqual(
    opt(decode(link.take()[0]), 81),
    new Uint8Array([0x08, 255, 255, ...new TextEncoder().encode("vm1.example.com")]),
  );
  // Without --fqdn nothing is sent, even when asked.
  const plain = setup();
  req = request(DhcpMessageType.Discover, [[55, [81]]]);
  plain.server.handle(req, 0, req.length, 0);
  assert.equal(opt(decode(plain.link.take()[0]), 81), undefined);
});

Deno.test("`DhcpServer.handle()` logs one debug line per exchange, with addresses", () => {
  const plan = buildNetworkPlan({
    address4: "10.0.2.15/24",
    gateway4: "10.0.2.2",
    ipv4Only: true,
  }, NO_HOST);
  const sender = new GuestSender(plan.ourMac);
  sender.setLink(new RecordingLink());
  const { logger, lines } = recordingLogger({ level: "debug", withLevel: true });
  const server = new DhcpServer(plan, sender, logger);
  server.handle(request(DhcpMessageType.Discover), 0, 244, 0);
  server.handle(request(DhcpMessageType.Request, [[50, [10, 0, 2, 15]]]), 0, 250, 0);
  server.handle(request(DhcpMessageType.Request, [[50, [10, 0, 2, 99]]]), 0, 250, 0);
  server.handle(request(DhcpMessageType.Release), 0, 244, 0);
  assert.deepEqual(lines, [
    "debug: DHCP: offer to discover from 52:54:00:ab:cd:ef: 10.0.2.15/24, router 10.0.2.2",
    "debug: DHCP: ack to request from 52:54:00:ab:cd:ef: 10.0.2.15/24, router 10.0.2.2",
    "debug: DHCP: nak to request from 52:54:00:ab:cd:ef for 10.0.2.99 " +
    "(the guest's address is 10.0.2.15)",
    "debug: DHCP: release from 52:54:00:ab:cd:ef ignored",
  ]);
  // At info level nothing is formatted or written.
  logger.setLevel("info");
  server.handle(request(DhcpMessageType.Discover), 0, 244, 0);
  assert.equal(lines.length, 4);
});

for (
  const [configured, device, advertised] of [
    [65520, 1500, [0x05, 0xdc]], // QEMU host_mtu=1500 bounds the default
    [1400, 1500, [0x05, 0x78]], // a smaller --mtu stays
    [65520, 0, [0xff, 0xf0]], // no device MTU: the plan's
    [0, 1500, null], // -m 0: none advertised
  ] as const
) {
  Deno.test(`\`DhcpServer.handle()\` advertises MTU ${configured} bounded by the device's ${device}`, () => {
    const { server, link } = setup({ mtu: configured });
    link.deviceMtu = device;
    assert.equal(server.handle(request(DhcpMessageType.Discover), 0, 244, 0), "ok");
    const r = decode(link.take()[0]);
    assert.deepEqual(opt(r, 26), advertised === null ? undefined : new Uint8Array(advertised));
  });
}
