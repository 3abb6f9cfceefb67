import assert from "node:assert/strict";
import { MAC_BROADCAST, parseIpv6 } from "./address.ts";
import { IPPROTO_TCP, IPPROTO_UDP, l4ChecksumV4 } from "./checksum.ts";
import { ETHERTYPE_ARP } from "./ethernet.ts";
import { GuestSender, L4_OFFSET_V4, L4_OFFSET_V6, MAX_FRAME_LENGTH } from "./guest_sender.ts";
import { buildTcp, tcpChecksumOkV6 } from "./tcp_header.ts";
import { buildUdp } from "./udp.ts";
import { decodeFrame } from "./testing_frames.ts";
import { RecordingLink } from "./testing_link.ts";
import { SendResult } from "../tap/frame_transport.ts";

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
