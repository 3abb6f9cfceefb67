/**
 * vhost-user message framing: reassembles messages from a nonblocking stream socket
 * (a message may arrive in several pieces; its fds arrive with its first bytes) and
 * encodes replies. Knows the wire layout, nothing of what the messages mean.
 *
 * Spec: QEMU docs/interop/vhost-user.rst, "Message Specification".
 *
 * @module
 */

import {
  DEVICE_STATE_PARAMS_SIZE,
  FLAGS_NEED_REPLY,
  FLAGS_REPLY,
  FLAGS_VERSION,
  FLAGS_VERSION_MASK,
  HEADER_FLAGS,
  HEADER_REQUEST,
  HEADER_SIZE,
  HEADER_SIZE_FIELD,
  MAX_FDS_PER_MESSAGE,
  MAX_PAYLOAD_SIZE,
  MEMORY_TABLE_MAX_SIZE,
  Request,
  requestName,
  SINGLE_REGION_SIZE,
  U64_PAYLOAD_SIZE,
  VRING_ADDR_SIZE,
  VRING_STATE_SIZE,
} from "./protocol.ts";

/** What one nonblocking receive produced. */
export type ReceiveOutcome =
  /** `bytes` > 0 bytes were stored; `fds` received with them were appended to the caller's list. */
  | { readonly kind: "data"; readonly bytes: number }
  /** Nothing to read now (EAGAIN). */
  | { readonly kind: "pending" }
  /** The peer closed the connection. */
  | { readonly kind: "eof" };

/** The byte stream under the framer: a nonblocking unix socket in the daemon, a script in tests. */
export interface MessageChannel {
  /**
   * Reads at most `into.length` bytes without blocking; file descriptors that came
   * with them are pushed onto `fds` (the caller then owns them).
   * @throws Error on a socket error other than EAGAIN
   */
  receive(into: Uint8Array, fds: number[]): ReceiveOutcome;
  /**
   * Writes all of `data` in one send without blocking.
   * @throws Error naming the failed condition when the write fails or is short
   */
  send(data: Uint8Array): void;
}

/** The peer is gone (EPIPE, ECONNRESET): a disconnect, not a failure. */
export class ConnectionClosedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConnectionClosedError";
  }
}

/** A protocol violation by the front-end: the connection must be closed. */
export class ProtocolError extends Error {
  /** The request being handled (0 when the header was not yet understood). */
  readonly request: number;
  constructor(request: number, message: string) {
    super(message);
    this.name = "ProtocolError";
    this.request = request;
  }
}

/** One received message; the handler takes ownership of `fds`. */
export interface Message {
  /** Request code (see `Request`). */
  request: number;
  /** Header flags. */
  flags: number;
  /** Payload size in bytes. */
  size: number;
  /** Little-endian view of exactly `size` payload bytes. */
  payload: DataView;
  /** File descriptors received with the message; the handler takes ownership. */
  fds: number[];
}

/** What {@link MessageFramer.poll} produced. */
export type FrameOutcome =
  | { readonly kind: "message"; readonly message: Message }
  | { readonly kind: "pending" }
  | { readonly kind: "eof"; readonly midMessage: boolean; readonly detail: string };

/**
 * Largest payload a request may carry, checked from the header before any payload
 * byte is read. Requests we do not implement may carry up to MAX_PAYLOAD_SIZE so
 * that they can be skipped without losing the stream.
 */
export function maxPayloadSize(request: number): number {
  switch (request) {
    case Request.GET_FEATURES:
    case Request.GET_PROTOCOL_FEATURES:
    case Request.SET_OWNER:
    case Request.RESET_OWNER:
    case Request.GET_QUEUE_NUM:
    case Request.GET_MAX_MEM_SLOTS:
      return U64_PAYLOAD_SIZE; // these carry nothing; QEMU sends size 0, tolerate a u64
    case Request.SET_FEATURES:
    case Request.SET_PROTOCOL_FEATURES:
    case Request.SET_VRING_KICK:
    case Request.SET_VRING_CALL:
    case Request.SET_VRING_ERR:
    case Request.NET_SET_MTU:
    case Request.SEND_RARP:
      return U64_PAYLOAD_SIZE;
    case Request.SET_DEVICE_STATE_FD:
      return DEVICE_STATE_PARAMS_SIZE;
    case Request.CHECK_DEVICE_STATE:
      return U64_PAYLOAD_SIZE; // carries nothing; tolerate a u64 as for the other queries
    case Request.SET_VRING_NUM:
    case Request.SET_VRING_BASE:
    case Request.GET_VRING_BASE:
    case Request.SET_VRING_ENABLE:
      return VRING_STATE_SIZE;
    case Request.SET_VRING_ADDR:
      return VRING_ADDR_SIZE;
    case Request.SET_MEM_TABLE:
      return MEMORY_TABLE_MAX_SIZE;
    case Request.ADD_MEM_REG:
    case Request.REM_MEM_REG:
      return SINGLE_REGION_SIZE;
    default:
      return MAX_PAYLOAD_SIZE;
  }
}

/**
 * Reassembles messages from a {@link MessageChannel}. Keeps a partial message across
 * calls; reads exactly the header, then exactly the payload, so that fds sent with
 * the next message are never consumed early.
 */
export class MessageFramer {
  readonly #channel: MessageChannel;
  readonly #header = new Uint8Array(HEADER_SIZE);
  readonly #headerView = new DataView(this.#header.buffer);
  readonly #payload = new Uint8Array(MAX_PAYLOAD_SIZE);
  #headerFill = 0;
  #payloadFill = 0;
  #payloadSize = -1; // -1: header not complete
  #fds: number[] = [];

  constructor(channel: MessageChannel) {
    this.#channel = channel;
  }

  /** True while part of a message has been read. */
  get midMessage(): boolean {
    return this.#headerFill > 0;
  }

  /**
   * Fds received with a message that was never completed; the caller must close
   * them when the connection ends. Emptied by the call.
   */
  takeOrphanFds(): number[] {
    const fds = this.#fds;
    this.#fds = [];
    return fds;
  }

  /**
   * Reads until one whole message is available, the socket would block, or EOF.
   * @throws ProtocolError on a bad header (version, size larger than the request allows);
   *   fds received so far stay available through {@link takeOrphanFds}
   */
  poll(): FrameOutcome {
    while (this.#headerFill < HEADER_SIZE) {
      const got = this.#channel.receive(this.#header.subarray(this.#headerFill), this.#fds);
      if (got.kind === "pending") return got;
      if (got.kind === "eof") return this.#eof();
      this.#headerFill += got.bytes;
      this.#checkFdCount();
    }
    if (this.#payloadSize < 0) this.#payloadSize = this.#checkHeader();
    while (this.#payloadFill < this.#payloadSize) {
      const got = this.#channel.receive(
        this.#payload.subarray(this.#payloadFill, this.#payloadSize),
        this.#fds,
      );
      if (got.kind === "pending") return got;
      if (got.kind === "eof") return this.#eof();
      this.#payloadFill += got.bytes;
      this.#checkFdCount();
    }
    // control messages are rare: a fresh object each, with its own copy of the payload
    const message: Message = {
      request: this.#headerView.getUint32(HEADER_REQUEST, true),
      flags: this.#headerView.getUint32(HEADER_FLAGS, true),
      size: this.#payloadSize,
      payload: new DataView(this.#payload.slice(0, this.#payloadSize).buffer),
      fds: this.#fds,
    };
    this.#fds = [];
    this.#headerFill = 0;
    this.#payloadFill = 0;
    this.#payloadSize = -1;
    return { kind: "message", message };
  }

  /**
   * Each read may bring up to MAX_FDS_PER_MESSAGE fds: a front-end that splits one
   * message over many small writes, each with fds, would otherwise make us hold
   * thousands (EMFILE for every session). They stay in #fds for takeOrphanFds().
   */
  #checkFdCount(): void {
    if (this.#fds.length <= MAX_FDS_PER_MESSAGE) return;
    const request = this.#headerFill >= HEADER_SIZE
      ? this.#headerView.getUint32(HEADER_REQUEST, true)
      : 0;
    throw new ProtocolError(
      request,
      `${this.#fds.length} fds arrived with one message, more than the ${MAX_FDS_PER_MESSAGE} allowed`,
    );
  }

  #checkHeader(): number {
    const request = this.#headerView.getUint32(HEADER_REQUEST, true);
    const flags = this.#headerView.getUint32(HEADER_FLAGS, true);
    const size = this.#headerView.getUint32(HEADER_SIZE_FIELD, true);
    if ((flags & FLAGS_VERSION_MASK) !== FLAGS_VERSION) {
      throw new ProtocolError(
        request,
        `${requestName(request)}: header version ${
          flags & FLAGS_VERSION_MASK
        } is not ${FLAGS_VERSION}`,
      );
    }
    const max = maxPayloadSize(request);
    if (size > max) {
      throw new ProtocolError(
        request,
        `${requestName(request)}: header payload size ${size} exceeds the largest valid ${max}`,
      );
    }
    return size;
  }

  #eof(): FrameOutcome {
    const midMessage = this.#headerFill > 0;
    const detail = !midMessage
      ? "front-end closed the connection"
      : this.#headerFill < HEADER_SIZE
      ? `front-end closed the connection after ${this.#headerFill} of ${HEADER_SIZE} header bytes`
      : `front-end closed the connection after ${this.#payloadFill} of ${this.#payloadSize} payload bytes of ${
        requestName(this.#headerView.getUint32(HEADER_REQUEST, true))
      }`;
    return { kind: "eof", midMessage, detail };
  }
}

/** Reads a u64 payload field as a number, or throws when it is ≥ 2^53. */
export function readU64(view: DataView, offset: number, what: string, request: number): number {
  const low = view.getUint32(offset, true);
  const high = view.getUint32(offset + 4, true);
  if (high >= 0x200000) {
    throw new ProtocolError(
      request,
      `${requestName(request)}: ${what} 0x${(high * 2 ** 32 + low).toString(16)} is not below 2^53`,
    );
  }
  return high * 2 ** 32 + low;
}

/** Reads a u64 payload field as a bigint (feature masks). */
export function readU64Big(view: DataView, offset: number): bigint {
  return view.getBigUint64(offset, true);
}

/** Encodes replies into one reused buffer and sends each with a single write. */
export class ReplyWriter {
  readonly #channel: MessageChannel;
  readonly #buffer = new Uint8Array(HEADER_SIZE + VRING_ADDR_SIZE);
  readonly #view = new DataView(this.#buffer.buffer);

  constructor(channel: MessageChannel) {
    this.#channel = channel;
  }

  /** Sends a reply carrying a u64 (GET_FEATURES, REPLY_ACK status, ...). */
  sendU64(request: number, value: bigint): void {
    this.#header(request, U64_PAYLOAD_SIZE);
    this.#view.setBigUint64(HEADER_SIZE, value, true);
    this.#send(request, U64_PAYLOAD_SIZE);
  }

  /** Sends a reply carrying a vring state (GET_VRING_BASE). */
  sendVringState(request: number, index: number, num: number): void {
    this.#header(request, VRING_STATE_SIZE);
    this.#view.setUint32(HEADER_SIZE, index, true);
    this.#view.setUint32(HEADER_SIZE + 4, num, true);
    this.#send(request, VRING_STATE_SIZE);
  }

  #header(request: number, size: number): void {
    this.#view.setUint32(HEADER_REQUEST, request, true);
    this.#view.setUint32(HEADER_FLAGS, FLAGS_VERSION | FLAGS_REPLY, true);
    this.#view.setUint32(HEADER_SIZE_FIELD, size, true);
  }

  // Header and payload go out in one write: there is no separate header write whose
  // failure a payload write could hide.
  #send(request: number, size: number): void {
    try {
      this.#channel.send(this.#buffer.subarray(0, HEADER_SIZE + size));
    } catch (error) {
      if (error instanceof ConnectionClosedError) throw error;
      throw new ProtocolError(
        request,
        `${requestName(request)}: cannot send the ${HEADER_SIZE + size}-byte reply: ${
          (error as Error).message
        }`,
      );
    }
  }
}

/** Tells whether the front-end asked for a REPLY_ACK (flags bit 3). */
export function needsReply(flags: number): boolean {
  return (flags & FLAGS_NEED_REPLY) !== 0;
}
