/**
 * Challenge ACKs (RFC 5961): a RST inside the window but not at RCV.NXT (§3.2), a SYN
 * on a synchronized connection (§4.2) and an ACK for data never sent (§5.2) are
 * answered with an ACK instead of being acted on. A peer that answers each challenge
 * ACK with another such segment would keep both sides busy forever, so they are
 * throttled (§7): per flow and for the whole translator, a fixed budget per interval;
 * what is over it is dropped without an answer.
 *
 * @module
 */

import type { TcpContext } from "./context.ts";
import type { TcpFlow } from "./flow.ts";
import { sendAck } from "./output.ts";

/** Interval over which challenge ACKs are counted (RFC 5961 §7: "in a given interval"). */
export const CHALLENGE_ACK_INTERVAL_MS = 1000;
/** Challenge ACKs one flow may send per interval (RFC 5961 §7 throttling). */
export const CHALLENGE_ACKS_PER_FLOW = 10;
/** Challenge ACKs all flows together may send per interval (Linux's tcp_challenge_ack_limit). */
export const CHALLENGE_ACKS_PER_INTERVAL = 1000;

/**
 * Sends `f` a challenge ACK unless the flow's or the translator's budget for this
 * interval is spent (then counts it as limited and sends nothing).
 */
export function sendChallengeAck(ctx: TcpContext, f: TcpFlow, now: number): void {
  if (now - f.challengeSince >= CHALLENGE_ACK_INTERVAL_MS) {
    f.challengeSince = now;
    f.challengeAcks = 0;
  }
  if (now - ctx.challengeSince >= CHALLENGE_ACK_INTERVAL_MS) {
    ctx.challengeSince = now;
    ctx.challengeAcks = 0;
  }
  if (
    f.challengeAcks >= CHALLENGE_ACKS_PER_FLOW || ctx.challengeAcks >= CHALLENGE_ACKS_PER_INTERVAL
  ) {
    ctx.counters.challengeAcksLimited++;
    return;
  }
  f.challengeAcks++;
  ctx.challengeAcks++;
  ctx.counters.challengeAcks++;
  sendAck(ctx, f);
}
