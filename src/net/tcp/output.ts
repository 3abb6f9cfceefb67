/**
 * Segments toward the guest. Control segments (SYN, ACK, FIN, RST) are small and go
 * through the stack's {@link GuestSender}. Data segments are built in place: a frame
 * is reserved on the guest link (its RX buffers under vhost-user), the host socket's
 * bytes are peeked straight into it behind the headers — one copy, and the bytes stay
 * in the kernel until the guest acknowledges them — then the headers and checksum
 * are written in front and the frame committed. A retransmission peeks the same
 * bytes again from their offset past the acknowledged edge. Where the link reserves
 * runs of frames (vhost-user with checksum offload), the guest's window goes out as
 * one run filled by one peek, once a peek has found the socket that full. The ACK
 * number and window every segment carries come from window.ts.
 *
 * @module
 */

import { foldSum, ipv4PseudoSum, ipv6PseudoSum, sumBytes } from "../wire/checksum.ts";
import { buildEthernet, ETHERTYPE_IPV4, ETHERTYPE_IPV6 } from "../wire/ethernet.ts";
import { L4_OFFSET_V4, L4_OFFSET_V6 } from "../guest_sender.ts";
import { buildIpv4, IPV4_FLAG_DF, type Ipv4BuildFields } from "../wire/ipv4.ts";
import { buildIpv6, type Ipv6BuildFields } from "../wire/ipv6.ts";
import type { L4Packet } from "../l4_handler.ts";
import {
  buildTcp,
  TCP_ACK_FLAG,
  TCP_CHECKSUM_OFFSET,
  TCP_FIN,
  TCP_HEADER_MIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
} from "../wire/tcp_header.ts";
import {
  type FrameSpace,
  MAX_RUN_FRAMES,
  SendResult,
  TcpSegmentation,
  type TcpSegments,
} from "../../tap/frame_transport.ts";
import { flowHashIpv4, flowHashIpv6 } from "../../tap/flow_hash.ts";
import type { TcpContext } from "./context.ts";
import { OUR_WINDOW_SCALE, seqDiff, seqLe, seqLt, type TcpFlow, TcpState } from "./flow.ts";
import { hostError } from "./closing.ts";
import { ackOut, windowOut } from "./window.ts";
import { IPPROTO_TCP } from "../wire/ip_protocol.ts";

/** IPv4 + TCP header bytes (no options) subtracted from the MTU for the MSS. */
export const HEADERS_V4 = 40;
/** IPv6 + TCP header bytes. */
export const HEADERS_V6 = 60;
/** Largest TCP payload of a 65535-byte frame behind the headers (data segments carry no options). */
export const MAX_PAYLOAD_V4 = 65535 - L4_OFFSET_V4 - TCP_HEADER_MIN;
/** Same for IPv6. */
export const MAX_PAYLOAD_V6 = 65535 - L4_OFFSET_V6 - TCP_HEADER_MIN;

/** {@link sendHostData}: no room toward the guest (or no link). */
export const DATA_NO_ROOM = -2;
/** {@link sendHostData}: the host socket has nothing (more) to give now. */
export const DATA_WOULD_BLOCK = -1;
/** {@link sendHostData}: the host's stream ended at this sequence number. */
export const DATA_END = 0;
/** {@link sendHostData}: the host socket failed; the flow was reset. */
export const DATA_FAILED = -3;

const ACK_RST = TCP_ACK_FLAG | TCP_RST;

const ipv4Fields: Ipv4BuildFields = {
  payloadLength: 0,
  protocol: IPPROTO_TCP,
  src: 0,
  dst: 0,
  id: 0,
  flags: IPV4_FLAG_DF,
};
const ipv6Fields: Ipv6BuildFields = {
  payloadLength: 0,
  nextHeader: IPPROTO_TCP,
  src: new Uint8Array(16),
  dst: new Uint8Array(16),
};
let ipv4Id = 0;
/** The segmentation of the large frame being committed (sendHostData). */
const segments: TcpSegments = { kind: TcpSegmentation.None, size: 0, headerLength: 0 };

/** Sends a segment without data through the sender's buffer. */
function emit(
  ctx: TcpContext,
  f: TcpFlow,
  flags: number,
  seq: number,
  ack: number,
  win: number,
): SendResult {
  const s = ctx.sender;
  const off = f.family === 4 ? L4_OFFSET_V4 : L4_OFFSET_V6;
  const fl = ctx.fields;
  fl.srcPort = f.remotePort;
  fl.dstPort = f.guestPort;
  fl.seq = seq >>> 0;
  fl.ack = flags & TCP_ACK_FLAG ? ack >>> 0 : 0;
  fl.flags = flags;
  fl.window = win;
  const hl = buildTcp(s.buffer, off, fl);
  return f.family === 4
    ? s.sendIpv4(IPPROTO_TCP, f.remote4, f.guest4, hl)
    : s.sendIpv6(IPPROTO_TCP, f.remote6!, f.guest6!, hl);
}

/** Sends a segment with `flags` and no window (RST). */
export function sendFlags(
  ctx: TcpContext,
  f: TcpFlow,
  flags: number,
  seq: number,
  ack: number,
): SendResult {
  return emit(ctx, f, flags, seq, ack, 0);
}

/** Sends an ACK with the current window (answers, window updates, duplicate ACKs). */
export function sendAck(ctx: TcpContext, f: TcpFlow): SendResult {
  if (f.closed && f.state !== TcpState.Closed) return SendResult.Dropped;
  f.ackDue = false;
  return emit(ctx, f, TCP_ACK_FLAG, f.sndNxt, ackOut(f), windowOut(ctx, f));
}

/** Sends our FIN at the host's end of stream. */
export function sendFin(ctx: TcpContext, f: TcpFlow): SendResult {
  f.ackDue = false;
  return emit(ctx, f, TCP_ACK_FLAG | TCP_FIN, f.dataEnd, ackOut(f), windowOut(ctx, f));
}

/** Sends our SYN (inbound) or SYN-ACK (outbound) with MSS and window scale options. */
export function sendSyn(ctx: TcpContext, f: TcpFlow, withAck: boolean): void {
  const fl = ctx.fields;
  const mtu = ctx.sender.mtuFor(ctx.mtu);
  fl.mss = Math.min(
    f.family === 4 ? mtu - HEADERS_V4 : mtu - HEADERS_V6,
    f.family === 4 ? MAX_PAYLOAD_V4 : MAX_PAYLOAD_V6,
  );
  // In a SYN-ACK we scale only if the guest offered to; in our SYN we always offer.
  fl.windowScale = !withAck || f.ourShift > 0 ? OUR_WINDOW_SCALE : -1;
  const win = Math.min(ctx.maxWindow, 65535); // SYN windows are never scaled
  f.rcvWndRight = (f.rcvNxt + win) >>> 0;
  emit(ctx, f, withAck ? (TCP_SYN | TCP_ACK_FLAG) : TCP_SYN, f.iss, f.rcvNxt, win);
  fl.mss = -1;
  fl.windowScale = -1;
}

/** RST for a segment matching no flow (RFC 9293 §3.10.7.1); never for a RST. */
export function rstForPacket(ctx: TcpContext, p: L4Packet): void {
  const h = ctx.header;
  if (h.flags & TCP_RST) return;
  const s = ctx.sender;
  const off = p.family === 4 ? L4_OFFSET_V4 : L4_OFFSET_V6;
  const fl = ctx.fields;
  fl.srcPort = h.dstPort;
  fl.dstPort = h.srcPort;
  fl.window = 0;
  if (h.flags & TCP_ACK_FLAG) {
    fl.seq = h.ack;
    fl.ack = 0;
    fl.flags = TCP_RST;
  } else {
    fl.seq = 0;
    const segLen = h.payloadLength + (h.flags & TCP_SYN ? 1 : 0) + (h.flags & TCP_FIN ? 1 : 0);
    fl.ack = (h.seq + segLen) >>> 0;
    fl.flags = ACK_RST;
  }
  const hl = buildTcp(s.buffer, off, fl);
  if (p.family === 4) s.sendIpv4(IPPROTO_TCP, p.dst4, p.src4, hl);
  else s.sendIpv6(IPPROTO_TCP, p.dst6, p.src6, hl);
  ctx.counters.rstSent++;
}

/** One's complement sum of `length` bytes of `space` from `from`, as one byte stream. */
function sumSpace(space: FrameSpace, from: number, length: number): number {
  let sum = 0;
  let skip = from;
  let left = length;
  let odd = false;
  for (let i = 0; i < space.count && left > 0; i++) {
    const view = space.views[i];
    if (skip >= view.length) {
      skip -= view.length;
      continue;
    }
    const n = Math.min(view.length - skip, left);
    const part = foldSum(sumBytes(view, skip, n));
    // A piece starting at an odd position of the stream has its bytes swapped (RFC 1071 §2 (B)).
    sum += odd ? ((part & 0xff) << 8) | (part >> 8) : part;
    if (n & 1) odd = !odd;
    left -= n;
    skip = 0;
  }
  return sum;
}

/**
 * Records that `f`'s host socket has nothing past what was sent: no peek for new data
 * until its next readable event, which is turned on for that (host_side.ts turns it
 * off while bytes wait in the socket).
 */
function drained(f: TcpFlow): void {
  f.hostDrained = true;
  f.conn?.wantReadable(true);
}

/**
 * Sends up to `limit` bytes starting at sequence `seq` in data segments of up to
 * `maxLength` bytes each, peeked from the host socket straight into frames reserved
 * on the guest link: one peek for all of them where the link reserves a run of
 * frames (GuestLink.reserveFrames), else one segment. With `segmentSize` > 0 (the
 * link takes this family's TCP frames large, see GuestLink.tcpSegmentation) a frame
 * carrying more than that goes out as one large frame the guest treats as segments
 * of `segmentSize` bytes.
 * @returns the bytes sent (> 0), or DATA_NO_ROOM, DATA_WOULD_BLOCK, DATA_END
 *   (the host's stream ends at `seq`), DATA_FAILED (the flow was reset)
 */
export function sendHostData(
  ctx: TcpContext,
  f: TcpFlow,
  seq: number,
  maxLength: number,
  window: number = windowOut(ctx, f),
  segmentSize = 0,
  limit = maxLength,
): number {
  const link = ctx.sender.link;
  const conn = f.conn;
  if (link === null || conn === null) return DATA_NO_ROOM;
  const v4 = f.family === 4;
  const l4 = v4 ? L4_OFFSET_V4 : L4_OFFSET_V6;
  const headers = l4 + TCP_HEADER_MIN;
  const space = ctx.space;
  // The payload may come as an iovec table (no view per guest buffer) when no
  // checksum over it is computed here.
  const partial = link.l4ChecksumsOptional;
  space.acceptVectors = partial;
  space.vectors = null;
  // The queue a multiqueue link puts the segment on: the one of the flow's other frames.
  if (f.toGuestHash < 0) {
    f.toGuestHash = v4
      ? flowHashIpv4(f.remote4, f.guest4, IPPROTO_TCP, f.remotePort, f.guestPort)
      : flowHashIpv6(f.remote6!, f.guest6!, IPPROTO_TCP, f.remotePort, f.guestPort);
  }
  space.flowHash = f.toGuestHash;
  const frames = Math.min(MAX_RUN_FRAMES, Math.ceil(limit / maxLength));
  const asRun = frames > 1 && partial && link.reserveFrames !== undefined;
  const reserved = asRun
    ? link.reserveFrames!(space, frames, headers + maxLength, headers)
    : link.reserveFrame(space, headers + maxLength, headers);
  if (reserved !== SendResult.Sent) return DATA_NO_ROOM;
  const run = asRun && space.frames > 1;
  const room = Math.min(run ? limit : maxLength, space.length - headers);
  if (room <= 0) {
    link.cancelFrame();
    return DATA_NO_ROOM;
  }
  let got: number;
  try {
    got = conn.peek(seqDiff(seq, f.sndUna) + f.discardOwed, space, headers, room);
  } catch (error) {
    link.cancelFrame();
    hostError(ctx, f, error);
    return DATA_FAILED;
  }
  f.lastPeekFull = got === room;
  if (got <= 0) {
    link.cancelFrame();
    if (got !== 0 && seqLe(f.dataMax, seq)) drained(f);
    return got === 0 ? DATA_END : DATA_WOULD_BLOCK;
  }
  // A short peek at the frontier emptied the socket: new data brings a readable event
  // (turned on once the frame is committed: nothing else may use the link before).
  // After the peer's FIN was signalled, peek on: only a peek returning 0 shows it.
  const emptied = got < room && !f.hostHungUp && seqLe(f.dataMax, (seq + got) >>> 0);
  const ack = ackOut(f);
  f.ackDue = false;
  if (!run) {
    commitSegment(ctx, f, space, seq >>> 0, ack, window, got, got < maxLength, segmentSize);
  } else {
    // The run's frames in order, each as full as its room; the last one short. The
    // frames left over (the peek came short, or a commit failed: the link then ended
    // the run) go back to the link.
    let sent = 0;
    let frame = 0;
    while (sent < got) {
      const part = Math.min(space.frameRooms[frame++], got - sent);
      const last = sent + part === got;
      const result = commitSegment(
        ctx,
        f,
        space,
        (seq + sent) >>> 0,
        ack,
        window,
        part,
        last && got < limit,
        segmentSize,
      );
      sent += part;
      if (result !== SendResult.Sent) break; // lost like a frame the guest missed
    }
    if (frame < space.frames) link.cancelFrame();
  }
  if (emptied) drained(f);
  return got;
}

/**
 * Writes the headers of the reserved frame (or of a run's next frame) carrying `got`
 * payload bytes from sequence `seq` into the reservation's first view, and commits it.
 */
function commitSegment(
  ctx: TcpContext,
  f: TcpFlow,
  space: FrameSpace,
  seq: number,
  ack: number,
  window: number,
  got: number,
  push: boolean,
  segmentSize: number,
): SendResult {
  const link = ctx.sender.link!;
  const v4 = f.family === 4;
  const l4 = v4 ? L4_OFFSET_V4 : L4_OFFSET_V6;
  const headers = l4 + TCP_HEADER_MIN;
  const partial = link.l4ChecksumsOptional;
  const b = space.views[0];
  const l4Length = TCP_HEADER_MIN + got;
  const fl = ctx.fields;
  fl.srcPort = f.remotePort;
  fl.dstPort = f.guestPort;
  fl.seq = seq;
  fl.ack = ack;
  fl.flags = TCP_ACK_FLAG | (push ? TCP_PSH : 0);
  fl.window = window;
  buildTcp(b, l4, fl);
  let sum: number;
  if (v4) {
    sum = ipv4PseudoSum(f.remote4, f.guest4, IPPROTO_TCP, l4Length);
    ipv4Id = (ipv4Id + 1) & 0xffff;
    ipv4Fields.payloadLength = l4Length;
    ipv4Fields.src = f.remote4;
    ipv4Fields.dst = f.guest4;
    ipv4Fields.id = ipv4Id;
    buildIpv4(b, l4 - 20, ipv4Fields);
  } else {
    sum = ipv6PseudoSum(f.remote6!, 0, f.guest6!, 0, IPPROTO_TCP, l4Length);
    ipv6Fields.payloadLength = l4Length;
    ipv6Fields.src = f.remote6!;
    ipv6Fields.dst = f.guest6!;
    buildIpv6(b, l4 - 40, ipv6Fields);
  }
  buildEthernet(b, 0, ctx.sender.guestMac, ctx.sender.ourMac, v4 ? ETHERTYPE_IPV4 : ETHERTYPE_IPV6);
  let check: number;
  if (partial) {
    check = foldSum(sum); // the guest completes it (NEEDS_CSUM)
  } else {
    sum += sumBytes(b, l4, TCP_HEADER_MIN) + sumSpace(space, headers, got);
    check = ~foldSum(sum) & 0xffff;
  }
  b[l4 + TCP_CHECKSUM_OFFSET] = check >> 8;
  b[l4 + TCP_CHECKSUM_OFFSET + 1] = check & 0xff;
  let result: SendResult;
  if (partial && segmentSize > 0 && got > segmentSize) {
    segments.kind = v4 ? TcpSegmentation.Ipv4 : TcpSegmentation.Ipv6;
    segments.size = segmentSize;
    segments.headerLength = headers;
    result = link.commitFrame(headers + got, l4, TCP_CHECKSUM_OFFSET, segments);
  } else {
    result = partial
      ? link.commitFrame(headers + got, l4, TCP_CHECKSUM_OFFSET)
      : link.commitFrame(headers + got);
  }
  // Counted (a drop is lost like a frame the guest missed: retransmitted), flushed by
  // the end of the task at the latest, traced with --trace.
  ctx.sender.committed(b, headers + got, result); // b starts with the headers: no view made
  return result;
}

/** Whether `f`'s timer is armed. */
export function timerArmed(f: TcpFlow): boolean {
  return f.heapIndex >= 0;
}

/**
 * Marks `f` as waiting for room toward the guest: the link's writable callback (the
 * RX kick after a NoRoom) or the next link up resumes it. Its timer stays armed as
 * well, so that a flow is never left without a wake source — e.g. when the link
 * refused a frame without asking the guest for a kick (timers.ts looks again).
 */
function waitForRoom(ctx: TcpContext, f: TcpFlow, now: number): void {
  ctx.block(f);
  if (!timerArmed(f)) ctx.arm(f, now + f.rto);
}

/**
 * Sends what the guest's window allows from the host socket, then the FIN once the
 * host's stream ended; stops at the first of: window full, no room toward the
 * guest (the flow waits for the link, {@link waitForRoom}), nothing more from the
 * host (the socket's next readable edge resumes it).
 */
export function pushToGuest(ctx: TcpContext, f: TcpFlow, now: number): void {
  if (f.state !== TcpState.Established || f.blocked || f.closed || f.conn === null) return;
  let window = -1; // the window field toward the guest, computed once per push
  for (;;) {
    if (f.hostEof && f.sndNxt === f.dataEnd) {
      if (f.finSent) return;
      const r = sendFin(ctx, f);
      if (r === SendResult.NoRoom || ctx.sender.link === null) {
        waitForRoom(ctx, f, now);
        return;
      }
      f.finSent = true;
      f.sndNxt = (f.dataEnd + 1) >>> 0;
      if (seqLt(f.sndMax, f.sndNxt)) f.sndMax = f.sndNxt;
      if (!timerArmed(f)) ctx.arm(f, now + f.rto);
      return;
    }
    // Nothing new in the socket and nothing to send again: wait for its readable event.
    if (f.hostDrained && !f.hostEof && !seqLt(f.sndNxt, f.dataMax)) return;
    const guestWindow = seqDiff(f.sndWndRight, f.sndNxt);
    // The guest's MSS, or, when the guest takes this family's TCP frames large
    // (segmentation offload), as many whole MSS-sized segments as a 64 KiB frame
    // holds; the frame reserved bounds it further to what the guest's RX buffers hold
    // (one buffer without MRG_RXBUF).
    const link = ctx.sender.link;
    const segmenting = link !== null && link.l4ChecksumsOptional &&
      (link.tcpSegmentation & (f.family === 4 ? TcpSegmentation.Ipv4 : TcpSegmentation.Ipv6)) !==
        0;
    let n = Math.min(
      guestWindow,
      segmenting ? (f.family === 4 ? MAX_PAYLOAD_V4 : MAX_PAYLOAD_V6) : f.mss,
    );
    if (n > f.mss) n -= n % f.mss; // whole segments: no short one in the middle of a burst
    // The whole window at once, in frames of n bytes (a run, where the link has them),
    // when the last peek found the socket that full; else one frame first.
    let limit = f.hostEof ? Math.min(guestWindow, seqDiff(f.dataEnd, f.sndNxt)) : guestWindow;
    n = Math.min(n, limit);
    if (!f.lastPeekFull) limit = n;
    if (n <= 0) {
      // Zero window: probe on the timer if nothing else is outstanding.
      if (!timerArmed(f)) ctx.arm(f, now + f.rto);
      return;
    }
    if (window < 0) window = windowOut(ctx, f);
    const got = sendHostData(ctx, f, f.sndNxt, n, window, segmenting ? f.mss : 0, limit);
    if (got === DATA_NO_ROOM) {
      waitForRoom(ctx, f, now);
      return;
    }
    if (got === DATA_WOULD_BLOCK || got === DATA_FAILED) return;
    if (got === DATA_END) {
      f.hostEof = true;
      f.dataEnd = f.sndNxt;
      continue;
    }
    f.lastActivity = now;
    f.sndNxt = (f.sndNxt + got) >>> 0;
    if (seqLt(f.sndMax, f.sndNxt)) f.sndMax = f.sndNxt;
    if (seqLt(f.dataMax, f.sndNxt)) f.dataMax = f.sndNxt;
    if (!timerArmed(f)) ctx.arm(f, now + f.rto);
  }
}
