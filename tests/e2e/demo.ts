/**
 * `make demo`: boots a throwaway guest against a fresh backend (tpasst over vhost-user by
 * default) and narrates it getting its DHCP lease, pinging the gateway, fetching a page
 * from a server on the host's loopback, answering a host connection on a forwarded port
 * and a short iperf3 run each way. Every command it runs is printed first (`$ …`): the
 * iperf3 server, the backend, QEMU, and the script the guest runs.
 *
 * Usage: deno run -A tests/e2e/demo.ts [--backend tpasst-vhost|tpasst-stream|passt|slirp]
 *        [--verbose]   (also print the guest's serial console)
 *        [--daemon-arg ARG]...   (more tpasst options, e.g. --daemon-arg -d)
 *
 * @module
 */

import { BACKEND_KINDS, type BackendKind, pingGatewayUnavailable } from "./backends.ts";
import { PASST_PING_REASON } from "./e2e_suite.ts";
import { E2eSession } from "./scenario.ts";

const DESCRIPTIONS: Record<BackendKind, string> = {
  "tpasst-vhost": "tpasst over vhost-user (guest rings shared with the daemon)",
  "tpasst-stream": "tpasst over the passt stream socket (-netdev stream)",
  "passt-vhost": "Debian 13's passt over vhost-user (reference; bench/fetch_reference_passt.sh)",
  "passt": "Debian's passt over its stream socket (reference)",
  "slirp": "QEMU's built-in slirp, -netdev user (reference)",
};

/** Characters a shell word may hold unquoted. */
const SHELL_SAFE = /^[A-Za-z0-9_\-./:=,@%+]+$/;

/** `words` as one line a POSIX shell would run as the same command. */
export function shellLine(words: readonly string[]): string {
  return words.map((w) => SHELL_SAFE.test(w) ? w : `'${w.replaceAll("'", `'\\''`)}'`).join(" ");
}

function parseArgs(
  argv: string[],
): { backend: BackendKind; verbose: boolean; daemonArgs: string[] } {
  let backend: BackendKind = "tpasst-vhost";
  let verbose = false;
  const daemonArgs: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--daemon-arg" && i + 1 < argv.length) {
      daemonArgs.push(argv[++i]);
      continue;
    }
    const value = arg.startsWith("--backend=")
      ? arg.slice(10)
      : arg === "--backend"
      ? argv[++i]
      : null;
    if (value !== null) {
      if (!(BACKEND_KINDS as readonly string[]).includes(value ?? "")) {
        throw new Error(`--backend must be one of ${BACKEND_KINDS.join(", ")} (got ${value})`);
      }
      backend = value as BackendKind;
    } else if (arg === "--verbose") {
      verbose = true;
    } else {
      throw new Error(
        `Unknown option ${arg}; usage: demo.ts [--backend KIND] [--verbose] [--daemon-arg ARG]...`,
      );
    }
  }
  return { backend, verbose, daemonArgs };
}

async function main(): Promise<number> {
  const { backend, verbose, daemonArgs } = parseArgs(Deno.args);
  const t0 = performance.now();
  const say = (text: string) =>
    console.log(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(5)} s] ${text}`);
  console.log(`tpasst demo: ${DESCRIPTIONS[backend]}`);
  say("starting the backend, the host's web and iperf3 servers (127.0.0.1), and QEMU (TCG)");
  const pingSkipped = backend === "passt" || backend === "passt-vhost"
    ? PASST_PING_REASON
    : pingGatewayUnavailable(backend);
  const session = await E2eSession.start(backend, {
    phases: pingSkipped
      ? ["dhcp", "http", "tcp-in", "iperf"]
      : ["dhcp", "ping", "http", "tcp-in", "iperf"],
    iperfSeconds: 3,
    onLine: verbose ? (line) => console.log(`        | ${line}`) : undefined,
    backend: daemonArgs.length > 0 ? { extraArgs: daemonArgs } : undefined,
  });
  say(`web server: in this process, http://127.0.0.1:${session.http.port}/hello`);
  if (session.iperf) console.log(`$ ${shellLine(session.iperf.command)}`);
  if (session.backend.command.length > 0) console.log(`$ ${shellLine(session.backend.command)}`);
  console.log(`$ ${shellLine(session.guest.commandLine)}`);
  console.log("the guest runs (fw_cfg opt/tpasst/scenario, from its init):");
  for (const line of session.script.split("\n")) {
    if (line.trim() !== "" && !line.startsWith("#")) console.log(`  guest$ ${line}`);
  }
  let failures = 0;
  const step = async (what: string, run: () => Promise<string>) => {
    try {
      say(`${what}: ${await run()}`);
    } catch (error) {
      failures++;
      say(`${what}: FAILED\n${(error as Error).message}`);
    }
  };
  try {
    await step("guest booted", async () => {
      await session.guest.waitUntil(() => session.guest.bootMs !== null, "boot", 180_000);
      return `userspace after ${session.guest.bootedAtUptime} s of guest uptime`;
    });
    await step("DHCP lease", async () => {
      const ip = await session.result("dhcp-ip", 180_000);
      const mask = await session.result("dhcp-mask", 10_000);
      const router = await session.result("dhcp-router", 10_000);
      const mtu = await session.result("dhcp-mtu", 10_000);
      return `${ip}/${mask}, router ${router}, MTU ${mtu}`;
    });
    if (pingSkipped === null) {
      await step("ping the gateway", () => session.result("ping-gw", 60_000));
    } else {
      say(`ping the gateway: skipped (${pingSkipped})`);
    }
    await step(
      `fetch http://<gateway>:${session.http.port}/hello (the host's 127.0.0.1)`,
      async () => JSON.stringify(await session.result("http-get", 60_000)),
    );
    const tcpForward = session.forwards.find((f) => f.protocol === "tcp")!;
    await step(
      `connect to the forwarded port 127.0.0.1:${tcpForward.hostPort} (-t … → guest port ${tcpForward.guestPort})`,
      async () => `the guest answered ${JSON.stringify((await session.tcpIn).trim())}`,
    );
    await step(
      "iperf3 guest → host",
      async () => `${await session.result("iperf-up-mbps", 120_000)} Mbit/s`,
    );
    await step(
      "iperf3 host → guest",
      async () => `${await session.result("iperf-down-mbps", 120_000)} Mbit/s`,
    );
    await step("guest powers off", async () => {
      const status = await session.guest.waitForDone(60_000);
      await session.guest.waitForExit(30_000);
      return status === 0 ? "clean" : `script exit status ${status}`;
    });
  } finally {
    await session.close();
  }
  say(failures === 0 ? "demo finished" : `demo finished with ${failures} failed step(s)`);
  return failures === 0 ? 0 : 1;
}

if (import.meta.main) {
  Deno.exit(await main());
}
