import assert from "node:assert/strict";
import { l4ChecksumV6 } from "../wire/checksum.ts";
import { GuestSender } from "../guest_sender.ts";
import { icmpv4ChecksumOk, Icmpv4Type, Icmpv6Type } from "../wire/icmp.ts";
import {
  ICMPV4_ERROR_MAX,
  ICMPV4_PORT_UNREACHABLE,
  ICMPV6_ERROR_MAX,
  ICMPV6_PORT_UNREACHABLE,
  sendIcmpv4Error,
  sendIcmpv6Error,
} from "./error.ts";
import {
  decodeFrame,
  guestIpv4Frame,
  guestIpv6Frame,
  udpDatagram,
} from "../../../tests/support/net/frames.ts";
import { RecordingLink } from "../../../tests/support/net/recording_link.ts";
import { IPPROTO_ICMPV6, IPPROTO_UDP } from "../wire/ip_protocol.ts";
import { parseIpv6 } from "../../../ffi/ip_address_text.ts";

function setup() {
  const sender = new GuestSender(0x9a559a559a55);
  const link = new RecordingLink();
  sender.setLink(link);
  return { sender, link };
}

Deno.test("`sendIcmpv4Error()` quotes the offending packet within 576 bytes", () => {
  const { sender, link } = setup();
  const small = guestIpv4Frame(
    IPPROTO_UDP,
    0x0a000215,
    0xc0000201,
    udpDatagram(5, 6, new Uint8Array(3)),
  );
  sendIcmpv4Error(
    sender,
    Icmpv4Type.DestinationUnreachable,
    ICMPV4_PORT_UNREACHABLE,
    0,
    0xc0000201,
    0x0a000215,
    small.subarray(14),
  );
  let d = decodeFrame(link.take()[0]);
  assert.equal(d.l4[0], 3);
  assert.equal(d.l4[1], 3);
  assert.deepEqual(d.l4.slice(8), small.slice(14));
  assert.ok(icmpv4ChecksumOk(d.l4, 0, d.l4.length));
  const big = guestIpv4Frame(
    IPPROTO_UDP,
    0x0a000215,
    0xc0000201,
    udpDatagram(5, 6, new Uint8Array(2000)),
  );
  sendIcmpv4Error(sender, 3, 3, 0, 0xc0000201, 0x0a000215, big.subarray(14));
  d = decodeFrame(link.take()[0]);
  assert.equal(d.ip4!.totalLength, ICMPV4_ERROR_MAX);
});

Deno.test("`sendIcmpv6Error()` quotes the offending packet within 1280 bytes", () => {
  const { sender, link } = setup();
  const g = parseIpv6("2001:db8::15")!, r = parseIpv6("2001:db8:1::1")!;
  const big = guestIpv6Frame(IPPROTO_UDP, g, r, udpDatagram(5, 6, new Uint8Array(3000)));
  sendIcmpv6Error(
    sender,
    Icmpv6Type.DestinationUnreachable,
    ICMPV6_PORT_UNREACHABLE,
    0,
    r,
    g,
    big.subarray(14),
  );
  const d = decodeFrame(link.take()[0]);
  assert.equal(40 + d.ip6!.payloadLength, ICMPV6_ERROR_MAX);
  assert.equal(d.l4[1], 4);
  assert.deepEqual(d.l4.slice(8, 48), big.slice(14, 54));
  assert.equal(l4ChecksumV6(d.l4, 0, d.l4.length, IPPROTO_ICMPV6, d.ip6!.src, 0, d.ip6!.dst, 0), 0);
});
