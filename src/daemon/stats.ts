/**
 * `--stats DELAY` (passt(1)): statistics on standard error, at most every DELAY
 * seconds and only when something happened since the last line. passt counts its
 * epoll events per type; tpasst shows what its stack counts: frames from the guest by
 * kind and dropped, frames toward the guest sent, refused for lack of room, dropped.
 *
 * @module
 */

/** What the statistics are read from (the daemon's NetworkStack satisfies it). */
export interface StatsSource {
  /** Guest frames handled, by kind. */
  readonly accepted: Readonly<Record<string, number>>;
  /** Guest frames dropped, by reason. */
  readonly drops: Readonly<Record<string, number>>;
  readonly sender: {
    readonly counters: { readonly sent: number; readonly noRoom: number; readonly dropped: number };
  };
}

function sum(counts: Readonly<Record<string, number>>): number {
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

/** One statistics line (cumulative counts since start). */
export function statsLine(source: StatsSource): string {
  const kinds = Object.entries(source.accepted)
    .filter(([, n]) => n > 0)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([kind, n]) => `${kind} ${n}`);
  const c = source.sender.counters;
  return `stats: from guest ${sum(source.accepted)} frame(s)` +
    (kinds.length > 0 ? ` (${kinds.join(", ")})` : "") +
    `, ${sum(source.drops)} dropped; to guest ${c.sent} frame(s), ` +
    `${c.noRoom} without room, ${c.dropped} dropped`;
}

/** Prints {@link statsLine} when the counts changed since the last line. */
export class StatsReporter {
  readonly #source: StatsSource;
  readonly #write: (line: string) => void;
  #last = "";

  constructor(source: StatsSource, write: (line: string) => void) {
    this.#source = source;
    this.#write = write;
  }

  /** Called every DELAY seconds: writes a line if anything happened since the last. */
  tick(): void {
    const line = statsLine(this.#source);
    const counts = line.replace(/^stats: /, "");
    if (counts === this.#last) return;
    const first = this.#last === "";
    this.#last = counts;
    // Nothing counted yet is not an event either.
    if (
      first && sum(this.#source.accepted) + sum(this.#source.drops) === 0 &&
      this.#source.sender.counters.sent === 0
    ) return;
    this.#write(line);
  }
}
