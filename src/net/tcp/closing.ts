/**
 * How flows end: an orderly close once both directions are finished (the flow then
 * lingers briefly to re-ACK a retransmitted FIN), an abort that resets the guest
 * and/or the host peer, and the handling of host socket failures and of bugs in
 * callbacks, which reset the flow instead of escaping into the event loop.
 *
 * @module
 */

import { flowKeyEnds, formatDuration, formatEndpoint } from "../flows/flow_info.ts";
import { TCP_ACK_FLAG, TCP_RST } from "../wire/tcp_header.ts";
import type { TcpContext } from "./context.ts";
import { LINGER_MS, type TcpFlow, TcpState } from "./flow.ts";
import { sendFlags } from "./output.ts";
import { ackOut } from "./window.ts";

/**
 * The flow's ends for a log line, as the statistics dump shows them:
 * `tcp outbound 10.0.2.15:41000 -> 10.0.2.2:80 (host 127.0.0.1:80)`.
 */
export function flowLabel(f: TcpFlow): string {
  const ends = flowKeyEnds(f);
  return `tcp ${f.inbound ? "inbound" : "outbound"} ${ends.guest} ${f.inbound ? "<-" : "->"} ` +
    `${ends.remote} (host ${formatEndpoint(f.hostName, f.hostPort)})`;
}

/** Logs (debug) that the flow began; `how` says by whom and toward what. */
export function logOpened(ctx: TcpContext, f: TcpFlow, how: string): void {
  if (ctx.log.enabled("debug")) ctx.log.debug(`${flowLabel(f)} opened: ${how}`);
}

/** Logs (debug), once, that the flow ended and why, with its byte counts and age. */
function logEnded(ctx: TcpContext, f: TcpFlow, reason: string): void {
  if (f.endLogged) return;
  f.endLogged = true;
  if (!ctx.log.enabled("debug")) return;
  ctx.log.debug(
    `${flowLabel(f)} closed: ${reason}; guest->host ${f.bytesFromGuest} B, ` +
      `host->guest ${f.bytesToGuest} B, after ${formatDuration(ctx.clock() - f.createdAt)}`,
  );
}

/**
 * Drops the bytes the guest acknowledged this batch (TcpFlow.discardOwed) from `f`'s
 * host socket now.
 * @throws the socket's error
 */
export function dropOwed(f: TcpFlow): void {
  const owed = f.discardOwed;
  if (owed === 0) return;
  f.discardOwed = 0;
  f.conn?.discard(owed);
}

/**
 * Closes the flow once both directions are finished (our FIN acknowledged, the guest's
 * passed on). Bytes still queued at a close make the kernel reset the peer, so the
 * acknowledged ones are dropped first.
 */
export function maybeFinish(ctx: TcpContext, f: TcpFlow): void {
  if (f.closed || f.state !== TcpState.Established) return;
  if (!(f.finAcked && f.guestFinDone)) return;
  try {
    dropOwed(f);
  } catch { /* the socket failed: closed below all the same */ }
  try {
    f.conn?.close();
  } catch { /* closed */ }
  f.conn = null;
  f.state = TcpState.Closed;
  ctx.blocked.delete(f);
  logEnded(ctx, f, "FIN both ways");
  ctx.arm(f, ctx.clock() + LINGER_MS);
}

/**
 * Ends the flow at once, optionally sending a RST to the guest; the host peer gets a
 * RST. `reason` is logged (debug).
 */
export function abort(ctx: TcpContext, f: TcpFlow, rstGuest: boolean, reason: string): void {
  if (f.closed) return;
  if (rstGuest && f.state !== TcpState.Connecting && f.state !== TcpState.Closed) {
    sendFlags(ctx, f, TCP_ACK_FLAG | TCP_RST, f.sndNxt, ackOut(f));
    ctx.counters.rstSent++;
  }
  destroy(ctx, f, true, rstGuest ? `${reason}; RST to the guest and the host peer` : reason);
}

/**
 * Forgets the flow and closes its host connection: with a RST to the host peer when
 * `resetHost` (an aborted connection, RFC 9293 §3.10.5), else with a FIN. `reason` is
 * logged (debug) unless the end was logged already.
 */
export function destroy(ctx: TcpContext, f: TcpFlow, resetHost: boolean, reason: string): void {
  logEnded(ctx, f, reason);
  const conn = forget(ctx, f);
  if (conn !== null) {
    try {
      if (resetHost) conn.reset();
      else conn.close();
    } catch { /* closed */ }
  }
}

/**
 * Marks the flow closed, drops it from the timers, the blocked set and the flow
 * table, and detaches its host connection.
 * @returns the host connection, for the caller to close (or null)
 */
export function forget(ctx: TcpContext, f: TcpFlow): TcpFlow["conn"] {
  f.closed = true;
  ctx.disarm(f);
  ctx.blocked.delete(f);
  ctx.flows.remove(f);
  const conn = f.conn;
  f.conn = null;
  return conn;
}

/** A host socket failed (reset, refused write): resets the flow toward the guest. */
export function hostError(ctx: TcpContext, f: TcpFlow, e: unknown): void {
  const message = (e as Error)?.message ?? String(e);
  ctx.failLog.write(ctx.clock(), `tcp: ${ctx.name(f)} host socket error: ${message}`);
  abort(ctx, f, true, `host socket error: ${message}`);
}

/** A bug in a callback: logs it and resets the flow; nothing escapes. */
export function internalError(ctx: TcpContext, f: TcpFlow, e: unknown): void {
  ctx.log.error(`tcp: internal error on ${ctx.name(f)}: ${(e as Error)?.stack ?? e}`);
  try {
    abort(ctx, f, true, "internal error");
  } catch { /* nothing more to do */ }
}
