/**
 * One measured case of the ring engine benchmarks (bench/ring_engine_bench.ts and
 * bench/ring_engine/harness_bench.ts) and its report line.
 *
 * @module
 */

/** One measured case. */
export interface BenchResult {
  readonly direction: "TX" | "RX";
  readonly frameBytes: number;
  readonly framesPerSecond: number;
  readonly gbps: number;
}

/** The result of `frames` frames of `frameBytes` bytes moved in `seconds`. */
export function benchResult(
  direction: "TX" | "RX",
  frameBytes: number,
  frames: number,
  seconds: number,
): BenchResult {
  const framesPerSecond = frames / seconds;
  return { direction, frameBytes, framesPerSecond, gbps: (framesPerSecond * frameBytes * 8) / 1e9 };
}

/** Formats one result as a line of the report. */
export function formatResult(path: string, r: BenchResult): string {
  return `${path} ${r.direction} ${String(r.frameBytes).padStart(5)} B: ${
    (r.framesPerSecond / 1e6).toFixed(3).padStart(7)
  } Mframes/s ${r.gbps.toFixed(2).padStart(8)} Gbit/s`;
}
