/**
 * The datagrams of the UDP load tests: each carries its index and a payload seeded
 * by it, so that a receiver can tell an intact one from a corrupt one and count the
 * distinct ones that arrived. Shared by the test and its echo peer child process.
 *
 * @module
 */

import { patternBytes } from "../net/host_peers.ts";

/** Bytes of the index (u32 big-endian) at the start of each datagram. */
const INDEX_BYTES = 4;
/** Payload sizes vary from this… */
const MIN_BODY = 32;
/** …by steps of this, modulo {@link BODY_SPREAD}. */
const BODY_STEP = 37;
const BODY_SPREAD = 1400;

/** Datagram `i` of stream `seed`: its index, then seeded bytes of a size that varies with `i`. */
export function datagram(i: number, seed: number): Uint8Array {
  const body = patternBytes(MIN_BODY + (i * BODY_STEP) % BODY_SPREAD, seed * 1_000_003 + i);
  const d = new Uint8Array(INDEX_BYTES + body.length);
  new DataView(d.buffer).setUint32(0, i);
  d.set(body, INDEX_BYTES);
  return d;
}

/** Counts the distinct intact datagrams of one stream; anything else is corrupt. */
export class Tally {
  readonly #seen: Uint8Array;
  readonly #seed: number;
  delivered = 0;
  duplicates = 0;
  corrupt = 0;

  /** A tally for datagrams 0..`count`-1 of stream `seed`. */
  constructor(count: number, seed: number) {
    this.#seen = new Uint8Array(count);
    this.#seed = seed;
  }

  /** Counts one received datagram. */
  add(data: Uint8Array): void {
    if (data.length < INDEX_BYTES) {
      this.corrupt++;
      return;
    }
    const i = new DataView(data.buffer, data.byteOffset).getUint32(0);
    const want = i < this.#seen.length ? datagram(i, this.#seed) : null;
    if (want === null || want.length !== data.length || !want.every((b, k) => data[k] === b)) {
      this.corrupt++;
      return;
    }
    if (this.#seen[i]) this.duplicates++;
    else {
      this.#seen[i] = 1;
      this.delivered++;
    }
  }
}
