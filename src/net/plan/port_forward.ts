/**
 * Port forwarding tables as the forwarder uses them: which host ports go to which
 * guest ports. The command line's `-t`/`-u` parser (src/config/port_spec.ts) produces
 * these; src/net/ never reads the command line itself.
 *
 * @module
 */

/** Lowest forwardable port number (port 0 means "any" to bind()). */
export const MIN_PORT = 1;
/** Highest forwardable port number. */
export const MAX_PORT = 65535;

/** An inclusive range of port numbers. */
export interface PortRange {
  readonly first: number;
  readonly last: number;
}

/** Host ports `first..last` forwarded to guest ports `targetFirst..targetFirst + (last - first)`. */
export interface PortForward extends PortRange {
  readonly targetFirst: number;
  /** Guest-side address the ports go to (`:ADDR` in the spec); `null` = the guest's own. */
  readonly targetAddress: string | null;
}

/** One `-t`/`-u` argument. */
export interface PortForwardSpec {
  /** The argument as given, for messages. */
  readonly text: string;
  /**
   * Host address the listening sockets are bound to; `null` = any address of every
   * enabled IP version (no address, or `*`).
   */
  readonly bindAddress: string | null;
  /** Host interface the listening sockets are bound to (`%ifname`); `null` = any. */
  readonly bindInterface: string | null;
  /**
   * Forward every non-ephemeral port not in {@link excluded} (`all`, or a spec made of
   * exclusions only), each to the same port number, on a best-effort basis: a port
   * that cannot be bound is skipped, as passt does.
   */
  readonly allNonEphemeral: boolean;
  /** Guest-side address of the `all` forwards (`all:ADDR`); `null` = the guest's own. */
  readonly allTargetAddress: string | null;
  /** Explicit forwards, exclusions already removed, sorted, never overlapping. */
  readonly forwards: readonly PortForward[];
  /** Excluded ranges, merged and sorted. */
  readonly excluded: readonly PortRange[];
}

/** Every `-t` (or `-u`) argument given; an empty list means nothing is forwarded. */
export interface PortForwardTable {
  readonly specs: readonly PortForwardSpec[];
}

/** Whether port `port` is excluded from an "all" spec. */
export function isExcluded(spec: PortForwardSpec, port: number): boolean {
  return spec.excluded.some((ex) => port >= ex.first && port <= ex.last);
}

/**
 * Tells which guest port host port `port` is forwarded to by `spec`, or `null` if it
 * is not forwarded.
 * @param ephemeral the host's ephemeral port range, never forwarded by "all"
 */
export function targetPort(
  spec: PortForwardSpec,
  port: number,
  ephemeral: PortRange,
): number | null {
  for (const f of spec.forwards) {
    if (port >= f.first && port <= f.last) return f.targetFirst + (port - f.first);
  }
  if (!spec.allNonEphemeral || port < MIN_PORT || port > MAX_PORT) return null;
  if (port >= ephemeral.first && port <= ephemeral.last) return null;
  if (isExcluded(spec, port)) return null;
  return port;
}
