/**
 * The vhost-user datapath of a virtio-net device: runs the RX and TX virtqueues
 * (split, or packed when VIRTIO_F_RING_PACKED was negotiated) handed over by the
 * control plane, delivers the guest's frames to a
 * {@link FrameHandler} and copies frames from the stack into the guest's RX buffers.
 * With VIRTIO_NET_F_MQ it runs up to {@link MAX_QUEUE_PAIRS} queue pairs on this one
 * thread: every TX queue is served on its own kicks, and each frame toward the guest
 * goes to the RX queue its flow hash picks among the running ones
 * (src/tap/flow_hash.ts), so that a flow keeps to one queue.
 *
 * TX frames are views straight into guest memory (zero-copy); a frame spread over
 * several buffers is gathered into one reusable scratch buffer. Each TX chain goes
 * back to the used ring only after handleFrame returned; a kick's whole batch gets
 * one used-index update, at most one notification and one endOfBatch. RX frames are
 * copied once into the guest's buffers, over several of them with MRG_RXBUF
 * (virtio 1.2 §5.1.6.3, §5.1.6.4). Checksum offload both ways when negotiated: TX
 * frames with NEEDS_CSUM are passed on as FrameInfo.ChecksumPending; RX frames
 * (GUEST_CSUM) are marked NEEDS_CSUM when the sender left their TCP/UDP checksum
 * partial, DATA_VALID otherwise. TCP segmentation offload both ways when negotiated:
 * TX frames marked GSO_TCPV4/6 (HOST_TSO4/6) are checked and passed on as
 * FrameInfo.SegmentedTcp4/6; RX frames committed with TcpSegments (GUEST_TSO4/6) go
 * out marked GSO_TCPV4/6 with gso_size and hdr_len. Nothing blocks: with no RX buffers the link asks
 * for a kick and reports NoRoom; the writable callback runs on that kick.
 *
 * The work of one turn is bounded in descriptors walked
 * ({@link TURN_DESCRIPTOR_BUDGET} per queue, see src/virtio/virtqueue.ts): a TX turn
 * that spends it ends and continues after the loop has served others
 * (runSoon); on RX, sendFrame reports NoRoom and the writable callback comes on
 * the next turn. An RX turn lasts until the stack's next flush(), which ends each of
 * its batches. Chains this link rejects (TX chains with device-writable buffers, bad
 * sizes or offload flags not negotiated; RX chains with device-readable buffers or
 * smaller than the header) count toward the queue's run of malformed chains, which
 * breaks it at MALFORMED_RUN_LIMIT (src/virtio/virtqueue.ts).
 *
 * @module
 */

import type { Logger } from "../log/logger.ts";
import { log as defaultLogger } from "../log/logger.ts";
import { RateLimitedLog } from "../log/rate_limited_log.ts";
import { runSoon, type SoonTask } from "../loop/event_loop.ts";
import { isTransmitRing, MAX_QUEUE_PAIRS, type VringDatapath } from "./vring_datapath.ts";
import { frameFlowHash } from "./flow_hash.ts";
import { IoVectors } from "../../ffi/io_vectors.ts";
import { DescriptorChain } from "../virtio/descriptor_chain.ts";
import type { GuestWriteLog } from "../virtio/guest_write_log.ts";
import {
  createNetHeader,
  decodeNetHeader,
  encodeNetHeader,
  NET_HDR_SIZE,
  type NetHeader,
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
} from "./net_header.ts";
import { PackedVirtqueue } from "../virtio/packed_virtqueue.ts";
import { SplitVirtqueue, TURN_DESCRIPTOR_BUDGET, type Virtqueue } from "../virtio/virtqueue.ts";
import {
  type FrameHandler,
  FrameInfo,
  type FrameSpace,
  type GuestLink,
  MAX_FRAME_LENGTH,
  MAX_RUN_FRAMES,
  MIN_FRAME_LENGTH,
  type ScatteredFrame,
  SendResult,
  TcpSegmentation,
  type TcpSegments,
} from "./frame_transport.ts";
import { type StartedVring } from "../virtio/started_vring.ts";
import { SingleBufferChains } from "../virtio/single_buffer_chains.ts";

/** Placeholder for dropped views. */
const EMPTY_VIEW = new Uint8Array(0);
/** Iovec entries of one reservation's payload: a 64 KiB frame in buffers of 64 bytes and more. */
const MAX_RESERVATION_VECTORS = 1024;
/** #reserveLocated: the first chain cannot hold the headers in one piece; reserve with views instead. */
const RESERVE_AS_VIEWS = -1;

/** A chain that pops its buffers located (no views): see DescriptorChain.located. */
function locatedChain(capacity: number): DescriptorChain {
  const chain = new DescriptorChain(capacity);
  chain.located = true;
  return chain;
}

/**
 * A frame spread over several guest buffers is handed to a handler that accepts it
 * as a {@link ScatteredFrame} from this length on: its first
 * {@link SCATTER_PREFIX_BYTES} are copied, the rest stays in guest memory (a Linux
 * guest's 64 KiB TCP segment comes as the headers plus page-sized fragments). Shorter
 * frames are copied whole.
 */
export const SCATTER_MIN_FRAME_BYTES = 1024;
/**
 * Bytes copied at the start of a scattered frame whose first buffer holds fewer than
 * {@link SCATTER_FIRST_BUFFER_MIN_BYTES} or more than these: Ethernet (14), IPv6 (40)
 * or the longest IPv4 header (60) and the longest TCP header (60), with room to spare.
 */
export const SCATTER_PREFIX_BYTES = 256;
/**
 * A first buffer with at least this many bytes after the virtio-net header (Ethernet,
 * IPv4 and a TCP header without options: 14 + 20 + 20) is taken to hold the headers
 * and is all that is copied first.
 */
export const SCATTER_FIRST_BUFFER_MIN_BYTES = 54;

/** A TX frame left in the guest's buffers after its first bytes; see {@link ScatteredFrame}. */
class ChainFrame implements ScatteredFrame {
  readonly #counters: VhostUserLinkCounters;
  #chain: DescriptorChain | null = null;
  #frame: Uint8Array = EMPTY_VIEW;
  #filled = 0;

  /** @param counters where frames handed over and gathered are counted */
  constructor(counters: VhostUserLinkCounters) {
    this.#counters = counters;
  }

  /** Describes `frame` (whose first `filled` bytes were copied) over `chain`'s buffers. */
  begin(chain: DescriptorChain, frame: Uint8Array, filled: number): this {
    this.#chain = chain;
    this.#frame = frame;
    this.#filled = filled;
    this.#counters.txScattered++;
    return this;
  }

  /** Forgets the chain and frame (the call that got them returned). */
  end(): void {
    this.#chain = null;
    this.#frame = EMPTY_VIEW;
    this.#filled = 0;
  }

  get filled(): number {
    return this.#filled;
  }

  gather(upTo: number = this.#frame.length): void {
    const chain = this.#chain;
    const end = Math.min(upTo, this.#frame.length);
    if (chain === null || this.#filled >= end) return;
    chain.readInto(NET_HDR_SIZE + this.#filled, this.#frame.subarray(this.#filled, end));
    this.#filled = end;
    if (end === this.#frame.length) this.#counters.txGathered++;
  }

  vectorsOf(from: number, length: number, vectors: IoVectors): number {
    const chain = this.#chain;
    if (chain === null) return 0;
    let skip = NET_HDR_SIZE + from;
    let left = Math.min(length, this.#frame.length - from);
    let added = 0;
    const lengths = chain.lengths;
    for (let i = 0; i < chain.readableCount && left > 0 && !vectors.full; i++) {
      const bufferLength = lengths[i];
      if (skip >= bufferLength) {
        skip -= bufferLength;
        continue;
      }
      const n = Math.min(bufferLength - skip, left);
      vectors.pushRange(chain.bases[i], chain.offsets[i] + skip, n);
      added += n;
      left -= n;
      skip = 0;
    }
    return added;
  }
}

/**
 * After a TX turn that handed over at least {@link TX_POLL_MIN_FRAMES} frames, the
 * queue is looked at once more from the loop (runSoon: after its next poll) before
 * kicks are re-armed: chains a guest sending faster than one per turn adds meanwhile
 * are taken without a kick, which costs the guest an exit and us an eventfd wake-up of
 * the loop.
 */
const TX_POLL_BEFORE_KICK = true;

/**
 * The fewest frames a TX turn takes for the poll after it ({@link TX_POLL_BEFORE_KICK}).
 * A turn of one frame means the guest is slower than we are (a TCG guest's upload: one
 * frame per kick, and 98 % of the polls after them found nothing); it re-arms the kick
 * at once instead of paying for a queued task, a loop poll and a second turn per frame.
 */
const TX_POLL_MIN_FRAMES = 2;

/** What a {@link VhostUserLink} has done since it was created (diagnostics, tests). */
export interface VhostUserLinkCounters {
  /** TX frames handed to the frame handler. */
  txFrames: number;
  /** TX chains rejected (malformed, offload flags not negotiated). */
  txRejected: number;
  /** TX frames taken from a disabled ring and dropped ({@link VhostUserLink.setTransmitEnabled}). */
  txDiscarded: number;
  /** TX frames handed over scattered: headers copied, payload left in guest memory. */
  txScattered: number;
  /** Of those, frames the handler copied whole after all (ScatteredFrame.gather). */
  txGathered: number;
  /** TX frames the guest left for the device to segment (GSO_TCPV4/6), among txFrames. */
  txSegmented: number;
  /** TX turns run, whatever started them. */
  txTurns: number;
  /** TX turns started by a kick from the guest. */
  txKicks: number;
  /** TX turns that started from the loop (polls after a busy turn, continued backlogs). */
  txPolls: number;
  /** TX turns from the loop that found nothing to take. */
  txEmptyPolls: number;
  /** Times the TX kick was re-armed (NO_NOTIFY cleared, or avail_event set). */
  txRearms: number;
  /** Frames written into the guest's RX buffers (copied, or built in place by a reservation). */
  rxFrames: number;
  /** RX chains (buffer lists) those frames took: several per frame under MRG_RXBUF. */
  rxChains: number;
  /** RX frames the guest takes as several TCP segments (GSO_TCPV4/6), among rxFrames. */
  rxSegmented: number;
  /** Runs of several frames reserved at once (reserveFrames), their payloads filled by one read. */
  rxRuns: number;
  /** Frames those runs reserved (committed, or given back when the read came short). */
  rxRunFrames: number;
  /** Frames refused for want of RX buffers (SendResult.NoRoom). */
  rxNoRoom: number;
  /** RX kicks received (the guest posted buffers after we asked). */
  rxKicks: number;
}

/**
 * One receive/transmit queue pair (virtio 1.2 §5.1.2: receiveqN is ring 2(N-1),
 * transmitqN ring 2(N-1)+1): its running queues and what waits on them.
 */
class QueuePair {
  /** The pair's number: its rings are 2 × index and 2 × index + 1. */
  readonly index: number;
  rx: Virtqueue | null = null;
  tx: Virtqueue | null = null;
  /** A sender got NoRoom on this RX queue: its kick (or its end) runs the writable callback. */
  rxWaiting = false;
  rxPending: SoonTask | undefined = undefined;
  txPending: SoonTask | undefined = undefined;
  /** Frames written into this pair's RX buffers. */
  rxFrames = 0;
  /** Frames taken from this pair's TX queue. */
  txFrames = 0;
  /** The TX ring is disabled but started: its frames are taken and dropped. */
  txDiscarding = false;

  constructor(index: number) {
    this.index = index;
  }
}

/** Options of a {@link VhostUserLink}. */
export interface VhostUserLinkOptions {
  /** Where log lines go (the process-wide logger by default). */
  readonly logger?: Logger;
  /** Monotonic clock in milliseconds (performance.now by default). */
  readonly clock?: () => number;
}

/** Runs a virtio-net device's rings: a {@link VringDatapath} toward the control plane and a {@link GuestLink} toward the stack. */
export class VhostUserLink implements VringDatapath, GuestLink {
  /** Short name for logs. */
  readonly kind = "vhost-user";
  /** What the link has done so far; logged at debug level when the link goes down. */
  readonly counters: VhostUserLinkCounters = {
    txFrames: 0,
    txRejected: 0,
    txDiscarded: 0,
    txScattered: 0,
    txGathered: 0,
    txSegmented: 0,
    txTurns: 0,
    txKicks: 0,
    txPolls: 0,
    txEmptyPolls: 0,
    txRearms: 0,
    rxFrames: 0,
    rxChains: 0,
    rxSegmented: 0,
    rxRuns: 0,
    rxRunFrames: 0,
    rxNoRoom: 0,
    rxKicks: 0,
  };

  readonly #handler: FrameHandler;
  readonly #logger: Logger;
  readonly #clock: () => number;
  readonly #txLog: RateLimitedLog;
  readonly #rxLog: RateLimitedLog;

  /** Every queue pair a front-end may use, by index. */
  readonly #pairs: QueuePair[] = [];
  /** Pairs whose RX queue runs, by index: frames toward the guest are spread over them. */
  #rxPairs: QueuePair[] = [];
  /** TX queues running. */
  #txRunning = 0;
  /** One more than the highest pair ever started (for the per-pair counters). */
  #pairsSeen = 0;
  /** The RX queue (and its pair) of the frame being sent: the open reservation's. */
  #rx: Virtqueue | null = null;
  #rxPair: QueuePair | null = null;
  /** A retry for senders whose RX queue went away while they waited on it. */
  #retryPending: SoonTask | undefined = undefined;
  #mergeable = false;
  /** VIRTIO_NET_F_CSUM: TX frames may carry NEEDS_CSUM. */
  #txChecksumOffload = false;
  /** VIRTIO_NET_F_GUEST_CSUM: RX frames are marked DATA_VALID. */
  #rxDataValid = false;
  /** VIRTIO_NET_F_HOST_TSO4 / HOST_TSO6 (with CSUM): TcpSegmentation bits TX frames may use. */
  #txSegmentation = 0;
  /** VIRTIO_NET_F_HOST_ECN: TX GSO frames may carry GSO_ECN. */
  #txEcn = false;
  /** VIRTIO_NET_F_GUEST_TSO4 / GUEST_TSO6 (with GUEST_CSUM): TcpSegmentation bits for RX frames. */
  #rxSegmentation = 0;
  /** The MTU the front-end set for the device (0: none), from the RX ring's start. */
  #deviceMtu = 0;
  /** Frame room of the last RX buffer seen (header excluded): the limit without MRG_RXBUF. */
  #rxBufferFrameRoom = MAX_FRAME_LENGTH;
  /** Bytes of the smallest RX chain seen (Infinity before the first): with MRG_RXBUF,
   * what the chains posted now can hold is judged by it. */
  #smallestRxChainBytes = Infinity;
  #up = false;
  #writable: ((now: number) => void) | null = null;

  // Reused per frame: no allocation on the hot paths beyond the memory views.
  #txChain = locatedChain(1);
  /** A frame's first RX chain (located: its buffer needs no view). */
  #rxFirst = locatedChain(1);
  #rxNext = new DescriptorChain(1);
  /** Popped for reservations given as iovec tables: buffers located, no views. */
  #rxLocated = locatedChain(1);
  /** The run of single-buffer RX chains a reservation takes at once (popSingleBuffers). */
  #rxSingles = new SingleBufferChains(1);
  #rxHeads = new Uint16Array(1);
  #rxLengths = new Uint32Array(1);
  readonly #txScratch = new Uint8Array(NET_HDR_SIZE + MAX_FRAME_LENGTH);
  /** The scratch's view handed over last: a run of frames of one length reuses it. */
  #txFrameView: Uint8Array = this.#txScratch.subarray(0, 0);
  /** The scratch's first bytes, where a scattered frame's headers are copied. */
  readonly #txPrefix = this.#txScratch.subarray(0, SCATTER_PREFIX_BYTES);
  readonly #txScattered = new ChainFrame(this.counters);
  readonly #header = createNetHeader();
  readonly #headerBytes = new Uint8Array(NET_HDR_SIZE);

  // The open RX reservation (reserveFrame): chains popped for it, in order.
  #resOpen = false;
  #resChains = 0;
  #resHeads = new Uint16Array(1);
  /** Writable bytes of each reserved chain. */
  #resRooms = new Uint32Array(1);
  /** The first chain's buffers, where the virtio-net header goes. */
  #resHeaderViews: Uint8Array[] = [];
  #resHeaderCount = 0;
  /**
   * Or, when the first buffer holds the whole virtio-net header (a table reservation):
   * the bytes it lies in and where, with no view made (empty when views are used).
   */
  #resHeaderBase: Uint8Array = EMPTY_VIEW;
  #resHeaderAt = 0;
  /**
   * A table reservation whose frame headers lie in one buffer: the caller writes them
   * into {@link #frameHeaderView} (no view of guest memory is made per frame) and
   * commit copies them here, into these bytes at this position (empty otherwise).
   */
  #resFrameHeaderBase: Uint8Array = EMPTY_VIEW;
  #resFrameHeaderAt = 0;
  /** The scratch handed out for the frame headers, of the length asked last. */
  #frameHeaderView: Uint8Array = EMPTY_VIEW;
  /** The frame's room: every reserved buffer after the virtio-net header, in order. */
  #resViews: Uint8Array[] = [];
  #resViewCount = 0;
  /** Whether the frame is written to the scratch buffer (headers split) and copied on commit. */
  #resScratch = false;
  /** Bytes of {@link #resViews} the reservation handed out (the frame's room). */
  #resCapacity = 0;
  #resMalformedBefore = 0;
  readonly #resScratchBuffer = new Uint8Array(MAX_FRAME_LENGTH);
  /** The frame's bytes after its headers, for reservations that accept a table. */
  readonly #resVectors = new IoVectors(MAX_RESERVATION_VECTORS);

  // A run of frames reserved at once (reserveFrames): frame k's chains are
  // #resHeads[#runChainEnd[k - 1] .. #runChainEnd[k]) (from 0 for the first), and
  // the #res fields above describe the frame committed next (#runNext), whose chains
  // start at #resFirst. A single reservation is a run of one frame.
  #runFrames = 0;
  #runNext = 0;
  #resFirst = 0;
  readonly #runChainEnd = new Int32Array(MAX_RUN_FRAMES);
  readonly #runHeaderBase: Uint8Array[] = new Array(MAX_RUN_FRAMES).fill(EMPTY_VIEW);
  readonly #runHeaderAt = new Int32Array(MAX_RUN_FRAMES);
  readonly #runFrameHeaderBase: Uint8Array[] = new Array(MAX_RUN_FRAMES).fill(EMPTY_VIEW);
  readonly #runFrameHeaderAt = new Int32Array(MAX_RUN_FRAMES);
  readonly #runMalformedBefore: number[] = new Array(MAX_RUN_FRAMES).fill(0);

  /** @param handler receives the guest's frames and the link's up/down events */
  constructor(handler: FrameHandler, options: VhostUserLinkOptions = {}) {
    this.#handler = handler;
    this.#logger = options.logger ?? defaultLogger;
    this.#clock = options.clock ?? (() => performance.now());
    this.#txLog = new RateLimitedLog("warn", undefined, this.#logger);
    this.#rxLog = new RateLimitedLog("warn", undefined, this.#logger);
    for (let i = 0; i < MAX_QUEUE_PAIRS; i++) this.#pairs.push(new QueuePair(i));
  }

  /** {@inheritDoc VringDatapath.startVring} */
  startVring(ring: StartedVring, now: number): void {
    const pair = this.#pairOf(ring.index);
    if (pair === null) {
      this.#logger.warn(
        `vhost-user: ignoring start of queue ${ring.index}: beyond ${MAX_QUEUE_PAIRS} queue pairs`,
      );
      return;
    }
    const receive = (ring.index & 1) === 0;
    if (this.#queue(ring.index) !== null) this.stopVring(ring.index);
    let queue: Virtqueue;
    try {
      const options = {
        name: (receive ? "RX" : "TX") + (pair.index === 0 ? "" : ` ${pair.index}`),
        logger: this.#logger,
        clock: this.#clock,
      };
      // VIRTIO_F_RING_PACKED decides the ring layout of every queue (virtio 1.2 §2.8).
      queue = ring.features.packedRing === true
        ? new PackedVirtqueue(ring, options)
        : new SplitVirtqueue(ring, options);
    } catch (error) {
      this.#logger.error(
        `vhost-user: cannot start queue ${ring.index}: ${(error as Error).message}`,
      );
      return;
    }
    this.#pairsSeen = Math.max(this.#pairsSeen, pair.index + 1);
    if (receive) {
      pair.rx = queue;
      this.#rxPairs = this.#pairs.filter((p) => p.rx !== null);
      this.#mergeable = ring.features.mergeableRxBuffers;
      this.#rxDataValid = ring.features.guestChecksum;
      // GUEST_TSO needs GUEST_CSUM (virtio 1.2 §5.1.3.1): large frames go out NEEDS_CSUM.
      this.#rxSegmentation = !ring.features.guestChecksum
        ? TcpSegmentation.None
        : (ring.features.guestTso4 ? TcpSegmentation.Ipv4 : 0) |
          (ring.features.guestTso6 ? TcpSegmentation.Ipv6 : 0);
      this.#deviceMtu = ring.features.mtu ?? 0;
      this.#rxBufferFrameRoom = MAX_FRAME_LENGTH;
      this.#smallestRxChainBytes = Infinity;
      if (this.#rxFirst.buffers.length < ring.size) {
        this.#rxFirst = locatedChain(ring.size);
        this.#rxNext = new DescriptorChain(ring.size);
        this.#rxLocated = locatedChain(ring.size);
        this.#rxSingles = new SingleBufferChains(ring.size);
        this.#rxHeads = new Uint16Array(ring.size);
        this.#rxLengths = new Uint32Array(ring.size);
      }
      queue.disableNotifications(); // asked for again when the ring runs dry
    } else {
      pair.tx = queue;
      pair.txDiscarding = false; // a ring starts enabled
      this.#txRunning++;
      this.#txChecksumOffload = ring.features.checksumOffload;
      this.#txSegmentation = (ring.features.hostTso4 ? TcpSegmentation.Ipv4 : 0) |
        (ring.features.hostTso6 ? TcpSegmentation.Ipv6 : 0);
      this.#txEcn = ring.features.hostEcn ?? false;
      if (this.#txChain.lengths.length < ring.size) this.#txChain = locatedChain(ring.size);
    }
    // Up while frames can go both ways: some RX queue and some TX queue run.
    if (this.#rxPairs.length > 0 && this.#txRunning > 0 && !this.#up) {
      this.#up = true;
      this.#handler.linkUp(this, now);
    }
    // The first TX turn runs from the loop, not from here: a front-end restarting rings
    // in a burst of messages must not get a fresh turn's budget per message.
    if (!receive) this.#scheduleTx(pair);
  }

  /** {@inheritDoc VringDatapath.frontendGone} The handler is told (FrameHandler.frontendGone). */
  frontendGone(now: number): void {
    this.#handler.frontendGone?.(now);
  }

  /**
   * {@inheritDoc VringDatapath.setTransmitEnabled}
   * The pair's frames are dropped while it is disabled; its ring keeps its kicks and
   * turns. An RX index or a ring that is not running is ignored.
   */
  setTransmitEnabled(index: number, enabled: boolean): void {
    const pair = this.#pairOf(index);
    if (pair === null || !isTransmitRing(index) || pair.tx === null) return;
    pair.txDiscarding = !enabled;
    if (!enabled) this.#scheduleTx(pair); // what the guest queued before comes back now
  }

  /** {@inheritDoc VringDatapath.kick} */
  kick(index: number, now: number): void {
    const pair = this.#pairOf(index);
    if (pair === null) return;
    if ((index & 1) === 1) {
      this.counters.txKicks++;
      this.#processTx(pair, now);
    } else {
      const rx = pair.rx;
      if (rx === null || rx.broken) return;
      this.counters.rxKicks++;
      rx.disableNotifications();
      if (pair.rxWaiting) {
        pair.rxWaiting = false;
        this.#writable?.(now);
      }
    }
  }

  /** {@inheritDoc VringDatapath.setWriteLog} */
  setWriteLog(index: number, log: GuestWriteLog | null): void {
    this.#queue(index)?.setWriteLog(log);
  }

  /**
   * {@inheritDoc VringDatapath.stopVring}
   * RX buffers filled since the last flush go back to the guest first; a failure
   * there (e.g. signalling the guest) is logged, and the ring is dropped and the link
   * reported down whatever happens on the way.
   */
  stopVring(index: number): number {
    const queue = this.#queue(index);
    const pair = this.#pairOf(index);
    if (queue === null || pair === null) return 0;
    const receive = (index & 1) === 0;
    try {
      if (receive) queue.publish();
    } catch (error) {
      this.#rxLog.write(
        this.#clock(),
        `vhost-user: returning RX buffers while stopping the ring failed: ${
          (error as Error).message
        }`,
      );
    } finally {
      try {
        if (receive) {
          const waited = pair.rxWaiting;
          pair.rx = null;
          pair.rxWaiting = false;
          pair.rxPending?.cancel();
          pair.rxPending = undefined;
          this.#rxPairs = this.#pairs.filter((p) => p.rx !== null);
          if (this.#rx === queue) {
            this.#rx = null;
            this.#rxPair = null;
          }
          this.#rxFirst.release();
          this.#rxNext.release();
          this.#rxLocated.release();
          // Senders that waited for this queue's kick go to the others now.
          if (waited && this.#rxPairs.length > 0) this.#scheduleRetry();
        } else {
          pair.tx = null;
          pair.txDiscarding = false;
          this.#txRunning--;
          this.#txChain.release();
          pair.txPending?.cancel();
          pair.txPending = undefined;
        }
      } finally {
        if (this.#up && (this.#rxPairs.length === 0 || this.#txRunning === 0)) {
          this.#up = false;
          if (this.#logger.enabled("debug")) this.#logger.debug(this.describeCounters());
          this.#handler.linkDown(this.#clock());
        }
      }
    }
    return queue.vringBase;
  }

  /** The rings' state and {@link counters}, for a statistics dump. */
  describeState(): Record<string, number | string | boolean> {
    const first = this.#pairs[0];
    const ringState = (q: Virtqueue | null) =>
      q === null ? "none" : q.broken ? "broken" : "running";
    return {
      up: this.#up,
      rxRing: ringState(first.rx),
      txRing: ringState(first.tx),
      ringLayout: this.#ringLayout(),
      queuePairs: this.#pairs.filter((p) => p.rx !== null || p.tx !== null).length,
      rxWaitingForBuffers: this.#pairs.some((p) => p.rxWaiting),
      mergeableRxBuffers: this.#mergeable,
      tcpSegmentationToGuest: this.#rxSegmentation,
      tcpSegmentationFromGuest: this.#txSegmentation,
      deviceMtu: this.#deviceMtu,
      ...this.counters,
      rxFramesPerPair: this.#perPair((p) => p.rxFrames),
      txFramesPerPair: this.#perPair((p) => p.txFrames),
    };
  }

  /** The layout of the running rings (virtio 1.2 §2.7 split, §2.8 packed), "none" without rings. */
  #ringLayout(): string {
    const pair = this.#pairs.find((p) => p.rx !== null || p.tx !== null);
    const queue = pair === undefined ? null : pair.rx ?? pair.tx;
    if (queue === null) return "none";
    return queue instanceof PackedVirtqueue ? "packed" : "split";
  }

  /** `what` of every pair started so far, comma-separated by pair index. */
  #perPair(what: (pair: QueuePair) => number): string {
    return this.#pairs.slice(0, this.#pairsSeen).map(what).join(",");
  }

  /** One line summing up {@link counters}, for logs. */
  describeCounters(): string {
    const c = this.counters;
    return `vhost-user link: TX ${c.txFrames} frames (${c.txSegmented} segmented, ${c.txRejected} rejected, ` +
      (c.txDiscarded > 0 ? `${c.txDiscarded} discarded from disabled rings, ` : "") +
      `${c.txScattered - c.txGathered} sent from guest memory) in ${c.txTurns} turns: ` +
      `${c.txKicks} kicked, ${c.txPolls} from the loop (${c.txEmptyPolls} empty), ` +
      `${c.txRearms} kick re-arms; RX ${c.rxFrames} frames (${c.rxSegmented} segmented) in ${c.rxChains} chains, ` +
      `${c.rxRuns} runs of ${c.rxRunFrames} frames reserved at once, ` +
      `${c.rxNoRoom} without room, ` +
      `${c.rxKicks} kicks` +
      (this.#pairsSeen > 1
        ? `; frames per queue pair RX ${this.#perPair((p) => p.rxFrames)} TX ${
          this.#perPair((p) => p.txFrames)
        }`
        : "");
  }

  /** The pair ring `index` belongs to, or null for an index beyond the pairs served. */
  #pairOf(index: number): QueuePair | null {
    if (!Number.isInteger(index) || index < 0) return null;
    return this.#pairs[index >> 1] ?? null;
  }

  #queue(index: number): Virtqueue | null {
    const pair = this.#pairOf(index);
    if (pair === null) return null;
    return (index & 1) === 0 ? pair.rx : pair.tx;
  }

  /**
   * Picks the RX queue of a frame of flow `hash` (src/tap/flow_hash.ts) among the
   * running ones and makes it the current one ({@link #rx}); null when none runs.
   */
  #selectRx(hash: number): Virtqueue | null {
    const pairs = this.#rxPairs;
    const n = pairs.length;
    if (n === 0) return null;
    const pair = n === 1 ? pairs[0] : pairs[(hash >>> 0) % n];
    this.#rxPair = pair;
    this.#rx = pair.rx;
    return pair.rx;
  }

  /** Runs the writable callback from the loop (senders whose RX queue stopped). */
  #scheduleRetry(): void {
    if (this.#retryPending !== undefined) return;
    this.#retryPending = runSoon(() => {
      this.#retryPending = undefined;
      if (this.#up) this.#writable?.(this.#clock());
    });
  }

  /**
   * One TX turn: pops up to a ring's worth of TX chains within the turn's descriptor
   * budget, hands each frame over, returns them, then notifies once.
   */
  #processTx(pair: QueuePair, now: number): void {
    const tx = pair.tx;
    if (tx === null || tx.broken) return;
    this.counters.txTurns++;
    tx.beginTurn();
    const chain = this.#txChain;
    let budget = tx.size;
    let pollAgain = false;
    // A ring's worth of frames, the turn's descriptors and a few re-arm rounds per
    // turn (a guest refilling as fast as we consume, or feeding garbage, must not keep
    // us here). A spent descriptor budget leaves chains available: continued below.
    for (let round = 0; round < 4; round++) {
      while (budget > 0 && tx.pop(chain, now)) {
        budget--;
        if (pair.txDiscarding) {
          this.counters.txDiscarded++;
          tx.pushUsed(chain.head, 0);
        } else if (this.#deliver(chain, now)) {
          this.counters.txFrames++;
          pair.txFrames++;
          tx.pushUsed(chain.head, 0);
        } else {
          this.counters.txRejected++;
          tx.rejectChain(chain.head);
        }
        chain.release();
      }
      if (budget === 0 || tx.broken || tx.hasAvailable()) break;
      if (TX_POLL_BEFORE_KICK && tx.size - budget >= TX_POLL_MIN_FRAMES) {
        // Busy: keep kicks off and poll after the next I/O phase instead.
        tx.disableNotifications();
        pollAgain = true;
        break;
      }
      // Re-arm the kick, then look once more: the guest may have added chains
      // while it believed we were still busy (virtio 1.2 §2.7.10).
      this.counters.txRearms++;
      if (!tx.enableNotifications()) break;
    }
    tx.publish();
    // Let the loop serve others (host sockets, timers), then continue with the rest. A
    // spent budget continues too, even with nothing available now: the kick was not
    // re-armed (NO_NOTIFY may still be set from an earlier busy turn, avail_event may
    // lag), so a guest that refills the ring after this publish would not kick.
    if (pollAgain || budget === 0 || tx.hasAvailable()) this.#scheduleTx(pair);
    if (budget === tx.size) return; // nothing handed over: no batch to end
    try {
      this.#handler.endOfBatch(now);
    } catch (error) {
      this.#txLog.write(now, `vhost-user: endOfBatch threw: ${(error as Error).message}`);
    }
  }

  /**
   * Runs a TX turn from the loop, unless one is already due: runSoon (after the loop's
   * next poll, or Deno's next I/O phase when no loop holds the thread; the loop does
   * not wait on this thread meanwhile), not setTimeout(0): Deno's timers are Node's,
   * with a 1 ms floor (measured ~2 ms per setTimeout(0) round, 1.4 µs per
   * setImmediate round).
   */
  #scheduleTx(pair: QueuePair): void {
    if (pair.txPending !== undefined) return;
    pair.txPending = runSoon(() => {
      pair.txPending = undefined;
      const counters = this.counters;
      counters.txPolls++;
      const before = counters.txFrames + counters.txRejected + counters.txDiscarded;
      this.#processTx(pair, this.#clock());
      if (counters.txFrames + counters.txRejected + counters.txDiscarded === before) {
        counters.txEmptyPolls++;
      }
    });
  }

  /**
   * Validates one TX chain and hands its frame to the handler.
   * @returns false when the chain was rejected (logged here)
   */
  #deliver(chain: DescriptorChain, now: number): boolean {
    if (chain.readableCount !== chain.count) {
      this.#txLog.write(
        now,
        `vhost-user: dropping TX chain ${chain.head}: it has device-writable buffers`,
      );
      return false;
    }
    const total = chain.readableBytes;
    if (total < NET_HDR_SIZE + MIN_FRAME_LENGTH || total > NET_HDR_SIZE + MAX_FRAME_LENGTH) {
      this.#txLog.write(
        now,
        `vhost-user: dropping TX chain ${chain.head}: ${total} bytes is not a ${NET_HDR_SIZE}-byte header plus a frame of ${MIN_FRAME_LENGTH}..${MAX_FRAME_LENGTH} bytes`,
      );
      return false;
    }
    // The chain is located (no view per buffer): buffer i is bases[i] from offsets[i].
    const bases = chain.bases;
    const offsets = chain.offsets;
    const lengths = chain.lengths;
    const header = this.#header;
    if (lengths[0] >= NET_HDR_SIZE) {
      decodeNetHeader(bases[0], offsets[0], header);
    } else {
      chain.readInto(0, this.#headerBytes);
      decodeNetHeader(this.#headerBytes, 0, header);
    }
    const checksumPending = (header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0;
    if (checksumPending && !this.#txChecksumOffload) {
      this.#txLog.write(
        now,
        `vhost-user: dropping TX chain ${chain.head}: offload flags ${header.flags} gso ${header.gsoType} were not negotiated`,
      );
      return false;
    }
    let info = checksumPending ? FrameInfo.ChecksumPending : FrameInfo.None;
    if (header.gsoType !== VIRTIO_NET_HDR_GSO_NONE) {
      const segmented = this.#txSegmentInfo(header, total - NET_HDR_SIZE);
      if (typeof segmented === "string") {
        this.#txLog.write(now, `vhost-user: dropping TX chain ${chain.head}: ${segmented}`);
        return false;
      }
      info |= segmented;
      this.counters.txSegmented++;
    }
    let frame: Uint8Array;
    let scattered: ChainFrame | undefined;
    if (chain.count === 1) {
      frame = bases[0].subarray(offsets[0] + NET_HDR_SIZE, offsets[0] + lengths[0]);
    } else if (chain.count === 2 && lengths[0] === NET_HDR_SIZE) {
      frame = bases[1].subarray(offsets[1], offsets[1] + lengths[1]);
    } else {
      const length = total - NET_HDR_SIZE;
      frame = this.#txFrameView;
      if (frame.length !== length) this.#txFrameView = frame = this.#txScratch.subarray(0, length);
      if (length >= SCATTER_MIN_FRAME_BYTES && this.#handler.acceptsScattered === true) {
        // The first buffer's bytes when it holds more than the header (a Linux guest's
        // headers, the payload in the pages after it), else SCATTER_PREFIX_BYTES: the
        // handler copies more if the headers are not all there (ScatteredFrame.gather).
        const firstBytes = lengths[0] - NET_HDR_SIZE;
        let filled: number;
        if (firstBytes >= SCATTER_FIRST_BUFFER_MIN_BYTES && firstBytes <= SCATTER_PREFIX_BYTES) {
          const start = offsets[0] + NET_HDR_SIZE;
          frame.set(bases[0].subarray(start, start + firstBytes));
          filled = firstBytes;
        } else {
          filled = chain.readInto(NET_HDR_SIZE, this.#txPrefix);
        }
        scattered = this.#txScattered.begin(chain, frame, filled);
      } else {
        chain.readInto(NET_HDR_SIZE, frame);
      }
    }
    try {
      this.#handler.handleFrame(frame, now, info, scattered);
    } catch (error) {
      this.#txLog.write(now, `vhost-user: frame handler threw: ${(error as Error).message}`);
    } finally {
      scattered?.end();
    }
    return true;
  }

  /**
   * Checks a TX header's segmentation fields (virtio 1.2 §5.1.6.2.1: a GSO frame has
   * NEEDS_CSUM and a gso_size; hdr_len, without VIRTIO_NET_F_GUEST_HDRLEN only a hint,
   * must not lie past the frame) against the features acked.
   * @returns the frame's FrameInfo.SegmentedTcp4/6 bit, or why it is refused
   */
  #txSegmentInfo(header: NetHeader, frameLength: number): number | string {
    const type = header.gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
    const kind = type === VIRTIO_NET_HDR_GSO_TCPV4
      ? TcpSegmentation.Ipv4
      : type === VIRTIO_NET_HDR_GSO_TCPV6
      ? TcpSegmentation.Ipv6
      : TcpSegmentation.None;
    if ((kind & this.#txSegmentation) === 0 || !this.#txChecksumOffload) {
      return `gso type ${header.gsoType} was not negotiated`;
    }
    if ((header.gsoType & VIRTIO_NET_HDR_GSO_ECN) !== 0 && !this.#txEcn) {
      return `gso type ${header.gsoType}: ECN was not negotiated`;
    }
    if ((header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) === 0) {
      return `gso type ${header.gsoType} without NEEDS_CSUM`;
    }
    if (header.gsoSize === 0) return `gso type ${header.gsoType} with gso_size 0`;
    if (header.hdrLen > frameLength) {
      return `gso hdr_len ${header.hdrLen} is past the ${frameLength}-byte frame`;
    }
    return kind === TcpSegmentation.Ipv4 ? FrameInfo.SegmentedTcp4 : FrameInfo.SegmentedTcp6;
  }

  /** {@inheritDoc GuestLink.tcpSegmentation} GUEST_TSO4 / GUEST_TSO6, each with GUEST_CSUM. */
  get tcpSegmentation(): number {
    return this.#rxSegmentation;
  }

  /** {@inheritDoc GuestLink.deviceMtu} What NET_SET_MTU said before the rings started. */
  get deviceMtu(): number {
    return this.#deviceMtu;
  }

  /** {@inheritDoc GuestLink.maxFrameLength} */
  get maxFrameLength(): number {
    if (!this.#mergeable) return this.#rxBufferFrameRoom;
    const rx = this.#rx ?? this.#rxPairs[0]?.rx ?? null;
    if (rx === null || this.#smallestRxChainBytes === Infinity) return MAX_FRAME_LENGTH;
    // A frame may merge every buffer posted now, but no more: a guest that has posted
    // all it will post sends no further kick, so a larger frame would wait forever.
    const room = rx.availableCount() * this.#smallestRxChainBytes - NET_HDR_SIZE;
    return Math.max(0, Math.min(MAX_FRAME_LENGTH, room));
  }

  /** {@inheritDoc GuestLink.l4ChecksumsOptional} True once the guest negotiated GUEST_CSUM. */
  get l4ChecksumsOptional(): boolean {
    return this.#rxDataValid;
  }

  /**
   * {@inheritDoc GuestLink.sendFrame}
   * A frame with a partial checksum goes out marked NEEDS_CSUM with its csum_start /
   * csum_offset; one whose checksum position lies outside it, or for a guest without
   * GUEST_CSUM, is dropped.
   */
  sendFrame(frame: Uint8Array, checksumStart = 0, checksumOffset = 0): SendResult {
    if (!this.#up) return SendResult.Dropped;
    // Hashed only when there is a choice: one pair costs nothing more.
    const rx = this.#selectRx(this.#rxPairs.length > 1 ? frameFlowHash(frame) : 0);
    if (rx === null || rx.broken) return SendResult.Dropped;
    const pair = this.#rxPair!;
    if (frame.length === 0 || frame.length > MAX_FRAME_LENGTH) return SendResult.Dropped;
    if (
      checksumStart > 0 &&
      (!this.#rxDataValid || checksumStart + checksumOffset + 2 > frame.length)
    ) {
      return SendResult.Dropped; // a guest without GUEST_CSUM could not complete it
    }
    const result = this.#fill(rx, frame, checksumStart, checksumOffset);
    if (result !== SendResult.NoRoom) return result;
    const retried = this.#retryWhenRoom(
      rx,
      pair,
      () => this.#fill(rx, frame, checksumStart, checksumOffset),
    );
    if (retried === SendResult.NoRoom) this.counters.rxNoRoom++;
    return retried;
  }

  /**
   * After `rx` had no room for a frame: a broken ring drops it; a spent turn comes back
   * from the loop; otherwise the kick is asked for and, if buffers arrived meanwhile (no
   * kick will come for them), `retry` runs once. NoRoom leaves `pair` waiting for room.
   */
  #retryWhenRoom(rx: Virtqueue, pair: QueuePair, retry: () => SendResult): SendResult {
    if (rx.broken) return SendResult.Dropped; // broken meanwhile: no room will ever come
    if (rx.turnSpent) {
      // This turn's descriptors are spent (buffers may remain): the next turn goes on.
      pair.rxWaiting = true;
      this.#scheduleWritable(pair);
      return SendResult.NoRoom;
    }
    if (rx.enableNotifications()) {
      const result = retry();
      if (result !== SendResult.NoRoom) return result;
      if (rx.turnSpent || rx.enableNotifications()) {
        // Still racing with a refilling guest, or the turn is spent: come back from
        // the loop, not from here.
        pair.rxWaiting = true;
        this.#scheduleWritable(pair);
        return SendResult.NoRoom;
      }
    }
    pair.rxWaiting = true;
    return SendResult.NoRoom;
  }

  /** Runs `pair`'s RX kick handling from the loop (its turn's descriptors were spent). */
  #scheduleWritable(pair: QueuePair): void {
    if (pair.rxPending !== undefined) return;
    pair.rxPending = runSoon(() => {
      pair.rxPending = undefined;
      pair.rx?.beginTurn(); // a turn of the loop has passed
      this.kick(2 * pair.index, this.#clock());
    });
  }

  /** Pops one RX chain usable for frames (writable only, room for the header) into `chain`. */
  #popRx(rx: Virtqueue, chain: DescriptorChain): boolean {
    while (rx.pop(chain)) {
      if (chain.readableCount !== 0) {
        chain.release();
        rx.dropChain(chain.head, "RX chain has device-readable buffers");
      } else if (chain.writableBytes < NET_HDR_SIZE) {
        chain.release();
        rx.dropChain(
          chain.head,
          `RX buffer of ${chain.writableBytes} bytes is smaller than the ${NET_HDR_SIZE}-byte header`,
        );
      } else {
        if (chain.writableBytes < this.#smallestRxChainBytes) {
          this.#smallestRxChainBytes = chain.writableBytes;
        }
        return true;
      }
    }
    return false;
  }

  /** Copies header + frame into as many RX chains as needed (one without MRG_RXBUF). */
  #fill(
    rx: Virtqueue,
    frame: Uint8Array,
    checksumStart: number,
    checksumOffset: number,
  ): SendResult {
    const needed = NET_HDR_SIZE + frame.length;
    const first = this.#rxFirst;
    const untouched = rx.turnUntouched;
    const malformedAtStart = rx.malformedCount;
    if (!this.#popRx(rx, first)) return SendResult.NoRoom;
    const droppedBefore = rx.malformedCount;
    // Whether this frame's own chains may spend the turn's whole descriptor budget.
    const wholeTurn = untouched && droppedBefore === malformedAtStart;
    const heads = this.#rxHeads;
    const lengths = this.#rxLengths;
    const used = Math.min(first.writableBytes, needed);
    heads[0] = first.head;
    lengths[0] = used;
    let count = 1;
    if (!this.#mergeable) {
      this.#rxBufferFrameRoom = Math.min(MAX_FRAME_LENGTH, first.writableBytes - NET_HDR_SIZE);
    }
    if (used < needed && !this.#mergeable) {
      rx.unpop(1);
      first.release();
      this.#rxLog.write(
        this.#clock(),
        `vhost-user: dropping a ${frame.length}-byte frame: RX buffer of ${first.writableBytes} bytes is too small and MRG_RXBUF is off`,
      );
      return SendResult.Dropped;
    }
    first.writeFrom(NET_HDR_SIZE, used === needed ? frame : frame.subarray(0, used - NET_HDR_SIZE));
    // Every write into guest memory is reported while dirty pages are logged, right
    // after it: a frame given up below has written these bytes all the same.
    const writeLog = rx.writeLog;
    if (writeLog !== null) first.reportWritten(writeLog, NET_HDR_SIZE, used - NET_HDR_SIZE);
    let written = used;
    const next = this.#rxNext;
    while (written < needed) {
      // The ring in use now bounds the chains, not the scratch arrays (they keep the
      // size of the largest ring ever started).
      const ringExhausted = count === rx.size;
      if (ringExhausted || !this.#popRx(rx, next)) {
        first.release();
        if (rx.malformedCount !== droppedBefore) {
          // A dropped chain sits among ours: unpop would hand it out again. Return
          // ours empty instead; the frame is lost.
          for (let i = 0; i < count; i++) rx.pushUsed(heads[i], 0);
          this.#rxLog.write(
            this.#clock(),
            `vhost-user: dropping a ${frame.length}-byte frame: malformed RX buffers`,
          );
          return SendResult.Dropped;
        }
        if (!ringExhausted && wholeTurn && rx.turnSpent) {
          // A whole turn's descriptors did not gather enough buffers, so no later turn
          // could: return them empty (walking them again would only repeat this).
          for (let i = 0; i < count; i++) rx.pushUsed(heads[i], 0);
          this.#rxLog.write(
            this.#clock(),
            `vhost-user: dropping a ${frame.length}-byte frame: its RX buffers take more than ${TURN_DESCRIPTOR_BUDGET} descriptors`,
          );
          return SendResult.Dropped;
        }
        rx.unpop(count); // all of them come back for the next try
        if (!ringExhausted) return SendResult.NoRoom;
        // A whole ring of buffers cannot hold it: waiting would never help.
        this.#rxLog.write(
          this.#clock(),
          `vhost-user: dropping a ${frame.length}-byte frame: larger than the whole RX ring`,
        );
        return SendResult.Dropped;
      }
      const n = Math.min(next.writableBytes, needed - written);
      const offset = written - NET_HDR_SIZE;
      next.writeFrom(0, frame.subarray(offset, offset + n));
      if (writeLog !== null) next.reportWritten(writeLog, 0, n);
      next.release();
      heads[count] = next.head;
      lengths[count] = n;
      count++;
      written += n;
    }
    const header = this.#rxHeader(checksumStart, checksumOffset, count);
    if (first.lengths[0] >= NET_HDR_SIZE) {
      encodeNetHeader(header, first.bases[0], first.offsets[0]);
    } else {
      encodeNetHeader(header, this.#headerBytes, 0);
      first.writeFrom(0, this.#headerBytes);
    }
    if (writeLog !== null) first.reportWritten(writeLog, 0, NET_HDR_SIZE);
    first.release();
    rx.pushUsedChains(heads, lengths, count);
    this.counters.rxFrames++;
    this.#rxPair!.rxFrames++;
    this.counters.rxChains += count;
    return SendResult.Sent;
  }

  /**
   * {@inheritDoc GuestLink.reserveFrame}
   * The room is the guest's posted RX buffers themselves, after the virtio-net header:
   * one chain without MRG_RXBUF, as many chains as `maxLength` needs (and are posted
   * now) with it. When the first buffer cannot hold the header bytes in one piece,
   * the frame is written to a scratch buffer and copied on commit instead.
   */
  reserveFrame(space: FrameSpace, maxLength: number, headerLength: number): SendResult {
    if (this.#resOpen) this.cancelFrame();
    if (!this.#up) return SendResult.Dropped;
    const rx = this.#selectRx(this.#rxPairs.length > 1 ? space.flowHash : 0);
    if (rx === null || rx.broken) return SendResult.Dropped;
    const pair = this.#rxPair!;
    if (headerLength > MAX_FRAME_LENGTH) return SendResult.Dropped;
    const length = Math.max(headerLength, Math.min(maxLength, MAX_FRAME_LENGTH));
    const result = this.#reserve(rx, space, length, headerLength);
    if (result !== SendResult.NoRoom) return result;
    return this.#retryWhenRoom(rx, pair, () => this.#reserve(rx, space, length, headerLength));
  }

  /**
   * {@inheritDoc GuestLink.reserveFrames}
   * The first frame is reserved as by reserveFrame; the others only while the guest's
   * buffers take them as a table with both headers in each frame's first buffer (a
   * Linux guest's), on the same RX queue. Each frame takes the chains its room needs,
   * so a later frame starts at a chain of its own.
   */
  reserveFrames(
    space: FrameSpace,
    frames: number,
    maxLength: number,
    headerLength: number,
  ): SendResult {
    const result = this.reserveFrame(space, maxLength, headerLength);
    if (result !== SendResult.Sent) {
      space.frames = 0;
      return result;
    }
    space.frames = 1;
    space.frameRooms[0] = space.length - headerLength;
    const rx = this.#rx!;
    if (
      frames <= 1 || space.vectors === null || headerLength <= 0 || space.frameRooms[0] === 0 ||
      this.#resHeaderBase.length === 0 || this.#resFrameHeaderBase.length === 0
    ) {
      return result; // a run of one frame
    }
    this.#keepRunFrame(0);
    const length = Math.max(headerLength, Math.min(maxLength, MAX_FRAME_LENGTH));
    const wanted = Math.min(frames, MAX_RUN_FRAMES);
    let count = 1;
    while (count < wanted) {
      const room = this.#appendRunFrame(rx, count, length, headerLength);
      if (room === 0) break;
      space.frameRooms[count++] = room;
    }
    this.#runFrames = count;
    if (count > 1) {
      this.counters.rxRuns++;
      this.counters.rxRunFrames += count;
    }
    space.frames = count;
    space.length = headerLength + space.vectors.totalBytes;
    return result;
  }

  /** Records the open reservation's headers' places and chains as frame `k` of the run. */
  #keepRunFrame(k: number): void {
    this.#runChainEnd[k] = this.#resChains;
    this.#runHeaderBase[k] = this.#resHeaderBase;
    this.#runHeaderAt[k] = this.#resHeaderAt;
    this.#runFrameHeaderBase[k] = this.#resFrameHeaderBase;
    this.#runFrameHeaderAt[k] = this.#resFrameHeaderAt;
    this.#runMalformedBefore[k] = this.#resMalformedBefore;
  }

  /** Makes frame `k` of the run the one committed next. */
  #loadRunFrame(k: number): void {
    this.#runNext = k;
    this.#resFirst = this.#runChainEnd[k - 1];
    this.#resHeaderBase = this.#runHeaderBase[k];
    this.#resHeaderAt = this.#runHeaderAt[k];
    this.#resFrameHeaderBase = this.#runFrameHeaderBase[k];
    this.#resFrameHeaderAt = this.#runFrameHeaderAt[k];
    this.#resMalformedBefore = this.#runMalformedBefore[k];
  }

  /**
   * Reserves frame `k` of a run behind the chains reserved so far: its first chain's
   * first buffer must hold the virtio-net header and the frame's headers, every byte
   * after them goes on the run's table. Returns the frame's payload room, or 0 when
   * no frame can be added (anything popped for it given back).
   */
  #appendRunFrame(rx: Virtqueue, k: number, length: number, headerLength: number): number {
    const size = rx.size;
    const start = this.#resChains;
    const vectors = this.#resVectors;
    if (start >= size || vectors.full) return 0;
    const malformedBefore = rx.malformedCount;
    const before = vectors.totalBytes;
    const needed = NET_HDR_SIZE + length;
    const headersEnd = NET_HDR_SIZE + headerLength;
    const heads = this.#resHeads;
    const rooms = this.#resRooms;
    const singles = this.#rxSingles;
    const chain = this.#rxLocated;
    let chains = start;
    let room = 0;
    let headerBase: Uint8Array = EMPTY_VIEW;
    let headerAt = 0;
    if (rx.popSingleBuffers(singles, 1, needed, headersEnd) === 1) {
      headerBase = singles.bases[0];
      headerAt = singles.offsets[0];
      room = singles.lengths[0];
      heads[chains] = singles.heads[0];
      rooms[chains++] = room;
      singles.release();
      if (room < this.#smallestRxChainBytes) this.#smallestRxChainBytes = room;
      if (room > headersEnd) {
        vectors.pushRange(headerBase, headerAt + headersEnd, room - headersEnd);
      }
    } else {
      if (!this.#popRx(rx, chain)) return 0;
      heads[chains] = chain.head;
      rooms[chains++] = chain.writableBytes;
      if (chain.lengths[0] < headersEnd) {
        chain.release();
        this.#resChains = chains;
        this.#giveBack(rx, start, malformedBefore);
        return 0;
      }
      headerBase = chain.bases[0];
      headerAt = chain.offsets[0];
      room = chain.writableBytes;
      this.#pushChainRoom(chain, headersEnd);
      chain.release();
    }
    while (room < needed && chains < size && this.#mergeable) {
      const taken = this.#reserveSingles(rx, chains, needed - room);
      for (const end = chains + taken; chains < end; chains++) room += rooms[chains];
      if (room >= needed || chains >= size || !this.#popRx(rx, chain)) break;
      heads[chains] = chain.head;
      rooms[chains++] = chain.writableBytes;
      room += chain.writableBytes;
      this.#pushChainRoom(chain, 0);
      chain.release();
    }
    this.#resChains = chains;
    if (!this.#mergeable) {
      this.#rxBufferFrameRoom = Math.min(MAX_FRAME_LENGTH, room - NET_HDR_SIZE);
    }
    vectors.truncate(before + Math.min(length, room - NET_HDR_SIZE) - headerLength);
    const payload = vectors.totalBytes - before;
    if (payload <= 0) {
      this.#giveBack(rx, start, malformedBefore);
      return 0;
    }
    this.#runChainEnd[k] = chains;
    this.#runHeaderBase[k] = headerBase;
    this.#runHeaderAt[k] = headerAt;
    this.#runFrameHeaderBase[k] = headerBase;
    this.#runFrameHeaderAt[k] = headerAt + NET_HDR_SIZE;
    this.#runMalformedBefore[k] = malformedBefore;
    return payload;
  }

  /**
   * Pops the single-buffer chains that come next (popSingleBuffers), up to `bytes`,
   * into the reservation from chain index `at` (heads, rooms, every byte on the
   * table). Returns how many were taken.
   */
  #reserveSingles(rx: Virtqueue, at: number, bytes: number): number {
    const singles = this.#rxSingles;
    const vectors = this.#resVectors;
    const taken = rx.popSingleBuffers(singles, rx.size - at, bytes, NET_HDR_SIZE);
    for (let i = 0; i < taken; i++) {
      const n = singles.lengths[i];
      this.#resHeads[at + i] = singles.heads[i];
      this.#resRooms[at + i] = n;
      if (!vectors.full) vectors.pushRange(singles.bases[i], singles.offsets[i], n);
      if (n < this.#smallestRxChainBytes) this.#smallestRxChainBytes = n;
    }
    singles.release();
    return taken;
  }

  /** Puts a located chain's buffers on the reservation's table, from byte `skip` of the chain. */
  #pushChainRoom(chain: DescriptorChain, skip: number): void {
    const vectors = this.#resVectors;
    let left = skip;
    for (let i = 0; i < chain.count && !vectors.full; i++) {
      const n = chain.lengths[i];
      if (left >= n) {
        left -= n;
        continue;
      }
      vectors.pushRange(chain.bases[i], chain.offsets[i] + left, n - left);
      left = 0;
    }
  }

  /**
   * Reserves as a table when the caller accepts one (and the headers fit the first
   * chain), else as views. While the ring's writes are logged (a migration) always as
   * views: commit and cancel report the views' bytes to the dirty log, and a table's
   * bytes, written by the kernel, would go unreported.
   */
  #reserve(
    rx: Virtqueue,
    space: FrameSpace,
    length: number,
    headerLength: number,
  ): SendResult {
    if (space.acceptVectors && rx.writeLog === null) {
      const result = this.#reserveLocated(rx, space, length, headerLength);
      if (result !== RESERVE_AS_VIEWS) return result;
    }
    space.vectors = null;
    return this.#reserveChains(rx, space, length, headerLength);
  }

  /**
   * Pops the chains of one reservation without making a view per guest buffer: the
   * virtio-net header is written at commit where it lies, the frame's headers go to a
   * scratch copied into their buffer at commit, and every byte after them is an iovec
   * table. Returns RESERVE_AS_VIEWS (everything given back) when the first chain
   * cannot hold both headers or its buffers split the frame's headers, for the
   * general path.
   */
  #reserveLocated(
    rx: Virtqueue,
    space: FrameSpace,
    length: number,
    headerLength: number,
  ): SendResult | typeof RESERVE_AS_VIEWS {
    if (this.#resHeads.length < rx.size) {
      this.#resHeads = new Uint16Array(rx.size);
      this.#resRooms = new Uint32Array(rx.size);
    }
    this.#resMalformedBefore = rx.malformedCount;
    this.#resHeaderBase = EMPTY_VIEW;
    this.#resFrameHeaderBase = EMPTY_VIEW;
    const chain = this.#rxLocated;
    const vectors = this.#resVectors;
    vectors.clear();
    const needed = NET_HDR_SIZE + length;
    const headersEnd = NET_HDR_SIZE + headerLength; // in the first chain
    const heads = this.#resHeads;
    const rooms = this.#resRooms;
    const bases = chain.bases;
    const offsets = chain.offsets;
    const lengths = chain.lengths;
    const mergeable = this.#mergeable;
    const size = rx.size;
    let chains = 0;
    let room = 0;
    let headerViews = 0;
    let frameViews = 0;
    let headersSplit = false;
    if (headerLength > 0) {
      // The common first chain (a Linux guest's: one buffer, holding both headers) is
      // taken like the chains after it, without a chain walk; any other shape is
      // popped below.
      const singles = this.#rxSingles;
      if (rx.popSingleBuffers(singles, 1, needed, headersEnd) === 1) {
        const base = singles.bases[0];
        const offset = singles.offsets[0];
        const n = singles.lengths[0];
        heads[0] = singles.heads[0];
        singles.release();
        rooms[0] = n;
        chains = 1;
        room = n;
        if (n < this.#smallestRxChainBytes) this.#smallestRxChainBytes = n;
        this.#resHeaderBase = base;
        this.#resHeaderAt = offset;
        space.views[frameViews++] = this.#frameHeadersAt(base, offset + NET_HDR_SIZE, headerLength);
        if (n > headersEnd) vectors.pushRange(base, offset + headersEnd, n - headersEnd);
      }
    }
    while (room < needed && chains < size && (chains === 0 || mergeable)) {
      if (chains > 0) {
        // The common chains (a Linux guest's: one page-sized buffer each) in one call;
        // a chain of another shape is popped below, then this goes on.
        const taken = this.#reserveSingles(rx, chains, needed - room);
        for (const end = chains + taken; chains < end; chains++) room += rooms[chains];
        if (room >= needed || chains >= size) break;
      }
      if (!this.#popRx(rx, chain)) break;
      const writable = chain.writableBytes;
      heads[chains] = chain.head;
      rooms[chains] = writable;
      chains++;
      if (chains === 1 && writable < headersEnd) {
        chain.release();
        break; // checked below
      }
      const count = chain.count;
      if (chains > 1 && count === 1) {
        // The common chain (a Linux guest's: one page-sized buffer): one entry.
        if (!vectors.full) vectors.pushRange(bases[0], offsets[0], lengths[0]);
        room += writable;
        chain.release();
        continue;
      }
      let at = 0; // position in this chain
      for (let i = 0; i < count; i++) {
        const base = bases[i];
        const offset = offsets[i];
        const n = lengths[i];
        if (chains === 1 && at < headersEnd) {
          // The virtio-net header, then the frame's headers: views (written by us).
          if (at === 0 && n >= NET_HDR_SIZE) {
            this.#resHeaderBase = base;
            this.#resHeaderAt = offset;
          } else if (at < NET_HDR_SIZE) {
            const end = Math.min(n, NET_HDR_SIZE - at);
            this.#resHeaderViews[headerViews++] = base.subarray(offset, offset + end);
          }
          const from = Math.max(at, NET_HDR_SIZE);
          const to = Math.min(at + n, headersEnd);
          if (from === NET_HDR_SIZE && to === headersEnd && headerLength > 0) {
            // All of the frame's headers in this buffer: written to a scratch, copied
            // here on commit (a view per frame costs more than the copy).
            space.views[frameViews++] = this.#frameHeadersAt(
              base,
              offset + from - at,
              headerLength,
            );
          } else if (from < to) {
            headersSplit = true; // checked below
          }
          if (at + n > headersEnd && !vectors.full) {
            vectors.pushRange(base, offset + headersEnd - at, at + n - headersEnd);
          }
        } else if (!vectors.full) {
          vectors.pushRange(base, offset, n);
        }
        at += n;
      }
      room += writable;
      chain.release();
    }
    this.#resChains = chains;
    this.#resViewCount = 0;
    this.#resHeaderCount = headerViews;
    this.#resScratch = false;
    this.#resOpen = chains > 0;
    if (chains === 0) return SendResult.NoRoom;
    if (this.#resRooms[0] < headersEnd || headersSplit) {
      // The frame's headers must come as one view: the general path copies them from
      // its scratch when the first chain's buffers split them.
      this.cancelFrame();
      return RESERVE_AS_VIEWS;
    }
    if (!this.#mergeable) {
      this.#rxBufferFrameRoom = Math.min(MAX_FRAME_LENGTH, room - NET_HDR_SIZE);
    }
    const capacity = Math.min(length, room - NET_HDR_SIZE);
    vectors.truncate(capacity - headerLength);
    space.count = frameViews;
    space.vectors = vectors;
    space.vectorsFrom = headerLength;
    space.length = headerLength + vectors.totalBytes;
    return SendResult.Sent;
  }

  /** Pops the chains of one reservation; NoRoom (all given back) when too few are posted. */
  #reserveChains(
    rx: Virtqueue,
    space: FrameSpace,
    length: number,
    headerLength: number,
  ): SendResult {
    if (this.#resHeads.length < rx.size) {
      this.#resHeads = new Uint16Array(rx.size);
      this.#resRooms = new Uint32Array(rx.size);
    }
    this.#resMalformedBefore = rx.malformedCount;
    this.#resHeaderBase = EMPTY_VIEW;
    this.#resFrameHeaderBase = EMPTY_VIEW;
    const untouched = rx.turnUntouched;
    const chain = this.#rxNext;
    const needed = NET_HDR_SIZE + length;
    let chains = 0;
    let room = 0;
    let viewCount = 0;
    let skip = NET_HDR_SIZE;
    const views = this.#resViews;
    while (room < needed && chains < rx.size && (chains === 0 || this.#mergeable)) {
      if (!this.#popRx(rx, chain)) break;
      this.#resHeads[chains] = chain.head;
      this.#resRooms[chains] = chain.writableBytes;
      if (chains === 0) {
        for (let i = 0; i < chain.count; i++) this.#resHeaderViews[i] = chain.buffers[i];
        this.#resHeaderCount = chain.count;
      }
      for (let i = 0; i < chain.count; i++) {
        const buffer = chain.buffers[i];
        if (skip >= buffer.length) {
          skip -= buffer.length;
          continue;
        }
        views[viewCount++] = skip > 0 ? buffer.subarray(skip) : buffer;
        skip = 0;
      }
      room += chain.writableBytes;
      chains++;
      chain.release();
    }
    this.#resChains = chains;
    this.#resViewCount = viewCount;
    this.#resOpen = chains > 0;
    if (chains === 0) return SendResult.NoRoom;
    if (!this.#mergeable) {
      this.#rxBufferFrameRoom = Math.min(MAX_FRAME_LENGTH, room - NET_HDR_SIZE);
    }
    const capacity = Math.min(length, room - NET_HDR_SIZE);
    if (capacity < headerLength) {
      if (
        this.#mergeable && chains < rx.size && untouched && rx.turnSpent &&
        rx.malformedCount === this.#resMalformedBefore
      ) {
        // As in sendFrame: a whole turn's descriptors did not gather room for the
        // headers, so no later turn could: return the chains empty.
        for (let i = 0; i < chains; i++) rx.pushUsed(this.#resHeads[i], 0);
        this.#dropReservation();
        this.#rxLog.write(
          this.#clock(),
          `vhost-user: dropping a frame: its RX buffers take more than ${TURN_DESCRIPTOR_BUDGET} descriptors`,
        );
        return SendResult.Dropped;
      }
      this.cancelFrame();
      // Without MRG_RXBUF a buffer this small never holds the headers: nothing to wait for.
      return this.#mergeable && chains < rx.size ? SendResult.NoRoom : SendResult.Dropped;
    }
    this.#resScratch = views[0].length < headerLength;
    if (this.#resScratch) {
      space.views[0] = this.#resScratchBuffer.subarray(0, capacity);
      space.count = 1;
    } else {
      let left = capacity;
      let count = 0;
      for (let i = 0; i < viewCount && left > 0; i++) {
        const view = views[i];
        space.views[count++] = view.length <= left ? view : view.subarray(0, left);
        left -= Math.min(view.length, left);
      }
      space.count = count;
    }
    space.length = capacity;
    this.#resCapacity = this.#resScratch ? 0 : capacity;
    return SendResult.Sent;
  }

  /**
   * {@inheritDoc GuestLink.commitFrame}
   * Chains the frame did not need go back to the ring.
   */
  commitFrame(
    length: number,
    checksumStart = 0,
    checksumOffset = 0,
    segments?: TcpSegments,
  ): SendResult {
    const rx = this.#rx;
    if (!this.#resOpen || rx === null || rx.broken) {
      this.#dropReservation();
      return SendResult.Dropped;
    }
    const needed = NET_HDR_SIZE + length;
    const first = this.#resFirst;
    // A run's frame before its last ends where the next one's chains start.
    let more = this.#runNext < this.#runFrames - 1;
    const end = more ? this.#runChainEnd[this.#runNext] : this.#resChains;
    let room = 0;
    for (let i = first; i < end; i++) room += this.#resRooms[i];
    const segmented = segments !== undefined && segments.size > 0 &&
      length - segments.headerLength > segments.size;
    if (
      length <= 0 || needed > room ||
      (checksumStart > 0 && (!this.#rxDataValid || checksumStart + checksumOffset + 2 > length)) ||
      (segmented &&
        ((segments.kind & this.#rxSegmentation) === 0 || checksumStart === 0 ||
          segments.headerLength <= checksumStart))
    ) {
      this.cancelFrame();
      return SendResult.Dropped;
    }
    if (this.#resScratch) {
      let at = 0;
      for (let i = 0; i < this.#resViewCount && at < length; i++) {
        const view = this.#resViews[i];
        const n = Math.min(view.length, length - at);
        view.set(this.#resScratchBuffer.subarray(at, at + n));
        at += n;
      }
      this.#resCapacity = length;
    }
    let used = 0;
    let left = needed;
    while (left > 0) {
      left -= Math.min(this.#resRooms[first + used], left);
      used++;
    }
    const header = this.#rxHeader(checksumStart, checksumOffset, used);
    if (segmented) {
      // virtio 1.2 §5.1.6.4: the guest takes it as segments of gso_size behind hdr_len
      // bytes of headers (Linux: virtio_net_hdr_to_skb).
      header.gsoType = segments.kind === TcpSegmentation.Ipv4
        ? VIRTIO_NET_HDR_GSO_TCPV4
        : VIRTIO_NET_HDR_GSO_TCPV6;
      header.gsoSize = segments.size;
      header.hdrLen = segments.headerLength;
      this.counters.rxSegmented++;
    }
    if (this.#resFrameHeaderBase.length !== 0) {
      this.#resFrameHeaderBase.set(this.#frameHeaderView, this.#resFrameHeaderAt);
    }
    const head0 = this.#resHeaderViews[0];
    if (this.#resHeaderBase.length !== 0) {
      encodeNetHeader(header, this.#resHeaderBase, this.#resHeaderAt);
    } else if (head0.length >= NET_HDR_SIZE) {
      encodeNetHeader(header, head0, 0);
    } else {
      encodeNetHeader(header, this.#headerBytes, 0);
      let at = 0;
      for (let i = 0; i < this.#resHeaderCount && at < NET_HDR_SIZE; i++) {
        const view = this.#resHeaderViews[i];
        const n = Math.min(view.length, NET_HDR_SIZE - at);
        view.set(this.#headerBytes.subarray(at, at + n));
        at += n;
      }
    }
    const writeLog = rx.writeLog;
    if (writeLog !== null) this.#reportReservation(writeLog);
    if (first + used < end) {
      // Shorter than its room: the chains it did not need and the run's later frames
      // go back, and the run ends here.
      this.#giveBack(rx, first + used);
      more = false;
    }
    // Each chain's used length, in place of its room (not needed after this).
    const lengths = this.#resRooms;
    left = needed;
    for (let i = first; i < first + used; i++) {
      const n = Math.min(lengths[i], left);
      lengths[i] = n;
      left -= n;
    }
    rx.pushUsedChains(this.#resHeads, lengths, used, first);
    this.counters.rxFrames++;
    this.#rxPair!.rxFrames++;
    this.counters.rxChains += used;
    if (more) this.#loadRunFrame(this.#runNext + 1);
    else this.#dropReservation();
    return SendResult.Sent;
  }

  /** {@inheritDoc GuestLink.cancelFrame} */
  cancelFrame(): void {
    const rx = this.#rx;
    if (this.#resOpen && rx !== null) {
      // the caller may have written into the room before giving it up
      const writeLog = rx.writeLog;
      if (writeLog !== null) this.#reportReservation(writeLog);
      this.#giveBack(rx, this.#resFirst);
    }
    this.#dropReservation();
  }

  /**
   * Reports the reservation's writes into guest memory to `log`: the room handed out
   * (the caller may have written any of it; on commit from the scratch buffer, the
   * bytes copied) and the virtio-net header's bytes (written on commit; reported on
   * cancel too, where a page too many costs only its copy).
   */
  #reportReservation(log: GuestWriteLog): void {
    let left = this.#resCapacity;
    for (let i = 0; i < this.#resViewCount && left > 0; i++) {
      const view = this.#resViews[i];
      const n = Math.min(view.length, left);
      log.markView(view, 0, n);
      left -= n;
    }
    if (this.#resHeaderBase.length !== 0) {
      log.markView(this.#resHeaderBase, this.#resHeaderAt, NET_HDR_SIZE);
    }
    left = NET_HDR_SIZE;
    for (let i = 0; i < this.#resHeaderCount && left > 0; i++) {
      const view = this.#resHeaderViews[i];
      const n = Math.min(view.length, left);
      log.markView(view, 0, n);
      left -= n;
    }
  }

  /**
   * Returns the reserved chains from index `keep` on to the ring: unpopped when no
   * chain was dropped since `malformedBefore` (taken before the first of them was
   * popped), else used and empty. They are no longer reserved.
   */
  #giveBack(rx: Virtqueue, keep: number, malformedBefore = this.#resMalformedBefore): void {
    const unused = this.#resChains - keep;
    if (unused <= 0) return;
    if (rx.malformedCount === malformedBefore) {
      rx.unpop(unused);
    } else {
      // A dropped chain sits among ours: unpop would hand it out again.
      for (let i = keep; i < this.#resChains; i++) rx.pushUsed(this.#resHeads[i], 0);
    }
    this.#resChains = keep;
  }

  /** Forgets the reservation's views (no reference into guest memory outlives it). */
  #dropReservation(): void {
    this.#resOpen = false;
    this.#resCapacity = 0;
    for (let i = 0; i < this.#resViewCount; i++) this.#resViews[i] = EMPTY_VIEW;
    for (let i = 0; i < this.#resHeaderCount; i++) this.#resHeaderViews[i] = EMPTY_VIEW;
    this.#resHeaderBase = EMPTY_VIEW;
    this.#resFrameHeaderBase = EMPTY_VIEW;
    this.#resViewCount = 0;
    this.#resHeaderCount = 0;
    this.#resChains = 0;
    for (let k = 0; k < Math.max(1, this.#runFrames); k++) {
      this.#runHeaderBase[k] = EMPTY_VIEW;
      this.#runFrameHeaderBase[k] = EMPTY_VIEW;
    }
    this.#runFrames = 0;
    this.#runNext = 0;
    this.#resFirst = 0;
  }

  /**
   * Makes `bytes` at `at` where commit copies the frame's `length` header bytes, and
   * returns the scratch they are written to meanwhile (the view is kept while lengths
   * repeat).
   */
  #frameHeadersAt(bytes: Uint8Array, at: number, length: number): Uint8Array {
    this.#resFrameHeaderBase = bytes;
    this.#resFrameHeaderAt = at;
    if (this.#frameHeaderView.length !== length) {
      // The scratch of split headers, which a table reservation never uses.
      this.#frameHeaderView = this.#resScratchBuffer.subarray(0, length);
    }
    return this.#frameHeaderView;
  }

  /**
   * Fills the reused virtio-net header of an RX frame (virtio 1.2 §5.1.6.4): NEEDS_CSUM
   * with its position for a partial checksum, else DATA_VALID when GUEST_CSUM was
   * negotiated; no segmentation; `numBuffers` buffers under MRG_RXBUF.
   */
  #rxHeader(checksumStart: number, checksumOffset: number, numBuffers: number): NetHeader {
    const header = this.#header;
    const partial = checksumStart > 0;
    header.flags = partial
      ? VIRTIO_NET_HDR_F_NEEDS_CSUM
      : this.#rxDataValid
      ? VIRTIO_NET_HDR_F_DATA_VALID
      : 0;
    header.gsoType = VIRTIO_NET_HDR_GSO_NONE;
    header.hdrLen = 0;
    header.gsoSize = 0;
    header.csumStart = partial ? checksumStart : 0;
    header.csumOffset = partial ? checksumOffset : 0;
    header.numBuffers = numBuffers;
    return header;
  }

  /** {@inheritDoc GuestLink.flush} Also ends the RX turn: the stack flushes at the end of each batch. */
  flush(): void {
    // every running RX queue: frames of one batch may have gone to several
    const pairs = this.#rxPairs;
    for (let i = 0; i < pairs.length; i++) {
      const rx = pairs[i].rx!;
      rx.publish();
      rx.beginTurn();
    }
  }

  /** {@inheritDoc GuestLink.onWritable} */
  onWritable(callback: (now: number) => void): void {
    this.#writable = callback;
  }
}
