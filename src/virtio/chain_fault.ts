/**
 * Why a ring engine (split: virtqueue.ts, packed: packed_virtqueue.ts) rejected a
 * descriptor chain, the details of the last rejection, and the text of its log line.
 * The details are kept as numbers and formatted only when a line is due.
 *
 * @module
 */

import { hexAddress } from "./ring_bytes.ts";

/** Why a chain was rejected; one code per check (each engine uses the ones its ring can show). */
export const Fault = {
  None: 0,
  /** Split: more descriptors than the table holds (a loop). */
  ChainTooLong: 1,
  /** Split: NEXT names an index outside the table. */
  NextOutOfRange: 2,
  ZeroLength: 3,
  OutsideMemory: 4,
  ReadableAfterWritable: 5,
  IndirectNotNegotiated: 6,
  IndirectNested: 7,
  IndirectWithNext: 8,
  /** Split: an indirect descriptor that is not the chain's head. */
  IndirectNotFirst: 9,
  /** Packed: an indirect descriptor inside a list linked by NEXT. */
  IndirectInList: 10,
  IndirectBadLength: 11,
  TooManyViews: 12,
  /** Split: a descriptor another chain made available since the last publish also holds. */
  SharedDescriptor: 13,
  SharedTable: 14,
  /** Packed: the ring is inconsistent, the queue was marked broken. */
  Broken: 15,
} as const;
/** One of the {@link Fault} codes. */
export type Fault = typeof Fault[keyof typeof Fault];

/** The words a ring engine's log lines use for its parts. */
export interface FaultTerms {
  /** A buffer element: "descriptor" (split), "element" (packed). */
  readonly element: string;
  /** A place in the ring: "descriptor" (split), "slot" (packed). */
  readonly slot: string;
  /** What the driver made available: "chain" (split), "buffer" (packed). */
  readonly unit: string;
  /** What the views are called in the too-many-views line: "buffer views" or "views". */
  readonly views: string;
}

/** The last fault of a ring engine: its code and the numbers its log line shows. */
export class FaultRecord {
  /** The code of the last fault. */
  fault: Fault = Fault.None;
  /** Index of the descriptor, slot or table entry at fault. */
  where = 0;
  /** Low half of the address at fault (NextOutOfRange: the index linked to). */
  low = 0;
  /** High half of the address at fault. */
  high = 0;
  /** Length at fault (or the limit that was crossed). */
  length = 0;

  /** Records a fault and returns its code. */
  set(fault: Fault, where: number, low: number, high: number, length: number): Fault {
    this.fault = fault;
    this.where = where;
    this.low = low;
    this.high = high;
    this.length = length;
    return fault;
  }

  /**
   * Says what the last fault was, in the engine's `terms`; `tableBytes` is the
   * largest indirect table the queue accepts.
   */
  describe(terms: FaultTerms, tableBytes: number): string {
    const i = this.where;
    const range = `${hexAddress(this.low, this.high)}+${this.length}`;
    switch (this.fault) {
      case Fault.ChainTooLong:
        return `chain is longer than ${this.length} descriptors (loop?)`;
      case Fault.NextOutOfRange:
        return `descriptor ${i} links to ${this.low}, outside a table of ${this.length}`;
      case Fault.ZeroLength:
        return `${terms.element} ${i} has length 0`;
      case Fault.OutsideMemory:
        return `${terms.element} ${i}: address ${range} is outside guest memory`;
      case Fault.ReadableAfterWritable:
        return `${terms.element} ${i} is device-readable after a device-writable one`;
      case Fault.IndirectNotNegotiated:
        return `${terms.slot} ${i} is indirect but VIRTIO_F_INDIRECT_DESC was not negotiated`;
      case Fault.IndirectNested:
        return `indirect table entry ${i} is itself indirect`;
      case Fault.IndirectWithNext:
        return `${terms.slot} ${i} has both INDIRECT and NEXT`;
      case Fault.IndirectNotFirst:
        return `descriptor ${i} is indirect but not the head of the chain`;
      case Fault.IndirectInList:
        return `slot ${i} is indirect inside a list linked by NEXT`;
      case Fault.TooManyViews:
        return `${terms.element} ${i}: address ${
          hexAddress(this.low, this.high)
        } would make the ${terms.unit} more than ${this.length} ${terms.views}`;
      case Fault.IndirectBadLength:
        return `indirect table ${range} has a length that is 0, not a multiple of 16 or over ${tableBytes}`;
      case Fault.SharedDescriptor:
        return `descriptor ${i} is also in another chain made available and not yet returned`;
      case Fault.SharedTable:
        return `indirect table ${range} overlaps another ${terms.unit}'s table, made available and not yet returned`;
      default:
        return "unknown fault";
    }
  }
}

/**
 * Why a run of malformed chains (no used chain between them) marks the queue broken,
 * or null while it may go on: `run` chains in a row reached `runLimit`, or they cost
 * `walkedSinceUse` descriptors, at least `descriptorLimit`.
 */
export function malformedRunVerdict(
  run: number,
  runLimit: number,
  walkedSinceUse: number,
  descriptorLimit: number,
): string | null {
  if (run >= runLimit) return `${runLimit} malformed chains in a row`;
  if (walkedSinceUse >= descriptorLimit) {
    return `malformed chains worth ${walkedSinceUse} descriptors in a row (limit ${descriptorLimit})`;
  }
  return null;
}
