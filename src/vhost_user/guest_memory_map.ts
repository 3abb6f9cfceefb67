/**
 * The guest memory map of one vhost-user session: the regions the front-end shared
 * (SET_MEM_TABLE, ADD_MEM_REG), mapped into this process, looked up by guest-physical
 * address (descriptor buffers) or by front-end user address (ring addresses).
 *
 * Spec: QEMU docs/interop/vhost-user.rst, "Memory access" and "Memory regions description".
 *
 * @module
 */

import { type GuestMemory, PIECES_NO_ROOM, PIECES_OUTSIDE_MEMORY } from "../virtio/guest_memory.ts";

/** One region as described by the front-end; every field is below 2^53. */
export interface RegionDescription {
  /** Guest-physical address of the first byte. */
  readonly guestAddress: number;
  /** Size in bytes, > 0. */
  readonly size: number;
  /** Front-end (QEMU) virtual address of the first byte. */
  readonly userAddress: number;
  /** Where the region starts in the shared fd. */
  readonly mmapOffset: number;
}

/** A mapping of (part of) a file; `bytes` stays valid until `unmap()`. */
export interface Mapping {
  /** The mapped bytes. */
  readonly bytes: Uint8Array;
  /**
   * True once the file no longer covered a page that was touched (it shrank): the
   * mapping now reads zeros instead of guest memory (ffi/memory_guard.ts). Absent
   * where that cannot happen (mappings over ArrayBuffers in tests).
   */
  readonly faulted?: boolean;
  /** Releases the mapping; every view into `bytes` must be dropped first. */
  unmap(): void;
}

/**
 * Maps `size` bytes of `fd` starting at the page-aligned `offset`, shared and
 * read-write. Injectable so that tests run over ArrayBuffers.
 * @throws Error when the mapping fails
 */
export type MapFunction = (fd: number, size: number, offset: number) => Mapping;

/** Page granularity of mmap offsets. */
export const MMAP_PAGE_SIZE = 4096;

/** Addresses and sizes must stay below 2^53 so that doubles hold them exactly. */
const ADDRESS_LIMIT = 2 ** 53;
/** 2^32, to join two u32 halves. */
const TWO_POW_32 = 2 ** 32;
/** High halves ≥ this give addresses ≥ 2^53. */
const HIGH_HALF_LIMIT = 0x200000;

interface MappedRegion {
  readonly guestStart: number;
  readonly guestEnd: number; // exclusive
  readonly userStart: number;
  readonly userEnd: number; // exclusive
  readonly mmapOffset: number;
  readonly mapping: Mapping;
  /** The region's bytes (`mapping.bytes` minus the alignment slack before mmapOffset). */
  bytes: Uint8Array;
}

/** Whether bytes `[start, end)` of `buffer` lie within the region's bytes. */
function viewInRegion(
  region: MappedRegion,
  buffer: ArrayBufferLike,
  start: number,
  end: number,
): boolean {
  const bytes = region.bytes;
  return bytes.buffer === buffer && start >= bytes.byteOffset &&
    end <= bytes.byteOffset + bytes.byteLength;
}

function hex(value: number): string {
  return "0x" + value.toString(16);
}

/** Guest memory backed by mapped vhost-user regions; implements {@link GuestMemory}. */
export class GuestMemoryMap implements GuestMemory {
  readonly #map: MapFunction;
  readonly #maxRegions: number;
  #regions: MappedRegion[] = [];
  #lastHit: MappedRegion | null = null;
  /** The region guestAddressOfView() found last. */
  #lastViewHit: MappedRegion | null = null;

  /**
   * @param map how to map a region's fd
   * @param maxRegions regions accepted in total (memory slots)
   */
  constructor(map: MapFunction, maxRegions: number) {
    this.#map = map;
    this.#maxRegions = maxRegions;
  }

  /** Number of regions mapped. */
  get regionCount(): number {
    return this.#regions.length;
  }

  /** The mapped regions' descriptions, sorted by guest address (for logs and tests). */
  describe(): RegionDescription[] {
    return this.#regions.map((r) => ({
      guestAddress: r.guestStart,
      size: r.guestEnd - r.guestStart,
      userAddress: r.userStart,
      mmapOffset: r.mmapOffset,
    }));
  }

  /**
   * Checks a set of new regions against each other and (unless `replacing`) against the
   * mapped ones: non-zero size, all ends below 2^53, no overlap in guest-physical or
   * user address space, within the slot limit.
   * @returns null when valid, else the failed condition
   */
  validate(regions: readonly RegionDescription[], replacing: boolean): string | null {
    const existing = replacing ? [] : this.describe();
    if (existing.length + regions.length > this.#maxRegions) {
      return `${existing.length + regions.length} regions exceed the limit of ${this.#maxRegions}`;
    }
    const all = [...existing];
    for (const region of regions) {
      const what = `region guest ${hex(region.guestAddress)} size ${hex(region.size)}`;
      if (region.size === 0) return `${what} has zero size`;
      if (region.size > ADDRESS_LIMIT - region.guestAddress) {
        return `${what} ends at or beyond 2^53`;
      }
      if (region.size > ADDRESS_LIMIT - region.userAddress) {
        return `${what} user address ${hex(region.userAddress)} ends at or beyond 2^53`;
      }
      if (region.size > ADDRESS_LIMIT - region.mmapOffset) {
        return `${what} mmap offset ${hex(region.mmapOffset)} ends at or beyond 2^53`;
      }
      for (const other of all) {
        if (
          region.guestAddress < other.guestAddress + other.size &&
          other.guestAddress < region.guestAddress + region.size
        ) {
          return `${what} overlaps region guest ${hex(other.guestAddress)} size ${hex(other.size)}`;
        }
        if (
          region.userAddress < other.userAddress + other.size &&
          other.userAddress < region.userAddress + region.size
        ) {
          return `${what} user range overlaps region at user ${hex(other.userAddress)}`;
        }
      }
      all.push(region);
    }
    return null;
  }

  /**
   * Maps one already validated region from `fd` (the caller still owns and closes
   * `fd`). The mapping starts at the page below `mmapOffset`.
   * @throws Error when the mapping fails or returns fewer bytes than asked
   */
  add(region: RegionDescription, fd: number): void {
    const slack = region.mmapOffset % MMAP_PAGE_SIZE;
    const length = region.size + slack;
    const mapping = this.#map(fd, length, region.mmapOffset - slack);
    if (mapping.bytes.length < length) {
      mapping.unmap();
      throw new RangeError(
        `Cannot map region guest ${
          hex(region.guestAddress)
        }: got ${mapping.bytes.length} of ${length} bytes`,
      );
    }
    const mapped: MappedRegion = {
      guestStart: region.guestAddress,
      guestEnd: region.guestAddress + region.size,
      userStart: region.userAddress,
      userEnd: region.userAddress + region.size,
      mmapOffset: region.mmapOffset,
      mapping,
      bytes: mapping.bytes.subarray(slack, slack + region.size),
    };
    this.#regions.push(mapped);
    this.#regions.sort((a, b) => a.guestStart - b.guestStart);
  }

  /**
   * Unmaps the region that starts at `guestAddress` with `size` bytes. The caller
   * must have stopped every ring first.
   * @returns false when no such region is mapped
   */
  remove(guestAddress: number, size: number): boolean {
    const index = this.#regions.findIndex((r) =>
      r.guestStart === guestAddress && r.guestEnd - r.guestStart === size
    );
    if (index < 0) return false;
    const [region] = this.#regions.splice(index, 1);
    this.#release(region);
    return true;
  }

  /** Unmaps every region. The caller must have stopped every ring first. */
  clear(): void {
    const regions = this.#regions;
    this.#regions = [];
    for (const region of regions) this.#release(region);
  }

  #release(region: MappedRegion): void {
    this.#lastHit = null;
    this.#lastViewHit = null;
    this.locatedBytes = new Uint8Array(0);
    region.bytes = new Uint8Array(0);
    region.mapping.unmap();
  }

  /**
   * The first mapped region whose mapping faulted (its file shrank under it: it reads
   * zeros now), or null when every region is intact.
   */
  faultedRegion(): RegionDescription | null {
    for (const region of this.#regions) {
      if (region.mapping.faulted === true) {
        return {
          guestAddress: region.guestStart,
          size: region.guestEnd - region.guestStart,
          userAddress: region.userStart,
          mmapOffset: region.mmapOffset,
        };
      }
    }
    return null;
  }

  /** {@inheritDoc GuestMemory.view} (Found by {@link locate}, which sets {@link locatedBytes}.) */
  view(addrLow: number, addrHigh: number, length: number): Uint8Array | null {
    const start = this.locate(addrLow, addrHigh, length);
    return start < 0 ? null : this.locatedBytes.subarray(start, start + length);
  }

  /** {@inheritDoc GuestMemory.locatedBytes} */
  locatedBytes: Uint8Array = new Uint8Array(0);

  /** {@inheritDoc GuestMemory.locate} */
  locate(addrLow: number, addrHigh: number, length: number): number {
    if (addrHigh >= HIGH_HALF_LIMIT) return -1;
    const address = addrHigh * TWO_POW_32 + addrLow;
    let region = this.#lastHit;
    if (region === null || address < region.guestStart || address >= region.guestEnd) {
      region = null;
      for (const candidate of this.#regions) {
        if (address >= candidate.guestStart && address < candidate.guestEnd) {
          region = candidate;
          break;
        }
      }
      if (region === null) return -1;
      this.#lastHit = region;
    }
    // guestEnd - address is exact (both below 2^53); address + length might round
    if (!(length >= 0 && length <= region.guestEnd - address)) return -1;
    this.locatedBytes = region.bytes;
    return address - region.guestStart;
  }

  /**
   * {@inheritDoc GuestMemory.viewPieces}
   * Regions are kept sorted by guest address, so the region after one is the next
   * entry; it continues the range only when it starts exactly at the first's end.
   */
  viewPieces(
    addrLow: number,
    addrHigh: number,
    length: number,
    out: Uint8Array[],
    at: number,
    room: number,
  ): number {
    if (addrHigh >= HIGH_HALF_LIMIT || !(length >= 0)) return PIECES_OUTSIDE_MEMORY;
    const address = addrHigh * TWO_POW_32 + addrLow; // exact: below 2^53
    const regions = this.#regions;
    let first = -1;
    for (let i = 0; i < regions.length; i++) {
      if (address >= regions[i].guestStart && address < regions[i].guestEnd) {
        first = i;
        break;
      }
    }
    if (first < 0) return PIECES_OUTSIDE_MEMORY;
    if (room < 1) return PIECES_NO_ROOM;
    if (length === 0) {
      const offset = address - regions[first].guestStart;
      out[at] = regions[first].bytes.subarray(offset, offset);
      return 1;
    }
    // First pass: the regions the range covers are consecutive entries, each starting
    // at the previous one's end. Only differences of addresses below 2^53 are formed
    // (`left` shrinks, the cursor moves to region ends), never address + length.
    let pieces = 0;
    for (let i = first, cursor = address, left = length; left > 0; i++) {
      if (i >= regions.length || (i > first && regions[i].guestStart !== cursor)) {
        return PIECES_OUTSIDE_MEMORY;
      }
      if (++pieces > room) return PIECES_NO_ROOM;
      const n = Math.min(left, regions[i].guestEnd - cursor);
      cursor += n;
      left -= n;
    }
    for (let i = 0, cursor = address, left = length; left > 0; i++) {
      const region = regions[first + i];
      const n = Math.min(left, region.guestEnd - cursor);
      const offset = cursor - region.guestStart;
      out[at + i] = region.bytes.subarray(offset, offset + n);
      cursor += n;
      left -= n;
    }
    return pieces;
  }

  /**
   * The guest-physical address of the first byte of `view`, a view this map returned
   * (or part of one), or -1 when `view` does not lie within one mapped region. The
   * dirty log turns written views into guest pages with it.
   */
  guestAddressOfView(view: Uint8Array): number {
    const buffer = view.buffer;
    const start = view.byteOffset;
    const end = start + view.byteLength;
    let region = this.#lastViewHit;
    if (region === null || !viewInRegion(region, buffer, start, end)) {
      region = null;
      for (const candidate of this.#regions) {
        if (viewInRegion(candidate, buffer, start, end)) {
          region = candidate;
          break;
        }
      }
      if (region === null) return -1;
      this.#lastViewHit = region;
    }
    return region.guestStart + (start - region.bytes.byteOffset);
  }

  /**
   * Resolves the front-end user-address range `[address, address + length)`, or returns
   * null when any byte is outside one mapped region. `address` must be below 2^53.
   */
  viewByUserAddress(address: number, length: number): Uint8Array | null {
    if (!(address >= 0 && address < ADDRESS_LIMIT && length >= 0)) return null;
    for (const region of this.#regions) {
      if (address >= region.userStart && address < region.userEnd) {
        if (length > region.userEnd - address) return null;
        const start = address - region.userStart;
        return region.bytes.subarray(start, start + length);
      }
    }
    return null;
  }
}
