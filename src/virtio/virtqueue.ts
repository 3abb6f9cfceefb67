/**
 * The device side of one split virtqueue (virtio 1.2 §2.7): pops available
 * descriptor chains, validates them against guest memory, pushes used elements and
 * decides when the guest must be notified.
 *
 * Everything the guest wrote is untrusted: each descriptor is read once into
 * locals, every buffer range is resolved through {@link GuestMemory} as a whole (a
 * buffer that runs from one memory region into the adjacent one becomes one view
 * per region), chains are bounded by the queue size (descriptors) and by the
 * chain's capacity (views). A malformed chain is returned to the guest with used
 * length 0 and one rate-limited log line.
 *
 * Chains the driver has made available must not share descriptors: a driver places
 * each buffer into *free* descriptors (virtio 1.2 §2.7.13, step 1, "The driver places
 * the buffer into free descriptor(s) in the descriptor table"), and once the available
 * index exposes a chain "the device MAY access the descriptor chains the driver
 * created and the memory they refer to" (§2.7.13.3) until it returns them through the
 * used ring, "where the device returns buffers once it is done with them" (§2.7.8).
 * So between two publishes of the used index (see {@link SplitVirtqueue.publish}) no
 * descriptor may be reached by two chains: each descriptor index is stamped with the
 * id of the chain that walked it, and a chain that reaches a descriptor stamped by
 * another chain since the last publish is malformed (walking it stops there). Indirect
 * tables of more than {@link SHARED_TABLE_CHECK_MIN_ENTRIES} entries are checked
 * alike by their guest address range. Without this, every head could start the same
 * long chain or name the same indirect table, and a ring of `size` heads would make
 * `size`² descriptors; a chain revisiting its own descriptors (a loop) is left to the
 * chain length rule.
 *
 * Work is still bounded per turn of the event loop, in descriptors walked (chains may
 * be long and many, small indirect tables may be shared). Each turn
 * the caller opens with {@link SplitVirtqueue.beginTurn} may walk
 * {@link TURN_DESCRIPTOR_BUDGET} descriptors, plus the rest of the chain that
 * crosses the limit; then pop() returns false with chains still available
 * ({@link SplitVirtqueue.turnSpent}) and the caller continues on a later turn.
 *
 * The queue is marked broken, and never touched again until restarted, when the
 * ring is inconsistent (head index out of range, available index running ahead by
 * more than the queue size) or when it yields {@link MALFORMED_RUN_LIMIT} malformed
 * chains in a row, or malformed chains worth {@link MALFORMED_RUN_DESCRIPTOR_LIMIT}
 * descriptors walked in a row: chains the engine rejects and chains the caller rejects
 * ({@link SplitVirtqueue.rejectChain}, {@link SplitVirtqueue.dropChain}) count
 * alike, and any chain the caller uses ({@link SplitVirtqueue.pushUsed}) ends the
 * run.
 *
 * @module
 */

import type { Logger } from "../log/logger.ts";
import { log as defaultLogger } from "../log/logger.ts";
import { RateLimitedLog } from "../log/rate_limited_log.ts";
import type { StartedVring } from "./started_vring.ts";
import { type GuestMemory, PIECES_NO_ROOM } from "./guest_memory.ts";
import type { GuestWriteLog } from "./guest_write_log.ts";
import { DescriptorChain } from "./descriptor_chain.ts";
import type { SingleBufferChains } from "./single_buffer_chains.ts";
import {
  CHAIN_ID_LIMIT,
  mapIndirectTable,
  SHARED_TABLE_CHECK_MIN_ENTRIES,
  storeBuffer,
} from "./chain_buffers.ts";
import { Fault, FaultRecord, type FaultTerms, malformedRunVerdict } from "./chain_fault.ts";
import { IndirectTableClaims } from "./indirect_table_claims.ts";
import { memoryFence } from "./memory_fence.ts";
import { viewOf } from "./ring_bytes.ts";
import {
  AVAIL_FLAGS,
  AVAIL_IDX,
  AVAIL_RING,
  availableRingBytes,
  availEventOffset,
  DESC_ADDR_HIGH,
  DESC_ADDR_LOW,
  DESC_FLAGS,
  DESC_LEN,
  DESC_NEXT,
  DESC_SIZE,
  descriptorTableBytes,
  MAX_QUEUE_SIZE,
  needEvent,
  USED_ELEM_LEN,
  USED_ELEM_SIZE,
  USED_FLAGS,
  USED_IDX,
  USED_RING,
  usedEventOffset,
  usedRingBytes,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
} from "./ring_layout.ts";

/**
 * Descriptors one turn may walk (each read of a descriptor counts, an indirect
 * one and the entries of its table alike). Walking hostile rings costs 50–130 ns
 * per descriptor here (bench/ring_engine_bench.ts, "hostile" lines: a view per
 * descriptor, gathering, the link's checks), so a turn lasts 3–9 ms at most. A
 * legitimate turn needs far less: a full 1,024-entry ring (QEMU's largest) of
 * Linux TX chains of at most 19 descriptors (MAX_SKB_FRAGS + 2) is under 20,000.
 * Chains that share no descriptors walk at most the queue size plus one descriptor per
 * chain between publishes; what remains for the budget is many long chains and heads
 * sharing small indirect tables (see {@link SHARED_TABLE_CHECK_MIN_ENTRIES}).
 */
export const TURN_DESCRIPTOR_BUDGET = 65_536;

/**
 * Malformed chains in a row, with no used chain between them, after which the queue
 * is marked broken. A working driver never makes one (QEMU itself stops the device
 * at the first); the margin only spares a guest with a rare glitch. Bounds what a
 * guest feeding only garbage costs: at most this many chains of at most `size`
 * descriptors each.
 */
export const MALFORMED_RUN_LIMIT = 64;

/**
 * Descriptors walked since the last used chain after which a malformed chain marks the
 * queue broken: two turns' budget. Bounds the work a guest feeding long malformed chains
 * (loops through a 32,768 ring) costs per ring start to about two turns (~6–18 ms),
 * where {@link MALFORMED_RUN_LIMIT} alone would allow 64 × 32,768 descriptors (a fuzz
 * run saw the daemon busy for ~160 ms after each restart of such a ring).
 */
export const MALFORMED_RUN_DESCRIPTOR_LIMIT = 2 * TURN_DESCRIPTOR_BUDGET;

export { SHARED_TABLE_CHECK_MIN_ENTRIES };

/** Options of a {@link SplitVirtqueue}. */
export interface VirtqueueOptions {
  /** Name used in log lines, e.g. "RX" or "TX". */
  readonly name?: string;
  /** Where log lines go (the process-wide logger by default). */
  readonly logger?: Logger;
  /** Monotonic clock in milliseconds, read only to rate-limit log lines when no `now` is given. */
  readonly clock?: () => number;
}

/**
 * The descriptor flags popSingleBuffers looks at (virtio 1.2 §2.7.5): a chain is one
 * device-writable buffer when, of these, only WRITE is set.
 */
const SINGLE_BUFFER_FLAG_MASK = VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_INDIRECT;

/** The words of the split ring's log lines. */
const SPLIT_TERMS: FaultTerms = {
  element: "descriptor",
  slot: "descriptor",
  unit: "chain",
  views: "buffer views",
};

/**
 * The device side of one virtqueue, split (virtio 1.2 §2.7, {@link SplitVirtqueue}) or
 * packed (§2.8, PackedVirtqueue in packed_virtqueue.ts): what the datapath uses to take
 * the driver's buffers and give them back. A chain's {@link DescriptorChain.head} is
 * what {@link Virtqueue.pushUsed} returns it by (the head descriptor index of a split
 * ring, the Buffer ID of a packed one).
 */
export interface Virtqueue {
  /** Queue size (number of descriptors). */
  readonly size: number;
  /** Name used in log lines. */
  readonly name: string;
  /** True once the guest's ring was found inconsistent; the queue then stays idle. */
  readonly broken: boolean;
  /** Number of chains returned as malformed since construction (ours and the caller's). */
  readonly malformedCount: number;
  /** Descriptors walked since construction (indirect descriptors and table entries included). */
  readonly descriptorsWalked: number;
  /**
   * Where to resume (VHOST_USER_GET_VRING_BASE `num`): the next available index of a
   * split ring; both positions and wrap counters of a packed ring (packed_ring_layout.ts).
   */
  readonly vringBase: number;
  /** Where writes into guest memory are reported (null: dirty pages are not logged). */
  readonly writeLog: GuestWriteLog | null;
  /** Starts (a log) or stops (null) reporting writes into guest memory from now on. */
  setWriteLog(log: GuestWriteLog | null): void;
  /** Opens a turn: pop() may walk {@link TURN_DESCRIPTOR_BUDGET} more descriptors. */
  beginTurn(): void;
  /** True when this turn's descriptor budget is spent: pop() returns false until beginTurn(). */
  readonly turnSpent: boolean;
  /** True when nothing was walked since the turn was opened. */
  readonly turnUntouched: boolean;
  /** Tells whether the guest has made chains available that were not popped yet. */
  hasAvailable(): boolean;
  /** How many chains the guest has made available that were not popped yet (0 when broken). */
  availableCount(): number;
  /** Pops the next valid available chain into `chain` (malformed ones are returned on the way). */
  pop(chain: DescriptorChain, now?: number): boolean;
  /**
   * Pops chains into `out`, located, while the next one is a single device-writable
   * buffer of at least `minLength` bytes inside one memory region (a Linux guest's RX
   * buffers), until `maxChains` (at most `out.capacity`) were taken or they hold
   * `bytes`. Stops, leaving that chain available, at the first chain of any other shape
   * — pop() walks it in full, and drops it if it is malformed — and wherever pop() would
   * stop. Every chain taken is what pop() would have returned, counted alike. An engine
   * may take none (the packed one does): pop() then takes each.
   * @returns the chains taken (`out.count`)
   */
  popSingleBuffers(
    out: SingleBufferChains,
    maxChains: number,
    bytes: number,
    minLength: number,
  ): number;
  /** Returns a popped chain the caller found unusable, with a rate-limited log line. */
  dropChain(head: number, reason: string, now?: number): void;
  /** Returns a popped chain the caller found unusable and logged itself. */
  rejectChain(head: number): void;
  /** Records that chain `head` was used, `length` bytes written; published by publish(). */
  pushUsed(head: number, length: number): void;
  /**
   * Records chains `heads[from..from + count)` used with `lengths[from..from + count)`
   * bytes written, in order: what pushUsed() of each does, in one call (a 64 KiB RX
   * frame takes ~16 chains).
   */
  pushUsedChains(heads: Uint16Array, lengths: Uint32Array, count: number, from?: number): void;
  /** Sets the length of the used element pushed `back` elements ago (1 = the last), not yet published. */
  rewriteUsedLength(back: number, length: number): void;
  /** Number of used elements pushed and not yet published. */
  readonly unpublished: number;
  /** Publishes the used elements pushed so far and notifies the guest when it asked for it. */
  publish(): boolean;
  /** Asks the guest to kick for chains beyond those seen; true when some arrived meanwhile. */
  enableNotifications(): boolean;
  /** Tells the guest that kicks are not needed now. */
  disableNotifications(): void;
  /** Puts the last `count` popped (and not used) chains back, so the next pop returns them again. */
  unpop(count: number): void;
}

/**
 * What both ring engines (split: {@link SplitVirtqueue}, packed: PackedVirtqueue in
 * packed_virtqueue.ts) keep alike: the queue's name and log, the write log, the
 * broken state, the descriptors walked and the turn's budget, and the run of
 * malformed chains that breaks the queue ({@link MALFORMED_RUN_LIMIT},
 * {@link MALFORMED_RUN_DESCRIPTOR_LIMIT}). An engine walks its ring, counting each
 * descriptor read in {@link walked}, and writes used elements in
 * {@link pushUsedElement}.
 */
export abstract class VirtqueueEngine implements Virtqueue {
  /** Queue size (number of descriptors). */
  readonly size: number;
  /** Name used in log lines. */
  readonly name: string;
  /** What log lines call what the driver made available: "chain" (split), "buffer" (packed). */
  readonly #unit: string;
  /** Where log lines go. */
  protected readonly logger: Logger;
  /** Monotonic clock in milliseconds, read only to rate-limit log lines when no `now` is given. */
  protected readonly clock: () => number;
  /** The rate-limited warnings about malformed chains. */
  protected readonly malformedLog: RateLimitedLog;
  /** Where ring writes are reported while dirty pages are logged; null otherwise. */
  protected guestWriteLog: GuestWriteLog | null;
  /** True once the ring was found inconsistent. */
  protected isBroken = false;
  /** Chains returned as malformed since construction. */
  protected skipped = 0;
  /** Malformed chains since the last used one (see {@link MALFORMED_RUN_LIMIT}). */
  protected malformedRun = 0;
  /** {@link walked} when the last chain was used (or the queue started). */
  protected walkedAtLastUse = 0;
  /** Descriptors walked since construction. */
  protected walked = 0;
  /** The current turn ends once {@link walked} reaches this. */
  protected turnEnd = TURN_DESCRIPTOR_BUDGET;

  constructor(ring: StartedVring, options: VirtqueueOptions, unit: string) {
    this.size = ring.size;
    this.name = options.name ?? `queue ${ring.index}`;
    this.#unit = unit;
    this.logger = options.logger ?? defaultLogger;
    this.clock = options.clock ?? (() => performance.now());
    this.malformedLog = new RateLimitedLog("warn", undefined, this.logger);
    this.guestWriteLog = ring.writeLog ?? null;
  }

  /**
   * Where writes into guest memory are reported (null: dirty pages are not logged).
   * The queue reports its own ring writes; the caller reports what it writes into
   * the chains' buffers here too.
   */
  get writeLog(): GuestWriteLog | null {
    return this.guestWriteLog;
  }

  /** Starts (a log) or stops (null) reporting writes into guest memory from now on. */
  setWriteLog(log: GuestWriteLog | null): void {
    this.guestWriteLog = log;
  }

  /** True once the guest's ring was found inconsistent; the queue then stays idle. */
  get broken(): boolean {
    return this.isBroken;
  }

  /** Number of chains returned as malformed since construction (ours and the caller's). */
  get malformedCount(): number {
    return this.skipped;
  }

  /** Descriptors walked since construction (indirect descriptors and table entries included). */
  get descriptorsWalked(): number {
    return this.walked;
  }

  /**
   * Opens a turn: pop() may walk {@link TURN_DESCRIPTOR_BUDGET} more descriptors
   * (plus the rest of the chain that crosses the limit). A new queue starts with a
   * turn open.
   */
  beginTurn(): void {
    this.turnEnd = this.walked + TURN_DESCRIPTOR_BUDGET;
  }

  /** True when this turn's descriptor budget is spent: pop() returns false until beginTurn(). */
  get turnSpent(): boolean {
    return this.walked >= this.turnEnd;
  }

  /** True when nothing was walked since the turn was opened. */
  get turnUntouched(): boolean {
    return this.walked + TURN_DESCRIPTOR_BUDGET === this.turnEnd;
  }

  /** Marks the queue broken (never touched again until restarted), with one error line. */
  protected markBroken(reason: string): void {
    this.isBroken = true;
    this.logger.error(`virtqueue ${this.name} is broken and stops: ${reason}`);
  }

  /**
   * Returns a popped chain the caller found unusable (e.g. a TX chain with writable
   * buffers) with used length 0, with one rate-limited log line. It counts toward
   * {@link MALFORMED_RUN_LIMIT}.
   */
  dropChain(head: number, reason: string, now?: number): void {
    this.malformedLog.write(
      now ?? this.clock(),
      `virtqueue ${this.name}: dropping ${this.#unit} ${head}: ${reason}`,
    );
    this.returnMalformed(head);
  }

  /**
   * Like {@link dropChain}, for a caller that logged the reason itself: returns the
   * chain with length 0 and counts it toward {@link MALFORMED_RUN_LIMIT}.
   */
  rejectChain(head: number): void {
    this.returnMalformed(head);
  }

  /** Returns a malformed chain with length 0; breaks the queue at the end of a long run of them. */
  protected returnMalformed(head: number): void {
    this.skipped++;
    this.pushUsedElement(head, 0);
    if (this.isBroken) return;
    const verdict = malformedRunVerdict(
      ++this.malformedRun,
      MALFORMED_RUN_LIMIT,
      this.walked - this.walkedAtLastUse,
      MALFORMED_RUN_DESCRIPTOR_LIMIT,
    );
    if (verdict !== null) this.markBroken(verdict);
  }

  /**
   * Records that chain `head` was used, `length` bytes written; published by
   * publish(). A used chain ends a run of malformed ones.
   */
  pushUsed(head: number, length: number): void {
    this.malformedRun = 0;
    this.walkedAtLastUse = this.walked;
    this.pushUsedElement(head, length);
  }

  /** {@inheritDoc Virtqueue.pushUsedChains} */
  pushUsedChains(heads: Uint16Array, lengths: Uint32Array, count: number, from = 0): void {
    if (count <= 0) return;
    this.malformedRun = 0;
    this.walkedAtLastUse = this.walked;
    for (let i = from; i < from + count; i++) this.pushUsedElement(heads[i], lengths[i]);
  }

  /** Writes the used element of chain `head` with `length` bytes written (published by publish()). */
  protected abstract pushUsedElement(head: number, length: number): void;

  /** {@inheritDoc Virtqueue.vringBase} */
  abstract readonly vringBase: number;
  /** {@inheritDoc Virtqueue.unpublished} */
  abstract readonly unpublished: number;
  /** {@inheritDoc Virtqueue.hasAvailable} */
  abstract hasAvailable(): boolean;
  /** {@inheritDoc Virtqueue.availableCount} */
  abstract availableCount(): number;
  /** {@inheritDoc Virtqueue.pop} */
  abstract pop(chain: DescriptorChain, now?: number): boolean;
  /** {@inheritDoc Virtqueue.popSingleBuffers} This engine takes none; pop() takes each chain. */
  popSingleBuffers(
    out: SingleBufferChains,
    _maxChains: number,
    _bytes: number,
    _minLength: number,
  ): number {
    out.count = 0;
    return 0;
  }
  /** {@inheritDoc Virtqueue.rewriteUsedLength} */
  abstract rewriteUsedLength(back: number, length: number): void;
  /** {@inheritDoc Virtqueue.publish} */
  abstract publish(): boolean;
  /** {@inheritDoc Virtqueue.enableNotifications} */
  abstract enableNotifications(): boolean;
  /** {@inheritDoc Virtqueue.disableNotifications} */
  abstract disableNotifications(): void;
  /** {@inheritDoc Virtqueue.unpop} */
  abstract unpop(count: number): void;
}

/** The device side of one split virtqueue over a started vring. */
export class SplitVirtqueue extends VirtqueueEngine {
  readonly #mask: number;
  readonly #descBytes: Uint8Array;
  readonly #desc: DataView;
  readonly #avail: DataView;
  readonly #used: DataView;
  readonly #memory: GuestMemory;
  readonly #eventIndex: boolean;
  readonly #indirect: boolean;
  readonly #notify: () => void;
  readonly #usedEventAt: number;
  readonly #availEventAt: number;

  #lastAvail: number;
  #knownAvail: number;
  #usedIdx: number;
  #unpublished = 0;
  #signalledUsed = 0;
  #signalledValid = false;
  /**
   * Per descriptor index: the id of the last chain that walked it. Ids from
   * {@link #windowFirstId} on belong to chains walked since the last publish.
   */
  readonly #owner: Uint32Array;
  /** Id of the chain walked last (each walk takes the next one). */
  #chainId = 0;
  /** The first chain id walked since the used index was last published. */
  #windowFirstId = 1;
  /** The large indirect tables walked since the last publish (see {@link SHARED_TABLE_CHECK_MIN_ENTRIES}). */
  readonly #tables = new IndirectTableClaims();
  /** The region bytes an indirect table was last read from, and a DataView of them. */
  #tableRegion: Uint8Array = new Uint8Array(0);
  #tableView: DataView = new DataView(this.#tableRegion.buffer);

  /** Details of the last fault, formatted only when a line is written. */
  readonly #faults = new FaultRecord();

  /**
   * @param ring the started vring (views of its three parts, memory, features)
   * @throws RangeError when the ring views do not match the queue size
   */
  constructor(ring: StartedVring, options: VirtqueueOptions = {}) {
    const size = ring.size;
    if (!(size >= 1 && size <= MAX_QUEUE_SIZE && (size & (size - 1)) === 0)) {
      throw new RangeError(`Cannot start virtqueue: size ${size} is not a power of two ≤ 32768`);
    }
    if (ring.descriptorTable.length < descriptorTableBytes(size)) {
      throw new RangeError(
        `Cannot start virtqueue: descriptor table of ${ring.descriptorTable.length} bytes is shorter than ${
          descriptorTableBytes(size)
        }`,
      );
    }
    // used_event / avail_event follow the rings; accept rings without them only
    // when EVENT_IDX is off (the contract sizes exclude the trailing event field).
    const eventBytes = ring.features.eventIndex ? 0 : 2;
    if (ring.availableRing.length < availableRingBytes(size) - eventBytes) {
      throw new RangeError(
        `Cannot start virtqueue: available ring of ${ring.availableRing.length} bytes is too short for size ${size}`,
      );
    }
    if (ring.usedRing.length < usedRingBytes(size) - eventBytes) {
      throw new RangeError(
        `Cannot start virtqueue: used ring of ${ring.usedRing.length} bytes is too short for size ${size}`,
      );
    }
    super(ring, options, "chain");
    this.#mask = size - 1;
    this.#descBytes = ring.descriptorTable;
    this.#desc = viewOf(ring.descriptorTable);
    this.#avail = viewOf(ring.availableRing);
    this.#used = viewOf(ring.usedRing);
    this.#memory = ring.memory;
    this.#eventIndex = ring.features.eventIndex;
    this.#indirect = ring.features.indirectDescriptors;
    this.#notify = () => ring.notifyGuest();
    this.#usedEventAt = usedEventOffset(size);
    this.#availEventAt = availEventOffset(size);
    this.#lastAvail = ring.lastAvailIndex & 0xffff;
    this.#knownAvail = this.#lastAvail;
    this.#usedIdx = this.#used.getUint16(USED_IDX, true);
    this.#owner = new Uint32Array(size);
  }

  /** The next available-ring index to consume (VHOST_USER_GET_VRING_BASE). */
  get lastAvailIndex(): number {
    return this.#lastAvail;
  }

  /** {@inheritDoc Virtqueue.vringBase} The next available-ring index to consume. */
  get vringBase(): number {
    return this.#lastAvail;
  }

  /** Tells whether the guest has made chains available that were not popped yet. */
  hasAvailable(): boolean {
    if (this.isBroken) return false;
    if (this.#lastAvail !== this.#knownAvail) return true;
    return this.#refreshAvail();
  }

  /** How many chains the guest has made available that were not popped yet (0 when broken). */
  availableCount(): number {
    if (this.isBroken || !this.hasAvailable()) return 0;
    return (this.#knownAvail - this.#lastAvail) & 0xffff;
  }

  /** Re-reads the available index; marks the queue broken when it ran ahead by more than size. */
  #refreshAvail(): boolean {
    const availIdx = this.#avail.getUint16(AVAIL_IDX, true);
    const pending = (availIdx - this.#lastAvail) & 0xffff;
    if (pending > this.size) {
      this.markBroken(
        `available index ${availIdx} is ${pending} ahead of ${this.#lastAvail}, more than the queue size ${this.size}`,
      );
      return false;
    }
    this.#knownAvail = availIdx;
    return pending !== 0;
  }

  /**
   * Pops the next valid available chain into `chain`. Malformed chains met on the
   * way are returned to the used ring with length 0 (one rate-limited log line).
   * @param now the loop's current time in milliseconds, for log rate limiting (the
   *   clock is read instead, and only when a line is due, if it is not given)
   * @returns false when nothing is available, the turn's descriptor budget is spent
   *   ({@link turnSpent}; chains may remain) or the queue is broken
   */
  pop(chain: DescriptorChain, now?: number): boolean {
    // Every chain walked costs at least its head descriptor, so the turn's budget
    // also bounds the malformed chains one call may skip (a guest refilling garbage as
    // fast as we drop it must not keep us here); so does MALFORMED_RUN_LIMIT.
    for (;;) {
      if (this.isBroken || this.walked >= this.turnEnd) return false;
      if (this.#lastAvail === this.#knownAvail && !this.#refreshAvail()) return false;
      const slot = this.#lastAvail & this.#mask;
      const head = this.#avail.getUint16(AVAIL_RING + 2 * slot, true);
      if (head >= this.size) {
        this.markBroken(
          `available ring entry ${slot} names head ${head} ≥ queue size ${this.size}`,
        );
        return false;
      }
      this.#lastAvail = (this.#lastAvail + 1) & 0xffff;
      const fault = this.#walk(chain, head);
      if (fault === Fault.None) return true;
      chain.release();
      this.malformedLog.write(
        now ?? this.clock(),
        `virtqueue ${this.name}: dropping chain ${head}: ${
          this.#faults.describe(SPLIT_TERMS, this.size * DESC_SIZE)
        }`,
      );
      this.returnMalformed(head);
    }
  }

  /**
   * {@inheritDoc Virtqueue.popSingleBuffers}
   * Reads each head descriptor once, as #walk does, and takes the chain only when it is
   * one buffer (no NEXT, no INDIRECT), WRITE, at least `minLength` bytes long, inside one
   * region, and not reached by another chain since the last publish; it stamps it and
   * counts it walked like #walk. Anything else stays available for pop().
   */
  override popSingleBuffers(
    out: SingleBufferChains,
    maxChains: number,
    bytes: number,
    minLength: number,
  ): number {
    const limit = Math.min(maxChains, out.capacity);
    const avail = this.#avail;
    const desc = this.#desc;
    const owner = this.#owner;
    const memory = this.#memory;
    const mask = this.#mask;
    const windowFirstId = this.#windowFirstId;
    const heads = out.heads;
    const bases = out.bases;
    const offsets = out.offsets;
    const lengths = out.lengths;
    let count = 0;
    let taken = 0;
    while (count < limit && taken < bytes) {
      if (this.isBroken || this.walked >= this.turnEnd) break;
      if (this.#lastAvail === this.#knownAvail && !this.#refreshAvail()) break;
      // pop() reports a head beyond the ring, and restarts the chain ids.
      if (this.#chainId === CHAIN_ID_LIMIT) break;
      const head = avail.getUint16(AVAIL_RING + 2 * (this.#lastAvail & mask), true);
      if (head >= this.size) break;
      const id = this.#chainId + 1;
      const stamp = owner[head];
      if (stamp >= windowFirstId && stamp !== id) break;
      const at = head * DESC_SIZE;
      const flags = desc.getUint16(at + DESC_FLAGS, true);
      if ((flags & SINGLE_BUFFER_FLAG_MASK) !== VIRTQ_DESC_F_WRITE) break;
      const len = desc.getUint32(at + DESC_LEN, true);
      if (len === 0 || len < minLength) break;
      const offset = memory.locate(
        desc.getUint32(at + DESC_ADDR_LOW, true),
        desc.getUint32(at + DESC_ADDR_HIGH, true),
        len,
      );
      if (offset < 0) break;
      this.#chainId = id;
      owner[head] = id;
      this.walked++;
      this.#lastAvail = (this.#lastAvail + 1) & 0xffff;
      heads[count] = head;
      bases[count] = memory.locatedBytes;
      offsets[count] = offset;
      lengths[count] = len;
      count++;
      taken += len;
    }
    out.count = count;
    return count;
  }

  /**
   * Puts the last `count` popped chains back, so the next pop returns them again.
   * Only valid when no malformed chain was skipped since the first of them.
   */
  unpop(count: number): void {
    this.#lastAvail = (this.#lastAvail - count) & 0xffff;
    // Those chains were the last `count` walked: their next walks take the same ids
    // again, so their own stamps are not taken for another chain's.
    this.#chainId = Math.max(this.#windowFirstId - 1, this.#chainId - count);
  }

  /** Starts a new window of chain ids: what was walked before no longer counts as shared. */
  #openWindow(): void {
    this.#windowFirstId = this.#chainId + 1;
    this.#tables.clear();
  }

  /** Clears every stamp and starts the chain ids from 1 again (after 2³² − 1 chains). */
  #restartChainIds(): void {
    this.#owner.fill(0);
    this.#chainId = 0;
    this.#openWindow();
  }

  /**
   * Reads the chain starting at `head` into `chain`; returns the first check that
   * failed. Counts every descriptor it reads in {@link walked}.
   */
  #walk(chain: DescriptorChain, head: number): Fault {
    chain.reset(head);
    if (this.#chainId === CHAIN_ID_LIMIT) this.#restartChainIds();
    const id = ++this.#chainId;
    const owner = this.#owner;
    const windowFirstId = this.#windowFirstId;
    const memory = this.#memory;
    const capacity = chain.buffers.length;
    const desc = this.#desc;
    let table: DataView | null = null; // the indirect table's region, once followed
    let tableAt = 0; // where the table starts in it
    let index = head;
    let limit = this.size;
    let descriptors = 0; // buffer descriptors so far: a loop shows as more than `limit`
    let count = 0; // views or ranges in `chain` (a descriptor spanning regions has several)
    let readableCount = 0;
    let readableBytes = 0;
    let writableBytes = 0;
    for (;;) {
      if (descriptors >= limit) {
        return this.#faults.set(Fault.ChainTooLong, index, 0, 0, descriptors);
      }
      this.walked++;
      let addrLow: number, addrHigh: number, len: number, flags: number, next: number;
      if (table === null) {
        // Reached by another chain since the last publish: the driver shares it.
        const stamp = owner[index];
        if (stamp >= windowFirstId && stamp !== id) {
          return this.#faults.set(Fault.SharedDescriptor, index, 0, 0, 0);
        }
        owner[index] = id;
        const at = index * DESC_SIZE;
        addrLow = desc.getUint32(at + DESC_ADDR_LOW, true);
        addrHigh = desc.getUint32(at + DESC_ADDR_HIGH, true);
        len = desc.getUint32(at + DESC_LEN, true);
        flags = desc.getUint16(at + DESC_FLAGS, true);
        next = desc.getUint16(at + DESC_NEXT, true);
      } else {
        const at = tableAt + index * DESC_SIZE;
        addrLow = table.getUint32(at + DESC_ADDR_LOW, true);
        addrHigh = table.getUint32(at + DESC_ADDR_HIGH, true);
        len = table.getUint32(at + DESC_LEN, true);
        flags = table.getUint16(at + DESC_FLAGS, true);
        next = table.getUint16(at + DESC_NEXT, true);
      }
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        // virtio 1.2 §2.7.5.3.1: only with the feature, never nested, never with NEXT.
        if (!this.#indirect) return this.#faults.set(Fault.IndirectNotNegotiated, index, 0, 0, 0);
        if (table !== null) return this.#faults.set(Fault.IndirectNested, index, 0, 0, 0);
        if (descriptors !== 0) return this.#faults.set(Fault.IndirectNotFirst, index, 0, 0, 0);
        if ((flags & VIRTQ_DESC_F_NEXT) !== 0) {
          return this.#faults.set(Fault.IndirectWithNext, index, 0, 0, 0);
        }
        const faults = this.#faults;
        tableAt = mapIndirectTable(
          memory,
          this.#tables,
          faults,
          index,
          addrLow,
          addrHigh,
          len,
          DESC_SIZE,
          this.size,
          id,
        );
        if (tableAt < 0) return faults.fault;
        // Read before storeBuffer locates the buffers; one DataView per region, made
        // when a table is first read from it (4-byte reads: a third of the loads).
        const region = memory.locatedBytes;
        if (region !== this.#tableRegion) {
          this.#tableRegion = region;
          this.#tableView = new DataView(region.buffer, region.byteOffset, region.byteLength);
        }
        table = this.#tableView;
        limit = len / DESC_SIZE;
        index = 0;
        continue;
      }
      descriptors++;
      if (len === 0) return this.#faults.set(Fault.ZeroLength, index, addrLow, addrHigh, 0);
      const views = storeBuffer(memory, chain, count, addrLow, addrHigh, len);
      if (views < 0) {
        return views === PIECES_NO_ROOM
          ? this.#faults.set(Fault.TooManyViews, index, addrLow, addrHigh, capacity)
          : this.#faults.set(Fault.OutsideMemory, index, addrLow, addrHigh, len);
      }
      count += views;
      chain.count = count; // release() drops every view stored, even after a fault below
      if ((flags & VIRTQ_DESC_F_WRITE) !== 0) {
        writableBytes += len;
      } else {
        if (writableBytes !== 0) {
          return this.#faults.set(Fault.ReadableAfterWritable, index, addrLow, addrHigh, len);
        }
        readableBytes += len;
        readableCount += views;
      }
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      if (next >= limit) return this.#faults.set(Fault.NextOutOfRange, index, next, 0, limit);
      index = next;
    }
    chain.readableCount = readableCount;
    chain.readableBytes = readableBytes;
    chain.writableBytes = writableBytes;
    return Fault.None;
  }

  protected pushUsedElement(head: number, length: number): void {
    const at = USED_RING + (this.#usedIdx & this.#mask) * USED_ELEM_SIZE;
    this.#used.setUint32(at, head, true);
    this.#used.setUint32(at + USED_ELEM_LEN, length, true);
    if (this.guestWriteLog !== null) this.guestWriteLog.markUsed(at, USED_ELEM_SIZE);
    this.#usedIdx = (this.#usedIdx + 1) & 0xffff;
    this.#unpublished++;
  }

  /**
   * {@inheritDoc Virtqueue.pushUsedChains}
   * One loop over the used ring with the ring's fields in locals; the used index is
   * stored by publish(), once for all of them.
   */
  override pushUsedChains(
    heads: Uint16Array,
    lengths: Uint32Array,
    count: number,
    from = 0,
  ): void {
    if (count <= 0) return;
    this.malformedRun = 0;
    this.walkedAtLastUse = this.walked;
    const used = this.#used;
    const mask = this.#mask;
    const log = this.guestWriteLog;
    let usedIdx = this.#usedIdx;
    for (let i = from; i < from + count; i++) {
      const at = USED_RING + (usedIdx & mask) * USED_ELEM_SIZE;
      used.setUint32(at, heads[i], true);
      used.setUint32(at + USED_ELEM_LEN, lengths[i], true);
      if (log !== null) log.markUsed(at, USED_ELEM_SIZE);
      usedIdx = (usedIdx + 1) & 0xffff;
    }
    this.#usedIdx = usedIdx;
    this.#unpublished += count;
  }

  /** Sets the length of the used element pushed `back` elements ago (1 = the last), not yet published. */
  rewriteUsedLength(back: number, length: number): void {
    const at = USED_RING + ((this.#usedIdx - back) & this.#mask) * USED_ELEM_SIZE;
    this.#used.setUint32(at + USED_ELEM_LEN, length, true);
    if (this.guestWriteLog !== null) this.guestWriteLog.markUsed(at + USED_ELEM_LEN, 4);
  }

  /** Number of used elements pushed and not yet published. */
  get unpublished(): number {
    return this.#unpublished;
  }

  /**
   * Publishes the used elements pushed so far (one used-index store, after the
   * elements) and notifies the guest when it asked for it (NO_INTERRUPT without
   * EVENT_IDX, `used_event` with it; virtio 1.2 §2.7.7.2, §2.7.10).
   * @returns true when the guest was notified
   */
  publish(): boolean {
    if (this.#unpublished === 0) return false; // a broken queue still returns what it consumed
    this.#unpublished = 0;
    // From the index store on, the driver may reuse the returned chains' descriptors.
    this.#openWindow();
    // Elements were stored before this index store; x86-64 keeps stores in order.
    this.#used.setUint16(USED_IDX, this.#usedIdx, true);
    if (this.guestWriteLog !== null) this.guestWriteLog.markUsed(USED_IDX, 2);
    memoryFence(); // the index store must be visible before we read the guest's wishes
    let notify: boolean;
    if (this.#eventIndex) {
      const usedEvent = this.#avail.getUint16(this.#usedEventAt, true);
      const old = this.#signalledUsed;
      notify = !this.#signalledValid || needEvent(usedEvent, this.#usedIdx, old);
      this.#signalledUsed = this.#usedIdx;
      this.#signalledValid = true;
    } else {
      notify = (this.#avail.getUint16(AVAIL_FLAGS, true) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    }
    if (notify) this.#notify();
    return notify;
  }

  /**
   * Asks the guest to notify (kick) when it makes chains available beyond those the
   * queue has seen: `avail_event` = the available index as last read with EVENT_IDX,
   * otherwise clears NO_NOTIFY (virtio 1.2 §2.7.10).
   * @returns true when the guest made more chains available since that read, for
   *   which it may not kick: the caller must look again instead of waiting
   */
  enableNotifications(): boolean {
    if (this.isBroken) return false;
    // The index as last read (pop, hasAvailable...), not read again here: chains made
    // available since that look came without a kick, and the re-read below reports them.
    const seen = this.#knownAvail;
    if (this.#eventIndex) {
      this.#used.setUint16(this.#availEventAt, seen, true);
      if (this.guestWriteLog !== null) this.guestWriteLog.markUsed(this.#availEventAt, 2);
    } else {
      this.#used.setUint16(USED_FLAGS, 0, true);
      if (this.guestWriteLog !== null) this.guestWriteLog.markUsed(USED_FLAGS, 2);
    }
    memoryFence(); // our wish must be visible before we re-read the available index
    this.#refreshAvail();
    return !this.isBroken && this.#knownAvail !== seen;
  }

  /** Tells the guest that kicks are not needed now (NO_NOTIFY; a no-op with EVENT_IDX). */
  disableNotifications(): void {
    if (this.isBroken || this.#eventIndex) return;
    this.#used.setUint16(USED_FLAGS, VIRTQ_USED_F_NO_NOTIFY, true);
    if (this.guestWriteLog !== null) this.guestWriteLog.markUsed(USED_FLAGS, 2);
  }
}
