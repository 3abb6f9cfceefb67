import assert from "node:assert/strict";
import dgram from "node:dgram";
import fc from "fast-check";
import { MAC_BROADCAST } from "./wire/address.ts";
import { buildEthernet, ETHERTYPE_ARP } from "./wire/ethernet.ts";
import { L4_OFFSET_V4 } from "./guest_sender.ts";
import { buildForwardRules } from "./plan/fwd.ts";
import { buildNetworkPlan } from "./plan/network_plan.ts";
import { ICMP_CHECKSUM } from "./wire/icmp.ts";
import { IPV6_EXT_FRAGMENT } from "./wire/ipv6.ts";
import type { L4Handler, L4Packet } from "./l4_handler.ts";
import { NetworkStack } from "./stack.ts";
import { buildTcp, TCP_ACK_FLAG, TCP_CHECKSUM_OFFSET, TCP_RST } from "./wire/tcp_header.ts";
import { TcpTranslator } from "./tcp/translator.ts";
import { scriptedHostTcp } from "../../tests/support/net/tcp_host.ts";
import { UDP_CHECKSUM, udpChecksumOkV4 } from "./wire/udp.ts";
import { UdpTranslator } from "./udp/translator.ts";
import {
  decodeFrame,
  guestArpRequest,
  guestIpv4Frame,
  guestIpv6Frame,
  TEST_GUEST_MAC,
  udpDatagram,
} from "../../tests/support/net/frames.ts";
import { RecordingLink } from "../../tests/support/net/recording_link.ts";
import { FrameInfo, type ScatteredFrame, SendResult } from "../tap/frame_transport.ts";
import { Logger } from "../log/logger.ts";
import { IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP } from "./wire/ip_protocol.ts";
import { parseIpv6 } from "../../ffi/ip_address_text.ts";
import { dualStackPlan, NO_HOST } from "../../tests/support/net/built_plan.ts";
import { recordingLogger } from "../../tests/support/recording_logger.ts";

const GUEST4 = 0x0a000215, REMOTE4 = 0xc0000201, GATEWAY4 = 0x0a000202;
const GUEST6 = parseIpv6("2001:db8::15")!, REMOTE6 = parseIpv6("2001:db8:ffff::1")!;

class Recorder implements L4Handler {
  readonly packets: {
    family: number;
    protocol: number;
    src4: number;
    dst4: number;
    src6: string;
    l4: number[];
    ttl: number;
    checksumPending: boolean;
    scattered: boolean;
    /** The UDP header handed over with the packet, as [srcPort, dstPort, payloadLength]. */
    udp: number[] | null;
  }[] = [];
  batches = 0;
  writable = 0;
  ups = 0;
  downs = 0;
  throwNext = false;
  handlePacket(p: L4Packet): void {
    if (this.throwNext) throw new Error("handler bug");
    this.packets.push({
      family: p.family,
      protocol: p.protocol,
      src4: p.src4,
      dst4: p.dst4,
      src6: Array.from(p.src6).join(","),
      l4: Array.from(p.frame.subarray(p.l4Offset, p.l4Offset + p.l4Length)),
      ttl: p.ttl,
      checksumPending: p.checksumPending,
      scattered: p.scattered !== null,
      udp: p.udp === null ? null : [p.udp.srcPort, p.udp.dstPort, p.udp.payloadLength],
    });
  }
  endOfBatch(): void {
    this.batches++;
  }
  linkWritable(): void {
    this.writable++;
  }
  linkUp(): void {
    this.ups++;
  }
  linkDown(): void {
    this.downs++;
  }
}

function setup(logger?: Logger) {
  const plan = dualStackPlan();
  const stack = new NetworkStack(plan, { logger });
  const udp = new Recorder(), tcp = new Recorder();
  stack.registerL4(IPPROTO_UDP, udp);
  stack.registerL4(IPPROTO_TCP, tcp);
  const link = new RecordingLink();
  stack.linkUp(link, 0);
  stack.tick(0);
  link.take();
  return { stack, udp, tcp, link };
}

Deno.test("`NetworkStack.registerL4()` routes UDP and TCP of both families to their handlers, UDP with its parsed header", () => {
  const { stack, udp, tcp } = setup();
  stack.handleFrame(
    guestIpv4Frame(IPPROTO_UDP, GUEST4, REMOTE4, udpDatagram(1000, 53, new Uint8Array([7]))),
    1,
  );
  stack.handleFrame(
    guestIpv6Frame(IPPROTO_UDP, GUEST6, REMOTE6, udpDatagram(1, 2, new Uint8Array())),
    1,
  );
  const seg = new Uint8Array(20);
  seg[12] = 0x50;
  stack.handleFrame(guestIpv4Frame(IPPROTO_TCP, GUEST4, REMOTE4, seg, { ttl: 33 }), 1);
  assert.equal(udp.packets.length, 2);
  assert.deepEqual(udp.packets[0].l4.slice(8), [7]);
  assert.equal(udp.packets[0].src4, GUEST4);
  assert.equal(udp.packets[0].dst4, REMOTE4);
  assert.equal(udp.packets[1].family, 6);
  assert.equal(udp.packets[1].src6, Array.from(GUEST6).join(","));
  assert.deepEqual(udp.packets.map((p) => p.udp), [[1000, 53, 1], [1, 2, 0]]);
  assert.equal(tcp.packets.length, 1);
  assert.equal(tcp.packets[0].udp, null);
  assert.equal(tcp.packets[0].ttl, 33);
  assert.equal(tcp.packets[0].l4.length, 20);
  assert.throws(() => stack.registerL4(IPPROTO_TCP, new Recorder()), /already registered/);
  stack.endOfBatch(2);
  assert.equal(udp.batches, 1);
  assert.equal(udp.ups, 1);
});

Deno.test("`NetworkStack.handleFrame()` learns the guest MAC and answers it directly", () => {
  const plan = buildNetworkPlan(
    { address4: "10.0.2.21/24", gateway4: "10.0.2.2", ipv4Only: true },
    NO_HOST,
  );
  const stack = new NetworkStack(plan);
  assert.equal(stack.sender.guestMac, MAC_BROADCAST);
  const link = new RecordingLink();
  stack.linkUp(link, 0);
  const f = guestArpRequest(GUEST4, 0x0a000202);
  stack.handleFrame(f, 1);
  assert.equal(stack.sender.guestMac, TEST_GUEST_MAC);
  assert.equal(stack.sender.guestIpv4Seen, 0);
  assert.equal(decodeFrame(link.take()[0]).eth.dst, TEST_GUEST_MAC);
  stack.handleFrame(
    guestIpv4Frame(IPPROTO_UDP, GUEST4, REMOTE4, udpDatagram(1, 2, new Uint8Array())),
    1,
  );
  assert.equal(stack.sender.guestIpv4Seen, GUEST4);
});

Deno.test("`NetworkStack.handleFrame()` drops malformed frames at every layer with a reason", () => {
  const { stack, udp, tcp, link } = setup();
  const good = guestIpv4Frame(IPPROTO_UDP, GUEST4, REMOTE4, udpDatagram(1, 2, new Uint8Array(4)));
  const cases: [string, Uint8Array][] = [];
  cases.push(["eth-truncated", good.slice(0, 13)]);
  let f = good.slice();
  f[12] = 0x88;
  f[13] = 0xcc; // LLDP
  cases.push(["unknown-ethertype", f]);
  cases.push(["ipv4-truncated", good.slice(0, 14 + 19)]);
  f = good.slice();
  f[14 + 3] += 10; // total length past the frame (checksum no longer matters: length first)
  cases.push(["ipv4-length-beyond-frame", f]);
  f = good.slice();
  f[14 + 8] ^= 1; // TTL without checksum update
  cases.push(["ipv4-bad-checksum", f]);
  const frag = guestIpv4Frame(IPPROTO_UDP, GUEST4, REMOTE4, udpDatagram(1, 2, new Uint8Array(4)));
  frag[14 + 6] |= 0x20; // MF
  frag[14 + 10] = frag[14 + 11] = 0;
  const c = (() => {
    let s = 0;
    for (let i = 14; i < 34; i += 2) s += (frag[i] << 8) | frag[i + 1];
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    return ~s & 0xffff;
  })();
  frag[14 + 10] = c >> 8;
  frag[14 + 11] = c & 0xff;
  cases.push(["ipv4-fragment", frag]);
  cases.push([
    "udp-truncated",
    guestIpv4Frame(IPPROTO_UDP, GUEST4, REMOTE4, new Uint8Array(5)),
  ]);
  const badUdpLen = udpDatagram(1, 2, new Uint8Array(4));
  badUdpLen[5] = 200;
  cases.push(["udp-bad-length", guestIpv4Frame(IPPROTO_UDP, GUEST4, REMOTE4, badUdpLen)]);
  cases.push(["ipv4-unhandled-protocol", guestIpv4Frame(47, GUEST4, REMOTE4, new Uint8Array(8))]);
  cases.push([
    "ipv6-truncated",
    guestIpv6Frame(IPPROTO_UDP, GUEST6, REMOTE6, new Uint8Array(8)).slice(0, 50),
  ]);
  const v6 = guestIpv6Frame(IPPROTO_UDP, GUEST6, REMOTE6, udpDatagram(1, 2, new Uint8Array(2)));
  cases.push(["ipv6-length-beyond-frame", v6.slice(0, v6.length - 1)]);
  cases.push([
    "ipv6-fragment",
    guestIpv6Frame(IPV6_EXT_FRAGMENT, GUEST6, REMOTE6, new Uint8Array([17, 0, 0, 1, 0, 0, 0, 1])),
  ]);
  cases.push([
    "ipv6-bad-extension-header",
    guestIpv6Frame(60, GUEST6, REMOTE6, new Uint8Array([17, 9, 0, 0])),
  ]);
  const badIcmp6 = guestIpv6Frame(58, GUEST6, REMOTE6, new Uint8Array([128, 0, 0, 0, 0, 1, 0, 1]));
  badIcmp6[badIcmp6.length - 1] ^= 1;
  cases.push(["icmpv6-bad-checksum", badIcmp6]);
  cases.push(["icmp-truncated", guestIpv6Frame(58, GUEST6, REMOTE6, new Uint8Array(4))]);
  const mc = udpDatagram(5353, 5353, new Uint8Array(4));
  cases.push(["ipv4-multicast-destination", guestIpv4Frame(IPPROTO_UDP, GUEST4, 0xe00000fb, mc)]);
  cases.push(["ipv4-multicast-destination", guestIpv4Frame(IPPROTO_UDP, GUEST4, 0xffffffff, mc)]);
  cases.push(["ipv4-broadcast-destination", guestIpv4Frame(IPPROTO_UDP, GUEST4, 0x0a0002ff, mc)]);
  cases.push([
    "ipv6-multicast-destination",
    guestIpv6Frame(IPPROTO_UDP, GUEST6, parseIpv6("ff02::fb")!, mc),
  ]);
  const arp = new Uint8Array(40);
  buildEthernet(arp, 0, MAC_BROADCAST, TEST_GUEST_MAC, ETHERTYPE_ARP);
  cases.push(["arp-truncated", arp]);
  for (const [reason, frame] of cases) {
    const before = stack.drops[reason] ?? 0;
    stack.handleFrame(frame, 1);
    assert.equal(stack.drops[reason], before + 1, reason);
  }
  assert.equal(udp.packets.length + tcp.packets.length, 0);
  assert.equal(link.frames.length, 0);
});

Deno.test("`NetworkStack.handleFrame()` catches handler exceptions and logs them rate-limited", () => {
  const { logger, lines } = recordingLogger();
  const { stack, udp } = setup(logger);
  udp.throwNext = true;
  const f = guestIpv4Frame(IPPROTO_UDP, GUEST4, REMOTE4, udpDatagram(1, 2, new Uint8Array()));
  for (let i = 0; i < 5; i++) stack.handleFrame(f, 100);
  assert.equal(stack.drops.exception, 5);
  assert.equal(lines.filter((l) => l.includes("handler bug")).length, 1);
});

Deno.test("`NetworkStack` fans link writability out and stops sending on linkDown", () => {
  const { stack, udp, link } = setup();
  link.fireWritable(5);
  assert.equal(udp.writable, 1);
  stack.linkDown(6);
  assert.equal(udp.downs, 1);
  assert.equal(stack.sender.link, null);
  stack.sender.buffer.fill(0, L4_OFFSET_V4, L4_OFFSET_V4 + 8);
  assert.equal(stack.sender.sendIpv4(IPPROTO_UDP, 1, 2, 8), SendResult.Dropped);
  assert.equal(stack.sender.counters.noLink, 1);
  assert.equal(link.frames.length, 0);
});

Deno.test("`NetworkStack.describeCounters()` sums up frames and the translators' counters; logged at debug on linkDown", () => {
  const { logger, lines } = recordingLogger({ level: "debug" });
  const { stack, udp } = setup(logger);
  (udp as { counters?: object }).counters = { toHost: 2, dropped: 0, label: "not a number" };
  const datagram = udpDatagram(1000, 53, new Uint8Array([7]));
  stack.handleFrame(guestIpv4Frame(IPPROTO_UDP, GUEST4, REMOTE4, datagram), 1);
  stack.handleFrame(guestIpv4Frame(IPPROTO_UDP, GUEST4, REMOTE4, datagram), 1);
  stack.handleFrame(new Uint8Array(10), 1); // shorter than an Ethernet header
  const summary = stack.describeCounters();
  assert.match(summary, /accepted udp 2/);
  assert.match(summary, /dropped [a-z-]+ 1/);
  assert.match(summary, /udp toHost 2(;|$)/, "only the non-zero numbers");
  assert.doesNotMatch(summary, /tcp/, "a translator without counters is left out");
  stack.linkDown(2);
  assert.ok(lines.includes(summary), `logged: ${lines}`);
});

/** Recomputes the IPv4 header and UDP/ICMP checksums of a mutated frame where possible. */
function fixChecksums(f: Uint8Array): void {
  const sum = (from: number, to: number, init: number) => {
    let x = init;
    for (let i = from; i < to; i += 2) x += (f[i] << 8) | (i + 1 < to ? f[i + 1] : 0);
    while (x > 0xffff) x = (x & 0xffff) + Math.floor(x / 65536);
    return ~x & 0xffff;
  };
  const put = (at: number, v: number) => {
    if (at + 1 < f.length) {
      f[at] = v >> 8;
      f[at + 1] = v & 0xff;
    }
  };
  if (f.length < 34) return;
  if (f[12] === 0x08 && f[13] === 0x00) {
    const hl = (f[14] & 15) * 4;
    if (hl < 20 || 14 + hl > f.length) return;
    put(24, 0);
    put(24, sum(14, 14 + hl, 0));
    const l4 = 14 + hl, end = Math.min(f.length, 14 + ((f[16] << 8) | f[17]));
    if (end - l4 < 8) return;
    if (f[23] === 17) {
      put(l4 + 6, 0);
      const ph = ((f[26] << 8) | f[27]) + ((f[28] << 8) | f[29]) + ((f[30] << 8) | f[31]) +
        ((f[32] << 8) | f[33]) + 17 + (end - l4);
      put(l4 + 6, sum(l4, end, ph) || 0xffff);
    } else if (f[23] === 1) {
      put(l4 + 2, 0);
      put(l4 + 2, sum(l4, end, 0));
    }
  } else if (f[12] === 0x86 && f[13] === 0xdd && f.length >= 62) {
    const end = Math.min(f.length, 54 + ((f[18] << 8) | f[19]));
    const nh = f[20];
    const at = nh === 17 ? 60 : nh === 58 ? 56 : -1;
    if (at < 0 || end < 62) return;
    put(at, 0);
    let ph = end - 54 + nh;
    for (let i = 22; i < 54; i += 2) ph += (f[i] << 8) | f[i + 1];
    put(at, sum(54, end, ph));
  }
}

Deno.test("`NetworkStack.handleFrame()` never throws and never sends malformed frames", () => {
  const { stack, link } = setup();
  const ll = parseIpv6("fe80::2")!;
  const nd = { hopLimit: 255 };
  const dhcp = new Uint8Array(300);
  dhcp.set([1, 1, 6]);
  dhcp.set([0x63, 0x82, 0x53, 0x63, 53, 1, 1, 55, 4, 1, 3, 6, 119, 80, 0, 255], 236);
  const arp = guestArpRequest(GUEST4, 0x0a000202);
  const bases = [
    arp,
    guestIpv4Frame(IPPROTO_UDP, 0, 0xffffffff, udpDatagram(68, 67, dhcp)),
    guestIpv4Frame(1, GUEST4, REMOTE4, new Uint8Array([8, 0, 0, 0, 0, 1, 0, 1, 1, 2])),
    guestIpv6Frame(
      58,
      ll,
      parseIpv6("ff02::2")!,
      new Uint8Array([133, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 3, 4, 5, 6]),
      nd,
    ),
    guestIpv6Frame(
      58,
      ll,
      parseIpv6("ff02::1:ff00:1")!,
      new Uint8Array([135, 0, 0, 0, 0, 0, 0, 0, ...parseIpv6("fe80::1")!]),
      nd,
    ),
    guestIpv6Frame(
      IPPROTO_UDP,
      ll,
      parseIpv6("ff02::1:2")!,
      udpDatagram(
        546,
        547,
        new Uint8Array([
          1,
          0,
          0,
          1,
          0,
          1,
          0,
          4,
          0,
          3,
          0,
          1,
          0,
          3,
          0,
          12,
          0,
          0,
          0,
          1,
          0,
          0,
          0,
          0,
          0,
          0,
          0,
          0,
          0,
          14,
          0,
          0,
        ]),
      ),
    ),
    guestIpv4Frame(IPPROTO_UDP, GUEST4, REMOTE4, udpDatagram(1, 2, new Uint8Array(10))),
    guestIpv6Frame(IPPROTO_TCP, GUEST6, REMOTE6, new Uint8Array(20)),
  ];
  fc.assert(
    fc.property(
      fc.nat(bases.length - 1),
      fc.array(fc.tuple(fc.nat(400), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }),
      fc.nat(40),
      fc.boolean(),
      (which, edits, cut, fix) => {
        const base = bases[which];
        const f = base.slice(0, Math.max(0, base.length - (cut % 8 === 0 ? cut : 0)));
        for (const [pos, val] of edits) if (pos < f.length) f[pos] = val;
        if (fix) fixChecksums(f);
        stack.handleFrame(f, 1);
        for (const out of link.take()) decodeFrame(out);
      },
    ),
    // TPASST_FUZZ_RUNS=1000000 for a long run.
    { numRuns: Number(Deno.env.get("TPASST_FUZZ_RUNS") ?? 2000) },
  );
  assert.equal(stack.drops.exception, undefined);
  // The mutations reached the services, not only the header checks.
  assert.ok(
    (stack.accepted.dhcp ?? 0) > 0 && (stack.accepted.ndp ?? 0) > 0,
    JSON.stringify(stack.accepted),
  );
  assert.ok(
    (stack.accepted.dhcpv6 ?? 0) > 0 && (stack.accepted.arp ?? 0) > 0,
    JSON.stringify(stack.accepted),
  );
});

// ---- checksum offload: FrameInfo.ChecksumPending

/** Spoils the 16-bit checksum at `at` of `frame` (a value no ones'-complement sum accepts). */
function spoil(frame: Uint8Array, at: number): void {
  frame[at] ^= 0x5a;
  frame[at + 1] ^= 0xa5;
}

/** A TCP segment header of 20 bytes with these flags and ports. */
function tcpSegment(srcPort: number, dstPort: number, flags: number): Uint8Array {
  const seg = new Uint8Array(20);
  buildTcp(seg, 0, { srcPort, dstPort, seq: 1000, ack: 2000, flags, window: 100 });
  return seg;
}

Deno.test("`NetworkStack.handleFrame()` hands L4 packets over with checksumPending as FrameInfo says", () => {
  const { stack, udp, tcp } = setup();
  const tcp4 = guestIpv4Frame(IPPROTO_TCP, GUEST4, REMOTE4, tcpSegment(40000, 80, TCP_ACK_FLAG));
  spoil(tcp4, 34 + TCP_CHECKSUM_OFFSET);
  const tcp6 = guestIpv6Frame(IPPROTO_TCP, GUEST6, REMOTE6, tcpSegment(40000, 80, TCP_ACK_FLAG));
  spoil(tcp6, 54 + TCP_CHECKSUM_OFFSET);
  const udp4 = guestIpv4Frame(IPPROTO_UDP, GUEST4, REMOTE4, udpDatagram(1, 2, new Uint8Array(4)));
  spoil(udp4, 34 + UDP_CHECKSUM);
  const udp6 = guestIpv6Frame(IPPROTO_UDP, GUEST6, REMOTE6, udpDatagram(1, 2, new Uint8Array(4)));
  spoil(udp6, 54 + UDP_CHECKSUM);
  for (const f of [tcp4, tcp6, udp4, udp6]) {
    stack.handleFrame(f, 1, FrameInfo.ChecksumPending);
    stack.handleFrame(f, 1, FrameInfo.None);
    stack.handleFrame(f, 1); // info omitted: None
  }
  const flags = (r: Recorder) => r.packets.map((p) => p.checksumPending);
  assert.deepEqual(flags(tcp), [true, false, false, true, false, false]);
  assert.deepEqual(flags(udp), [true, false, false, true, false, false]);
});

Deno.test("`NetworkStack.handleFrame()` makes the TCP translator drop a bad checksum unless ChecksumPending", () => {
  const { stack, tcp, link, close } = setupWithTranslators();
  for (const family of [4, 6] as const) {
    // A bare ACK for no connection is answered at once with a RST, if it is accepted.
    const seg = tcpSegment(40000 + family, 80, TCP_ACK_FLAG);
    const frame = family === 4
      ? guestIpv4Frame(IPPROTO_TCP, GUEST4, REMOTE4, seg)
      : guestIpv6Frame(IPPROTO_TCP, GUEST6, REMOTE6, seg);
    const at = (family === 4 ? 34 : 54) + TCP_CHECKSUM_OFFSET;
    stack.handleFrame(frame, 1);
    assert.equal(rstCount(link.take()), 1, "the valid segment is answered");
    spoil(frame, at);
    const bad = tcp.counters.badSegments;
    stack.handleFrame(frame, 1, FrameInfo.None);
    assert.equal(tcp.counters.badSegments, bad + 1, "the bad checksum is counted");
    assert.equal(link.take().length, 0, "and not answered");
    stack.handleFrame(frame, 1, FrameInfo.ChecksumPending);
    assert.equal(tcp.counters.badSegments, bad + 1);
    assert.equal(rstCount(link.take()), 1, "with ChecksumPending it is answered");
  }
  close();
});

Deno.test("`NetworkStack.handleFrame()` makes the UDP translator drop a bad checksum unless ChecksumPending", async () => {
  const { stack, udp, close } = setupWithTranslators();
  const server = dgram.createSocket("udp4");
  const received: string[] = [];
  server.on("message", (msg) => received.push(new TextDecoder().decode(msg)));
  await new Promise<void>((resolve) => server.bind(0, "127.0.0.1", resolve));
  try {
    const port = server.address().port;
    const datagram = (text: string) => {
      // Via the gateway, which reaches the host's 127.0.0.1.
      const f = guestIpv4Frame(
        IPPROTO_UDP,
        GUEST4,
        GATEWAY4,
        udpDatagram(41000, port, new TextEncoder().encode(text)),
      );
      spoil(f, 34 + UDP_CHECKSUM);
      assert.equal(udpChecksumOkV4(f, 34, f.length - 34, GUEST4, GATEWAY4), false);
      return f;
    };
    const dropped = udp.counters.dropped;
    stack.handleFrame(datagram("unchecked-bad"), 1, FrameInfo.None);
    assert.equal(udp.counters.dropped, dropped + 1);
    stack.handleFrame(datagram("pending"), 2, FrameInfo.ChecksumPending);
    stack.endOfBatch(2);
    assert.equal(udp.counters.dropped, dropped + 1);
    const deadline = performance.now() + 5000;
    while (received.length === 0 && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.deepEqual(received, ["pending"]);
  } finally {
    server.close();
    close();
  }
});

/** How many of `frames` are TCP RSTs. */
function rstCount(frames: Uint8Array[]): number {
  return frames.map(decodeFrame).filter((d) => (d.l4[13] & TCP_RST) !== 0).length;
}

/** A stack with the real TCP and UDP translators (host connects are refused, not made). */
function setupWithTranslators() {
  const plan = dualStackPlan();
  const net = new NetworkStack(plan);
  const rules = buildForwardRules(plan);
  const tcp = new TcpTranslator(net.sender, rules, {
    host: scriptedHostTcp(() => {
      throw new Error("no host connections in this test");
    }),
  });
  const udp = new UdpTranslator(net.sender, rules);
  net.registerL4(IPPROTO_TCP, tcp);
  net.registerL4(IPPROTO_UDP, udp);
  const link = new RecordingLink();
  net.linkUp(link, 0);
  net.tick(0);
  link.take();
  const close = () => {
    tcp.close();
    udp.close();
  };
  return { stack: net, tcp, udp, link, close };
}

/** A DHCPDISCOVER from a client that has no address yet (RFC 2131 §4.4.1). */
function dhcpDiscover(): Uint8Array {
  const dhcp = new Uint8Array(300);
  dhcp.set([1, 1, 6]);
  dhcp.set([0x52, 0x54, 0x00, 0x12, 0x34, 0x56], 28); // chaddr
  dhcp.set([0x63, 0x82, 0x53, 0x63, 53, 1, 1, 55, 3, 1, 3, 6, 255], 236);
  return guestIpv4Frame(IPPROTO_UDP, 0, 0xffffffff, udpDatagram(68, 67, dhcp), {
    dstMac: MAC_BROADCAST,
  });
}

/** A DHCPv6 SOLICIT with a client identifier and a rapid-commit-less IA_NA (RFC 8415 §18.2.1). */
function dhcpv6Solicit(): Uint8Array {
  const msg = [
    1,
    0,
    0,
    1, // SOLICIT, transaction id 1
    0,
    1,
    0,
    10,
    0,
    3,
    0,
    1,
    0x52,
    0x54,
    0x00,
    0x12,
    0x34,
    0x56, // client id: DUID-LL
    0,
    3,
    0,
    12,
    0,
    0,
    0,
    1,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0, // IA_NA iaid 1
    0,
    8,
    0,
    2,
    0,
    0, // elapsed time
  ];
  return guestIpv6Frame(
    IPPROTO_UDP,
    parseIpv6("fe80::5054:ff:fe12:3456")!,
    parseIpv6("ff02::1:2")!,
    udpDatagram(546, 547, new Uint8Array(msg)),
    { dstMac: 0x333300010002 },
  );
}

/** An ICMPv6 Router Solicitation from the guest's link-local address (RFC 4861 §4.1). */
function routerSolicitation(): Uint8Array {
  return guestIpv6Frame(
    IPPROTO_ICMPV6,
    parseIpv6("fe80::5054:ff:fe12:3456")!,
    parseIpv6("ff02::2")!,
    new Uint8Array([133, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
    { dstMac: 0x333300000002, hopLimit: 255 },
  );
}

const STACK_SERVICES: [string, () => Uint8Array, number, string][] = [
  ["DHCP", dhcpDiscover, 34 + UDP_CHECKSUM, "udp-bad-checksum"],
  ["DHCPv6", dhcpv6Solicit, 54 + UDP_CHECKSUM, "udp-bad-checksum"],
  ["NDP", routerSolicitation, 54 + ICMP_CHECKSUM, "icmpv6-bad-checksum"],
];

for (const [service, build, checksumAt, reason] of STACK_SERVICES) {
  Deno.test(`\`NetworkStack.handleFrame()\` answers ${service} with a bad checksum only with ChecksumPending`, () => {
    const plan = buildNetworkPlan({
      address4: "10.0.2.21/24",
      gateway4: "10.0.2.2",
      address6: "2001:db8::15",
      gateway6: "fe80::1",
    }, NO_HOST);
    const stack = new NetworkStack(plan);
    const link = new RecordingLink();
    stack.linkUp(link, 0);
    stack.tick(0);
    link.take();
    stack.handleFrame(build(), 1);
    const answers = link.take().length;
    assert.ok(answers > 0, `a valid ${service} request is answered`);
    const bad = build();
    spoil(bad, checksumAt);
    stack.handleFrame(bad, 2, FrameInfo.None);
    assert.equal(stack.drops[reason], 1);
    assert.equal(link.take().length, 0, "the bad checksum is not answered");
    stack.handleFrame(bad, 3, FrameInfo.ChecksumPending);
    assert.equal(stack.drops[reason], 1);
    assert.equal(
      link.take().length,
      answers,
      "with ChecksumPending it is answered like the valid one",
    );
  });
}

Deno.test("`NetworkStack` traces one line per frame each way with --trace, none below", () => {
  const plan = buildNetworkPlan(
    { address4: "10.0.2.21/24", gateway4: "10.0.2.2", ipv4Only: true },
    NO_HOST,
  );
  const { logger, lines } = recordingLogger({ level: "trace", withLevel: true });
  const stack = new NetworkStack(plan, { logger });
  const link = new RecordingLink();
  stack.linkUp(link, 0);
  const arp = guestArpRequest(GUEST4, GATEWAY4);
  stack.handleFrame(arp, 1);
  assert.deepEqual(lines, [
    "trace: from guest: ARP who-has 10.0.2.2 tell 10.0.2.21 len 42",
    "trace: to guest: ARP 10.0.2.2 is-at (reply to 10.0.2.21) len 42",
  ]);
  logger.setLevel("debug");
  stack.handleFrame(arp, 2);
  assert.equal(link.take().length, 2);
  assert.equal(lines.length, 2);
});

/** A frame whose first `filled` bytes are in `frame`, the rest in `whole` until gathered. */
class PartlyCopiedFrame implements ScatteredFrame {
  gathers = 0;
  #filled: number;
  constructor(readonly frame: Uint8Array, filled: number, readonly whole: Uint8Array) {
    this.#filled = filled;
  }
  get filled(): number {
    return this.#filled;
  }
  gather(upTo: number = this.frame.length): void {
    const end = Math.min(upTo, this.frame.length);
    if (end <= this.#filled) return;
    this.frame.set(this.whole.subarray(this.#filled, end), this.#filled);
    this.#filled = end;
    if (end === this.frame.length) this.gathers++;
  }
  vectorsOf(): number {
    return 0;
  }
}

function partlyCopied(whole: Uint8Array, filled: number): PartlyCopiedFrame {
  const frame = new Uint8Array(whole.length);
  frame.set(whole.subarray(0, filled));
  return new PartlyCopiedFrame(frame, filled, whole);
}

Deno.test("`NetworkStack.handleFrame()` leaves a scattered frame so only for TCP with NEEDS_CSUM and its headers copied; gathers every other", () => {
  const { stack, udp, tcp } = setup();
  const segment = new Uint8Array(2000);
  segment[12] = 0x50; // data offset 5
  segment.fill(0xab, 20);
  const tcp4 = guestIpv4Frame(IPPROTO_TCP, GUEST4, REMOTE4, segment);
  const tcp6 = guestIpv6Frame(IPPROTO_TCP, GUEST6, REMOTE6, segment);
  const udp4 = guestIpv4Frame(IPPROTO_UDP, GUEST4, REMOTE4, udpDatagram(1000, 53, segment));
  const cases = [
    { whole: tcp4, filled: 256, info: FrameInfo.ChecksumPending, kept: true },
    { whole: tcp6, filled: 256, info: FrameInfo.ChecksumPending, kept: true },
    { whole: tcp4, filled: 256, info: FrameInfo.None, kept: false }, // the checksum is checked
    { whole: tcp4, filled: 14 + 20 + 20, info: FrameInfo.ChecksumPending, kept: true }, // its headers
    // One byte of the TCP header missing: the longest headers are copied, the rest is not.
    { whole: tcp4, filled: 14 + 20 + 19, info: FrameInfo.ChecksumPending, kept: true },
    { whole: udp4, filled: 256, info: FrameInfo.ChecksumPending, kept: false },
  ];
  for (const [i, c] of cases.entries()) {
    const frame = partlyCopied(c.whole, c.filled);
    stack.handleFrame(frame.frame, 1, c.info, frame);
    assert.equal(frame.gathers, c.kept ? 0 : 1, `case ${i}`);
    const last = (c.whole === udp4 ? udp : tcp).packets.at(-1)!;
    assert.equal(last.scattered, c.kept, `case ${i}`);
    if (!c.kept) assert.deepEqual(frame.frame, c.whole, `case ${i}: gathered whole`);
    const copied = Math.max(c.filled, c.filled < 14 + 20 + 20 ? 14 + 60 + 60 : 0);
    assert.equal(frame.filled, c.kept ? copied : c.whole.length, `case ${i}: bytes copied`);
    assert.deepEqual(frame.frame.subarray(0, frame.filled), c.whole.subarray(0, frame.filled));
  }
  assert.equal(tcp.packets.length, 5);
  assert.equal(udp.packets.length, 1);
  assert.deepEqual(udp.packets[0].l4.slice(8), Array.from(segment));
});

Deno.test("`NetworkStack.handleFrame()` passes a segmented TCP frame of its IP version to TCP and drops mismatched ones", () => {
  const { stack, udp, tcp } = setup();
  const seg = new Uint8Array(20 + 60000);
  seg[12] = 0x50;
  const pending = FrameInfo.ChecksumPending;
  const tcp4 = guestIpv4Frame(IPPROTO_TCP, GUEST4, REMOTE4, seg);
  const tcp6 = guestIpv6Frame(IPPROTO_TCP, GUEST6, REMOTE6, seg);
  const udp4 = guestIpv4Frame(IPPROTO_UDP, GUEST4, REMOTE4, udpDatagram(1, 2, new Uint8Array(9)));
  const udp6 = guestIpv6Frame(IPPROTO_UDP, GUEST6, REMOTE6, udpDatagram(1, 2, new Uint8Array(9)));
  stack.handleFrame(tcp4, 1, pending | FrameInfo.SegmentedTcp4);
  stack.handleFrame(tcp6, 1, pending | FrameInfo.SegmentedTcp6);
  assert.deepEqual(tcp.packets.map((p) => [p.family, p.l4.length]), [[4, 60020], [6, 60020]]);
  // gso_type naming the other IP version, or a protocol other than TCP: dropped.
  stack.handleFrame(tcp4, 1, pending | FrameInfo.SegmentedTcp6);
  stack.handleFrame(tcp6, 1, pending | FrameInfo.SegmentedTcp4);
  stack.handleFrame(udp4, 1, pending | FrameInfo.SegmentedTcp4);
  stack.handleFrame(udp6, 1, pending | FrameInfo.SegmentedTcp6);
  assert.equal(tcp.packets.length, 2);
  assert.equal(udp.packets.length, 0);
  assert.equal(stack.drops["gso-ip-version-mismatch"], 2);
  assert.equal(stack.drops["gso-not-tcp"], 2);
  // The flag is per frame: the next plain UDP frame goes through.
  stack.handleFrame(udp4, 1, pending);
  assert.equal(udp.packets.length, 1);
});
