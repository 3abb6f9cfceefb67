/**
 * CPU time and peak memory of a process from /proc, for the QEMU benchmark.
 *
 * @module
 */

/** Clock ticks per second of /proc/PID/stat's utime/stime (USER_HZ, fixed at 100 on Linux). */
const USER_HZ = 100;
/** Field numbers of utime and stime in /proc/PID/stat (proc(5)), counted from 1. */
const STAT_UTIME_FIELD = 14;
const STAT_STIME_FIELD = 15;

/** User + system CPU seconds `pid` has used so far, or null if it is gone. */
export function processCpuSeconds(pid: number): number | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return null;
  }
  // The command name (field 2) is parenthesised and may contain spaces: split after it.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const field = (n: number) => Number(rest[n - 3]);
  return (field(STAT_UTIME_FIELD) + field(STAT_STIME_FIELD)) / USER_HZ;
}

/** Peak resident set size of `pid` in KiB (VmHWM), or null if it is gone. */
export function processPeakRssKiB(pid: number): number | null {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const match = /^VmHWM:\s+(\d+) kB/m.exec(status);
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

/** Scheduler statistics of a process, summed over its threads. */
export interface SchedulerStats {
  /** Seconds its threads ran on a CPU (/proc/PID/task/TID/schedstat, field 1). */
  readonly runSeconds: number;
  /** Seconds its threads were runnable but waited for a CPU (schedstat, field 2). */
  readonly waitSeconds: number;
  /** Times a thread gave up the CPU to wait for something (voluntary_ctxt_switches). */
  readonly sleeps: number;
  /** Times a thread was preempted while it could still run (nonvoluntary_ctxt_switches). */
  readonly preemptions: number;
}

/**
 * Calls `visit` with the /proc directory of each current thread of `pid`; a thread that
 * ends meanwhile (its files gone) is skipped. Returns false if the process is gone.
 */
function forEachThread(pid: number, visit: (dir: string) => void): boolean {
  try {
    for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
      try {
        visit(`/proc/${pid}/task/${task.name}`);
      } catch { /* the thread ended meanwhile */ }
    }
    return true;
  } catch {
    return false;
  }
}

/** Nanoseconds a thread ran and waited for a CPU (its schedstat's first two fields). */
function threadSchedstat(dir: string): [run: number, wait: number] {
  const [run, wait] = Deno.readTextFileSync(`${dir}/schedstat`).trim().split(" ").map(Number);
  return [run, wait];
}

/** Scheduler statistics of `pid` summed over its current threads, or null if it is gone. */
export function processSchedulerStats(pid: number): SchedulerStats | null {
  let runNs = 0, waitNs = 0, sleeps = 0, preemptions = 0;
  const found = forEachThread(pid, (dir) => {
    const [run, wait] = threadSchedstat(dir);
    const status = Deno.readTextFileSync(`${dir}/status`);
    runNs += run;
    waitNs += wait;
    sleeps += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
    preemptions += Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  });
  if (!found) return null;
  return { runSeconds: runNs / 1e9, waitSeconds: waitNs / 1e9, sleeps, preemptions };
}

/**
 * Seconds each thread name of `pid` has run on a CPU so far (schedstat, field 1),
 * threads of one name summed (Deno's main thread, V8's workers, tokio's), or null if
 * the process is gone. A thread that ended takes its seconds with it.
 */
export function threadRunSeconds(pid: number): Map<string, number> | null {
  const byName = new Map<string, number>();
  const found = forEachThread(pid, (dir) => {
    const [run] = threadSchedstat(dir);
    const name = Deno.readTextFileSync(`${dir}/comm`).trim();
    byName.set(name, (byName.get(name) ?? 0) + run / 1e9);
  });
  return found ? byName : null;
}
