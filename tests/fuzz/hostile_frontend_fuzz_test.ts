/**
 * Acceptance fuzz test for a hostile vhost-user frontend, through the REAL daemon
 * (`bin/tpasst --vhost-user -f -s SOCKET` as a child process): many hostile sessions
 * one after another (tests/fuzz/hostile_session.ts: ring layouts with loops, chains
 * through the whole table, shared indirect tables, bad indirect descriptors, addresses
 * outside memory, runaway available indices, garbage; kick/call/error fds of every
 * kind; memfds truncated under running rings, new memory tables, regions added and
 * removed), and after each one these checks:
 *
 * - the hostile connection answered GET_FEATURES within 1 s after the last step, and
 *   the daemon did not spin while that frontend sat idle;
 * - the daemon released the session within 1 s of the frontend closing;
 * - the daemon is alive (no SIGBUS);
 * - a fresh, well-behaved frontend gets its ARP reply from the gateway within 1 s;
 * - /proc/PID/maps holds no mapping of the fuzzer's memfds (all named "tpfuzz…");
 * - the daemon's fd count is back at its baseline;
 * - its CPU use over a short idle period is small;
 * - this test process's own fd count is back at its baseline.
 *
 * A failed check is reported at once (with the session's steps and the daemon's log
 * tail for the first failure of each kind) and the run goes on — after restarting the
 * daemon if it died or hung — so one run shows every kind of fault it can find; the
 * test fails at the end if any check failed.
 *
 * Environment: TPASST_FUZZ_SEED (default: from the clock, printed), and
 * TPASST_FUZZ_ITERATIONS: hostile steps to take, 25 per session at most, so
 * ITERATIONS / 25 sessions (default 1500: 60 sessions, 30–60 s).
 * TPASST_FUZZ_SESSION=N runs only session N of the seed (to replay a failure).
 */
import assert from "node:assert/strict";
import { openFdCount } from "../../ffi/process.ts";
import { describeExit, FuzzDaemon } from "./hostile_daemon.ts";
import { GATEWAY_IPV4, GUEST_IPV4, probeGateway } from "./gateway_probe.ts";
import { LAYOUTS } from "./hostile_layouts.ts";
import {
  type FuzzCounters,
  MAX_STEPS_PER_SESSION,
  newCounters,
  runHostileSession,
  type SessionResult,
} from "./hostile_session.ts";
import { FD_KINDS } from "./hostile_notifier.ts";

const SEED = Number(Deno.env.get("TPASST_FUZZ_SEED") ?? String(Date.now() % 2 ** 31));
const ITERATIONS = Number(Deno.env.get("TPASST_FUZZ_ITERATIONS") ?? "1500");
const SESSIONS = Math.max(1, Math.ceil(ITERATIONS / MAX_STEPS_PER_SESSION));
const ONLY_SESSION = Deno.env.get("TPASST_FUZZ_SESSION");

/** Longest the daemon may take to answer a frontend or to release a session. */
const ANSWER_LIMIT_MS = 1000;
/** Longest the fuzzer waits at all for a blocked daemon before it kills and restarts it. */
const STUCK_LIMIT_MS = 10_000;
/** Window over which idle CPU use is measured (up to three in a row while it is high). */
const IDLE_WINDOW_MS = 200;
/** Largest share of a core an idle daemon may use (a spinning one uses about all of it). */
const IDLE_CPU_LIMIT = 0.25;
/** Longest the daemon may take to close its fds after a session (they close synchronously). */
const FD_SETTLE_MS = 500;
/** No new session starts after this long; a sound daemon needs a fraction of it. */
const RUN_TIME_LIMIT_MS = Math.max(300_000, SESSIONS * 3_000);
/** More daemon restarts than this end the run: something is wrong with the set-up. */
const MAX_RESTARTS = 25;
/** Every memfd this run creates is named with this prefix (checked in the daemon's maps). */
const MEMFD_PREFIX = `tpfuzz${SEED}-`;
/** Daemon arguments: the guest's and gateway's addresses the probe's ARP request uses. */
const DAEMON_ARGS = ["-a", `${GUEST_IPV4}/24`, "-g", GATEWAY_IPV4];
/** Lines of the daemon's log shown with a failure, and session steps shown at most. */
const LOG_TAIL_LINES = 30;
const ACTIONS_SHOWN = 40;

/**
 * Mapping guest memory needs Deno.UnsafePointerView.getArrayBuffer, which only full
 * --allow-ffi permits: the daemon's permission set in deno.json must grant `"ffi": true`.
 */
const daemonMayMapMemory = (() => {
  try {
    const config = JSON.parse(Deno.readTextFileSync(new URL("../../deno.json", import.meta.url)));
    return config.permissions?.daemon?.ffi === true;
  } catch {
    return false;
  }
})();

/** One failed check. */
interface Failure {
  readonly kind: string;
  /** Session number, or -1 for the warm-up and the final checks. */
  readonly session: number;
  readonly detail: string;
}

/** The run's state: the current daemon, baselines, failures. */
class FuzzRun {
  daemon!: FuzzDaemon;
  readonly failures: Failure[] = [];
  readonly counters: FuzzCounters = newCounters();
  readonly socketPath: string;
  readonly scratchDir: string;
  probes = 0;
  restarts = 0;
  #expectedGone = 0;
  #fdBaseline = 0;
  #ownFdBaseline = 0;
  #reportedMappings = new Set<string>();
  #kindsShown = new Set<string>();
  #sessionShown = -2;
  #savedLogs: string[] = [];

  constructor(dir: string) {
    this.socketPath = `${dir}/vu.sock`;
    this.scratchDir = `${dir}/scratch`;
    Deno.mkdirSync(this.scratchDir);
  }

  /** Starts a daemon, runs a first probe and takes the fd baselines. */
  async startDaemon(): Promise<void> {
    try {
      Deno.removeSync(this.socketPath);
    } catch { /* no stale socket */ }
    this.daemon = await FuzzDaemon.start(this.socketPath, DAEMON_ARGS);
    this.#expectedGone = 0;
    this.#reportedMappings = new Set();
    // self-check of the observer: a connected frontend's memfds and fds are visible
    const idleFds = this.daemon.fdCount();
    let connectedMappings = 0;
    let connectedFds = 0;
    const probe = await this.#probe(-1, undefined, () => {
      connectedMappings = this.daemon.memfdMappings(MEMFD_PREFIX).length;
      connectedFds = this.daemon.fdCount();
    });
    if (!probe) return;
    if (connectedMappings === 0 || connectedFds <= idleFds) {
      this.#fail(
        "fuzzer-error",
        -1,
        `self-check: with a frontend connected the daemon showed ${connectedMappings} ` +
          `mappings of "${MEMFD_PREFIX}…" memfds and ${connectedFds} fds (${idleFds} idle)`,
      );
    }
    this.#fdBaseline = this.daemon.fdCount();
    this.#ownFdBaseline = openFdCount();
  }

  /** Kills the current daemon (only it, by its pid) and starts a new one. */
  async restartDaemon(why: string): Promise<void> {
    console.log(`  restarting the daemon (pid ${this.daemon.pid}): ${why}`);
    this.#saveLog();
    await this.daemon.kill();
    if (++this.restarts > MAX_RESTARTS) {
      throw new Error(`the daemon needed more than ${MAX_RESTARTS} restarts: giving up`);
    }
    await this.startDaemon();
  }

  /** Runs hostile session `index` and every check after it. */
  async session(index: number): Promise<void> {
    let result: SessionResult;
    try {
      result = await runHostileSession({
        socketPath: this.socketPath,
        daemon: this.daemon,
        seed: SEED,
        index,
        scratchDir: this.scratchDir,
        memfdPrefix: `${MEMFD_PREFIX}s${index}-`,
        counters: this.counters,
        controlLimitMs: ANSWER_LIMIT_MS,
        stuckLimitMs: STUCK_LIMIT_MS,
        idleWindowMs: IDLE_WINDOW_MS,
        idleCpuLimit: IDLE_CPU_LIMIT,
      });
    } catch (error) {
      // not the daemon's doing: the fuzzer itself failed (or could not connect)
      this.#fail("fuzzer-error", index, (error as Error).stack ?? String(error));
      this.#clearScratch();
      if (await this.#crashed(index)) return;
      // whether the daemon took the connection is only in its log
      await sleep(100);
      this.#expectedGone = this.daemon.sessionsStarted;
      return await this.checkDaemon(index);
    }
    this.#expectedGone++;
    this.#clearScratch();
    if (result.unanswered) {
      this.#fail(
        "blocked",
        index,
        `the hostile connection got no answer to GET_FEATURES within ${STUCK_LIMIT_MS} ms`,
        result,
      );
      // waiting again for the release would only cost time
      await this.restartDaemon("it is stuck");
      return;
    }
    const slowest = result.slowestAnswer;
    if (slowest !== null && slowest.ms > ANSWER_LIMIT_MS) {
      this.#fail(
        "blocked",
        index,
        `the hostile connection waited ${
          slowest.ms.toFixed(0)
        } ms for the answer to ${slowest.request} (limit ${ANSWER_LIMIT_MS} ms)`,
        result,
      );
    }
    if (result.cpuShareWhileIdle !== null && result.cpuShareWhileIdle > IDLE_CPU_LIMIT) {
      this.#fail(
        "cpu-spin-while-connected",
        index,
        `the daemon used ${
          (result.cpuShareWhileIdle * 100).toFixed(0)
        } % of a core while the hostile frontend sat idle for ${IDLE_WINDOW_MS} ms`,
        result,
      );
    }
    await this.checkDaemon(index, result);
  }

  /**
   * The checks between sessions: released, alive, answers a fresh frontend within
   * 1 s, no fuzzer memfd mapped, fd count at baseline, idle CPU small, own fds.
   */
  async checkDaemon(index: number, result?: SessionResult): Promise<void> {
    if (!(await this.#released(index, result))) return;
    if (!(await this.#probe(index, result))) return;
    const mappings = this.daemon.memfdMappings(MEMFD_PREFIX)
      .filter((line) => !this.#reportedMappings.has(line));
    if (mappings.length > 0) {
      for (const line of mappings) this.#reportedMappings.add(line);
      this.#fail(
        "leaked-mapping",
        index,
        `${mappings.length} mappings of the fuzzer's memfds remain:\n    ${
          mappings.slice(0, 8).join("\n    ")
        }`,
        result,
      );
    }
    const deadline = performance.now() + FD_SETTLE_MS;
    let fds = this.daemon.fdCount();
    while (fds > this.#fdBaseline && performance.now() < deadline) {
      await sleep(10);
      fds = this.daemon.fdCount();
    }
    if (fds !== this.#fdBaseline) {
      this.#fail(
        "fd-leak",
        index,
        `the daemon holds ${fds} fds, baseline ${this.#fdBaseline}`,
        result,
      );
      this.#fdBaseline = fds; // report each further change once
    }
    const share = await this.daemon.sustainedCpuShare(IDLE_WINDOW_MS, IDLE_CPU_LIMIT);
    if (share > IDLE_CPU_LIMIT) {
      this.#fail(
        "cpu-spin-while-idle",
        index,
        `the daemon used ${(share * 100).toFixed(0)} % of a core with no frontend connected`,
        result,
      );
    }
    const ownFds = openFdCount();
    if (ownFds !== this.#ownFdBaseline) {
      this.#fail(
        "test-fd-leak",
        index,
        `this test process holds ${ownFds} fds, baseline ${this.#ownFdBaseline} (a fuzzer bug)`,
        result,
      );
      this.#ownFdBaseline = ownFds;
    }
  }

  /** Stops the daemon with SIGTERM and checks it exits 0; saves its log if anything failed. */
  async finish(): Promise<void> {
    if (this.daemon.alive()) {
      const exit = await this.daemon.stop();
      if (exit.signal !== null || exit.code !== 0) {
        this.#fail("unclean-exit", -1, `after SIGTERM the daemon ended: ${describeExit(exit)}`);
      }
    } else {
      await this.daemon.kill();
    }
    if (this.failures.length > 0) this.#saveLog();
  }

  /** Paths of daemon logs saved for failed runs. */
  get savedLogs(): readonly string[] {
    return this.#savedLogs;
  }

  /** Waits until the daemon let go of every session so far; restarts it if it died or hung. */
  async #released(index: number, result?: SessionResult): Promise<boolean> {
    if (await this.#crashed(index, result)) return false;
    const started = performance.now();
    if (await this.daemon.waitSessionsGone(this.#expectedGone, ANSWER_LIMIT_MS)) return true;
    if (await this.#crashed(index, result)) return false;
    const released = await this.daemon.waitSessionsGone(this.#expectedGone, STUCK_LIMIT_MS);
    if (await this.#crashed(index, result)) return false;
    const waited = (performance.now() - started).toFixed(0);
    this.#fail(
      "slow-release",
      index,
      released
        ? `the daemon took ${waited} ms to release the closed session (limit ${ANSWER_LIMIT_MS} ms)`
        : `the daemon had not released the closed session after ${waited} ms`,
      result,
    );
    if (!released) await this.restartDaemon("it does not release the session");
    return released;
  }

  /** Reports and restarts a daemon that is no longer alive. */
  async #crashed(index: number, result?: SessionResult): Promise<boolean> {
    if (this.daemon.alive()) return false;
    // give the exit status a moment to arrive (the process is a zombie or gone)
    const deadline = performance.now() + 2000;
    while (this.daemon.exit === null && performance.now() < deadline) await sleep(10);
    const exit = this.daemon.exit;
    this.#fail(
      "crash",
      index,
      `the daemon died: ${exit === null ? "no exit status" : describeExit(exit)}`,
      result,
    );
    await this.restartDaemon("it died");
    return true;
  }

  /** Runs the well-behaved probe; false when the daemon had to be restarted. */
  async #probe(
    index: number,
    result?: SessionResult,
    whileConnected?: () => void,
  ): Promise<boolean> {
    this.probes++;
    const probe = await probeGateway(
      this.socketPath,
      `${MEMFD_PREFIX}probe${index}-`,
      ANSWER_LIMIT_MS,
      whileConnected,
    );
    this.#expectedGone++;
    if (!probe.answered || probe.elapsedMs > ANSWER_LIMIT_MS) {
      this.#fail(
        "unanswered-probe",
        index,
        `a fresh frontend's ARP request for the gateway: ${probe.error ?? "answered"} after ${
          probe.elapsedMs.toFixed(0)
        } ms (limit ${ANSWER_LIMIT_MS} ms)`,
        result,
      );
    }
    return await this.#released(index, result);
  }

  #fail(kind: string, session: number, detail: string, result?: SessionResult): void {
    this.failures.push({ kind, session, detail });
    const where = session >= 0 ? `session ${session}` : "between sessions";
    console.log(`FAIL ${kind} in ${where} (seed ${SEED}): ${detail}`);
    if (this.#kindsShown.has(kind)) return;
    this.#kindsShown.add(kind);
    if (result !== undefined && session === this.#sessionShown) {
      console.log("  (the session's steps and the daemon's log are shown above)");
      return;
    }
    this.#sessionShown = session;
    if (result !== undefined) {
      const shown = result.actions.slice(-ACTIONS_SHOWN);
      console.log(
        `  the session's steps${
          shown.length < result.actions.length ? ` (last ${shown.length})` : ""
        }:\n    ${shown.join("\n    ")}`,
      );
    }
    console.log(
      `  daemon log (pid ${this.daemon.pid}), last lines:\n${
        this.daemon.logTail(LOG_TAIL_LINES).replace(/^/gm, "    | ")
      }`,
    );
    if (session >= 0) {
      console.log(
        `  replay: TPASST_FUZZ_SEED=${SEED} TPASST_FUZZ_SESSION=${session} ` +
          "deno test --allow-all --no-prompt tests/fuzz/hostile_frontend_fuzz_test.ts",
      );
    }
  }

  #saveLog(): void {
    const path = `/tmp/tpasst-hostile-fuzz-${SEED}-daemon${this.restarts}.log`;
    try {
      Deno.writeTextFileSync(path, this.daemon.log);
      this.#savedLogs.push(path);
    } catch { /* the report still has the log tail */ }
  }

  #clearScratch(): void {
    for (const entry of Deno.readDirSync(this.scratchDir)) {
      Deno.removeSync(`${this.scratchDir}/${entry.name}`);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function countsLine(label: string, counts: Record<string, number>): string {
  return `  ${label}: ${
    Object.entries(counts).map(([name, count]) => `${name} ${count}`).join(", ")
  }`;
}

/** The closing report: what the fuzzer did, and what failed. */
function report(run: FuzzRun, sessionsRun: number, planned: number, seconds: number): string {
  const c = run.counters;
  const lines = [
    `hostile frontend fuzz: seed ${SEED}, ${sessionsRun} of ${planned} sessions, ` +
    `${seconds.toFixed(1)} s, ${run.restarts} daemon restarts`,
    `  sessions ${c.sessions} (${c.endedByDaemon} ended by the daemon, ` +
    `${c.negotiationsFailed} refused at negotiation), steps ${c.steps}, ` +
    `messages ${c.messages}, kicks ${c.kicks}, probes ${run.probes}`,
    countsLine("kicks by fd kind", c.kicksByKind),
    countsLine("fds handed over by kind", c.fdsHandedOver),
    countsLine("ring layouts", c.layouts),
    `  ring sizes: ${
      [...c.ringSizes].sort((a, b) => a[0] - b[0]).map(([size, n]) => `${size}×${n}`).join(", ")
    }`,
    `  memory: truncations ${c.truncations} (+${c.truncationsRefusedBySeal} refused by the seal), ` +
    `regrown ${c.regrowths}, SET_MEM_TABLE ${c.memTables}, ADD_MEM_REG ${c.addedRegions}, ` +
    `REM_MEM_REG ${c.removedRegions}`,
    `  rings: ${c.ringRestarts} restarts, ${c.ringToggles} disable/enable; ` +
    `${c.arpRequestsSent} ARP requests, ${c.rxBuffersPosted} RX buffers posted`,
  ];
  const byKind = new Map<string, Failure[]>();
  for (const failure of run.failures) {
    byKind.set(failure.kind, [...(byKind.get(failure.kind) ?? []), failure]);
  }
  if (byKind.size === 0) {
    lines.push("  failures: none");
  } else {
    lines.push("  failures:");
    for (const [kind, list] of byKind) {
      const sessions = [...new Set(list.map((f) => f.session))].slice(0, 12).join(", ");
      lines.push(`    ${kind}: ${list.length}× (sessions ${sessions})`);
    }
    for (const path of run.savedLogs) lines.push(`  daemon log saved: ${path}`);
  }
  return lines.join("\n");
}

Deno.test({
  name:
    `a hostile vhost-user frontend cannot crash, block, spin or leak \`bin/tpasst --vhost-user\` (seed ${SEED})${
      daemonMayMapMemory
        ? ""
        : ' (skipped: deno.json\'s daemon permission set lacks "ffi": true, needed to map guest memory)'
    }`,
  ignore: !daemonMayMapMemory,
  async fn() {
    assert.ok(FD_KINDS.length > 0 && LAYOUTS.length > 0);
    const sessions = ONLY_SESSION !== undefined
      ? [Number(ONLY_SESSION)]
      : Array.from({ length: SESSIONS }, (_, i) => i);
    console.log(
      `hostile frontend fuzz: seed ${SEED}, ${sessions.length} sessions ` +
        `(TPASST_FUZZ_ITERATIONS=${ITERATIONS}, up to ${MAX_STEPS_PER_SESSION} steps each)`,
    );
    const ownFdsBefore = openFdCount();
    const dir = Deno.makeTempDirSync({ dir: "/tmp", prefix: "tpfz" });
    const run = new FuzzRun(dir);
    const started = performance.now();
    let sessionsRun = 0;
    try {
      await run.startDaemon();
      for (const index of sessions) {
        if (performance.now() - started > RUN_TIME_LIMIT_MS) {
          console.log(`  time limit of ${RUN_TIME_LIMIT_MS / 1000} s reached: no more sessions`);
          break;
        }
        await run.session(index);
        sessionsRun++;
      }
    } finally {
      await run.finish();
      Deno.removeSync(dir, { recursive: true });
    }
    console.log(report(run, sessionsRun, sessions.length, (performance.now() - started) / 1000));
    assert.equal(openFdCount(), ownFdsBefore, "this test's own fd count is back where it was");
    assert.deepEqual(
      run.failures.map((f) => `${f.kind} (session ${f.session})`),
      [],
      `checks failed with seed ${SEED}; see the FAIL lines above`,
    );
  },
});
