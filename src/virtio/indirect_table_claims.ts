/**
 * The guest address ranges of the large indirect tables the chains made available
 * since the last publish have walked, so that a ring engine can refuse a table that
 * another such chain also names (virtio 1.2 §2.7.13 and §2.8.21: a buffer goes into
 * free descriptors, and a table's entries are descriptors). Without this, every head
 * of a ring could name the same table of `size` entries and one pass over the ring
 * would walk `size`² descriptors.
 *
 * @module
 */

/** Sorted, disjoint guest address ranges [start, end), each with the id of the chain that claimed it. */
export class IndirectTableClaims {
  #starts = new Float64Array(64);
  #ends = new Float64Array(64);
  #owners = new Uint32Array(64);
  #count = 0;

  /** Number of ranges claimed since the last {@link clear}. */
  get count(): number {
    return this.#count;
  }

  /** Forgets every claim (the used index or used descriptors were published). */
  clear(): void {
    this.#count = 0;
  }

  /**
   * Records the table [start, end) for chain `id`; false when it overlaps a table
   * another chain claimed (the same chain claiming the same table again, after an
   * unpop, is not an overlap).
   */
  claim(start: number, end: number, id: number): boolean {
    const starts = this.#starts;
    const ends = this.#ends;
    const count = this.#count;
    // The ranges are disjoint and sorted, so their ends are sorted too: find the
    // first range that ends after `start`; only it can overlap [start, end).
    let low = 0;
    let high = count;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (ends[middle] <= start) low = middle + 1;
      else high = middle;
    }
    if (low < count && starts[low] < end) {
      return this.#owners[low] === id && starts[low] === start && ends[low] === end;
    }
    if (count === starts.length) this.#grow();
    const s = this.#starts, e = this.#ends, o = this.#owners;
    s.copyWithin(low + 1, low, count);
    e.copyWithin(low + 1, low, count);
    o.copyWithin(low + 1, low, count);
    s[low] = start;
    e[low] = end;
    o[low] = id;
    this.#count = count + 1;
    return true;
  }

  #grow(): void {
    const length = this.#starts.length * 2;
    const starts = new Float64Array(length);
    const ends = new Float64Array(length);
    const owners = new Uint32Array(length);
    starts.set(this.#starts);
    ends.set(this.#ends);
    owners.set(this.#owners);
    this.#starts = starts;
    this.#ends = ends;
    this.#owners = owners;
  }
}
