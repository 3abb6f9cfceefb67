/**
 * The contract between frame transports (vhost-user rings, passt's stream socket)
 * and the network stack. A transport moves whole Ethernet frames (no virtio-net
 * header, no length prefix) between the guest and the stack; it knows nothing of IP.
 *
 * Direction names follow the guest: "TX" is guest → us, "RX" is us → guest.
 *
 * @module
 */

import type { IoVectors } from "../../ffi/io_vectors.ts";

/**
 * The largest Ethernet frame any link carries, in bytes: the limit of passt's stream
 * protocol (frame lengths up to 65535) and of the stack's output buffer.
 */
export const MAX_FRAME_LENGTH = 65535;

/**
 * The most frames one {@link GuestLink.reserveFrames} call reserves: a 64 KiB frame's
 * 16 page-sized buffers each, well inside the 1024 iovec entries one call takes.
 */
export const MAX_RUN_FRAMES = 32;

/** The smallest Ethernet frame any link accepts, in bytes: the 14-byte Ethernet header (IEEE 802.3). */
export const MIN_FRAME_LENGTH = 14;

/** Bit flags a transport passes with a guest frame to {@link FrameHandler.handleFrame}. */
export const FrameInfo = {
  /** Nothing special: every checksum in the frame is the guest's complete one. */
  None: 0,
  /**
   * The guest left the frame's TCP/UDP checksum for the device to complete
   * (virtio-net NEEDS_CSUM, virtio 1.2 §5.1.6.2): it must not be verified. The
   * frame comes straight from guest memory, so nothing could have damaged it.
   */
  ChecksumPending: 1,
  /**
   * The frame is one large TCP/IPv4 segment the guest left for the device to cut
   * (virtio-net GSO_TCPV4, virtio 1.2 §5.1.6.2): up to 64 KiB, whatever the MTU. We
   * terminate TCP, so it is translated like any segment; the stack checks that it is
   * TCP over IPv4 and drops it otherwise. Always comes with ChecksumPending.
   */
  SegmentedTcp4: 2,
  /** As {@link FrameInfo.SegmentedTcp4}, for TCP/IPv6 (GSO_TCPV6). */
  SegmentedTcp6: 4,
} as const;

/**
 * A guest frame spread over several guest buffers of which the transport copied only
 * the beginning into the `frame` it passed to {@link FrameHandler.handleFrame}; the
 * rest stays in guest memory (no copy of a 64 KiB segment when its payload only goes
 * on to a host socket). Valid only during that call.
 */
export interface ScatteredFrame {
  /** Bytes at the start of `frame` that hold the frame's contents; the rest does not yet. */
  readonly filled: number;
  /**
   * Copies the rest of the frame into `frame`, or only up to its first `upTo` bytes:
   * afterwards those hold the contents ({@link filled} says how many).
   */
  gather(upTo?: number): void;
  /**
   * Appends iovec entries for `length` bytes of the frame from byte `from` on, pointing
   * into guest memory (bytes before {@link filled} point into `frame`).
   * @returns the bytes added (fewer when the table fills up)
   */
  vectorsOf(from: number, length: number, vectors: IoVectors): number;
}

/** Bit flags of {@link GuestLink.tcpSegmentation}: which TCP frames the guest takes large. */
export const TcpSegmentation = {
  /** Every frame must be at most the MTU. */
  None: 0,
  /** TCP/IPv4 frames of up to 64 KiB, which the guest treats as segments of a given size. */
  Ipv4: 1,
  /** Same for TCP/IPv6. */
  Ipv6: 2,
} as const;

/**
 * A large TCP frame toward the guest that stands for several segments
 * ({@link GuestLink.commitFrame}); one reused object per sender.
 */
export interface TcpSegments {
  /** {@link TcpSegmentation.Ipv4} or {@link TcpSegmentation.Ipv6}. */
  kind: number;
  /** Payload bytes of each segment but the last (the guest's MSS). */
  size: number;
  /** Bytes of the Ethernet, IP and TCP headers every segment repeats. */
  headerLength: number;
}

/** Receives the frames the guest sends. Implemented by the network stack. */
export interface FrameHandler {
  /**
   * Handles one frame sent by the guest.
   *
   * `frame` may be a view straight into guest memory: it is valid only until this
   * call returns and the guest may change it at any time, so read each field once
   * and copy whatever must be kept. Must not throw for any content of `frame`.
   *
   * @param frame one Ethernet frame, starting at the destination MAC
   * @param now the loop's current time in milliseconds (monotonic clock)
   * @param info {@link FrameInfo} bits (None when omitted)
   * @param scattered only for a handler that {@link acceptsScattered}: when given,
   * `frame` holds only the frame's first `scattered.filled` bytes so far
   */
  handleFrame(frame: Uint8Array, now: number, info?: number, scattered?: ScatteredFrame): void;

  /**
   * The handler takes frames whose payload is left in guest memory
   * ({@link ScatteredFrame}); transports give every other handler whole frames.
   */
  readonly acceptsScattered?: boolean;

  /** Called after each batch of frames, so that replies can be flushed together. */
  endOfBatch(now: number): void;

  /** The guest link came up (a frontend connected and its rings started). */
  linkUp(link: GuestLink, now: number): void;

  /**
   * The guest link went away; flows stay, frames to the guest are dropped until linkUp.
   * The front-end may still be connected (vhost-user: a VM paused, a guest resetting
   * its device, which stop the rings); {@link frontendGone} follows when it left.
   */
  linkDown(now: number): void;

  /**
   * The front-end disconnected (after linkDown): no link comes back through it, though
   * a new front-end may connect. Flows waiting for a paused guest start counting down.
   */
  frontendGone?(now: number): void;
}

/** Outcome of {@link GuestLink.sendFrame}. */
export const SendResult = {
  /** The frame was copied toward the guest. */
  Sent: 0,
  /**
   * No buffer available now. The link has asked to be told when room appears and
   * will call the writable callback; TCP and UDP keep their data (in their buffers or
   * the kernel's) until then, ICMP drops with a counter.
   */
  NoRoom: 1,
  /** The frame cannot be sent at all (too large for the guest's buffers, link down). */
  Dropped: 2,
} as const;

/** One of the {@link SendResult} values. */
export type SendResult = typeof SendResult[keyof typeof SendResult];

/**
 * Room reserved toward the guest for one frame ({@link GuestLink.reserveFrame}),
 * filled in by the link: writable views, in frame order, that together hold
 * `length` bytes. The first view holds at least the header length asked for, so
 * that headers can be written in one piece; the rest may be spread over buffers.
 * Views may point straight into guest memory: valid only until the frame is
 * committed or cancelled.
 */
export interface FrameSpace {
  /** The views; only the first {@link count} are meaningful. */
  readonly views: Uint8Array[];
  /** Views in use. */
  count: number;
  /** Bytes the views hold together (with {@link vectors}: they and the views): the most the frame can be. */
  length: number;
  /**
   * Set by the caller before reserving: the link may give the bytes from
   * `headerLength` on as an iovec table ({@link vectors}) instead of views. Only for
   * a caller that never reads those bytes itself (it peeks into them from a socket)
   * and needs no checksum over them.
   */
  acceptVectors: boolean;
  /**
   * Null, or (when {@link acceptVectors}) the frame's bytes from {@link vectorsFrom}
   * on, as an iovec table of guest memory valid until commit or cancel; the views
   * then cover only the bytes before {@link vectorsFrom}. Links that never give one
   * leave it as the caller set it: the caller clears it before reserving.
   */
  vectors: IoVectors | null;
  /** Where {@link vectors} starts in the frame (the reservation's headerLength). */
  vectorsFrom: number;
  /**
   * Set by the caller before reserving: the frame's flow hash (src/tap/flow_hash.ts,
   * of the addresses and ports the frame will carry), so that a link with several
   * receive queues puts it where the flow's other frames go; 0 when not known.
   */
  flowHash: number;
  /**
   * Set by {@link GuestLink.reserveFrames} (reserveFrame leaves it alone): the frames
   * reserved, each starting with `headerLength` header bytes written into the first
   * view and copied into place by its commit.
   */
  frames: number;
  /**
   * Per frame of a run ({@link GuestLink.reserveFrames}): the payload bytes its room
   * holds after the headers; {@link vectors} gives those rooms one after the other.
   */
  readonly frameRooms: Uint32Array;
}

/** An empty {@link FrameSpace} to pass to {@link GuestLink.reserveFrame}, reused per frame. */
export function newFrameSpace(): FrameSpace {
  return {
    views: [],
    count: 0,
    length: 0,
    acceptVectors: false,
    vectors: null,
    vectorsFrom: 0,
    flowHash: 0,
    frames: 0,
    frameRooms: new Uint32Array(MAX_RUN_FRAMES),
  };
}

/** Copies the first `length` bytes of `space` into `out` (at least that large). */
export function gatherFrame(space: FrameSpace, length: number, out: Uint8Array): void {
  let at = 0;
  for (let i = 0; i < space.count && at < length; i++) {
    const view = space.views[i];
    const n = Math.min(view.length, length - at);
    out.set(n === view.length ? view : view.subarray(0, n), at);
    at += n;
  }
}

/** The way toward the guest. Implemented by each transport. Never blocks. */
export interface GuestLink {
  /** Short name for logs: "vhost-user", "stream". */
  readonly kind: string;

  /**
   * True when the guest completes upper-layer checksums itself (virtio-net GUEST_CSUM,
   * virtio 1.2 §5.1.6.4): a sender may then leave a TCP or UDP checksum partial —
   * the field holding only the folded pseudo-header sum — and pass its position to
   * {@link sendFrame}; the frame goes out marked NEEDS_CSUM, so a guest that forwards
   * it completes the checksum like any offloaded one. Other frames are marked
   * DATA_VALID. Other checksums (IPv4 header, ICMP) must always be filled in.
   */
  readonly l4ChecksumsOptional: boolean;

  /**
   * {@link TcpSegmentation} bits: for which IP versions the guest takes a TCP frame
   * larger than its MTU, up to 64 KiB, as a run of segments (virtio-net GUEST_TSO4 /
   * GUEST_TSO6 with GUEST_CSUM, virtio 1.2 §5.1.6.4). Such a frame goes through
   * {@link reserveFrame} / {@link commitFrame} with a partial checksum and its
   * {@link TcpSegments}. 0 for links without segmentation offload.
   */
  readonly tcpSegmentation: number;

  /**
   * The MTU the guest's device reports (virtio-net VIRTIO_NET_F_MTU, set by the
   * front-end), or 0 when the device reports none. The guest cannot use a larger one.
   */
  readonly deviceMtu: number;

  /**
   * The link's state and counters (ring state, frames each way) as plain values, for
   * a statistics dump; links without any leave it out.
   */
  describeState?(): Record<string, number | string | boolean>;

  /**
   * Copies one Ethernet frame toward the guest. Its checksums must be valid, except a
   * partial one whose position is given (only when {@link l4ChecksumsOptional}).
   * @param frame the whole frame starting at the destination MAC (max 65535 bytes)
   * @param checksumStart with a partial checksum: offset in `frame` where summing
   *   starts (the upper-layer header); omitted or 0 otherwise
   * @param checksumOffset with a partial checksum: where the field is, from
   *   `checksumStart` (16 for TCP, 6 for UDP)
   */
  sendFrame(frame: Uint8Array, checksumStart?: number, checksumOffset?: number): SendResult;

  /**
   * The largest frame the guest can receive now, in bytes (at most 65535). Without
   * mergeable RX buffers (virtio-net MRG_RXBUF off) a frame must fit one guest
   * buffer, whose size only the guest knows: senders size their frames by this, so
   * that they never send what would be dropped ({@link reserveFrame} bounds its room
   * the same way).
   */
  readonly maxFrameLength: number;

  /**
   * Reserves room for one frame of at most `maxLength` bytes (whose first
   * `headerLength` bytes must be contiguous) and describes it in `space`: the frame
   * is then written in place, straight into the guest's buffers where the transport
   * has them, and handed over by {@link commitFrame} or given back by
   * {@link cancelFrame}. The room may be smaller than `maxLength` (fewer buffers
   * posted), never smaller than `headerLength`. Nothing else may be sent on the link
   * while a reservation is open.
   * @returns Sent when room was reserved; NoRoom (the writable callback will run, as
   *   after {@link sendFrame}); Dropped when no frame can go (link down, buffers
   *   smaller than the headers)
   */
  reserveFrame(space: FrameSpace, maxLength: number, headerLength: number): SendResult;

  /**
   * Reserves room for up to `frames` frames (at most {@link MAX_RUN_FRAMES}) of at
   * most `maxLength` bytes each, like {@link reserveFrame} for the first: a run, so
   * that one read from a socket fills several frames' payloads. Only for a caller
   * that accepts an iovec table ({@link FrameSpace.acceptVectors}). Sets
   * `space.frames` and `space.frameRooms`; with more than one frame, `space.vectors`
   * holds every frame's payload room in order and `space.views[0]` is where the
   * caller writes each frame's headers before committing it. The frames are committed
   * in order with {@link commitFrame}; a frame committed shorter than its room ends
   * the run, and {@link cancelFrame} gives back every frame not committed. A link
   * without runs leaves this out: callers reserve one frame at a time.
   */
  reserveFrames?(
    space: FrameSpace,
    frames: number,
    maxLength: number,
    headerLength: number,
  ): SendResult;

  /**
   * Hands over the reserved frame, now `length` bytes long (at most the reserved
   * room), with a partial checksum at `checksumStart` / `checksumOffset` like
   * {@link sendFrame}. Unused reserved room goes back to the link. With `segments`
   * (only for a kind in {@link tcpSegmentation}, with a partial checksum) a frame
   * whose payload is larger than `segments.size` goes out as that many segments'
   * worth; a smaller one as a plain frame.
   */
  commitFrame(
    length: number,
    checksumStart?: number,
    checksumOffset?: number,
    segments?: TcpSegments,
  ): SendResult;

  /** Gives the reserved room back unused (of a run, every frame not committed). */
  cancelFrame(): void;

  /** Publishes everything sent since the last flush (used index, notification). */
  flush(): void;

  /**
   * Registers the callback run when room appears after a {@link SendResult.NoRoom}.
   * One callback per link; a later registration replaces the earlier one.
   */
  onWritable(callback: (now: number) => void): void;
}
