/**
 * How the virtqueue engine reaches guest memory: by guest-physical address (GPA),
 * which is what descriptors carry (virtio 1.2 §2.7.5, `le64 addr`).
 *
 * The vhost-user memory map (src/vhost_user/) implements this over mmap'ed regions;
 * tests implement it over plain ArrayBuffers.
 *
 * Guest memory may come in several regions (memory slots: boot RAM, DIMMs,
 * virtio-mem), each mapped separately: two regions adjacent in guest-physical space
 * are not adjacent in this process. A buffer the guest placed across such a boundary
 * is legitimate and resolves to one view per region ({@link GuestMemory.viewPieces}),
 * as QEMU's virtqueue_map_desc() splits a descriptor into one iovec per memory
 * section. Ring areas and indirect tables are resolved with {@link GuestMemory.view}
 * and must lie in one region, as QEMU requires too (vhost_memory_map() of each ring
 * area must return its whole length; address_space_cache_init() of an indirect table
 * shorter than the table fails with "Cannot map indirect buffer").
 *
 * @module
 */

/** {@link GuestMemory.viewPieces} result: a byte of the range is outside mapped memory. */
export const PIECES_OUTSIDE_MEMORY = -1;
/** {@link GuestMemory.viewPieces} result: the range needs more views than `room`. */
export const PIECES_NO_ROOM = -2;

/** Guest memory as seen by a virtqueue. */
export interface GuestMemory {
  /**
   * Resolves the guest-physical range `[addr, addr + length)` to a view of exactly
   * `length` bytes, or returns null when any byte of the range is outside mapped
   * memory (including ranges that wrap past 2^64 or span two regions).
   *
   * The 64-bit address comes as two unsigned 32-bit halves (reading a BigInt costs
   * ~13 ns; two u32 reads ~2 ns).
   *
   * The view is valid only until the memory map changes; callers must not keep it
   * beyond the current batch.
   */
  view(addrLow: number, addrHigh: number, length: number): Uint8Array | null;

  /**
   * Resolves the range like {@link view} without making a view: returns where it
   * starts in {@link locatedBytes} (the whole region's bytes, set by this call), or
   * -1 when {@link view} would return null. The RX path uses it to fill iovec tables
   * without one typed-array view per guest buffer; the same validity rules apply.
   */
  locate(addrLow: number, addrHigh: number, length: number): number;

  /** The region of the last successful {@link locate}. */
  readonly locatedBytes: Uint8Array;

  /**
   * Resolves the guest-physical range `[addr, addr + length)` like {@link view}, but
   * lets it run on from one region into the next one that starts exactly where the
   * first ends: writes one view per region touched, in address order, to
   * `out[at]`, `out[at + 1]`, … Their lengths add up to exactly `length`; each is
   * non-empty (one empty view for `length` 0 at a mapped address).
   *
   * Writes nothing unless it succeeds. Meant for the case where {@link view}
   * returned null; the same validity rules apply to the views.
   *
   * @param room the most views that may be written
   * @returns the number of views written (≥ 1), {@link PIECES_OUTSIDE_MEMORY} when
   *   a byte of the range is outside mapped memory (a gap between regions, past the
   *   last, wrapping past 2^64), or {@link PIECES_NO_ROOM} when it needs more than
   *   `room` views
   */
  viewPieces(
    addrLow: number,
    addrHigh: number,
    length: number,
    out: Uint8Array[],
    at: number,
    room: number,
  ): number;
}
