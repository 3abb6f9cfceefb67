/**
 * A scripted guest attached to the REAL daemon: starts `bin/tpasst -f -1 -s SOCKET`
 * as a child process, connects to it over passt's stream protocol or over vhost-user
 * (the TypeScript front-end harness, tests/support/frontend/), and drives an IPv4 and an IPv6
 * {@link TestGuest} (tests/support/net/tcp_guest.ts) whose frames travel through that
 * connection. Over vhost-user, {@link VhostOptions} can also set the virtio-net header
 * of each guest frame (checksum offload) and observe the headers of received frames.
 * Used by the process-level TCP/UDP tests in tests/net/ and tests/vhost_user/.
 *
 * ```ts
 * const d = await DaemonGuest.start("vhost-user", ["-t", `127.0.0.1/${port}:8080`]);
 * const c = d.guest4.connect(TEST_GATEWAY4, hostPort);
 * ...
 * const { code, stderr } = await d.close();
 * ```
 *
 * @module
 */

import type { L4Handler } from "../../src/net/l4_handler.ts";
import { TestGuest } from "../support/net/tcp_guest.ts";
import { TEST_GUEST4, TEST_GUEST6 } from "../support/net/tcp_plan.ts";
import { ETHERTYPE_IPV4, ETHERTYPE_IPV6 } from "../../src/net/wire/ethernet.ts";
import { internetChecksum } from "../../src/net/wire/checksum.ts";
import { exists, TPASST, waitFor } from "../cli/cli_helpers.ts";
import {
  NET_HEADER_NUM_BUFFERS,
  NET_HEADER_SIZE,
  RX,
  TX,
  VhostUserFrontend,
} from "../support/frontend/vhost_user_frontend.ts";
import { REGION1_GPA } from "../support/frontend/shared_memory.ts";
import { PIPE_WOULD_BLOCK, PipeEnd } from "../../ffi/pipe_end.ts";
import { closeFd, createPipe } from "../../ffi/process.ts";
import type { UsedChain } from "../support/virtio/split_ring_driver.ts";
import { startRings, stopRings } from "../support/frontend/ring_restart.ts";
import {
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPPROTO_TCP,
  IPPROTO_UDP,
} from "../../src/net/wire/ip_protocol.ts";

/** How the test talks to the daemon. */
export type Transport = "stream" | "vhost-user";

/** Connection attempts while the daemon's socket exists but does not listen yet. */
const CONNECT_ATTEMPTS = 50;
/** Pause between connection attempts. */
const CONNECT_RETRY_MS = 20;

/** Both transports, for tests that run over each. */
export const TRANSPORTS: readonly Transport[] = ["stream", "vhost-user"];

/** The MAC the daemon uses toward the guest (TestGuest addresses its frames to it). */
const DAEMON_MAC = "9a:55:9a:55:9a:55";

/** Offset of the EtherType in an Ethernet II header (IEEE 802.3 §3.2.6). */
const ETHERTYPE_OFFSET = 12;
/** Offset of the IPv4 protocol field in a frame: Ethernet (14) + 9 (RFC 791 §3.1). */
const IPV4_PROTOCOL_OFFSET = 23;
/** Offset of the IPv6 next header field in a frame: Ethernet (14) + 6 (RFC 8200 §3). */
const IPV6_NEXT_HEADER_OFFSET = 20;

/** Length prefix of a frame on passt's stream socket: 32-bit big-endian. */
const STREAM_PREFIX = 4;

/** Harness guest memory: two regions of this size (rings in region 0, buffers in 1). */
const VHOST_REGION_SIZE = 32 * 1024 * 1024;
/** Ring size used for both queues. */
const VHOST_RING_SIZE = 256;
/** TX buffers: enough for a maximal frame plus the virtio-net header. */
const TX_SLOT_SIZE = 66_560;
const TX_SLOTS = 128;
/** RX buffers (MRG_RXBUF joins several for a large frame). */
const RX_BUFFER_SIZE = 32_768;
const RX_BUFFERS = VHOST_RING_SIZE;
/** Where RX buffers start in region 1 (after the TX slots). */
const RX_BASE_OFFSET = TX_SLOTS * TX_SLOT_SIZE;

/** How the vhost-user front-end sets up its rings (defaults: 256 RX buffers of 32 KiB, QEMU's features). */
export interface VhostOptions {
  /** RX buffers kept posted (at most the ring size, 256). */
  readonly rxBuffers?: number;
  /** Size of each RX buffer, virtio-net header included (at most 32 KiB). */
  readonly rxBufferSize?: number;
  /** Virtio features to acknowledge (e.g. without MRG_RXBUF, or with CSUM / GUEST_CSUM). */
  readonly features?: bigint;
  /**
   * Called with a copy of each guest frame before it goes on the TX ring; may alter it
   * (e.g. spoil its checksum) and returns the virtio-net header flags to send it with
   * (default 0). With NEEDS_CSUM, csum_start and csum_offset name the frame's TCP or
   * UDP checksum field, as a guest sets them (virtio 1.2 §5.1.6.2).
   */
  readonly txHeaderFlags?: (frame: Uint8Array) => number;
  /**
   * Each TX frame goes on the ring as buffers of at most this many bytes (virtio-net
   * header included), as a Linux guest gives a large segment as its headers plus
   * page-sized fragments (default: one buffer per frame).
   */
  readonly txBufferSize?: number;
  /** Called with a copy of the virtio-net header and the frame of each frame received. */
  readonly onRxFrame?: (header: Uint8Array, frame: Uint8Array) => void;
  /** Ack VHOST_USER_PROTOCOL_F_DEVICE_STATE (migration tests). */
  readonly deviceState?: boolean;
  /**
   * A device state to load during the negotiation, where QEMU 10 does on a migration's
   * destination (after the notifiers, before SET_FEATURES and the memory table).
   * Implies {@link deviceState}.
   */
  readonly loadDeviceState?: Uint8Array;
  /** Called with the SET_DEVICE_STATE_FD reply and the CHECK_DEVICE_STATE answer of that load. */
  readonly onDeviceStateLoaded?: (setReply: bigint, check: bigint) => void;
  /**
   * Runs once the daemon's socket exists, before the front-end connects (e.g. to
   * start a helper); gets the socket path and the daemon's standard error so far.
   */
  readonly beforeNegotiation?: (socketPath: string, stderr: () => string) => Promise<void>;
}

/** Pause between attempts on a pipe that would block (the daemon is another process). */
const PIPE_RETRY_MS = 2;
/** Longest a device state transfer in a test may take. */
const PIPE_DEADLINE_MS = 10_000;

/** Writes all of `bytes` into the pipe end `fd` without blocking this thread, then closes it. */
export async function writePipe(fd: number, bytes: Uint8Array): Promise<void> {
  const pipe = PipeEnd.adopt(fd);
  try {
    let at = 0;
    const deadline = Date.now() + PIPE_DEADLINE_MS;
    while (at < bytes.length) {
      const n = pipe.write(bytes.subarray(at));
      if (n === PIPE_WOULD_BLOCK) {
        if (Date.now() > deadline) throw new Error(`pipe write stuck at ${at} of ${bytes.length}`);
        await new Promise((r) => setTimeout(r, PIPE_RETRY_MS));
        continue;
      }
      at += n;
    }
  } finally {
    pipe.close();
  }
}

/** Reads the pipe end `fd` until its end of file, then closes it. */
export async function readPipe(fd: number): Promise<Uint8Array> {
  const pipe = PipeEnd.adopt(fd);
  const chunks: Uint8Array[] = [];
  try {
    const deadline = Date.now() + PIPE_DEADLINE_MS;
    for (;;) {
      const chunk = new Uint8Array(65536);
      const n = pipe.read(chunk);
      if (n === 0) break;
      if (n === PIPE_WOULD_BLOCK) {
        if (Date.now() > deadline) throw new Error("pipe read: no end of file");
        await new Promise((r) => setTimeout(r, PIPE_RETRY_MS));
        continue;
      }
      chunks.push(chunk.slice(0, n));
    }
  } finally {
    pipe.close();
  }
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** Loads `bytes` as the device state through `frontend`: the replies of the set and the check. */
export async function loadDeviceState(
  frontend: VhostUserFrontend,
  bytes: Uint8Array,
): Promise<{ setReply: bigint; check: bigint }> {
  const [readEnd, writeEnd] = createPipe();
  let setReply: bigint;
  try {
    setReply = await frontend.setDeviceStateFd(1, readEnd);
  } finally {
    closeFd(readEnd);
  }
  await writePipe(writeEnd, bytes);
  return { setReply, check: await frontend.checkDeviceState() };
}

/** virtio-net header flag: the device completes the checksum (virtio 1.2 §5.1.6). */
const NEEDS_CSUM = 1;
/** Offsets of csum_start and csum_offset (le16) in the virtio-net header (virtio 1.2 §5.1.6). */
const HEADER_CSUM_START = 6;
const HEADER_CSUM_OFFSET = 8;
/** Offset of the IPv4 protocol / IPv6 next header field after the Ethernet header (RFC 791, 8200). */
const IPV4_PROTOCOL = 9;
const IPV6_NEXT_HEADER = 6;
/** Length of the fixed IPv6 header (RFC 8200 §3). */
const IPV6_HEADER = 40;
/** Where the checksum sits inside a TCP (RFC 9293 §3.1) and a UDP (RFC 768) header. */
const TCP_CHECKSUM_AT = 16;
const UDP_CHECKSUM_AT = 6;

/**
 * Where a guest frame's TCP or UDP checksum is: `start` is the offset of the L4 header
 * in the frame, `offset` that of the checksum inside it (csum_start and csum_offset of
 * a NEEDS_CSUM header). Null for other frames (IPv6 extension headers are not followed).
 */
export function l4ChecksumField(frame: Uint8Array): { start: number; offset: number } | null {
  if (frame.length < ETHERTYPE_OFFSET + 2) return null;
  const type = (frame[ETHERTYPE_OFFSET] << 8) | frame[ETHERTYPE_OFFSET + 1];
  const ip = ETHERTYPE_OFFSET + 2;
  let start: number, protocol: number;
  if (type === ETHERTYPE_IPV4 && frame.length > ip + IPV4_PROTOCOL) {
    start = ip + (frame[ip] & 0x0f) * 4;
    protocol = frame[ip + IPV4_PROTOCOL];
  } else if (type === ETHERTYPE_IPV6 && frame.length >= ip + IPV6_HEADER) {
    start = ip + IPV6_HEADER;
    protocol = frame[ip + IPV6_NEXT_HEADER];
  } else return null;
  const offset = protocol === IPPROTO_TCP
    ? TCP_CHECKSUM_AT
    : protocol === IPPROTO_UDP
    ? UDP_CHECKSUM_AT
    : -1;
  if (offset < 0 || start + offset + 2 > frame.length) return null;
  return { start, offset };
}

/** Daemon arguments every test uses: exit with the front-end, fixed addresses and MAC. */
export const BASE_ARGS: readonly string[] = [
  "-1",
  "-a",
  "10.0.2.15/24",
  "-g",
  "10.0.2.2",
  "-a",
  "fd00::15/64",
  "-g",
  "fd00::2",
  "-M",
  DAEMON_MAC,
];

/** A frame path between the test and the daemon. */
interface FrameLink {
  /** Queues one Ethernet frame toward the daemon. */
  send(frame: Uint8Array): void;
  /** Stops moving frames and closes the connection and its resources. */
  close(): void;
}

/** passt's stream protocol over a unix socket: each frame after a 32-bit BE length. */
class StreamLink implements FrameLink {
  readonly #conn: Deno.UnixConn;
  #out: Uint8Array[] = [];
  #outBytes = 0;
  #writing = false;
  #closed = false;

  constructor(conn: Deno.UnixConn, deliver: (frame: Uint8Array) => void) {
    this.#conn = conn;
    this.#read(deliver);
  }

  send(frame: Uint8Array): void {
    if (this.#closed) return;
    const msg = new Uint8Array(STREAM_PREFIX + frame.length);
    new DataView(msg.buffer).setUint32(0, frame.length);
    msg.set(frame, STREAM_PREFIX);
    this.#out.push(msg);
    this.#outBytes += msg.length;
    if (!this.#writing) this.#write();
  }

  async #write(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#out.length > 0 && !this.#closed) {
        const batch = new Uint8Array(this.#outBytes);
        let at = 0;
        for (const m of this.#out) {
          batch.set(m, at);
          at += m.length;
        }
        this.#out = [];
        this.#outBytes = 0;
        let o = 0;
        while (o < batch.length) o += await this.#conn.write(batch.subarray(o));
      }
    } catch {
      // The daemon went away: the test notices through its own assertions.
    } finally {
      this.#writing = false;
    }
  }

  async #read(deliver: (frame: Uint8Array) => void): Promise<void> {
    let pending = new Uint8Array(0);
    const buf = new Uint8Array(1 << 18);
    for (;;) {
      const n = await this.#conn.read(buf).catch(() => null);
      if (n === null || this.#closed) return;
      const joined = new Uint8Array(pending.length + n);
      joined.set(pending);
      joined.set(buf.subarray(0, n), pending.length);
      const view = new DataView(joined.buffer);
      let o = 0;
      while (joined.length - o >= STREAM_PREFIX) {
        const len = view.getUint32(o);
        if (joined.length - o - STREAM_PREFIX < len) break;
        deliver(joined.subarray(o + STREAM_PREFIX, o + STREAM_PREFIX + len));
        o += STREAM_PREFIX + len;
      }
      pending = joined.slice(o);
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}

/**
 * vhost-user through the harness front-end: guest frames go into fixed TX slots of
 * harness memory (reclaimed from the used ring), RX buffers stay posted and are
 * re-posted as soon as their frames are read. Polled every millisecond.
 */
class VhostLink implements FrameLink {
  readonly frontend: VhostUserFrontend;
  readonly #deliver: (frame: Uint8Array) => void;
  readonly #freeTx: number[] = [];
  readonly #rxBufferSize: number;
  readonly #txHeaderFlags: ((frame: Uint8Array) => number) | null;
  readonly #onRxFrame: ((header: Uint8Array, frame: Uint8Array) => void) | null;
  #pendingTx: { frame: Uint8Array; flags: number }[] = [];
  #flushScheduled = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  #closed = false;
  /** The rings are stopped, or the new RX ring has no buffers yet: nothing is polled. */
  #paused = false;
  readonly #rxBuffers: number;
  readonly #txBufferSize: number;

  private constructor(
    frontend: VhostUserFrontend,
    deliver: (frame: Uint8Array) => void,
    rxBufferSize: number,
    options: VhostOptions,
  ) {
    this.frontend = frontend;
    this.#deliver = deliver;
    this.#rxBufferSize = rxBufferSize;
    this.#txHeaderFlags = options.txHeaderFlags ?? null;
    this.#onRxFrame = options.onRxFrame ?? null;
    this.#rxBuffers = Math.min(options.rxBuffers ?? RX_BUFFERS, RX_BUFFERS);
    this.#txBufferSize = options.txBufferSize ?? TX_SLOT_SIZE;
  }

  /** Connects to `path`, negotiates like QEMU, posts every RX buffer. */
  static async open(
    path: string,
    deliver: (frame: Uint8Array) => void,
    options: VhostOptions,
  ): Promise<VhostLink> {
    const rxBufferSize = Math.min(options.rxBufferSize ?? RX_BUFFER_SIZE, RX_BUFFER_SIZE);
    const frontend = VhostUserFrontend.connect(path, { regionSize: VHOST_REGION_SIZE });
    const state = options.loadDeviceState;
    try {
      await frontend.negotiate({
        ringSize: VHOST_RING_SIZE,
        features: options.features,
        deviceState: options.deviceState || state !== undefined,
        beforeFeatures: state === undefined ? undefined : async () => {
          const { setReply, check } = await loadDeviceState(frontend, state);
          options.onDeviceStateLoaded?.(setReply, check);
        },
      });
    } catch (e) {
      frontend.close();
      throw e;
    }
    const link = new VhostLink(frontend, deliver, rxBufferSize, options);
    for (let i = 0; i < TX_SLOTS; i++) link.#freeTx.push(REGION1_GPA + i * TX_SLOT_SIZE);
    link.postRxBuffers();
    link.#timer = setInterval(() => link.#poll(), 1);
    return link;
  }

  /** Posts every RX buffer and kicks (the guest driver filling its ring); polling resumes. */
  postRxBuffers(): void {
    for (let i = 0; i < this.#rxBuffers; i++) {
      const gpa = REGION1_GPA + RX_BASE_OFFSET + i * RX_BUFFER_SIZE;
      this.frontend.vrings[RX].addChain([{
        addr: gpa,
        length: this.#rxBufferSize,
        writable: true,
      }]);
    }
    this.frontend.kicks[RX].signal();
    this.#paused = false;
  }

  /** The guest driver unbound: both rings stopped; frames in flight are lost. */
  async stopRings(): Promise<void> {
    this.#paused = true;
    await stopRings(this.frontend);
  }

  /**
   * The guest driver bound again: new empty rings (tests/support/frontend/ring_restart.ts); the
   * RX ring stays empty, and nothing is polled, until {@link postRxBuffers}.
   */
  async startRings(): Promise<void> {
    await startRings(this.frontend, VHOST_RING_SIZE);
    this.#freeTx.length = 0;
    for (let i = 0; i < TX_SLOTS; i++) this.#freeTx.push(REGION1_GPA + i * TX_SLOT_SIZE);
  }

  send(frame: Uint8Array): void {
    if (this.#closed) return;
    const copy = frame.slice();
    this.#pendingTx.push({ frame: copy, flags: this.#txHeaderFlags?.(copy) ?? 0 });
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(() => this.#flushTx());
    }
  }

  #flushTx(): void {
    this.#flushScheduled = false;
    if (this.#closed || this.#paused) return;
    const f = this.frontend;
    for (const used of f.vrings[TX].takeUsedChains()) this.#freeTx.push(used.segments[0].addr);
    let n = 0;
    while (this.#pendingTx.length > n && this.#freeTx.length > 0) {
      const { frame, flags } = this.#pendingTx[n];
      const gpa = this.#freeTx.pop()!;
      const bytes = f.memory.view(gpa, NET_HEADER_SIZE + frame.length);
      bytes.fill(0, 0, NET_HEADER_SIZE);
      bytes[0] = flags;
      const field = (flags & NEEDS_CSUM) !== 0 ? l4ChecksumField(frame) : null;
      if (field !== null) {
        const header = new DataView(bytes.buffer, bytes.byteOffset, NET_HEADER_SIZE);
        header.setUint16(HEADER_CSUM_START, field.start, true);
        header.setUint16(HEADER_CSUM_OFFSET, field.offset, true);
      }
      bytes.set(frame, NET_HEADER_SIZE);
      const pieces = [];
      for (let at = 0; at < bytes.length; at += this.#txBufferSize) {
        const length = Math.min(this.#txBufferSize, bytes.length - at);
        pieces.push({ addr: gpa + at, length, writable: false });
      }
      if (f.vrings[TX].addChain(pieces) === null) {
        // The ring's descriptors ran out: the rest goes after the next used chains.
        this.#freeTx.push(gpa);
        break;
      }
      n++;
    }
    if (n > 0) {
      this.#pendingTx = this.#pendingTx.slice(n);
      f.kicks[TX].signal();
    }
  }

  #poll(): void {
    if (this.#closed || this.#paused) return;
    const f = this.frontend;
    const used = f.vrings[RX].takeUsedChains();
    if (used.length > 0) {
      const frames = f.rxFrames(used);
      const headers = this.#rxHeaders(used);
      for (const u of used) {
        f.vrings[RX].addChain([{
          addr: u.segments[0].addr,
          length: this.#rxBufferSize,
          writable: true,
        }]);
      }
      f.kicks[RX].signal();
      frames.forEach((frame, i) => {
        this.#onRxFrame?.(headers[i], frame);
        this.#deliver(completePartialChecksum(headers[i], frame));
      });
    }
    this.#flushTx();
  }

  /** Copies of the virtio-net headers of the frames in `used` (one per frame, MRG_RXBUF aware). */
  #rxHeaders(used: readonly UsedChain[]): Uint8Array[] {
    const headers: Uint8Array[] = [];
    for (let i = 0; i < used.length;) {
      const header = this.frontend.memory.view(used[i].segments[0].addr, NET_HEADER_SIZE).slice();
      headers.push(header);
      i += Math.max(1, header[NET_HEADER_NUM_BUFFERS] | (header[NET_HEADER_NUM_BUFFERS + 1] << 8));
    }
    return headers;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.frontend.close();
  }
}

/**
 * A frame marked NEEDS_CSUM arrives with only the pseudo-header sum in its checksum
 * field; a guest kernel trusts it (and completes it when forwarding). The scripted
 * guest checks every checksum instead, so complete it here: the one's complement of
 * the sum from csum_start to the end, stored at csum_start + csum_offset
 * (virtio 1.2 §5.1.6.4).
 */
function completePartialChecksum(header: Uint8Array, frame: Uint8Array): Uint8Array {
  if ((header[0] & NEEDS_CSUM) === 0) return frame;
  const start = header[HEADER_CSUM_START] | (header[HEADER_CSUM_START + 1] << 8);
  const field = start + (header[HEADER_CSUM_OFFSET] | (header[HEADER_CSUM_OFFSET + 1] << 8));
  if (field + 2 > frame.length) return frame;
  const complete = internetChecksum(frame, start, frame.length - start);
  frame[field] = complete >> 8;
  frame[field + 1] = complete & 0xff;
  return frame;
}

/** A daemon child process with a scripted IPv4 and IPv6 guest attached to it. */
export class DaemonGuest {
  /** The daemon process. */
  readonly process: Deno.ChildProcess;
  /** The IPv4 guest (10.0.2.15). */
  readonly guest4: TestGuest;
  /** The IPv6 guest (fd00::15). */
  readonly guest6: TestGuest;
  /** How frames travel. */
  readonly transport: Transport;
  /** ICMP and ICMPv6 frames the daemon sent (copies), oldest first: TestGuest ignores them. */
  readonly icmpFrames: Uint8Array[];
  readonly #dir: string;
  readonly #link: FrameLink;
  readonly #stderr: { text: string; done: Promise<void> };
  /** Started with -1: exits once the front-end leaves (else close() stops it with SIGTERM). */
  #oneOff = true;
  #keepGuests = false;

  private constructor(
    process: Deno.ChildProcess,
    dir: string,
    transport: Transport,
    link: FrameLink,
    guests: [TestGuest, TestGuest],
    stderr: { text: string; done: Promise<void> },
    icmpFrames: Uint8Array[],
  ) {
    this.process = process;
    this.icmpFrames = icmpFrames;
    this.#dir = dir;
    this.transport = transport;
    this.#link = link;
    [this.guest4, this.guest6] = guests;
    this.#stderr = stderr;
  }

  /** Everything the daemon wrote to standard error so far. */
  get stderr(): string {
    return this.#stderr.text;
  }

  /** Number of fds the daemon holds open. */
  fdCount(): number {
    return [...Deno.readDirSync(`/proc/${this.process.pid}/fd`)].length;
  }

  /**
   * Starts `bin/tpasst -f -s SOCKET [--vhost-user]` with {@link BASE_ARGS} and `args`,
   * connects over `transport` (vhost-user rings set up as `vhost` says) and attaches
   * the two guests (`reuse`: those of another daemon, for migration tests). With
   * `oneOff` false, BASE_ARGS's `-1` is left out: the daemon outlives the front-end
   * ({@link dropFrontend}). `wrapper` is a command line the daemon runs under (e.g.
   * setpriv dropping a capability).
   */
  static async start(
    transport: Transport,
    args: readonly string[] = [],
    vhost: VhostOptions = {},
    oneOff = true,
    reuse: { guest4: TestGuest; guest6: TestGuest } | null = null,
    wrapper: readonly string[] = [],
  ): Promise<DaemonGuest> {
    const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "tpnet" });
    const sock = `${dir}/t.sock`;
    // `wrapper` runs the daemon through another program (e.g. setpriv to drop a capability)
    const program = wrapper.length > 0 ? wrapper[0] : TPASST;
    const process = new Deno.Command(program, {
      args: [
        ...(wrapper.length > 0 ? [...wrapper.slice(1), TPASST] : []),
        "-f",
        "-s",
        sock,
        ...(transport === "vhost-user" ? ["--vhost-user"] : []),
        ...BASE_ARGS.filter((a) => oneOff || a !== "-1"),
        ...args,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = { text: "", done: Promise.resolve() };
    const decoder = new TextDecoder();
    stderr.done = (async () => {
      for await (const chunk of process.stderr) stderr.text += decoder.decode(chunk);
    })();
    let link: FrameLink | null = null;
    const none: L4Handler = { handlePacket() {} };
    // a migration test moves its guests from one daemon to the next
    const guest4 = reuse?.guest4 ?? new TestGuest(none, null, 4, TEST_GUEST4, TEST_GUEST6);
    const guest6 = reuse?.guest6 ?? new TestGuest(none, null, 6, TEST_GUEST4, TEST_GUEST6);
    const icmpFrames: Uint8Array[] = [];
    const deliver = (frame: Uint8Array) => {
      const type = (frame[ETHERTYPE_OFFSET] << 8) | frame[ETHERTYPE_OFFSET + 1];
      const protocol = type === ETHERTYPE_IPV4
        ? frame[IPV4_PROTOCOL_OFFSET]
        : type === ETHERTYPE_IPV6
        ? frame[IPV6_NEXT_HEADER_OFFSET]
        : -1;
      if (protocol === IPPROTO_ICMP || protocol === IPPROTO_ICMPV6) icmpFrames.push(frame.slice());
      if (type === ETHERTYPE_IPV4) guest4.sendFrame(frame);
      else if (type === ETHERTYPE_IPV6) guest6.sendFrame(frame);
    };
    try {
      await waitFor(`the daemon's socket ${sock}`, () => exists(sock));
      await vhost.beforeNegotiation?.(sock, () => stderr.text);
      // The socket file appears at bind(), a moment before listen(): retry refusals.
      for (let attempt = 1;; attempt++) {
        try {
          link = transport === "stream"
            ? new StreamLink(await Deno.connect({ transport: "unix", path: sock }), deliver)
            : await VhostLink.open(sock, deliver, vhost);
          break;
        } catch (e) {
          if (attempt >= CONNECT_ATTEMPTS) throw e;
          await new Promise((r) => setTimeout(r, CONNECT_RETRY_MS));
        }
      }
      // The daemon has accepted the front-end (its fd count includes the connection).
      await waitFor(
        "the daemon to accept the front-end",
        () => /Frontend connected/.test(stderr.text),
      );
    } catch (e) {
      link?.close();
      if (reuse === null) {
        guest4.stop();
        guest6.stop();
      }
      try {
        process.kill("SIGKILL");
      } catch { /* exited */ }
      await process.status;
      await stderr.done;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw new Error(`daemon did not come up over ${transport}: ${e}\n${stderr.text}`);
    }
    const l = link;
    for (const g of [guest4, guest6]) {
      g.useStack({
        handleFrame: (frame) => l.send(frame),
        endOfBatch() {},
        tick() {},
        nextTimerAt: () => Infinity,
      });
    }
    const d = new DaemonGuest(process, dir, transport, l, [guest4, guest6], stderr, icmpFrames);
    d.#oneOff = oneOff;
    return d;
  }

  /**
   * Over vhost-user: the guest's driver is unbound — both rings stopped. The guests'
   * connections stay (a driver does not reset the guest's TCP stack).
   */
  async stopRings(): Promise<void> {
    await this.#vhostLink().stopRings();
  }

  /**
   * Over vhost-user: the guest's driver is bound again — new empty rings; the RX ring
   * gets its buffers (and a kick) only from {@link postRxBuffers}.
   */
  async startRings(): Promise<void> {
    await this.#vhostLink().startRings();
  }

  /** Over vhost-user: posts every RX buffer and kicks, as a guest driver starting up. */
  postRxBuffers(): void {
    this.#vhostLink().postRxBuffers();
  }

  /**
   * Over vhost-user: a whole driver rebind — {@link stopRings}, `downMs` later
   * {@link startRings}, then {@link postRxBuffers}.
   */
  async restartRings(downMs: number): Promise<void> {
    await this.stopRings();
    await new Promise((resolve) => setTimeout(resolve, downMs));
    await this.startRings();
    this.postRxBuffers();
  }

  #vhostLink(): VhostLink {
    if (!(this.#link instanceof VhostLink)) throw new Error("rings exist over vhost-user only");
    return this.#link;
  }

  /** The front-end goes away (as when QEMU is killed); the daemon keeps running unless one-off. */
  dropFrontend(): void {
    this.guest4.stop();
    this.guest6.stop();
    this.#link.close();
  }

  /**
   * The source side of a migration as QEMU 10 runs it: stops both rings
   * (GET_VRING_BASE), has the daemon save its device state into a pipe, reads it to
   * the end and asks CHECK_DEVICE_STATE. Over vhost-user only.
   */
  async saveDeviceState(): Promise<
    { setReply: bigint; bytes: Uint8Array; check: bigint; bases: [number, number] }
  > {
    if (!(this.#link instanceof VhostLink)) throw new Error("device state needs vhost-user");
    const frontend = this.#link.frontend;
    const bases: [number, number] = [await frontend.stopRing(RX), await frontend.stopRing(TX)];
    const [readEnd, writeEnd] = createPipe();
    let setReply: bigint;
    try {
      setReply = await frontend.setDeviceStateFd(0, writeEnd);
    } catch (e) {
      closeFd(readEnd);
      throw e;
    } finally {
      closeFd(writeEnd);
    }
    const bytes = await readPipe(readEnd);
    return { setReply, bytes, check: await frontend.checkDeviceState(), bases };
  }

  /** The vhost-user front-end (migration tests drive it directly). */
  get frontend(): VhostUserFrontend {
    if (!(this.#link instanceof VhostLink)) throw new Error("not over vhost-user");
    return this.#link.frontend;
  }

  /**
   * Disconnects like {@link close} but leaves the guests running (they moved to
   * another daemon in a migration test).
   */
  async detach(): Promise<{ code: number; stderr: string }> {
    this.#keepGuests = true;
    return await this.close();
  }

  /** The vhost-user socket's path. */
  get socketPath(): string {
    return `${this.#dir}/t.sock`;
  }

  /** Sends one Ethernet frame (built by the test) to the daemon as the guest. */
  sendFrame(frame: Uint8Array): void {
    this.#link.send(frame);
  }

  /**
   * Disconnects; the daemon (started with -1, else sent SIGTERM) must exit by itself
   * within 10 s, else it is killed. Returns its exit code and standard error. Safe to
   * call once.
   */
  async close(): Promise<{ code: number; stderr: string }> {
    if (!this.#keepGuests) {
      this.guest4.stop();
      this.guest6.stop();
    }
    this.#link.close();
    if (!this.#oneOff) {
      try {
        this.process.kill("SIGTERM");
      } catch { /* exited */ }
    }
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      try {
        this.process.kill("SIGKILL");
      } catch { /* exited */ }
    }, 10_000);
    const status = await this.process.status;
    clearTimeout(timer);
    await this.#stderr.done;
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
    const note = killed ? "\n(test: daemon did not exit after the front-end left; killed)" : "";
    return { code: killed ? -1 : status.code, stderr: this.#stderr.text + note };
  }
}
