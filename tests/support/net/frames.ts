/**
 * Frame builders and decoders for the network stack's tests: what a guest would
 * send (Ethernet + IP + upper layer with valid checksums) and a decoder for what
 * the stack sends back.
 *
 * @module
 */

import {
  buildEthernet,
  ETH_HEADER_LENGTH,
  type EthernetHeader,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  newEthernetHeader,
  parseEthernet,
} from "../../../src/net/wire/ethernet.ts";
import {
  buildIpv4,
  type Ipv4Header,
  newIpv4Header,
  parseIpv4Header,
} from "../../../src/net/wire/ipv4.ts";
import {
  buildIpv6,
  type Ipv6Header,
  newIpv6Header,
  parseIpv6Header,
} from "../../../src/net/wire/ipv6.ts";
import { ARP_OP_REQUEST, buildArp } from "../../../src/net/services/arp.ts";
import { MAC_BROADCAST } from "../../../src/net/wire/address.ts";
import { setIcmpv4Checksum, setIcmpv6Checksum } from "../../../src/net/wire/icmp.ts";
import { buildUdp, setUdpChecksumV4, setUdpChecksumV6 } from "../../../src/net/wire/udp.ts";
import { setTcpChecksumV4, setTcpChecksumV6 } from "../../../src/net/wire/tcp_header.ts";
import {
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPPROTO_TCP,
  IPPROTO_UDP,
} from "../../../src/net/wire/ip_protocol.ts";

/** The guest MAC used by the tests. */
export const TEST_GUEST_MAC = 0x525400123456;

/** Bytes of an Ethernet frame carrying an ARP packet for IPv4 (14 + 28). */
const ARP_FRAME_LENGTH = 42;

/** An ARP request (RFC 826) from the guest, broadcast: who has `targetIp`, tell `senderIp`. */
export function guestArpRequest(senderIp: number, targetIp: number): Uint8Array {
  const f = new Uint8Array(ARP_FRAME_LENGTH);
  buildEthernet(f, 0, MAC_BROADCAST, TEST_GUEST_MAC, ETHERTYPE_ARP);
  buildArp(f, ETH_HEADER_LENGTH, {
    op: ARP_OP_REQUEST,
    senderMac: TEST_GUEST_MAC,
    senderIp,
    targetMac: 0,
    targetIp,
  });
  return f;
}

/** Builds an IPv4 frame from the guest carrying `l4` (checksum filled for known protocols). */
export function guestIpv4Frame(
  protocol: number,
  src: number,
  dst: number,
  l4: Uint8Array,
  opts: { dstMac?: number; ttl?: number } = {},
): Uint8Array {
  const f = new Uint8Array(14 + 20 + l4.length);
  buildEthernet(f, 0, opts.dstMac ?? 0x9a559a559a55, TEST_GUEST_MAC, ETHERTYPE_IPV4);
  buildIpv4(f, 14, { payloadLength: l4.length, protocol, src, dst, ttl: opts.ttl });
  f.set(l4, 34);
  if (protocol === IPPROTO_UDP) setUdpChecksumV4(f, 34, src, dst);
  else if (protocol === IPPROTO_TCP) setTcpChecksumV4(f, 34, l4.length, src, dst);
  else if (protocol === IPPROTO_ICMP) setIcmpv4Checksum(f, 34, l4.length);
  return f;
}

/** Builds an IPv6 frame from the guest carrying `l4` (checksum filled for known protocols). */
export function guestIpv6Frame(
  protocol: number,
  src: Uint8Array,
  dst: Uint8Array,
  l4: Uint8Array,
  opts: { dstMac?: number; hopLimit?: number } = {},
): Uint8Array {
  const f = new Uint8Array(14 + 40 + l4.length);
  buildEthernet(f, 0, opts.dstMac ?? 0x9a559a559a55, TEST_GUEST_MAC, ETHERTYPE_IPV6);
  buildIpv6(f, 14, {
    payloadLength: l4.length,
    nextHeader: protocol,
    hopLimit: opts.hopLimit ?? 64,
    src,
    dst,
  });
  f.set(l4, 54);
  if (protocol === IPPROTO_UDP) setUdpChecksumV6(f, 54, src, dst);
  else if (protocol === IPPROTO_TCP) setTcpChecksumV6(f, 54, l4.length, src, dst);
  else if (protocol === IPPROTO_ICMPV6) setIcmpv6Checksum(f, 54, l4.length, src, dst);
  return f;
}

/** A UDP datagram (header + data) with a zero checksum, to wrap with the builders above. */
export function udpDatagram(srcPort: number, dstPort: number, data: Uint8Array): Uint8Array {
  const b = new Uint8Array(8 + data.length);
  buildUdp(b, 0, srcPort, dstPort, data.length);
  b.set(data, 8);
  return b;
}

/** A frame decoded down to the upper layer. */
export interface DecodedFrame {
  eth: EthernetHeader;
  ip4: Ipv4Header | null;
  ip6: Ipv6Header | null;
  /** The upper-layer bytes (a copy). */
  l4: Uint8Array;
}

/** Decodes a frame the stack sent; throws when any layer is malformed. */
export function decodeFrame(frame: Uint8Array): DecodedFrame {
  const eth = newEthernetHeader();
  if (parseEthernet(frame, eth) !== "ok") throw new Error("bad Ethernet header");
  if (eth.etherType === ETHERTYPE_IPV4) {
    const ip = newIpv4Header();
    const s = parseIpv4Header(frame, 14, frame.length, ip);
    if (s !== "ok") throw new Error(`bad IPv4 header: ${s}`);
    return {
      eth,
      ip4: ip,
      ip6: null,
      l4: frame.slice(ip.payloadOffset, ip.payloadOffset + ip.payloadLength),
    };
  }
  if (eth.etherType === ETHERTYPE_IPV6) {
    const ip = newIpv6Header();
    const s = parseIpv6Header(frame, 14, frame.length, ip);
    if (s !== "ok") throw new Error(`bad IPv6 header: ${s}`);
    return { eth, ip4: null, ip6: ip, l4: frame.slice(ip.l4Offset, ip.l4Offset + ip.l4Length) };
  }
  return { eth, ip4: null, ip6: null, l4: frame.slice(14) };
}
