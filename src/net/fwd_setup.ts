/**
 * Wiring of the translators into a running stack: builds the forwarding rules,
 * creates the TCP and UDP translators, registers them with the stack
 * (`registerL4`) and opens the `-t` / `-u` listeners.
 *
 * Listening follows passt: a port given explicitly that cannot be listened on is an
 * error (the daemon exits 1), while `all` and exclusion-only specs are best effort:
 * ports in use or not permitted are skipped, and when the file descriptor limit
 * leaves no room the rest is skipped, each case summed up in one log line naming
 * the ports. Explicit forwards are opened before any `all` forward, so that they get
 * descriptors first.
 *
 * @module
 */

import { readKernelFile } from "../../ffi/kernel_file.ts";
import { errnoName, NativeError } from "../../ffi/native_error.ts";
import { openFdCount } from "../../ffi/process.ts";
import {
  MAX_PORT,
  MIN_PORT,
  type PortForwardSpec,
  type PortForwardTable,
  type PortRange,
  targetPort,
} from "./plan/port_forward.ts";
import { log as defaultLog, type Logger } from "../log/logger.ts";
import type { ForwardRules } from "./plan/fwd.ts";
import type { GuestSender } from "./guest_sender.ts";
import type { NetworkPlan } from "./plan/network_plan.ts";
import type { L4Handler } from "./l4_handler.ts";
import type { HostTcp } from "./tcp/host_socket.ts";
import { TcpTranslator } from "./tcp/translator.ts";
import type { EventLoop } from "../loop/event_loop.ts";
import { type UdpSocketWatcher, UdpTranslator } from "./udp/translator.ts";
import { IPPROTO_TCP, IPPROTO_UDP } from "./wire/ip_protocol.ts";

/** Linux's default ephemeral port range (net.ipv4.ip_local_port_range). */
export const DEFAULT_EPHEMERAL: PortRange = { first: 32768, last: 60999 };

/** Where the host's ephemeral port range is (proc(5)). */
export const EPHEMERAL_RANGE_PATH = "/proc/sys/net/ipv4/ip_local_port_range";

/**
 * File descriptors left free when `all` forwards take listening sockets: for the
 * frontend, the guest's connections and flows, the log and capture files.
 */
export const FDS_KEPT_FREE = 1024;

/** Ports listed in one log line before the rest is only counted. */
const MAX_LISTED_RANGES = 8;

/** The part of NetworkStack the wiring needs. */
export interface StackLike {
  readonly sender: GuestSender;
  readonly plan: NetworkPlan;
  /** The translation rules the stack's ICMP echo follows too. */
  readonly forwardRules: ForwardRules;
  registerL4(protocol: number, handler: L4Handler): void;
}

/** Options of {@link startForwarding}. */
export interface ForwardingOptions {
  /** `-t` specs (host ports forwarded to the guest over TCP). */
  tcpForwards?: PortForwardTable;
  /** `-u` specs. */
  udpForwards?: PortForwardTable;
  /** Register the TCP translator (default true; `--no-tcp` clears it). */
  tcp?: boolean;
  /** Register the UDP translator (default true; `--no-udp` clears it). */
  udp?: boolean;
  /** Maximum flows per protocol (default 16384). */
  maxFlows?: number;
  /** Largest window each TCP connection advertises to the guest (default 4 MiB). */
  tcpBufferSize?: number;
  /** Opens the TCP translator's host connections and `-t` listeners (default: helper sockets on `loop`). */
  tcpHost?: HostTcp;
  /** The daemon's event loop: runs the TCP host sockets and ends each batch with a flush. */
  loop?: EventLoop;
  /** Follows the UDP translator's sockets (the daemon's event loop; default its own). */
  udpWatcher?: UdpSocketWatcher;
  /** Called when a translator arms a timer earlier than the stack's last nextTimerAt(). */
  onTimersChanged?: () => void;
  /** Ports never forwarded by "all" specs (default: the host's, see {@link hostEphemeralRange}). */
  ephemeral?: PortRange;
  /**
   * Most listening sockets to open (default: what the file descriptor limit leaves,
   * see {@link listenerBudget}); `all` forwards beyond it are skipped with a warning,
   * explicit ones fail.
   */
  maxListeners?: number;
  /** `--freebind` was given: TCP listeners have it (see setListenFreebind); UDP ones do not. */
  freebind?: boolean;
  logger?: Logger;
}

/** An explicit `-t`/`-u` forward could not be listened on (passt exits then too). */
export class ForwardSetupError extends Error {
  override name = "ForwardSetupError";
}

/** What {@link startForwarding} set up. */
export interface Forwarding {
  readonly rules: ForwardRules;
  readonly tcp: TcpTranslator | null;
  readonly udp: UdpTranslator | null;
  /** Number of host ports listened on (TCP, UDP). */
  readonly listening: { tcp: number; udp: number };
  /** Closes the listeners and every host socket. */
  close(): void;
}

/**
 * The host's ephemeral port range (never forwarded by `all`, as in passt), or
 * {@link DEFAULT_EPHEMERAL} when it cannot be read.
 */
export function hostEphemeralRange(
  read: (path: string) => string | null = readKernelFile,
): PortRange {
  let text: string | null = null;
  try {
    text = read(EPHEMERAL_RANGE_PATH);
  } catch {
    // Unreadable: the default below.
  }
  const match = text === null ? null : /^\s*([0-9]+)\s+([0-9]+)\s*$/.exec(text);
  if (match === null) return DEFAULT_EPHEMERAL;
  const first = Number(match[1]);
  const last = Number(match[2]);
  if (first < MIN_PORT || last > MAX_PORT || last < first) return DEFAULT_EPHEMERAL;
  return { first, last };
}

/** The soft limit on open files of this process (/proc/self/limits), or null if unknown. */
export function openFileLimit(
  read: (path: string) => string | null = readKernelFile,
): number | null {
  let text: string | null = null;
  try {
    text = read("/proc/self/limits");
  } catch {
    return null;
  }
  const match = text === null ? null : /^Max open files\s+([0-9]+|unlimited)\s/m.exec(text);
  if (match === null || match[1] === "unlimited") return null;
  return Number(match[1]);
}

/**
 * How many listening sockets the forwards may take: the open-file limit minus the
 * descriptors open now and {@link FDS_KEPT_FREE}; unbounded when the limit is unknown.
 */
export function listenerBudget(
  limit: number | null = openFileLimit(),
  open: number = openFdCount(),
): number {
  return limit === null ? Infinity : Math.max(0, limit - open - FDS_KEPT_FREE);
}

/** One host port to listen on and the guest port (and target address) it maps to. */
export interface ExpandedForward {
  bind: string | null;
  bindInterface: string | null;
  host: number;
  guest: number;
  /** The spec's target address for this port; null = the guest's own address. */
  target: string | null;
}

/**
 * Host ports (and the guest port each maps to) that one spec forwards, in ascending
 * order (`all`: every port outside `ephemeral` and the exclusions).
 */
export function expandSpec(spec: PortForwardSpec, ephemeral: PortRange): ExpandedForward[] {
  const out: ExpandedForward[] = [];
  const add = (host: number, guest: number, target: string | null) =>
    out.push({ bind: spec.bindAddress, bindInterface: spec.bindInterface, host, guest, target });
  for (const f of spec.forwards) {
    for (let p = f.first; p <= f.last; p++) {
      add(p, f.targetFirst + (p - f.first), f.targetAddress);
    }
  }
  if (spec.allNonEphemeral) {
    for (let p = MIN_PORT; p <= MAX_PORT; p++) {
      const t = targetPort(spec, p, ephemeral);
      if (t !== null) add(p, t, spec.allTargetAddress);
    }
  }
  return out;
}

/** Host ports (and the guest port each maps to) that a whole spec table forwards. */
export function expandForwards(table: PortForwardTable, ephemeral: PortRange): ExpandedForward[] {
  return table.specs.flatMap((spec) => expandSpec(spec, ephemeral));
}

/** `1-3, 7, 9-10` for a sorted list of ports, at most MAX_LISTED_RANGES ranges. */
export function describePorts(ports: readonly number[]): string {
  const ranges: string[] = [];
  let i = 0;
  while (i < ports.length && ranges.length < MAX_LISTED_RANGES) {
    let j = i;
    while (j + 1 < ports.length && ports[j + 1] === ports[j] + 1) j++;
    ranges.push(i === j ? `${ports[i]}` : `${ports[i]}-${ports[j]}`);
    i = j + 1;
  }
  if (i < ports.length) ranges.push(`and ${ports.length - i} more`);
  return ranges.join(", ");
}

/** The errno name of a failed listen (helper, Deno or node:dgram error), else its message. */
function failureReason(error: unknown): string {
  if (error instanceof NativeError) return error.errnoName;
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string" && /^E[A-Z]+$/.test(code)) return code;
  const os = /\(os error ([0-9]+)\)/.exec(error instanceof Error ? error.message : "");
  if (os !== null) return errnoName(Number(os[1]));
  if (error instanceof Deno.errors.AddrInUse) return "EADDRINUSE";
  if (error instanceof Deno.errors.PermissionDenied) return "EACCES";
  return error instanceof Error ? error.message : String(error);
}

/** What an errno name means, for the summary lines. */
const REASON_TEXT: Readonly<Record<string, string>> = {
  EADDRINUSE: "in use",
  EACCES: "not permitted",
  EADDRNOTAVAIL: "address not available on this host",
  EMFILE: "out of file descriptors",
  ENFILE: "out of file descriptors (system-wide)",
};

/** Where one protocol's listeners are opened. */
interface ListenTarget {
  readonly name: "tcp" | "udp";
  /** The short option, for messages (`-t`, `-u`). */
  readonly flag: "-t" | "-u";
  readonly table: PortForwardTable;
  /**
   * Listens on host:port for guest port `guest` (of the guest-side address `target`,
   * null = the guest's own); throws on failure.
   */
  listen(
    host: string,
    port: number,
    guest: number,
    iface: string | null,
    target: string | null,
  ): void;
}

/** Listening sockets still allowed; `exhausted` once the kernel said EMFILE/ENFILE. */
class Budget {
  exhausted = false;
  constructor(public left: number) {}
}

/**
 * Creates the translators, registers them with `stack` and opens the port
 * forwards.
 * @throws ForwardSetupError when an explicit forward cannot be listened on, or an
 *   `all` forward on none of its ports
 */
export function startForwarding(stack: StackLike, o: ForwardingOptions = {}): Forwarding {
  const logger = o.logger ?? defaultLog;
  const rules = stack.forwardRules;
  const common = { maxFlows: o.maxFlows, logger, onTimersChanged: o.onTimersChanged };
  const tcp = o.tcp === false ? null : new TcpTranslator(stack.sender, rules, {
    ...common,
    mtu: stack.plan.mtu || undefined,
    bufferSize: o.tcpBufferSize,
    host: o.tcpHost,
    loop: o.loop,
  });
  const udp = o.udp === false
    ? null
    : new UdpTranslator(stack.sender, rules, { ...common, watcher: o.udpWatcher });
  if (tcp) stack.registerL4(IPPROTO_TCP, tcp);
  if (udp) stack.registerL4(IPPROTO_UDP, udp);
  const close = () => {
    tcp?.close();
    udp?.close();
  };
  const listening = { tcp: 0, udp: 0 };
  const targets: ListenTarget[] = [];
  const candidates = [
    { name: "tcp", flag: "-t", table: o.tcpForwards, translator: tcp },
    { name: "udp", flag: "-u", table: o.udpForwards, translator: udp },
  ] as const;
  for (const { name, flag, table, translator } of candidates) {
    if (!translator || !table) continue;
    const listen: ListenTarget["listen"] = (host, port, guest, iface, to) =>
      void translator.listen(host, port, guest, iface, to);
    targets.push({ name, flag, table, listen });
  }
  const ephemeral = o.ephemeral ?? hostEphemeralRange();
  const budget = new Budget(o.maxListeners ?? listenerBudget());
  try {
    for (const target of targets) warnUnhonoured(target, o, logger);
    // Explicit forwards first (they must all listen), then the best-effort ones, which
    // share what is left evenly (so that -t all leaves room for -u all).
    for (const target of targets) {
      for (const spec of target.table.specs) {
        if (spec.allNonEphemeral) continue;
        const forwards = expandSpec(spec, ephemeral);
        listening[target.name] += openSpec(target, spec, forwards, stack.plan, budget, logger);
      }
    }
    const bestEffort = targets.flatMap((target) =>
      target.table.specs.filter((spec) => spec.allNonEphemeral).map((spec) => ({ target, spec }))
    );
    for (let i = 0; i < bestEffort.length; i++) {
      const { target, spec } = bestEffort[i];
      const granted = budget.exhausted ? 0 : Math.floor(budget.left / (bestEffort.length - i));
      const share = new Budget(granted);
      const forwards = expandSpec(spec, ephemeral);
      listening[target.name] += openSpec(target, spec, forwards, stack.plan, share, logger);
      budget.left -= granted - share.left;
      budget.exhausted ||= share.exhausted;
    }
  } catch (error) {
    close();
    throw error;
  }
  return { rules, tcp, udp, listening, close };
}

/** Warns, once per spec, about what tpasst cannot do as asked. */
function warnUnhonoured(target: ListenTarget, o: ForwardingOptions, logger: Logger): void {
  for (const spec of target.table.specs) {
    if (target.name === "udp" && o.freebind && spec.bindAddress !== null) {
      logger.warn(
        `-u ${spec.text}: --freebind not honoured for UDP (tpasst's UDP sockets do not ` +
          "set IP_FREEBIND): the address must exist on the host",
      );
    }
  }
}

/** The host addresses a spec listens on: its own, or any address of each enabled version. */
function bindAddresses(spec: PortForwardSpec, plan: NetworkPlan): string[] {
  if (spec.bindAddress !== null) return [spec.bindAddress];
  return [...(plan.ipv6 ? ["::"] : []), ...(plan.ipv4 ? ["0.0.0.0"] : [])];
}

/**
 * Opens the listeners of one spec; returns how many host ports listen.
 * @throws ForwardSetupError (see {@link startForwarding})
 */
function openSpec(
  target: ListenTarget,
  spec: PortForwardSpec,
  forwards: readonly ExpandedForward[],
  plan: NetworkPlan,
  budget: Budget,
  logger: Logger,
): number {
  const what = `${target.flag} ${spec.text}`;
  const hosts = bindAddresses(spec, plan);
  const skipped = new Map<string, number[]>();
  const outOfDescriptors: number[] = [];
  let firstFailure = "";
  let bound = 0;
  for (const f of forwards) {
    if (budget.left <= 0) {
      if (!spec.allNonEphemeral) {
        throw new ForwardSetupError(
          `${what}: cannot listen on port ${f.host}: no file descriptor left`,
        );
      }
      outOfDescriptors.push(f.host);
      continue;
    }
    let any = false;
    let portFailure: { reason: string; text: string } | null = null;
    for (const host of hosts) {
      try {
        target.listen(host, f.host, f.guest, f.bindInterface, f.target);
        budget.left--;
        any = true;
      } catch (error) {
        const reason = failureReason(error);
        // A dual-stack "::" listener already covers IPv4.
        if (host === "0.0.0.0" && any && reason === "EADDRINUSE") continue;
        const text = `${host} port ${f.host}: ${REASON_TEXT[reason] ?? reason}` +
          (reason in REASON_TEXT ? ` (${reason})` : "");
        if (reason === "EMFILE" || reason === "ENFILE") {
          budget.left = 0;
          budget.exhausted = true;
        }
        if (!spec.allNonEphemeral) throw new ForwardSetupError(`${what}: cannot listen on ${text}`);
        portFailure ??= { reason, text };
      }
    }
    if (any) {
      bound++;
    } else if (portFailure !== null) {
      const list = skipped.get(portFailure.reason) ?? [];
      list.push(f.host);
      skipped.set(portFailure.reason, list);
      firstFailure ||= portFailure.text;
    }
  }
  // As passt: "no failures are reported for unavailable ports, unless no ports could be
  // forwarded at all" (only the lack of descriptors is a warning, below).
  if (spec.allNonEphemeral && bound === 0 && firstFailure !== "") {
    throw new ForwardSetupError(`${what}: could not listen on any port (first: ${firstFailure})`);
  }
  if (spec.allNonEphemeral) {
    logger.info(`${what}: listening on ${bound} of ${forwards.length} port(s)`);
    for (const [reason, ports] of skipped) {
      if (reason === "EMFILE" || reason === "ENFILE") continue;
      logger.info(
        `${what}: ${ports.length} port(s) skipped, ${REASON_TEXT[reason] ?? reason}: ` +
          describePorts(ports),
      );
    }
    const emfile = [...(skipped.get("EMFILE") ?? []), ...(skipped.get("ENFILE") ?? [])];
    const unbound = [...emfile, ...outOfDescriptors].sort((a, b) => a - b);
    if (unbound.length > 0) {
      const limit = openFileLimit();
      logger.warn(
        `${what}: ${unbound.length} port(s) not bound: the open file limit` +
          `${limit === null ? "" : ` (${limit})`} leaves no descriptor for them` +
          ` (${FDS_KEPT_FREE} are kept for connections): ${describePorts(unbound)}`,
      );
    }
  }
  if (logger.enabled("debug")) {
    for (const f of spec.forwards) {
      logger.debug(
        `${target.name} forward ${spec.bindAddress ?? "*"}` +
          `${spec.bindInterface ? `%${spec.bindInterface}` : ""}:${rangeText(f.first, f.last)}` +
          ` => ${f.targetAddress ?? "guest"}:` +
          rangeText(f.targetFirst, f.targetFirst + f.last - f.first),
      );
    }
    if (spec.allNonEphemeral) {
      logger.debug(
        `${target.name} forward ${spec.bindAddress ?? "*"}` +
          `${spec.bindInterface ? `%${spec.bindInterface}` : ""}:all => ` +
          `${spec.allTargetAddress ?? "guest"}:same ports` +
          (spec.excluded.length > 0
            ? `, except ${spec.excluded.map((r) => rangeText(r.first, r.last)).join(", ")}`
            : "") +
          " (best effort)",
      );
    }
  }
  return bound;
}

function rangeText(first: number, last: number): string {
  return first === last ? `${first}` : `${first}-${last}`;
}
