/**
 * Rounds of a bench that runs several backends in turn: the order each round runs
 * them in, and the per-round ratios the benches print with their median and mean
 * (one round's numbers swing with the machine's load, the same round's pair less).
 *
 * @module
 */

/**
 * `items` in the order round `round` (from 1) runs them: each round starts with the
 * next one, so that no backend is always measured first (README, design note "Host
 * sockets' buffers": the first of a round measured several per cent differently from
 * the same code run second).
 */
export function roundOrder<T>(items: readonly T[], round: number): T[] {
  const start = (round - 1) % items.length;
  return [...items.slice(start), ...items.slice(0, start)];
}

/** The median of `values` (not empty). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** The arithmetic mean of `values` (NaN when empty). */
export function mean(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/**
 * The ratios `ours[i] / reference[i]` of each round whose reference is above 0, as
 * "1.04, 0.91; median 0.975, mean 0.975"; null when no round has one.
 */
export function ratioSummary(
  pairs: readonly (readonly [ours: number, reference: number])[],
): string | null {
  const ratios = pairs.filter(([, ref]) => ref > 0).map(([ours, ref]) => ours / ref);
  if (ratios.length === 0) return null;
  return `${ratios.map((x) => x.toFixed(2)).join(", ")}; median ${median(ratios).toFixed(3)}, ` +
    `mean ${mean(ratios).toFixed(3)}`;
}
