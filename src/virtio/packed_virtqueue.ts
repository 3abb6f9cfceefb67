/**
 * The device side of one packed virtqueue (virtio 1.2 §2.8): reads the buffers the
 * driver made available in the descriptor ring, validates them against guest memory,
 * writes used descriptors back into the ring and decides when the guest must be
 * notified. It implements the same {@link Virtqueue} contract as the split ring engine
 * (virtqueue.ts), with the same rules for hostile input.
 *
 * How the ring moves (virtio 1.2 §2.8.1, §2.8.6): both sides keep a position (slot and
 * ring wrap counter, both counters starting at 1). A descriptor is available when its
 * AVAIL flag equals the driver's wrap counter and its USED flag does not; a list of
 * descriptors chained by NEXT occupies consecutive slots and carries its Buffer ID in
 * the last one. The device writes one used descriptor per buffer (the Buffer ID, the
 * bytes written, AVAIL = USED = its wrap counter) at its used position and then skips
 * as many slots as the buffer's list took; buffers may be used in any order. This
 * engine keeps, per Buffer ID, how many slots the buffer took.
 *
 * Everything the guest wrote is untrusted: each descriptor is read once into locals,
 * every buffer range is resolved through {@link GuestMemory} as a whole (a buffer that
 * runs into the adjacent region becomes one view per region), lists are bounded by the
 * slots the driver may own. A malformed buffer (zero length, outside memory, readable
 * after writable, indirect where not allowed, a bad indirect table) is returned with
 * used length 0 and one rate-limited log line. A ring no driver could have written
 * marks the queue broken (never touched again until restarted): a list that runs past
 * the slots the driver owns or into a slot that is not available (its end and Buffer ID
 * cannot be known), a Buffer ID ≥ the queue size (drivers take IDs below it: virtio 1.2
 * §2.8.22's example driver, Linux, DPDK) or one already in use, a slot made available again
 * before it was returned. Large indirect tables are checked for sharing between the
 * buffers made available since the last publish, and work is bounded per turn, as in
 * the split ring engine (SHARED_TABLE_CHECK_MIN_ENTRIES in chain_buffers.ts,
 * TURN_DESCRIPTOR_BUDGET and MALFORMED_RUN_LIMIT in virtqueue.ts, whose
 * {@link VirtqueueEngine} keeps the budget and the malformed runs for both engines).
 *
 * Used descriptors are written (Buffer ID, length) by pushUsed() and made visible by
 * publish(): their flags are stored there, the first one's last, so the driver sees
 * the batch at once (as QEMU's virtqueue_packed_flush() does). Writes into the ring
 * are reported to the write log by guest address (vhost-user "Migration": all writes
 * to the memory of the vring "descriptor" are marked), writes into the device event
 * suppression area as used-ring writes (it is the ring's "used" address).
 *
 * @module
 */

import type { StartedVring } from "./started_vring.ts";
import { type GuestMemory, PIECES_NO_ROOM } from "./guest_memory.ts";
import type { DescriptorChain } from "./descriptor_chain.ts";
import { CHAIN_ID_LIMIT, mapIndirectTable, storeBuffer } from "./chain_buffers.ts";
import { Fault, FaultRecord, type FaultTerms } from "./chain_fault.ts";
import { IndirectTableClaims } from "./indirect_table_claims.ts";
import { memoryFence } from "./memory_fence.ts";
import { readU16, readU32, viewOf } from "./ring_bytes.ts";
import {
  decodePackedState,
  descriptorRingBytes,
  encodePackedState,
  EVENT_FLAGS,
  EVENT_FLAGS_MASK,
  EVENT_OFF_WRAP,
  EVENT_SUPPRESS_SIZE,
  EVENT_WRAP_SHIFT,
  isAvailable,
  MAX_PACKED_QUEUE_SIZE,
  PACKED_DESC_ADDR_HIGH,
  PACKED_DESC_ADDR_LOW,
  PACKED_DESC_F_INDIRECT,
  PACKED_DESC_F_NEXT,
  PACKED_DESC_F_WRITE,
  PACKED_DESC_FLAGS,
  PACKED_DESC_ID,
  PACKED_DESC_LEN,
  PACKED_DESC_SIZE,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  STATE_INDEX_MASK,
  usedFlags,
} from "./packed_ring_layout.ts";
import { VirtqueueEngine, type VirtqueueOptions } from "./virtqueue.ts";

/** The words of the packed ring's log lines. */
const PACKED_TERMS: FaultTerms = {
  element: "element",
  slot: "slot",
  unit: "buffer",
  views: "views",
};

/** The device side of one packed virtqueue over a started vring. */
export class PackedVirtqueue extends VirtqueueEngine {
  /** Positions count in sequence numbers modulo this: slot + size × (1 − wrap counter). */
  readonly #period: number;
  readonly #ringBytes: Uint8Array;
  readonly #ring: DataView;
  /** Driver event suppression area (read only). */
  readonly #driverArea: DataView;
  /** Device event suppression area (written only). */
  readonly #deviceArea: DataView;
  readonly #memory: GuestMemory;
  readonly #eventIndex: boolean;
  readonly #indirect: boolean;
  readonly #notify: () => void;

  // Positions: slot and ring wrap counter of the next descriptor to read, of the next
  // used descriptor to write, and of the first used descriptor not yet published.
  #availIndex: number;
  #availWrap: number;
  #usedIndex: number;
  #usedWrap: number;
  #publishedIndex: number;
  #publishedWrap: number;
  /**
   * Sequence number of the first slot the device last found not available (pop,
   * hasAvailable, availableCount): where enableNotifications asks the driver to kick,
   * as a split ring's avail_event is the index it read last. unpop() leaves it.
   */
  #lookedUpTo: number;

  /** Per Buffer ID: the slots its list took while in use (popped, not yet used); 0 = free. */
  readonly #inUse: Uint16Array;
  /** The buffers popped last (circular): sequence number of their first slot, and their ID, for unpop(). */
  readonly #poppedStart: Uint16Array;
  readonly #poppedId: Uint16Array;
  #poppedNext = 0;

  /** Used descriptors written and not yet published: their slots and flags, in order. */
  readonly #pendingSlot: Uint16Array;
  readonly #pendingFlags: Uint16Array;
  #unpublished = 0;

  #signalledSequence = 0;
  #signalledValid = false;
  #chainId = 0;
  readonly #tables = new IndirectTableClaims();

  // The list read last: slots it took and its Buffer ID.
  #listSlots = 0;
  #listId = 0;
  /** Details of the last fault, formatted only when a line is written. */
  readonly #faults = new FaultRecord();

  /**
   * @param ring the started vring: descriptor ring, driver and device areas (see
   *   StartedVring), its vhost-user state in `lastAvailIndex`
   * @throws RangeError when the size, the areas or the state do not fit
   */
  constructor(ring: StartedVring, options: VirtqueueOptions = {}) {
    const size = ring.size;
    if (!(Number.isInteger(size) && size >= 1 && size <= MAX_PACKED_QUEUE_SIZE)) {
      throw new RangeError(`Cannot start packed virtqueue: size ${size} is not in 1..32768`);
    }
    if (ring.descriptorTable.length < descriptorRingBytes(size)) {
      throw new RangeError(
        `Cannot start packed virtqueue: descriptor ring of ${ring.descriptorTable.length} bytes is shorter than ${
          descriptorRingBytes(size)
        }`,
      );
    }
    if (
      ring.availableRing.length < EVENT_SUPPRESS_SIZE || ring.usedRing.length < EVENT_SUPPRESS_SIZE
    ) {
      throw new RangeError(
        `Cannot start packed virtqueue: event suppression areas must be ${EVENT_SUPPRESS_SIZE} bytes`,
      );
    }
    const state = decodePackedState(ring.lastAvailIndex);
    if (state.avail.index >= size || state.used.index >= size) {
      throw new RangeError(
        `Cannot start packed virtqueue: state 0x${
          (ring.lastAvailIndex >>> 0).toString(16)
        } names a slot beyond the ${size}-descriptor ring`,
      );
    }
    super(ring, options, "buffer");
    this.#period = 2 * size;
    this.#ringBytes = ring.descriptorTable;
    this.#ring = viewOf(ring.descriptorTable);
    this.#driverArea = viewOf(ring.availableRing, EVENT_SUPPRESS_SIZE);
    this.#deviceArea = viewOf(ring.usedRing, EVENT_SUPPRESS_SIZE);
    this.#availIndex = state.avail.index;
    this.#availWrap = state.avail.wrap;
    this.#usedIndex = this.#publishedIndex = state.used.index;
    this.#usedWrap = this.#publishedWrap = state.used.wrap;
    this.#lookedUpTo = this.#sequence(this.#availIndex, this.#availWrap);
    const inFlight = this.#distance(
      this.#sequence(this.#availIndex, this.#availWrap),
      this.#sequence(this.#usedIndex, this.#usedWrap),
    );
    if (inFlight > size) {
      throw new RangeError(
        `Cannot start packed virtqueue: state 0x${
          (ring.lastAvailIndex >>> 0).toString(16)
        } puts the available position ${inFlight} slots past the used one, more than the ring holds`,
      );
    }
    this.#memory = ring.memory;
    this.#eventIndex = ring.features.eventIndex;
    this.#indirect = ring.features.indirectDescriptors;
    this.#notify = () => ring.notifyGuest();
    this.#inUse = new Uint16Array(size);
    this.#poppedStart = new Uint16Array(size);
    this.#poppedId = new Uint16Array(size);
    this.#pendingSlot = new Uint16Array(size);
    this.#pendingFlags = new Uint16Array(size);
  }

  /** Sequence number of a position: counts slots modulo 2 × size, wrap counter 1 first. */
  #sequence(index: number, wrap: number): number {
    return wrap === 1 ? index : index + this.size;
  }

  /** Slots from sequence number `from` forward to `to`. */
  #distance(to: number, from: number): number {
    const d = to - from;
    return d < 0 ? d + this.#period : d;
  }

  /**
   * {@inheritDoc Virtqueue.vringBase} The next slot to read with the driver's wrap
   * counter, and the next used slot the driver will look at (the first not published)
   * with the device's: buffers popped and not returned by then stay with the device.
   */
  get vringBase(): number {
    return encodePackedState({
      avail: { index: this.#availIndex, wrap: this.#availWrap },
      used: { index: this.#publishedIndex, wrap: this.#publishedWrap },
    });
  }

  /** Slots the driver may still own from the available position on (the rest are the device's). */
  #driverRoom(): number {
    return this.size - this.#distance(
      this.#sequence(this.#availIndex, this.#availWrap),
      this.#sequence(this.#publishedIndex, this.#publishedWrap),
    );
  }

  /** {@inheritDoc Virtqueue.hasAvailable} */
  hasAvailable(): boolean {
    if (this.isBroken) return false;
    const flags = this.#ring.getUint16(
      this.#availIndex * PACKED_DESC_SIZE + PACKED_DESC_FLAGS,
      true,
    );
    if (isAvailable(flags, this.#availWrap)) return true;
    this.#lookedUpTo = this.#sequence(this.#availIndex, this.#availWrap);
    return false;
  }

  /** {@inheritDoc Virtqueue.availableCount} Counts the complete lists available now. */
  availableCount(): number {
    if (this.isBroken) return 0;
    let slot = this.#availIndex;
    let wrap = this.#availWrap;
    let lists = 0;
    const room = this.#driverRoom();
    for (let i = 0; i < room; i++) {
      const flags = this.#ring.getUint16(slot * PACKED_DESC_SIZE + PACKED_DESC_FLAGS, true);
      if (!isAvailable(flags, wrap)) {
        this.#lookedAt(this.#sequence(slot, wrap));
        break;
      }
      if ((flags & PACKED_DESC_F_NEXT) === 0) lists++;
      if (++slot === this.size) {
        slot = 0;
        wrap ^= 1;
      }
    }
    return lists;
  }

  /** {@inheritDoc Virtqueue.pop} */
  pop(chain: DescriptorChain, now?: number): boolean {
    for (;;) {
      if (this.isBroken || this.walked >= this.turnEnd) return false;
      const headSlot = this.#availIndex;
      const headFlags = this.#ring.getUint16(headSlot * PACKED_DESC_SIZE + PACKED_DESC_FLAGS, true);
      if (!isAvailable(headFlags, this.#availWrap)) {
        this.#lookedUpTo = this.#sequence(headSlot, this.#availWrap);
        return false;
      }
      const room = this.#driverRoom();
      if (room <= 0) {
        chain.reset(0);
        this.markBroken(
          `slot ${headSlot} was made available again before the device returned it`,
        );
        return false;
      }
      const fault = this.#walk(chain, headFlags, room);
      if (fault === Fault.Broken) {
        chain.release();
        return false;
      }
      const id = this.#listId;
      if (id >= this.size) {
        chain.release();
        this.markBroken(
          `the list at slot ${headSlot} has Buffer ID ${id} ≥ queue size ${this.size}`,
        );
        return false;
      }
      if (this.#inUse[id] !== 0) {
        chain.release();
        this.markBroken(
          `the list at slot ${headSlot} has Buffer ID ${id}, which is already in use`,
        );
        return false;
      }
      this.#take(id, this.#listSlots);
      if (fault === Fault.None) {
        chain.head = id;
        return true;
      }
      chain.release();
      this.malformedLog.write(
        now ?? this.clock(),
        `virtqueue ${this.name}: dropping buffer ${id} (slot ${headSlot}): ${
          this.#faults.describe(PACKED_TERMS, this.size * PACKED_DESC_SIZE)
        }`,
      );
      this.returnMalformed(id);
    }
  }

  /** Moves the available position past a list of `slots` slots with Buffer ID `id`, now in use. */
  #take(id: number, slots: number): void {
    this.#inUse[id] = slots;
    const k = this.#poppedNext;
    this.#poppedStart[k] = this.#sequence(this.#availIndex, this.#availWrap);
    this.#poppedId[k] = id;
    this.#poppedNext = k + 1 === this.size ? 0 : k + 1;
    // Slots taken were looked at: the last look stays at or past the available position.
    if (this.#distance(this.#lookedUpTo, this.#poppedStart[k]) <= slots) {
      this.#lookedUpTo = (this.#poppedStart[k] + slots) % this.#period;
    }
    let index = this.#availIndex + slots;
    if (index >= this.size) {
      index -= this.size;
      this.#availWrap ^= 1;
    }
    this.#availIndex = index;
  }

  /**
   * Reads the list at the available position into `chain` (its head flags already read
   * once) and records its slots and Buffer ID; returns the first check that failed.
   * A buffer fault does not stop the walk along the ring: the list's end holds its ID.
   */
  #walk(chain: DescriptorChain, headFlags: number, room: number): Fault {
    chain.reset(0);
    if (this.#chainId === CHAIN_ID_LIMIT) {
      this.#chainId = 0;
      this.#tables.clear();
    }
    const id = ++this.#chainId;
    const ring = this.#ring;
    let slot = this.#availIndex;
    let wrap = this.#availWrap;
    let slots = 0;
    let fault: Fault = Fault.None;
    for (;;) {
      if (slots >= room) {
        this.markBroken(
          `the list at slot ${this.#availIndex} runs past the ${room} slots the driver may own`,
        );
        return Fault.Broken;
      }
      const at = slot * PACKED_DESC_SIZE;
      const flags = slots === 0 ? headFlags : ring.getUint16(at + PACKED_DESC_FLAGS, true);
      if (slots !== 0 && !isAvailable(flags, wrap)) {
        this.markBroken(
          `the list at slot ${this.#availIndex} goes on into slot ${slot}, which is not available`,
        );
        return Fault.Broken;
      }
      const addrLow = ring.getUint32(at + PACKED_DESC_ADDR_LOW, true);
      const addrHigh = ring.getUint32(at + PACKED_DESC_ADDR_HIGH, true);
      const len = ring.getUint32(at + PACKED_DESC_LEN, true);
      const bufferId = ring.getUint16(at + PACKED_DESC_ID, true);
      slots++;
      this.walked++;
      if (fault === Fault.None) {
        if ((flags & PACKED_DESC_F_INDIRECT) !== 0) {
          // virtio 1.2 §2.8.7, §2.8.19: only with the feature, never in a list linked by NEXT.
          if (!this.#indirect) {
            fault = this.#faults.set(Fault.IndirectNotNegotiated, slot, 0, 0, 0);
          } else if ((flags & PACKED_DESC_F_NEXT) !== 0) {
            fault = this.#faults.set(Fault.IndirectWithNext, slot, 0, 0, 0);
          } else if (slots !== 1) {
            fault = this.#faults.set(Fault.IndirectInList, slot, 0, 0, 0);
          } else {
            fault = this.#walkTable(chain, slot, addrLow, addrHigh, len, id);
          }
        } else {
          fault = this.#addBuffer(chain, flags, addrLow, addrHigh, len, slot);
        }
      }
      if ((flags & PACKED_DESC_F_NEXT) === 0) {
        this.#listSlots = slots;
        this.#listId = bufferId; // virtio 1.2 §2.8.6: the ID is in the last descriptor
        return fault;
      }
      if (++slot === this.size) {
        slot = 0;
        wrap ^= 1;
      }
    }
  }

  /** Adds the entries of the indirect table at `addr` to `chain`. */
  #walkTable(
    chain: DescriptorChain,
    slot: number,
    addrLow: number,
    addrHigh: number,
    len: number,
    id: number,
  ): Fault {
    const faults = this.#faults;
    const memory = this.#memory;
    const tableAt = mapIndirectTable(
      memory,
      this.#tables,
      faults,
      slot,
      addrLow,
      addrHigh,
      len,
      PACKED_DESC_SIZE,
      this.size,
      id,
    );
    if (tableAt < 0) return faults.fault;
    const table = memory.locatedBytes; // read before #addBuffer locates the buffers
    const entries = len / PACKED_DESC_SIZE;
    for (let i = 0; i < entries; i++) {
      this.walked++;
      const at = tableAt + i * PACKED_DESC_SIZE;
      const flags = readU16(table, at + PACKED_DESC_FLAGS);
      // virtio 1.2 §2.8.7: WRITE is the only valid flag in a table (NEXT, the ID are ignored).
      if ((flags & PACKED_DESC_F_INDIRECT) !== 0) {
        return this.#faults.set(Fault.IndirectNested, i, 0, 0, 0);
      }
      const fault = this.#addBuffer(
        chain,
        flags,
        readU32(table, at + PACKED_DESC_ADDR_LOW),
        readU32(table, at + PACKED_DESC_ADDR_HIGH),
        readU32(table, at + PACKED_DESC_LEN),
        i,
      );
      if (fault !== Fault.None) return fault;
    }
    return Fault.None;
  }

  /** Resolves one buffer element into `chain` (views or located ranges); `where` names it in logs. */
  #addBuffer(
    chain: DescriptorChain,
    flags: number,
    addrLow: number,
    addrHigh: number,
    len: number,
    where: number,
  ): Fault {
    if (len === 0) return this.#faults.set(Fault.ZeroLength, where, addrLow, addrHigh, 0);
    const writable = (flags & PACKED_DESC_F_WRITE) !== 0;
    if (!writable && chain.writableBytes !== 0) {
      return this.#faults.set(Fault.ReadableAfterWritable, where, addrLow, addrHigh, len);
    }
    const count = chain.count;
    const views = storeBuffer(this.#memory, chain, count, addrLow, addrHigh, len);
    if (views < 0) {
      return views === PIECES_NO_ROOM
        ? this.#faults.set(Fault.TooManyViews, where, addrLow, addrHigh, chain.buffers.length)
        : this.#faults.set(Fault.OutsideMemory, where, addrLow, addrHigh, len);
    }
    chain.count = count + views; // release() drops every view stored, even after a later fault
    if (writable) {
      chain.writableBytes += len;
    } else {
      chain.readableBytes += len;
      chain.readableCount += views;
    }
    return Fault.None;
  }

  /** Writes the used descriptor of buffer `id` (flags follow at publish) and skips its slots. */
  protected pushUsedElement(id: number, length: number): void {
    const slots = id < this.size ? this.#inUse[id] : 0;
    if (slots === 0) {
      throw new RangeError(`Cannot return buffer ${id} on ${this.name}: it is not in use`);
    }
    this.#inUse[id] = 0;
    const slot = this.#usedIndex;
    const at = slot * PACKED_DESC_SIZE;
    this.#ring.setUint32(at + PACKED_DESC_LEN, length, true);
    this.#ring.setUint16(at + PACKED_DESC_ID, id, true);
    const k = this.#unpublished++;
    this.#pendingSlot[k] = slot;
    // virtio 1.2 §2.8.3: WRITE in a used descriptor says the device wrote data.
    this.#pendingFlags[k] = usedFlags(this.#usedWrap) | (length > 0 ? PACKED_DESC_F_WRITE : 0);
    let index = slot + slots;
    if (index >= this.size) {
      index -= this.size;
      this.#usedWrap ^= 1;
    }
    this.#usedIndex = index;
  }

  /** {@inheritDoc Virtqueue.rewriteUsedLength} */
  rewriteUsedLength(back: number, length: number): void {
    const k = this.#unpublished - back;
    const at = this.#pendingSlot[k] * PACKED_DESC_SIZE;
    this.#ring.setUint32(at + PACKED_DESC_LEN, length, true);
    const flags = this.#pendingFlags[k] & ~PACKED_DESC_F_WRITE;
    this.#pendingFlags[k] = flags | (length > 0 ? PACKED_DESC_F_WRITE : 0);
  }

  /** {@inheritDoc Virtqueue.unpublished} */
  get unpublished(): number {
    return this.#unpublished;
  }

  /**
   * {@inheritDoc Virtqueue.publish}
   * Stores the pending used descriptors' flags, the first one's last, then notifies
   * unless the driver event suppression area says otherwise (DISABLE; with EVENT_IDX,
   * DESC names a slot the used descriptors written since the last notification did
   * not reach; virtio 1.2 §2.8.10, §2.8.14).
   */
  publish(): boolean {
    const count = this.#unpublished;
    if (count === 0) return false;
    this.#unpublished = 0;
    const ring = this.#ring;
    const slots = this.#pendingSlot;
    const flags = this.#pendingFlags;
    // Stores stay in program order on x86-64: each descriptor's ID and length are
    // visible before its flags, and the first flags come last.
    for (let k = 1; k < count; k++) {
      ring.setUint16(slots[k] * PACKED_DESC_SIZE + PACKED_DESC_FLAGS, flags[k], true);
    }
    ring.setUint16(slots[0] * PACKED_DESC_SIZE + PACKED_DESC_FLAGS, flags[0], true);
    const log = this.guestWriteLog;
    if (log !== null) {
      for (let k = 0; k < count; k++) {
        log.markView(this.#ringBytes, slots[k] * PACKED_DESC_SIZE, PACKED_DESC_SIZE);
      }
    }
    this.#publishedIndex = this.#usedIndex;
    this.#publishedWrap = this.#usedWrap;
    // From the flags stores on, the driver may reuse the returned buffers' tables.
    this.#tables.clear();
    memoryFence(); // the flags must be visible before we read the driver's wishes
    const newSequence = this.#sequence(this.#usedIndex, this.#usedWrap);
    const old = this.#signalledSequence;
    const valid = this.#signalledValid;
    this.#signalledSequence = newSequence;
    this.#signalledValid = true;
    const eventFlags = this.#driverArea.getUint16(EVENT_FLAGS, true) & EVENT_FLAGS_MASK;
    let notify: boolean;
    if (eventFlags === RING_EVENT_FLAGS_DISABLE) {
      notify = false;
    } else if (eventFlags === RING_EVENT_FLAGS_DESC && this.#eventIndex && valid) {
      const offWrap = this.#driverArea.getUint16(EVENT_OFF_WRAP, true);
      const offset = offWrap & STATE_INDEX_MASK;
      // An offset beyond the ring is no slot we will write: notify rather than stall.
      notify = offset >= this.size ||
        this.#distance(this.#sequence(offset, offWrap >>> EVENT_WRAP_SHIFT), old) <
          this.#distance(newSequence, old);
    } else {
      notify = true; // ENABLE, the first publish with DESC, or a reserved value
    }
    if (notify) this.#notify();
    return notify;
  }

  /** Moves {@link #lookedUpTo} to `sequence` when that lies further along (never back). */
  #lookedAt(sequence: number): void {
    const available = this.#sequence(this.#availIndex, this.#availWrap);
    if (this.#distance(sequence, available) > this.#distance(this.#lookedUpTo, available)) {
      this.#lookedUpTo = sequence;
    }
  }

  /**
   * {@inheritDoc Virtqueue.enableNotifications}
   * Writes the device event suppression area (virtio 1.2 §2.8.10): with EVENT_IDX, DESC
   * at the first slot the device last found not available ({@link #lookedUpTo}; the
   * available position if that is further along) with the wrap counter there; otherwise
   * ENABLE. True when that slot is available now: the driver made buffers available
   * since the device last looked, and no kick will come for them.
   */
  enableNotifications(): boolean {
    if (this.isBroken) return false;
    const available = this.#sequence(this.#availIndex, this.#availWrap);
    const ahead = this.#distance(this.#lookedUpTo, available);
    const at = ahead <= this.#driverRoom() ? this.#lookedUpTo : available;
    const slot = at < this.size ? at : at - this.size;
    const wrap = at < this.size ? 1 : 0;
    const area = this.#deviceArea;
    if (this.#eventIndex) {
      area.setUint16(EVENT_OFF_WRAP, slot | (wrap << EVENT_WRAP_SHIFT), true);
      area.setUint16(EVENT_FLAGS, RING_EVENT_FLAGS_DESC, true);
      if (this.guestWriteLog !== null) this.guestWriteLog.markUsed(0, EVENT_SUPPRESS_SIZE);
    } else {
      area.setUint16(EVENT_FLAGS, RING_EVENT_FLAGS_ENABLE, true);
      if (this.guestWriteLog !== null) this.guestWriteLog.markUsed(EVENT_FLAGS, 2);
    }
    memoryFence(); // our wish must be visible before we look at the ring again
    return isAvailable(
      this.#ring.getUint16(slot * PACKED_DESC_SIZE + PACKED_DESC_FLAGS, true),
      wrap,
    );
  }

  /** {@inheritDoc Virtqueue.disableNotifications} Writes DISABLE (virtio 1.2 §2.8.10). */
  disableNotifications(): void {
    if (this.isBroken) return;
    this.#deviceArea.setUint16(EVENT_FLAGS, RING_EVENT_FLAGS_DISABLE, true);
    if (this.guestWriteLog !== null) this.guestWriteLog.markUsed(EVENT_FLAGS, 2);
  }

  /**
   * {@inheritDoc Virtqueue.unpop}
   * Only valid for buffers popped last and not returned (used or dropped) since.
   */
  unpop(count: number): void {
    let k = this.#poppedNext;
    let start = -1;
    for (let i = 0; i < count; i++) {
      k = k === 0 ? this.size - 1 : k - 1;
      this.#inUse[this.#poppedId[k]] = 0;
      start = this.#poppedStart[k];
    }
    this.#poppedNext = k;
    if (start >= 0) {
      this.#availIndex = start < this.size ? start : start - this.size;
      this.#availWrap = start < this.size ? 1 : 0;
    }
    // Their next walks take the same chain ids again: their own tables are no overlap.
    this.#chainId = Math.max(0, this.#chainId - count);
  }
}
