/**
 * One translated TCP connection: its guest-side 5-tuple and byte counts (the
 * {@link CountedFlowFields} it extends), its host connection, and the sequence state of
 * both directions. A flow holds no data
 * buffer: bytes from the host stay in the host socket's receive queue until the
 * guest acknowledges them, and bytes from the guest go straight from its frames
 * into the host socket (see translator.ts). Also the constants and sequence-number
 * helpers the tcp/ modules share.
 *
 * @module
 */

import { CountedFlowFields } from "../flows/flow_info.ts";
import type { HostConnection } from "./host_socket.ts";

/** Window scale shift we offer (RFC 7323 §2.2): 65535 << 7 covers an 8 MiB window. */
export const OUR_WINDOW_SCALE = 7;
/** Largest window we ever advertise, in bytes: 65535 << {@link OUR_WINDOW_SCALE}. */
export const MAX_WINDOW = 65535 << OUR_WINDOW_SCALE;
/** Default cap of the window advertised to the guest (the host socket's room bounds it too). */
export const DEFAULT_MAX_WINDOW = 4 * 1024 * 1024;
/** Smallest allowed window cap. */
export const MIN_WINDOW_CAP = 16 * 1024;
/** MSS assumed when an IPv4 guest sends none (RFC 9293 §3.7.1). */
export const DEFAULT_MSS_V4 = 536;
/** MSS assumed when an IPv6 guest sends none (1280-byte minimum MTU, RFC 8200 §5). */
export const DEFAULT_MSS_V6 = 1220;
/** Initial retransmission timeout (RFC 6298 §2 uses 1 s; the guest is one hop away: Linux's 200 ms minimum). */
export const RTO_INITIAL_MS = 200;
/** Largest retransmission timeout (RFC 6298 §2.5). */
export const RTO_MAX_MS = 60_000;
/**
 * Timeouts in a row without an answer from the guest — retransmissions, SYN retries,
 * zero-window probes, and every expiry while no link exists (the front-end is gone
 * or its rings are stopped) — after which a flow is given up and its host socket
 * reset. The timeouts start at {@link RTO_INITIAL_MS} and double, so the last one
 * expires 200 ms × (2^9 − 1) = 102.2 s after the first was armed: a flow of a guest
 * that is gone is released within two minutes (passt: 74–130 s).
 */
export const MAX_RETRIES = 8;
/** Time allowed for the host connect before the guest gets a RST. */
export const CONNECT_TIMEOUT_MS = 10_000;
/** Idle time after which an established flow is reset both ways (passt: 2 h). */
export const IDLE_TIMEOUT_MS = 2 * 3600 * 1000;
/** How long a closed flow lingers to re-ACK retransmitted FINs. */
export const LINGER_MS = 2_000;

/** Flow states. */
export const TcpState = {
  /** Guest SYN received, host connect in progress. */
  Connecting: 0,
  /** SYN-ACK sent to the guest, waiting for its ACK. */
  SynAckSent: 1,
  /** Inbound: SYN sent to the guest, waiting for its SYN-ACK. */
  SynSent: 2,
  /** Data may flow (including half-closed directions). */
  Established: 3,
  /** Finished; kept briefly to answer retransmitted FINs. */
  Closed: 4,
} as const;
/** One of {@link TcpState}. */
export type TcpState = typeof TcpState[keyof typeof TcpState];

/** Whether sequence number `a` is before `b` (modulo 2^32, RFC 9293 §3.4). */
export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}
/** Whether `a` is before or at `b`. */
export function seqLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}
/** `a - b` as a signed 32-bit distance. */
export function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}

/**
 * One translated connection; see the module comment. Its byte counts: payload from the
 * guest written into the host socket, payload from the host acknowledged by the guest.
 */
export class TcpFlow extends CountedFlowFields {
  state: TcpState = TcpState.Connecting;
  conn: HostConnection | null = null;
  /** Host-side target or peer, for logs. */
  hostName = "";
  hostPort = 0;
  /**
   * Frozen for a migration (host socket in repair mode): guest segments wait (the
   * guest sends them again) until the flow is thawed or has moved.
   */
  frozen = false;
  closed = false;
  /** Opened by a host peer on a forwarded port (else by the guest), for logs. */
  inbound = false;
  /** The end was logged (at the orderly close, before the linger). */
  endLogged = false;

  // ---- guest → host
  /** Next sequence number expected from the guest: everything before it is in the host socket. */
  rcvNxt = 0;
  /** Right edge of the window last advertised to the guest. */
  rcvWndRight = 0;
  guestFin = false;
  /** The guest's FIN was passed on (shutdown done) and may be acknowledged. */
  guestFinDone = false;
  ourShift = 0;
  guestShift = 0;
  /** An ACK is owed to the guest at the end of the batch. */
  ackDue = false;
  /** Room in the host socket's send buffer when last asked (-1: ask again), and rcvNxt then. */
  room = -1;
  roomAt = 0;
  /** The window was low when last advertised: send an update once the host socket drains. */
  windowUpdateDue = false;
  /** Start of the flow's current challenge ACK interval, and the ACKs sent in it (challenge_ack.ts). */
  challengeSince = -Infinity;
  challengeAcks = 0;
  /**
   * Bytes already acknowledged to the guest that the host socket has not taken yet:
   * the end of a migrated send queue that did not fit the restored socket. Sent
   * before any new guest data; null almost always.
   */
  pendingToHost: Uint8Array | null = null;

  // ---- host → guest
  iss = 0;
  /**
   * First byte the guest has not acknowledged. The host socket's receive queue starts
   * {@link discardOwed} bytes before it: acknowledged bytes leave the kernel at the end
   * of the batch (host_side.ts settleDiscards).
   */
  sndUna = 0;
  /** Bytes the guest acknowledged this batch, still in the host socket's receive queue. */
  discardOwed = 0;
  sndNxt = 0;
  sndMax = 0;
  /** Sequence after the highest data byte sent (sndMax without a FIN). */
  dataMax = 0;
  /** Sequence after the host's last byte, once its end of stream was seen. */
  dataEnd = 0;
  sndWndRight = 0;
  mss = DEFAULT_MSS_V4;
  hostEof = false;
  /**
   * The host socket had nothing past what was sent when last peeked: no peek for new
   * data until its next readable event (retransmissions still peek).
   */
  hostDrained = false;
  /**
   * The last peek filled all the room it was given (the host socket had at least that
   * much): the next push may reserve a run of frames for the guest's whole window.
   * After a short peek one frame goes first, so that a short message does not take a
   * window's worth of the guest's buffers only to give them back.
   */
  lastPeekFull = false;
  /**
   * The flow hash of its frames toward the guest (src/tap/flow_hash.ts: which receive
   * queue of a multiqueue guest they go to), computed at the first data segment; -1
   * until then. The addresses and ports it hashes never change.
   */
  toGuestHash = -1;
  /** The host socket signalled the peer's FIN or a hang-up (its end of stream is near). */
  hostHungUp = false;
  finSent = false;
  finAcked = false;
  /** No room toward the guest: waiting for the link's writable callback. */
  blocked = false;
  dupAcks = 0;
  /** Highest sequence sent when the last go-back-N started (no new one before it is acked). */
  recover = 0;

  // ---- timer
  timerAt = Infinity;
  /** Position in the timer heap, or -1. */
  heapIndex = -1;
  rto = RTO_INITIAL_MS;
  retries = 0;
  lastActivity = 0;

  // ---- statistics (read by TcpTranslator.describeFlows)
  /** When the flow was created (clock ms). */
  createdAt = 0;
}
