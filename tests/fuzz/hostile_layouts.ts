/**
 * Ring layouts a hostile driver writes into a running split virtqueue
 * (virtio 1.2 §2.7): descriptor loops, one chain through the whole table with a head
 * at every descriptor, many heads sharing one large indirect table, nested and
 * malformed indirect descriptors, buffers outside guest memory, an available index
 * running ahead, random garbage, buffers in extra memory regions. Each writer
 * publishes its heads and returns a description for the session log; the caller
 * kicks.
 *
 * @module
 */

import type { RegionDescription } from "../../src/vhost_user/guest_memory_map.ts";
import {
  DESC_SIZE,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../../src/virtio/ring_layout.ts";
import type { RawRing } from "./hostile_ring.ts";

/** Ring layouts a step can write ("valid-traffic" is the session's own). */
export const LAYOUTS = [
  "descriptor-loop",
  "chain-through-table",
  "shared-indirect-table",
  "bad-indirect",
  "outside-memory",
  "avail-index-ahead",
  "garbage",
  "frames-in-extra-region",
  "valid-traffic",
] as const;
/** One ring layout. */
export type Layout = typeof LAYOUTS[number];

/** What the layout writers need from the session. */
export interface LayoutContext {
  /** A number in [0, 1). */
  readonly random: () => number;
  /** The guest address of `length` bytes of buffer space in harness region 1. */
  allocate(length: number): number;
  /** A view to write guest memory at `address` through, or null while it is truncated. */
  writableView(address: number, length: number): Uint8Array | null;
  /** The harness's two regions (0: rings, 1: buffers). */
  readonly harnessRegions: readonly RegionDescription[];
  /** Regions added beyond them, with their file's current size. */
  readonly extraRegions: readonly { readonly description: RegionDescription; fileSize: number }[];
}

/** Guest-physical address that no region ever covers (between region 0 and region 1). */
export const UNMAPPED_GPA = 0x8000_0000;
/** The largest indirect table written: 65,536 descriptors (1 MiB). */
const MAX_INDIRECT_ENTRIES = 65536;
/** Bytes each descriptor of a long chain covers (small: the work is in the descriptors). */
const CHAIN_SEGMENT_SIZES = [1, 16, 64] as const;
/** Bytes of each buffer a descriptor loop or indirect table entry points at. */
const LOOP_BUFFER_SIZE = 64;
const INDIRECT_ENTRY_BUFFER_SIZE = 16;
/** Size of the buffers placed in extra regions: a full frame with its header fits. */
const EXTRA_BUFFER_SIZE = 2048;
/** Most heads published by the layouts that need only a few. */
const FEW_HEADS = 64;
/** Ring indices and descriptor next fields are u16 (virtio 1.2 §2.7.5, §2.7.6). */
const U16_VALUES = 0x10000;
/** Guest addresses are written as two u32 halves. */
const TWO_POW_32 = 2 ** 32;

function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)];
}

function below(random: () => number, n: number): number {
  return Math.floor(random() * n);
}

function hex(value: number): string {
  return "0x" + value.toString(16);
}

/** How many heads to publish into a ring of `n`: one, half, or (most often) all of it. */
function headCount(random: () => number, n: number): number {
  return Math.max(1, pick(random, [1, n >> 1, n, n]));
}

/** Writes descriptor `index` of a table in guest memory (a DataView over the table). */
function setTableEntry(
  table: DataView,
  index: number,
  address: number,
  length: number,
  flags: number,
  next: number,
): void {
  const at = index * DESC_SIZE;
  table.setUint32(at, address % TWO_POW_32, true);
  table.setUint32(at + 4, Math.floor(address / TWO_POW_32), true);
  table.setUint32(at + 8, length, true);
  table.setUint16(at + 12, flags, true);
  table.setUint16(at + 14, next, true);
}

/**
 * Writes `layout` into `ring` (an RX ring when `deviceWritable`: its buffers get
 * VIRTQ_DESC_F_WRITE) and publishes its heads. Returns what it wrote.
 */
export function writeLayout(
  layout: Exclude<Layout, "valid-traffic">,
  ring: RawRing,
  deviceWritable: boolean,
  context: LayoutContext,
): string {
  const random = context.random;
  const n = ring.size;
  const writable = deviceWritable ? VIRTQ_DESC_F_WRITE : 0;
  switch (layout) {
    case "descriptor-loop": {
      const length = Math.min(n, pick(random, [1, 2, 3, n]));
      const start = below(random, n);
      for (let k = 0; k < length; k++) {
        ring.setDescriptor(
          (start + k) % n,
          context.allocate(LOOP_BUFFER_SIZE),
          LOOP_BUFFER_SIZE,
          VIRTQ_DESC_F_NEXT | writable,
          (start + (k + 1) % length) % n,
        );
      }
      const heads = headCount(random, n);
      ring.publish(Array.from({ length: heads }, (_, k) => (start + k % length) % n));
      return `loop of ${length} descriptors, ${heads} heads into it`;
    }
    case "chain-through-table": {
      // every descriptor chains to the next, the last ends it (or loops back), and a
      // head is published at many descriptors: each chain is up to n long
      const segment = pick(random, CHAIN_SEGMENT_SIZES);
      const loops = random() < 0.3;
      const base = context.allocate(segment * 64);
      for (let i = 0; i < n; i++) {
        const last = i === n - 1 && !loops;
        ring.setDescriptor(
          i,
          base + (i % 64) * segment,
          segment,
          (last ? 0 : VIRTQ_DESC_F_NEXT) | writable,
          (i + 1) % n,
        );
      }
      const heads = headCount(random, n);
      const first = below(random, n);
      ring.publish(Array.from({ length: heads }, (_, k) => (first + k) % n));
      return `chain through all ${n} descriptors${
        loops ? " looping back" : ""
      } (${segment}-byte segments), ${heads} heads along it`;
    }
    case "shared-indirect-table": {
      const entries = Math.min(MAX_INDIRECT_ENTRIES, pick(random, [n, 2 * n, 4096, 65536]));
      const loops = random() < 0.2;
      const { address, written } = writeIndirectTable(context, entries, loops, writable);
      const heads = headCount(random, n);
      for (let i = 0; i < heads; i++) {
        ring.setDescriptor(i, address, entries * DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
      }
      ring.publish(Array.from({ length: heads }, (_, i) => i));
      return `${heads} heads sharing one ${entries}-entry indirect table${
        loops ? " that loops" : ""
      }${written ? "" : " (its memory is truncated: left unwritten)"}`;
    }
    case "bad-indirect": {
      const count = 1 + below(random, Math.min(n, FEW_HEADS));
      const kinds: string[] = [];
      for (let i = 0; i < count; i++) kinds.push(writeBadIndirect(context, ring, i, writable));
      ring.publish(Array.from({ length: count }, (_, i) => i));
      return `${count} bad indirect heads: ${[...new Set(kinds)].join(", ")}`;
    }
    case "outside-memory": {
      const count = 1 + below(random, Math.min(n, FEW_HEADS));
      for (let i = 0; i < count; i++) writeOutsideDescriptor(context, ring, i, writable);
      ring.publish(Array.from({ length: count }, (_, i) => i));
      return `${count} descriptors outside or across guest memory`;
    }
    case "avail-index-ahead": {
      const ahead = pick(random, [n + 1, n + 1 + below(random, 0x8000), 0xffff]);
      for (let i = 0; i < Math.min(n, FEW_HEADS); i++) {
        ring.setAvailableEntry(ring.availIndex + i, below(random, U16_VALUES));
      }
      ring.setAvailIndex(ring.availIndex + ahead);
      return `available index ${ahead} ahead`;
    }
    case "garbage": {
      for (let i = 0; i < n; i++) {
        ring.setRawDescriptor(
          i,
          below(random, TWO_POW_32),
          random() < 0.5 ? 0 : below(random, TWO_POW_32),
          random() < 0.5 ? below(random, 2048) : below(random, TWO_POW_32),
          below(random, 8),
          below(random, U16_VALUES),
        );
      }
      const heads = below(random, n + 1);
      ring.publish(Array.from({ length: heads }, () => below(random, U16_VALUES)));
      return `${n} random descriptors, ${heads} random heads`;
    }
    case "frames-in-extra-region": {
      if (context.extraRegions.length === 0) return "no extra region yet: nothing written";
      const extra = pick(random, context.extraRegions);
      const count = 1 + below(random, Math.min(n, 16));
      for (let i = 0; i < count; i++) {
        const offset = below(random, extra.description.size - EXTRA_BUFFER_SIZE);
        ring.setDescriptor(
          i,
          extra.description.guestAddress + offset,
          EXTRA_BUFFER_SIZE,
          writable,
          0,
        );
      }
      ring.publish(Array.from({ length: count }, (_, i) => i));
      return `${count} buffers in extra region ${hex(extra.description.guestAddress)} ` +
        `(file ${extra.fileSize} of ${extra.description.size} bytes)`;
    }
  }
}

/**
 * Writes an indirect table of `entries` chained descriptors (the last loops back to
 * the first when `loops`) into region 1, unless that memory is truncated now.
 */
function writeIndirectTable(
  context: LayoutContext,
  entries: number,
  loops: boolean,
  writable: number,
): { address: number; written: boolean } {
  const bytes = entries * DESC_SIZE;
  const address = context.allocate(bytes);
  const view = context.writableView(address, bytes);
  if (view === null) return { address, written: false };
  const table = new DataView(view.buffer, view.byteOffset, view.length);
  const buffer = context.allocate(INDIRECT_ENTRY_BUFFER_SIZE);
  for (let i = 0; i < entries; i++) {
    const last = i === entries - 1 && !loops;
    setTableEntry(
      table,
      i,
      buffer,
      INDIRECT_ENTRY_BUFFER_SIZE,
      (last ? 0 : VIRTQ_DESC_F_NEXT) | writable,
      (i + 1) % entries,
    );
  }
  return { address, written: true };
}

/** Writes one malformed indirect descriptor at `index`; returns what kind it is. */
function writeBadIndirect(
  context: LayoutContext,
  ring: RawRing,
  index: number,
  writable: number,
): string {
  const random = context.random;
  const kind = pick(random, [
    "nested",
    "length-not-multiple-of-16",
    "length-0",
    "indirect-with-next",
    "indirect-writable",
    "table-outside-memory",
    "huge-length",
  ]);
  const entries = 1 + below(random, 16);
  const bytes = entries * DESC_SIZE;
  const table = context.allocate(bytes);
  switch (kind) {
    case "nested": {
      // every entry of the table is itself an indirect descriptor pointing at the table
      const view = context.writableView(table, bytes);
      if (view !== null) {
        const data = new DataView(view.buffer, view.byteOffset, view.length);
        for (let i = 0; i < entries; i++) {
          setTableEntry(
            data,
            i,
            table,
            bytes,
            VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT,
            (i + 1) % entries,
          );
        }
      }
      ring.setDescriptor(index, table, bytes, VIRTQ_DESC_F_INDIRECT, 0);
      break;
    }
    case "length-not-multiple-of-16":
      ring.setDescriptor(index, table, bytes - DESC_SIZE / 2, VIRTQ_DESC_F_INDIRECT, 0);
      break;
    case "length-0":
      ring.setDescriptor(index, table, 0, VIRTQ_DESC_F_INDIRECT, 0);
      break;
    case "indirect-with-next":
      ring.setDescriptor(
        index,
        table,
        bytes,
        VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT,
        (index + 1) % ring.size,
      );
      break;
    case "indirect-writable":
      ring.setDescriptor(
        index,
        table,
        bytes,
        VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE | writable,
        0,
      );
      break;
    case "table-outside-memory":
      ring.setDescriptor(index, UNMAPPED_GPA, bytes, VIRTQ_DESC_F_INDIRECT, 0);
      break;
    case "huge-length":
      ring.setDescriptor(index, table, 0xffff_fff0, VIRTQ_DESC_F_INDIRECT, 0);
      break;
  }
  return kind;
}

/** Writes one descriptor at `index` whose buffer lies outside or across guest memory. */
function writeOutsideDescriptor(
  context: LayoutContext,
  ring: RawRing,
  index: number,
  writable: number,
): void {
  const random = context.random;
  const [region0, region1] = context.harnessRegions;
  switch (below(random, 6)) {
    case 0: // far above every region (2^48 and up)
      ring.setRawDescriptor(index, below(random, TWO_POW_32), 0x0001_0000, 64, writable, 0);
      break;
    case 1: // across the end of region 0
      ring.setDescriptor(index, region0.guestAddress + region0.size - 8, 64, writable, 0);
      break;
    case 2: // across the end of region 1
      ring.setDescriptor(index, region1.guestAddress + region1.size - 8, 64, writable, 0);
      break;
    case 3: // address + length wraps around 2^64
      ring.setRawDescriptor(index, 0xffff_fff0, 0xffff_ffff, 0x20, writable, 0);
      break;
    case 4: // in the hole between the regions
      ring.setDescriptor(index, UNMAPPED_GPA, 1514, writable, 0);
      break;
    default: // starts inside, length beyond everything
      ring.setDescriptor(index, region1.guestAddress, 0xffff_ffff, writable, 0);
      break;
  }
}
