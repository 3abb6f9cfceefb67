/**
 * Side-by-side QEMU benchmark (`make bench`): iperf3 guest→host and host→guest through
 * tpasst (vhost-user and stream), Debian 13's passt (vhost-user, the reference users
 * would otherwise pick), Debian 12's passt (stream) and QEMU's slirp, alternating
 * backends round by round, each round starting with the next backend. Prints Gbit/s,
 * backend CPU seconds per GB and peak RSS per backend, the ratios tpasst / reference
 * (and tpasst-vhost's to passt-vhost per round), and writes JSON to bench/results/. Never
 * passes or fails: a backend that cannot run prints "n/a (reason)".
 *
 * Options: --seconds N (per direction, default 10), --rounds N (default 2),
 * --warm-up N (seconds of an unmeasured run each direction before the measured ones,
 * every backend alike, default 2; 0: none — tpasst's JIT then compiles its datapath
 * inside the measured seconds, a cost a daemon pays once), --warm-up-runs N (how many
 * such runs each way, default 3: a fresh daemon's first connections still change the
 * shape of objects and deoptimise code, see the README's design note "Counters that
 * never change shape"),
 * --backends a,b,c (default: all four), --tpasst-tree DIR (adds backend "tpasst-tree":
 * DIR/bin/tpasst with vhost-user, another checkout, e.g. the code before a change,
 * in the same alternating rounds), --verbose (serial console), --mtu1500 (every
 * vhost-user guest at MTU 1,500 set by the device, QEMU `host_mtu=1500`; the backends
 * default to tpasst-vhost with its segmentation offloads, "tpasst-vhost-no-offload"
 * with QEMU's host_tso4/6, host_ecn, guest_tso4/6, guest_ecn off, and passt-vhost).
 * Only one direction, with counts per GB instead of rates: bench/datapath_counts.ts.
 *
 * @module
 */

import { BACKEND_KINDS, type BackendKind } from "../tests/e2e/backends.ts";
import { type IperfResult, measureIperf } from "./qemu_iperf.ts";
import { mean, ratioSummary, roundOrder } from "./rounds.ts";

/**
 * A backend of the bench: one of the e2e kinds, another tpasst checkout, or tpasst
 * vhost-user with the device's TCP segmentation offloads turned off.
 */
type BenchBackend = BackendKind | "tpasst-tree" | "tpasst-vhost-no-offload";

/** QEMU virtio-net-pci options of {@link BenchBackend} "tpasst-vhost-no-offload". */
const NO_OFFLOAD_OPTIONS =
  "host_tso4=off,host_tso6=off,host_ecn=off,guest_tso4=off,guest_tso6=off,guest_ecn=off";

/** QEMU virtio-net-pci option of --mtu1500: the device reports MTU 1,500 to the guest. */
const MTU_1500_OPTION = "host_mtu=1500";

interface Args {
  seconds: number;
  warmUpSeconds: number;
  /** Unmeasured runs of {@link warmUpSeconds} each direction. */
  warmUpRuns: number;
  rounds: number;
  backends: BenchBackend[];
  tpasstTree: string | null;
  verbose: boolean;
  mtu1500: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    seconds: 10,
    warmUpSeconds: 2,
    warmUpRuns: 3,
    rounds: 2,
    backends: [...BACKEND_KINDS],
    tpasstTree: null,
    verbose: false,
    mtu1500: false,
  };
  let backendsGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`Option ${argv[i - 1]} needs a value`);
      return v;
    };
    switch (argv[i]) {
      case "--warm-up-runs":
        args.warmUpRuns = Number(value());
        break;
      case "--warm-up":
        args.warmUpSeconds = Number(value());
        break;
      case "--seconds":
        args.seconds = Number(value());
        break;
      case "--rounds":
        args.rounds = Number(value());
        break;
      case "--backends":
        backendsGiven = true;
        args.backends = value().split(",").map((b) => {
          if (
            !(BACKEND_KINDS as readonly string[]).includes(b) && b !== "tpasst-tree" &&
            b !== "tpasst-vhost-no-offload"
          ) {
            throw new Error(
              `Unknown backend ${b}: expected one of ${
                BACKEND_KINDS.join(", ")
              }, tpasst-tree, tpasst-vhost-no-offload`,
            );
          }
          return b as BenchBackend;
        });
        break;
      case "--mtu1500":
        args.mtu1500 = true;
        break;
      case "--tpasst-tree":
        args.tpasstTree = value();
        break;
      case "--verbose":
        args.verbose = true;
        break;
      default:
        throw new Error(`Unknown option ${argv[i]}`);
    }
  }
  if (args.mtu1500 && !backendsGiven) {
    args.backends = ["tpasst-vhost", "tpasst-vhost-no-offload", "passt-vhost"];
  }
  if (args.tpasstTree !== null && !args.backends.includes("tpasst-tree")) {
    args.backends.push("tpasst-tree");
  }
  if (args.backends.includes("tpasst-tree") && args.tpasstTree === null) {
    throw new Error("Backend tpasst-tree needs --tpasst-tree DIR");
  }
  if (!(args.seconds > 0) || !(args.rounds > 0)) {
    throw new Error("--seconds and --rounds must be positive");
  }
  if (!Number.isInteger(args.warmUpSeconds) || args.warmUpSeconds < 0) {
    throw new Error("--warm-up must be a whole number of seconds, 0 or more");
  }
  if (!Number.isInteger(args.warmUpRuns) || args.warmUpRuns < 1) {
    throw new Error("--warm-up-runs must be a whole number, 1 or more");
  }
  return args;
}

/** Per-backend summary over the rounds that worked. */
interface Summary {
  backend: BenchBackend;
  runs: IperfResult[];
  /** The same results by round number, for per-round ratios. */
  byRound: Map<number, IperfResult>;
  failure: string | null;
  upGbps?: number;
  downGbps?: number;
  upCpuPerGB?: number;
  downCpuPerGB?: number;
  peakRssMiB?: number;
  measuredProcess?: string;
}

/**
 * Lines of tpasst-vhost's per-round ratios to passt-vhost (each round's two runs side
 * by side, so a slow phase of the machine cancels out), with their median and mean;
 * none when either did not run.
 */
function perRoundRatios(summaries: Summary[]): string[] {
  const ours = summaries.find((s) => s.backend === "tpasst-vhost");
  const ref = summaries.find((s) => s.backend === "passt-vhost");
  if (ours === undefined || ref === undefined) return [];
  const pairs = [...ours.byRound].flatMap(([round, a]) => {
    const b = ref.byRound.get(round);
    return b === undefined ? [] : [[a, b] as const];
  });
  if (pairs.length === 0) return [];
  const measures: [string, (r: IperfResult) => number][] = [
    ["up rate", (r) => r.up.gbps],
    ["down rate", (r) => r.down.gbps],
    ["CPU/GB up", (r) => r.up.cpuSecondsPerGB],
    ["CPU/GB down", (r) => r.down.cpuSecondsPerGB],
  ];
  return [
    "tpasst-vhost / passt-vhost per round:",
    ...measures.map(([label, of]) =>
      `  ${label}: ${ratioSummary(pairs.map(([a, b]) => [of(a), of(b)] as const)) ?? "n/a"}`
    ),
  ];
}

function summarize(summary: Summary): void {
  const runs = summary.runs;
  if (runs.length === 0) return;
  summary.upGbps = mean(runs.map((r) => r.up.gbps));
  summary.downGbps = mean(runs.map((r) => r.down.gbps));
  summary.upCpuPerGB = mean(runs.map((r) => r.up.cpuSecondsPerGB));
  summary.downCpuPerGB = mean(runs.map((r) => r.down.cpuSecondsPerGB));
  const rss = runs.map((r) => r.peakRssKiB ?? 0);
  summary.peakRssMiB = Math.max(...rss) / 1024;
  summary.measuredProcess = runs[0].measuredProcess;
}

function loadAverage(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  } catch {
    return "unknown";
  }
}

const fmt = (n: number | undefined, digits: number) => n === undefined ? "-" : n.toFixed(digits);

function printTable(summaries: Summary[]): void {
  const header = [
    "backend",
    "up Gbit/s",
    "down Gbit/s",
    "up CPU s/GB",
    "down CPU s/GB",
    "peak RSS MiB",
    "runs",
  ];
  const rows = summaries.map((s) =>
    s.runs.length === 0 ? [s.backend, `n/a (${s.failure ?? "not run"})`] : [
      s.backend + (s.measuredProcess === "backend" ? "" : " *"),
      fmt(s.upGbps, 3),
      fmt(s.downGbps, 3),
      fmt(s.upCpuPerGB, 2),
      fmt(s.downCpuPerGB, 2),
      fmt(s.peakRssMiB, 1),
      `${s.runs.length}`,
    ]
  );
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => i === 0 || cells.length === 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))
      .join("  ");
  console.log(line(header));
  for (const row of rows) console.log(line(row));
  if (summaries.some((s) => s.measuredProcess && s.measuredProcess !== "backend")) {
    console.log(
      "* slirp runs inside QEMU: its CPU and RSS are QEMU's, including TCG guest emulation.",
    );
  }
}

function ratios(summaries: Summary[]): Record<string, Record<string, number>> {
  const byName = new Map(summaries.filter((s) => s.runs.length > 0).map((s) => [s.backend, s]));
  const out: Record<string, Record<string, number>> = {};
  for (
    const ours of [
      "tpasst-vhost",
      "tpasst-tree",
      "tpasst-stream",
      "tpasst-vhost-no-offload",
    ] as const
  ) {
    for (
      const ref of [
        "passt-vhost",
        "passt",
        "slirp",
        "tpasst-tree",
        "tpasst-vhost-no-offload",
      ] as const
    ) {
      if (ours === ref) continue;
      if ((ref === "tpasst-tree" || ref === "tpasst-vhost-no-offload") && ours !== "tpasst-vhost") {
        continue;
      }
      const a = byName.get(ours);
      const b = byName.get(ref);
      if (!a || !b) continue;
      out[`${ours} / ${ref}`] = {
        upGbps: a.upGbps! / b.upGbps!,
        downGbps: a.downGbps! / b.downGbps!,
        upCpuPerGB: a.upCpuPerGB! / b.upCpuPerGB!,
        downCpuPerGB: a.downCpuPerGB! / b.downCpuPerGB!,
        peakRss: a.peakRssMiB! / b.peakRssMiB!,
      };
    }
  }
  return out;
}

async function main(): Promise<void> {
  const args = parseArgs(Deno.args);
  const loadBefore = loadAverage();
  console.log(
    `QEMU iperf3 benchmark: ${
      args.backends.join(", ")
    }; ${args.rounds} round(s) of ${args.seconds} s per direction after ${args.warmUpRuns} × ${args.warmUpSeconds} s ` +
      `unmeasured; TCG guest${
        args.mtu1500 ? `; vhost-user guests at MTU 1500 (${MTU_1500_OPTION})` : ""
      }; load average ${loadBefore}`,
  );
  const summaries: Summary[] = args.backends.map((backend) => ({
    backend,
    runs: [],
    byRound: new Map(),
    failure: null,
  }));
  for (let round = 1; round <= args.rounds; round++) {
    for (const summary of roundOrder(summaries, round)) {
      if (summary.failure !== null) continue; // failed before: it will fail again
      const started = performance.now();
      try {
        const tree = summary.backend === "tpasst-tree";
        const noOffload = summary.backend === "tpasst-vhost-no-offload";
        const kind = tree || noOffload ? "tpasst-vhost" : summary.backend as BackendKind;
        const deviceOptions = [
          ...(args.mtu1500 ? [MTU_1500_OPTION] : []),
          ...(noOffload ? [NO_OFFLOAD_OPTIONS] : []),
        ].join(",");
        const result = await measureIperf(kind, {
          seconds: args.seconds,
          warmUpSeconds: args.warmUpSeconds,
          warmUpRuns: args.warmUpRuns,
          deviceOptions: deviceOptions === "" ? undefined : deviceOptions,
          tpasstBin: tree ? `${args.tpasstTree}/bin/tpasst` : undefined,
          onLine: args.verbose ? (l) => console.log(`  [${summary.backend}] ${l}`) : undefined,
        });
        summary.runs.push(result);
        summary.byRound.set(round, result);
        console.log(
          `round ${round} ${summary.backend}: up ${result.up.gbps.toFixed(3)} Gbit/s, down ${
            result.down.gbps.toFixed(3)
          } Gbit/s, CPU ${result.up.backendCpuSeconds.toFixed(1)}+${
            result.down.backendCpuSeconds.toFixed(1)
          } s, guest MTU ${result.guestMtu ?? "?"} (${
            ((performance.now() - started) / 1000).toFixed(0)
          } s)`,
        );
      } catch (error) {
        summary.failure = String((error as Error).message ?? error).split("\n")[0];
        console.log(`round ${round} ${summary.backend}: n/a (${summary.failure})`);
      }
    }
  }
  summaries.forEach(summarize);
  console.log("");
  printTable(summaries);
  const ratioTable = ratios(summaries);
  console.log("");
  if (Object.keys(ratioTable).length === 0) {
    console.log("ratios tpasst / reference: n/a (no tpasst backend produced numbers)");
  } else {
    console.log("ratios tpasst / reference (throughput: higher is better; CPU/RSS: lower):");
    for (const [name, r] of Object.entries(ratioTable)) {
      console.log(
        `  ${name}: up ${r.upGbps.toFixed(2)}x, down ${r.downGbps.toFixed(2)}x, CPU/GB up ${
          r.upCpuPerGB.toFixed(2)
        }x down ${r.downCpuPerGB.toFixed(2)}x, RSS ${r.peakRss.toFixed(2)}x`,
      );
    }
  }
  for (const line of perRoundRatios(summaries)) console.log(line);
  const loadAfter = loadAverage();
  console.log(`load average before ${loadBefore}, after ${loadAfter} (2 shared cores)`);
  const dir = new URL("./results/", import.meta.url).pathname;
  await Deno.mkdir(dir, { recursive: true });
  const file = `${dir}qemu_iperf_${new Date().toISOString().replace(/[:.]/g, "-")}.json`;
  await Deno.writeTextFile(
    file,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        seconds: args.seconds,
        warmUpSeconds: args.warmUpSeconds,
        warmUpRuns: args.warmUpRuns,
        rounds: args.rounds,
        guestMtu1500: args.mtu1500,
        loadAverage: { before: loadBefore, after: loadAfter },
        backends: summaries,
        ratios: ratioTable,
      },
      null,
      2,
    ) + "\n",
  );
  console.log(`wrote ${file}`);
}

if (import.meta.main) {
  await main();
}
