/**
 * The way frames go to the guest: one reusable output buffer in which a service
 * writes its upper-layer message at a fixed offset, then asks for the IPv4/IPv6
 * and Ethernet headers (and the upper-layer checksum) to be put in front and the
 * frame handed to the current {@link GuestLink}. Also remembers what was learnt
 * about the guest (its MAC address, the addresses it uses).
 *
 * Not re-entrant: the buffer holds one frame at a time, and every send copies the
 * frame out synchronously (GuestLink.sendFrame copies).
 *
 * Every frame handed to the link is followed by a flush before the current task
 * ends, whoever produced it: a batch of guest frames flushes at its end
 * (FrameHandler.endOfBatch), and for every other producer — ping socket replies,
 * host socket callbacks, timers, writable callbacks — the first frame after a flush
 * schedules one flush in a microtask. A producer therefore cannot leave a reply
 * unpublished (a vhost-user used index not updated, a stream queue not written),
 * and a batch costs one queueMicrotask, not one per frame.
 *
 * @module
 */

import { ipv6Equal, MAC_BROADCAST } from "./wire/address.ts";
import {
  foldSum,
  ipv4PseudoSum,
  ipv6PseudoSum,
  setL4ChecksumV4,
  setL4ChecksumV6,
} from "./wire/checksum.ts";
import { ICMP_CHECKSUM, setIcmpv4Checksum } from "./wire/icmp.ts";
import { TCP_CHECKSUM_OFFSET } from "./wire/tcp_header.ts";
import { UDP_CHECKSUM, udpChecksumZeroAsOnes } from "./wire/udp.ts";
import {
  buildEthernet,
  ETH_HEADER_LENGTH,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
} from "./wire/ethernet.ts";
import { buildIpv4, IPV4_FLAG_DF, IPV4_HEADER_MIN, type Ipv4BuildFields } from "./wire/ipv4.ts";
import { buildIpv6, IPV6_HEADER_LENGTH, type Ipv6BuildFields } from "./wire/ipv6.ts";
import { type GuestLink, MAX_FRAME_LENGTH, SendResult } from "../tap/frame_transport.ts";
import { RateLimitedLog } from "../log/rate_limited_log.ts";
import { log as defaultLog, type Logger } from "../log/logger.ts";
import { describeFrame } from "./wire/frame_summary.ts";
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP } from "./wire/ip_protocol.ts";

/** Size of the output buffer: the largest frame a link accepts. */
/** Offset of the upper-layer message in {@link GuestSender.buffer} for IPv4 packets. */
export const L4_OFFSET_V4 = ETH_HEADER_LENGTH + IPV4_HEADER_MIN;
/** Offset of the upper-layer message in {@link GuestSender.buffer} for IPv6 packets. */
export const L4_OFFSET_V6 = ETH_HEADER_LENGTH + IPV6_HEADER_LENGTH;
/** Offset of the payload after the Ethernet header (ARP). */
export const L3_OFFSET = ETH_HEADER_LENGTH;

/** The options of a packet sent with none: every field at its default. */
const NO_OPTIONS = Object.freeze({});

/** Offset of the checksum field inside each upper-layer header (RFC 9293, 768, 792, 4443). */
const CHECKSUM_FIELD: Readonly<Record<number, number>> = {
  [IPPROTO_TCP]: TCP_CHECKSUM_OFFSET,
  [IPPROTO_UDP]: UDP_CHECKSUM,
  [IPPROTO_ICMP]: ICMP_CHECKSUM,
  [IPPROTO_ICMPV6]: ICMP_CHECKSUM,
};

/** Counters of frames toward the guest. */
export interface SendCounters {
  sent: number;
  noRoom: number;
  dropped: number;
  /** Frames discarded because no link was up. */
  noLink: number;
}

/** Builds frames toward the guest in one buffer and sends them over the current link. */
export class GuestSender {
  /** Scratch buffer: write the upper-layer message at L4_OFFSET_V4 / L4_OFFSET_V6. */
  readonly buffer: Uint8Array = new Uint8Array(MAX_FRAME_LENGTH);
  /**
   * The view of {@link buffer}'s first bytes handed over last: frames of one length
   * (every ACK of a flow) reuse it instead of a new view each.
   */
  #frameView: Uint8Array = this.buffer.subarray(0, 0);
  /** The IP header fields of the packet being sent, filled in place for each one. */
  readonly #ipv4Fields: Ipv4BuildFields = {
    payloadLength: 0,
    protocol: 0,
    src: 0,
    dst: 0,
    ttl: undefined,
    tos: undefined,
    id: 0,
    flags: IPV4_FLAG_DF,
  };
  readonly #ipv6Fields: Ipv6BuildFields = {
    payloadLength: 0,
    nextHeader: 0,
    hopLimit: undefined,
    trafficClass: undefined,
    flowLabel: undefined,
    src: new Uint8Array(16),
    dst: new Uint8Array(16),
  };
  /** Our MAC address (source of every frame). */
  readonly ourMac: number;
  /** The guest's MAC address once learnt; broadcast until then. */
  guestMac: number = MAC_BROADCAST;
  /** The IPv4 address the guest was last seen using as source (0 = none yet). */
  guestIpv4Seen = 0;
  /** The global IPv6 address the guest was last seen using (null = none yet). */
  guestIpv6Seen: Uint8Array | null = null;
  /** The link-local IPv6 address the guest was last seen using (null = none yet). */
  guestIpv6LinkLocalSeen: Uint8Array | null = null;
  /** Event counters for diagnostics. */
  readonly counters: SendCounters = { sent: 0, noRoom: 0, dropped: 0, noLink: 0 };
  /**
   * Bytes of the frames counted in `counters.sent` (statistics), in a Float64Array: a
   * number field would change V8's representation of this object when it first
   * passes 2^30 (1 GiB) and deoptimise every function that sends (README, design:
   * "Counters that never change shape").
   */
  readonly #bytesSent = new Float64Array(1);
  #link: GuestLink | null = null;
  #ipv4Id = 0;
  /** Frames went to the link since its last flush. */
  #unflushed = false;
  /** A microtask to flush is queued (it may find nothing left to flush). */
  #flushQueued = false;
  /** Errors of the scheduled flush, which no caller is there to catch. */
  readonly #flushErrors = new RateLimitedLog("warn");
  /** The queued microtask: flushes what the task left unflushed. */
  readonly #flushAtEndOfTask = (): void => {
    this.#flushQueued = false;
    if (!this.#unflushed) return;
    try {
      this.flush();
    } catch (error) {
      // Thrown from a microtask it would end the process.
      this.#flushErrors.write(performance.now(), `guest link: flush failed: ${error}`);
    }
  };

  readonly #log: Logger;

  /**
   * @param ourMac our MAC address as a 48-bit number
   * @param logger where `--trace` lines go, one per frame sent
   */
  constructor(ourMac: number, logger: Logger = defaultLog) {
    this.ourMac = ourMac;
    this.#log = logger;
  }

  /** Bytes of the frames counted in `counters.sent` (statistics). */
  get bytesSent(): number {
    return this.#bytesSent[0];
  }

  /** The current link, or null while the guest is not connected. */
  get link(): GuestLink | null {
    return this.#link;
  }

  /**
   * The MTU to use with the guest: `configured` (the `--mtu` setting), bounded by the
   * MTU the guest's device reports ({@link GuestLink.deviceMtu}, e.g. QEMU's
   * `host_mtu`), since the guest cannot go past that one. 0 stays 0 (none advertised).
   */
  mtuFor(configured: number): number {
    const device = this.#link?.deviceMtu ?? 0;
    return device > 0 && configured > device ? device : configured;
  }

  /**
   * Sets (or clears) the link frames go to. Frames not yet flushed on the previous
   * link are its own business (it is going away): the new link starts clean.
   */
  setLink(link: GuestLink | null): void {
    this.#link = link;
    this.#unflushed = false;
  }

  /**
   * Flushes the link if there is one. Callers that end a batch call it at once; any
   * frame sent without one is flushed when the current task ends (see the module).
   */
  flush(): void {
    this.#unflushed = false;
    this.#link?.flush();
  }

  /**
   * Whether this protocol's checksum may be left partial (pseudo-header sum only, for
   * the guest to complete): TCP only, when the link allows it. UDP keeps its full
   * checksum: DHCP clients reading packet sockets check it themselves.
   */
  #checksumOptional(protocol: number): boolean {
    return protocol === IPPROTO_TCP && this.#link !== null && this.#link.l4ChecksumsOptional;
  }

  /** True when an upper-layer message of `l4Length` bytes at `l4Offset` fits a frame; else counts a drop. */
  #fitsFrame(l4Offset: number, l4Length: number): boolean {
    if (l4Length >= 0 && l4Offset + l4Length <= MAX_FRAME_LENGTH) return true;
    this.counters.dropped++;
    return false;
  }

  /** Whether a message's TCP checksum is left partial: not done yet, optional, and in the message. */
  #leavesChecksumPartial(protocol: number, l4Length: number, done: boolean | undefined): boolean {
    return !done && this.#checksumOptional(protocol) && TCP_CHECKSUM_OFFSET + 2 <= l4Length;
  }

  /** Stores the folded pseudo-header `sum` as the partial TCP checksum of the message at `l4Offset`. */
  #storePartialChecksum(l4Offset: number, sum: number): void {
    const pseudo = foldSum(sum);
    this.buffer[l4Offset + TCP_CHECKSUM_OFFSET] = pseudo >> 8;
    this.buffer[l4Offset + TCP_CHECKSUM_OFFSET + 1] = pseudo & 0xff;
  }

  /** Sends the IP packet whose message ends `l4Length` bytes after `l4Offset` (TCP checksum partial or not). */
  #sendIp(l4Offset: number, l4Length: number, partial: boolean): SendResult {
    return partial
      ? this.#send(l4Offset + l4Length, l4Offset, TCP_CHECKSUM_OFFSET)
      : this.#send(l4Offset + l4Length);
  }

  /**
   * Sends `buffer[0, length)` after writing the Ethernet header (our MAC → `dstMac`,
   * default the guest's MAC or broadcast).
   */
  sendEthernet(etherType: number, length: number, dstMac: number = this.guestMac): SendResult {
    buildEthernet(this.buffer, 0, dstMac, this.ourMac, etherType);
    return this.#send(length);
  }

  /**
   * Sends an IPv4 packet whose upper-layer message of `l4Length` bytes is already at
   * `buffer[L4_OFFSET_V4]`. Fills the upper-layer checksum for TCP/UDP/ICMP unless
   * `l4ChecksumDone`; a TCP checksum is left partial when the link allows it.
   */
  sendIpv4(
    protocol: number,
    src: number,
    dst: number,
    l4Length: number,
    options: { ttl?: number; tos?: number; l4ChecksumDone?: boolean; dstMac?: number } = NO_OPTIONS,
  ): SendResult {
    if (!this.#fitsFrame(L4_OFFSET_V4, l4Length)) return SendResult.Dropped;
    const b = this.buffer;
    const partial = this.#leavesChecksumPartial(protocol, l4Length, options.l4ChecksumDone);
    if (partial) {
      this.#storePartialChecksum(L4_OFFSET_V4, ipv4PseudoSum(src, dst, protocol, l4Length));
    } else if (!options.l4ChecksumDone) {
      const field = CHECKSUM_FIELD[protocol];
      if (field !== undefined && field + 2 <= l4Length) {
        if (protocol === IPPROTO_ICMP) {
          setIcmpv4Checksum(b, L4_OFFSET_V4, l4Length); // no pseudo-header for ICMPv4
        } else {
          const c = setL4ChecksumV4(b, L4_OFFSET_V4, l4Length, protocol, field, src, dst);
          if (protocol === IPPROTO_UDP) udpChecksumZeroAsOnes(b, L4_OFFSET_V4, c);
        }
      }
    }
    this.#ipv4Id = (this.#ipv4Id + 1) & 0xffff;
    const ip = this.#ipv4Fields;
    ip.payloadLength = l4Length;
    ip.protocol = protocol;
    ip.src = src;
    ip.dst = dst;
    ip.ttl = options.ttl;
    ip.tos = options.tos;
    ip.id = this.#ipv4Id;
    buildIpv4(b, ETH_HEADER_LENGTH, ip);
    buildEthernet(b, 0, options.dstMac ?? this.guestMac, this.ourMac, ETHERTYPE_IPV4);
    return this.#sendIp(L4_OFFSET_V4, l4Length, partial);
  }

  /**
   * Sends an IPv6 packet whose upper-layer message of `l4Length` bytes is already at
   * `buffer[L4_OFFSET_V6]`; fills the TCP/UDP/ICMPv6 checksum unless `l4ChecksumDone`
   * (a TCP checksum is left partial when the link allows it).
   * The destination MAC defaults to the guest's, or the IPv6 multicast mapping
   * (RFC 2464 §7) for a multicast destination.
   */
  sendIpv6(
    protocol: number,
    src: Uint8Array,
    dst: Uint8Array,
    l4Length: number,
    options: {
      hopLimit?: number;
      trafficClass?: number;
      flowLabel?: number;
      l4ChecksumDone?: boolean;
      dstMac?: number;
    } = NO_OPTIONS,
  ): SendResult {
    if (!this.#fitsFrame(L4_OFFSET_V6, l4Length)) return SendResult.Dropped;
    const b = this.buffer;
    const partial = this.#leavesChecksumPartial(protocol, l4Length, options.l4ChecksumDone);
    if (partial) {
      this.#storePartialChecksum(
        L4_OFFSET_V6,
        ipv6PseudoSum(src, 0, dst, 0, protocol, l4Length),
      );
    } else if (!options.l4ChecksumDone) {
      const field = CHECKSUM_FIELD[protocol];
      if (field !== undefined && field + 2 <= l4Length) {
        const c = setL4ChecksumV6(b, L4_OFFSET_V6, l4Length, protocol, field, src, dst);
        if (protocol === IPPROTO_UDP) udpChecksumZeroAsOnes(b, L4_OFFSET_V6, c);
      }
    }
    const ip = this.#ipv6Fields;
    ip.payloadLength = l4Length;
    ip.nextHeader = protocol;
    ip.hopLimit = options.hopLimit;
    ip.trafficClass = options.trafficClass;
    ip.flowLabel = options.flowLabel;
    ip.src = src;
    ip.dst = dst;
    buildIpv6(b, ETH_HEADER_LENGTH, ip);
    let dstMac = options.dstMac;
    if (dstMac === undefined) {
      dstMac = dst[0] === 0xff
        ? 0x333300000000 + (((dst[12] << 24) | (dst[13] << 16) | (dst[14] << 8) | dst[15]) >>> 0)
        : this.guestMac;
    }
    buildEthernet(b, 0, dstMac, this.ourMac, ETHERTYPE_IPV6);
    return this.#sendIp(L4_OFFSET_V6, l4Length, partial);
  }

  /** Records the guest's IPv6 source address (global or link-local) if it changed. */
  noteGuestIpv6(src: Uint8Array): void {
    const linkLocal = src[0] === 0xfe && (src[1] & 0xc0) === 0x80;
    const cur = linkLocal ? this.guestIpv6LinkLocalSeen : this.guestIpv6Seen;
    if (cur && ipv6Equal(cur, 0, src, 0)) return;
    const copy = src.slice(0, 16);
    if (linkLocal) this.guestIpv6LinkLocalSeen = copy;
    else this.guestIpv6Seen = copy;
  }

  #send(length: number, checksumStart = 0, checksumOffset = 0): SendResult {
    const link = this.#link;
    if (!link) {
      this.counters.noLink++;
      return SendResult.Dropped;
    }
    let frame = this.#frameView;
    if (frame.length !== length) this.#frameView = frame = this.buffer.subarray(0, length);
    const r = checksumStart > 0
      ? link.sendFrame(frame, checksumStart, checksumOffset)
      : link.sendFrame(frame);
    this.#handedOver(frame, length, r);
    return r;
  }

  /**
   * Accounts for a frame a producer built in a reservation of its own on the current
   * link and committed there (GuestLink.commitFrame): counts it, makes the end of the
   * task flush it like every frame sent here, and logs it with `--trace`.
   * @param headers the frame's first bytes, at least its Ethernet, IP and L4 headers
   * @param length the whole frame's length
   * @param result what commitFrame returned
   */
  committed(headers: Uint8Array, length: number, result: SendResult): void {
    this.#handedOver(headers, length, result);
  }

  /** Schedules the flush, counts and traces a frame handed to the link. */
  #handedOver(frame: Uint8Array, length: number, r: SendResult): void {
    // Whatever the result, the link may hold something to publish (a refused frame can
    // have given back a malformed RX buffer): one flush at the end of the task.
    if (!this.#unflushed) {
      this.#unflushed = true;
      if (!this.#flushQueued) {
        this.#flushQueued = true;
        queueMicrotask(this.#flushAtEndOfTask);
      }
    }
    if (r === SendResult.Sent) {
      this.counters.sent++;
      this.#bytesSent[0] += length;
    } else if (r === SendResult.NoRoom) this.counters.noRoom++;
    else this.counters.dropped++;
    if (this.#log.enabled("trace")) {
      this.#log.trace(
        `to guest: ${describeFrame(frame, length)}` +
          (r === SendResult.Sent ? "" : r === SendResult.NoRoom ? " (no room)" : " (dropped)"),
      );
    }
  }
}
