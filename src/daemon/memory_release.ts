/**
 * Gives memory back once a burst of flows has ended. V8 keeps the heap it grew under
 * load (its young generation at full size, old-space pages) and glibc keeps the C
 * heap's freed pages; neither hands them back while the daemon idles, so RSS stayed
 * near its peak after thousands of connections had closed although V8's live heap
 * after a full collection was back near its idle size (issue 16). When the number of
 * flows has fallen by {@link RELEASE_MIN_FREED} from its highest sample since the last
 * release, a memory-reducing full collection runs (V8's `gc()` with the "last-resort"
 * flavour, there when bin/tpasst passes `--expose-gc`), then malloc_trim.
 *
 * @module
 */

import { trimNativeHeap } from "../../ffi/process.ts";

/** Interval of the flow count samples. */
export const MEMORY_CHECK_MS = 1_000;
/** Flows that must have gone since the highest sample for a release. */
export const RELEASE_MIN_FREED = 256;

/** What is sampled: the daemon's NetworkStack. */
export interface FlowCountSource {
  /** TCP and UDP flows held now. */
  flowCount(): number;
}

/** V8's collector as `--expose-gc` exposes it (options of V8's gc extension). */
type ExposedGc = (options: { type: "major"; execution: "sync"; flavor: "last-resort" }) => void;

/**
 * Runs a memory-reducing full collection when the runtime exposes one, then gives
 * the C heap's free pages back.
 */
export function releaseMemory(): void {
  const gc = (globalThis as { gc?: ExposedGc }).gc;
  gc?.({ type: "major", execution: "sync", flavor: "last-resort" });
  trimNativeHeap();
}

/** Decides, at each sample ({@link tick}), whether memory is given back. */
export class MemoryRelease {
  readonly #source: FlowCountSource;
  readonly #release: () => void;
  /** Highest flow count sampled since the last release. */
  #peak = 0;
  /** Releases done. */
  releases = 0;

  /**
   * @param source the flow count
   * @param release what a release does (default {@link releaseMemory})
   */
  constructor(source: FlowCountSource, release: () => void = releaseMemory) {
    this.#source = source;
    this.#release = release;
  }

  /**
   * Samples the flow count; releases memory when it is {@link RELEASE_MIN_FREED}
   * below the highest sample since the last release.
   * @returns whether memory was released
   */
  tick(): boolean {
    const flows = this.#source.flowCount();
    if (flows > this.#peak) this.#peak = flows;
    if (this.#peak - flows < RELEASE_MIN_FREED) return false;
    this.#peak = flows;
    this.releases++;
    this.#release();
    return true;
  }
}
