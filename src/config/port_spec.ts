/**
 * passt's port forwarding spec (`-t`/`-u`, passt(1) "--tcp-ports") parsed into a
 * structured table:
 *
 * ```
 * spec     = "none" | "all" | [ bind "/" ] item *( "," item )
 * bind     = address [ "%" ifname ] | "%" ifname
 * item     = [ "~" ] range | range ":" range      ; "~" excludes, ":" maps to target ports
 * range    = port [ "-" port ]
 * ```
 *
 * A spec made of exclusions only forwards every non-ephemeral port except those.
 *
 * @module
 */

import { isValidInterfaceName, parseIpAddress, unicastProblem } from "./address_text.ts";

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
}

/** One `-t`/`-u` argument. */
export interface PortForwardSpec {
  /** Host address the listening sockets are bound to; `null` = any. */
  readonly bindAddress: string | null;
  /** Host interface the listening sockets are bound to (`%ifname`); `null` = any. */
  readonly bindInterface: string | null;
  /**
   * Forward every non-ephemeral port not in {@link excluded} (`all`, or a spec made of
   * exclusions only), each to the same port number.
   */
  readonly allNonEphemeral: boolean;
  /** Explicit forwards, exclusions already removed, sorted, never overlapping. */
  readonly forwards: readonly PortForward[];
  /** Excluded ranges, merged and sorted. */
  readonly excluded: readonly PortRange[];
}

/** Every `-t` (or `-u`) argument given; an empty list means nothing is forwarded. */
export interface PortForwardTable {
  readonly specs: readonly PortForwardSpec[];
}

/** A malformed port spec; the message names the bad part. */
export class PortSpecError extends RangeError {
  override name = "PortSpecError";
}

const PORT_TEXT = /^(0|[1-9][0-9]*)$/;

function parsePort(text: string, item: string): number {
  if (text === "") throw new PortSpecError(`"${item}" has an empty port number`);
  if (!PORT_TEXT.test(text)) throw new PortSpecError(`"${text}" in "${item}" is not a port number`);
  const port = Number(text);
  if (port < MIN_PORT || port > MAX_PORT) {
    throw new PortSpecError(`port ${text} in "${item}" is out of range (${MIN_PORT}-${MAX_PORT})`);
  }
  return port;
}

function parseRange(text: string, item: string): PortRange {
  const dash = text.indexOf("-");
  if (dash < 0) {
    const port = parsePort(text, item);
    return { first: port, last: port };
  }
  const first = parsePort(text.slice(0, dash), item);
  const last = parsePort(text.slice(dash + 1), item);
  if (last < first) throw new PortSpecError(`range "${text}" in "${item}" ends before it starts`);
  return { first, last };
}

function parseBind(prefix: string): { address: string | null; iface: string | null } {
  const percent = prefix.indexOf("%");
  const addressText = percent < 0 ? prefix : prefix.slice(0, percent);
  const ifaceText = percent < 0 ? null : prefix.slice(percent + 1);
  let address: string | null = null;
  if (addressText !== "") {
    const parsed = parseIpAddress(addressText);
    if (parsed === null) throw new PortSpecError(`"${addressText}" is not an IP address`);
    const problem = unicastProblem(parsed, true);
    if (problem !== null && parsed.bytes.some((b) => b !== 0)) {
      throw new PortSpecError(`bind address "${addressText}" ${problem}`);
    }
    address = parsed.text;
  } else if (ifaceText === null) {
    throw new PortSpecError(`empty bind address before "/"`);
  }
  if (ifaceText !== null && !isValidInterfaceName(ifaceText)) {
    throw new PortSpecError(`"${ifaceText}" is not a valid interface name`);
  }
  return { address, iface: ifaceText };
}

/** Sorts ranges and merges the overlapping or adjacent ones. */
function mergeRanges(ranges: PortRange[]): PortRange[] {
  const sorted = [...ranges].sort((a, b) => a.first - b.first);
  const out: { first: number; last: number }[] = [];
  for (const r of sorted) {
    const prev = out[out.length - 1];
    if (prev !== undefined && r.first <= prev.last + 1) prev.last = Math.max(prev.last, r.last);
    else out.push({ first: r.first, last: r.last });
  }
  return out;
}

/** Removes the (merged, sorted) `excluded` ranges from one forward, splitting it as needed. */
function subtract(forward: PortForward, excluded: readonly PortRange[]): PortForward[] {
  const out: PortForward[] = [];
  let start = forward.first;
  for (const ex of excluded) {
    if (ex.last < start || ex.first > forward.last) continue;
    if (ex.first > start) {
      out.push({
        first: start,
        last: ex.first - 1,
        targetFirst: forward.targetFirst + (start - forward.first),
      });
    }
    start = ex.last + 1;
    if (start > forward.last) return out;
  }
  if (start <= forward.last) {
    out.push({
      first: start,
      last: forward.last,
      targetFirst: forward.targetFirst + (start - forward.first),
    });
  }
  return out;
}

/**
 * Parses one `-t`/`-u` argument. Returns `null` for `none`.
 * @throws PortSpecError naming the malformed part
 */
export function parsePortSpec(spec: string): PortForwardSpec | null {
  if (spec === "none") return null;
  if (spec === "auto") {
    throw new PortSpecError(`"auto" forwarding exists only in pasta, not in passt mode`);
  }
  if (spec === "") throw new PortSpecError("empty port spec");
  const slash = spec.lastIndexOf("/");
  const { address, iface } = slash < 0
    ? { address: null, iface: null }
    : parseBind(spec.slice(0, slash));
  const list = slash < 0 ? spec : spec.slice(slash + 1);
  if (list === "all") {
    return {
      bindAddress: address,
      bindInterface: iface,
      allNonEphemeral: true,
      forwards: [],
      excluded: [],
    };
  }
  if (list === "") throw new PortSpecError(`no ports after "${spec}"`);

  const included: PortForward[] = [];
  const excludedRaw: PortRange[] = [];
  for (const item of list.split(",")) {
    if (item === "") throw new PortSpecError(`empty item in "${list}"`);
    if (item === "all" || item === "none" || item === "auto") {
      throw new PortSpecError(`"${item}" cannot be combined with other items in "${spec}"`);
    }
    if (item.startsWith("~")) {
      const body = item.slice(1);
      if (body.includes(":")) {
        throw new PortSpecError(`exclusion "${item}" cannot map to target ports`);
      }
      excludedRaw.push(parseRange(body, item));
      continue;
    }
    const colon = item.indexOf(":");
    const source = parseRange(colon < 0 ? item : item.slice(0, colon), item);
    let targetFirst = source.first;
    if (colon >= 0) {
      const target = parseRange(item.slice(colon + 1), item);
      if (target.last - target.first !== source.last - source.first) {
        throw new PortSpecError(
          `target range in "${item}" has ${target.last - target.first + 1} ports, ` +
            `source has ${source.last - source.first + 1}`,
        );
      }
      targetFirst = target.first;
    }
    for (const other of included) {
      if (source.first <= other.last && other.first <= source.last) {
        throw new PortSpecError(
          `"${item}" overlaps ports ${other.first}-${other.last} given earlier in "${spec}"`,
        );
      }
    }
    included.push({ first: source.first, last: source.last, targetFirst });
  }
  const excluded = mergeRanges(excludedRaw);
  const allNonEphemeral = included.length === 0;
  const forwards = included
    .flatMap((f) => subtract(f, excluded))
    .sort((a, b) => a.first - b.first);
  if (!allNonEphemeral && forwards.length === 0) {
    throw new PortSpecError(`every port in "${spec}" is excluded`);
  }
  return { bindAddress: address, bindInterface: iface, allNonEphemeral, forwards, excluded };
}

/** Two specs can bind the same port if their bind addresses or interfaces differ. */
function sameBinding(a: PortForwardSpec, b: PortForwardSpec): boolean {
  return a.bindAddress === b.bindAddress && a.bindInterface === b.bindInterface;
}

/**
 * Parses every `-t` (or `-u`) argument into one table, rejecting `none`/`all`
 * mixed with other specs and ports forwarded twice on the same binding.
 * @throws PortSpecError naming the offending spec
 */
export function parsePortForwardTable(specs: readonly string[]): PortForwardTable {
  if (specs.length > 1 && specs.includes("none")) {
    throw new PortSpecError(`"none" cannot be combined with other port specs`);
  }
  const parsed: PortForwardSpec[] = [];
  for (const text of specs) {
    const spec = parsePortSpec(text);
    if (spec === null) continue;
    for (const earlier of parsed) {
      if (!sameBinding(spec, earlier)) continue;
      if (spec.allNonEphemeral || earlier.allNonEphemeral) {
        throw new PortSpecError(`"${text}" overlaps an earlier spec forwarding all ports`);
      }
      for (const f of spec.forwards) {
        for (const g of earlier.forwards) {
          if (f.first <= g.last && g.first <= f.last) {
            throw new PortSpecError(
              `"${text}" forwards port ${Math.max(f.first, g.first)} again`,
            );
          }
        }
      }
    }
    parsed.push(spec);
  }
  return { specs: parsed };
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
  for (const ex of spec.excluded) if (port >= ex.first && port <= ex.last) return null;
  return port;
}
