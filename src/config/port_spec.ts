/**
 * passt's port forwarding spec (`-t`/`-u`, passt(1) "--tcp-ports", passt 2026's
 * fwd_rule.c) parsed into a structured table:
 *
 * ```
 * spec     = "none" | [ bind "/" ] chunk *( "," chunk )
 * bind     = address [ "%" ifname ] | [ "*" ] [ "%" ifname ]   ; "*" or nothing: any address
 * chunk    = "all" [ ":" target ]                  ; every non-ephemeral port (best effort)
 *          | "~" range                             ; exclude, over the whole spec
 *          | range [ ":" target "/" range | ":" target | ":" range ]
 * range    = port [ "-" port ]
 * address, target = IPv4 or IPv6 address, optionally in brackets
 * ```
 *
 * A spec made of exclusions only forwards every non-ephemeral port except those. A
 * target address is the guest-side address a forward goes to instead of the guest's
 * own one.
 *
 * @module
 */

import {
  type IpAddressText,
  isValidInterfaceName,
  parseIpAddress,
  unicastProblem,
} from "./address_text.ts";
import { parseIpv4, parseIpv6 } from "../../ffi/ip_address_text.ts";
import {
  isExcluded,
  MAX_PORT,
  MIN_PORT,
  type PortForward,
  type PortForwardSpec,
  type PortForwardTable,
  type PortRange,
} from "../net/plan/port_forward.ts";

/** Which IP versions are enabled, for the checks that depend on it. */
export interface EnabledFamilies {
  readonly ipv4: boolean;
  readonly ipv6: boolean;
}

/** A malformed port spec; the message names the bad part. */
export class PortSpecError extends RangeError {
  override name = "PortSpecError";
}

const PORT_TEXT = /^(0|[1-9][0-9]*)$/;
/** Characters an unbracketed IPv6 address may hold (passt's parse_ipv6()). */
const IPV6_CHARS = /^[0-9a-fA-F:.]*/;
/** Characters an unbracketed IPv4 address may hold (passt's parse_ipv4()). */
const IPV4_CHARS = /^[0-9.]*/;
/** An interface name runs to the next "/" or white space (passt's parse_ifspec()). */
const IFNAME_CHARS = /^[^/\s]*/;

/** A position in the text being parsed; failed attempts leave it where it was. */
class Cursor {
  constructor(readonly text: string, public pos = 0) {}

  get rest(): string {
    return this.text.slice(this.pos);
  }

  get atEnd(): boolean {
    return this.pos >= this.text.length;
  }

  literal(lit: string): boolean {
    if (!this.text.startsWith(lit, this.pos)) return false;
    this.pos += lit.length;
    return true;
  }

  /** Runs `attempt`; on `null` puts the cursor back. */
  try<T>(attempt: () => T | null): T | null {
    const saved = this.pos;
    const result = attempt();
    if (result === null) this.pos = saved;
    return result;
  }
}

/** An IPv6 then IPv4 address, optionally in brackets, or null. */
function parseAddressAt(c: Cursor): IpAddressText | null {
  for (const family of [6, 4] as const) {
    const found = c.try(() => {
      const bracket = c.literal("[");
      const rest = c.rest;
      const text = bracket
        ? rest.slice(0, Math.max(0, rest.indexOf("]")))
        : (family === 6 ? IPV6_CHARS : IPV4_CHARS).exec(rest)![0];
      if (bracket && !rest.includes("]")) return null;
      const bytes = family === 6 ? parseIpv6(text) : parseIpv4(text);
      if (bytes === null) return null;
      c.pos += text.length;
      if (bracket && !c.literal("]")) return null;
      return parseIpAddress(text);
    });
    if (found !== null) return found;
  }
  return null;
}

/** `%ifname` (possibly absent: ""), or null when malformed. */
function parseInterfaceAt(c: Cursor): string | null {
  if (!c.literal("%")) return "";
  const name = IFNAME_CHARS.exec(c.rest)![0];
  if (!isValidInterfaceName(name)) {
    throw new PortSpecError(`"${name}" in "${c.text}" is not a valid interface name`);
  }
  c.pos += name.length;
  return name;
}

function parsePort(text: string, item: string): number {
  if (text === "") throw new PortSpecError(`"${item}" has an empty port number`);
  if (!PORT_TEXT.test(text)) throw new PortSpecError(`"${text}" in "${item}" is not a port number`);
  const port = Number(text);
  if (port < MIN_PORT || port > MAX_PORT) {
    throw new PortSpecError(`port ${text} in "${item}" is out of range (${MIN_PORT}-${MAX_PORT})`);
  }
  return port;
}

/** `port[-port]` at the cursor (digits and one dash), or null if no digit is there. */
function parseRangeAt(c: Cursor, item: string): PortRange | null {
  const match = /^([0-9]+)(-([0-9]*))?/.exec(c.rest);
  if (match === null) {
    if (c.rest.startsWith("-")) throw new PortSpecError(`"${item}" has an empty port number`);
    return null;
  }
  c.pos += match[0].length;
  const first = parsePort(match[1], item);
  const last = match[2] === undefined ? first : parsePort(match[3], item);
  if (last < first) {
    throw new PortSpecError(`range "${match[0]}" in "${item}" ends before it starts`);
  }
  return { first, last };
}

/** The text of the chunk starting at the cursor (up to the next comma), for messages. */
function chunkText(c: Cursor): string {
  const rest = c.rest;
  const comma = rest.indexOf(",");
  return comma < 0 ? rest : rest.slice(0, comma);
}

function checkTarget(address: IpAddressText, item: string): string {
  if (address.bytes.every((b) => b === 0)) {
    throw new PortSpecError(`target address in "${item}" is the unspecified address`);
  }
  const problem = unicastProblem(address, true);
  if (problem !== null && /multicast|broadcast/.test(problem)) {
    throw new PortSpecError(`target address ${address.text} in "${item}" ${problem}`);
  }
  return address.text;
}

type Chunk =
  | { kind: "all"; target: string | null }
  | { kind: "exclude"; range: PortRange }
  | { kind: "include"; range: PortRange; targetFirst: number; target: string | null };

function parseChunk(c: Cursor): Chunk {
  const item = chunkText(c);
  if (item === "") throw new PortSpecError(`empty item in "${c.text}"`);
  if (c.literal("all")) {
    let target: string | null = null;
    const address = c.try(() => (c.literal(":") ? parseAddressAt(c) : null));
    if (address !== null) target = checkTarget(address, item);
    return { kind: "all", target };
  }
  if (c.literal("auto")) {
    throw new PortSpecError(`"auto" forwarding exists only in pasta, not in passt mode`);
  }
  if (c.literal("~")) {
    const range = parseRangeAt(c, item);
    if (range === null) throw new PortSpecError(`"${item}" has an empty port number`);
    if (c.rest.startsWith(":")) {
      throw new PortSpecError(`exclusion "${item}" cannot map to target ports`);
    }
    return { kind: "exclude", range };
  }
  const range = parseRangeAt(c, item);
  if (range === null) throw new PortSpecError(`"${item}" is not a port number`);
  if (!c.literal(":")) return { kind: "include", range, targetFirst: range.first, target: null };
  const withAddress = c.try(() => {
    const address = parseAddressAt(c);
    if (address === null) return null;
    const targetRange = c.try(() => (c.literal("/") ? parseRangeAt(c, item) : null));
    return { address, targetRange };
  });
  let targetRange: PortRange | null;
  let target: string | null = null;
  if (withAddress !== null) {
    target = checkTarget(withAddress.address, item);
    targetRange = withAddress.targetRange ?? range;
  } else {
    targetRange = parseRangeAt(c, item);
    if (targetRange === null) throw new PortSpecError(`"${item}" has an empty port number`);
  }
  if (targetRange.last - targetRange.first !== range.last - range.first) {
    throw new PortSpecError(
      `target range in "${item}" has ${targetRange.last - targetRange.first + 1} ports, ` +
        `source has ${range.last - range.first + 1}`,
    );
  }
  return { kind: "include", range, targetFirst: targetRange.first, target };
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
  const piece = (first: number, last: number): PortForward => ({
    first,
    last,
    targetFirst: forward.targetFirst + (first - forward.first),
    targetAddress: forward.targetAddress,
  });
  let start = forward.first;
  for (const ex of excluded) {
    if (ex.last < start || ex.first > forward.last) continue;
    if (ex.first > start) out.push(piece(start, ex.first - 1));
    start = ex.last + 1;
    if (start > forward.last) return out;
  }
  if (start <= forward.last) out.push(piece(start, forward.last));
  return out;
}

/** `bind/` at the start of the spec, or null when the spec has none. */
function parseBindAt(c: Cursor): { address: string | null; iface: string | null } | null {
  const specific = c.try(() => {
    const address = parseAddressAt(c);
    if (address === null) return null;
    const iface = parseInterfaceAt(c);
    if (iface === null || !c.literal("/")) return null;
    return { address, iface };
  });
  if (specific !== null) {
    const problem = unicastProblem(specific.address, true);
    if (problem !== null && !specific.address.bytes.every((b) => b === 0)) {
      throw new PortSpecError(`bind address "${specific.address.text}" ${problem}`);
    }
    return { address: specific.address.text, iface: specific.iface || null };
  }
  return c.try(() => {
    c.literal("*");
    const iface = parseInterfaceAt(c);
    if (iface === null || !c.literal("/")) return null;
    return { address: null, iface: iface || null };
  });
}

/**
 * Parses one `-t`/`-u` argument. Returns `null` for `none`.
 * @throws PortSpecError naming the malformed part
 */
export function parsePortSpec(spec: string): PortForwardSpec | null {
  if (spec === "none") return null;
  if (spec === "") throw new PortSpecError("empty port spec");
  const c = new Cursor(spec);
  const bind = parseBindAt(c) ?? { address: null, iface: null };
  if (c.atEnd) throw new PortSpecError(`no ports after "${spec}"`);
  const chunks: Chunk[] = [];
  for (;;) {
    const start = c.pos;
    chunks.push(parseChunk(c));
    if (c.atEnd) break;
    if (!c.literal(",")) {
      throw new PortSpecError(
        `unexpected "${c.rest}" after "${spec.slice(start, c.pos)}" in "${spec}"`,
      );
    }
    if (c.atEnd) throw new PortSpecError(`empty item in "${spec}"`);
  }
  const excluded = mergeRanges(
    chunks.flatMap((k) => (k.kind === "exclude" ? [k.range] : [])),
  );
  const included: PortForward[] = [];
  let allSeen = false;
  let allTargetAddress: string | null = null;
  for (const chunk of chunks) {
    if (chunk.kind === "all") {
      allSeen = true;
      allTargetAddress = chunk.target;
    }
    if (chunk.kind !== "include") continue;
    const { first, last } = chunk.range;
    for (const other of included) {
      if (first <= other.last && other.first <= last) {
        throw new PortSpecError(
          `"${first === last ? first : `${first}-${last}`}" overlaps ports ` +
            `${other.first}-${other.last} given earlier in "${spec}"`,
        );
      }
    }
    included.push({ first, last, targetFirst: chunk.targetFirst, targetAddress: chunk.target });
  }
  if (allSeen && included.length > 0) {
    throw new PortSpecError(`"all" cannot be combined with port ranges in "${spec}"`);
  }
  const allNonEphemeral = included.length === 0;
  const forwards = included
    .flatMap((f) => subtract(f, excluded))
    .sort((a, b) => a.first - b.first);
  if (!allNonEphemeral && forwards.length === 0) {
    throw new PortSpecError(`every port in "${spec}" is excluded`);
  }
  return {
    text: spec,
    bindAddress: bind.address,
    bindInterface: bind.iface,
    allNonEphemeral,
    allTargetAddress,
    forwards,
    excluded,
  };
}

/** The IP version of an address text. */
function familyOf(address: string): 4 | 6 {
  return address.includes(":") ? 6 : 4;
}

/** Whether two bind addresses may listen on the same port (passt's inany_matches()). */
function addressesMatch(a: string | null, b: string | null): boolean {
  if (a === null || b === null) return true;
  const unspecified = (x: string) => x === "0.0.0.0" || x === "::";
  if (unspecified(a) || unspecified(b)) return familyOf(a) === familyOf(b);
  return a === b;
}

/** A port both specs would listen on, or null (ephemeral ports are not known here). */
function sharedPort(a: PortForwardSpec, b: PortForwardSpec): number | null {
  if (a.allNonEphemeral && b.allNonEphemeral) {
    for (let port = MIN_PORT; port <= MAX_PORT; port++) {
      if (!isExcluded(a, port) && !isExcluded(b, port)) return port;
    }
    return null;
  }
  if (a.allNonEphemeral) return sharedPort(b, a);
  for (const f of a.forwards) {
    if (b.allNonEphemeral) {
      for (let port = f.first; port <= f.last; port++) if (!isExcluded(b, port)) return port;
      continue;
    }
    for (const g of b.forwards) {
      if (f.first <= g.last && g.first <= f.last) return Math.max(f.first, g.first);
    }
  }
  return null;
}

/** Checks what passt's fwd_rule_add() checks against the enabled IP versions. */
function checkFamilies(spec: PortForwardSpec, families: EnabledFamilies): void {
  const bindFamily = spec.bindAddress === null ? null : familyOf(spec.bindAddress);
  if (bindFamily === 4 && !families.ipv4) {
    throw new PortSpecError(`"${spec.text}" binds an IPv4 address, but IPv4 is disabled`);
  }
  if (bindFamily === 6 && !families.ipv6) {
    throw new PortSpecError(`"${spec.text}" binds an IPv6 address, but IPv6 is disabled`);
  }
  // Without an address, a spec listens on both versions unless only one is enabled.
  const listenFamily = bindFamily ??
    (families.ipv4 && families.ipv6 ? null : families.ipv4 ? 4 : 6);
  const targets = [
    ...spec.forwards.map((f) => f.targetAddress),
    spec.allTargetAddress,
  ].filter((t): t is string => t !== null);
  for (const target of targets) {
    const targetFamily = familyOf(target);
    if (listenFamily === null) {
      throw new PortSpecError(
        `"${spec.text}" forwards both IP versions to the IPv${targetFamily} address ${target}: ` +
          `give a bind address of that version (${targetFamily === 4 ? "0.0.0.0" : "[::]"}/...)`,
      );
    }
    if (listenFamily !== targetFamily) {
      throw new PortSpecError(
        `"${spec.text}" forwards from IPv${listenFamily} to IPv${targetFamily} (${target}), ` +
          `which is not supported`,
      );
    }
  }
}

/**
 * Parses every `-t` (or `-u`) argument, in order, into one table. Specs add up, as in
 * passt; `none` is refused after specs of the same table, and two specs that would
 * listen on the same port and a matching address conflict.
 * @param families the enabled IP versions (target addresses and bind addresses must fit)
 * @throws PortSpecError naming the offending spec
 */
export function parsePortForwardTable(
  specs: readonly string[],
  families: EnabledFamilies = { ipv4: true, ipv6: true },
): PortForwardTable {
  const parsed: PortForwardSpec[] = [];
  for (const text of specs) {
    const spec = parsePortSpec(text);
    if (spec === null) {
      if (parsed.length > 0) {
        throw new PortSpecError(`"none" conflicts with "${parsed[0].text}" given before it`);
      }
      continue;
    }
    checkFamilies(spec, families);
    for (const earlier of parsed) {
      if (!addressesMatch(spec.bindAddress, earlier.bindAddress)) continue;
      const port = sharedPort(spec, earlier);
      if (port !== null) {
        throw new PortSpecError(
          `"${text}" forwards port ${port} again (conflicts with "${earlier.text}")`,
        );
      }
    }
    parsed.push(spec);
  }
  return { specs: parsed };
}
