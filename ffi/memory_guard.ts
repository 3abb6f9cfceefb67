/**
 * The helper's memory guard (native/memory_guard.c): a process-wide SIGBUS handler
 * and registry of guarded mappings. Touching a page of a shared mapping beyond the
 * end of its file (the file shrank after it was mapped) raises SIGBUS; inside a
 * guarded mapping the handler replaces the whole mapping with zero pages at the same
 * address, marks it faulted and signals one process-wide eventfd, instead of letting
 * the process die. {@link MappedMemory} guards every mapping it makes.
 *
 * @module
 */
import { helper } from "./library.ts";
import { NativeError } from "./native_error.ts";

/** Mappings the registry holds at once (TP_MEMORY_GUARD_SLOTS in native/tpasst_helper.h). */
export const MEMORY_GUARD_SLOTS = 1024;

const TWO_POW_32 = 2 ** 32;

/** The process-wide SIGBUS guard; see the module comment. */
export class MemoryGuard {
  static readonly #counter = new Uint32Array(2);
  static readonly #counterBytes = new Uint8Array(MemoryGuard.#counter.buffer);

  private constructor() {}

  /**
   * Installs the SIGBUS handler (once per process) and returns the eventfd it
   * signals after each guarded fault: readable while faults are unacknowledged.
   * The fd belongs to the process: never close it.
   * @throws NativeError when the eventfd or the handler cannot be set up
   */
  static faultSignalFd(): number {
    const rc = helper().tp_memory_guard_install();
    if (rc < 0) throw new NativeError(-rc, "memory guard install (eventfd, sigaction SIGBUS)");
    return rc;
  }

  /**
   * Reads and resets the eventfd's count of guarded faults (0 when none is pending).
   * Which mappings faulted is told by {@link faulted}, per slot.
   */
  static drainFaults(): number {
    const rc = helper().tp_eventfd_read(MemoryGuard.faultSignalFd(), MemoryGuard.#counterBytes);
    if (rc < 0) throw new NativeError(-rc, "eventfd_read(memory guard)");
    return MemoryGuard.#counter[0] + MemoryGuard.#counter[1] * TWO_POW_32;
  }

  /**
   * Guards the `length` bytes at `pointer`, a mapping this process made and will
   * {@link unregister} before unmapping. Installs the handler if needed.
   * @returns the registry slot
   * @throws NativeError (ENOSPC when all {@link MEMORY_GUARD_SLOTS} are taken)
   */
  static register(pointer: Deno.PointerObject, length: number): number {
    if (!Number.isSafeInteger(length) || length <= 0) {
      throw new RangeError(`Cannot guard ${length} bytes: not a positive integer`);
    }
    const rc = helper().tp_memory_guard_register(pointer, BigInt(length));
    if (rc < 0) throw new NativeError(-rc, `memory guard register (${length} bytes)`);
    return rc;
  }

  /**
   * Stops guarding the mapping in `slot` (call it before unmapping).
   * @throws NativeError EINVAL for a slot that is not registered
   */
  static unregister(slot: number): void {
    const rc = helper().tp_memory_guard_unregister(slot);
    if (rc < 0) throw new NativeError(-rc, `memory guard unregister (slot ${slot})`);
  }

  /**
   * Tells whether the mapping in `slot` faulted: its file no longer covers it, and
   * its bytes are now zeros private to this process.
   * @throws NativeError EINVAL for a slot that is not registered
   */
  static faulted(slot: number): boolean {
    const rc = helper().tp_memory_guard_faulted(slot);
    if (rc < 0) throw new NativeError(-rc, `memory guard faulted (slot ${slot})`);
    return rc === 1;
  }
}
