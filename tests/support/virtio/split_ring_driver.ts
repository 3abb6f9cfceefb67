/**
 * The driver (guest) side of a split virtqueue over {@link ArrayGuestMemory}: lays
 * out the three ring parts, hands out buffers, offers chains (direct or indirect)
 * and collects used elements, the way a guest's virtio driver would (virtio 1.2
 * §2.7.13). Used by the ring engine's unit tests, fuzzers and benchmarks, and — over
 * a region of the front-end's shared memory ({@link DriverOptions.region}) — by the
 * vhost-user front-end of tests/support/frontend/. The one driver-side ring of the
 * tests: the layout constants are ring_layout.ts's.
 *
 * @module
 */

import type { NegotiatedFeatures, StartedVring } from "../../../src/virtio/started_vring.ts";
import { ArrayGuestMemory } from "./array_guest_memory.ts";
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
  needEvent,
  USED_ELEM_LEN,
  USED_ELEM_SIZE,
  USED_FLAGS,
  USED_IDX,
  USED_RING,
  usedEventOffset,
  usedRingBytes,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
} from "../../../src/virtio/ring_layout.ts";

/** Guest-physical address where the driver's region starts (not 0, to catch address bugs). */
export const DRIVER_REGION_BASE = 0x10_0000;

/** One buffer of a chain to offer. */
export interface DriverSegment {
  /** Guest-physical address of the buffer. */
  readonly addr: number;
  /** Length in bytes. */
  readonly length: number;
  /** Device-writable (RX) rather than device-readable (TX). */
  readonly writable: boolean;
}

/** A used element read back by the driver. */
export interface UsedElement {
  /** Head index of the returned chain. */
  readonly id: number;
  /** Bytes the device wrote. */
  readonly len: number;
}

/** A used element with the chain it completed. */
export interface UsedChain extends UsedElement {
  /** The chain's buffers as {@link SplitRingDriver.addChain} offered them; empty for raw offers. */
  readonly segments: readonly DriverSegment[];
}

/** Guest-physical addresses of a ring's three parts. */
export interface RingAreas {
  readonly descriptor: number;
  readonly available: number;
  readonly used: number;
}

/** Page alignment of each ring part (virtio 1.2 §2.7: legacy layouts align to 4096). */
const RING_PART_ALIGN = 4096;

function alignPart(n: number): number {
  return Math.ceil(n / RING_PART_ALIGN) * RING_PART_ALIGN;
}

/** Bytes the three parts of a ring of `size` entries occupy, each 4 KiB aligned. */
export function ringFootprint(size: number): number {
  return alignPart(descriptorTableBytes(size)) + alignPart(availableRingBytes(size)) +
    alignPart(usedRingBytes(size));
}

/** Options of a {@link SplitRingDriver}. */
export interface DriverOptions {
  /** Queue size, a power of two (default 256). */
  readonly size?: number;
  /** Queue index reported in the StartedVring (default 1, TX). */
  readonly index?: number;
  /** Bytes reserved for data buffers (default 1 MiB). */
  readonly dataBytes?: number;
  /** Feature flags (all off by default). */
  readonly features?: Partial<NegotiatedFeatures>;
  /** Memory to place the region in (a new one by default). */
  readonly memory?: ArrayGuestMemory;
  /** Guest-physical address of the region (default {@link DRIVER_REGION_BASE}). */
  readonly base?: number;
  /**
   * The bytes at {@link base} in memory owned elsewhere (the front-end's shared
   * memory): only the three ring parts are laid out there ({@link ringFootprint}
   * bytes, zeroed), with no indirect tables and no data area; the caller places the
   * buffers. Default: a new region of the driver's own, with both.
   */
  readonly region?: Uint8Array;
}

const INDIRECT_ENTRIES = 64;

/** A simulated guest driver for one split virtqueue. */
export class SplitRingDriver {
  /** Memory holding the rings and buffers. */
  readonly memory: ArrayGuestMemory;
  /** The whole region, indexable by `gpa - base`. */
  readonly bytes: Uint8Array;
  /** Guest-physical address of {@link bytes}. */
  readonly base: number;
  /** Queue size. */
  readonly size: number;
  /** Queue index. */
  readonly index: number;
  /** Negotiated features. */
  readonly features: NegotiatedFeatures;
  /** Guest-physical addresses of the descriptor table, available ring and used ring. */
  readonly descAddr: number;
  /** Guest-physical address of the available ring. */
  readonly availAddr: number;
  /** Guest-physical address of the used ring. */
  readonly usedAddr: number;
  /** How many times the device notified the guest (its call eventfd). */
  notifications = 0;

  readonly #view: DataView;
  readonly #free: number[] = [];
  readonly #chainDescriptors: (number[] | null)[];
  readonly #chainSegments: (readonly DriverSegment[])[];
  readonly #indirectAddr: number;
  #nextData: number;
  readonly #dataEnd: number;
  #availIdx = 0;
  #lastUsed = 0;
  #kickedAt = 0;

  constructor(options: DriverOptions = {}) {
    this.size = options.size ?? 256;
    this.index = options.index ?? 1;
    this.base = options.base ?? DRIVER_REGION_BASE;
    this.features = {
      eventIndex: options.features?.eventIndex ?? false,
      indirectDescriptors: options.features?.indirectDescriptors ?? false,
      mergeableRxBuffers: options.features?.mergeableRxBuffers ?? false,
      checksumOffload: options.features?.checksumOffload ?? false,
      guestChecksum: options.features?.guestChecksum ?? false,
      hostTso4: options.features?.hostTso4 ?? false,
      hostTso6: options.features?.hostTso6 ?? false,
      hostEcn: options.features?.hostEcn ?? false,
      guestTso4: options.features?.guestTso4 ?? false,
      guestTso6: options.features?.guestTso6 ?? false,
      mtu: options.features?.mtu ?? 0,
    };
    const descBytes = alignPart(descriptorTableBytes(this.size));
    const availBytes = alignPart(availableRingBytes(this.size));
    const usedBytes = alignPart(usedRingBytes(this.size));
    const external = options.region !== undefined;
    const indirectBytes = external ? 0 : alignPart(this.size * INDIRECT_ENTRIES * DESC_SIZE);
    const dataBytes = external ? 0 : options.dataBytes ?? 1 << 20;
    const total = descBytes + availBytes + usedBytes + indirectBytes + dataBytes;
    if (external && options.region!.length < total) {
      throw new RangeError(`Ring region of ${options.region!.length} bytes, ${total} needed`);
    }
    this.bytes = external ? options.region!.subarray(0, total) : new Uint8Array(total);
    this.bytes.fill(0);
    this.#view = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.length);
    this.memory = options.memory ?? new ArrayGuestMemory();
    this.memory.addRegion(this.base, this.bytes);
    this.descAddr = this.base;
    this.availAddr = this.descAddr + descBytes;
    this.usedAddr = this.availAddr + availBytes;
    this.#indirectAddr = this.usedAddr + usedBytes;
    this.#nextData = this.#indirectAddr + indirectBytes;
    this.#dataEnd = this.base + total;
    for (let i = this.size - 1; i >= 0; i--) this.#free.push(i);
    this.#chainDescriptors = new Array(this.size).fill(null);
    this.#chainSegments = new Array(this.size).fill([]);
  }

  /** Where the descriptor table and the two rings lie in guest memory. */
  get areas(): RingAreas {
    return { descriptor: this.descAddr, available: this.availAddr, used: this.usedAddr };
  }

  /** The vring as the control plane would hand it to the datapath. */
  vring(lastAvailIndex = 0): StartedVring {
    const at = (gpa: number, len: number) =>
      this.bytes.subarray(gpa - this.base, gpa - this.base + len);
    // deno-lint-ignore no-this-alias
    const driver = this;
    return {
      index: this.index,
      size: this.size,
      descriptorTable: at(this.descAddr, descriptorTableBytes(this.size)),
      availableRing: at(this.availAddr, availableRingBytes(this.size)),
      usedRing: at(this.usedAddr, usedRingBytes(this.size)),
      lastAvailIndex,
      memory: this.memory,
      features: this.features,
      notifyGuest() {
        driver.notifications++;
      },
    };
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

  /** Writes descriptor `index` of the main table (64-bit address as two halves). */
  setDescriptor(
    index: number,
    addrLow: number,
    addrHigh: number,
    len: number,
    flags: number,
    next: number,
  ): void {
    this.writeDescriptorAt(this.descAddr + index * DESC_SIZE, addrLow, addrHigh, len, flags, next);
  }

  /** Writes one descriptor at guest-physical address `gpa` (e.g. into an indirect table). */
  writeDescriptorAt(
    gpa: number,
    addrLow: number,
    addrHigh: number,
    len: number,
    flags: number,
    next: number,
  ): void {
    const at = gpa - this.base;
    const v = this.#view;
    v.setUint32(at + DESC_ADDR_LOW, addrLow >>> 0, true);
    v.setUint32(at + DESC_ADDR_HIGH, addrHigh >>> 0, true);
    v.setUint32(at + DESC_LEN, len >>> 0, true);
    v.setUint16(at + DESC_FLAGS, flags, true);
    v.setUint16(at + DESC_NEXT, next, true);
  }

  /** Puts `head` in the next available-ring slot and publishes the new available index. */
  offer(head: number): void {
    const v = this.#view;
    const ring = this.availAddr - this.base;
    v.setUint16(ring + AVAIL_RING + 2 * (this.#availIdx & (this.size - 1)), head, true);
    this.#availIdx = (this.#availIdx + 1) & 0xffff;
    v.setUint16(ring + AVAIL_IDX, this.#availIdx, true);
  }

  /** Writes the available index directly (for malicious rings). */
  setAvailIndex(idx: number): void {
    this.#availIdx = idx & 0xffff;
    this.#view.setUint16(this.availAddr - this.base + AVAIL_IDX, this.#availIdx, true);
  }

  /** The driver's available index. */
  get availIndex(): number {
    return this.#availIdx;
  }

  /** Sets the available ring's flags (e.g. VIRTQ_AVAIL_F_NO_INTERRUPT). */
  setAvailFlags(flags: number): void {
    this.#view.setUint16(this.availAddr - this.base + AVAIL_FLAGS, flags, true);
  }

  /** Sets used_event: notify me when the used index passes this (virtio 1.2 §2.7.10). */
  setUsedEvent(value: number): void {
    this.#view.setUint16(
      this.availAddr - this.base + usedEventOffset(this.size),
      value & 0xffff,
      true,
    );
  }

  /** The device's used index. */
  get usedIndex(): number {
    return this.#view.getUint16(this.usedAddr - this.base + USED_IDX, true);
  }

  /** The device's used-ring flags. */
  get usedFlags(): number {
    return this.#view.getUint16(this.usedAddr - this.base + USED_FLAGS, true);
  }

  /** The device's avail_event. */
  get availEvent(): number {
    return this.#view.getUint16(this.usedAddr - this.base + availEventOffset(this.size), true);
  }

  /**
   * Tells whether the driver must kick for what it offered since the last call
   * (virtio 1.2 §2.7.13.4: avail_event with EVENT_IDX, NO_NOTIFY otherwise).
   */
  needsKick(): boolean {
    const old = this.#kickedAt;
    this.#kickedAt = this.#availIdx;
    if (old === this.#availIdx) return false;
    if (this.features.eventIndex) return needEvent(this.availEvent, this.#availIdx, old);
    return (this.usedFlags & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /** Number of free descriptors in the main table. */
  get freeDescriptors(): number {
    return this.#free.length;
  }

  /**
   * Builds a chain over `segments` (direct, or through an indirect table) and offers
   * it. @returns the head index, or null when descriptors ran out
   */
  addChain(segments: readonly DriverSegment[], indirect = false): number | null {
    if (segments.length === 0) throw new RangeError("Cannot add a chain of 0 segments");
    if (indirect) {
      if (this.#free.length < 1) return null;
      if (this.#indirectAddr === this.#nextData && segments.length <= INDIRECT_ENTRIES) {
        throw new RangeError("Cannot add an indirect chain: this driver has no indirect tables");
      }
      const head = this.#free.pop()!;
      let table: number;
      if (segments.length <= INDIRECT_ENTRIES) {
        table = this.#indirectAddr + head * INDIRECT_ENTRIES * DESC_SIZE;
      } else {
        table = this.alloc(segments.length * DESC_SIZE);
      }
      segments.forEach((s, i) => {
        const last = i === segments.length - 1;
        this.writeDescriptorAt(
          table + i * DESC_SIZE,
          s.addr % 0x1_0000_0000,
          Math.floor(s.addr / 0x1_0000_0000),
          s.length,
          (s.writable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
          last ? 0 : i + 1,
        );
      });
      this.setDescriptor(head, table, 0, segments.length * DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
      this.#chainDescriptors[head] = [head];
      this.#chainSegments[head] = [...segments];
      this.offer(head);
      return head;
    }
    if (this.#free.length < segments.length) return null;
    const indices = segments.map(() => this.#free.pop()!);
    segments.forEach((s, i) => {
      const last = i === segments.length - 1;
      this.setDescriptor(
        indices[i],
        s.addr % 0x1_0000_0000,
        Math.floor(s.addr / 0x1_0000_0000),
        s.length,
        (s.writable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
        last ? 0 : indices[i + 1],
      );
    });
    this.#chainDescriptors[indices[0]] = indices;
    this.#chainSegments[indices[0]] = [...segments];
    this.offer(indices[0]);
    return indices[0];
  }

  /** Used elements published and not yet read by {@link takeUsed} (nothing is read). */
  usedCount(): number {
    return (this.usedIndex - this.#lastUsed) & 0xffff;
  }

  /** Reads the used elements published since the last call and frees their descriptors. */
  takeUsed(): UsedElement[] {
    return this.#collectUsed(false);
  }

  /** {@link takeUsed}, each element with the buffers of its chain. */
  takeUsedChains(): UsedChain[] {
    return this.#collectUsed(true) as UsedChain[];
  }

  #collectUsed(withSegments: boolean): (UsedElement | UsedChain)[] {
    const out: (UsedElement | UsedChain)[] = [];
    const v = this.#view;
    const used = this.usedAddr - this.base;
    const idx = v.getUint16(used + USED_IDX, true);
    while (this.#lastUsed !== idx) {
      const at = used + USED_RING + (this.#lastUsed & (this.size - 1)) * USED_ELEM_SIZE;
      const id = v.getUint32(at, true);
      const len = v.getUint32(at + USED_ELEM_LEN, true);
      const descriptors = id < this.size ? this.#chainDescriptors[id] : null;
      if (!withSegments) out.push({ id, len });
      else out.push({ id, len, segments: descriptors !== null ? this.#chainSegments[id] : [] });
      if (descriptors !== null) {
        for (const d of descriptors) this.#free.push(d);
        this.#chainDescriptors[id] = null;
        this.#chainSegments[id] = [];
      }
      this.#lastUsed = (this.#lastUsed + 1) & 0xffff;
    }
    return out;
  }
}
