/**
 * ICMP echo ("ping") sockets for the backends under test. passt (as "nobody") and tpasst
 * answer the guest's pings through unprivileged ping sockets, which the host's
 * `net.ipv4.ping_group_range` may forbid (Debian's default is "1 0": nobody). The test
 * targets of the Makefile run through `with_ping_sockets.sh`, which (as root) opens the
 * range for the whole run and puts the host's value back afterwards; the tests only
 * look, and skip the ping scenarios with {@link pingUnavailableReason} where it is shut.
 *
 * @module
 */

/** The sysctl (the same file covers ICMPv6 echo sockets). */
export const PING_GROUP_RANGE_PATH = "/proc/sys/net/ipv4/ping_group_range";

/** The wrapper that opens the range around a command (relative to this file). */
export const WITH_PING_SOCKETS_SCRIPT = new URL("./with_ping_sockets.sh", import.meta.url).pathname;

/** Whether processes of group `gid` may open ping sockets on this host now. */
export function pingSocketsAllowed(gid: number): boolean {
  try {
    const text = Deno.readTextFileSync(PING_GROUP_RANGE_PATH);
    const [low, high] = text.trim().split(/\s+/).map(Number);
    return low <= gid && gid <= high;
  } catch {
    return false;
  }
}

/** Null when `who` (running as group `gid`) can answer pings, else why not. */
export function pingUnavailableReason(gid: number, who: string): string | null {
  if (pingSocketsAllowed(gid)) return null;
  return `the host's net.ipv4.ping_group_range excludes gid ${gid}: ${who} cannot open ICMP ` +
    `echo sockets (run through make test/e2e, which opens it as root)`;
}
