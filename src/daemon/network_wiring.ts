/**
 * Builds the daemon's network side once per process: the network plan (host
 * discovery with the command line's overrides), the stack behind every frontend
 * with its TCP and UDP translators (DNS forwarding included) and port forwards, the
 * timers that drive them, the optional pcap capture (`--pcap`), the migration
 * controller (vhost-user mode) and the {@link SessionFactory} for the configured
 * mode. The stack survives reconnects; each frontend connection gets a fresh session.
 *
 * @module
 */

import { nativeHostTcp } from "../net/tcp/host_socket.ts";
import { OutputFile } from "../../ffi/output_file.ts";
import { setListenFreebind } from "../../ffi/tcp_socket.ts";
import type { Config } from "../config/config.ts";
import { log } from "../log/logger.ts";
import type { EventLoop } from "../loop/event_loop.ts";
import { forwardingOptionsFromConfig, forwardOptionsFromConfig } from "./forward_options.ts";
import { startForwarding } from "../net/fwd_setup.ts";
import {
  buildNetworkPlan,
  type HostConfigOverrides,
  hostInterfaceExists,
  type HostSources,
  type NetworkPlan,
  realHostSources,
  renderNetworkPlan,
} from "../net/plan/network_plan.ts";
import { pingSocketFactory } from "../net/icmp/ping_echo_socket.ts";
import { NetworkStack } from "../net/stack.ts";
import type { FrameHandler, GuestLink, ScatteredFrame } from "../tap/frame_transport.ts";
import { PcapWriter, withPcap } from "../tap/pcap.ts";
import type { SessionFactory } from "../tap/frontend_session.ts";
import { fileOptionError } from "./file_error.ts";
import { sessionFactoryFor } from "./session_factories.ts";
import { TimerDriver } from "./timer_driver.ts";
import { MigrationController } from "./migration.ts";
import { directRepair, type RepairSwitch } from "../net/tcp/repair.ts";

/**
 * Checks that the interfaces named on the command line exist, as passt does (`-i`:
 * "Invalid interface name", `--outbound-if4/6`: "External interface not usable").
 * @throws Error naming the option and the interface
 */
export function checkNamedInterfaces(
  config: Config,
  exists: (name: string) => boolean = hostInterfaceExists,
): void {
  const named: [string, string | null][] = [
    ["--interface", config.interfaceName],
    ["--outbound-if4", config.ipv4Enabled ? config.ipv4.outboundInterface : null],
    ["--outbound-if6", config.ipv6Enabled ? config.ipv6.outboundInterface : null],
  ];
  for (const [option, name] of named) {
    if (name !== null && !exists(name)) {
      throw new Error(`${option} ${name}: no such network interface on this host`);
    }
  }
}

/**
 * Maps the command line onto the {@link HostConfigOverrides} of the network plan:
 * addresses, gateways, DNS (servers, `--dns-forward`, search list, names), the
 * address mapped to the host's loopback, MAC, MTU and the guest services to leave off. Unset options stay undefined (discovered).
 */
export function hostConfigOverrides(config: Config): HostConfigOverrides {
  const o: HostConfigOverrides = {};
  if (config.interfaceName !== null) o.interface = config.interfaceName;
  if (config.ipv4.address !== null) o.address4 = config.ipv4.address;
  if (config.ipv4.prefixLength !== null) o.prefix4 = config.ipv4.prefixLength;
  if (config.ipv6.address !== null) o.address6 = config.ipv6.address;
  if (config.ipv4.gateway !== null) o.gateway4 = config.ipv4.gateway;
  if (config.ipv6.gateway !== null) o.gateway6 = config.ipv6.gateway;
  if (config.ipv4.dnsForward !== null) o.dnsForward4 = config.ipv4.dnsForward;
  if (config.ipv6.dnsForward !== null) o.dnsForward6 = config.ipv6.dnsForward;
  if (config.ipv4.mapHostLoopback !== null) o.mapHostLoopback4 = config.ipv4.mapHostLoopback;
  if (config.ipv6.mapHostLoopback !== null) o.mapHostLoopback6 = config.ipv6.mapHostLoopback;
  if (config.dns.servers !== null) o.dns = [...config.dns.servers];
  if (config.dns.search !== null) o.search = [...config.dns.search];
  if (config.macAddress !== null) o.ourMac = config.macAddress;
  if (config.mtu !== null) o.mtu = config.mtu;
  if (!config.ipv6Enabled) o.ipv4Only = true;
  if (!config.ipv4Enabled) o.ipv6Only = true;
  if (config.dns.fqdn !== null) o.fqdn = config.dns.fqdn;
  if (config.dns.hostname !== null) o.hostname = config.dns.hostname;
  if (!config.dns.sendServers) o.noDhcpDns = true;
  if (!config.dns.sendSearch) o.noDhcpSearch = true;
  if (!config.protocols.dhcp) o.noDhcp = true;
  if (!config.protocols.ndp) o.noNdp = true;
  if (!config.protocols.dhcpv6) o.noDhcpv6 = true;
  if (!config.protocols.ra) o.noRa = true;
  return o;
}

/**
 * Builds the network plan for `config`: what discovery on the host (read through
 * `sources`) finds, with the command line's overrides applied.
 * @throws RangeError for an override the plan rejects
 */
export function networkPlanFor(
  config: Config,
  sources: HostSources = realHostSources,
): NetworkPlan {
  return buildNetworkPlan(hostConfigOverrides(config), sources);
}

/**
 * Wraps the stack's frame handler so that the timer driver re-arms after every batch
 * of guest frames (they may have started timers, e.g. a TCP retransmission).
 */
function rearmingHandler(inner: FrameHandler, timers: TimerDriver): FrameHandler {
  return {
    handleFrame: (frame: Uint8Array, now: number, info?: number, scattered?: ScatteredFrame) =>
      inner.handleFrame(frame, now, info, scattered),
    acceptsScattered: inner.acceptsScattered,
    endOfBatch(now: number): void {
      inner.endOfBatch(now);
      timers.rearm();
    },
    linkUp(link: GuestLink, now: number): void {
      inner.linkUp(link, now);
      timers.rearm();
    },
    linkDown: (now: number) => inner.linkDown(now),
    frontendGone(now: number): void {
      inner.frontendGone?.(now); // arms every flow's give-up timer
      timers.rearm();
    },
  };
}

/**
 * Wraps the frame handler so that the migration controller sees the rings start
 * before the stack does (a cancelled migration's frozen connections resume first).
 */
function migrationAwareHandler(inner: FrameHandler, migration: MigrationController): FrameHandler {
  return {
    handleFrame: (frame: Uint8Array, now: number, info?: number, scattered?: ScatteredFrame) =>
      inner.handleFrame(frame, now, info, scattered),
    acceptsScattered: inner.acceptsScattered,
    endOfBatch: (now: number) => inner.endOfBatch(now),
    linkUp(link: GuestLink, now: number): void {
      migration.beforeLinkUp(now);
      inner.linkUp(link, now);
    },
    linkDown: (now: number) => inner.linkDown(now),
    frontendGone: (now: number) => inner.frontendGone?.(now),
  };
}

/** How the daemon takes part in vhost-user live migration. */
export interface MigrationWiring {
  /** Switches TCP repair mode: the passt-repair helper server, or directly (default). */
  readonly repair?: RepairSwitch;
  /** Called after a completed migration as source with `--migrate-exit`. */
  readonly onMigratedAway?: () => void;
}

/** The daemon's network side; see the module comment. */
export interface DaemonNetwork {
  /** What the guest is told (addresses, routes, DNS). */
  readonly plan: NetworkPlan;
  /** The stack behind every frontend. */
  readonly stack: NetworkStack;
  /** Serves each frontend connection in the configured mode. */
  readonly sessionFactory: SessionFactory;
  /** Device state in vhost-user migrations (null in stream mode). */
  readonly migration: MigrationController | null;
  /** Stops timers and forwards, closes host connections and the capture file. */
  close(): void;
}

/**
 * Builds the plan, the stack, the translators with their port forwards and the
 * session factory for `config` on `loop`.
 * @throws RangeError for an override the plan rejects, NativeError if the pcap file
 * cannot be opened
 */
export function buildDaemonNetwork(
  config: Config,
  loop: EventLoop,
  wiring: MigrationWiring = {},
): DaemonNetwork {
  checkNamedInterfaces(config);
  const plan = networkPlanFor(config);
  for (const line of renderNetworkPlan(plan)) log.info(line);
  const stack = new NetworkStack(plan, {
    echoSocketFactory: config.protocols.icmp ? pingSocketFactory : undefined,
    fdWatcher: loop,
    forward: forwardOptionsFromConfig(config),
  });
  const timers = new TimerDriver(stack);
  const closers: (() => void)[] = [() => timers.close()];
  const close = () => {
    for (const closer of closers.splice(0).reverse()) {
      try {
        closer();
      } catch (error) {
        log.warn(`Cannot release the network: ${error instanceof Error ? error.message : error}`);
      }
    }
  };
  try {
    const rules = stack.forwardRules;
    // --freebind: every TCP listener of the forwards gets IP_FREEBIND.
    setListenFreebind(config.freebind);
    const forwarding = startForwarding(stack, {
      ...forwardingOptionsFromConfig(config),
      onTimersChanged: () => timers.rearm(),
      tcpHost: nativeHostTcp(loop, {
        address4: rules.outbound4,
        address6: rules.outbound6,
        interface4: rules.outboundIf4,
        interface6: rules.outboundIf6,
      }),
      loop,
      udpWatcher: loop,
    });
    closers.push(() => forwarding.close());
    const { tcp, udp } = forwarding.listening;
    if (tcp + udp > 0) log.info(`Forwarding ${tcp} TCP and ${udp} UDP port(s) to the guest`);

    let handler: FrameHandler = rearmingHandler(stack, timers);
    if (config.pcapFile !== null) {
      let pcapFile: OutputFile;
      try {
        pcapFile = OutputFile.open(config.pcapFile, { append: false });
      } catch (error) {
        throw fileOptionError("pcap", config.pcapFile, "open the capture file", error);
      }
      const pcap = new PcapWriter(pcapFile);
      closers.push(() => pcapFile.close(), () => pcap.flush());
      handler = withPcap(handler, pcap);
      log.info(`Capturing guest frames to ${config.pcapFile}`);
    }
    let migration: MigrationController | null = null;
    if (config.mode === "vhost-user") {
      migration = new MigrationController({
        sender: stack.sender,
        tcp: forwarding.tcp,
        loop,
        repair: wiring.repair ?? directRepair,
        noLinger: config.migration.noLinger,
        onMigratedAway: config.migration.exitAfter ? wiring.onMigratedAway : undefined,
        log,
      });
      handler = migrationAwareHandler(handler, migration);
    }
    timers.rearm();
    return {
      plan,
      stack,
      sessionFactory: sessionFactoryFor(config, handler, migration),
      migration,
      close,
    };
  } catch (error) {
    close();
    throw error;
  }
}
