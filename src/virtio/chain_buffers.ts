/**
 * The steps both ring engines (split: virtqueue.ts, packed: packed_virtqueue.ts) take
 * for one descriptor of a chain: resolving a buffer element into the chain's views or
 * located ranges, and mapping an indirect table (virtio 1.2 §2.7.5.3, §2.8.7), checked
 * for its length, its place in guest memory and sharing with other chains.
 *
 * @module
 */

import { type GuestMemory } from "./guest_memory.ts";
import type { DescriptorChain } from "./descriptor_chain.ts";
import { Fault, type FaultRecord } from "./chain_fault.ts";
import type { IndirectTableClaims } from "./indirect_table_claims.ts";

/**
 * Indirect tables with more entries than this are checked for overlap with the tables
 * of other chains made available since the last publish (virtio 1.2 §2.7.13: a buffer
 * goes into free descriptors, and a table's entries are descriptors). Smaller tables
 * are not: sharing one costs at most this many descriptors per head, no more than a
 * chain of that length, and Linux's tables stay below it (at most MAX_SKB_FRAGS + 2
 * = 19 entries), so the common path never touches the sorted range set. The threshold
 * also bounds that set: each entry costs more than this many descriptors walked, so
 * a turn adds at most TURN_DESCRIPTOR_BUDGET (virtqueue.ts) / 33 ranges to it.
 */
export const SHARED_TABLE_CHECK_MIN_ENTRIES = 32;

/** Chain ids (stamps, indirect table claims) restart past this. */
export const CHAIN_ID_LIMIT = 0xffff_ffff;

/** Placeholder for the views a located chain does not keep. */
const EMPTY_VIEW = new Uint8Array(0);

/**
 * Stores the guest buffer [addr, addr + len) at position `count` of `chain`: as a
 * located range (base, offset, length) when the chain is located, else as a view; a
 * buffer that is not inside one region (maybe across adjacent ones: a gather list)
 * becomes one view per region, each its own base at offset 0 in a located chain.
 * The common case (one region, room left) is kept short so that the engines' walks
 * take it inline; the rest is {@link storeBufferPieces}.
 * @returns the views or ranges stored (≥ 1), or a negative
 *   {@link GuestMemory.viewPieces} result: PIECES_NO_ROOM when `chain` has no room
 *   left, PIECES_OUTSIDE_MEMORY when a byte is outside guest memory
 */
export function storeBuffer(
  memory: GuestMemory,
  chain: DescriptorChain,
  count: number,
  addrLow: number,
  addrHigh: number,
  len: number,
): number {
  if (count < chain.lengths.length) {
    if (chain.located) {
      const offset = memory.locate(addrLow, addrHigh, len);
      if (offset >= 0) {
        chain.bases[count] = memory.locatedBytes;
        chain.offsets[count] = offset;
        chain.lengths[count] = len;
        return 1;
      }
    } else {
      const view = memory.view(addrLow, addrHigh, len);
      if (view !== null) {
        chain.buffers[count] = view;
        return 1;
      }
    }
  }
  return storeBufferPieces(memory, chain, count, addrLow, addrHigh, len);
}

/**
 * {@link storeBuffer} for a buffer not inside one region, or a chain without room: one
 * view per region touched (in a located chain each becomes its own base at offset 0),
 * or the negative {@link GuestMemory.viewPieces} result.
 */
function storeBufferPieces(
  memory: GuestMemory,
  chain: DescriptorChain,
  count: number,
  addrLow: number,
  addrHigh: number,
  len: number,
): number {
  const buffers = chain.buffers;
  const capacity = buffers.length;
  const views = memory.viewPieces(addrLow, addrHigh, len, buffers, count, capacity - count);
  if (views > 0 && chain.located) {
    // Each piece becomes its own base, at offset 0 (rare: a buffer across regions).
    for (let i = count; i < count + views; i++) {
      chain.bases[i] = buffers[i];
      chain.offsets[i] = 0;
      chain.lengths[i] = buffers[i].length;
      buffers[i] = EMPTY_VIEW;
    }
  }
  return views;
}

/**
 * Locates the indirect table [addr, addr + len) of chain `id`, read in place: its
 * length must be a non-zero multiple of `entrySize`, at most `queueSize` entries (virtio
 * 1.2 §2.7.5.3.1, §2.8.7); it must lie in one memory region (QEMU requires that too: see
 * guest_memory.ts); a table of more than {@link SHARED_TABLE_CHECK_MIN_ENTRIES} entries
 * must not overlap one another chain claimed in `claims`. No view is made: the table is
 * read from the region's bytes, `memory.locatedBytes` right after this call.
 * @returns where the table starts in `memory.locatedBytes`, or -1 with the fault
 *   recorded in `faults` (at `where`)
 */
export function mapIndirectTable(
  memory: GuestMemory,
  claims: IndirectTableClaims,
  faults: FaultRecord,
  where: number,
  addrLow: number,
  addrHigh: number,
  len: number,
  entrySize: number,
  queueSize: number,
  id: number,
): number {
  if (len === 0 || len % entrySize !== 0 || len / entrySize > queueSize) {
    faults.set(Fault.IndirectBadLength, where, addrLow, addrHigh, len);
    return -1;
  }
  const offset = memory.locate(addrLow, addrHigh, len);
  if (offset < 0) {
    faults.set(Fault.OutsideMemory, where, addrLow, addrHigh, len);
    return -1;
  }
  if (len / entrySize > SHARED_TABLE_CHECK_MIN_ENTRIES) {
    const start = addrHigh * 0x1_0000_0000 + addrLow;
    if (!claims.claim(start, start + len, id)) {
      faults.set(Fault.SharedTable, where, addrLow, addrHigh, len);
      return -1;
    }
  }
  return offset;
}
