/**
 * UDP packet-rate benchmark with a foreign vhost-user frontend: DPDK's testpmd in txonly
 * mode (`--vdev=net_virtio_user0`) sends UDP from the guest's address to the gateway,
 * which the backend maps to the host's loopback, where a sink socket receives it. Runs
 * tpasst (vhost-user) and Debian 13's passt (vhost-user, the reference) alternating, at
 * 64-byte and 1442-byte frames (1400 bytes of UDP payload), and prints datagrams per
 * second delivered to the sink, backend CPU per million datagrams, and the ratios
 * tpasst / passt of the same run. Never passes or fails; a run in which no datagram
 * reached the sink prints n/a and is counted, and the backend is tried again next round.
 *
 * Everything runs inside a network namespace the benchmark creates (a veth pair with
 * both ends inside gives the backends a host interface and a default route): the
 * datagrams only ever reach the namespace's own loopback, and the namespace's
 * /proc/net/snmp counts nothing but them. Needs root, `ip`, `dpdk-testpmd` (Debian's
 * dpdk-dev), `socat`, and bench/fetch_reference_passt.sh for the reference.
 *
 * Options: --seconds N (measured window per run, default 10), --rounds N (default 2),
 * --sizes 64,1442 (frame bytes), --backends tpasst-vhost,passt-vhost, --tpasst-tree DIR
 * (adds backend "tpasst-tree": DIR/bin/tpasst, another checkout of tpasst, e.g. the
 * main branch, measured in the same rounds; its native helper must be built), --packed
 * (testpmd's virtio-user uses packed virtqueues, `packed_vq=1`: VIRTIO_F_RING_PACKED),
 * --perf-record (profiles the backend during the window with `perf record -p` at a
 * fixed rate, and prints its samples per 1000 datagrams: all, the kernel's, and those
 * in the kernel's route lookup and IP ID selection, which a connected socket skips;
 * these machines have no hardware counters, and counts per datagram hold better than
 * rates on a loaded machine).
 *
 * @module
 */

import { REFERENCE_PASST_ROOT, TPASST_BIN } from "../tests/e2e/backends.ts";
import { mean } from "./rounds.ts";
import {
  processCpuSeconds,
  processPeakRssKiB,
  processSchedulerStats,
  type SchedulerStats,
} from "./qemu_process_stats.ts";

const BACKENDS = ["tpasst-vhost", "passt-vhost", "tpasst-tree"] as const;
type Backend = typeof BACKENDS[number];

/** Addresses inside the benchmark's namespace (never routed anywhere: both veth ends are in it). */
const NAMESPACE_HOST_ADDRESS = "10.77.0.2";
const NAMESPACE_GATEWAY = "10.77.0.1";
const NAMESPACE_PREFIX = 24;
/** The backends' own MAC (passt's and tpasst's default), the frames' destination. */
const BACKEND_MAC = "9a:55:9a:55:9a:55";
/** testpmd's port MAC (a locally administered address). */
const FRONTEND_MAC = "52:54:00:12:34:56";
/** UDP ports of the generated datagrams; the sink listens on the destination port. */
const SOURCE_PORT = 40000;
const SINK_PORT = 9;
/** testpmd needs this long to start and negotiate before the measured window opens. */
const WARM_UP_MS = 4_000;
/** Memory testpmd takes without huge pages (MiB). */
const TESTPMD_MEMORY_MIB = 1024;

interface Args {
  seconds: number;
  rounds: number;
  sizes: number[];
  backends: Backend[];
  /** Another tpasst checkout, run as backend "tpasst-tree". */
  tpasstTree: string | null;
  /** testpmd drives packed virtqueues (virtio-user `packed_vq=1`). */
  packed: boolean;
  /** Profile the backend during the window (`perf record`). */
  perfRecord: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    seconds: 10,
    rounds: 2,
    sizes: [64, 1442],
    backends: ["tpasst-vhost", "passt-vhost"],
    tpasstTree: null,
    packed: false,
    perfRecord: false,
  };
  let backendsGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`Option ${argv[i - 1]} needs a value`);
      return v;
    };
    switch (argv[i]) {
      case "--seconds":
        args.seconds = Number(value());
        break;
      case "--rounds":
        args.rounds = Number(value());
        break;
      case "--sizes":
        args.sizes = value().split(",").map(Number);
        break;
      case "--tpasst-tree":
        args.tpasstTree = value();
        break;
      case "--packed":
        args.packed = true;
        break;
      case "--perf-record":
        args.perfRecord = true;
        break;
      case "--backends":
        backendsGiven = true;
        args.backends = value().split(",").map((b) => {
          if (!(BACKENDS as readonly string[]).includes(b)) {
            throw new Error(`Unknown backend ${b}: expected one of ${BACKENDS.join(", ")}`);
          }
          return b as Backend;
        });
        break;
      default:
        throw new Error(`Unknown option ${argv[i]}`);
    }
  }
  if (args.tpasstTree !== null && !backendsGiven) args.backends.push("tpasst-tree");
  if (args.backends.includes("tpasst-tree") && args.tpasstTree === null) {
    throw new Error("Backend tpasst-tree needs --tpasst-tree DIR");
  }
  if (!(args.seconds > 0) || !(args.rounds > 0) || args.sizes.some((s) => !(s >= 60))) {
    throw new Error("--seconds and --rounds must be positive, --sizes at least 60 bytes");
  }
  return args;
}

async function run(command: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${command} ${args.join(" ")} failed: ${text.trim()}`);
  return text;
}

/** Creates the namespace with lo up and a veth pair (both ends inside) carrying the host address and default route. */
async function createNamespace(name: string): Promise<void> {
  await run("ip", ["netns", "add", name]);
  const inside = (...args: string[]) => run("ip", ["netns", "exec", name, "ip", ...args]);
  await inside("link", "set", "lo", "up");
  await inside("link", "add", "bench0", "type", "veth", "peer", "name", "bench1");
  await inside("link", "set", "bench0", "up");
  await inside("link", "set", "bench1", "up");
  await inside("addr", "add", `${NAMESPACE_HOST_ADDRESS}/${NAMESPACE_PREFIX}`, "dev", "bench0");
  await inside("route", "add", "default", "via", NAMESPACE_GATEWAY);
}

/** The namespace's UDP counters (/proc/net/snmp). */
async function udpCounters(namespace: string): Promise<{ delivered: number; noPort: number }> {
  const text = await run("ip", ["netns", "exec", namespace, "cat", "/proc/net/snmp"]);
  const lines = text.split("\n").filter((l) => l.startsWith("Udp:"));
  const names = lines[0].split(/\s+/);
  const values = lines[1].split(/\s+/).map(Number);
  const field = (n: string) => values[names.indexOf(n)];
  // reached a socket: read, or dropped there for a full receive buffer
  return { delivered: field("InDatagrams") + field("RcvbufErrors"), noPort: field("NoPorts") };
}

interface Started {
  readonly child: Deno.ChildProcess;
  readonly socketPath: string;
  /** The backend's stderr so far. */
  log(): string;
  stop(): Promise<void>;
}

function spawn(namespace: string, command: string, args: string[]): Deno.ChildProcess {
  return new Deno.Command("ip", {
    args: ["netns", "exec", namespace, command, ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
}

async function stopChild(child: Deno.ChildProcess, signal: Deno.Signal = "SIGTERM"): Promise<void> {
  try {
    child.kill(signal);
  } catch { /* already gone */ }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, 5_000);
  await child.status;
  clearTimeout(timer);
}

async function startBackend(
  namespace: string,
  backend: Backend,
  dir: string,
  tpasstTree: string | null,
): Promise<Started> {
  const socketPath = `${dir}/${backend}.sock`;
  let child: Deno.ChildProcess;
  if (backend === "tpasst-vhost" || backend === "tpasst-tree") {
    const bin = backend === "tpasst-tree" ? `${tpasstTree}/bin/tpasst` : TPASST_BIN;
    child = spawn(namespace, bin, [
      "--vhost-user",
      "-f",
      "-s",
      socketPath,
      ...(Deno.env.get("TPASST_BENCH_DEBUG") ? ["-d"] : []),
    ]);
  } else {
    const libs = `${REFERENCE_PASST_ROOT}usr/lib/x86_64-linux-gnu`;
    const passt = `${REFERENCE_PASST_ROOT}usr/bin/passt`;
    await Deno.stat(passt).catch(() => {
      throw new Error(`Debian 13's passt is not unpacked: run bench/fetch_reference_passt.sh`);
    });
    child = spawn(namespace, `${libs}/ld-linux-x86-64.so.2`, [
      "--library-path",
      libs,
      passt,
      "--vhost-user",
      "-f",
      "-e",
      "-s",
      socketPath,
    ]);
  }
  const backendLog: string[] = [];
  (async () => {
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) {
      backendLog.push(text);
      if (Deno.env.get("TPASST_BENCH_VERBOSE")) console.error(`[${backend}] ${text.trimEnd()}`);
    }
  })().catch(() => {});
  const deadline = performance.now() + 15_000;
  for (;;) {
    try {
      await Deno.lstat(socketPath);
      break;
    } catch {
      if (performance.now() > deadline) {
        await stopChild(child);
        throw new Error(`${backend} did not create ${socketPath}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return { child, socketPath, log: () => backendLog.join(""), stop: () => stopChild(child) };
}

/** One measured run. */
interface RunResult {
  readonly round: number;
  readonly pps: number;
  readonly cpuSecondsPerMillion: number;
  readonly peakRssMiB: number;
  /** Share of the window the backend's threads ran, summed (1 = one CPU all the time). */
  readonly runShare: number;
  /** Share of the window the backend's threads waited for a CPU while runnable. */
  readonly waitShare: number;
  /** Times the backend's threads went to sleep, per 1000 datagrams. */
  readonly sleepsPerThousand: number;
  /** Share of the window testpmd's threads waited for a CPU (its busy-polling core shared). */
  readonly generatorWaitShare: number;
  /** With --perf-record: the backend's profile samples per 1000 datagrams. */
  readonly samples: SampleCounts | null;
}

/** Profile samples of the backend per 1000 datagrams, by where they fell. */
interface SampleCounts {
  readonly all: number;
  readonly kernel: number;
  /** The kernel's route lookup for an unconnected send (fib_*, ip_route_output*...). */
  readonly route: number;
  /** IPv4 ID selection (__ip_select_ident and its hash). */
  readonly ident: number;
}

/** Profiling rate of --perf-record, samples per second (the software cpu-clock event). */
const PERF_FREQUENCY = 2000;
/** Kernel symbols of the route lookup a connected UDP socket does not repeat per datagram. */
const ROUTE_SYMBOL =
  /^(fib_\w+|ip_route_output\w*|__ip_route_output\w*|ip_route_connect\w*|xfrm_lookup\w*|ipv4_dst_check|dst_release|fib4_rule_action|__fib_lookup|l3mdev_\w+)$/;
/** Kernel symbols of the IPv4 ID selection (a connected socket counts per socket instead). */
const IDENT_SYMBOL = /^(__ip_select_ident|ip_idents_reserve|siphash\w*)$/;

/** Starts `perf record` on `pid`; stop() ends it and sums the profile per 1000 datagrams. */
function recordProfile(pid: number, file: string) {
  const child = new Deno.Command("perf", {
    args: ["record", "-F", String(PERF_FREQUENCY), "-o", file, "-p", String(pid)],
    stdout: "null",
    stderr: "null",
  }).spawn();
  return {
    async stop(datagrams: number): Promise<SampleCounts> {
      child.kill("SIGINT");
      await child.status;
      const report = await new Deno.Command("perf", {
        args: ["report", "-i", file, "--stdio", "-n", "--sort", "sym", "-g", "none"],
        stdout: "piped",
        stderr: "null",
      }).output();
      const counts = { all: 0, kernel: 0, route: 0, ident: 0 };
      // Lines: "   12.34%   1234  [k] symbol".
      for (const line of new TextDecoder().decode(report.stdout).split("\n")) {
        const m = line.match(/^\s*[0-9.]+%\s+(\d+)\s+\[(.)\]\s+(\S+)/);
        if (m === null) continue;
        const n = Number(m[1]);
        counts.all += n;
        if (m[2] !== "k") continue;
        counts.kernel += n;
        if (ROUTE_SYMBOL.test(m[3])) counts.route += n;
        if (IDENT_SYMBOL.test(m[3])) counts.ident += n;
      }
      const perThousand = 1000 / datagrams;
      return {
        all: counts.all * perThousand,
        kernel: counts.kernel * perThousand,
        route: counts.route * perThousand,
        ident: counts.ident * perThousand,
      };
    },
  };
}

async function measure(
  namespace: string,
  backend: Backend,
  frameBytes: number,
  seconds: number,
  dir: string,
  tpasstTree: string | null,
  packed: boolean,
  perfRecord: boolean,
): Promise<Omit<RunResult, "round">> {
  const sink = spawn(namespace, "socat", [
    "-u",
    `UDP4-RECV:${SINK_PORT},bind=127.0.0.1`,
    "/dev/null",
  ]);
  sink.stderr.pipeTo(new WritableStream()).catch(() => {});
  const started = await startBackend(namespace, backend, dir, tpasstTree);
  const pid = started.child.pid;
  const testpmd = spawn(namespace, "dpdk-testpmd", [
    "-l",
    "0-1",
    "--no-pci",
    "--no-huge",
    "-m",
    `${TESTPMD_MEMORY_MIB}`,
    "--file-prefix",
    `tpasst-bench-${Deno.pid}`,
    `--vdev=net_virtio_user0,path=${started.socketPath},queues=1,mac=${FRONTEND_MAC}${
      packed ? ",packed_vq=1" : ""
    }`,
    "--",
    "--forward-mode=txonly",
    `--tx-ip=${NAMESPACE_HOST_ADDRESS},${NAMESPACE_GATEWAY}`,
    `--tx-udp=${SOURCE_PORT},${SINK_PORT}`,
    `--eth-peer=0,${BACKEND_MAC}`,
    `--txpkts=${frameBytes}`,
    "--nb-cores=1",
    "--auto-start",
    // With a stats period testpmd runs until a signal; without one it waits for a
    // key press and, its stdin being /dev/null, would stop at once.
    "--stats-period",
    "1",
  ]);
  const testpmdLog: string[] = [];
  (async () => {
    for await (const text of testpmd.stderr.pipeThrough(new TextDecoderStream())) {
      testpmdLog.push(text);
      if (Deno.env.get("TPASST_BENCH_VERBOSE")) console.error(`[testpmd] ${text.trimEnd()}`);
    }
  })().catch(() => {});
  try {
    await new Promise((r) => setTimeout(r, WARM_UP_MS));
    const count0 = await udpCounters(namespace);
    const cpu0 = processCpuSeconds(pid) ?? 0;
    const sched0 = processSchedulerStats(pid);
    const generator0 = processSchedulerStats(testpmd.pid);
    const profile = perfRecord ? recordProfile(pid, `${dir}/${backend}-${frameBytes}.data`) : null;
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const count1 = await udpCounters(namespace);
    const cpu1 = processCpuSeconds(pid) ?? cpu0;
    const sched1 = processSchedulerStats(pid);
    const generator1 = processSchedulerStats(testpmd.pid);
    const elapsed = (performance.now() - t0) / 1000;
    const delivered = count1.delivered - count0.delivered;
    const samples = profile === null ? null : await profile.stop(Math.max(delivered, 1));
    if (delivered <= 0) {
      throw new Error(
        `no datagram reached the sink (${
          count1.noPort - count0.noPort
        } to a port without a socket); backend said: ${started.log().slice(-600)}; testpmd said: ${
          testpmdLog.join("").slice(-300)
        }`,
      );
    }
    return {
      pps: delivered / elapsed,
      cpuSecondsPerMillion: (cpu1 - cpu0) / (delivered / 1e6),
      peakRssMiB: (processPeakRssKiB(pid) ?? 0) / 1024,
      ...schedulerShares(sched0, sched1, elapsed, delivered),
      generatorWaitShare: generator0 && generator1
        ? (generator1.waitSeconds - generator0.waitSeconds) / elapsed
        : NaN,
      samples,
    };
  } finally {
    await stopChild(testpmd, "SIGINT");
    await started.stop();
    await stopChild(sink);
  }
}

function schedulerShares(
  before: SchedulerStats | null,
  after: SchedulerStats | null,
  seconds: number,
  datagrams: number,
): Pick<RunResult, "runShare" | "waitShare" | "sleepsPerThousand"> {
  if (before === null || after === null) {
    return { runShare: NaN, waitShare: NaN, sleepsPerThousand: NaN };
  }
  return {
    runShare: (after.runSeconds - before.runSeconds) / seconds,
    waitShare: (after.waitSeconds - before.waitSeconds) / seconds,
    sleepsPerThousand: (after.sleeps - before.sleeps) / (datagrams / 1000),
  };
}

function describeSamples(s: SampleCounts): string {
  return `profile samples per 1000 datagrams: ${s.all.toFixed(2)}, kernel ${
    s.kernel.toFixed(2)
  }, route lookup ${s.route.toFixed(3)}, IP ID ${s.ident.toFixed(3)}`;
}

async function main(): Promise<void> {
  const args = parseArgs(Deno.args);
  const namespace = `tpasst-bench-${Deno.pid}`;
  const dir = await Deno.makeTempDir({ prefix: "tpasst-testpmd-" });
  await Deno.chmod(dir, 0o777); // passt started as root binds its socket as "nobody"
  await createNamespace(namespace);
  console.log(
    `testpmd UDP benchmark: ${args.backends.join(", ")}; frames ${
      args.sizes.join(", ")
    } B; ${args.rounds} round(s) of ${args.seconds} s; namespace ${namespace}`,
  );
  const results = new Map<string, RunResult[]>();
  /** Runs without a datagram in the window, by backend and size (each is tried every round). */
  const failures = new Map<string, number>();
  try {
    for (let round = 1; round <= args.rounds; round++) {
      for (const size of args.sizes) {
        for (const backend of args.backends) {
          const key = `${backend} ${size}`;
          try {
            const r = {
              round,
              ...await measure(
                namespace,
                backend,
                size,
                args.seconds,
                dir,
                args.tpasstTree,
                args.packed,
                args.perfRecord,
              ),
            };
            results.set(key, [...(results.get(key) ?? []), r]);
            console.log(
              `round ${round} ${backend} ${size} B: ${(r.pps / 1000).toFixed(1)} kpps, ${
                r.cpuSecondsPerMillion.toFixed(2)
              } CPU s per million, peak RSS ${r.peakRssMiB.toFixed(1)} MiB; threads ran ${
                (r.runShare * 100).toFixed(0)
              }% and waited for a CPU ${(r.waitShare * 100).toFixed(0)}% of the window, ${
                r.sleepsPerThousand.toFixed(1)
              } sleeps per 1000 datagrams; testpmd waited for a CPU ${
                (r.generatorWaitShare * 100).toFixed(0)
              }%${r.samples === null ? "" : `; ${describeSamples(r.samples)}`}`,
            );
          } catch (error) {
            failures.set(key, (failures.get(key) ?? 0) + 1);
            if (Deno.env.get("TPASST_BENCH_VERBOSE")) console.error((error as Error).message);
            const reason = String((error as Error).message).split("\n")[0];
            console.log(`round ${round} ${backend} ${size} B: n/a (${reason})`);
          }
        }
      }
    }
  } finally {
    await run("ip", ["netns", "del", namespace]).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  console.log("");
  console.log("backend       frame B   kpps   CPU s/M datagrams   peak RSS MiB   failed runs");
  for (const size of args.sizes) {
    for (const backend of args.backends) {
      const runs = results.get(`${backend} ${size}`);
      const failed = `${failures.get(`${backend} ${size}`) ?? 0} of ${args.rounds}`;
      if (!runs) {
        console.log(
          `${backend.padEnd(13)} ${String(size).padStart(7)}   n/a ${failed.padStart(48)}`,
        );
        continue;
      }
      console.log(
        `${backend.padEnd(13)} ${String(size).padStart(7)} ${
          (mean(runs.map((r) => r.pps)) / 1000).toFixed(1).padStart(6)
        } ${mean(runs.map((r) => r.cpuSecondsPerMillion)).toFixed(2).padStart(19)} ${
          Math.max(...runs.map((r) => r.peakRssMiB)).toFixed(1).padStart(14)
        } ${failed.padStart(13)}`,
      );
    }
    const mine = results.get(`tpasst-vhost ${size}`);
    const tree = results.get(`tpasst-tree ${size}`);
    if (mine && tree) {
      const profiled = (runs: RunResult[]) => runs.flatMap((r) => r.samples ? [r.samples] : []);
      const meanSamples = (runs: RunResult[], pick: (s: SampleCounts) => number) =>
        mean(profiled(runs).map(pick));
      console.log(
        `  ratio tpasst-vhost / tpasst-tree at ${size} B: ${
          (mean(mine.map((r) => r.pps)) / mean(tree.map((r) => r.pps))).toFixed(2)
        }x packet rate, ${
          (mean(mine.map((r) => r.cpuSecondsPerMillion)) /
            mean(tree.map((r) => r.cpuSecondsPerMillion))).toFixed(2)
        }x CPU per datagram${
          profiled(mine).length && profiled(tree).length
            ? `, ${
              (meanSamples(mine, (s) => s.all) / meanSamples(tree, (s) => s.all)).toFixed(2)
            }x profile samples per datagram (kernel ${
              (meanSamples(mine, (s) => s.kernel) / meanSamples(tree, (s) => s.kernel)).toFixed(2)
            }x)`
            : ""
        }`,
      );
    }
    const reference = results.get(`passt-vhost ${size}`);
    for (const backend of ["tpasst-vhost", "tpasst-tree"] as const) {
      const ours = results.get(`${backend} ${size}`);
      if (!ours || !reference) continue;
      // Rounds in which both ran, paired: the machine's load changes from round to round.
      const perRound = ours.flatMap((r) => {
        const same = reference.find((p) => p.round === r.round);
        return same ? [r.pps / same.pps] : [];
      });
      console.log(
        `  ratio ${backend} / passt at ${size} B: ${
          (mean(ours.map((r) => r.pps)) / mean(reference.map((r) => r.pps))).toFixed(2)
        }x packet rate (per round: ${perRound.map((r) => r.toFixed(2)).join(" ")}), ${
          (mean(ours.map((r) => r.cpuSecondsPerMillion)) /
            mean(reference.map((r) => r.cpuSecondsPerMillion))).toFixed(2)
        }x CPU per datagram`,
      );
    }
  }
}

if (import.meta.main) {
  await main();
}
