/**
 * `--stats DELAY` (passt(1)): statistics on standard error, at most every DELAY
 * seconds and only when something happened since the last line. passt counts its
 * epoll events per type; tpasst shows what its stack counts: frames from the guest by
 * kind and dropped, frames toward the guest sent, refused for lack of room, dropped.
 *
 * SIGUSR1 (and each `--stats` line) also gives a full dump: the flow table (protocol,
 * ends, state, bytes each way, age) and the counters (frames, bytes, drops by reason,
 * the link's ring state, memory), as text lines for the log and as one
 * machine-readable line `stats-json: {...}` ({@link STATS_JSON_PREFIX}).
 *
 * @module
 */

import type { FlowInfo } from "../net/flows/flow_info.ts";

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

/** Prefix of the machine-readable dump line: grep for it, JSON.parse the rest. */
export const STATS_JSON_PREFIX = "stats-json: ";

/** What a full dump is read from (the daemon's NetworkStack satisfies it). */
export interface StatsDumpSource extends StatsSource {
  /** Bytes of every frame from the guest. */
  readonly bytesFromGuest: number;
  readonly sender: StatsSource["sender"] & {
    /** Bytes of the frames sent to the guest. */
    readonly bytesSent: number;
    /** The current link, if a frontend is connected. */
    readonly link: {
      readonly kind: string;
      describeState?(): Record<string, number | string | boolean>;
    } | null;
  };
  /** Every flow, built on demand. */
  describeFlows(now: number): FlowInfo[];
  /** Each translator's counters by protocol name. */
  protocolCounters(): Record<string, object>;
}

/** Process memory, in bytes (Deno.memoryUsage()). */
export interface MemoryStats {
  readonly rss: number;
  readonly heapTotal: number;
  readonly heapUsed: number;
  readonly external: number;
}

/** One full statistics dump, as plain data (what the JSON line holds). */
export interface StatsSnapshot {
  /** Milliseconds since the daemon started serving. */
  readonly uptimeMs: number;
  readonly fromGuest: {
    readonly frames: number;
    readonly bytes: number;
    readonly byKind: Readonly<Record<string, number>>;
    readonly dropped: number;
    readonly dropsByReason: Readonly<Record<string, number>>;
  };
  readonly toGuest: {
    readonly frames: number;
    readonly bytes: number;
    readonly noRoom: number;
    readonly dropped: number;
    readonly noLink: number;
  };
  /** The frontend link (kind, ring state, counters), null when none is connected. */
  readonly link: Readonly<Record<string, number | string | boolean>> | null;
  /** Each translator's counters, by protocol. */
  readonly protocols: Readonly<Record<string, object>>;
  readonly memory: MemoryStats;
  readonly flows: readonly FlowInfo[];
}

/**
 * Gathers a {@link StatsSnapshot} (copies: later counting does not change it).
 * @param now the stack's clock now (monotonicNow), for flow ages and the uptime
 * @param startedAt when the daemon started, on the same clock
 */
export function collectStats(
  source: StatsDumpSource,
  now: number,
  startedAt: number,
  memory: MemoryStats = Deno.memoryUsage(),
): StatsSnapshot {
  const c = source.sender.counters as {
    sent: number;
    noRoom: number;
    dropped: number;
    noLink?: number;
  };
  const link = source.sender.link;
  const protocols: Record<string, object> = {};
  for (const [name, counters] of Object.entries(source.protocolCounters())) {
    protocols[name] = { ...counters };
  }
  return {
    uptimeMs: Math.max(0, Math.round(now - startedAt)),
    fromGuest: {
      frames: sum(source.accepted) + sum(source.drops),
      bytes: source.bytesFromGuest,
      byKind: { ...source.accepted },
      dropped: sum(source.drops),
      dropsByReason: { ...source.drops },
    },
    toGuest: {
      frames: c.sent,
      bytes: source.sender.bytesSent,
      noRoom: c.noRoom,
      dropped: c.dropped,
      noLink: c.noLink ?? 0,
    },
    link: link === null ? null : { kind: link.kind, ...(link.describeState?.() ?? {}) },
    protocols,
    memory: {
      rss: memory.rss,
      heapTotal: memory.heapTotal,
      heapUsed: memory.heapUsed,
      external: memory.external,
    },
    flows: source.describeFlows(now).map((f) => ({
      ...f,
      ageMs: Math.round(f.ageMs),
      idleMs: Math.round(f.idleMs),
    })),
  };
}

/** A byte count for people: "512 B", "1.5 KiB", "12.0 MiB". */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** A duration for people: "350 ms", "12.3 s", "4 min 05 s", "2 h 03 min". */
export function formatAge(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const whole = Math.floor(seconds);
  if (whole < 3600) {
    return `${Math.floor(whole / 60)} min ${String(whole % 60).padStart(2, "0")} s`;
  }
  return `${Math.floor(whole / 3600)} h ${
    String(Math.floor(whole / 60) % 60).padStart(2, "0")
  } min`;
}

function formatCounts(counts: Readonly<Record<string, unknown>>): string {
  const parts = Object.entries(counts)
    .filter(([, n]) => n !== 0 && n !== false)
    .map(([name, n]) => `${name} ${n}`);
  return parts.length === 0 ? "none" : parts.join(", ");
}

/** The dump as log lines (info level): a summary, then one line per flow. */
export function formatStatsText(s: StatsSnapshot): string[] {
  const g = s.fromGuest;
  const t = s.toGuest;
  const m = s.memory;
  const lines = [
    `stats: up ${formatAge(s.uptimeMs)}; from guest ${g.frames} frame(s), ${formatBytes(g.bytes)}` +
    ` (${formatCounts(g.byKind)}), ${g.dropped} dropped (${formatCounts(g.dropsByReason)})`,
    `stats: to guest ${t.frames} frame(s), ${formatBytes(t.bytes)}, ${t.noRoom} without room, ` +
    `${t.dropped} dropped, ${t.noLink} without link`,
    s.link === null ? "stats: link: none connected" : `stats: link: ${formatCounts(s.link)}`,
  ];
  for (const [name, counters] of Object.entries(s.protocols)) {
    lines.push(`stats: ${name}: ${formatCounts(counters as Record<string, unknown>)}`);
  }
  lines.push(
    `stats: memory: RSS ${formatBytes(m.rss)}, heap ${formatBytes(m.heapUsed)} used of ` +
      `${formatBytes(m.heapTotal)}, external ${formatBytes(m.external)}`,
    `stats: ${s.flows.length} flow(s)`,
  );
  for (const f of s.flows) {
    lines.push(
      `stats: ${f.protocol} ${f.guest} -> ${f.remote} (host ${f.host}) ${f.state}; ` +
        `guest->host ${f.bytesFromGuest} B, host->guest ${f.bytesToGuest} B; ` +
        `age ${formatAge(f.ageMs)}, idle ${formatAge(f.idleMs)}`,
    );
  }
  return lines;
}

/** The dump as one line: {@link STATS_JSON_PREFIX} and the snapshot as JSON. */
export function formatStatsJson(s: StatsSnapshot): string {
  return STATS_JSON_PREFIX + JSON.stringify(s);
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
  readonly #extra: (() => string) | null;
  #last = "";

  /**
   * @param write where lines go
   * @param extra a further line written after each counters line (the daemon's
   *   {@link formatStatsJson} dump)
   */
  constructor(source: StatsSource, write: (line: string) => void, extra?: () => string) {
    this.#source = source;
    this.#write = write;
    this.#extra = extra ?? null;
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
    if (this.#extra !== null) this.#write(this.#extra());
  }
}
