/**
 * The acknowledgement number and window every segment toward the guest carries. The
 * window mirrors the host socket: the room left in its send buffer (SO_SNDBUF −
 * SIOCOUTQ), capped by the translator's largest window and never moving its right
 * edge back. The socket is asked again once the guest has sent half of the room it
 * had (until then, that room less what was sent since stands for it), after it
 * refused bytes, and when it reports draining. When the room runs low, the socket is
 * asked to report when it drains, and a window update follows.
 *
 * @module
 */

import type { TcpContext } from "./context.ts";
import { seqDiff, seqLt, type TcpFlow } from "./flow.ts";

/** The acknowledgement number toward the guest: everything the host socket took, and its FIN. */
export function ackOut(f: TcpFlow): number {
  return (f.rcvNxt + (f.guestFinDone ? 1 : 0)) >>> 0;
}

/**
 * The window field toward the guest (scaled), mirroring the host socket's free send
 * buffer; records the right edge advertised and asks for a writable event when the
 * window is low.
 */
export function windowOut(ctx: TcpContext, f: TcpFlow): number {
  const conn = f.conn;
  let room = ctx.maxWindow;
  let low = false;
  if (conn !== null && !f.guestFinDone) {
    const sent = seqDiff(f.rcvNxt, f.roomAt);
    if (f.room >= 0 && sent >= 0 && 2 * (f.room - sent) >= f.room) {
      // What was sent to the socket since it was asked took at most that much of the
      // room it had then (the kernel only frees room since): while half of it is left,
      // that floor is the room, without asking again (one ioctl fewer per ACK under an
      // upload; the right edge then stays put until the socket is asked again).
      room = f.room - sent;
    } else {
      const q = ctx.queues;
      try {
        conn.queues(q);
        room = Math.min(ctx.maxWindow, Math.max(0, q.sendBuffer - q.sendQueued));
        low = room < Math.min(ctx.maxWindow, q.sendBuffer) / 4;
        f.room = low ? -1 : room; // a low window is asked again, to see it grow
        f.roomAt = f.rcvNxt;
      } catch { /* a broken socket: its next operation reports it */ }
    }
  }
  room = Math.min(room, 65535 << f.ourShift);
  let right = (f.rcvNxt + room) >>> 0;
  if (seqLt(right, f.rcvWndRight)) right = f.rcvWndRight; // never move the edge back
  f.rcvWndRight = right;
  if (low && !f.windowUpdateDue && conn !== null) {
    f.windowUpdateDue = true;
    conn.requestWritable();
  }
  return Math.min(Math.max(seqDiff(right, ackOut(f)), 0) >>> f.ourShift, 65535);
}
