/**
 * The network backends the end-to-end tests and the benchmark run the guest against:
 * the references (QEMU's slirp, Debian's passt in stream mode) and tpasst (vhost-user
 * and stream). Starting one gives the QEMU netdev to use, the process whose CPU and
 * memory count as the backend's, and the guest-side addresses that reach the host.
 *
 * @module
 */

import type { Netdev, PortForward } from "./qemu.ts";

/** Every backend the scenarios know. */
export const BACKEND_KINDS = ["tpasst-vhost", "tpasst-stream", "passt", "slirp"] as const;

/** One of {@link BACKEND_KINDS}. */
export type BackendKind = typeof BACKEND_KINDS[number];

/** Whether tpasst carries guest traffic yet; the integrator flips this to enable its e2e tests. */
export const TPASST_DATAPATH_WIRED = true;

/** Why the tpasst e2e tests are ignored while {@link TPASST_DATAPATH_WIRED} is false. */
export const TPASST_IGNORE_REASON = "tpasst datapath not wired yet";

/**
 * Whether tpasst handles vhost-user rings without MRG_RXBUF (1530-byte RX buffers); the
 * integrator flips this once host→guest traffic works there.
 */
export const TPASST_PLAIN_RINGS_OK = true;

/** Why the plain-rings suite is ignored while {@link TPASST_PLAIN_RINGS_OK} is false. */
export const TPASST_PLAIN_RINGS_REASON =
  "with mrg_rxbuf=off tpasst drops frames larger than the 1530-byte RX buffers, host→guest stalls";

/** Path of the tpasst launcher. */
export const TPASST_BIN = new URL("../../bin/tpasst", import.meta.url).pathname;

/** What a backend can do on this kind of host (decides which scenarios run). */
export interface BackendCapabilities {
  /** Answers ICMP echo to the gateway (passt/tpasst need ping sockets: ping_group_range). */
  readonly pingGateway: boolean;
  /** Guest-side IPv6 address that reaches the host's ::1 (null: not available). */
  readonly hostLoopback6: string | null;
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
}

/** Options for {@link startBackend}. */
export interface BackendOptions {
  /** Host→guest port forwards (bound on 127.0.0.1). */
  readonly forwards: readonly PortForward[];
  /** tpasst only: disable MRG_RXBUF/EVENT_IDX/INDIRECT_DESC on the QEMU side. */
  readonly plainRings?: boolean;
  /** Listen at this socket path (kept on stop) instead of one in a fresh temp directory. */
  readonly socketPath?: string;
  /** vhost-user only: QEMU reconnects (`reconnect=1`) when the backend goes away. */
  readonly reconnect?: boolean;
}

/** slirp's fixed addresses (QEMU docs, "-netdev user": net 10.0.2.0/24, host .2). */
const SLIRP_HOST4 = "10.0.2.2";
const SLIRP_HOST6 = "fec0::2";
/** Group passt drops to when started as root. */
export const NOBODY_GID = 65534;
/** How long a daemon may take to create its socket. */
const SOCKET_WAIT_MS = 15_000;

/**
 * Whether `kind` can answer the guest's ping to its gateway on this host: slirp always
 * (it answers itself); passt (as "nobody") and tpasst (as our group) need ICMP echo
 * sockets, which net.ipv4.ping_group_range may forbid. Returns null or the reason why not.
 */
export function pingGatewayUnavailable(kind: BackendKind): string | null {
  if (kind === "slirp") return null;
  const gid = kind === "passt" ? NOBODY_GID : Deno.gid() ?? 0;
  return pingSocketsAllowed(gid)
    ? null
    : `host net.ipv4.ping_group_range excludes gid ${gid}: ${kind} cannot open ICMP echo sockets`;
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
      capabilities: { pingGateway: true, hostLoopback6: SLIRP_HOST6 },
      stop: () => Promise.resolve(),
      abort: () => {},
      output: () => "",
    };
  }
  const ownDir = options.socketPath === undefined;
  const dir = ownDir ? await Deno.makeTempDir({ prefix: `tpasst-${kind}-` }) : null;
  // passt started as root binds its socket after switching to "nobody".
  if (kind === "passt" && dir !== null) await Deno.chmod(dir, 0o777);
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
    if (Deno.env.get("TPASST_E2E_PCAP")) args.push("-p", Deno.env.get("TPASST_E2E_PCAP")!);
  } else {
    command = TPASST_BIN;
    args = [
      "-f",
      ...(kind === "tpasst-vhost" ? ["--vhost-user"] : []),
      "-s",
      socketPath,
      "--no-dhcp-dns",
      "--no-dhcp-search",
      ...forwardArgs,
    ];
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
      log = (log + text).slice(-8192);
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
    netdev: kind === "tpasst-vhost"
      ? {
        kind: "vhost-user",
        socketPath,
        plainRings: options.plainRings,
        reconnect: options.reconnect,
      }
      : { kind: "stream", socketPath },
    pid: child.pid,
    // passt-style "map gateway to host": the host's own default gateways.
    hostLoopback4: hostRoutes.v4 ?? "",
    capabilities: {
      pingGateway: pingGatewayUnavailable(kind) === null,
      hostLoopback6: hostRoutes.v6,
    },
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

/** Whether ICMP echo ("ping") sockets are allowed for group `gid` (net.ipv4.ping_group_range). */
export function pingSocketsAllowed(gid: number): boolean {
  try {
    const text = Deno.readTextFileSync("/proc/sys/net/ipv4/ping_group_range");
    const [low, high] = text.trim().split(/\s+/).map(Number);
    return low <= gid && gid <= high;
  } catch {
    return false;
  }
}
