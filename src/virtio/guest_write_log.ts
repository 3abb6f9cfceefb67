/**
 * How the virtqueue engine and the datapath report what they wrote into guest memory
 * while the front-end tracks dirty pages (vhost-user live migration: QEMU copies a page
 * again when the device marked it after its last copy). A page written and not
 * reported keeps the old contents on the migration target: silent guest memory
 * corruption. So every write into guest memory is reported, after it is done.
 *
 * Spec: QEMU docs/interop/vhost-user.rst, "Migration"; the control plane
 * (src/vhost_user/dirty_log.ts) implements this over the front-end's log bitmap.
 *
 * @module
 */

/** Receives the ranges of guest memory a ring's device side wrote; null where nothing is tracked. */
export interface GuestWriteLog {
  /**
   * Reports that bytes `[start, start + length)` of `view` were written. `view` is a
   * view `GuestMemory` returned for this ring's memory (or a subarray of one).
   */
  markView(view: Uint8Array, start: number, length: number): void;
  /**
   * Reports that bytes `[offset, offset + length)` of the ring's used ring were
   * written (elements, index, flags, avail_event).
   */
  markUsed(offset: number, length: number): void;
}
