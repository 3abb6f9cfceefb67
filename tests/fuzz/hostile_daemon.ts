/**
 * The real daemon (`bin/tpasst --vhost-user -f -s SOCKET`) as a child process of a
 * fuzz test, with what the test observes of it through /proc: whether it lives,
 * its fd count, the memfds it maps, its CPU time, and its log (standard error, the
 * last part kept in memory, counting the sessions it has let go).
 *
 * Only the child this class started is ever signalled, by its pid.
 *
 * @module
 */

import { exists, TPASST } from "../cli/cli_helpers.ts";

/** The lines the daemon logs when it starts and ends serving a frontend (src/daemon/frontend_server.ts). */
const SESSION_STARTED_LINE = "Frontend connected";
const SESSION_GONE_LINE = "Frontend gone; waiting for the next connection";
/** Log kept in memory: the last this many characters. */
const LOG_KEEP_CHARS = 1 << 20;
/** How long the daemon may take to create its socket after start. */
const START_LIMIT_MS = 15_000;
/** How long the daemon may take to exit after SIGTERM before it gets SIGKILL. */
const EXIT_LIMIT_MS = 5_000;
/** Clock ticks per second of utime/stime in /proc/PID/stat (USER_HZ, proc(5)). */
const CLOCK_TICKS_PER_SECOND = 100;
/** Fields of /proc/PID/stat after the ")" closing the command name: utime and stime (proc(5): 14 and 15). */
const STAT_UTIME_AFTER_COMM = 11;
const STAT_STIME_AFTER_COMM = 12;

const decoder = new TextDecoder();

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** How the daemon ended, once it has. */
export interface DaemonExit {
  readonly code: number;
  readonly signal: Deno.Signal | null;
}

/** One daemon child; see the module comment. */
export class FuzzDaemon {
  /** The daemon's pid. */
  readonly pid: number;
  /** The vhost-user socket it listens on. */
  readonly socketPath: string;
  readonly #process: Deno.ChildProcess;
  readonly #reading: Promise<void>;
  #log = "";
  #logDropped = 0;
  #sessionsStarted = 0;
  #sessionsGone = 0;
  #exit: DaemonExit | null = null;
  readonly #exited: Promise<DaemonExit>;

  private constructor(socketPath: string, args: readonly string[]) {
    this.socketPath = socketPath;
    this.#process = new Deno.Command(TPASST, {
      args: ["--vhost-user", "-f", "-s", socketPath, ...args],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.pid = this.#process.pid;
    const stderr = this.#process.stderr;
    this.#reading = (async () => {
      let partial = "";
      for await (const chunk of stderr) {
        const text = decoder.decode(chunk, { stream: true });
        // count completed lines only, so a line split across chunks counts once
        const lines = (partial + text).split("\n");
        partial = lines.pop() ?? "";
        for (const line of lines) {
          if (line.includes(SESSION_STARTED_LINE)) this.#sessionsStarted++;
          if (line.includes(SESSION_GONE_LINE)) this.#sessionsGone++;
        }
        this.#log += text;
        if (this.#log.length > 2 * LOG_KEEP_CHARS) {
          this.#logDropped += this.#log.length - LOG_KEEP_CHARS;
          this.#log = this.#log.slice(-LOG_KEEP_CHARS);
        }
      }
    })();
    this.#exited = this.#process.status.then((status) => {
      this.#exit = { code: status.code, signal: status.signal };
      return this.#exit;
    });
  }

  /**
   * Starts the daemon on `socketPath` with extra `args` and waits (bounded) until its
   * socket exists.
   * @throws Error when the daemon exits or does not create its socket in time
   */
  static async start(socketPath: string, args: readonly string[]): Promise<FuzzDaemon> {
    const daemon = new FuzzDaemon(socketPath, args);
    const deadline = performance.now() + START_LIMIT_MS;
    while (!exists(socketPath)) {
      if (daemon.#exit !== null || performance.now() > deadline) {
        const why = daemon.#exit !== null ? `exited (${describeExit(daemon.#exit)})` : "timed out";
        await daemon.stop();
        throw new Error(`the daemon did not create ${socketPath}: ${why}\n${daemon.logTail(40)}`);
      }
      await sleep(10);
    }
    return daemon;
  }

  /** How it ended, or null while it runs. */
  get exit(): DaemonExit | null {
    return this.#exit;
  }

  /** Whether the process still runs (not exited, not a zombie). */
  alive(): boolean {
    if (this.#exit !== null) return false;
    try {
      const stat = Deno.readTextFileSync(`/proc/${this.pid}/stat`);
      const state = stat.charAt(stat.lastIndexOf(")") + 2);
      return state !== "Z" && state !== "X";
    } catch {
      return false;
    }
  }

  /** Sessions the daemon has logged as started so far. */
  get sessionsStarted(): number {
    return this.#sessionsStarted;
  }

  /** Sessions the daemon has logged as gone so far. */
  get sessionsGone(): number {
    return this.#sessionsGone;
  }

  /**
   * Waits until the daemon has logged `count` ended sessions, or `limitMs` passed, or
   * it died. Returns whether the count was reached.
   */
  async waitSessionsGone(count: number, limitMs: number): Promise<boolean> {
    const deadline = performance.now() + limitMs;
    while (this.#sessionsGone < count) {
      if (this.#exit !== null || performance.now() > deadline) return false;
      await sleep(2);
    }
    return true;
  }

  /** The last `lines` lines of its log. */
  logTail(lines: number): string {
    const all = this.#log.split("\n");
    const dropped = this.#logDropped > 0
      ? `[${this.#logDropped} earlier characters dropped]\n`
      : "";
    return dropped + all.slice(-lines - 1).join("\n");
  }

  /** The log kept in memory (the last MiB or so). */
  get log(): string {
    return this.#log;
  }

  /** Number of open fds (entries of /proc/PID/fd). */
  fdCount(): number {
    return [...Deno.readDirSync(`/proc/${this.pid}/fd`)].length;
  }

  /** Lines of /proc/PID/maps that map a memfd whose name starts with `namePrefix`. */
  memfdMappings(namePrefix: string): string[] {
    const maps = Deno.readTextFileSync(`/proc/${this.pid}/maps`);
    return maps.split("\n").filter((line) => line.includes(`/memfd:${namePrefix}`));
  }

  /** User plus system CPU time used so far, all threads, in seconds (10 ms resolution). */
  cpuSeconds(): number {
    const stat = Deno.readTextFileSync(`/proc/${this.pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[STAT_UTIME_AFTER_COMM]) + Number(fields[STAT_STIME_AFTER_COMM]);
    return ticks / CLOCK_TICKS_PER_SECOND;
  }

  /**
   * The share of one core the daemon used over the next `windowMs` (1.0 = one core
   * busy all the time).
   */
  async cpuShare(windowMs: number): Promise<number> {
    const cpuBefore = this.cpuSeconds();
    const before = performance.now();
    await sleep(windowMs);
    const cpu = this.cpuSeconds() - cpuBefore;
    return cpu / ((performance.now() - before) / 1000);
  }

  /**
   * The daemon's CPU share as it stays: measured over a window of `windowMs`, and while
   * it is above `limit`, over up to `windows - 1` further windows; the lowest share is
   * returned. A spinning daemon stays above the limit in every window; passing work
   * (the last bounded turns of a hostile ring, a garbage collection) does not.
   */
  async sustainedCpuShare(windowMs: number, limit: number, windows = 3): Promise<number> {
    let lowest = Infinity;
    for (let i = 0; i < windows && lowest > limit; i++) {
      lowest = Math.min(lowest, await this.cpuShare(windowMs));
    }
    return lowest;
  }

  /** Kills the daemon with SIGKILL (no clean-up: it is stuck or must go) and waits for it. */
  async kill(): Promise<DaemonExit> {
    if (this.#exit === null) {
      try {
        this.#process.kill("SIGKILL");
      } catch { /* it exited meanwhile */ }
    }
    const exit = await this.#exited;
    await this.#reading;
    return exit;
  }

  /**
   * Stops the daemon: SIGTERM, then SIGKILL if it has not exited within 5 s. Returns
   * how it ended (an exit before the SIGTERM is reported as it was).
   */
  async stop(): Promise<DaemonExit> {
    if (this.#exit === null) {
      try {
        this.#process.kill("SIGTERM");
      } catch { /* it exited meanwhile */ }
      const deadline = performance.now() + EXIT_LIMIT_MS;
      while (this.#exit === null && performance.now() < deadline) await sleep(10);
      if (this.#exit === null) return await this.kill();
    }
    const exit = await this.#exited;
    await this.#reading;
    return exit;
  }
}

/** "exit code N" or "killed by SIGNAME" (SIGBUS: touched guest memory beyond its file). */
export function describeExit(exit: DaemonExit): string {
  return exit.signal !== null ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
}
