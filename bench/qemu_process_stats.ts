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
