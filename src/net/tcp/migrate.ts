/**
 * TCP connections in a live migration. On the source, {@link freezeFlows} puts the
 * host socket of every established connection in repair mode, stops its events and
 * timers, and dumps it together with the translator's sequence state toward the
 * guest (a {@link MigratedTcpFlow} each). Then either the migration completes and
 * {@link dropFrozenFlows} closes those sockets in repair mode (the host peer sees
 * nothing: the target carries on with the same connection), or it is cancelled and
 * {@link thawFlows} takes them out of repair mode and lets them run again as before.
 * On the target, {@link restoreFlows} rebuilds each socket from its dump and puts
 * the flow back in the table; it resends to the guest from the first byte the guest
 * has not acknowledged once the link is up.
 *
 * Only connections with both directions open move: those still in a handshake or
 * half-closed stay behind (the guest's next segment on them gets a RST from the
 * target).
 *
 * @module
 */

import { socketLocalAddress } from "../../../ffi/tcp_socket.ts";
import { socketPeerAddress, TcpRepairMode } from "../../../ffi/tcp_repair.ts";
import { initFlowKey } from "../flows/flow_table.ts";
import { requireNetPermission } from "../plan/net_permission.ts";
import type { MigratedTcpFlow } from "../migration_state.ts";
import type { TcpContext } from "./context.ts";
import { RTO_INITIAL_MS, seqDiff, TcpFlow, TcpState } from "./flow.ts";
import { onHostEvents, settleDiscards } from "./host_side.ts";
import { forget } from "./closing.ts";
import {
  ADDRESS_WAIT_MS,
  closeInRepair,
  createRestoreSocket,
  dumpRepairSocket,
  type RepairSwitch,
  restoreRepairSocket,
  type SocketEnds,
} from "./repair.ts";
import { addressText } from "../../../ffi/ip_address_text.ts";

/** A flow frozen on the source, with what was dumped of it. */
export interface FrozenTcpFlow {
  readonly flow: TcpFlow;
  readonly record: MigratedTcpFlow;
}

/** What {@link freezeFlows} did. */
export interface FreezeOutcome {
  /** The flows frozen and dumped. */
  readonly frozen: FrozenTcpFlow[];
  /** Why some or all eligible flows could not be frozen, one line each. */
  readonly failures: string[];
}

/** An IPv4 address number as its 4 bytes in network order. */
function ipv4Bytes(address: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, address >>> 0);
  return out;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Whether `f` can move: established both ways, on a kernel socket. */
function movable(f: TcpFlow): boolean {
  return f.state === TcpState.Established && !f.closed && f.conn !== null &&
    f.conn.socketFd !== undefined && !f.guestFin && !f.finSent && !f.hostEof &&
    !f.hostHungUp;
}

/**
 * Freezes and dumps every movable flow (see the module comment). Flows that cannot
 * be frozen keep running and are named in the failures.
 */
export function freezeFlows(ctx: TcpContext, repair: RepairSwitch): FreezeOutcome {
  // A dumped receive queue must start where the guest's acknowledgements left it.
  if (settleDiscards(ctx)) ctx.sender.flush();
  const candidates: TcpFlow[] = [];
  ctx.flows.forEach((f) => {
    if (movable(f)) candidates.push(f);
  });
  const failures: string[] = [];
  const frozen: FrozenTcpFlow[] = [];
  if (candidates.length === 0) return { frozen, failures };
  try {
    repair.set(candidates.map((f) => f.conn!.socketFd!()), TcpRepairMode.ON);
  } catch (error) {
    failures.push(
      `cannot switch ${candidates.length} TCP socket(s) to repair mode: ${message(error)}`,
    );
    return { frozen, failures };
  }
  const unfrozen: TcpFlow[] = [];
  for (const f of candidates) {
    const conn = f.conn!;
    conn.suspend?.();
    try {
      frozen.push({ flow: f, record: dumpFlow(f, conn.socketFd!()) });
      f.frozen = true;
      ctx.disarm(f);
      ctx.blocked.delete(f);
      f.blocked = false;
    } catch (error) {
      failures.push(`${ctx.name(f)}: cannot dump its socket: ${message(error)}`);
      unfrozen.push(f);
    }
  }
  if (unfrozen.length > 0) {
    try {
      repair.set(unfrozen.map((f) => f.conn!.socketFd!()), TcpRepairMode.OFF);
    } catch (error) {
      failures.push(`cannot switch sockets back from repair mode: ${message(error)}`);
    }
    for (const f of unfrozen) f.conn!.resume?.();
  }
  return { frozen, failures };
}

/** The migration record of `f`, whose socket `fd` is in repair mode. */
function dumpFlow(f: TcpFlow, fd: number): MigratedTcpFlow {
  const socket = dumpRepairSocket(fd);
  if (f.pendingToHost !== null) {
    // bytes the guest had sent (and we acknowledged) that the socket never took
    const queue = new Uint8Array(socket.sendQueue.length + f.pendingToHost.length);
    queue.set(socket.sendQueue);
    queue.set(f.pendingToHost, socket.sendQueue.length);
    socket.sendQueue = queue;
  }
  const local = socketLocalAddress(fd);
  const peer = socketPeerAddress(fd);
  const guestAddress = f.family === 4 ? ipv4Bytes(f.guest4) : f.guest6!.slice();
  const remoteAddress = f.family === 4 ? ipv4Bytes(f.remote4) : f.remote6!.slice();
  // What was sent to the guest and not acknowledged is still in the receive queue.
  const sent = Math.max(0, Math.min(seqDiff(f.dataMax, f.sndUna), socket.recvQueue.length));
  return {
    family: f.family,
    inbound: f.inbound,
    guestAddress,
    guestPort: f.guestPort,
    remoteAddress,
    remotePort: f.remotePort,
    localAddress: local.address,
    localPort: local.port,
    peerAddress: peer.address,
    peerPort: peer.port,
    rcvNxt: f.rcvNxt,
    rcvWndRight: f.rcvWndRight,
    iss: f.iss,
    sndUna: f.sndUna,
    sndMax: (f.sndUna + sent) >>> 0,
    sndWndRight: f.sndWndRight,
    ourShift: f.ourShift,
    guestShift: f.guestShift,
    guestMss: f.mss,
    socket,
  };
}

/**
 * A cancelled migration: takes the frozen flows' sockets out of repair mode and lets
 * them run again (their data goes to the guest once its link is back).
 * @returns failures, one line each (such flows are reset)
 */
export function thawFlows(
  ctx: TcpContext,
  frozen: readonly FrozenTcpFlow[],
  repair: RepairSwitch,
  now: number,
): string[] {
  const live = frozen.map((z) => z.flow).filter((f) => !f.closed && f.conn !== null);
  if (live.length === 0) return [];
  const failures: string[] = [];
  try {
    // No window probe: the peer has seen nothing change.
    repair.set(live.map((f) => f.conn!.socketFd!()), TcpRepairMode.OFF_NO_WINDOW_PROBE);
  } catch (error) {
    failures.push(`cannot take ${live.length} TCP socket(s) out of repair mode: ${message(error)}`);
  }
  for (const f of live) {
    f.frozen = false;
    f.conn!.resume?.();
    f.lastActivity = now;
    if (seqDiff(f.sndNxt, f.sndUna) > 0) ctx.arm(f, now + f.rto);
  }
  return failures;
}

/**
 * A completed migration: forgets the frozen flows and closes their sockets, which
 * are in repair mode, so the host peers see neither FIN nor RST.
 */
export function dropFrozenFlows(ctx: TcpContext, frozen: readonly FrozenTcpFlow[]): void {
  for (const { flow: f } of frozen) {
    if (f.closed) continue;
    const conn = forget(ctx, f);
    try {
      conn?.close(); // in repair mode: a silent close
    } catch { /* closed */ }
  }
}

/** What {@link restoreFlows} did. */
export interface RestoreOutcome {
  /** Flows back in the table. */
  readonly restored: number;
  /** Why the others were not, one line each. */
  readonly failures: string[];
}

function ends(r: MigratedTcpFlow): SocketEnds {
  return {
    local: { address: r.localAddress, port: r.localPort },
    peer: { address: r.peerAddress, port: r.peerPort },
  };
}

function recordName(r: MigratedTcpFlow): string {
  return `guest port ${r.guestPort} <-> ${addressText(r.peerAddress)} port ${r.peerPort}`;
}

/**
 * Rebuilds the flows of a migration on the target: sockets restored from their
 * dumps (in repair mode through `repair`), flows back in the table, events flowing.
 */
export function restoreFlows(
  ctx: TcpContext,
  records: readonly MigratedTcpFlow[],
  repair: RepairSwitch,
  now: number,
): RestoreOutcome {
  const failures: string[] = [];
  const adopt = ctx.host.adopt?.bind(ctx.host);
  if (records.length === 0) return { restored: 0, failures };
  if (adopt === undefined) {
    return { restored: 0, failures: ["the host side cannot adopt restored sockets"] };
  }
  const pending: { record: MigratedTcpFlow; fd: number }[] = [];
  for (const r of records) {
    const v4 = r.family === 4;
    const dv = new DataView(r.guestAddress.buffer, r.guestAddress.byteOffset);
    const rv = new DataView(r.remoteAddress.buffer, r.remoteAddress.byteOffset);
    const existing = v4
      ? ctx.flows.find4(dv.getUint32(0), r.guestPort, rv.getUint32(0), r.remotePort)
      : ctx.flows.find6(r.guestAddress, r.guestPort, r.remoteAddress, r.remotePort);
    if (existing !== null) {
      failures.push(`${recordName(r)}: the flow table has it already`);
      continue;
    }
    try {
      // The state comes from the front-end: --allow-net decides where sockets go, as
      // for every connect.
      requireNetPermission(addressText(r.peerAddress), r.peerPort, "restore a connection");
      pending.push({ record: r, fd: createRestoreSocket(ends(r), r.socket) });
    } catch (error) {
      failures.push(`${recordName(r)}: ${message(error)}`);
    }
  }
  if (pending.length === 0) return { restored: 0, failures };
  try {
    repair.set(pending.map((p) => p.fd), TcpRepairMode.ON);
  } catch (error) {
    for (const p of pending) closeInRepair(p.fd);
    failures.push(
      `cannot switch ${pending.length} new socket(s) to repair mode: ${message(error)}`,
    );
    return { restored: 0, failures };
  }
  const ready: { record: MigratedTcpFlow; fd: number; leftover: Uint8Array }[] = [];
  // one bounded wait for all flows, should the source not have let go yet
  const addressDeadline = performance.now() + ADDRESS_WAIT_MS;
  for (const p of pending) {
    try {
      const leftover = restoreRepairSocket(p.fd, ends(p.record), p.record.socket, addressDeadline);
      ready.push({ ...p, leftover });
    } catch (error) {
      closeInRepair(p.fd);
      failures.push(`${recordName(p.record)}: cannot restore its socket: ${message(error)}`);
    }
  }
  if (ready.length === 0) return { restored: 0, failures };
  try {
    repair.set(ready.map((p) => p.fd), TcpRepairMode.OFF);
  } catch (error) {
    for (const p of ready) closeInRepair(p.fd);
    failures.push(`cannot take ${ready.length} socket(s) out of repair mode: ${message(error)}`);
    return { restored: 0, failures };
  }
  let restored = 0;
  for (const p of ready) {
    if (!ctx.flows.admit()) {
      closeInRepair(p.fd);
      ctx.counters.tableFull++;
      failures.push(`${recordName(p.record)}: the flow table is full`);
      continue;
    }
    let conn;
    try {
      conn = adopt(p.fd);
    } catch (error) {
      failures.push(`${recordName(p.record)}: cannot watch its socket: ${message(error)}`);
      continue; // the connection closed the socket
    }
    const f = flowFrom(p.record, now);
    f.conn = conn;
    ctx.flows.insert(f);
    conn.setHandler((events, at) => onHostEvents(ctx, f, events, at));
    if (p.leftover.length > 0) {
      // the end of the send queue did not fit: it goes out as the socket drains
      f.pendingToHost = p.leftover.slice();
      conn.requestWritable();
    }
    restored++;
  }
  return { restored, failures };
}

/** A flow in the state `r` describes, sending from the guest's last acknowledgement. */
function flowFrom(r: MigratedTcpFlow, now: number): TcpFlow {
  const f = new TcpFlow();
  const v4 = r.family === 4;
  const word = (a: Uint8Array) => new DataView(a.buffer, a.byteOffset, 4).getUint32(0);
  initFlowKey(
    f,
    r.family,
    v4 ? word(r.guestAddress) : 0,
    v4 ? null : r.guestAddress,
    r.guestPort,
    v4 ? word(r.remoteAddress) : 0,
    v4 ? null : r.remoteAddress,
    r.remotePort,
  );
  f.state = TcpState.Established;
  f.inbound = r.inbound;
  f.hostName = addressText(r.peerAddress);
  f.hostPort = r.peerPort;
  f.rcvNxt = r.rcvNxt;
  f.rcvWndRight = r.rcvWndRight;
  f.ourShift = r.ourShift;
  f.guestShift = r.guestShift;
  f.iss = r.iss;
  f.sndUna = r.sndUna;
  f.sndNxt = r.sndUna;
  f.sndMax = r.sndMax;
  f.dataMax = r.sndMax;
  f.recover = r.sndUna;
  f.sndWndRight = r.sndWndRight;
  f.mss = r.guestMss;
  f.rto = RTO_INITIAL_MS;
  f.createdAt = now;
  f.lastActivity = now;
  return f;
}
