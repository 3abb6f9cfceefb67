/**
 * The vhost-user dirty log: a bitmap the front-end shares (SET_LOG_BASE) in which the
 * back-end marks every guest page it writes while VHOST_F_LOG_ALL is acked, one bit
 * per {@link VHOST_LOG_PAGE} bytes of guest-physical address space, bit `page % 8` of
 * byte `page / 8`. QEMU reads and clears the bitmap while the guest runs and copies
 * the marked pages to the migration target again; a page written and not marked keeps
 * its old contents there.
 *
 * Spec: QEMU docs/interop/vhost-user.rst, "Migration" ("Use atomic operations, as the
 * log may be concurrently manipulated").
 *
 * @module
 */

import type { GuestWriteLog } from "../virtio/guest_write_log.ts";
import { VHOST_LOG_PAGE } from "./protocol.ts";

/** Pages one byte of the bitmap covers. */
const PAGES_PER_BYTE = 8;

/** The mapped log bitmap, as the backend environment provides it. */
export interface LogMapping {
  /** Bytes mapped. */
  readonly size: number;
  /**
   * Sets the bits of `mask` in byte `index` with one atomic read-modify-write, so that
   * bits the front-end clears or sets at the same time in the same byte are kept.
   */
  atomicOrByte(index: number, mask: number): void;
  /** Releases the mapping; safe to call twice. */
  unmap(): void;
}

/**
 * Maps `size` bytes of the log's `fd` from the page-aligned `offset`, shared and
 * read-write. Injectable so that tests run over ArrayBuffers.
 * @throws Error when the mapping fails
 */
export type LogMapFunction = (fd: number, size: number, offset: number) => LogMapping;

/** One log set by SET_LOG_BASE: marks guest-physical ranges in the shared bitmap. */
export class DirtyLog {
  /** Bytes of bitmap (as the front-end sized it). */
  readonly size: number;
  #mapping: LogMapping | null;
  readonly #start: number;

  /**
   * @param mapping the mapping holding the bitmap (the log takes it over)
   * @param start where the bitmap starts in the mapping (the log offset's distance
   *   from the page below it)
   * @param size bytes of bitmap; `start + size` must not exceed the mapping
   */
  constructor(mapping: LogMapping, start: number, size: number) {
    if (!(start >= 0 && size > 0 && start + size <= mapping.size)) {
      throw new RangeError(
        `Cannot use a log of ${size} bytes at ${start}: the mapping has ${mapping.size} bytes`,
      );
    }
    this.#mapping = mapping;
    this.#start = start;
    this.size = size;
  }

  /** Bytes of guest-physical address space the log covers, from address 0. */
  get coveredBytes(): number {
    return this.size * PAGES_PER_BYTE * VHOST_LOG_PAGE;
  }

  /**
   * Marks every page `[address, address + length)` touches (both below 2^53). Pages
   * in one bitmap byte are set with one atomic OR.
   * @returns false when part of the range lies beyond the log (those pages are not
   *   marked) or the log is closed; true otherwise (also for length 0)
   */
  markGuestRange(address: number, length: number): boolean {
    const mapping = this.#mapping;
    if (mapping === null) return false;
    if (!(length > 0)) return true;
    const lastPage = Math.floor((address + length - 1) / VHOST_LOG_PAGE);
    let page = Math.floor(address / VHOST_LOG_PAGE);
    while (page <= lastPage) {
      const byte = Math.floor(page / PAGES_PER_BYTE);
      if (byte >= this.size) return false;
      const byteFirstPage = byte * PAGES_PER_BYTE;
      const lowBit = page - byteFirstPage;
      const highBit = Math.min(PAGES_PER_BYTE - 1, lastPage - byteFirstPage);
      // bits lowBit..highBit
      const mask = (0xff << lowBit) & (0xff >> (PAGES_PER_BYTE - 1 - highBit));
      mapping.atomicOrByte(this.#start + byte, mask);
      page = byteFirstPage + PAGES_PER_BYTE;
    }
    return true;
  }

  /** Unmaps the bitmap; later marks do nothing and return false. Safe to call twice. */
  close(): void {
    const mapping = this.#mapping;
    this.#mapping = null;
    mapping?.unmap();
  }
}

/** Turns a written view into its guest-physical address (the guest memory map does). */
export interface ViewAddresses {
  /** Guest-physical address of `view[0]`, or -1 when the view is not guest memory. */
  guestAddressOfView(view: Uint8Array): number;
}

/**
 * What one ring reports to the dirty log: buffer writes at the guest-physical
 * address of the view written, used-ring writes at the ring's log address
 * (VHOST_VRING_F_LOG's `log_guest_addr` + offset) when the front-end asked for them.
 */
export class RingWriteLog implements GuestWriteLog {
  readonly #log: DirtyLog;
  readonly #memory: ViewAddresses;
  readonly #usedAddress: number;
  readonly #onMiss: (what: string) => void;

  /**
   * @param usedAddress guest address at which the used ring's first byte is logged,
   *   or -1 when the ring's used-ring writes are not logged (no VHOST_VRING_F_LOG)
   * @param onMiss told of a write that could not be marked (beyond the log, or a
   *   view outside guest memory): the front-end will miss that page
   */
  constructor(
    log: DirtyLog,
    memory: ViewAddresses,
    usedAddress: number,
    onMiss: (what: string) => void,
  ) {
    this.#log = log;
    this.#memory = memory;
    this.#usedAddress = usedAddress;
    this.#onMiss = onMiss;
  }

  /** {@inheritDoc GuestWriteLog.markView} */
  markView(view: Uint8Array, start: number, length: number): void {
    const base = this.#memory.guestAddressOfView(view);
    if (base < 0) {
      this.#onMiss(`a write of ${length} bytes into memory that is no mapped guest region`);
      return;
    }
    if (!this.#log.markGuestRange(base + start, length)) {
      this.#onMiss(
        `guest 0x${(base + start).toString(16)}+${length} is beyond the ${this.#log.size}-byte log`,
      );
    }
  }

  /** {@inheritDoc GuestWriteLog.markUsed} */
  markUsed(offset: number, length: number): void {
    if (this.#usedAddress < 0) return;
    if (!this.#log.markGuestRange(this.#usedAddress + offset, length)) {
      this.#onMiss(
        `used ring write at log address 0x${
          (this.#usedAddress + offset).toString(16)
        }+${length} is beyond the ${this.#log.size}-byte log`,
      );
    }
  }
}
