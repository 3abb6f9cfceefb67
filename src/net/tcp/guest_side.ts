/**
 * The guest's side of each connection: its SYN opens a flow and a host connect
 * (outbound), its SYN-ACK completes an inbound one; in-order data goes straight from
 * its frame (a view of guest memory under vhost-user) into the host socket, and only
 * what the socket took is acknowledged — the rest the guest sends again, as after a
 * loss; out-of-order segments are dropped, duplicates trimmed, RSTs checked against
 * the window (RFC 5961). Its ACKs free host data (dropped from the host socket at the
 * end of the batch, host_side.ts settleDiscards), drive fast retransmit and
 * NewReno-style recovery (RFC 5681 §3.2, RFC 6582), and open the window for more.
 *
 * @module
 */

import { translateOutbound4, translateOutbound6 } from "../plan/fwd.ts";
import { initFlowKey } from "../flows/flow_table.ts";
import type { L4Packet } from "../l4_handler.ts";
import { TCP_ACK_FLAG, TCP_FIN, TCP_RST, TCP_SYN } from "../wire/tcp_header.ts";
import type { ScatteredFrame } from "../../tap/frame_transport.ts";
import { NOT_SENT } from "./host_socket.ts";
import type { TcpContext } from "./context.ts";
import {
  CONNECT_TIMEOUT_MS,
  DEFAULT_MSS_V4,
  DEFAULT_MSS_V6,
  OUR_WINDOW_SCALE,
  RTO_INITIAL_MS,
  seqDiff,
  seqLe,
  seqLt,
  TcpFlow,
  TcpState,
} from "./flow.ts";
import { abort, hostError, logOpened, maybeFinish } from "./closing.ts";
import { connectFailed, flushPendingToHost, onHostEvents } from "./host_side.ts";
import { sendChallengeAck } from "./challenge_ack.ts";
import {
  DATA_NO_ROOM,
  HEADERS_V4,
  HEADERS_V6,
  MAX_PAYLOAD_V4,
  MAX_PAYLOAD_V6,
  pushToGuest,
  rstForPacket,
  sendAck,
  sendFin,
  sendHostData,
  sendSyn,
  timerArmed,
} from "./output.ts";
import { ackOut } from "./window.ts";
import { WOULD_BLOCK } from "../../../ffi/tcp_socket.ts";

/** Handles a guest segment of an existing flow (`ctx.header` holds it parsed). */
export function guestSegment(ctx: TcpContext, f: TcpFlow, p: L4Packet, now: number): void {
  const h = ctx.header;
  const flags = h.flags;
  switch (f.state) {
    case TcpState.Connecting:
      // Retransmitted SYN while the host connect runs: nothing to do yet.
      if (flags & TCP_RST) abort(ctx, f, false, "the guest reset it while connecting");
      return;
    case TcpState.SynSent: {
      if (flags & TCP_RST) {
        if ((flags & TCP_ACK_FLAG) && h.ack === f.sndNxt) {
          abort(ctx, f, false, "refused by the guest (RST to our SYN)");
        }
        return;
      }
      if ((flags & (TCP_SYN | TCP_ACK_FLAG)) === (TCP_SYN | TCP_ACK_FLAG) && h.ack === f.sndNxt) {
        takeGuestSyn(ctx, f);
        f.sndUna = h.ack;
        f.sndWndRight = (h.ack + h.window) >>> 0; // SYN windows are never scaled
        f.state = TcpState.Established;
        f.rto = RTO_INITIAL_MS;
        f.retries = 0;
        ctx.disarm(f);
        sendAck(ctx, f);
        pushToGuest(ctx, f, now);
        return;
      }
      if (flags & TCP_ACK_FLAG) rstForPacket(ctx, p);
      return;
    }
    case TcpState.SynAckSent: {
      if (flags & TCP_RST) {
        abort(ctx, f, false, "the guest reset it during the handshake");
        return;
      }
      if (flags & TCP_SYN) {
        // Retransmitted SYN: our SYN-ACK was lost.
        if (!(flags & TCP_ACK_FLAG) && h.seq === ((f.rcvNxt - 1) >>> 0)) {
          sendSyn(ctx, f, true);
        }
        return;
      }
      if (!(flags & TCP_ACK_FLAG)) return;
      if (h.ack !== f.sndNxt) {
        rstForPacket(ctx, p);
        return;
      }
      f.sndUna = h.ack;
      f.state = TcpState.Established;
      f.rto = RTO_INITIAL_MS;
      f.retries = 0;
      f.sndWndRight = (h.ack + (h.window << f.guestShift)) >>> 0;
      ctx.disarm(f);
      ctx.counters.outbound++;
      pushToGuest(ctx, f, now);
      // The ACK may carry data and FIN.
      established(ctx, f, p, now);
      return;
    }
    case TcpState.Established:
      established(ctx, f, p, now);
      return;
    case TcpState.Closed:
      if (flags & TCP_RST) return;
      if (flags & (TCP_FIN | TCP_SYN)) sendAck(ctx, f);
      return;
  }
}

/** A guest SYN for no flow: a new flow and a host connect; the SYN-ACK waits for it. */
export function newOutbound(ctx: TcpContext, p: L4Packet, now: number): void {
  const h = ctx.header;
  if (!ctx.flows.admit()) {
    ctx.counters.tableFull++;
    rstForPacket(ctx, p);
    return;
  }
  const f = new TcpFlow();
  initFlowKey(f, p.family, p.src4, p.src6, h.srcPort, p.dst4, p.dst6, h.dstPort);
  ctx.flows.insert(f);
  f.state = TcpState.Connecting;
  f.lastActivity = now;
  f.createdAt = now;
  takeGuestSyn(ctx, f);
  const t = p.family === 4
    ? translateOutbound4(ctx.rules, p.dst4, h.dstPort, ctx.target)
    : translateOutbound6(ctx.rules, p.dst6, h.dstPort, ctx.target);
  f.hostName = t.host;
  f.hostPort = t.port;
  logOpened(ctx, f, "SYN from the guest, connecting to the host");
  ctx.arm(f, now + CONNECT_TIMEOUT_MS);
  try {
    const conn = ctx.host.connect(f.hostName, f.hostPort, t.address);
    f.conn = conn;
    conn.setHandler((events, at) => onHostEvents(ctx, f, events, at));
  } catch (e) {
    connectFailed(ctx, f, e, now);
  }
}

/** Records the guest's SYN (ISN, MSS, window scale) in `f`. */
export function takeGuestSyn(ctx: TcpContext, f: TcpFlow): void {
  const h = ctx.header;
  f.rcvNxt = (h.seq + 1) >>> 0;
  f.rcvWndRight = f.rcvNxt;
  const mtu = ctx.sender.mtuFor(ctx.mtu);
  const ceiling = f.family === 4 ? mtu - HEADERS_V4 : mtu - HEADERS_V6;
  const maxPayload = f.family === 4 ? MAX_PAYLOAD_V4 : MAX_PAYLOAD_V6;
  let mss = h.mss > 0 ? h.mss : (f.family === 4 ? DEFAULT_MSS_V4 : DEFAULT_MSS_V6);
  mss = Math.min(mss, ceiling, maxPayload);
  f.mss = Math.max(mss, 64);
  if (h.windowScale >= 0) {
    f.guestShift = h.windowScale;
    f.ourShift = OUR_WINDOW_SCALE;
  } else {
    f.guestShift = 0;
    f.ourShift = 0;
  }
}

/** A segment on an established flow: RST/SYN checks, its ACK, then its data and FIN. */
function established(ctx: TcpContext, f: TcpFlow, p: L4Packet, now: number): void {
  const h = ctx.header;
  const flags = h.flags;
  const rightEdge = f.rcvWndRight;
  if (flags & TCP_RST) {
    // RFC 5961 §3.2: a RST exactly at RCV.NXT aborts — the ACK number we send, past the
    // guest's FIN once it was passed on, which is where a guest that lost the flow puts
    // its RST (RFC 9293 §3.10.7.1: SEG.ACK); one elsewhere inside the window draws a
    // challenge ACK, rate-limited.
    const rcvNxt = ackOut(f);
    if (h.seq === rcvNxt) abort(ctx, f, false, "the guest reset it (RST)");
    else if (seqLe(rcvNxt, h.seq) && seqLt(h.seq, rightEdge)) sendChallengeAck(ctx, f, now);
    return;
  }
  if (flags & TCP_SYN) {
    sendChallengeAck(ctx, f, now); // RFC 5961 §4.2
    return;
  }
  if (!(flags & TCP_ACK_FLAG)) return;
  processAck(ctx, f, h.ack, h.window, h.payloadLength === 0 && !(flags & TCP_FIN), now);
  if (f.closed) return;
  let len = h.payloadLength;
  let off = h.payloadOffset;
  const seq = h.seq;
  const fin = (flags & TCP_FIN) !== 0;
  if (len === 0 && !fin) {
    // Pure ACK, or a keepalive probe (seq = rcvNxt - 1): answer the probe.
    if (seqLt(seq, f.rcvNxt)) sendAck(ctx, f);
    maybeFinish(ctx, f);
    return;
  }
  if (f.guestFin) {
    // Anything after the FIN is a retransmission.
    if (fin) sendAck(ctx, f);
    return;
  }
  if (seqLt(f.rcvNxt, seq)) {
    // Out of order: dropped, the duplicate ACK makes the guest retransmit.
    ctx.counters.badSegments++;
    sendAck(ctx, f);
    return;
  }
  const dup = seqDiff(f.rcvNxt, seq);
  if (dup > 0) {
    if (dup >= len) {
      if (dup > len || !fin) {
        sendAck(ctx, f); // all of it was passed on already
        return;
      }
      len = 0;
    } else {
      off += dup;
      len -= dup;
    }
  }
  const room = seqDiff(rightEdge, f.rcvNxt);
  let finOk = fin;
  if (len > room) {
    ctx.counters.badSegments++;
    len = Math.max(room, 0);
    finOk = false;
  }
  if (len === 0 && !finOk) {
    sendAck(ctx, f); // zero window: tell the guest where we are
    return;
  }
  toHost(ctx, f, p.frame, p.scattered, off, len, finOk);
}

/**
 * Sends `len` bytes of the guest's frame to the host socket (and passes its FIN on
 * when all of them were taken); what the socket did not take is not acknowledged.
 * A scattered frame's bytes go to the socket straight from guest memory.
 */
function toHost(
  ctx: TcpContext,
  f: TcpFlow,
  frame: Uint8Array,
  scattered: ScatteredFrame | null,
  off: number,
  len: number,
  fin: boolean,
): void {
  const conn = f.conn;
  if (conn === null) return;
  if (f.pendingToHost !== null && !flushPendingToHost(ctx, f)) {
    // Bytes from before a migration still wait for the socket: these come after
    // them, so they are not taken now (the guest sends them again).
    if (!f.closed) {
      ctx.counters.hostBackpressure += len;
      ctx.scheduleAck(f);
    }
    return;
  }
  let taken = 0;
  try {
    if (len > 0) {
      taken = scattered === null
        ? conn.send(frame.subarray(off, off + len))
        : conn.sendScattered(scattered, off, len);
      if (taken === NOT_SENT) {
        // More guest buffers than one gather list holds: copied, then sent.
        scattered!.gather();
        taken = conn.send(frame.subarray(off, off + len));
      }
      if (taken === WOULD_BLOCK) taken = 0;
    }
    f.rcvNxt = (f.rcvNxt + taken) >>> 0;
    f.bytesFromGuest += taken;
    if (taken < len) {
      // The host socket is full: the guest sends the rest again once the window opens,
      // and the next window comes from the socket, not from the room last seen.
      ctx.counters.hostBackpressure += len - taken;
      f.room = -1;
      if (!f.windowUpdateDue) {
        f.windowUpdateDue = true;
        conn.requestWritable();
      }
    } else if (fin) {
      conn.shutdownWrite();
      f.guestFin = true;
      f.guestFinDone = true;
    }
  } catch (e) {
    hostError(ctx, f, e);
    return;
  }
  ctx.scheduleAck(f);
  maybeFinish(ctx, f);
}

/** Processes the guest's acknowledgement and window. */
function processAck(
  ctx: TcpContext,
  f: TcpFlow,
  ack: number,
  window: number,
  pureAck: boolean,
  now: number,
): void {
  if (seqLt(f.sndMax, ack)) {
    // Acknowledges something never sent: a challenge ACK (RFC 5961 §5.2), rate-limited.
    sendChallengeAck(ctx, f, now);
    return;
  }
  const wndRight = (ack + (window << f.guestShift)) >>> 0;
  if (seqLt(ack, f.sndUna)) return; // old ACK
  const acked = seqDiff(ack, f.sndUna);
  if (acked > 0) {
    let dataAcked = acked;
    // The FIN is acknowledged even when a timeout or fast retransmit has taken it back
    // (finSent cleared, sndNxt at the data) since it went out: only a FIN sent makes
    // dataEnd + 1 acceptable (ack <= sndMax above). Counted as data, it would leave
    // the flow waiting for an ACK of a FIN it never sends again.
    if (f.hostEof && ack === ((f.dataEnd + 1) >>> 0)) {
      f.finAcked = true;
      f.finSent = true;
      dataAcked = acked - 1;
    }
    if (dataAcked > 0) f.bytesToGuest += dataAcked;
    // The guest has them: the host socket forgets them once this batch's frames are out.
    if (dataAcked > 0 && f.conn !== null) ctx.oweDiscard(f, dataAcked);
    f.sndUna = ack;
    if (seqLt(f.sndNxt, ack)) f.sndNxt = ack;
    f.dupAcks = 0;
    f.rto = RTO_INITIAL_MS;
    f.retries = 0;
    f.sndWndRight = wndRight;
    if (f.sndNxt === f.sndUna || f.finAcked) ctx.disarm(f);
    else ctx.arm(f, now + f.rto);
    // Outside recovery, recover follows una: left at the ISN it would fall 2^31 behind
    // after 2 GiB, and sequence comparisons with it would then read every ACK as a
    // partial ACK during recovery (and keep fast retransmit off).
    const inRecovery = seqLt(ack, f.recover);
    if (!inRecovery) f.recover = ack;
    if (inRecovery && !f.blocked) {
      // Partial ACK during recovery: the next hole goes out now (RFC 6582 §3.2 step 3),
      // only data sent before: bytes past dataMax would reach the guest unrecorded, and
      // its ACK for them would then look like an ACK for data never sent.
      const n = Math.min(f.mss, seqDiff(f.dataMax, f.sndUna));
      if (n > 0) {
        if (sendHostData(ctx, f, f.sndUna, n) === DATA_NO_ROOM) ctx.block(f);
      } else if (f.finSent) {
        sendFin(ctx, f);
      }
      if (f.closed) return;
      ctx.counters.retransmits++;
    }
  } else {
    const moved = wndRight !== f.sndWndRight;
    if (seqLt(f.sndWndRight, wndRight) || !seqLt(f.sndUna, f.sndNxt)) f.sndWndRight = wndRight;
    if (pureAck && !moved && seqLt(f.sndUna, f.sndNxt)) {
      // Fast retransmit (RFC 5681 §3.2), once per window (RFC 6582 "recover").
      if (++f.dupAcks === 3 && !seqLt(f.sndUna, f.recover)) {
        ctx.counters.retransmits++;
        f.recover = f.sndMax;
        f.sndNxt = f.sndUna;
        if (f.finSent && !f.finAcked) f.finSent = false;
      }
    }
  }
  pushToGuest(ctx, f, now);
  if (!timerArmed(f) && seqLt(f.sndUna, f.sndNxt)) ctx.arm(f, now + f.rto);
  maybeFinish(ctx, f);
}
