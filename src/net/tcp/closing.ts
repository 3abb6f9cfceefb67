/**
 * How flows end: an orderly close once both directions are finished (the flow then
 * lingers briefly to re-ACK a retransmitted FIN), an abort that resets the guest
 * and/or the host peer, and the handling of host socket failures and of bugs in
 * callbacks, which reset the flow instead of escaping into the event loop.
 *
 * @module
 */

import { TCP_ACK_FLAG, TCP_RST } from "../tcp_header.ts";
import type { TcpContext } from "./context.ts";
import { LINGER_MS, type TcpFlow, TcpState } from "./flow.ts";
import { ackOut, sendFlags } from "./output.ts";

/** Closes the flow once both directions are finished (our FIN acknowledged, the guest's passed on). */
export function maybeFinish(ctx: TcpContext, f: TcpFlow): void {
  if (f.closed || f.state !== TcpState.Established) return;
  if (!(f.finAcked && f.guestFinDone)) return;
  try {
    f.conn?.close();
  } catch { /* closed */ }
  f.conn = null;
  f.state = TcpState.Closed;
  ctx.blocked.delete(f);
  ctx.arm(f, ctx.clock() + LINGER_MS);
}

/** Ends the flow at once, optionally sending a RST to the guest; the host peer gets a RST. */
export function abort(ctx: TcpContext, f: TcpFlow, rstGuest: boolean): void {
  if (f.closed) return;
  if (rstGuest && f.state !== TcpState.Connecting && f.state !== TcpState.Closed) {
    sendFlags(ctx, f, TCP_ACK_FLAG | TCP_RST, f.sndNxt, ackOut(f));
    ctx.counters.rstSent++;
  }
  destroy(ctx, f, true);
}

/**
 * Forgets the flow and closes its host connection: with a RST to the host peer when
 * `resetHost` (an aborted connection, RFC 9293 §3.10.5), else with a FIN.
 */
export function destroy(ctx: TcpContext, f: TcpFlow, resetHost = false): void {
  f.closed = true;
  ctx.disarm(f);
  ctx.blocked.delete(f);
  ctx.flows.remove(f);
  const conn = f.conn;
  f.conn = null;
  if (conn !== null) {
    try {
      if (resetHost) conn.reset();
      else conn.close();
    } catch { /* closed */ }
  }
}

/** A host socket failed (reset, refused write): resets the flow toward the guest. */
export function hostError(ctx: TcpContext, f: TcpFlow, e: unknown): void {
  ctx.failLog.write(
    ctx.clock(),
    `tcp: ${ctx.name(f)} host socket error: ${(e as Error)?.message ?? e}`,
  );
  abort(ctx, f, true);
}

/** A bug in a callback: logs it and resets the flow; nothing escapes. */
export function internalError(ctx: TcpContext, f: TcpFlow, e: unknown): void {
  ctx.log.error(`tcp: internal error on ${ctx.name(f)}: ${(e as Error)?.stack ?? e}`);
  try {
    abort(ctx, f, true);
  } catch { /* nothing more to do */ }
}
