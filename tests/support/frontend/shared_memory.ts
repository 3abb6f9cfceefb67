/**
 * Guest memory for the vhost-user test front-end: two memfd-backed regions mapped
 * into this process, the second one at a non-zero mmap offset and a guest-physical
 * address above 4 GiB, as QEMU would share them.
 *
 * @module
 */

import { MappedMemory } from "../../../ffi/mapped_memory.ts";
import { MemFd } from "../../../ffi/mem_fd.ts";
import type { RegionDescription } from "../../../src/vhost_user/guest_memory_map.ts";

/** One region of harness memory. */
export interface HarnessRegion {
  /** What the front-end tells the backend. */
  readonly description: RegionDescription;
  /** The memfd the backend maps. */
  readonly memfd: MemFd;
  /** This process's mapping of the whole memfd. */
  readonly mapping: MappedMemory;
  /** The region's bytes (the mapping after mmapOffset). */
  readonly bytes: Uint8Array;
}

/** Region layout options. */
export interface HarnessMemoryOptions {
  /** Size of each region in bytes (default 1 MiB). */
  readonly regionSize?: number;
  /**
   * Name of the memfds, followed by the region number (default "tpasst-harness-ram"):
   * it shows in /proc/PID/maps of every process that maps them.
   */
  readonly namePrefix?: string;
  /**
   * Create the memfds with MFD_ALLOW_SEALING, as QEMU's memory-backend-memfd does:
   * the backend can then seal them against shrinking (default false).
   */
  readonly allowSealing?: boolean;
  /**
   * Guest-physical address of region 1 (default {@link REGION1_GPA}); `regionSize`
   * puts it right after region 0, adjacent in guest-physical space like two memory
   * slots, while each keeps its own memfd and mapping.
   */
  readonly region1GuestAddress?: number;
}

/** Default name of the harness memfds (the region number follows). */
export const DEFAULT_NAME_PREFIX = "tpasst-harness-ram";
/** Default region size: 1 MiB. */
export const DEFAULT_REGION_SIZE = 0x10_0000;
/** Guest-physical base of region 0 (spec: regions are arbitrary; QEMU's RAM starts at 0). */
export const REGION0_GPA = 0;
/** Guest-physical base of region 1: above 4 GiB so that high address halves are exercised. */
export const REGION1_GPA = 0x1_0000_0000;
/** Fake front-end user addresses (QEMU's virtual addresses of the regions). */
export const REGION0_USER = 0x7f00_0000_0000;
/** Fake user address of region 1. */
export const REGION1_USER = 0x7f00_4000_0000;
/** Region 1 starts this far into its memfd (QEMU passes non-zero mmap offsets). */
export const REGION1_MMAP_OFFSET = 0x1000;

/** Two memfd regions, readable and writable by guest-physical address. */
export class HarnessMemory {
  /** Region 0 (guest-physical 0) and region 1 (above 4 GiB, non-zero mmap offset). */
  readonly regions: readonly HarnessRegion[];

  constructor(options: HarnessMemoryOptions = {}) {
    const size = options.regionSize ?? DEFAULT_REGION_SIZE;
    const make = (name: string, gpa: number, user: number, offset: number): HarnessRegion => {
      const memfd = MemFd.create(name, size + offset, { allowSealing: options.allowSealing });
      try {
        const mapping = MappedMemory.map(memfd.fd, size + offset, 0);
        return {
          description: { guestAddress: gpa, size, userAddress: user, mmapOffset: offset },
          memfd,
          mapping,
          bytes: mapping.bytes.subarray(offset, offset + size),
        };
      } catch (error) {
        memfd.close();
        throw error;
      }
    };
    const prefix = options.namePrefix ?? DEFAULT_NAME_PREFIX;
    const first = make(`${prefix}0`, REGION0_GPA, REGION0_USER, 0);
    try {
      this.regions = [
        first,
        make(
          `${prefix}1`,
          options.region1GuestAddress ?? REGION1_GPA,
          REGION1_USER,
          REGION1_MMAP_OFFSET,
        ),
      ];
    } catch (error) {
      first.mapping.close();
      first.memfd.close();
      throw error;
    }
  }

  /** The region containing `[gpa, gpa+length)`, with the offset inside it. */
  locate(gpa: number, length: number): { region: HarnessRegion; offset: number } {
    for (const region of this.regions) {
      const start = region.description.guestAddress;
      if (gpa >= start && gpa + length <= start + region.description.size) {
        return { region, offset: gpa - start };
      }
    }
    throw new RangeError(
      `Cannot access guest ${gpa.toString(16)}+${length}: outside harness memory`,
    );
  }

  /** A view of guest memory at `gpa` (valid until close()). */
  view(gpa: number, length: number): Uint8Array {
    const { region, offset } = this.locate(gpa, length);
    return region.bytes.subarray(offset, offset + length);
  }

  /** The front-end user address of `gpa`. */
  userAddress(gpa: number): number {
    const { region, offset } = this.locate(gpa, 0);
    return region.description.userAddress + offset;
  }

  /**
   * Shrinks (or grows) the file behind region `index` to `fileSize` bytes, as a
   * misbehaving front-end may do after sharing it. Afterwards the region's bytes
   * beyond the new end must not be touched here either: in this process too they
   * raise SIGBUS (caught by the memory guard, which then reads zeros).
   * @throws NativeError EPERM when the backend sealed the file against shrinking
   */
  truncateFile(index: number, fileSize: number): void {
    const region = this.regions[index];
    if (region === undefined) {
      throw new RangeError(`Cannot truncate region ${index}: no such region`);
    }
    region.memfd.truncate(fileSize);
  }

  /** Unmaps and closes both regions; safe twice. */
  close(): void {
    for (const region of this.regions) {
      region.mapping.close();
      region.memfd.close();
    }
  }
}
