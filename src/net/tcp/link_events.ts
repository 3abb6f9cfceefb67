/**
 * What the flows do when the guest link comes and goes. On link down nothing can reach
 * the guest; while the front-end stays connected (a VM paused, a guest resetting its
 * device: the rings stopped) established flows wait for the link with no give-up count,
 * as a paused machine's connections do (the 2-hour idle sweep still applies). When the
 * front-end leaves, every open flow gets a fresh timer whose expiries timers.ts counts
 * (the flow is given up after `maxRetries` of them, about 100 s, unless a link comes
 * back first). On link up every established flow goes back to the acknowledged edge and
 * sends again; when the link has room again after a NoRoom (the RX kick), the flows
 * waiting for it resume.
 *
 * No flow may wait without a wake source: a flow that finds no room during either
 * pass is put back in the blocked set (`TcpContext.block`), and the link, having
 * answered NoRoom, asks the guest for a kick and calls the writable callback on it;
 * a blocked flow also keeps its timer armed (output.ts), in case no kick comes.
 *
 * @module
 */

import type { TcpContext } from "./context.ts";
import { RTO_INITIAL_MS, TcpState } from "./flow.ts";
import { internalError } from "./closing.ts";
import { pushToGuest, sendAck, timerArmed } from "./output.ts";

/** Resumes every flow once a link is back (retransmits what was outstanding). */
export function resumeOnLinkUp(ctx: TcpContext, now: number): void {
  ctx.guestPaused = false;
  // Emptied before the pass: a flow that finds no room again is blocked anew, and the
  // link's writable callback (the RX kick) wakes it.
  ctx.blocked.clear();
  ctx.flows.forEach((f) => {
    // A fresh link: the count of unanswered timeouts starts again.
    f.retries = 0;
    f.rto = RTO_INITIAL_MS;
    if (f.state !== TcpState.Established) return;
    f.blocked = false;
    f.sndNxt = f.sndUna;
    f.finSent = false;
    if (timerArmed(f)) ctx.disarm(f); // pushToGuest arms it again for what it sends
    try {
      pushToGuest(ctx, f, now);
      if (!f.closed) sendAck(ctx, f);
    } catch (e) {
      internalError(ctx, f, e);
    }
  });
}

/**
 * The link went away, the front-end still connected: established flows wait for it
 * without counting their timeouts (timers.ts); flows in other states go on as timed.
 */
export function pauseOnLinkDown(ctx: TcpContext): void {
  ctx.guestPaused = true;
}

/**
 * The front-end left, the link down: every flow past its host connect gets its timer
 * armed afresh from the initial RTO, so that the count of unanswered timeouts, and with
 * it the time until the flow is given up, is the same for idle and busy flows.
 */
export function holdOnFrontendGone(ctx: TcpContext, now: number): void {
  if (ctx.sender.link !== null) return; // a link came meanwhile: nothing to count down
  ctx.guestPaused = false;
  ctx.flows.forEach((f) => {
    if (f.closed || f.state === TcpState.Connecting || f.state === TcpState.Closed) return;
    f.retries = 0;
    f.rto = RTO_INITIAL_MS;
    ctx.arm(f, now + f.rto);
  });
}

/** Resumes the flows that found no room toward the guest. */
export function resumeOnWritable(ctx: TcpContext, now: number): void {
  const list = [...ctx.blocked];
  // Emptied before the pass: whoever blocks again is back in the set for the next call.
  ctx.blocked.clear();
  for (const f of list) {
    f.blocked = false;
    if (f.closed || f.state !== TcpState.Established) continue;
    try {
      pushToGuest(ctx, f, now);
    } catch (e) {
      internalError(ctx, f, e);
    }
  }
}
