/**
 * The flow hash that picks the receive queue of a frame toward a multiqueue guest
 * (virtio-net VIRTIO_NET_F_MQ, virtio 1.2 §5.1.6.5.6): a hash of the frame's IP
 * addresses, protocol and ports, so that every frame of one TCP connection or UDP
 * flow lands on the same queue pair. A link computes it from a whole frame
 * ({@link frameFlowHash}); a sender that reserves room before it writes the headers
 * computes the same value from its flow's addresses ({@link flowHashIpv4},
 * {@link flowHashIpv6}) and passes it in the reservation (FrameSpace.flowHash).
 *
 * Murmur3's 32-bit mixing over the fields as big-endian words; not keyed: the guest
 * chooses nothing here that could unbalance the host, at worst its own queues.
 *
 * @module
 */

/** Ethernet header: EtherType at byte 12, payload from 14 (IEEE 802.3; no VLAN tags toward the guest). */
const ETH_TYPE = 12;
const ETH_HEADER = 14;
const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;
/** IPv4 header (RFC 791): IHL nibble at 0, flags + fragment offset at 6, protocol at 9, addresses at 12 and 16. */
const IPV4_FRAGMENT = 6;
const IPV4_PROTOCOL = 9;
const IPV4_SOURCE = 12;
const IPV4_DESTINATION = 16;
const IPV4_MIN_HEADER = 20;
/** More-fragments flag and fragment offset bits of the IPv4 flags/offset word. */
const IPV4_MF_OR_OFFSET = 0x3fff;
/** IPv6 header (RFC 8200): next header at 6, addresses at 8 and 24, 40 bytes. */
const IPV6_NEXT_HEADER = 6;
const IPV6_SOURCE = 8;
const IPV6_DESTINATION = 24;
const IPV6_HEADER = 40;
/** Protocols whose first 4 bytes are the source and destination ports. */
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;

const SEED = 0x74706173;
const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

function mix(hash: number, word: number): number {
  let k = Math.imul(word, C1);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, C2);
  let h = hash ^ k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function finish(hash: number, words: number): number {
  let h = hash ^ (words * 4);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function word(bytes: Uint8Array, at: number): number {
  return (bytes[at] << 24) | (bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3];
}

function portsWord(srcPort: number, dstPort: number): number {
  return ((srcPort & 0xffff) << 16) | (dstPort & 0xffff);
}

/**
 * The flow hash of an IPv4 flow as its frames travel (source, destination, protocol,
 * ports; ports 0 for protocols without them); an unsigned 32-bit value.
 * @param src source address as a 32-bit number (signed or unsigned)
 */
export function flowHashIpv4(
  src: number,
  dst: number,
  protocol: number,
  srcPort: number,
  dstPort: number,
): number {
  let h = mix(SEED, src | 0);
  h = mix(h, dst | 0);
  h = mix(h, portsWord(srcPort, dstPort));
  h = mix(h, protocol & 0xff);
  return finish(h, 4);
}

/** The flow hash of an IPv6 flow, as {@link flowHashIpv4}; addresses are 16 bytes from `srcAt` / `dstAt`. */
export function flowHashIpv6(
  src: Uint8Array,
  dst: Uint8Array,
  protocol: number,
  srcPort: number,
  dstPort: number,
  srcAt = 0,
  dstAt = 0,
): number {
  let h = SEED;
  for (let i = 0; i < 16; i += 4) h = mix(h, word(src, srcAt + i));
  for (let i = 0; i < 16; i += 4) h = mix(h, word(dst, dstAt + i));
  h = mix(h, portsWord(srcPort, dstPort));
  h = mix(h, protocol & 0xff);
  return finish(h, 10);
}

/**
 * The flow hash of an Ethernet frame: {@link flowHashIpv4} / {@link flowHashIpv6} of its
 * IP header and, for TCP and UDP (not IPv4 fragments), its ports; 0 for frames that are
 * not IP or too short to tell. Reads each field once; never throws.
 */
export function frameFlowHash(frame: Uint8Array): number {
  if (frame.length < ETH_HEADER + IPV4_MIN_HEADER) return 0;
  const type = (frame[ETH_TYPE] << 8) | frame[ETH_TYPE + 1];
  if (type === ETHERTYPE_IPV4) {
    const ip = ETH_HEADER;
    const headerLength = (frame[ip] & 0x0f) * 4;
    const protocol = frame[ip + IPV4_PROTOCOL];
    const fragment = ((frame[ip + IPV4_FRAGMENT] << 8) | frame[ip + IPV4_FRAGMENT + 1]) &
      IPV4_MF_OR_OFFSET;
    const l4 = ip + headerLength;
    let srcPort = 0;
    let dstPort = 0;
    if (
      (protocol === IPPROTO_TCP || protocol === IPPROTO_UDP) && fragment === 0 &&
      headerLength >= IPV4_MIN_HEADER && frame.length >= l4 + 4
    ) {
      srcPort = (frame[l4] << 8) | frame[l4 + 1];
      dstPort = (frame[l4 + 2] << 8) | frame[l4 + 3];
    }
    return flowHashIpv4(
      word(frame, ip + IPV4_SOURCE),
      word(frame, ip + IPV4_DESTINATION),
      protocol,
      srcPort,
      dstPort,
    );
  }
  if (type === ETHERTYPE_IPV6 && frame.length >= ETH_HEADER + IPV6_HEADER) {
    const ip = ETH_HEADER;
    const protocol = frame[ip + IPV6_NEXT_HEADER];
    const l4 = ip + IPV6_HEADER;
    let srcPort = 0;
    let dstPort = 0;
    if ((protocol === IPPROTO_TCP || protocol === IPPROTO_UDP) && frame.length >= l4 + 4) {
      srcPort = (frame[l4] << 8) | frame[l4 + 1];
      dstPort = (frame[l4 + 2] << 8) | frame[l4 + 3];
    }
    return flowHashIpv6(
      frame,
      frame,
      protocol,
      srcPort,
      dstPort,
      ip + IPV6_SOURCE,
      ip + IPV6_DESTINATION,
    );
  }
  return 0;
}
