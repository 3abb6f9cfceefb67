/**
 * Wiring of the translators into a running stack: builds the forwarding rules,
 * creates the TCP and UDP translators, registers them with the stack
 * (`registerL4`) and opens the `-t` / `-u` listeners.
 *
 * @module
 */

import { Errno, NativeError } from "../../ffi/native_error.ts";
import type { HostConnector, HostListen } from "./host_stream.ts";
import type { Config } from "../config/config.ts";
import {
  MAX_PORT,
  MIN_PORT,
  type PortForwardTable,
  type PortRange,
  targetPort,
} from "../config/port_spec.ts";
import { log as defaultLog, type Logger } from "../log/logger.ts";
import { IPPROTO_TCP, IPPROTO_UDP } from "./checksum.ts";
import type { ForwardRules } from "./fwd.ts";
import type { GuestSender } from "./guest_sender.ts";
import type { NetworkPlan } from "./host_config.ts";
import type { L4Handler } from "./l4_handler.ts";
import { TcpTranslator } from "./tcp_translator.ts";
import { type UdpSocketWatcher, UdpTranslator } from "./udp_flow.ts";

/** Most host ports forwarded per protocol; the rest are skipped with a warning. */
export const MAX_FORWARDED_PORTS = 16384;

/** Linux's default ephemeral port range (net.ipv4.ip_local_port_range). */
export const DEFAULT_EPHEMERAL: PortRange = { first: 32768, last: 60999 };

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
  /** Guest→host ring size of each TCP connection (default 256 KiB). */
  tcpBufferSize?: number;
  /** Opens the TCP translator's host connections (default Deno.connect). */
  tcpConnect?: HostConnector;
  /** Opens the TCP translator's `-t` listeners (default Deno.listen). */
  tcpListen?: HostListen;
  /** Follows the UDP translator's sockets (the daemon's event loop; default its own). */
  udpWatcher?: UdpSocketWatcher;
  /** Called when a translator arms a timer earlier than the stack's last nextTimerAt(). */
  onTimersChanged?: () => void;
  /** Ports never forwarded by "all" specs. */
  ephemeral?: PortRange;
  logger?: Logger;
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

/** Maps the parsed command line to {@link ForwardingOptions}. */
export function forwardingOptionsFromConfig(c: Config): ForwardingOptions {
  return {
    tcpForwards: c.tcpForwards,
    udpForwards: c.udpForwards,
    tcp: c.protocols.tcp,
    udp: c.protocols.udp,
  };
}

/** One host port to listen on and the guest port it maps to. */
export interface ExpandedForward {
  bind: string | null;
  bindInterface: string | null;
  host: number;
  guest: number;
}

/**
 * Host ports (and the guest port each maps to) that a spec table forwards, at most
 * `limit` of them; `truncated` tells whether more were asked for.
 */
export function expandForwards(
  table: PortForwardTable,
  ephemeral: PortRange,
  limit = MAX_FORWARDED_PORTS,
): { forwards: ExpandedForward[]; truncated: boolean } {
  const forwards: ExpandedForward[] = [];
  let truncated = false;
  for (const spec of table.specs) {
    const seen = new Set<number>();
    const add = (p: number) => {
      if (seen.has(p)) return;
      const t = targetPort(spec, p, ephemeral);
      if (t === null) return;
      if (forwards.length >= limit) {
        truncated = true;
        return;
      }
      seen.add(p);
      forwards.push({
        bind: spec.bindAddress,
        bindInterface: spec.bindInterface,
        host: p,
        guest: t,
      });
    };
    for (const f of spec.forwards) for (let p = f.first; p <= f.last; p++) add(p);
    if (spec.allNonEphemeral) { for (let p = MIN_PORT; p <= MAX_PORT; p++) add(p); }
  }
  return { forwards, truncated };
}

/** Whether `e` is an "address in use" failure, from Deno or from the helper. */
function isAddressInUse(e: unknown): boolean {
  return e instanceof Deno.errors.AddrInUse ||
    (e instanceof NativeError && e.errno === Errno.EADDRINUSE);
}

/**
 * Creates the translators, registers them with `stack` and opens the port
 * forwards. Listen failures are logged (one summary line per protocol), not thrown.
 */
export function startForwarding(stack: StackLike, o: ForwardingOptions = {}): Forwarding {
  const logger = o.logger ?? defaultLog;
  const rules = stack.forwardRules;
  const common = { maxFlows: o.maxFlows, logger, onTimersChanged: o.onTimersChanged };
  const tcp = o.tcp === false ? null : new TcpTranslator(stack.sender, rules, {
    ...common,
    mtu: stack.plan.mtu || undefined,
    bufferSize: o.tcpBufferSize,
    connect: o.tcpConnect,
    listen: o.tcpListen,
  });
  const udp = o.udp === false
    ? null
    : new UdpTranslator(stack.sender, rules, { ...common, watcher: o.udpWatcher });
  if (tcp) stack.registerL4(IPPROTO_TCP, tcp);
  if (udp) stack.registerL4(IPPROTO_UDP, udp);
  const ephemeral = o.ephemeral ?? DEFAULT_EPHEMERAL;
  const binds = (b: string | null): string[] =>
    b !== null ? [b] : [
      ...(stack.plan.ipv6 ? ["::"] : []),
      ...(stack.plan.ipv4 ? ["0.0.0.0"] : []),
    ];
  const listening = { tcp: 0, udp: 0 };
  if (tcp && o.tcpForwards) {
    const failures: string[] = [];
    const { forwards, truncated } = expandForwards(o.tcpForwards, ephemeral);
    if (truncated) {
      logger.warn(`tcp: more than ${MAX_FORWARDED_PORTS} ports to forward; the rest skipped`);
    }
    for (const f of forwards) {
      let any = false;
      for (const host of binds(f.bind)) {
        try {
          tcp.listen(host, f.host, f.guest, f.bindInterface);
          any = true;
        } catch (e) {
          // A dual-stack "::" listener already covers IPv4.
          if (!(host === "0.0.0.0" && any && isAddressInUse(e))) {
            failures.push(`${host} port ${f.host}: ${(e as Error).message}`);
          }
        }
      }
      if (any) listening.tcp++;
    }
    if (failures.length) {
      logger.warn(
        `tcp: ${failures.length} port forward(s) not listening, first: ${failures[0]}`,
      );
    }
  }
  if (udp && o.udpForwards) {
    const failures: string[] = [];
    const { forwards, truncated } = expandForwards(o.udpForwards, ephemeral);
    if (truncated) {
      logger.warn(`udp: more than ${MAX_FORWARDED_PORTS} ports to forward; the rest skipped`);
    }
    for (const f of forwards) {
      let any = false;
      for (const host of binds(f.bind)) {
        try {
          udp.listen(host, f.host, f.guest, f.bindInterface);
          any = true;
        } catch (e) {
          failures.push(`${host} port ${f.host}: ${(e as Error).message}`);
        }
      }
      if (any) listening.udp++;
    }
    if (failures.length) {
      logger.warn(
        `udp: ${failures.length} port forward(s) not listening, first: ${failures[0]}`,
      );
    }
  }
  return {
    rules,
    tcp,
    udp,
    listening,
    close() {
      tcp?.close();
      udp?.close();
    },
  };
}
