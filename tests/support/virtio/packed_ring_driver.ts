/**
 * The driver (guest) side of a packed virtqueue over {@link ArrayGuestMemory}: lays
 * out the descriptor ring and the two event suppression areas, hands out buffers,
 * makes lists available (direct or through an indirect table) and collects used
 * descriptors, the way a guest's virtio driver would (virtio 1.2 §2.8.21, §2.8.22).
 * Used by the packed ring engine's unit tests, fuzzers and the link tests, and — over a
 * region of the front-end's shared memory ({@link PackedDriverOptions.region}) — by the
 * vhost-user front-end of tests/support/frontend/ once it acks VIRTIO_F_RING_PACKED.
 *
 * @module
 */

import type { NegotiatedFeatures, StartedVring } from "../../../src/virtio/started_vring.ts";
import { ArrayGuestMemory } from "./array_guest_memory.ts";
import {
  availableFlags,
  descriptorRingBytes,
  encodePackedState,
  EVENT_FLAGS,
  EVENT_FLAGS_MASK,
  EVENT_OFF_WRAP,
  EVENT_SUPPRESS_SIZE,
  EVENT_WRAP_SHIFT,
  INITIAL_PACKED_STATE,
  PACKED_DESC_ADDR_HIGH,
  PACKED_DESC_ADDR_LOW,
  PACKED_DESC_F_AVAIL,
  PACKED_DESC_F_INDIRECT,
  PACKED_DESC_F_NEXT,
  PACKED_DESC_F_USED,
  PACKED_DESC_F_WRITE,
  PACKED_DESC_FLAGS,
  PACKED_DESC_ID,
  PACKED_DESC_LEN,
  PACKED_DESC_SIZE,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  STATE_INDEX_MASK,
} from "../../../src/virtio/packed_ring_layout.ts";
import type { DriverSegment, RingAreas, UsedChain, UsedElement } from "./split_ring_driver.ts";

export type { DriverSegment, UsedChain, UsedElement } from "./split_ring_driver.ts";

/** Guest-physical address where the driver's region starts (not 0, to catch address bugs). */
export const PACKED_DRIVER_REGION_BASE = 0x20_0000;

/** What non-last descriptors of a list carry as Buffer ID: the device must take the last one's. */
export const NOT_THE_ID = 0xbeef;

/** Options of a {@link PackedRingDriver}. */
export interface PackedDriverOptions {
  /** Queue size, 1..32768 (default 256). */
  readonly size?: number;
  /** Queue index reported in the StartedVring (default 1, TX). */
  readonly index?: number;
  /** Bytes reserved for data buffers (default 1 MiB). */
  readonly dataBytes?: number;
  /** Feature flags (all off by default; packedRing is always on). */
  readonly features?: Partial<NegotiatedFeatures>;
  /** Memory to place the region in (a new one by default). */
  readonly memory?: ArrayGuestMemory;
  /** Guest-physical address of the region (default {@link PACKED_DRIVER_REGION_BASE}). */
  readonly base?: number;
  /**
   * The bytes at {@link base} in memory owned elsewhere (the front-end's shared memory):
   * only the ring parts are laid out there ({@link packedRingFootprint} bytes, zeroed),
   * with no indirect tables and no data area; the caller places the buffers.
   */
  readonly region?: Uint8Array;
}

/** Page alignment of each ring part, as the split driver lays them out. */
const RING_PART_ALIGN = 4096;

/** Bytes the three parts of a packed ring of `size` entries occupy, each 4 KiB aligned. */
export function packedRingFootprint(size: number): number {
  const align = (n: number) => Math.ceil(n / RING_PART_ALIGN) * RING_PART_ALIGN;
  return align(descriptorRingBytes(size)) + 2 * RING_PART_ALIGN;
}

const INDIRECT_ENTRIES = 64;

/** A simulated guest driver for one packed virtqueue. */
export class PackedRingDriver {
  /** Memory holding the ring and buffers. */
  readonly memory: ArrayGuestMemory;
  /** The whole region, indexable by `gpa - base`. */
  readonly bytes: Uint8Array;
  /** Guest-physical address of {@link bytes}. */
  readonly base: number;
  /** Queue size. */
  readonly size: number;
  /** Queue index. */
  readonly index: number;
  /** Negotiated features (packedRing on). */
  readonly features: NegotiatedFeatures;
  /** Guest-physical address of the descriptor ring. */
  readonly descAddr: number;
  /** Guest-physical address of the driver event suppression area. */
  readonly driverAddr: number;
  /** Guest-physical address of the device event suppression area. */
  readonly deviceAddr: number;
  /** How many times the device notified the guest (its call eventfd). */
  notifications = 0;

  readonly #view: DataView;
  readonly #freeIds: number[] = [];
  /** Per Buffer ID: the slots its list took (0: free). */
  readonly #slotsOf: Uint16Array;
  /** Per Buffer ID: the buffers addChain() offered (empty for raw lists). */
  readonly #segmentsOf: (readonly DriverSegment[])[];
  readonly #indirectAddr: number;
  #nextData: number;
  readonly #dataEnd: number;
  #freeSlots: number;
  #availIndex = 0;
  #availWrap = 1;
  #usedIndex = 0;
  #usedWrap = 1;
  /** Sequence number (slot + size × (1 − wrap)) of the available position at the last kick check. */
  #kickedAt = 0;

  constructor(options: PackedDriverOptions = {}) {
    this.size = options.size ?? 256;
    this.index = options.index ?? 1;
    this.base = options.base ?? PACKED_DRIVER_REGION_BASE;
    this.features = {
      eventIndex: options.features?.eventIndex ?? false,
      indirectDescriptors: options.features?.indirectDescriptors ?? false,
      mergeableRxBuffers: options.features?.mergeableRxBuffers ?? false,
      checksumOffload: options.features?.checksumOffload ?? false,
      guestChecksum: options.features?.guestChecksum ?? false,
      packedRing: true,
    };
    const align = (n: number) => (n + 4095) & ~4095;
    const ringBytes = align(descriptorRingBytes(this.size));
    const areaBytes = RING_PART_ALIGN;
    const external = options.region !== undefined;
    const indirectBytes = external ? 0 : align(this.size * INDIRECT_ENTRIES * PACKED_DESC_SIZE);
    const dataBytes = external ? 0 : options.dataBytes ?? 1 << 20;
    const total = ringBytes + 2 * areaBytes + indirectBytes + dataBytes;
    if (external && options.region!.length < total) {
      throw new RangeError(`Ring region of ${options.region!.length} bytes, ${total} needed`);
    }
    this.bytes = external ? options.region!.subarray(0, total) : new Uint8Array(total);
    this.bytes.fill(0);
    this.#view = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.length);
    this.memory = options.memory ?? new ArrayGuestMemory();
    this.memory.addRegion(this.base, this.bytes);
    this.descAddr = this.base;
    this.driverAddr = this.descAddr + ringBytes;
    this.deviceAddr = this.driverAddr + areaBytes;
    this.#indirectAddr = this.deviceAddr + areaBytes;
    this.#nextData = this.#indirectAddr + indirectBytes;
    this.#dataEnd = this.base + total;
    for (let i = this.size - 1; i >= 0; i--) this.#freeIds.push(i);
    this.#slotsOf = new Uint16Array(this.size);
    this.#segmentsOf = new Array(this.size).fill([]);
    this.#freeSlots = this.size;
  }

  /** Where the descriptor ring, the driver area (as `available`) and the device area (as `used`) lie. */
  get areas(): RingAreas {
    return { descriptor: this.descAddr, available: this.driverAddr, used: this.deviceAddr };
  }

  /** The available half of {@link state}: the next slot to fill with its wrap counter in bit 15. */
  get availIndex(): number {
    return this.state & 0xffff;
  }

  /** The vring as the control plane would hand it to the datapath (state: vhost-user `num`). */
  vring(state = INITIAL_PACKED_STATE): StartedVring {
    const at = (gpa: number, len: number) =>
      this.bytes.subarray(gpa - this.base, gpa - this.base + len);
    // deno-lint-ignore no-this-alias
    const driver = this;
    return {
      index: this.index,
      size: this.size,
      descriptorTable: at(this.descAddr, descriptorRingBytes(this.size)),
      availableRing: at(this.driverAddr, EVENT_SUPPRESS_SIZE),
      usedRing: at(this.deviceAddr, EVENT_SUPPRESS_SIZE),
      lastAvailIndex: state,
      memory: this.memory,
      features: this.features,
      notifyGuest() {
        driver.notifications++;
      },
    };
  }

  /** The driver's own positions as a vhost-user state (what a frontend would send at start). */
  get state(): number {
    return encodePackedState({
      avail: { index: this.#availIndex, wrap: this.#availWrap },
      used: { index: this.#usedIndex, wrap: this.#usedWrap },
    });
  }

  /**
   * Moves both positions to slot `index` with wrap counter `wrap`, as if whole laps had
   * been made available and used before: every slot carries the used flags of its last
   * lap. Only while nothing is in use.
   */
  startAt(index: number, wrap: number): void {
    if (this.#freeSlots !== this.size) throw new Error("Cannot move a ring with buffers in use");
    for (let slot = 0; slot < this.size; slot++) {
      const lapWrap = slot < index ? wrap : wrap ^ 1;
      this.#view.setUint16(
        this.slotAddress(slot) - this.base + PACKED_DESC_FLAGS,
        lapWrap === 1 ? PACKED_DESC_F_AVAIL | PACKED_DESC_F_USED : 0,
        true,
      );
    }
    this.#availIndex = this.#usedIndex = index;
    this.#availWrap = this.#usedWrap = wrap;
    this.#kickedAt = this.#sequence(index, wrap);
  }

  /** Reserves `length` bytes of data memory; returns its guest-physical address. */
  alloc(length: number): number {
    const gpa = this.#nextData;
    if (gpa + length > this.#dataEnd) {
      throw new RangeError(`Cannot allocate ${length} bytes: driver data area exhausted`);
    }
    this.#nextData = (gpa + length + 15) & ~15;
    return gpa;
  }

  /** Copies `data` into guest memory at `gpa`. */
  write(gpa: number, data: Uint8Array): void {
    this.bytes.set(data, gpa - this.base);
  }

  /** Returns a copy of `length` bytes of guest memory at `gpa`. */
  read(gpa: number, length: number): Uint8Array {
    return this.bytes.slice(gpa - this.base, gpa - this.base + length);
  }

  /** Writes one descriptor at guest-physical address `gpa` (a ring slot or an indirect table entry). */
  writeDescriptorAt(
    gpa: number,
    addr: number,
    len: number,
    id: number,
    flags: number,
  ): void {
    const at = gpa - this.base;
    const v = this.#view;
    v.setUint32(at + PACKED_DESC_ADDR_LOW, addr % 0x1_0000_0000, true);
    v.setUint32(at + PACKED_DESC_ADDR_HIGH, Math.floor(addr / 0x1_0000_0000), true);
    v.setUint32(at + PACKED_DESC_LEN, len >>> 0, true);
    v.setUint16(at + PACKED_DESC_ID, id & 0xffff, true);
    v.setUint16(at + PACKED_DESC_FLAGS, flags & 0xffff, true);
  }

  /** Guest-physical address of ring slot `slot`. */
  slotAddress(slot: number): number {
    return this.descAddr + slot * PACKED_DESC_SIZE;
  }

  /** The flags of ring slot `slot` as the driver would write them available now at that slot's wrap. */
  availableFlagsAt(offset: number): number {
    const wrap = this.#availIndex + offset >= this.size ? this.#availWrap ^ 1 : this.#availWrap;
    return availableFlags(wrap);
  }

  /** Number of free ring slots. */
  get freeSlots(): number {
    return this.#freeSlots;
  }

  /** The next slot the driver fills and its wrap counter. */
  get availPosition(): { index: number; wrap: number } {
    return { index: this.#availIndex, wrap: this.#availWrap };
  }

  /**
   * Makes a list over `segments` available (direct, or through an indirect table), the
   * head's flags last. @returns its Buffer ID, or null when slots or IDs ran out
   */
  addChain(segments: readonly DriverSegment[], indirect = false): number | null {
    if (segments.length === 0) throw new RangeError("Cannot add a chain of 0 segments");
    const slots = indirect ? 1 : segments.length;
    if (this.#freeSlots < slots || this.#freeIds.length === 0) return null;
    const id = this.#freeIds.pop()!;
    const entries: { addr: number; len: number; flags: number }[] = [];
    if (indirect) {
      const table = segments.length <= INDIRECT_ENTRIES
        ? this.#indirectAddr + id * INDIRECT_ENTRIES * PACKED_DESC_SIZE
        : this.alloc(segments.length * PACKED_DESC_SIZE);
      segments.forEach((s, i) => {
        this.writeDescriptorAt(
          table + i * PACKED_DESC_SIZE,
          s.addr,
          s.length,
          NOT_THE_ID,
          s.writable ? PACKED_DESC_F_WRITE : 0,
        );
      });
      entries.push({
        addr: table,
        len: segments.length * PACKED_DESC_SIZE,
        flags: PACKED_DESC_F_INDIRECT,
      });
    } else {
      segments.forEach((s, i) => {
        const last = i === segments.length - 1;
        entries.push({
          addr: s.addr,
          len: s.length,
          flags: (s.writable ? PACKED_DESC_F_WRITE : 0) | (last ? 0 : PACKED_DESC_F_NEXT),
        });
      });
    }
    this.#slotsOf[id] = slots;
    this.#segmentsOf[id] = [...segments];
    this.placeRaw(
      entries.map((e, i) => ({ ...e, id: i === entries.length - 1 ? id : NOT_THE_ID })),
    );
    return id;
  }

  /**
   * Writes `entries` into the next slots as given (flags get AVAIL/USED for each slot's
   * wrap counter added), the first one's flags last, and moves the available position
   * past them. For hostile rings: nothing is checked and no ID is reserved.
   */
  placeRaw(entries: readonly { addr: number; len: number; id: number; flags: number }[]): void {
    const head = this.#availIndex;
    let headFlags = 0;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      const flags = e.flags | availableFlags(this.#availWrap);
      const gpa = this.slotAddress(this.#availIndex);
      if (i === 0) {
        // the head keeps its old flags until the rest is written
        this.writeDescriptorAt(gpa, e.addr, e.len, e.id, this.#flagsAt(head));
        headFlags = flags;
      } else {
        this.writeDescriptorAt(gpa, e.addr, e.len, e.id, flags);
      }
      if (++this.#availIndex === this.size) {
        this.#availIndex = 0;
        this.#availWrap ^= 1;
      }
    }
    this.#freeSlots -= entries.length;
    const id = entries[entries.length - 1].id;
    if (id < this.size) this.#slotsOf[id] = entries.length;
    this.#view.setUint16(this.slotAddress(head) - this.base + PACKED_DESC_FLAGS, headFlags, true);
  }

  #flagsAt(slot: number): number {
    return this.#view.getUint16(this.slotAddress(slot) - this.base + PACKED_DESC_FLAGS, true);
  }

  /** Sets the driver event suppression area: flags and (for DESC) the slot and wrap counter. */
  setDriverEvent(flags: number, index = 0, wrap = 1): void {
    const at = this.driverAddr - this.base;
    this.#view.setUint16(
      at + EVENT_OFF_WRAP,
      (index & STATE_INDEX_MASK) | (wrap << EVENT_WRAP_SHIFT),
      true,
    );
    this.#view.setUint16(at + EVENT_FLAGS, flags, true);
  }

  /** The device event suppression area's flags. */
  get deviceEventFlags(): number {
    return this.#view.getUint16(this.deviceAddr - this.base + EVENT_FLAGS, true) & EVENT_FLAGS_MASK;
  }

  /** The device event suppression area's `off_wrap`. */
  get deviceEventOffWrap(): number {
    return this.#view.getUint16(this.deviceAddr - this.base + EVENT_OFF_WRAP, true);
  }

  #sequence(index: number, wrap: number): number {
    return wrap === 1 ? index : index + this.size;
  }

  /**
   * Tells whether the driver must kick for what it made available since the last call
   * (virtio 1.2 §2.8.10: DISABLE, ENABLE, or DESC naming a slot it filled since).
   */
  needsKick(): boolean {
    const period = 2 * this.size;
    const now = this.#sequence(this.#availIndex, this.#availWrap);
    const old = this.#kickedAt;
    this.#kickedAt = now;
    if (old === now) return false;
    const flags = this.deviceEventFlags;
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (flags !== RING_EVENT_FLAGS_DESC || !this.features.eventIndex) return true;
    const offWrap = this.deviceEventOffWrap;
    const event = this.#sequence(offWrap & STATE_INDEX_MASK, offWrap >>> EVENT_WRAP_SHIFT);
    return (event - old + period) % period < (now - old + period) % period;
  }

  /** Used descriptors published and not yet read by {@link takeUsed} (nothing is read). */
  usedCount(): number {
    let count = 0;
    for (const entry of this.#published()) if (entry.slots !== 0) count++;
    return count;
  }

  /** Reads the used descriptors published since the last call and frees their slots and IDs. */
  takeUsed(): UsedElement[] {
    return this.#collect(true).map(({ id, len }) => ({ id, len }));
  }

  /** {@link takeUsed}, each element with the buffers of its list. */
  takeUsedChains(): UsedChain[] {
    return this.#collect(true).map(({ id, len, segments }) => ({ id, len, segments }));
  }

  /**
   * Like {@link takeUsed} for lists placed with {@link placeRaw} (their IDs were never
   * taken from the free list): also tells the slot each used descriptor was found in.
   */
  takeUsedRaw(): (UsedElement & { slot: number })[] {
    return this.#collect(false).map(({ id, len, slot }) => ({ id, len, slot }));
  }

  /**
   * The used descriptors published from the driver's used position on, in ring order,
   * each with the slots its buffer took (0: an ID not in use, where the walk stops).
   * Reads the ring only; each step looks up the slots when it is reached.
   */
  *#published(): Generator<{ slot: number; id: number; len: number; slots: number }> {
    const v = this.#view;
    let index = this.#usedIndex;
    let wrap = this.#usedWrap;
    for (let guard = 0; guard < this.size; guard++) {
      const at = this.slotAddress(index) - this.base;
      const flags = v.getUint16(at + PACKED_DESC_FLAGS, true);
      const avail = (flags & PACKED_DESC_F_AVAIL) !== 0 ? 1 : 0;
      const used = (flags & PACKED_DESC_F_USED) !== 0 ? 1 : 0;
      if (avail !== used || used !== wrap) return;
      const id = v.getUint16(at + PACKED_DESC_ID, true);
      const len = v.getUint32(at + PACKED_DESC_LEN, true);
      const slots = id < this.size ? this.#slotsOf[id] : 0;
      yield { slot: index, id, len, slots };
      if (slots === 0) return;
      index += slots;
      if (index >= this.size) {
        index -= this.size;
        wrap ^= 1;
      }
    }
  }

  #collect(freeIds: boolean): (UsedChain & { slot: number })[] {
    const out: (UsedChain & { slot: number })[] = [];
    for (const { slot, id, len, slots } of this.#published()) {
      if (slots === 0) throw new Error(`device returned buffer ${id}, which is not in use`);
      out.push({ id, len, slot, segments: this.#segmentsOf[id] });
      this.#slotsOf[id] = 0;
      this.#segmentsOf[id] = [];
      if (freeIds) this.#freeIds.push(id);
      this.#freeSlots += slots;
      this.#usedIndex += slots;
      if (this.#usedIndex >= this.size) {
        this.#usedIndex -= this.size;
        this.#usedWrap ^= 1;
      }
    }
    return out;
  }

  /** Whether the used descriptor at slot `slot` says the device wrote data (WRITE flag). */
  usedWriteFlag(slot: number): boolean {
    return (this.#view.getUint16(this.slotAddress(slot) - this.base + PACKED_DESC_FLAGS, true) &
      PACKED_DESC_F_WRITE) !== 0;
  }
}
