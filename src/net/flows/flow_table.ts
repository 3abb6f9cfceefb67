/**
 * The flow table shared by the TCP and UDP translators: one entry per flow, found
 * in O(1) by the guest-side 5-tuple (family, guest address and port, remote address
 * and port as the guest sees it) without allocating per lookup, with a configurable
 * maximum beyond which new flows are refused (and counted).
 *
 * Keys are plain numbers: the two ports plus 21 bits of the remote address; flows
 * sharing a key are chained through {@link FlowKey.chainNext} and compared in full.
 * The host-socket side needs no index: each flow's socket callbacks hold the flow.
 *
 * @module
 */

/** Default maximum number of flows per table. */
export const DEFAULT_MAX_FLOWS = 16384;

/** The guest-side identity of a flow; translators extend it with their state. */
export interface FlowKey {
  family: 4 | 6;
  /** Guest's IPv4 address (0 for IPv6). */
  guest4: number;
  /** Remote IPv4 address as the guest sees it (0 for IPv6). */
  remote4: number;
  /** Guest's IPv6 address (16 bytes, owned by the flow), null for IPv4. */
  guest6: Uint8Array | null;
  /** Remote IPv6 address as the guest sees it, null for IPv4. */
  remote6: Uint8Array | null;
  guestPort: number;
  remotePort: number;
  /** Numeric table key (set by {@link FlowTable.insert}). */
  tableKey: number;
  /** Next flow with the same key, or null. */
  chainNext: FlowKey | null;
  /** Whether the flow is in a table. */
  inTable: boolean;
}

/**
 * The identity fields of {@link FlowKey} at their empty values, for flow classes to
 * extend (TCP and UDP flows); {@link initFlowKey} fills them.
 */
export class FlowKeyFields implements FlowKey {
  family: 4 | 6 = 4;
  guest4 = 0;
  remote4 = 0;
  guest6: Uint8Array | null = null;
  remote6: Uint8Array | null = null;
  guestPort = 0;
  remotePort = 0;
  tableKey = 0;
  chainNext: FlowKey | null = null;
  inTable = false;
}

/** Fills the identity fields of a new flow object (copies the IPv6 addresses). */
export function initFlowKey(
  flow: FlowKey,
  family: 4 | 6,
  guest4: number,
  guest6: Uint8Array | null,
  guestPort: number,
  remote4: number,
  remote6: Uint8Array | null,
  remotePort: number,
): void {
  flow.family = family;
  flow.guest4 = family === 4 ? guest4 >>> 0 : 0;
  flow.remote4 = family === 4 ? remote4 >>> 0 : 0;
  flow.guest6 = family === 6 && guest6 ? guest6.slice(0, 16) : null;
  flow.remote6 = family === 6 && remote6 ? remote6.slice(0, 16) : null;
  flow.guestPort = guestPort;
  flow.remotePort = remotePort;
  flow.tableKey = 0;
  flow.chainNext = null;
  flow.inTable = false;
}

/** Creates a bare {@link FlowKey} (for tests and simple users). */
export function newFlowKey(): FlowKey {
  return {
    family: 4,
    guest4: 0,
    remote4: 0,
    guest6: null,
    remote6: null,
    guestPort: 0,
    remotePort: 0,
    tableKey: 0,
    chainNext: null,
    inTable: false,
  };
}

/** 2^32, to place the address bits above the two ports without overflow. */
const TWO_32 = 4294967296;
/** Address bits mixed into the key (2^21 × 2^32 stays below 2^53). */
const ADDR_BITS_MASK = 0x1fffff;

function keyOf(family: 4 | 6, guestPort: number, remotePort: number, addrLow: number): number {
  const addrBits = ((addrLow ^ (family === 6 ? 0x100000 : 0)) & ADDR_BITS_MASK) >>> 0;
  return addrBits * TWO_32 + (guestPort * 65536 + remotePort);
}

function v6Low(a: Uint8Array): number {
  return ((a[12] << 24) | (a[13] << 16) | (a[14] << 8) | a[15]) ^ a[3] ^ (a[7] << 8);
}

function eq6(a: Uint8Array | null, b: Uint8Array): boolean {
  if (!a) return false;
  for (let i = 15; i >= 0; i--) if (a[i] !== b[i]) return false;
  return true;
}

/** A table of flows with a maximum size. */
export class FlowTable<F extends FlowKey> {
  readonly #map = new Map<number, F>();
  #count = 0;
  /** Largest number of flows held at once. */
  readonly max: number;
  /** Flows refused because the table was full. */
  refused = 0;

  /** @param max the maximum number of flows (at least 1) */
  constructor(max: number = DEFAULT_MAX_FLOWS) {
    if (!Number.isInteger(max) || max < 1) {
      throw new RangeError(`Cannot create a flow table: maximum ${max} is not a positive integer`);
    }
    this.max = max;
  }

  /** Number of flows in the table. */
  get size(): number {
    return this.#count;
  }

  /** Whether another flow can be inserted; counts a refusal when not. */
  admit(): boolean {
    if (this.#count < this.max) return true;
    this.refused++;
    return false;
  }

  /** Finds the IPv4 flow with this guest-side 5-tuple (no allocation). */
  find4(guest4: number, guestPort: number, remote4: number, remotePort: number): F | null {
    let f = this.#map.get(keyOf(4, guestPort, remotePort, remote4)) ?? null;
    guest4 >>>= 0;
    remote4 >>>= 0;
    while (f) {
      if (
        f.family === 4 && f.guestPort === guestPort && f.remotePort === remotePort &&
        f.remote4 === remote4 && f.guest4 === guest4
      ) return f;
      f = f.chainNext as F | null;
    }
    return null;
  }

  /** Finds the IPv6 flow with this guest-side 5-tuple (no allocation). */
  find6(guest6: Uint8Array, guestPort: number, remote6: Uint8Array, remotePort: number): F | null {
    let f = this.#map.get(keyOf(6, guestPort, remotePort, v6Low(remote6))) ?? null;
    while (f) {
      if (
        f.family === 6 && f.guestPort === guestPort && f.remotePort === remotePort &&
        eq6(f.remote6, remote6) && eq6(f.guest6, guest6)
      ) return f;
      f = f.chainNext as F | null;
    }
    return null;
  }

  /**
   * Inserts `flow` (its identity already filled).
   * @returns false when the table is full (counted in {@link refused})
   */
  insert(flow: F): boolean {
    if (flow.inTable) return true;
    if (this.#count >= this.max) {
      this.refused++;
      return false;
    }
    const key = keyOf(
      flow.family,
      flow.guestPort,
      flow.remotePort,
      flow.family === 4 ? flow.remote4 : v6Low(flow.remote6!),
    );
    flow.tableKey = key;
    flow.chainNext = this.#map.get(key) ?? null;
    flow.inTable = true;
    this.#map.set(key, flow);
    this.#count++;
    return true;
  }

  /** Removes `flow` if it is in the table. */
  remove(flow: F): void {
    if (!flow.inTable) return;
    const head = this.#map.get(flow.tableKey);
    if (head === flow) {
      if (flow.chainNext) this.#map.set(flow.tableKey, flow.chainNext as F);
      else this.#map.delete(flow.tableKey);
    } else {
      let p = head ?? null;
      while (p && p.chainNext !== flow) p = p.chainNext as F | null;
      if (p) p.chainNext = flow.chainNext;
    }
    flow.chainNext = null;
    flow.inTable = false;
    this.#count--;
  }

  /** Calls `fn` for every flow (removal of the current flow during the walk is allowed). */
  forEach(fn: (flow: F) => void): void {
    const all: F[] = [];
    for (const head of this.#map.values()) {
      let f: F | null = head;
      while (f) {
        all.push(f);
        f = f.chainNext as F | null;
      }
    }
    for (const f of all) fn(f);
  }
}
