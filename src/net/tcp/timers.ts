/**
 * What each flow's one timer does when it expires (RFC 6298 backoff throughout):
 * a host connect that took too long is refused toward the guest; a SYN or SYN-ACK
 * is sent again; outstanding data goes back N from the acknowledged edge (peeked
 * again from the host socket); a zero window is probed with one byte; a flow waiting
 * for room toward the guest looks again; a closed flow is forgotten after lingering.
 * Every timeout without an answer counts, also once the front-end has left: after
 * `maxRetries` (MAX_RETRIES, about 100 s) the flow is given up, so that the host
 * sockets of a guest that is gone are closed even while no front-end is connected.
 * While the link is down with the front-end still connected (a paused guest), an
 * established flow's timer is not re-armed and counts nothing: link up sends again.
 * Plus the idle sweep, which resets flows quiet for longer than the idle timeout
 * (paused ones too).
 *
 * @module
 */

import type { TcpContext } from "./context.ts";
import { CONNECT_TIMEOUT_MS, RTO_MAX_MS, seqLt, type TcpFlow, TcpState } from "./flow.ts";
import { abort, destroy, internalError } from "./closing.ts";
import { connectFailed } from "./host_side.ts";
import {
  DATA_END,
  DATA_NO_ROOM,
  pushToGuest,
  sendHostData,
  sendSyn,
  timerArmed,
} from "./output.ts";

/** Interval of the idle sweep, in ms. */
export const IDLE_SWEEP_MS = 10_000;

/** Runs every timer due at `now`. */
export function runTimers(ctx: TcpContext, now: number): void {
  const heap = ctx.timers;
  // Each expiry re-arms at most once, later than now: bounded by the flows armed.
  for (let budget = heap.size; budget > 0 && heap.earliest() <= now; budget--) {
    const f = heap.peek()!;
    ctx.disarm(f);
    try {
      expire(ctx, f, now);
    } catch (e) {
      internalError(ctx, f, e);
    }
  }
}

/** Resets established flows idle for longer than the idle timeout. */
export function sweepIdle(ctx: TcpContext, now: number): void {
  ctx.flows.forEach((f) => {
    if (f.state === TcpState.Established && now - f.lastActivity > ctx.idleTimeoutMs) {
      abort(ctx, f, true, `idle for more than ${Math.round(ctx.idleTimeoutMs / 1000)} s`);
    }
  });
}

function expire(ctx: TcpContext, f: TcpFlow, now: number): void {
  switch (f.state) {
    case TcpState.Connecting:
      connectFailed(ctx, f, new Error(`no answer within ${CONNECT_TIMEOUT_MS} ms`), now);
      return;
    case TcpState.SynAckSent:
    case TcpState.SynSent:
      if (++f.retries > ctx.maxRetries) {
        abort(
          ctx,
          f,
          f.state === TcpState.SynAckSent,
          `the guest did not answer our ${
            f.state === TcpState.SynAckSent ? "SYN-ACK" : "SYN"
          } (${ctx.maxRetries} retries)`,
        );
        return;
      }
      f.rto = Math.min(f.rto * 2, RTO_MAX_MS);
      sendSyn(ctx, f, f.state === TcpState.SynAckSent);
      ctx.arm(f, now + f.rto);
      return;
    case TcpState.Established: {
      if (ctx.sender.link === null) {
        // A paused guest (front-end connected, rings stopped): the flow waits, its timer
        // off; link up sends again, the front-end leaving arms the count.
        if (ctx.guestPaused) return;
        // No front-end: whatever the timer was for (retransmission, probe, or the hold
        // armed when the front-end left), it counts, and nothing can be sent.
        if (++f.retries > ctx.maxRetries) {
          abort(ctx, f, true, `no guest link for too long (${ctx.maxRetries} retries)`);
          return;
        }
        f.rto = Math.min(f.rto * 2, RTO_MAX_MS);
        ctx.arm(f, now + f.rto);
        return;
      }
      const outstanding = seqLt(f.sndUna, f.sndNxt) || (f.finSent && !f.finAcked);
      if (f.blocked && !outstanding) {
        // Waiting for room with nothing in flight, and no writable callback came: look
        // again (a flow still without room blocks anew and re-arms, backing off).
        f.blocked = false;
        ctx.blocked.delete(f);
        f.rto = Math.min(f.rto * 2, RTO_MAX_MS);
        pushToGuest(ctx, f, now);
        return;
      }
      if (outstanding) {
        if (++f.retries > ctx.maxRetries) {
          abort(ctx, f, true, `the guest stopped acknowledging (${ctx.maxRetries} retries)`);
          return;
        }
        ctx.counters.retransmits++;
        f.rto = Math.min(f.rto * 2, RTO_MAX_MS);
        f.recover = f.sndMax;
        f.sndNxt = f.sndUna; // go back N: the bytes are still in the host socket
        if (f.finSent && !f.finAcked) f.finSent = false;
        f.blocked = false;
        ctx.blocked.delete(f);
        pushToGuest(ctx, f, now);
        if (!f.closed && !timerArmed(f)) ctx.arm(f, now + f.rto);
      } else if (!f.hostEof || seqLt(f.sndNxt, f.dataEnd)) {
        // Zero-window probe: one byte past the window (RFC 9293 §3.8.6.1), if the host has one.
        const got = sendHostData(ctx, f, f.sndNxt, 1);
        if (got === DATA_END) {
          f.hostEof = true;
          f.dataEnd = f.sndNxt;
          pushToGuest(ctx, f, now); // the FIN goes out whatever the window
        } else if (got === DATA_NO_ROOM) {
          f.rto = Math.min(f.rto * 2, RTO_MAX_MS);
          ctx.arm(f, now + f.rto);
        } else if (got > 0) {
          const probeEnd = (f.sndNxt + 1) >>> 0;
          if (seqLt(f.sndMax, probeEnd)) f.sndMax = probeEnd;
          if (seqLt(f.dataMax, probeEnd)) f.dataMax = probeEnd;
          f.rto = Math.min(f.rto * 2, RTO_MAX_MS);
          ctx.arm(f, now + f.rto);
        }
      }
      return;
    }
    case TcpState.Closed:
      destroy(ctx, f, false, "linger over");
      return;
  }
}
