/**
 * A scripted guest for in-process tests and benchmarks of the TCP and UDP
 * translators: a {@link GuestLink} that parses the frames sent toward the guest and
 * a minimal guest-side TCP (in-order receive, go-back-N send, FIN/RST) plus UDP
 * send/receive, feeding its own segments to the translators as {@link L4Packet}s.
 * IPv4 and IPv6. Not used by the daemon.
 *
 * @module
 */

import { internetChecksum } from "../../../src/net/wire/checksum.ts";
import {
  buildEthernet,
  ETH_HEADER_LENGTH,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
} from "../../../src/net/wire/ethernet.ts";
import { buildIpv4, IPV4_HEADER_MIN } from "../../../src/net/wire/ipv4.ts";
import { buildIpv6, IPV6_HEADER_LENGTH } from "../../../src/net/wire/ipv6.ts";
import type { L4Handler, L4Packet } from "../../../src/net/l4_handler.ts";
import { newL4Packet } from "../../../src/net/l4_handler.ts";
import {
  buildTcp,
  newTcpHeader,
  parseTcp,
  setTcpChecksumV4,
  setTcpChecksumV6,
  TCP_ACK_FLAG,
  TCP_FIN,
  TCP_RST,
  TCP_SYN,
  type TcpBuildFields,
  tcpChecksumOkV4,
  tcpChecksumOkV6,
  type TcpHeader,
} from "../../../src/net/wire/tcp_header.ts";
import {
  buildUdp,
  newUdpHeader,
  parseUdp,
  setUdpChecksumV4,
  setUdpChecksumV6,
  udpChecksumOkV4,
  udpChecksumOkV6,
} from "../../../src/net/wire/udp.ts";
import {
  type FrameSpace,
  type GuestLink,
  MAX_FRAME_LENGTH,
  SendResult,
  type TcpSegments,
} from "../../../src/tap/frame_transport.ts";
import { ScratchFrame } from "../../../src/tap/scratch_frame.ts";
import { RunScratch } from "../tap/run_scratch.ts";
import { IPPROTO_TCP, IPPROTO_UDP } from "../../../src/net/wire/ip_protocol.ts";

/** Seed of each TestGuest's loss generator (any nonzero value). */
const LOSS_SEED = 0x9e3779b9;
/** Guest MAC used by the test guest. */
export const TEST_GUEST_MAC = 0x525400123456;
/** Window scale the test guest offers. */
const GUEST_WSCALE = 7;
/** Guest-side retransmission timeout. */
const GUEST_RTO_MS = 200;

/** The part of NetworkStack the guest drives in {@link TestGuest.useStack} mode. */
export interface StackDriver {
  handleFrame(frame: Uint8Array, now: number): void;
  endOfBatch(now: number): void;
  tick(now: number): void;
  nextTimerAt(): number;
}

/** Where a guest segment or datagram goes / comes from. */
export interface GuestEndpoint {
  family: 4 | 6;
  addr4: number;
  addr6: Uint8Array;
  port: number;
}

/** A datagram the guest received. */
export interface GuestDatagram {
  from4: number;
  from6: Uint8Array | null;
  fromPort: number;
  /** The destination address (IPv4; 0 for IPv6): the guest's own or a forward's target. */
  to4: number;
  /** The destination address (IPv6; null for IPv4). */
  to6: Uint8Array | null;
  toPort: number;
  data: Uint8Array;
}

/** One TCP connection of the test guest. */
export class GuestTcpConn {
  state: "syn-sent" | "syn-rcvd" | "established" | "closed" = "syn-sent";
  readonly family: 4 | 6;
  readonly localPort: number;
  readonly remote4: number;
  readonly remote6: Uint8Array | null;
  readonly remotePort: number;
  /**
   * The guest-side address of this end (IPv4): where an inbound SYN was sent (the
   * guest's own address, or a forward's target address); 0 = the guest's own address.
   */
  local4 = 0;
  /** The guest-side address of this end (IPv6); null = the guest's own address. */
  local6: Uint8Array | null = null;
  iss = 0;
  sndUna = 0;
  sndNxt = 0;
  sndWndRight = 0;
  peerShift = 0;
  peerMss = 536;
  rcvNxt = 0;
  /** Data queued to send (not yet acknowledged), as one growing buffer window. */
  sendQueue: Uint8Array[] = [];
  sendQueueBytes = 0;
  /** Sequence number of sendQueue[0][0]. */
  sendBase = 0;
  finQueued = false;
  finSeq = -1;
  finAcked = false;
  received: Uint8Array[] = [];
  receivedBytes = 0;
  eof = false;
  gotRst = false;
  lastProgress = 0;
  needAck = false;
  dupAcks = 0;
  recover = 0;
  /** Highest sequence number sent. */
  sndMax = 0;
  /** Total bytes received (kept even when {@link discardReceived}). */
  totalReceived = 0;
  /** Drop received data after counting it (benchmarks). */
  discardReceived = false;
  /** Optional running digest of the received data. */
  onData: ((chunk: Uint8Array) => void) | null = null;
  /** Window the guest advertises (bytes). */
  rcvWindow: number;
  #waiters: (() => void)[] = [];

  constructor(
    family: 4 | 6,
    localPort: number,
    remote4: number,
    remote6: Uint8Array | null,
    remotePort: number,
    rcvWindow: number,
  ) {
    this.family = family;
    this.localPort = localPort;
    this.remote4 = remote4;
    this.remote6 = remote6;
    this.remotePort = remotePort;
    this.rcvWindow = rcvWindow;
  }

  /** Wakes whoever waits for a change. */
  notify(): void {
    const w = this.#waiters.splice(0);
    for (const f of w) f();
  }

  /** Resolves once `cond()` holds (checked after each change), or rejects after `ms`. */
  async until(cond: () => boolean, ms = 10_000, what = "condition"): Promise<void> {
    const deadline = performance.now() + ms;
    while (!cond()) {
      if (performance.now() > deadline) {
        throw new Error(`guest connection ${this.localPort}: timed out waiting for ${what}`);
      }
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  /** Concatenates and clears what was received. */
  takeReceived(): Uint8Array {
    const out = new Uint8Array(this.receivedBytes);
    let o = 0;
    for (const c of this.received) {
      out.set(c, o);
      o += c.length;
    }
    this.received = [];
    this.receivedBytes = 0;
    return out;
  }
}

/** The scripted guest. */
export class TestGuest implements GuestLink {
  readonly kind = "test-guest";
  /** What the link reports as the largest receivable frame; tests may lower it. */
  maxFrameLength = MAX_FRAME_LENGTH;
  /** Settable: whether senders may leave TCP/UDP checksums partial (the guest completes them). */
  l4ChecksumsOptional = false;
  /** Settable: TcpSegmentation bits, the large TCP frames this guest takes. */
  tcpSegmentation = 0;
  /** Settable: the device MTU reported (0: none). */
  deviceMtu = 0;
  /** Segment size of every large frame committed with TcpSegments. */
  readonly segmentSizes: number[] = [];
  /** Frames committed as segments of a kind not in {@link tcpSegmentation} (dropped). */
  unexpectedSegmentation = 0;
  /** Frames refused for being larger than {@link maxFrameLength}. */
  oversizedFrames = 0;
  /** TCP/UDP frames dropped for a wrong checksum (partial ones are completed first). */
  badChecksumFrames = 0;
  readonly family: 4 | 6;
  readonly addr4: number;
  readonly addr6: Uint8Array;
  readonly tcp: L4Handler;
  readonly udp: L4Handler | null;
  readonly conns: GuestTcpConn[] = [];
  /** RSTs received for no known connection, and for known ones. */
  rsts = 0;
  /** Datagrams received. */
  readonly datagrams: GuestDatagram[] = [];
  /** Ports the guest accepts inbound connections on. */
  readonly listening = new Set<number>();
  /** Inbound connections accepted. */
  readonly accepted: GuestTcpConn[] = [];
  /** Every TCP header received (when {@link recordHeaders}). */
  readonly headers: TcpHeader[] = [];
  recordHeaders = false;
  /** When true, sendFrame answers NoRoom (the RX ring is full). */
  noRoom = false;
  /**
   * Answer every segment for no known connection with a RST, as a guest kernel that
   * lost its connections does (RFC 9293 §3.10.7.1): `seq` = the segment's ACK number
   * (plus {@link resetSeqOffset}), or RST+ACK from 0 when the segment has no ACK.
   */
  resetUnknown = false;
  /** Added to the sequence number of the RSTs {@link resetUnknown} sends (0: as a kernel). */
  resetSeqOffset = 0;
  /** RSTs sent by {@link resetUnknown}, one per segment answered. */
  resetsSent = 0;
  /**
   * Silently lose about one in N frames toward the guest (0 = none, 1 = all), at
   * positions a fixed-seed generator picks: a fixed period could line up with a
   * go-back-N resend of exactly N frames and lose its first segment every round.
   */
  loseToGuestOneIn = 0;
  /** The same for the TCP segments from the guest. */
  loseFromGuestOneIn = 0;
  /** State of the loss generator (xorshift32, fixed seed: the same losses every run). */
  #lossState = LOSS_SEED;
  mss = 65000;
  /** Whether the guest offers window scaling in its SYNs. */
  offerWindowScale = true;
  /** Window scale shift used when offered (0 when not). */
  get wscale(): number {
    return this.offerWindowScale ? GUEST_WSCALE : 0;
  }
  rcvWindow = 4 * 1024 * 1024;
  #queue: Uint8Array[] = [];
  #pumpScheduled = false;
  #writable: ((now: number) => void) | null = null;
  readonly #scratch = new ScratchFrame();
  /** Settable: the most frames reserveFrames reserves at once (1: one, as reserveFrame). */
  runFrames = 1;
  /** Runs of several frames reserved. */
  runsReserved = 0;
  readonly #run = new RunScratch();
  /** Frames reserved with reserveFrame and committed (the in-place path). */
  committedFrames = 0;
  #nextPort = 40000;
  readonly #hdr = newTcpHeader();
  readonly #pkt: L4Packet = newL4Packet();
  /** The UDP header handed with a datagram, parsed here as the stack would. */
  readonly #udpHeader = newUdpHeader();
  readonly #fields: TcpBuildFields = {
    srcPort: 0,
    dstPort: 0,
    seq: 0,
    ack: 0,
    flags: 0,
    window: 0,
  };
  #waiters: (() => void)[] = [];
  #timer: ReturnType<typeof setInterval>;
  #stack: StackDriver | null = null;

  constructor(
    tcp: L4Handler,
    udp: L4Handler | null,
    family: 4 | 6,
    addr4: number,
    addr6: Uint8Array = new Uint8Array(16),
  ) {
    this.tcp = tcp;
    this.udp = udp;
    this.family = family;
    this.addr4 = addr4 >>> 0;
    this.addr6 = addr6;
    this.#timer = setInterval(() => this.#tick(), 20);
  }

  /** Sends whole frames through `stack` (a NetworkStack) instead of straight to the handlers. */
  useStack(stack: StackDriver): void {
    this.#stack = stack;
  }

  /** Stops the guest's timer. */
  stop(): void {
    clearInterval(this.#timer);
  }

  // ---------------------------------------------------------------- GuestLink

  /** Whether to lose the next frame, about one in `oneIn` (0: never, 1: always). */
  #lose(oneIn: number): boolean {
    if (oneIn <= 0) return false;
    let x = this.#lossState;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#lossState = x >>> 0;
    return this.#lossState % oneIn === 0;
  }

  /**
   * Queues a copy of the frame for the guest (or answers NoRoom). A partial checksum
   * is completed as a guest kernel would (it must then verify like any other).
   */
  sendFrame(frame: Uint8Array, checksumStart = 0, checksumOffset = 0): SendResult {
    if (this.noRoom) return SendResult.NoRoom;
    if (frame.length > this.maxFrameLength) {
      this.oversizedFrames++;
      return SendResult.Dropped;
    }
    if (this.#lose(this.loseToGuestOneIn)) return SendResult.Sent;
    const copy = frame.slice();
    if (checksumStart > 0) {
      if (!this.l4ChecksumsOptional) {
        this.badChecksumFrames++; // a partial checksum the link never allowed
        return SendResult.Sent;
      }
      const field = checksumStart + checksumOffset;
      const complete = internetChecksum(copy, checksumStart, copy.length - checksumStart);
      copy[field] = complete >> 8;
      copy[field + 1] = complete & 0xff;
    }
    this.#queue.push(copy);
    if (!this.#pumpScheduled) {
      this.#pumpScheduled = true;
      queueMicrotask(() => this.#pump());
    }
    return SendResult.Sent;
  }

  /** Reserves room in a scratch frame, bounded like sendFrame (NoRoom when {@link noRoom}). */
  reserveFrame(space: FrameSpace, maxLength: number, headerLength: number): SendResult {
    if (this.noRoom) return SendResult.NoRoom;
    if (headerLength > this.maxFrameLength) return SendResult.Dropped;
    return this.#scratch.reserve(space, Math.min(maxLength, this.maxFrameLength));
  }

  /**
   * Reserves a run of up to {@link runFrames} frames (bounded like reserveFrame), or
   * one frame as reserveFrame does.
   */
  reserveFrames(
    space: FrameSpace,
    frames: number,
    maxLength: number,
    headerLength: number,
  ): SendResult {
    this.#run.cancel();
    const count = Math.min(frames, this.runFrames);
    if (count <= 1 || this.noRoom || headerLength > this.maxFrameLength) {
      const result = this.reserveFrame(space, maxLength, headerLength);
      space.frames = result === SendResult.Sent ? 1 : 0;
      space.frameRooms[0] = space.length - headerLength;
      return result;
    }
    this.#run.reserve(space, count, Math.min(maxLength, this.maxFrameLength), headerLength);
    this.runsReserved++;
    return SendResult.Sent;
  }

  /** Takes the reserved frame (or the run's next one) like sendFrame. */
  commitFrame(
    length: number,
    checksumStart = 0,
    checksumOffset = 0,
    segments?: TcpSegments,
  ): SendResult {
    const frame = this.#run.open ? this.#run.take(length) : this.#scratch.take(length);
    if (frame === null) return SendResult.Dropped;
    if (segments !== undefined && length - segments.headerLength > segments.size) {
      if ((this.tcpSegmentation & segments.kind) === 0 || checksumStart === 0) {
        this.unexpectedSegmentation++;
        return SendResult.Dropped;
      }
      this.segmentSizes.push(segments.size);
    }
    this.committedFrames++;
    return this.sendFrame(frame, checksumStart, checksumOffset);
  }

  /** Forgets the reservation (or what is left of the run). */
  cancelFrame(): void {
    this.#scratch.cancel();
    this.#run.cancel();
  }

  /** Nothing to publish. */
  flush(): void {}

  /** Stores the writable callback. */
  onWritable(callback: (now: number) => void): void {
    this.#writable = callback;
  }

  /** Makes room again and runs the writable callback. */
  makeRoom(): void {
    this.noRoom = false;
    this.#writable?.(performance.now());
  }

  // ---------------------------------------------------------------- API

  /** Opens a connection from the guest to `remote`. */
  connect(remote4: number, remotePort: number, remote6: Uint8Array | null = null): GuestTcpConn {
    const c = new GuestTcpConn(
      this.family,
      this.#nextPort++,
      remote4 >>> 0,
      remote6,
      remotePort,
      this.rcvWindow,
    );
    crypto.getRandomValues(new Uint32Array(1)).forEach((v) => (c.iss = v));
    c.sndUna = c.iss;
    c.sndNxt = (c.iss + 1) >>> 0;
    c.sendBase = c.sndNxt;
    c.sndMax = c.sndNxt;
    c.recover = c.sndNxt;
    c.lastProgress = performance.now();
    this.conns.push(c);
    this.#sendTcp(c, TCP_SYN, c.iss, 0, null, true);
    this.#end();
    return c;
  }

  /** Queues data on `c`. */
  write(c: GuestTcpConn, data: Uint8Array): void {
    c.sendQueue.push(data);
    c.sendQueueBytes += data.length;
    this.#transmit(c);
    this.#end();
  }

  /** Queues a FIN after the data. */
  close(c: GuestTcpConn): void {
    c.finQueued = true;
    this.#transmit(c);
    this.#end();
  }

  /** Sends a bare ACK on `c` (announces its current window). */
  sendAck(c: GuestTcpConn): void {
    this.#sendTcp(c, TCP_ACK_FLAG, c.sndNxt, c.rcvNxt, null, false);
    this.#end();
  }

  /** Sends a RST on `c`. */
  reset(c: GuestTcpConn): void {
    this.#sendTcp(c, TCP_RST | TCP_ACK_FLAG, c.sndNxt, c.rcvNxt, null, false);
    c.state = "closed";
    this.#end();
  }

  /**
   * Forgets every connection without a word to the peer, as a rebooted guest: their
   * segments then count as for no connection (see {@link resetUnknown}).
   */
  forgetConnections(): void {
    for (const c of this.conns) c.state = "closed";
    this.conns.length = 0;
    this.accepted.length = 0;
  }

  /** Sends a hand-made TCP segment (hardening tests). */
  rawTcp(
    srcPort: number,
    dst4: number,
    dst6: Uint8Array | null,
    fields: TcpBuildFields,
    payload: Uint8Array | null = null,
    mangle?: (segment: Uint8Array) => void,
  ): void {
    const f = { ...fields, srcPort };
    this.#emitTcp(f, dst4, dst6, payload, mangle);
    this.#end();
  }

  /**
   * Sends a UDP datagram from the guest (a TX batch of its own), from the guest's own
   * address or from `from` (e.g. the target address a forwarded datagram came to).
   */
  sendUdp(
    srcPort: number,
    dst4: number,
    dstPort: number,
    data: Uint8Array,
    dst6?: Uint8Array,
    from?: { addr4?: number; addr6?: Uint8Array },
  ) {
    this.sendUdpWithoutBatchEnd(srcPort, dst4, dstPort, data, dst6, from);
    this.#end();
    this.udp?.endOfBatch?.(performance.now());
  }

  /**
   * Hands a UDP datagram from the guest to the UDP handler without ending the TX batch
   * (several of them form one batch; the test ends it with the handler's endOfBatch).
   */
  sendUdpWithoutBatchEnd(
    srcPort: number,
    dst4: number,
    dstPort: number,
    data: Uint8Array,
    dst6?: Uint8Array,
    from?: { addr4?: number; addr6?: Uint8Array },
  ): void {
    const ipLen = this.family === 4 ? IPV4_HEADER_MIN : IPV6_HEADER_LENGTH;
    const l4 = ETH_HEADER_LENGTH + ipLen;
    const frame = new Uint8Array(l4 + 8 + data.length);
    const src4 = (from?.addr4 ?? this.addr4) >>> 0;
    const src6 = from?.addr6 ?? this.addr6;
    buildUdp(frame, l4, srcPort, dstPort, data.length);
    frame.set(data, l4 + 8);
    if (this.family === 4) {
      this.#ip4(frame, IPPROTO_UDP, dst4, 8 + data.length, src4);
      setUdpChecksumV4(frame, l4, src4, dst4);
    } else {
      this.#ip6(frame, IPPROTO_UDP, dst6!, 8 + data.length, src6);
      setUdpChecksumV6(frame, l4, src6, dst6!);
    }
    this.#deliver(
      this.udp!,
      frame,
      IPPROTO_UDP,
      dst4,
      dst6 ?? null,
      l4,
      8 + data.length,
      src4,
      src6,
    );
  }

  /** Resolves once `cond()` holds, or rejects after `ms`. */
  async until(cond: () => boolean, ms = 10_000, what = "condition"): Promise<void> {
    const deadline = performance.now() + ms;
    while (!cond()) {
      if (performance.now() > deadline) {
        throw new Error(`test guest: timed out waiting for ${what}`);
      }
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  // ---------------------------------------------------------------- receive

  #pump(): void {
    this.#pumpScheduled = false;
    const frames = this.#queue.splice(0);
    const touched = new Set<GuestTcpConn>();
    for (const fr of frames) this.#receive(fr, touched);
    for (const c of touched) {
      if (c.needAck && c.state !== "closed") {
        c.needAck = false;
        this.#sendTcp(c, TCP_ACK_FLAG, c.sndNxt, c.rcvNxt, null, false);
      }
      this.#transmit(c);
      c.notify();
    }
    this.#end();
    const w = this.#waiters.splice(0);
    for (const f of w) f();
  }

  /** Checks a received TCP/UDP frame's checksum as a guest kernel would. */
  #checksumOk(
    fr: Uint8Array,
    proto: number,
    l4: number,
    end: number,
    src4: number,
    src6: Uint8Array | null,
  ): boolean {
    if (end > fr.length || end < l4) return false;
    // Destination as written in the IP header (IPv4 bytes 16..19, IPv6 bytes 24..39).
    const ipStart = ETH_HEADER_LENGTH;
    const dst4 = ((fr[ipStart + 16] << 24) | (fr[ipStart + 17] << 16) | (fr[ipStart + 18] << 8) |
      fr[ipStart + 19]) >>> 0;
    const dst6 = fr.subarray(ipStart + 24, ipStart + 40);
    if (proto === IPPROTO_TCP) {
      return src6 === null
        ? tcpChecksumOkV4(fr, l4, end - l4, src4, dst4)
        : tcpChecksumOkV6(fr, l4, end - l4, src6, dst6);
    }
    if (proto === IPPROTO_UDP) {
      return src6 === null
        ? udpChecksumOkV4(fr, l4, end - l4, src4, dst4)
        : udpChecksumOkV6(fr, l4, end - l4, src6, dst6);
    }
    return true;
  }

  #receive(fr: Uint8Array, touched: Set<GuestTcpConn>): void {
    const et = (fr[12] << 8) | fr[13];
    let proto: number, l4: number, end: number, src4 = 0, src6: Uint8Array | null = null;
    let dst4 = 0, dst6: Uint8Array | null = null;
    if (et === ETHERTYPE_IPV4) {
      proto = fr[23];
      l4 = ETH_HEADER_LENGTH + (fr[14] & 0xf) * 4;
      end = ETH_HEADER_LENGTH + ((fr[16] << 8) | fr[17]);
      src4 = ((fr[26] << 24) | (fr[27] << 16) | (fr[28] << 8) | fr[29]) >>> 0;
      dst4 = ((fr[30] << 24) | (fr[31] << 16) | (fr[32] << 8) | fr[33]) >>> 0;
    } else if (et === ETHERTYPE_IPV6) {
      proto = fr[20];
      l4 = ETH_HEADER_LENGTH + IPV6_HEADER_LENGTH;
      end = l4 + ((fr[18] << 8) | fr[19]);
      src6 = fr.slice(22, 38);
      dst6 = fr.slice(38, 54);
    } else return;
    if (!this.#checksumOk(fr, proto, l4, end, src4, src6)) {
      this.badChecksumFrames++;
      return;
    }
    if (proto === IPPROTO_UDP) {
      const u = newUdpHeader();
      if (parseUdp(fr, l4, end, u) !== "ok") return;
      this.datagrams.push({
        from4: src4,
        from6: src6,
        fromPort: u.srcPort,
        to4: dst4,
        to6: dst6,
        toPort: u.dstPort,
        data: fr.slice(u.payloadOffset, u.payloadOffset + u.payloadLength),
      });
      return;
    }
    if (proto !== IPPROTO_TCP) return;
    const h = this.#hdr;
    if (parseTcp(fr, l4, end, h) !== "ok") return;
    if (this.recordHeaders) this.headers.push({ ...h });
    let c = this.conns.find((x) =>
      x.localPort === h.dstPort && x.remotePort === h.srcPort &&
      (x.family === 4 ? x.remote4 === src4 : eq16(x.remote6!, src6!)) && x.state !== "closed"
    );
    if (!c) {
      if ((h.flags & (TCP_SYN | TCP_ACK_FLAG)) === TCP_SYN && this.listening.has(h.dstPort)) {
        c = new GuestTcpConn(this.family, h.dstPort, src4, src6, h.srcPort, this.rcvWindow);
        c.local4 = dst4;
        c.local6 = dst6;
        c.state = "syn-rcvd";
        c.iss = crypto.getRandomValues(new Uint32Array(1))[0];
        c.sndUna = c.iss;
        c.sndNxt = (c.iss + 1) >>> 0;
        c.sendBase = c.sndNxt;
        c.sndMax = c.sndNxt;
        c.recover = c.sndNxt;
        c.rcvNxt = (h.seq + 1) >>> 0;
        c.peerMss = h.mss > 0 ? h.mss : 536;
        c.peerShift = h.windowScale >= 0 ? h.windowScale : 0;
        c.sndWndRight = (c.sndNxt + h.window) >>> 0;
        c.lastProgress = performance.now();
        this.conns.push(c);
        this.#sendTcp(c, TCP_SYN | TCP_ACK_FLAG, c.iss, c.rcvNxt, null, true);
        return;
      }
      if (h.flags & TCP_RST) this.rsts++;
      else if (this.resetUnknown) this.#answerWithReset(h, src4, src6);
      return;
    }
    touched.add(c);
    if (h.flags & TCP_RST) {
      this.rsts++;
      c.gotRst = true;
      c.state = "closed";
      return;
    }
    if (c.state === "syn-sent") {
      if ((h.flags & (TCP_SYN | TCP_ACK_FLAG)) === (TCP_SYN | TCP_ACK_FLAG) && h.ack === c.sndNxt) {
        c.rcvNxt = (h.seq + 1) >>> 0;
        c.sndUna = h.ack;
        c.peerMss = h.mss > 0 ? h.mss : 536;
        c.peerShift = h.windowScale >= 0 ? h.windowScale : 0;
        c.sndWndRight = (h.ack + h.window) >>> 0;
        c.state = "established";
        c.needAck = true;
      }
      return;
    }
    if (c.state === "syn-rcvd") {
      if ((h.flags & TCP_ACK_FLAG) && h.ack === c.sndNxt) {
        c.state = "established";
        c.sndUna = h.ack;
        this.accepted.push(c);
      } else return;
    }
    if (h.flags & TCP_ACK_FLAG) {
      if (
        h.ack === c.sndUna && h.payloadLength === 0 && !(h.flags & TCP_FIN) &&
        ((c.sndNxt - c.sndUna) | 0) > 0
      ) {
        // Fast retransmit after three duplicate ACKs, once per window.
        if (++c.dupAcks === 3 && ((c.sndUna - c.recover) | 0) >= 0) {
          c.recover = c.sndMax;
          c.sndNxt = c.sndUna;
          if (c.finSeq >= 0 && !c.finAcked) c.finSeq = -1;
        }
      }
      if (((h.ack - c.sndUna) | 0) > 0) c.dupAcks = 0;
      if (((h.ack - c.sndUna) | 0) > 0 && ((h.ack - c.sndMax) | 0) <= 0) {
        let n = (h.ack - c.sndUna) | 0;
        if (c.finSeq >= 0 && h.ack === ((c.finSeq + 1) >>> 0)) {
          c.finAcked = true;
          n--;
        }
        this.#dropAcked(c, n);
        c.sndUna = h.ack;
        if (((c.sndNxt - h.ack) | 0) < 0) c.sndNxt = h.ack;
        if (((h.ack - c.recover) | 0) < 0 && c.state === "established") {
          // Partial ACK in recovery: resend the next hole at once.
          const avail = c.sendQueueBytes;
          const m = Math.min(avail, c.peerMss, this.mss);
          if (m > 0) {
            this.#sendTcp(c, TCP_ACK_FLAG, c.sndUna, c.rcvNxt, this.#gather(c, 0, m), false);
          }
        }
        c.lastProgress = performance.now();
      }
      if (((h.ack - c.sndUna) | 0) >= 0) {
        c.sndWndRight = (h.ack + (h.window << c.peerShift)) >>> 0;
      }
    }
    const len = h.payloadLength;
    if (len > 0 || (h.flags & TCP_FIN)) {
      if (h.seq !== c.rcvNxt) {
        // Out of order or old: an immediate duplicate ACK (RFC 5681 §4.2).
        this.#sendTcp(c, TCP_ACK_FLAG, c.sndNxt, c.rcvNxt, null, false);
        return;
      }
      if (!c.eof) {
        if (len > 0) {
          const data = fr.slice(h.payloadOffset, h.payloadOffset + len);
          c.totalReceived += len;
          c.onData?.(data);
          if (!c.discardReceived) {
            c.received.push(data);
            c.receivedBytes += len;
          }
          c.rcvNxt = (c.rcvNxt + len) >>> 0;
        }
        if (h.flags & TCP_FIN) {
          c.eof = true;
          c.rcvNxt = (c.rcvNxt + 1) >>> 0;
        }
      }
      c.needAck = true;
    }
  }

  /** The RST a kernel sends for segment `h` of no connection (RFC 9293 §3.10.7.1). */
  #answerWithReset(h: TcpHeader, src4: number, src6: Uint8Array | null): void {
    const withAck = (h.flags & TCP_ACK_FLAG) !== 0;
    const length = h.payloadLength + ((h.flags & TCP_SYN) ? 1 : 0) + ((h.flags & TCP_FIN) ? 1 : 0);
    this.resetsSent++;
    this.#emitTcp(
      {
        srcPort: h.dstPort,
        dstPort: h.srcPort,
        seq: withAck ? (h.ack + this.resetSeqOffset) >>> 0 : 0,
        ack: withAck ? 0 : (h.seq + length) >>> 0,
        flags: withAck ? TCP_RST : TCP_RST | TCP_ACK_FLAG,
        window: 0,
      },
      src4,
      src6,
      null,
    );
  }

  #dropAcked(c: GuestTcpConn, n: number): void {
    c.sendBase = (c.sendBase + n) >>> 0;
    c.sendQueueBytes -= n;
    while (n > 0 && c.sendQueue.length > 0) {
      const head = c.sendQueue[0];
      if (head.length <= n) {
        n -= head.length;
        c.sendQueue.shift();
      } else {
        c.sendQueue[0] = head.subarray(n);
        n = 0;
      }
    }
  }

  // ---------------------------------------------------------------- send

  #transmit(c: GuestTcpConn): void {
    if (c.state !== "established") return;
    const mss = Math.min(c.peerMss, this.mss);
    while (true) {
      const off = (c.sndNxt - c.sendBase) | 0;
      const avail = c.sendQueueBytes - off;
      const wnd = (c.sndWndRight - c.sndNxt) | 0;
      if (avail > 0) {
        const n = Math.min(avail, mss, wnd);
        if (n <= 0) return;
        const data = this.#gather(c, off, n);
        this.#sendTcp(c, TCP_ACK_FLAG, c.sndNxt, c.rcvNxt, data, false);
        c.sndNxt = (c.sndNxt + n) >>> 0;
        if (((c.sndNxt - c.sndMax) | 0) > 0) c.sndMax = c.sndNxt;
        continue;
      }
      if (c.finQueued && c.finSeq < 0) {
        c.finSeq = c.sndNxt;
        this.#sendTcp(c, TCP_ACK_FLAG | TCP_FIN, c.sndNxt, c.rcvNxt, null, false);
        c.sndNxt = (c.sndNxt + 1) >>> 0;
        if (((c.sndNxt - c.sndMax) | 0) > 0) c.sndMax = c.sndNxt;
      }
      return;
    }
  }

  #gather(c: GuestTcpConn, off: number, n: number): Uint8Array {
    const out = new Uint8Array(n);
    let o = 0;
    let skip = off;
    for (const chunk of c.sendQueue) {
      if (skip >= chunk.length) {
        skip -= chunk.length;
        continue;
      }
      const take = Math.min(chunk.length - skip, n - o);
      out.set(chunk.subarray(skip, skip + take), o);
      o += take;
      skip = 0;
      if (o === n) break;
    }
    return out;
  }

  #tick(): void {
    const now = performance.now();
    for (const c of this.conns) {
      if (c.state === "closed") continue;
      const outstanding = ((c.sndNxt - c.sndUna) | 0) > 0;
      if (outstanding && now - c.lastProgress > GUEST_RTO_MS) {
        c.lastProgress = now;
        if (c.state === "syn-sent") {
          this.#sendTcp(c, TCP_SYN, c.iss, 0, null, true);
          continue;
        }
        if (c.state === "syn-rcvd") {
          // The ACK of our SYN-ACK was lost (or the SYN-ACK itself): send it again.
          this.#sendTcp(c, TCP_SYN | TCP_ACK_FLAG, c.iss, c.rcvNxt, null, true);
          continue;
        }
        if (c.state !== "established") continue;
        // Go back to the first unacknowledged byte.
        c.sndNxt = c.sndUna;
        if (c.finSeq >= 0 && !c.finAcked) c.finSeq = -1;
        this.#transmit(c);
      } else if (!outstanding && c.state === "established") {
        this.#transmit(c);
      }
    }
    const st = this.#stack;
    if (st) {
      if (st.nextTimerAt() <= now) st.tick(now);
      this.#end();
      return;
    }
    const tcp = this.tcp;
    if ((tcp.nextTimerAt?.() ?? Infinity) <= now) tcp.tick?.(now);
    if (this.udp && (this.udp.nextTimerAt?.() ?? Infinity) <= now) this.udp.tick?.(now);
    this.#end();
  }

  #end(): void {
    if (this.#stack) return this.#stack.endOfBatch(performance.now());
    this.tcp.endOfBatch?.(performance.now());
  }

  #sendTcp(
    c: GuestTcpConn,
    flags: number,
    seq: number,
    ack: number,
    data: Uint8Array | null,
    syn: boolean,
  ): void {
    const f = this.#fields;
    f.srcPort = c.localPort;
    f.dstPort = c.remotePort;
    f.seq = seq >>> 0;
    f.ack = ack >>> 0;
    f.flags = flags;
    f.window = syn ? 65535 : Math.min(65535, c.rcvWindow >>> this.wscale);
    f.mss = syn ? this.mss : -1;
    f.windowScale = syn && this.offerWindowScale ? this.wscale : -1;
    this.#emitTcp(f, c.remote4, c.remote6, data, undefined, c.local4 || this.addr4, c.local6);
  }

  #emitTcp(
    f: TcpBuildFields,
    dst4: number,
    dst6: Uint8Array | null,
    data: Uint8Array | null,
    mangle?: (segment: Uint8Array) => void,
    src4: number = this.addr4,
    src6: Uint8Array | null = this.addr6,
  ): void {
    src6 ??= this.addr6;
    const ipLen = this.family === 4 ? IPV4_HEADER_MIN : IPV6_HEADER_LENGTH;
    const l4 = ETH_HEADER_LENGTH + ipLen;
    const dl = data?.length ?? 0;
    const frame = new Uint8Array(l4 + 60 + dl);
    const hl = buildTcp(frame, l4, f);
    if (data) frame.set(data, l4 + hl);
    const segLen = hl + dl;
    if (this.family === 4) {
      this.#ip4(frame, IPPROTO_TCP, dst4, segLen, src4);
      setTcpChecksumV4(frame, l4, segLen, src4, dst4);
    } else {
      this.#ip6(frame, IPPROTO_TCP, dst6!, segLen, src6);
      setTcpChecksumV6(frame, l4, segLen, src6, dst6!);
    }
    mangle?.(frame.subarray(l4, l4 + segLen));
    if (this.#lose(this.loseFromGuestOneIn)) return;
    this.#deliver(
      this.tcp,
      frame.subarray(0, l4 + segLen),
      IPPROTO_TCP,
      dst4,
      dst6,
      l4,
      segLen,
      src4,
      src6,
    );
  }

  #ip4(frame: Uint8Array, proto: number, dst: number, len: number, src = this.addr4): void {
    buildEthernet(frame, 0, 0x9a559a559a55, TEST_GUEST_MAC, ETHERTYPE_IPV4);
    buildIpv4(frame, ETH_HEADER_LENGTH, {
      payloadLength: len,
      protocol: proto,
      src,
      dst,
    });
  }

  #ip6(frame: Uint8Array, proto: number, dst: Uint8Array, len: number, src = this.addr6): void {
    buildEthernet(frame, 0, 0x9a559a559a55, TEST_GUEST_MAC, ETHERTYPE_IPV6);
    buildIpv6(frame, ETH_HEADER_LENGTH, {
      payloadLength: len,
      nextHeader: proto,
      src,
      dst,
    });
  }

  #deliver(
    h: L4Handler,
    frame: Uint8Array,
    proto: number,
    dst4: number,
    dst6: Uint8Array | null,
    l4: number,
    l4Length: number,
    src4: number = this.addr4,
    src6: Uint8Array = this.addr6,
  ): void {
    if (this.#stack) {
      this.#stack.handleFrame(frame, performance.now());
      return;
    }
    const p = this.#pkt;
    p.family = this.family;
    p.protocol = proto;
    p.src4 = this.family === 4 ? src4 >>> 0 : 0;
    p.dst4 = this.family === 4 ? dst4 >>> 0 : 0;
    if (this.family === 6) {
      p.src6.set(src6);
      p.dst6.set(dst6!);
    }
    p.ttl = 64;
    p.tos = 0;
    p.frame = frame;
    p.ipOffset = ETH_HEADER_LENGTH;
    p.l4Offset = l4;
    p.l4Length = l4Length;
    const udpOk = proto === IPPROTO_UDP &&
      parseUdp(frame, l4, l4 + l4Length, this.#udpHeader) === "ok";
    p.udp = udpOk ? this.#udpHeader : null;
    h.handlePacket(p, performance.now());
  }
}

function eq16(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return false;
  return true;
}
