/**
 * The network backends the end-to-end tests and the benchmark run the guest against:
 * the references (QEMU's slirp, Debian 12's passt in stream mode, Debian 13's passt with
 * vhost-user) and tpasst (vhost-user and stream). Starting one gives the QEMU netdev to use, the process whose CPU and
 * memory count as the backend's, and the guest-side addresses that reach the host.
 *
 * @module
 */

import type { Netdev, PortForward } from "./qemu.ts";
import { pingUnavailableReason } from "./ping_sockets.ts";
import { STATS_JSON_PREFIX } from "../../src/daemon/stats.ts";

/** Every backend the scenarios know. */
export const BACKEND_KINDS = [
  "tpasst-vhost",
  "passt-vhost",
  "tpasst-stream",
  "passt",
  "slirp",
] as const;

/** One of {@link BACKEND_KINDS}. */
export type BackendKind = typeof BACKEND_KINDS[number];

/**
 * Debian 13's passt (2025, with vhost-user), unpacked with its own glibc by
 * bench/fetch_reference_passt.sh: never installed, run through that glibc's loader.
 */
export const REFERENCE_PASST_ROOT =
  new URL("../../tests/e2e/.cache/passt-trixie/root/", import.meta.url)
    .pathname;
const REFERENCE_PASST_LIBS = `${REFERENCE_PASST_ROOT}usr/lib/x86_64-linux-gnu`;
const REFERENCE_PASST_LOADER = `${REFERENCE_PASST_LIBS}/ld-linux-x86-64.so.2`;
const REFERENCE_PASST_BIN = `${REFERENCE_PASST_ROOT}usr/bin/passt`;

/** Whether a passt backend runs as "nobody" when started as root (both Debian builds do). */
function isPasst(kind: BackendKind): boolean {
  return kind === "passt" || kind === "passt-vhost";
}

/** Path of the tpasst launcher. */
export const TPASST_BIN = new URL("../../bin/tpasst", import.meta.url).pathname;

/** What a backend can do on this kind of host (decides which scenarios run). */
export interface BackendCapabilities {
  /** Answers ICMP echo to the gateway (passt/tpasst need ping sockets: ping_group_range). */
  readonly pingGateway: boolean;
  /** Guest-side IPv6 address that reaches the host's ::1 (null: not available). */
  readonly hostLoopback6: string | null;
  /** Guest-side IPv4 address that reaches the host's own address (`--map-guest-addr`). */
  readonly mapGuestAddr4: string | null;
  /** Has a DHCPv6 server (slirp has none). */
  readonly dhcpv6: boolean;
}

/** A started backend. */
export interface StartedBackend {
  readonly kind: BackendKind;
  /** How QEMU connects to it. */
  readonly netdev: Netdev;
  /** Process whose CPU/RSS is the backend's; null = QEMU itself (slirp runs inside QEMU). */
  readonly pid: number | null;
  /** Guest-side IPv4 address that reaches the host's 127.0.0.1 (known before DHCP). */
  readonly hostLoopback4: string;
  readonly capabilities: BackendCapabilities;
  /** Stops the backend and removes its socket directory. */
  stop(): Promise<void>;
  /** Sends SIGKILL now without waiting (for process exit handlers). */
  abort(): void;
  /** The backend's own output so far (for error messages). */
  output(): string;
  /** Resolves with the backend process's exit status (null: slirp, inside QEMU). */
  readonly status: Promise<Deno.CommandStatus> | null;
  /** The command line the backend was started with (empty: slirp, inside QEMU). */
  readonly command: readonly string[];
}

/** Options for {@link startBackend}. */
export interface BackendOptions {
  /** Host→guest port forwards (bound on 127.0.0.1). */
  readonly forwards: readonly PortForward[];
  /** tpasst vhost-user only: virtio-net device options, e.g. `mrg_rxbuf=off`. */
  readonly deviceOptions?: string;
  /** vhost-user: queue pairs QEMU sets up (`queues=N`, `mq=on`; default 1). */
  readonly queues?: number;
  /** Listen at this socket path (kept on stop) instead of one in a fresh temp directory. */
  readonly socketPath?: string;
  /** QEMU reconnects (`reconnect=1`) when the backend goes away (see qemu.ts). */
  readonly reconnect?: boolean;
  /** tpasst/passt: capture the guest's frames to this pcap file (`-p`). */
  readonly pcapPath?: string;
  /** tpasst/passt: exit when the first frontend disconnects (`--one-off`). */
  readonly oneOff?: boolean;
  /** tpasst: DNS servers announced by DHCP/DHCPv6/NDP (`-D`; default: none announced). */
  readonly dnsServers?: readonly string[];
  /** tpasst: `--map-guest-addr` for IPv4. */
  readonly mapGuestAddr4?: string;
  /** tpasst: more daemon options, appended (e.g. `-d`, `-l FILE`, `--migrate-no-linger`). */
  readonly extraArgs?: readonly string[];
  /** tpasst: a command line it runs under (e.g. setpriv dropping a capability). */
  readonly wrapper?: readonly string[];
  /** tpasst: the launcher to run (another checkout's bin/tpasst; {@link TPASST_BIN} by default). */
  readonly tpasstBin?: string;
}

/** slirp's fixed addresses (QEMU docs, "-netdev user": net 10.0.2.0/24, host .2). */
const SLIRP_HOST4 = "10.0.2.2";
const SLIRP_HOST6 = "fec0::2";
/** Group passt drops to when started as root. */
export const NOBODY_GID = 65534;
/** Characters of a backend's output kept (a statistics dump fits). */
const OUTPUT_KEPT = 65536;
/** How long a daemon may take to create its socket. */
const SOCKET_WAIT_MS = 15_000;

/**
 * Whether `kind` can answer the guest's pings on this host: slirp always (it answers
 * itself); passt (as "nobody") and tpasst (as our group) need ICMP echo sockets, which
 * net.ipv4.ping_group_range may forbid; as root the range is opened for the test
 * process (ping_sockets.ts). Returns null or the reason why not.
 */
export function pingGatewayUnavailable(kind: BackendKind): string | null {
  if (kind === "slirp") return null;
  return pingUnavailableReason(isPasst(kind) ? NOBODY_GID : Deno.gid() ?? 0, kind);
}

/**
 * Whether `kind` is known not to do what TCP connection-end phase `phase` checks (see
 * scenario.ts: RST each way, a refused connect, half-close each way). Returns null or
 * the reason why not; other phases always get null.
 */
export function tcpEndUnsupported(kind: BackendKind, phase: string): string | null {
  return TCP_END_GAPS[kind]?.[phase] ?? null;
}

/** What the reference backends were seen to do instead (one guest boot each, tried). */
const TCP_END_GAPS: Partial<Record<BackendKind, Record<string, string>>> = {
  passt: {
    "tcp-rst-out":
      "Debian's passt (2023) closes the host socket with a FIN when the guest resets: the host peer reads EOF",
    "tcp-refused":
      "Debian's passt (2023) does not answer a SYN to a closed host port: the guest's connect times out",
    "tcp-half-close":
      "after the guest's FIN, Debian's passt (2023) passes the host's reply but not the host's FIN: the guest's read times out",
  },
  slirp: {
    "tcp-rst-out":
      "slirp closes the host socket with a FIN when the guest resets: the host peer reads EOF",
  },
};

/** The last line of tpasst's vhost-user start-up banner (after it: what the daemon logged). */
const BANNER_LAST_LINE = /^\(size=.*must equal the guest RAM.*\)$/m;
/** How long a failure report waits for the statistics a SIGUSR1 asks for. */
const STATS_WAIT_MS = 3_000;

/**
 * For a failing test's message: a tpasst daemon's log after its start-up banner, with a
 * statistics dump (rings, counters per queue pair) asked for by SIGUSR1 first, so that
 * the message shows where frames stopped rather than the banner. Other backends: their
 * whole output.
 */
export async function failureReport(backend: StartedBackend): Promise<string> {
  if (backend.kind.startsWith("tpasst") && backend.pid !== null) {
    const before = backend.output().split(STATS_JSON_PREFIX).length;
    try {
      Deno.kill(backend.pid, "SIGUSR1");
      const deadline = performance.now() + STATS_WAIT_MS;
      while (
        backend.output().split(STATS_JSON_PREFIX).length === before &&
        performance.now() < deadline
      ) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    } catch {
      // the daemon is gone: its output says why
    }
  }
  const output = backend.output();
  const banner = BANNER_LAST_LINE.exec(output);
  return banner === null ? output : output.slice(banner.index + banner[0].length + 1);
}

/** Starts the backend `kind` with `options`. */
export async function startBackend(
  kind: BackendKind,
  options: BackendOptions,
): Promise<StartedBackend> {
  if (kind === "slirp") {
    return {
      kind,
      netdev: { kind: "user", forwards: options.forwards },
      pid: null,
      hostLoopback4: SLIRP_HOST4,
      capabilities: {
        pingGateway: true,
        hostLoopback6: SLIRP_HOST6,
        mapGuestAddr4: null,
        dhcpv6: false,
      },
      stop: () => Promise.resolve(),
      abort: () => {},
      output: () => "",
      status: null,
      command: [],
    };
  }
  const ownDir = options.socketPath === undefined;
  const dir = ownDir ? await Deno.makeTempDir({ prefix: `tpasst-${kind}-` }) : null;
  // passt started as root binds its socket after switching to "nobody".
  if (isPasst(kind) && dir !== null) await Deno.chmod(dir, 0o777);
  const socketPath = options.socketPath ?? `${dir}/backend.sock`;
  const forwardArgs = options.forwards.flatMap((f) => [
    f.protocol === "tcp" ? "-t" : "-u",
    `127.0.0.1/${f.hostPort}:${f.guestPort}`,
  ]);
  const hostRoutes = await hostDefaultGateways();
  let command: string;
  let args: string[];
  if (kind === "passt") {
    // -f: foreground (stays our child), -e: log to stderr. No DNS servers via DHCP/NDP:
    // the host's resolver is not on loopback and the guest must never query it.
    command = "passt";
    args = ["-f", "-e", "-s", socketPath, "--no-dhcp-dns", "--no-dhcp-search", ...forwardArgs];
  } else if (kind === "passt-vhost") {
    try {
      await Deno.stat(REFERENCE_PASST_BIN);
    } catch {
      throw new Error(
        `Debian 13's passt is not unpacked at ${REFERENCE_PASST_ROOT}: run bench/fetch_reference_passt.sh`,
      );
    }
    command = REFERENCE_PASST_LOADER;
    args = [
      "--library-path",
      REFERENCE_PASST_LIBS,
      REFERENCE_PASST_BIN,
      "--vhost-user",
      "-f",
      "-e",
      "-s",
      socketPath,
      "--no-dhcp-dns",
      "--no-dhcp-search",
      ...forwardArgs,
    ];
  } else {
    command = options.tpasstBin ?? TPASST_BIN;
    const dns = options.dnsServers ?? [];
    args = [
      "-f",
      ...(kind === "tpasst-vhost" ? ["--vhost-user"] : []),
      "-s",
      socketPath,
      ...(dns.length > 0 ? dns.flatMap((d) => ["-D", d]) : ["--no-dhcp-dns"]),
      "--no-dhcp-search",
      ...(options.mapGuestAddr4 ? ["--map-guest-addr", options.mapGuestAddr4] : []),
      ...forwardArgs,
      ...(options.extraArgs ?? []),
    ];
  }
  if (options.pcapPath) args.push("-p", options.pcapPath);
  if (options.oneOff) args.push("--one-off");
  const wrapper = isPasst(kind) ? [] : options.wrapper ?? [];
  if (wrapper.length > 0) {
    args = [...wrapper.slice(1), command, ...args];
    command = wrapper[0];
  }
  const child = new Deno.Command(command, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let log = "";
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      log = (log + text).slice(-OUTPUT_KEPT);
    }
  };
  drain(child.stdout).catch(() => {});
  drain(child.stderr).catch(() => {});
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const stop = async () => {
    if (!exited) {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, 3_000);
      await status;
      clearTimeout(timer);
    }
    if (dir !== null) await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const deadline = performance.now() + SOCKET_WAIT_MS;
  while (!(await exists(socketPath))) {
    if (exited || performance.now() > deadline) {
      await stop();
      throw new Error(
        `${kind} (${command} ${args.join(" ")}) did not create ${socketPath}${
          exited ? " and exited" : ` within ${SOCKET_WAIT_MS} ms`
        }; its output:\n${log}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    kind,
    netdev: kind === "tpasst-vhost" || kind === "passt-vhost"
      ? {
        kind: "vhost-user",
        socketPath,
        deviceOptions: options.deviceOptions,
        queues: options.queues,
        reconnect: options.reconnect,
      }
      : { kind: "stream", socketPath, reconnect: options.reconnect },
    pid: child.pid,
    // passt-style "map gateway to host": the host's own default gateways.
    hostLoopback4: hostRoutes.v4 ?? "",
    capabilities: {
      pingGateway: pingGatewayUnavailable(kind) === null,
      hostLoopback6: hostRoutes.v6,
      mapGuestAddr4: isPasst(kind) ? null : options.mapGuestAddr4 ?? null,
      dhcpv6: true,
    },
    status,
    command: [command, ...args],
    stop,
    abort: () => {
      if (exited) return;
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    },
    output: () => log,
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** The host's default IPv4 and IPv6 gateways (passt's guest-visible gateway, mapped to loopback). */
export async function hostDefaultGateways(): Promise<{ v4: string | null; v6: string | null }> {
  const route = async (family: "-4" | "-6") => {
    const out = await new Deno.Command("ip", {
      args: [family, "route", "show", "default"],
      stdout: "piped",
      stderr: "null",
    }).output().catch(() => null);
    const text = out ? new TextDecoder().decode(out.stdout) : "";
    return /default via (\S+)/.exec(text)?.[1] ?? null;
  };
  return { v4: await route("-4"), v6: await route("-6") };
}

/**
 * The host's own global addresses on the interface of its default route: what passt and
 * tpasst give the guest (DHCP, DHCPv6) by default.
 */
export async function hostOwnAddresses(): Promise<{ v4: string | null; v6: string | null }> {
  const run = async (args: string[]) => {
    const out = await new Deno.Command("ip", { args, stdout: "piped", stderr: "null" })
      .output().catch(() => null);
    return out ? new TextDecoder().decode(out.stdout) : "";
  };
  const address = async (family: "-4" | "-6") => {
    const device = /default .*dev (\S+)/.exec(await run([family, "route", "show", "default"]))
      ?.[1];
    if (!device) return null;
    const text = await run([family, "addr", "show", "dev", device, "scope", "global"]);
    return /inet6? ([0-9a-f.:]+)\//.exec(text)?.[1] ?? null;
  };
  return { v4: await address("-4"), v6: await address("-6") };
}
