/**
 * The device state tpasst hands over in a vhost-user live migration
 * (`VHOST_USER_SET_DEVICE_STATE_FD`, QEMU docs/interop/vhost-user.rst "Migrating
 * back-end state"): what the target needs to carry on as if it had been the source
 * all along. The source encodes it, QEMU carries it inside its migration stream, the
 * target decodes it. The target treats it as untrusted input: every count and length
 * is bounded, every field range-checked, and the whole stream covered by a CRC-32, so
 * that a truncated, oversized or altered stream is refused with a message saying
 * what is wrong, before anything of it is used.
 *
 * Format, version 1. Integers are big-endian (network order); addresses are raw
 * bytes in network order, IPv4 in the first 4 of 16 bytes.
 *
 * ```
 * Header (16 bytes)
 *   0  u32  magic 0x74705354 ("tpST")
 *   4  u16  version (1)
 *   6  u16  flags, 0 (reserved)
 *   8  u32  TCP flow count (≤ MAX_MIGRATED_FLOWS)
 *  12  u32  reserved, 0
 * Guest as seen (48 bytes)
 *   0  u8[6]  guest MAC (ff:ff:ff:ff:ff:ff: none seen yet)
 *   6  u16    reserved, 0
 *   8  u32    guest IPv4 address seen (0: none)
 *  12  u8[16] guest global IPv6 address seen (all zero: none)
 *  28  u8[16] guest link-local IPv6 address seen (all zero: none)
 *  44  u32    reserved, 0
 * TCP flow records, `count` times: FLOW_RECORD_SIZE bytes, then the send queue's
 * bytes, then the receive queue's bytes (lengths in the record)
 *   0  u8   family (4 or 6)
 *   1  u8   flags: bit 0 inbound (accepted by a host listener), bit 1 the host
 *           socket is IPv6 (its addresses take 16 bytes, else 4)
 *   2  u16  guest port
 *   4  u16  remote port (as the guest addresses it)
 *   6  u16  host socket's local port
 *   8  u16  host socket's peer port
 *  10  u16  MSS toward the guest (64..65535)
 *  12  u8[16] guest address
 *  28  u8[16] remote address (as the guest addresses it)
 *  44  u8[16] host socket's local address
 *  60  u8[16] host socket's peer address
 *  76  u32  guest side: next sequence expected from the guest (rcvNxt)
 *  80  u32  guest side: right edge of the window advertised to the guest
 *  84  u32  guest side: our initial sequence number toward the guest
 *  88  u32  guest side: first sequence the guest has not acknowledged (sndUna)
 *  92  u32  guest side: right edge of the guest's window
 *  96  u8   guest side: our window scale shift (0..14)
 *  97  u8   guest side: the guest's window scale shift (0..14)
 *  98  u8   host socket: send window scale (0..14)
 *  99  u8   host socket: receive window scale (0..14)
 * 100  u32  host socket: sequence of the first byte in the send queue
 * 104  u32  host socket: sequence of the first byte in the receive queue
 * 108  u32  host socket: MSS (TCP_MAXSEG, 1..65535)
 * 112  u32  host socket: options (OPTION_* bits: timestamps, SACK, window scaling)
 * 116  u32  host socket: timestamp clock (TCP_TIMESTAMP)
 * 120  u32  host socket: snd_wl1      } struct tcp_repair_window
 * 124  u32  host socket: snd_wnd      }
 * 128  u32  host socket: max_window   }
 * 132  u32  host socket: rcv_wnd      }
 * 136  u32  host socket: rcv_wup      }
 * 140  u32  send queue length (≤ MAX_QUEUE_BYTES)
 * 144  u32  receive queue length (≤ MAX_QUEUE_BYTES)
 * 148  u32  guest side: sequence after the highest byte sent to the guest (at most
 *           sndUna + receive queue length)
 * Trailer (8 bytes)
 *   0  u32  magic 0x74705345 ("tpSE")
 *   4  u32  CRC-32 (IEEE 802.3) of every byte before the trailer's CRC
 * ```
 *
 * The receive queue holds the bytes from the host peer the guest has not
 * acknowledged yet (the translator keeps them there until it does, see
 * tcp/translator.ts); the send queue holds the bytes sent toward the peer and not
 * yet acknowledged by it, or not yet sent.
 *
 * @module
 */

/** First bytes of a state stream: "tpST". */
export const STATE_MAGIC = 0x74705354;
/** Trailer magic: "tpSE". */
export const STATE_END_MAGIC = 0x74705345;
/** The format version this code writes and reads. */
export const STATE_VERSION = 1;

/** Header size in bytes. */
export const HEADER_SIZE = 16;
const HEADER_MAGIC = 0;
const HEADER_VERSION = 4;
const HEADER_FLAGS = 6;
const HEADER_FLOW_COUNT = 8;
const HEADER_RESERVED = 12;

/** Guest section size in bytes. */
export const GUEST_SIZE = 48;
const GUEST_MAC = 0;
const GUEST_RESERVED_1 = 6;
const GUEST_IPV4 = 8;
const GUEST_IPV6 = 12;
const GUEST_IPV6_LINK_LOCAL = 28;
const GUEST_RESERVED_2 = 44;

/** Fixed part of a TCP flow record in bytes. */
export const FLOW_RECORD_SIZE = 152;
const FLOW_FAMILY = 0;
const FLOW_FLAGS = 1;
const FLOW_GUEST_PORT = 2;
const FLOW_REMOTE_PORT = 4;
const FLOW_LOCAL_PORT = 6;
const FLOW_PEER_PORT = 8;
const FLOW_GUEST_MSS = 10;
const FLOW_GUEST_ADDRESS = 12;
const FLOW_REMOTE_ADDRESS = 28;
const FLOW_LOCAL_ADDRESS = 44;
const FLOW_PEER_ADDRESS = 60;
const FLOW_RCV_NXT = 76;
const FLOW_RCV_WND_RIGHT = 80;
const FLOW_ISS = 84;
const FLOW_SND_UNA = 88;
const FLOW_SND_WND_RIGHT = 92;
const FLOW_OUR_SHIFT = 96;
const FLOW_GUEST_SHIFT = 97;
const FLOW_SND_WSCALE = 98;
const FLOW_RCV_WSCALE = 99;
const FLOW_SEND_SEQ = 100;
const FLOW_RECV_SEQ = 104;
const FLOW_SOCKET_MSS = 108;
const FLOW_OPTIONS = 112;
const FLOW_TIMESTAMP = 116;
const FLOW_SND_WL1 = 120;
const FLOW_SND_WND = 124;
const FLOW_MAX_WINDOW = 128;
const FLOW_RCV_WND = 132;
const FLOW_RCV_WUP = 136;
const FLOW_SEND_QUEUE_LENGTH = 140;
const FLOW_RECV_QUEUE_LENGTH = 144;
const FLOW_SND_MAX = 148;

/** Flag bit of a flow record: the connection came from a host listener. */
const FLOW_FLAG_INBOUND = 1;
/** Flag bit of a flow record: the host socket is IPv6. */
const FLOW_FLAG_HOST_IPV6 = 2;
const KNOWN_FLOW_FLAGS = FLOW_FLAG_INBOUND | FLOW_FLAG_HOST_IPV6;

/** Trailer size in bytes. */
export const TRAILER_SIZE = 8;

/** Most TCP flows one state may carry (the flow table's default limit). */
export const MAX_MIGRATED_FLOWS = 16384;
/**
 * Most bytes one socket queue may carry: a send queue is bounded by the send buffer
 * tpasst fixes (4 MiB asked, doubled by the kernel) or by net.ipv4.tcp_wmem's maximum
 * where autotuned, a receive queue by net.ipv4.tcp_rmem's maximum (autotuned; 6 MiB
 * by default) or by a restored socket's fixed buffer; 32 MiB covers the defaults with
 * room to spare (hosts tuned past it have such flows refused by the target).
 */
export const MAX_QUEUE_BYTES = 32 * 1024 * 1024;
/** Most bytes a whole state stream may have; the target stops reading beyond. */
export const MAX_STATE_BYTES = 256 * 1024 * 1024;
/** Largest TCP window scale shift (RFC 7323 §2.3). */
export const MAX_WINDOW_SCALE = 14;
/** Smallest MSS the translator uses toward the guest. */
const MIN_GUEST_MSS = 64;

/** Host socket option bits of a flow record (mirroring TCP_INFO's tcpi_options). */
export const OPTION_TIMESTAMPS = 1;
/** SACK was negotiated. */
export const OPTION_SACK = 2;
/** Window scaling was negotiated. */
export const OPTION_WSCALE = 4;
const KNOWN_OPTIONS = OPTION_TIMESTAMPS | OPTION_SACK | OPTION_WSCALE;

/** What the stack learnt about the guest from its frames. */
export interface MigratedGuest {
  /** The guest's MAC as a 48-bit number, or null when none was seen. */
  mac: number | null;
  /** The guest's IPv4 address seen, 0 for none. */
  ipv4: number;
  /** The guest's global IPv6 address seen (16 bytes), or null. */
  ipv6: Uint8Array | null;
  /** The guest's link-local IPv6 address seen (16 bytes), or null. */
  ipv6LinkLocal: Uint8Array | null;
}

/** A host socket's TCP state as dumped in repair mode (see tcp/repair.ts). */
export interface TcpSocketRepairState {
  /** Sequence number of the first byte in the send queue (TCP_QUEUE_SEQ − SIOCOUTQ). */
  sendSeq: number;
  /** Sequence number of the first byte in the receive queue (TCP_QUEUE_SEQ − SIOCINQ). */
  recvSeq: number;
  /** TCP_MAXSEG. */
  mss: number;
  /** Send window scale (TCP_INFO tcpi_snd_wscale). */
  sndWscale: number;
  /** Receive window scale (TCP_INFO tcpi_rcv_wscale). */
  rcvWscale: number;
  /** OPTION_* bits. */
  options: number;
  /** TCP_TIMESTAMP: the socket's timestamp clock. */
  timestamp: number;
  /** struct tcp_repair_window. */
  sndWl1: number;
  sndWnd: number;
  maxWindow: number;
  rcvWnd: number;
  rcvWup: number;
  /** Bytes sent toward the peer and not acknowledged by it, or not sent yet. */
  sendQueue: Uint8Array;
  /** Bytes received from the peer that the guest has not acknowledged. */
  recvQueue: Uint8Array;
}

/** One TCP connection in the state. */
export interface MigratedTcpFlow {
  family: 4 | 6;
  inbound: boolean;
  /** The guest's address (4 or 16 bytes by family). */
  guestAddress: Uint8Array;
  guestPort: number;
  /** The remote address as the guest addresses it. */
  remoteAddress: Uint8Array;
  remotePort: number;
  /** The host socket's local address (4 or 16 bytes; may differ in family from the guest's). */
  localAddress: Uint8Array;
  localPort: number;
  /** The host socket's peer. */
  peerAddress: Uint8Array;
  peerPort: number;
  /** The translator's sequence state toward the guest. */
  rcvNxt: number;
  rcvWndRight: number;
  iss: number;
  sndUna: number;
  /** Sequence after the highest byte sent to the guest (sndUna .. sndUna + receive queue). */
  sndMax: number;
  sndWndRight: number;
  ourShift: number;
  guestShift: number;
  guestMss: number;
  socket: TcpSocketRepairState;
}

/** A whole device state. */
export interface MigrationState {
  guest: MigratedGuest;
  tcp: MigratedTcpFlow[];
}

/** A state stream that cannot be used; the message says why. */
export class MigrationStateError extends Error {
  constructor(message: string) {
    super(`Invalid device state: ${message}`);
    this.name = "MigrationStateError";
  }
}

// ---------------------------------------------------------------- CRC-32

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (IEEE 802.3, reflected, as zlib's crc32) of `bytes`. */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// ---------------------------------------------------------------- encoding

/** The encoded size of `state` in bytes. */
export function encodedSize(state: MigrationState): number {
  let size = HEADER_SIZE + GUEST_SIZE + TRAILER_SIZE;
  for (const f of state.tcp) {
    size += FLOW_RECORD_SIZE + f.socket.sendQueue.length + f.socket.recvQueue.length;
  }
  return size;
}

/**
 * Encodes `state` in the format above.
 * @throws RangeError when a field is out of its range (a bug on the source)
 */
export function encodeMigrationState(state: MigrationState): Uint8Array {
  if (state.tcp.length > MAX_MIGRATED_FLOWS) {
    throw new RangeError(
      `Cannot encode ${state.tcp.length} TCP flows: more than ${MAX_MIGRATED_FLOWS}`,
    );
  }
  const size = encodedSize(state);
  if (size > MAX_STATE_BYTES) {
    throw new RangeError(`Cannot encode a ${size}-byte state: more than ${MAX_STATE_BYTES}`);
  }
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(HEADER_MAGIC, STATE_MAGIC);
  view.setUint16(HEADER_VERSION, STATE_VERSION);
  view.setUint16(HEADER_FLAGS, 0);
  view.setUint32(HEADER_FLOW_COUNT, state.tcp.length);
  view.setUint32(HEADER_RESERVED, 0);
  let at = HEADER_SIZE;
  const g = state.guest;
  const mac = g.mac ?? 0xffffffffffff;
  for (let i = 0; i < 6; i++) out[at + GUEST_MAC + i] = Math.floor(mac / 2 ** (8 * (5 - i))) & 0xff;
  view.setUint32(at + GUEST_IPV4, g.ipv4 >>> 0);
  if (g.ipv6) out.set(checkedAddress(g.ipv6, 16, "guest IPv6"), at + GUEST_IPV6);
  if (g.ipv6LinkLocal) {
    out.set(
      checkedAddress(g.ipv6LinkLocal, 16, "guest link-local IPv6"),
      at + GUEST_IPV6_LINK_LOCAL,
    );
  }
  at += GUEST_SIZE;
  for (const f of state.tcp) at = encodeFlow(out, view, at, f);
  view.setUint32(at, STATE_END_MAGIC);
  view.setUint32(at + 4, crc32(out.subarray(0, at + 4)));
  return out;
}

function checkedAddress(address: Uint8Array, length: number, what: string): Uint8Array {
  if (address.length !== length) {
    throw new RangeError(`Cannot encode ${what}: ${address.length} bytes, not ${length}`);
  }
  return address;
}

function putAddress(out: Uint8Array, at: number, address: Uint8Array, what: string): void {
  if (address.length !== 4 && address.length !== 16) {
    throw new RangeError(`Cannot encode ${what}: ${address.length} bytes, not 4 or 16`);
  }
  out.set(address, at);
}

function checkRange(value: number, min: number, max: number, what: string): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`Cannot encode ${what} ${value}: not in ${min}..${max}`);
  }
  return value;
}

function encodeFlow(out: Uint8Array, view: DataView, at: number, f: MigratedTcpFlow): number {
  const s = f.socket;
  const addressLength = f.family === 4 ? 4 : 16;
  view.setUint8(at + FLOW_FAMILY, f.family);
  view.setUint8(
    at + FLOW_FLAGS,
    (f.inbound ? FLOW_FLAG_INBOUND : 0) | (f.localAddress.length === 16 ? FLOW_FLAG_HOST_IPV6 : 0),
  );
  view.setUint16(at + FLOW_GUEST_PORT, checkRange(f.guestPort, 1, 65535, "guest port"));
  view.setUint16(at + FLOW_REMOTE_PORT, checkRange(f.remotePort, 1, 65535, "remote port"));
  view.setUint16(at + FLOW_LOCAL_PORT, checkRange(f.localPort, 1, 65535, "local port"));
  view.setUint16(at + FLOW_PEER_PORT, checkRange(f.peerPort, 1, 65535, "peer port"));
  view.setUint16(at + FLOW_GUEST_MSS, checkRange(f.guestMss, MIN_GUEST_MSS, 65535, "guest MSS"));
  out.set(checkedAddress(f.guestAddress, addressLength, "guest address"), at + FLOW_GUEST_ADDRESS);
  out.set(
    checkedAddress(f.remoteAddress, addressLength, "remote address"),
    at + FLOW_REMOTE_ADDRESS,
  );
  putAddress(out, at + FLOW_LOCAL_ADDRESS, f.localAddress, "local address");
  putAddress(out, at + FLOW_PEER_ADDRESS, f.peerAddress, "peer address");
  if (f.localAddress.length !== f.peerAddress.length) {
    throw new RangeError("Cannot encode a host socket whose two ends differ in family");
  }
  view.setUint32(at + FLOW_RCV_NXT, f.rcvNxt >>> 0);
  view.setUint32(at + FLOW_RCV_WND_RIGHT, f.rcvWndRight >>> 0);
  view.setUint32(at + FLOW_ISS, f.iss >>> 0);
  view.setUint32(at + FLOW_SND_UNA, f.sndUna >>> 0);
  view.setUint32(at + FLOW_SND_WND_RIGHT, f.sndWndRight >>> 0);
  const sent = (f.sndMax - f.sndUna) | 0;
  checkRange(sent, 0, s.recvQueue.length, "bytes sent to the guest and unacknowledged");
  view.setUint32(at + FLOW_SND_MAX, f.sndMax >>> 0);
  view.setUint8(at + FLOW_OUR_SHIFT, checkRange(f.ourShift, 0, MAX_WINDOW_SCALE, "our shift"));
  view.setUint8(
    at + FLOW_GUEST_SHIFT,
    checkRange(f.guestShift, 0, MAX_WINDOW_SCALE, "guest shift"),
  );
  view.setUint8(at + FLOW_SND_WSCALE, checkRange(s.sndWscale, 0, MAX_WINDOW_SCALE, "snd_wscale"));
  view.setUint8(at + FLOW_RCV_WSCALE, checkRange(s.rcvWscale, 0, MAX_WINDOW_SCALE, "rcv_wscale"));
  view.setUint32(at + FLOW_SEND_SEQ, s.sendSeq >>> 0);
  view.setUint32(at + FLOW_RECV_SEQ, s.recvSeq >>> 0);
  view.setUint32(at + FLOW_SOCKET_MSS, checkRange(s.mss, 1, 65535, "socket MSS"));
  view.setUint32(at + FLOW_OPTIONS, checkRange(s.options, 0, KNOWN_OPTIONS, "options"));
  view.setUint32(at + FLOW_TIMESTAMP, s.timestamp >>> 0);
  view.setUint32(at + FLOW_SND_WL1, s.sndWl1 >>> 0);
  view.setUint32(at + FLOW_SND_WND, s.sndWnd >>> 0);
  view.setUint32(at + FLOW_MAX_WINDOW, s.maxWindow >>> 0);
  view.setUint32(at + FLOW_RCV_WND, s.rcvWnd >>> 0);
  view.setUint32(at + FLOW_RCV_WUP, s.rcvWup >>> 0);
  view.setUint32(
    at + FLOW_SEND_QUEUE_LENGTH,
    checkRange(s.sendQueue.length, 0, MAX_QUEUE_BYTES, "send queue length"),
  );
  view.setUint32(
    at + FLOW_RECV_QUEUE_LENGTH,
    checkRange(s.recvQueue.length, 0, MAX_QUEUE_BYTES, "receive queue length"),
  );
  at += FLOW_RECORD_SIZE;
  out.set(s.sendQueue, at);
  at += s.sendQueue.length;
  out.set(s.recvQueue, at);
  return at + s.recvQueue.length;
}

// ---------------------------------------------------------------- decoding

/**
 * Decodes and validates a whole state stream.
 * @throws MigrationStateError naming the first problem: wrong magic or version, a
 *   truncated or overlong stream, a CRC mismatch, a field out of range
 */
export function decodeMigrationState(bytes: Uint8Array): MigrationState {
  if (bytes.length > MAX_STATE_BYTES) {
    throw new MigrationStateError(`${bytes.length} bytes exceed the limit of ${MAX_STATE_BYTES}`);
  }
  if (bytes.length < HEADER_SIZE) {
    throw new MigrationStateError(
      `truncated: ${bytes.length} bytes, shorter than the ${HEADER_SIZE}-byte header`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(HEADER_MAGIC);
  if (magic !== STATE_MAGIC) {
    throw new MigrationStateError(
      `magic 0x${magic.toString(16)} is not 0x${STATE_MAGIC.toString(16)} (not a tpasst state)`,
    );
  }
  const version = view.getUint16(HEADER_VERSION);
  if (version !== STATE_VERSION) {
    throw new MigrationStateError(
      `version ${version} is not supported (this tpasst reads version ${STATE_VERSION})`,
    );
  }
  if (bytes.length < HEADER_SIZE + GUEST_SIZE + TRAILER_SIZE) {
    throw new MigrationStateError(`truncated: ${bytes.length} bytes, no room for the trailer`);
  }
  // The CRC first: whatever else is wrong with an altered stream, say it was altered.
  const crcAt = bytes.length - 4;
  const crc = view.getUint32(crcAt);
  const computed = crc32(bytes.subarray(0, crcAt));
  const endMagic = view.getUint32(crcAt - 4);
  if (endMagic !== STATE_END_MAGIC || crc !== computed) {
    // Tell a cut-off stream from a corrupted one where we can: a complete stream
    // ends with the trailer magic.
    if (endMagic !== STATE_END_MAGIC) {
      throw new MigrationStateError(
        `truncated or overlong: the stream (${bytes.length} bytes) does not end with the trailer`,
      );
    }
    throw new MigrationStateError(
      `CRC-32 0x${computed.toString(16)} of the stream does not match 0x${
        crc.toString(16)
      } in its trailer (altered in transit)`,
    );
  }
  const flags = view.getUint16(HEADER_FLAGS);
  if (flags !== 0 || view.getUint32(HEADER_RESERVED) !== 0) {
    throw new MigrationStateError(`header flags 0x${flags.toString(16)} or reserved bits set`);
  }
  const count = view.getUint32(HEADER_FLOW_COUNT);
  if (count > MAX_MIGRATED_FLOWS) {
    throw new MigrationStateError(`${count} TCP flows exceed the limit of ${MAX_MIGRATED_FLOWS}`);
  }
  const end = crcAt - 4;
  let at = HEADER_SIZE;
  const guest = decodeGuest(bytes, view, at);
  at += GUEST_SIZE;
  const tcp: MigratedTcpFlow[] = [];
  for (let i = 0; i < count; i++) {
    if (end - at < FLOW_RECORD_SIZE) {
      throw new MigrationStateError(
        `truncated: TCP flow ${i} of ${count} needs ${FLOW_RECORD_SIZE} bytes at offset ${at}, ${
          end - at
        } left`,
      );
    }
    const { flow, next } = decodeFlow(bytes, view, at, end, i);
    tcp.push(flow);
    at = next;
  }
  if (at !== end) {
    throw new MigrationStateError(
      `${end - at} bytes after the last of ${count} TCP flows before the trailer`,
    );
  }
  return { guest, tcp };
}

function allZero(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

function decodeGuest(bytes: Uint8Array, view: DataView, at: number): MigratedGuest {
  if (view.getUint16(at + GUEST_RESERVED_1) !== 0 || view.getUint32(at + GUEST_RESERVED_2) !== 0) {
    throw new MigrationStateError("reserved bytes of the guest section are not zero");
  }
  let mac = 0;
  for (let i = 0; i < 6; i++) mac = mac * 256 + bytes[at + GUEST_MAC + i];
  const ipv6 = bytes.slice(at + GUEST_IPV6, at + GUEST_IPV6 + 16);
  const linkLocal = bytes.slice(at + GUEST_IPV6_LINK_LOCAL, at + GUEST_IPV6_LINK_LOCAL + 16);
  return {
    mac: mac === 0xffffffffffff ? null : mac,
    ipv4: view.getUint32(at + GUEST_IPV4),
    ipv6: allZero(ipv6) ? null : ipv6,
    ipv6LinkLocal: allZero(linkLocal) ? null : linkLocal,
  };
}

/** The address of a record field: 4 bytes when the rest of the 16 are zero and the family says 4. */
function decodeAddress(
  bytes: Uint8Array,
  at: number,
  length: 4 | 16,
  what: string,
  index: number,
): Uint8Array {
  if (length === 4 && !allZero(bytes.subarray(at + 4, at + 16))) {
    throw new MigrationStateError(`TCP flow ${index}: ${what} has bytes past its 4 IPv4 bytes`);
  }
  return bytes.slice(at, at + length);
}

function fieldInRange(
  value: number,
  min: number,
  max: number,
  what: string,
  index: number,
): number {
  if (value < min || value > max) {
    throw new MigrationStateError(`TCP flow ${index}: ${what} ${value} is not in ${min}..${max}`);
  }
  return value;
}

function decodeFlow(
  bytes: Uint8Array,
  view: DataView,
  at: number,
  end: number,
  index: number,
): { flow: MigratedTcpFlow; next: number } {
  const family = view.getUint8(at + FLOW_FAMILY);
  if (family !== 4 && family !== 6) {
    throw new MigrationStateError(`TCP flow ${index}: family ${family} is neither 4 nor 6`);
  }
  const flags = view.getUint8(at + FLOW_FLAGS);
  if ((flags & ~KNOWN_FLOW_FLAGS) !== 0) {
    throw new MigrationStateError(`TCP flow ${index}: unknown flags 0x${flags.toString(16)}`);
  }
  const port = (offset: number, what: string) =>
    fieldInRange(view.getUint16(at + offset), 1, 65535, what, index);
  const addressLength: 4 | 16 = family === 4 ? 4 : 16;
  // The host socket may be of the other family (an IPv6 guest flow to an IPv4 host).
  const hostLength: 4 | 16 = (flags & FLOW_FLAG_HOST_IPV6) !== 0 ? 16 : 4;
  const optionBits = view.getUint32(at + FLOW_OPTIONS);
  if ((optionBits & ~KNOWN_OPTIONS) !== 0) {
    throw new MigrationStateError(
      `TCP flow ${index}: unknown option bits 0x${optionBits.toString(16)}`,
    );
  }
  const sendLength = fieldInRange(
    view.getUint32(at + FLOW_SEND_QUEUE_LENGTH),
    0,
    MAX_QUEUE_BYTES,
    "send queue length",
    index,
  );
  const recvLength = fieldInRange(
    view.getUint32(at + FLOW_RECV_QUEUE_LENGTH),
    0,
    MAX_QUEUE_BYTES,
    "receive queue length",
    index,
  );
  const dataAt = at + FLOW_RECORD_SIZE;
  if (end - dataAt < sendLength + recvLength) {
    throw new MigrationStateError(
      `truncated: TCP flow ${index} has ${sendLength} + ${recvLength} queued bytes, ${
        end - dataAt
      } left`,
    );
  }
  const shift = (offset: number, what: string) =>
    fieldInRange(view.getUint8(at + offset), 0, MAX_WINDOW_SCALE, what, index);
  const sndUna = view.getUint32(at + FLOW_SND_UNA);
  const sndMax = view.getUint32(at + FLOW_SND_MAX);
  fieldInRange(
    (sndMax - sndUna) | 0,
    0,
    recvLength,
    "bytes sent to the guest and unacknowledged",
    index,
  );
  const flow: MigratedTcpFlow = {
    family,
    inbound: (flags & FLOW_FLAG_INBOUND) !== 0,
    guestAddress: decodeAddress(
      bytes,
      at + FLOW_GUEST_ADDRESS,
      addressLength,
      "guest address",
      index,
    ),
    guestPort: port(FLOW_GUEST_PORT, "guest port"),
    remoteAddress: decodeAddress(
      bytes,
      at + FLOW_REMOTE_ADDRESS,
      addressLength,
      "remote address",
      index,
    ),
    remotePort: port(FLOW_REMOTE_PORT, "remote port"),
    localAddress: decodeAddress(bytes, at + FLOW_LOCAL_ADDRESS, hostLength, "local address", index),
    localPort: port(FLOW_LOCAL_PORT, "local port"),
    peerAddress: decodeAddress(bytes, at + FLOW_PEER_ADDRESS, hostLength, "peer address", index),
    peerPort: port(FLOW_PEER_PORT, "peer port"),
    rcvNxt: view.getUint32(at + FLOW_RCV_NXT),
    rcvWndRight: view.getUint32(at + FLOW_RCV_WND_RIGHT),
    iss: view.getUint32(at + FLOW_ISS),
    sndUna,
    sndMax,
    sndWndRight: view.getUint32(at + FLOW_SND_WND_RIGHT),
    ourShift: shift(FLOW_OUR_SHIFT, "our window shift"),
    guestShift: shift(FLOW_GUEST_SHIFT, "guest window shift"),
    guestMss: fieldInRange(
      view.getUint16(at + FLOW_GUEST_MSS),
      MIN_GUEST_MSS,
      65535,
      "guest MSS",
      index,
    ),
    socket: {
      sendSeq: view.getUint32(at + FLOW_SEND_SEQ),
      recvSeq: view.getUint32(at + FLOW_RECV_SEQ),
      mss: fieldInRange(view.getUint32(at + FLOW_SOCKET_MSS), 1, 65535, "socket MSS", index),
      sndWscale: shift(FLOW_SND_WSCALE, "send window scale"),
      rcvWscale: shift(FLOW_RCV_WSCALE, "receive window scale"),
      options: optionBits,
      timestamp: view.getUint32(at + FLOW_TIMESTAMP),
      sndWl1: view.getUint32(at + FLOW_SND_WL1),
      sndWnd: view.getUint32(at + FLOW_SND_WND),
      maxWindow: view.getUint32(at + FLOW_MAX_WINDOW),
      rcvWnd: view.getUint32(at + FLOW_RCV_WND),
      rcvWup: view.getUint32(at + FLOW_RCV_WUP),
      sendQueue: bytes.slice(dataAt, dataAt + sendLength),
      recvQueue: bytes.slice(dataAt + sendLength, dataAt + sendLength + recvLength),
    },
  };
  return { flow, next: dataAt + sendLength + recvLength };
}
