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
 * Most of an idle daemon's resident set is not its heap but the runtime's executable
 * file: the pages of code and read-only data that start-up touched (module loading,
 * relocations, the compiler) stay mapped although an idle or busy daemon never reads
 * most of them again. A release also drops this process's mappings of every clean,
 * never-written private file page ({@link dropCleanFilePages}): they stay in the page
 * cache, and the few the daemon uses again come back as minor faults. The daemon runs
 * a release once start-up is over ({@link STARTUP_RELEASE_MS}).
 *
 * @module
 */

import { dropCleanPages, trimNativeHeap } from "../../ffi/process.ts";
import { readKernelFile } from "../../ffi/kernel_file.ts";

/** Interval of the flow count samples. */
export const MEMORY_CHECK_MS = 1_000;
/** Flows that must have gone since the highest sample for a release. */
export const RELEASE_MIN_FREED = 256;

/** Delay from the daemon's start to its first release (start-up's pages and garbage). */
export const STARTUP_RELEASE_MS = 2_000;

/** Most bytes of /proc/self/smaps read (an idle daemon's has ~180 mappings, 135 KB). */
export const SMAPS_LIMIT = 2 << 20;

/** A range of the address space, as /proc/self/smaps lists it. */
export interface MappedRange {
  readonly start: bigint;
  readonly length: bigint;
}

/**
 * The mappings of `smaps` (the text of /proc/PID/smaps, proc(5)) whose resident pages
 * can be dropped without losing anything: private mappings of a file, not writable,
 * with resident pages, none of them anonymous (copied on write) or dirty, not locked.
 * Their pages are the file's, as the page cache holds them. A mapping whose record
 * does not end with its VmFlags line (text cut short) is left out.
 */
export function cleanFileMappings(smaps: string): MappedRange[] {
  const out: MappedRange[] = [];
  let current: {
    start: bigint;
    length: bigint;
    eligible: boolean;
    resident: boolean;
    complete: boolean;
  } | null = null;
  const finish = () => {
    if (current !== null && current.eligible && current.resident && current.complete) {
      out.push({ start: current.start, length: current.length });
    }
  };
  for (const line of smaps.split("\n")) {
    const header = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (header !== null) {
      finish();
      const start = BigInt(`0x${header[1]}`);
      const perms = header[3];
      current = {
        start,
        length: BigInt(`0x${header[2]}`) - start,
        // "r-xp", "r--p": readable, not writable, private; a path, not [heap] or [vdso]
        eligible: perms[0] === "r" && perms[1] === "-" && perms[3] === "p" &&
          header[4].startsWith("/"),
        resident: false,
        complete: false,
      };
      continue;
    }
    if (current === null) continue;
    const field = /^(\w+):\s+(\d+) kB$/.exec(line);
    if (field !== null) {
      const kib = Number(field[2]);
      switch (field[1]) {
        case "Rss":
          current.resident = kib > 0;
          break;
        case "Anonymous":
        case "Private_Dirty":
        case "Shared_Dirty":
        case "Locked":
          if (kib > 0) current.eligible = false;
          break;
      }
    } else if (line.startsWith("VmFlags:")) {
      current.complete = true; // the record's last line (proc(5))
      if (/ lo( |$)/.test(line)) current.eligible = false;
    }
  }
  finish();
  return out;
}

/**
 * Drops this process's mappings of its clean file pages ({@link cleanFileMappings} of
 * /proc/self/smaps): the resident set shrinks by the runtime's code and data pages
 * not in use; those used again come back from the page cache.
 * @returns the bytes of the ranges given back (resident or not)
 */
export function dropCleanFilePages(): bigint {
  const smaps = readKernelFile("/proc/self/smaps", SMAPS_LIMIT);
  if (smaps === null) return 0n;
  let dropped = 0n;
  for (const range of cleanFileMappings(smaps)) {
    dropCleanPages(range.start, range.length);
    dropped += range.length;
  }
  return dropped;
}

/** What is sampled: the daemon's NetworkStack. */
export interface FlowCountSource {
  /** TCP and UDP flows held now. */
  flowCount(): number;
}

/** V8's collector as `--expose-gc` exposes it (options of V8's gc extension). */
type ExposedGc = (options: { type: "major"; execution: "sync"; flavor: "last-resort" }) => void;

/**
 * Drops the mappings of clean file pages ({@link dropCleanFilePages}), then runs a
 * memory-reducing full collection when the runtime exposes one and gives the C heap's
 * free pages back. In that order, the buffer and strings that reading
 * /proc/self/smaps took (up to {@link SMAPS_LIMIT}, zeroed by the allocator) are
 * collected and trimmed too instead of staying resident until the next release.
 */
export function releaseMemory(): void {
  dropCleanFilePages();
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
