/**
 * The host's side of each connection, driven by its socket's readiness events:
 * completion of an outbound connect (then the SYN-ACK goes to the guest, or a RST
 * when it failed), new host data (peeked into the guest's buffers, output.ts), the
 * send buffer draining (a window update to the guest), errors and hang-ups; the bytes
 * the guest acknowledged, dropped from each socket once a batch's frames are out
 * (settleDiscards). A socket that still holds bytes after a push has its readable
 * events turned off until a push drains it (output.ts): the guest's window or room
 * toward it is what those bytes wait for, and what opens either pushes again. And
 * the `-t` listeners, whose accepted connections become SYNs toward the guest.
 *
 * @module
 */

import {
  EVENT_ERROR,
  EVENT_HANGUP,
  EVENT_PEER_CLOSED,
  EVENT_READABLE,
  EVENT_WRITABLE,
} from "../../loop/event_loop.ts";
import { initFlowKey } from "../flows/flow_table.ts";
import { type GuestTarget, translateInboundAddress } from "../plan/fwd.ts";
import { TCP_ACK_FLAG, TCP_RST } from "../wire/tcp_header.ts";
import type { TcpContext } from "./context.ts";
import { RTO_INITIAL_MS, TcpFlow, TcpState } from "./flow.ts";
import { type AcceptedConnection, type HostListener } from "./host_socket.ts";
import { destroy, dropOwed, hostError, internalError, logOpened, maybeFinish } from "./closing.ts";
import { pushToGuest, sendFlags, sendSyn } from "./output.ts";
import { WOULD_BLOCK } from "../../../ffi/tcp_socket.ts";

/** Events after which the host may have data, an end of stream or an error to read. */
const READ_EVENTS = (EVENT_READABLE | EVENT_HANGUP | EVENT_ERROR | EVENT_PEER_CLOSED) >>> 0;

/** Handles the readiness events of `f`'s host socket. */
export function onHostEvents(ctx: TcpContext, f: TcpFlow, events: number, now: number): void {
  if (f.closed || f.conn === null) return;
  // Recorded in every state: the event that carries it comes only once (edge-triggered).
  if (events & (EVENT_PEER_CLOSED | EVENT_HANGUP)) f.hostHungUp = true;
  try {
    if (f.state === TcpState.Connecting) {
      if (events & (EVENT_WRITABLE | EVENT_ERROR | EVENT_HANGUP)) connected(ctx, f, now);
      return;
    }
    if (f.state === TcpState.Established) {
      if ((events & EVENT_WRITABLE) && f.pendingToHost !== null && flushPendingToHost(ctx, f)) {
        ctx.scheduleAck(f); // the window may open again
      }
      if (f.closed) return;
      if (events & READ_EVENTS) {
        f.hostDrained = false;
        pushToGuest(ctx, f, now);
        // Bytes left in the socket wait for the guest's window or room toward it, and
        // what opens either pushes again: until the socket is drained (output.ts),
        // each new arrival's readable event would wake the loop for nothing.
        if (!f.hostDrained && f.conn !== null) f.conn.wantReadable(false);
      }
      if (f.closed) return;
      if ((events & EVENT_WRITABLE) && f.windowUpdateDue) {
        f.windowUpdateDue = false;
        f.room = -1; // the update carries the room the socket has now
        ctx.scheduleAck(f);
      }
      maybeFinish(ctx, f);
    } else if (events & EVENT_ERROR) {
      // Handshake with the guest still running: a failed host side ends it now.
      const error = f.conn.takeError();
      if (error !== null) hostError(ctx, f, error);
    }
  } catch (e) {
    internalError(ctx, f, e);
  }
}

/**
 * Drops from each host socket the bytes its guest acknowledged during the batch, once
 * the batch's frames toward the guest are out: the window this opens lets a host peer
 * on this machine send at once, inside the call, and the guest should not wait for
 * that. A socket that fails resets its flow (a RST toward the guest). A flow whose
 * peer hung up looks for the end of its stream again: without SO_PEEK_OFF a peek shows
 * it only once nothing is queued before it, and the hang-up's event came only once.
 * @returns whether frames toward the guest were queued meanwhile (flush them)
 */
export function settleDiscards(ctx: TcpContext): boolean {
  const due = ctx.discardDue;
  const count = ctx.discardDueCount;
  if (count === 0) return false;
  let queued = false;
  for (let i = 0; i < count; i++) {
    const f = due[i];
    if (f.discardOwed === 0) continue; // dropped at its close meanwhile (maybeFinish)
    try {
      dropOwed(f);
    } catch (e) {
      hostError(ctx, f, e);
      queued = true;
      continue;
    }
    if (f.hostHungUp && !f.hostEof && !f.closed && f.state === TcpState.Established) {
      f.hostDrained = false;
      try {
        pushToGuest(ctx, f, ctx.clock());
      } catch (e) {
        internalError(ctx, f, e);
      }
      queued = true;
    }
  }
  ctx.clearDiscardDue();
  return queued;
}

/**
 * Sends what it can of `f.pendingToHost` (see TcpFlow) to the host socket.
 * @returns true when nothing is pending any more
 */
export function flushPendingToHost(ctx: TcpContext, f: TcpFlow): boolean {
  const pending = f.pendingToHost;
  if (pending === null) return true;
  if (f.conn === null) return false;
  let taken: number;
  try {
    taken = f.conn.send(pending);
  } catch (e) {
    hostError(ctx, f, e);
    return false;
  }
  if (taken === WOULD_BLOCK) taken = 0;
  if (taken >= pending.length) {
    f.pendingToHost = null;
    return true;
  }
  f.pendingToHost = pending.subarray(taken);
  f.conn.requestWritable();
  return false;
}

/** The host connect ended: on success the guest gets our SYN-ACK, else a RST. */
/** Picks the flow's initial send sequence number; its SYN takes the first (RFC 9293 §3.4.1). */
function startSequence(ctx: TcpContext, f: TcpFlow): void {
  f.iss = ctx.isn();
  f.sndUna = f.iss;
  f.sndNxt = (f.iss + 1) >>> 0;
  f.sndMax = f.sndNxt;
  f.dataMax = f.sndNxt;
  f.recover = f.sndNxt;
}

function connected(ctx: TcpContext, f: TcpFlow, now: number): void {
  const error = f.conn!.takeError();
  if (error !== null) {
    connectFailed(ctx, f, error, now);
    return;
  }
  f.state = TcpState.SynAckSent;
  startSequence(ctx, f);
  f.rto = RTO_INITIAL_MS;
  f.retries = 0;
  sendSyn(ctx, f, true);
  ctx.arm(f, now + f.rto);
}

/** The host connect failed (refused, unreachable, not permitted, timeout): RST to the guest. */
export function connectFailed(ctx: TcpContext, f: TcpFlow, e: unknown, now: number): void {
  ctx.counters.connectFailed++;
  const denied = e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied;
  const message = (e as Error)?.message ?? String(e);
  if (denied) {
    ctx.counters.notPermitted++;
    ctx.denyLog.write(
      now,
      `tcp: connection from the guest to ${f.hostName} port ${f.hostPort} not permitted ` +
        `(--allow-net): ${(e as Error).message}`,
    );
  } else {
    ctx.failLog.write(
      now,
      `tcp: connect to ${f.hostName} port ${f.hostPort} failed: ${(e as Error)?.message ?? e}`,
    );
  }
  // RST+ACK acknowledging the SYN (RFC 9293 §3.10.7.2 "connection refused").
  sendFlags(ctx, f, TCP_ACK_FLAG | TCP_RST, 0, f.rcvNxt);
  ctx.counters.rstSent++;
  destroy(
    ctx,
    f,
    false,
    `${denied ? "not permitted (--allow-net)" : `connect failed: ${message}`}; RST to the guest`,
  );
}

/**
 * Listens on host `hostname`:`port` and forwards each accepted connection to guest
 * port `guestPort` of the guest's own address, or of `target` when the forward has a
 * target address; a listener that breaks is closed and forgotten.
 */
export function startListening(
  ctx: TcpContext,
  hostname: string,
  port: number,
  guestPort: number,
  interfaceName: string | null,
  target: GuestTarget | null = null,
): HostListener {
  let listener: HostListener | null = null;
  let broken = false;
  const forget = () => {
    broken = true;
    if (listener === null) return;
    ctx.listeners.delete(listener);
    try {
      listener.close();
    } catch { /* already closed */ }
  };
  listener = ctx.host.listen(hostname, port, interfaceName, {
    accepted: (accepted) => {
      try {
        newInbound(ctx, accepted, port, guestPort, target, ctx.clock());
      } catch (e) {
        ctx.log.warn(`tcp: cannot forward an inbound connection: ${e}`);
        try {
          accepted.connection.close();
        } catch { /* closed */ }
      }
    },
    failed: forget,
  });
  if (broken) forget();
  else ctx.listeners.add(listener);
  return listener;
}

/**
 * An accepted host connection becomes a SYN toward the guest from the translated peer,
 * to `target` when the forward has one, else to the guest's address (the one last seen).
 * A peer of the other IP version than the target is refused.
 */
function newInbound(
  ctx: TcpContext,
  accepted: AcceptedConnection,
  hostPort: number,
  guestPort: number,
  target: GuestTarget | null,
  now: number,
): void {
  const conn = accepted.connection;
  const a = ctx.inAddress;
  const s = ctx.sender;
  let ok = translateInboundAddress(ctx.rules, accepted.peerAddress, a);
  let guest4 = 0;
  let guest6: Uint8Array | null = null;
  if (ok && target !== null) {
    ok = target.family === a.family;
    guest4 = target.addr4;
    guest6 = target.addr6;
    if (!ok) {
      ctx.failLog.write(
        now,
        `tcp: connection from ${accepted.peerHostname} port ${accepted.peerPort} refused: ` +
          `its IP version differs from the forward's target address`,
      );
    }
  } else if (ok && a.family === 4) {
    guest4 = s.guestIpv4Seen || ctx.rules.guestAddr4;
    ok = guest4 !== 0;
  } else if (ok) {
    guest6 = s.guestIpv6Seen ?? ctx.rules.guestAddr6 ?? s.guestIpv6LinkLocalSeen;
    ok = guest6 !== null;
  }
  if (!ok || !ctx.flows.admit()) {
    if (ok) ctx.counters.tableFull++;
    conn.reset(); // refused: a RST, not an orderly end
    return;
  }
  const f = new TcpFlow();
  initFlowKey(f, a.family, a.addr4, guest6, guestPort, a.addr4, a.addr6, accepted.peerPort);
  f.guest4 = guest4 >>> 0;
  f.conn = conn;
  f.inbound = true;
  f.hostName = accepted.peerHostname;
  f.hostPort = accepted.peerPort;
  f.state = TcpState.SynSent;
  f.lastActivity = now;
  f.createdAt = now;
  startSequence(ctx, f);
  if (!ctx.flows.insert(f)) {
    conn.close();
    return;
  }
  conn.setHandler((events, at) => onHostEvents(ctx, f, events, at));
  ctx.counters.inbound++;
  logOpened(ctx, f, `host connection on forwarded port ${hostPort}, SYN to the guest`);
  sendSyn(ctx, f, false);
  ctx.arm(f, now + f.rto);
}
