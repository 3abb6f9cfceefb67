/**
 * How the virtqueue engine reaches guest memory: by guest-physical address (GPA),
 * which is what descriptors carry (virtio 1.2 §2.7.5, `le64 addr`).
 *
 * The vhost-user memory map (src/vhost_user/) implements this over mmap'ed regions;
 * tests implement it over plain ArrayBuffers.
 *
 * @module
 */

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
}
