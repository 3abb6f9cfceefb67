import assert from "node:assert/strict";
import { MAC_BROADCAST } from "./wire/address.ts";
import { internetChecksum, l4ChecksumV4 } from "./wire/checksum.ts";
import {
  buildEthernet,
  ETH_HEADER_LENGTH,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
} from "./wire/ethernet.ts";
import { buildIpv4 } from "./wire/ipv4.ts";
import { GuestSender, L4_OFFSET_V4, L4_OFFSET_V6 } from "./guest_sender.ts";
import { icmpv4ChecksumOk, icmpv6ChecksumOk } from "./wire/icmp.ts";
import {
  buildTcp,
  TCP_ACK_FLAG,
  TCP_CHECKSUM_OFFSET,
  tcpChecksumOkV4,
  tcpChecksumOkV6,
} from "./wire/tcp_header.ts";
import { buildUdp, udpChecksumOkV4, udpChecksumOkV6 } from "./wire/udp.ts";
import { decodeFrame } from "../../tests/support/net/frames.ts";
import { nextTask, RecordingLink } from "../../tests/support/net/recording_link.ts";
import { MAX_FRAME_LENGTH, newFrameSpace, SendResult } from "../tap/frame_transport.ts";
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP } from "./wire/ip_protocol.ts";
import { parseIpv6 } from "../../ffi/ip_address_text.ts";
import { recordingLogger } from "../../tests/support/recording_logger.ts";

function setup() {
  const s = new GuestSender(0x9a559a559a55);
  const link = new RecordingLink();
  s.setLink(link);
  return { s, link };
}

Deno.test("`GuestSender.sendIpv4()` builds a valid frame with the UDP checksum filled", () => {
  const { s, link } = setup();
  buildUdp(s.buffer, L4_OFFSET_V4, 53, 4000, 3);
  s.buffer.set([1, 2, 3], L4_OFFSET_V4 + 8);
  assert.equal(s.sendIpv4(IPPROTO_UDP, 0x08080808, 0x0a000215, 11), SendResult.Sent);
  s.sendIpv4(IPPROTO_UDP, 0x08080808, 0x0a000215, 11);
  const [a, b] = link.take();
  const d = decodeFrame(a);
  assert.equal(d.eth.dst, MAC_BROADCAST); // guest MAC not learnt yet
  assert.equal(d.eth.src, 0x9a559a559a55);
  assert.equal(d.ip4!.ttl, 64);
  assert.equal(l4ChecksumV4(d.l4, 0, 11, IPPROTO_UDP, 0x08080808, 0x0a000215), 0);
  assert.notEqual(decodeFrame(b).ip4!.id, d.ip4!.id);
  assert.equal(s.counters.sent, 2);
});

Deno.test("`GuestSender.sendIpv6()` maps multicast destinations to 33:33 MACs", () => {
  const { s, link } = setup();
  s.guestMac = 0x525400000001;
  const src = parseIpv6("fe80::1")!;
  buildTcp(s.buffer, L4_OFFSET_V6, {
    srcPort: 1,
    dstPort: 2,
    seq: 3,
    ack: 4,
    flags: 0x10,
    window: 9,
  });
  s.sendIpv6(IPPROTO_TCP, src, parseIpv6("ff02::1:ff00:15")!, 20);
  s.sendIpv6(IPPROTO_TCP, src, parseIpv6("2001:db8::15")!, 20, { hopLimit: 7 });
  const [m, u] = link.take().map(decodeFrame);
  assert.equal(m.eth.dst, 0x3333ff000015);
  assert.equal(u.eth.dst, 0x525400000001);
  assert.equal(u.ip6!.hopLimit, 7);
  assert.ok(tcpChecksumOkV6(u.l4, 0, 20, u.ip6!.src, u.ip6!.dst));
});

Deno.test("`GuestSender` counts refusals, missing links and oversize packets", () => {
  const { s, link } = setup();
  link.refuseWith = SendResult.NoRoom;
  assert.equal(s.sendEthernet(ETHERTYPE_ARP, 42), SendResult.NoRoom);
  link.refuseWith = SendResult.Dropped;
  s.sendEthernet(ETHERTYPE_ARP, 42);
  assert.equal(s.sendIpv4(IPPROTO_UDP, 1, 2, MAX_FRAME_LENGTH), SendResult.Dropped);
  s.setLink(null);
  assert.equal(s.sendEthernet(ETHERTYPE_ARP, 42), SendResult.Dropped);
  assert.deepEqual(s.counters, { sent: 0, noRoom: 1, dropped: 2, noLink: 1 });
});

/** Sends one small UDP/IPv4 datagram. */
function sendOne(s: GuestSender): SendResult {
  buildUdp(s.buffer, L4_OFFSET_V4, 53, 4000, 0);
  return s.sendIpv4(IPPROTO_UDP, 0x0a000202, 0x0a000215, 8);
}

/** Counts queueMicrotask calls made while `body` runs. */
function countMicrotasks(body: () => void): number {
  const original = globalThis.queueMicrotask;
  let count = 0;
  globalThis.queueMicrotask = (callback) => {
    count++;
    original(callback);
  };
  try {
    body();
  } finally {
    globalThis.queueMicrotask = original;
  }
  return count;
}

Deno.test("`GuestSender` flushes frames sent outside any batch once, when the current task ends", async () => {
  const { s, link } = setup();
  let scheduled = 0;
  scheduled = countMicrotasks(() => {
    for (let i = 0; i < 100; i++) assert.equal(sendOne(s), SendResult.Sent);
  });
  assert.equal(scheduled, 1, "one flush scheduled for the batch, not one per frame");
  assert.equal(link.flushes, 0, "nothing flushed before the task ends");
  await nextTask();
  assert.equal(link.flushes, 1);
  assert.equal(link.flushedFrames, 100);
  assert.equal(link.unflushedFrames, 0);
});

Deno.test("`GuestSender.flush()` covers what was sent; the scheduled flush then adds none", async () => {
  const { s, link } = setup();
  sendOne(s);
  s.flush();
  assert.equal(link.flushes, 1);
  await nextTask();
  assert.equal(link.flushes, 1, "no second, empty flush");
  // Frames after an explicit flush in the same task are flushed when it ends.
  const scheduled = countMicrotasks(() => {
    sendOne(s);
    s.flush();
    sendOne(s);
    sendOne(s);
  });
  assert.equal(scheduled, 1);
  await nextTask();
  assert.equal(link.flushes, 3);
  assert.equal(link.unflushedFrames, 0);
  assert.equal(link.flushedFrames, 4);
});

Deno.test("`GuestSender` flushes after a refused frame too, and not at all without a link", async () => {
  const { s, link } = setup();
  // A link that answers NoRoom or Dropped may still have returned buffers (a malformed
  // RX chain given back empty): they need publishing like a sent frame.
  link.refuseWith = SendResult.NoRoom;
  sendOne(s);
  await nextTask();
  assert.equal(link.flushes, 1);
  link.refuseWith = SendResult.Dropped;
  sendOne(s);
  await nextTask();
  assert.equal(link.flushes, 2);
  s.setLink(null);
  assert.equal(countMicrotasks(() => sendOne(s)), 0);
  // Frames pending when the link goes away are not flushed to the next link.
  link.refuseWith = null;
  s.setLink(link);
  sendOne(s);
  const next = new RecordingLink();
  s.setLink(next);
  await nextTask();
  assert.equal(link.flushes, 2);
  assert.equal(next.flushes, 0);
});

Deno.test("`GuestSender` keeps a failing scheduled flush from escaping its microtask", async () => {
  const { s, link } = setup();
  link.flush = () => {
    throw new Error("link gone");
  };
  sendOne(s);
  await nextTask(); // an exception thrown from the microtask would fail the test here
  link.flush = RecordingLink.prototype.flush;
  sendOne(s);
  await nextTask();
  assert.equal(link.flushes, 1, "the next frame schedules a flush again");
});

Deno.test("`GuestSender.noteGuestIpv6()` keeps global and link-local addresses apart", () => {
  const { s } = setup();
  s.noteGuestIpv6(parseIpv6("fe80::5")!);
  s.noteGuestIpv6(parseIpv6("2001:db8::5")!);
  assert.deepEqual(s.guestIpv6LinkLocalSeen, parseIpv6("fe80::5"));
  assert.deepEqual(s.guestIpv6Seen, parseIpv6("2001:db8::5"));
});

Deno.test("`GuestSender.sendIpv4()` and `sendIpv6()` send a computed zero UDP checksum as 0xffff", () => {
  const src6 = parseIpv6("fd00::1")!;
  const dst6 = parseIpv6("fd00::2")!;
  const families: [string, number, (s: GuestSender) => void][] = [
    ["v4", L4_OFFSET_V4, (s) => s.sendIpv4(IPPROTO_UDP, 0x0a000001, 0x0a000002, 10)],
    ["v6", L4_OFFSET_V6, (s) => s.sendIpv6(IPPROTO_UDP, src6, dst6, 10)],
  ];
  for (const [family, at, send] of families) {
    const { s, link } = setup();
    buildUdp(s.buffer, at, 1000, 2000, 2);
    s.buffer.fill(0, at + 8, at + 10);
    send(s);
    // Adding the complement of the sum as a data word makes the sum 0xffff: checksum 0.
    const [first] = link.take();
    const checksum = (first[at + 6] << 8) | first[at + 7];
    s.buffer[at + 8] = checksum >>> 8;
    s.buffer[at + 9] = checksum;
    send(s);
    const [second] = link.take();
    assert.deepEqual([second[at + 6], second[at + 7]], [0xff, 0xff], family);
  }
});

/** A TCP segment's checksum field value the sender must leave alone when it may. */
const MARKER = 0xa5c3;

/** Builds a 24-byte TCP segment (with data) at `at` whose checksum field holds {@link MARKER}. */
function tcpWithMarker(s: GuestSender, at: number): number {
  const hl = buildTcp(s.buffer, at, {
    srcPort: 80,
    dstPort: 40000,
    seq: 1,
    ack: 2,
    flags: 0x18,
    window: 512,
  });
  s.buffer.set([1, 2, 3, 4], at + hl);
  s.buffer[at + TCP_CHECKSUM_OFFSET] = MARKER >> 8;
  s.buffer[at + TCP_CHECKSUM_OFFSET + 1] = MARKER & 0xff;
  return hl + 4;
}

const SRC6 = parseIpv6("fd00::2")!;
const DST6 = parseIpv6("fd00::15")!;
const SRC4 = 0x0a000202, DST4 = 0x0a00020f;

/** Sends TCP, UDP and ICMP over IPv4 and IPv6 and returns the decoded frames in that order. */
function sendEveryProtocol(s: GuestSender, link: RecordingLink) {
  const tcp4 = tcpWithMarker(s, L4_OFFSET_V4);
  assert.equal(s.sendIpv4(IPPROTO_TCP, SRC4, DST4, tcp4), SendResult.Sent);
  const tcp6 = tcpWithMarker(s, L4_OFFSET_V6);
  assert.equal(s.sendIpv6(IPPROTO_TCP, SRC6, DST6, tcp6), SendResult.Sent);
  buildUdp(s.buffer, L4_OFFSET_V4, 53, 4000, 3);
  s.buffer.set([7, 8, 9], L4_OFFSET_V4 + 8);
  s.sendIpv4(IPPROTO_UDP, SRC4, DST4, 11);
  buildUdp(s.buffer, L4_OFFSET_V6, 547, 546, 3);
  s.buffer.set([7, 8, 9], L4_OFFSET_V6 + 8);
  s.sendIpv6(IPPROTO_UDP, SRC6, DST6, 11);
  s.buffer.set([0, 0, 0, 0, 0, 1, 0, 1, 0xaa, 0xbb], L4_OFFSET_V4); // echo reply
  s.sendIpv4(IPPROTO_ICMP, SRC4, DST4, 10);
  s.buffer.set([129, 0, 0, 0, 0, 1, 0, 1, 0xaa, 0xbb], L4_OFFSET_V6); // echo reply
  s.sendIpv6(IPPROTO_ICMPV6, SRC6, DST6, 10);
  const frames = link.take().map(decodeFrame);
  assert.equal(frames.length, 6);
  return { frames, tcp4, tcp6 };
}

/** Asserts that the UDP and ICMP frames of {@link sendEveryProtocol} carry valid checksums. */
function assertUdpAndIcmpValid(frames: ReturnType<typeof decodeFrame>[]): void {
  const [, , udp4, udp6, icmp4, icmp6] = frames;
  assert.ok(udpChecksumOkV4(udp4.l4, 0, 11, SRC4, DST4), "UDP/IPv4 checksum");
  assert.notEqual((udp4.l4[6] << 8) | udp4.l4[7], 0, "UDP/IPv4 checksum present");
  assert.ok(udpChecksumOkV6(udp6.l4, 0, 11, SRC6, DST6), "UDP/IPv6 checksum");
  assert.ok(icmpv4ChecksumOk(icmp4.l4, 0, 10), "ICMPv4 checksum");
  assert.ok(icmpv6ChecksumOk(icmp6.l4, 0, 10, SRC6, DST6), "ICMPv6 checksum");
}

Deno.test("`GuestSender` leaves the TCP checksum partial over a link whose l4ChecksumsOptional is true, and fills UDP and ICMP", () => {
  const { s, link } = setup();
  link.l4ChecksumsOptional = true;
  const { frames, tcp4, tcp6 } = sendEveryProtocol(s, link);
  const [t4, t6] = frames;
  // Only the TCP frames name a partial checksum: where summing starts and the field.
  assert.deepEqual(link.partialChecksums, [
    [L4_OFFSET_V4, TCP_CHECKSUM_OFFSET],
    [L4_OFFSET_V6, TCP_CHECKSUM_OFFSET],
    [0, 0],
    [0, 0],
    [0, 0],
    [0, 0],
  ]);
  // decodeFrame validated the IPv4 header checksum: only the upper layer is partial.
  assert.notEqual(
    (t4.l4[TCP_CHECKSUM_OFFSET] << 8) | t4.l4[TCP_CHECKSUM_OFFSET + 1],
    MARKER,
    "pseudo sum written",
  );
  assert.equal(tcpChecksumOkV4(t4.l4, 0, tcp4, SRC4, DST4), false, "not complete as sent");
  assert.equal(tcpChecksumOkV6(t6.l4, 0, tcp6, SRC6, DST6), false, "not complete as sent");
  // Completing it as the guest does (sum from the TCP header on, the field holding the
  // pseudo-header sum) gives the right checksum.
  for (const [l4, length] of [[t4.l4, tcp4], [t6.l4, tcp6]] as const) {
    const complete = internetChecksum(l4, 0, length);
    l4[TCP_CHECKSUM_OFFSET] = complete >> 8;
    l4[TCP_CHECKSUM_OFFSET + 1] = complete & 0xff;
  }
  assert.ok(tcpChecksumOkV4(t4.l4, 0, tcp4, SRC4, DST4), "TCP/IPv4 once completed");
  assert.ok(tcpChecksumOkV6(t6.l4, 0, tcp6, SRC6, DST6), "TCP/IPv6 once completed");
  assertUdpAndIcmpValid(frames);
});

Deno.test("`GuestSender` fills every checksum over a link whose l4ChecksumsOptional is false", () => {
  const { s, link } = setup();
  link.l4ChecksumsOptional = true;
  sendEveryProtocol(s, link);
  // The link is looked at per frame: a new link without the offload gets checksums.
  const plain = new RecordingLink();
  s.setLink(plain);
  const { frames, tcp4, tcp6 } = sendEveryProtocol(s, plain);
  const [t4, t6] = frames;
  assert.ok(tcpChecksumOkV4(t4.l4, 0, tcp4, SRC4, DST4), "TCP/IPv4 checksum");
  assert.ok(tcpChecksumOkV6(t6.l4, 0, tcp6, SRC6, DST6), "TCP/IPv6 checksum");
  assertUdpAndIcmpValid(frames);
});

Deno.test("`GuestSender.committed()` gives a frame built in a reservation the flush, counts and --trace line of a sent one", async () => {
  const { logger, lines } = recordingLogger({ level: "trace" });
  const s = new GuestSender(0x9a559a559a55, logger);
  const link = new RecordingLink();
  s.setLink(link);
  // A TCP segment built in the link's room (as src/net/tcp/output.ts does).
  const space = newFrameSpace();
  const headers = L4_OFFSET_V4 + 20;
  assert.equal(link.reserveFrame(space, headers + 100, headers), SendResult.Sent);
  const b = space.views[0];
  buildEthernet(b, 0, 0x9a559a559a55, 0x020000000001, ETHERTYPE_IPV4);
  buildIpv4(b, ETH_HEADER_LENGTH, {
    protocol: IPPROTO_TCP,
    src: 0x0a000202,
    dst: 0x0a00020f,
    payloadLength: 20 + 100,
  });
  buildTcp(b, L4_OFFSET_V4, {
    srcPort: 80,
    dstPort: 40000,
    seq: 1,
    ack: 1,
    flags: TCP_ACK_FLAG,
    window: 65535,
  });
  const result = link.commitFrame(headers + 100);
  s.committed(b.subarray(0, headers), headers + 100, result);
  assert.equal(s.counters.sent, 1);
  assert.equal(link.flushes, 0, "nothing flushed before the task ends");
  await nextTask();
  assert.equal(link.flushedFrames, 1, "the committed frame was flushed by the end of the task");
  assert.deepEqual(lines, ["to guest: IPv4 10.0.2.2:80 > 10.0.2.15:40000 TCP [.] len 154"]);
  s.committed(b.subarray(0, headers), headers + 100, SendResult.Dropped);
  assert.equal(s.counters.dropped, 1);
  assert.match(lines[1], /len 154 \(dropped\)$/);
});

Deno.test("`GuestSender.mtuFor()` bounds the configured MTU by the link's device MTU", () => {
  const sender = new GuestSender(0x9a559a559a55);
  assert.equal(sender.mtuFor(65520), 65520, "no link");
  const link = new RecordingLink();
  sender.setLink(link);
  assert.equal(sender.mtuFor(65520), 65520, "the device reports none");
  link.deviceMtu = 1500;
  assert.equal(sender.mtuFor(65520), 1500);
  assert.equal(sender.mtuFor(1280), 1280, "a smaller configured MTU stays");
  assert.equal(sender.mtuFor(0), 0, "none advertised stays none");
});
