/**
 * Support for the load-and-fault suite (tests/load/): the daemon's resources as
 * /proc shows them (open fds, resident memory), a sampler of the peak while a load
 * runs, the figures each test prints (one `load figures:` line per test, so they can
 * be collected from the output), and a guest-side echo for connections the scripted
 * guest accepted.
 *
 * @module
 */

import type { GuestTcpConn, TestGuest } from "../support/net/tcp_guest.ts";
import type { DaemonGuest } from "../net/daemon_guest.ts";

/** Prefix of the line each load test prints its figures on. */
export const FIGURES_PREFIX = "load figures:";

/** Resident memory of process `pid` in KiB (VmRSS of /proc/PID/status), or -1 once it is gone. */
export function residentKiB(pid: number): number {
  return statusField(pid, "VmRSS");
}

/** Anonymous resident memory of process `pid` in KiB (RssAnon), or -1 once it is gone. */
export function anonymousKiB(pid: number): number {
  return statusField(pid, "RssAnon");
}

function statusField(pid: number, field: string): number {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    return -1;
  }
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
  return m === null ? -1 : Number(m[1]);
}

/** Shared-memory resident pages of process `pid` in KiB (RssShmem: guest memory it touched). */
export function sharedKiB(pid: number): number {
  return statusField(pid, "RssShmem");
}

/** Number of fds process `pid` holds open (-1 once it is gone). */
export function openFds(pid: number): number {
  try {
    return [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
  } catch {
    return -1;
  }
}

/** Samples a process's fds and resident memory every {@link SAMPLE_MS} and keeps the peaks. */
export class PeakSampler {
  /** Highest VmRSS seen, KiB. */
  peakRssKiB = 0;
  /** Highest RssAnon seen, KiB. */
  peakAnonKiB = 0;
  /** Highest fd count seen. */
  peakFds = 0;
  readonly #pid: number;
  readonly #timer: ReturnType<typeof setInterval>;

  constructor(pid: number) {
    this.#pid = pid;
    this.sample();
    this.#timer = setInterval(() => this.sample(), SAMPLE_MS);
  }

  /** Takes one sample now. */
  sample(): void {
    this.peakRssKiB = Math.max(this.peakRssKiB, residentKiB(this.#pid));
    this.peakAnonKiB = Math.max(this.peakAnonKiB, anonymousKiB(this.#pid));
    this.peakFds = Math.max(this.peakFds, openFds(this.#pid));
  }

  /** Stops sampling (after a last sample). */
  stop(): void {
    this.sample();
    clearInterval(this.#timer);
  }
}

/** Interval of {@link PeakSampler}'s samples. */
const SAMPLE_MS = 50;

/** The daemon's fds and resident memory before a load: what each test compares with. */
export interface IdleBaseline {
  /** Open fds. */
  readonly fds: number;
  /** VmRSS, KiB. */
  readonly rssKiB: number;
  /** RssAnon (its own memory, not the guest memory it maps), KiB. */
  readonly anonKiB: number;
}

/** Reads process `pid`'s {@link IdleBaseline} now. */
export function idleBaseline(pid: number): IdleBaseline {
  return { fds: openFds(pid), rssKiB: residentKiB(pid), anonKiB: anonymousKiB(pid) };
}

/**
 * The fd and memory figures every load test prints: idle (from `idle`), peak (from
 * `peaks`, when the test sampled them) and now (read from /proc).
 */
export function resourceFigures(
  pid: number,
  idle: IdleBaseline,
  peaks?: PeakSampler,
): Record<string, number | string> {
  return {
    fdsIdle: idle.fds,
    ...(peaks ? { fdsPeak: peaks.peakFds } : {}),
    fdsAfter: openFds(pid),
    rssIdleMiB: mib(idle.rssKiB),
    ...(peaks ? { rssPeakMiB: mib(peaks.peakRssKiB) } : {}),
    rssAfterMiB: mib(residentKiB(pid)),
    anonIdleMiB: mib(idle.anonKiB),
    ...(peaks ? { anonPeakMiB: mib(peaks.peakAnonKiB) } : {}),
    anonAfterMiB: mib(anonymousKiB(pid)),
  };
}

/** Time the daemon gets to close its sockets once the flows are gone. */
export const FDS_BACK_MS = 30_000;

/**
 * Waits until the daemon holds no more fds than `idleFds`; when it does not within
 * {@link FDS_BACK_MS}, prints what it still holds (its statistics, TCP sockets and fd
 * kinds) for the failing test's output.
 * @returns the time it took in ms, or -1 when the fds were not back in time
 */
export async function fdsReleased(d: DaemonGuest, idleFds: number): Promise<number> {
  const pid = d.process.pid;
  const releaseMs = await timeUntil(() => openFds(pid) <= idleFds, FDS_BACK_MS);
  if (releaseMs < 0) console.log(await statsDump(d, 100), await socketList(pid), fdKinds(pid));
  return releaseMs;
}

/** Prints one test's figures on one line: `load figures: NAME key=value …`. */
export function printFigures(name: string, figures: Record<string, number | string>): void {
  const parts = Object.entries(figures).map(([k, v]) =>
    `${k}=${typeof v === "number" && !Number.isInteger(v) ? v.toFixed(2) : v}`
  );
  console.log(`${FIGURES_PREFIX} ${name} ${parts.join(" ")}`);
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Waits until `cond()` holds, polling every `everyMs`, for at most `ms`.
 * @returns the time it took in ms, or -1 when it did not hold in time
 */
export async function timeUntil(cond: () => boolean, ms: number, everyMs = 50): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (cond()) return performance.now() - t0;
    if (performance.now() - t0 > ms) return -1;
    await sleep(everyMs);
  }
}

/**
 * Makes `g` an echo server on the connections it accepts: once a connection has the
 * peer's FIN, everything it received goes back and the guest closes its side.
 * @returns a function that stops the echo
 */
export function guestEcho(g: TestGuest): () => void {
  const done = new Set<GuestTcpConn>();
  const timer = setInterval(() => {
    for (const c of g.accepted) {
      if (done.has(c) || !c.eof) continue;
      done.add(c);
      g.write(c, c.takeReceived());
      g.close(c);
    }
  }, 10);
  return () => clearInterval(timer);
}

/** KiB as MiB with one decimal, for figures. */
export function mib(kib: number): string {
  return (kib / 1024).toFixed(1);
}

/**
 * Asks the daemon for its statistics (SIGUSR1) and returns the lines it logged for
 * them, without the JSON line: what a failing test shows about the flows left.
 */
export async function statsDump(d: DaemonGuest, maxLines = 40): Promise<string> {
  const from = d.stderr.length;
  try {
    d.process.kill("SIGUSR1");
  } catch {
    return "(daemon gone)";
  }
  await timeUntil(() => d.stderr.includes("stats-json:", from), 2_000);
  const lines = d.stderr.slice(from).split("\n").filter((l) =>
    l.includes("stats:") && !l.includes("stats-json:")
  );
  return lines.slice(0, maxLines).join("\n");
}

/** What process `pid`'s fds are, counted by kind ("socket", "anon_inode:[eventfd]", "/path"…). */
export function fdKinds(pid: number): string {
  const kinds = new Map<string, number>();
  try {
    for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
      let target: string;
      try {
        target = Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`).replace(/:\[\d+\]$/, "");
      } catch {
        continue;
      }
      kinds.set(target, (kinds.get(target) ?? 0) + 1);
    }
  } catch {
    return "(gone)";
  }
  return [...kinds].map(([k, n]) => `${k} ×${n}`).join(", ");
}

/** The daemon's TCP sockets as `ss` lists them (state, ends), for a failing test's output. */
export async function socketList(pid: number): Promise<string> {
  try {
    const out = await new Deno.Command("ss", { args: ["-tanpe"], stdout: "piped" }).output();
    const text = new TextDecoder().decode(out.stdout);
    return text.split("\n").filter((l) => l.includes(`pid=${pid},`)).join("\n");
  } catch (e) {
    return `(ss: ${e})`;
  }
}

/** What {@link HostHolder} does with each connection it accepts. */
export interface HolderOptions {
  /** Bytes sent at once on each connection (default 0). */
  readonly initialBytes?: number;
  /** Read (and drop) what arrives (default true); false leaves the guest's data unread. */
  readonly read?: boolean;
}

/**
 * A host server on 127.0.0.1 that holds the connections it accepts open: sends some
 * bytes, reads and drops what comes (or not), and can send more on all of them at
 * once ({@link poke}). Counts the connections still open (a reading holder sees the
 * daemon's close or reset; {@link poke} sees it too).
 */
export class HostHolder {
  readonly #listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  readonly #conns = new Set<Deno.Conn>();
  readonly #options: HolderOptions;
  /** Connections accepted. */
  accepted = 0;

  constructor(options: HolderOptions = {}) {
    this.#options = options;
    this.#accept();
  }

  /** The port it listens on. */
  get port(): number {
    return this.#listener.addr.port;
  }

  /** Connections not closed by the peer yet. */
  get open(): number {
    return this.#conns.size;
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return;
      }
      this.accepted++;
      this.#conns.add(conn);
      this.#serve(conn);
    }
  }

  async #serve(conn: Deno.Conn): Promise<void> {
    try {
      const n = this.#options.initialBytes ?? 0;
      if (n > 0) await writeFully(conn, new Uint8Array(n).fill(0x42));
      if (this.#options.read ?? true) {
        const buf = new Uint8Array(65536);
        while ((await conn.read(buf)) !== null) { /* drop */ }
        this.#drop(conn);
      }
    } catch {
      this.#drop(conn);
    }
  }

  #drop(conn: Deno.Conn): void {
    if (!this.#conns.delete(conn)) return;
    try {
      conn.close();
    } catch { /* closed */ }
  }

  /** Sends `bytes` more on every open connection (a failed write drops it). */
  poke(bytes: number): void {
    const data = new Uint8Array(bytes).fill(0x43);
    for (const conn of this.#conns) writeFully(conn, data).catch(() => this.#drop(conn));
  }

  /** Stops listening and closes every connection. */
  close(): void {
    try {
      this.#listener.close();
    } catch { /* closed */ }
    for (const conn of [...this.#conns]) this.#drop(conn);
  }
}

async function writeFully(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let o = 0;
  while (o < data.length) o += await conn.write(data.subarray(o));
}

/** Issue 16: once the flows are gone, RSS back within this fraction above its idle value. */
export const RSS_SLACK = 0.2;
/**
 * Time the daemon gets to give memory back once the flows are gone: closed flows
 * linger 2 s (LINGER_MS), the flow count is sampled every second (MEMORY_CHECK_MS),
 * then a collection runs (src/daemon/memory_release.ts).
 */
export const MEMORY_BACK_MS = 8_000;

/**
 * Waits until process `pid`'s anonymous resident memory (its own, not the guest
 * memory it maps) is within {@link RSS_SLACK} of `idleKiB`.
 * @returns the time it took in ms, or -1 when it was not back within {@link MEMORY_BACK_MS}
 */
export function memoryBack(pid: number, idleKiB: number): Promise<number> {
  return timeUntil(() => anonymousKiB(pid) <= idleKiB * (1 + RSS_SLACK), MEMORY_BACK_MS, 100);
}
