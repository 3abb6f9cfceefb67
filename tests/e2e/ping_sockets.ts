/**
 * ICMP echo ("ping") sockets for the backends under test. passt (as "nobody") and tpasst
 * answer the guest's pings through unprivileged ping sockets, which the host's
 * `net.ipv4.ping_group_range` may forbid (Debian's default is "1 0": nobody). When the
 * tests run as root, {@link allowPingSockets} opens the range to every group for the
 * duration of the test process and puts the original value back when the process
 * unloads (also after failing tests); otherwise the ping scenarios are ignored with the
 * reason {@link pingUnavailableReason} gives.
 *
 * @module
 */

/** The sysctl (the same file covers ICMPv6 echo sockets). */
export const PING_GROUP_RANGE_PATH = "/proc/sys/net/ipv4/ping_group_range";
/** Every group (the kernel's upper bound is 2^31 - 1). */
export const ALL_GROUPS_RANGE = "0 2147483647";

let original: string | null = null;
let attempted = false;

/**
 * As root, sets `ping_group_range` to {@link ALL_GROUPS_RANGE} (once per process) and
 * registers the restore on unload. Returns whether the range was changed by this process.
 */
export function allowPingSockets(): boolean {
  if (attempted) return original !== null;
  attempted = true;
  if (Deno.uid() !== 0) return false;
  try {
    const before = Deno.readTextFileSync(PING_GROUP_RANGE_PATH).trim();
    if (before.split(/\s+/).join(" ") === ALL_GROUPS_RANGE) return false;
    Deno.writeTextFileSync(PING_GROUP_RANGE_PATH, ALL_GROUPS_RANGE);
    original = before;
    globalThis.addEventListener("unload", restorePingGroupRange);
    return true;
  } catch {
    return false;
  }
}

/** Puts back the value {@link allowPingSockets} replaced (no-op if it changed nothing). */
export function restorePingGroupRange(): void {
  if (original === null) return;
  try {
    Deno.writeTextFileSync(PING_GROUP_RANGE_PATH, original);
  } catch { /* the test process is ending; nothing better to do */ }
  original = null;
}

/** Whether ICMP echo sockets are allowed for group `gid` right now. */
export function pingSocketsAllowed(gid: number): boolean {
  try {
    const text = Deno.readTextFileSync(PING_GROUP_RANGE_PATH);
    const [low, high] = text.trim().split(/\s+/).map(Number);
    return low <= gid && gid <= high;
  } catch {
    return false;
  }
}

/**
 * After trying {@link allowPingSockets}: null if group `gid` may open ping sockets, else
 * why not (for the ignore reason of a ping scenario).
 */
export function pingUnavailableReason(gid: number, who: string): string | null {
  allowPingSockets();
  if (pingSocketsAllowed(gid)) return null;
  return `not root, and the host's net.ipv4.ping_group_range excludes gid ${gid}: ${who} cannot open ICMP echo sockets`;
}
