/**
 * Counts per GB of a fixed-size iperf3 transfer through a backend under QEMU, for
 * comparing datapath cost on a shared, loaded machine where wall-clock rates swing:
 * the backend's CPU seconds, with `--tool perf` its instructions, cycles (where the
 * machine has hardware counters; these VMs have none) and context switches
 * (`perf stat -p`), with `--tool record` a profile (`perf record -p` into
 * perf-BACKEND-DIRECTION.data; run with DENO_V8_FLAGS=--perf-basic-prof for JIT
 * symbols, DATAPATH_COUNTS_CALLGRAPH=1 for -g) summed up as samples per sample of the
 * kernel's copy into guest buffers (the same work per byte for every backend, so
 * less sensitive to the machine's load than CPU seconds), and with
 * `--tool strace` its system calls by name (`strace -c -f -p`, which slows the
 * daemon: compare counts, not times). The guest runs `iperf3 -n BYTES` guest→host
 * ("up") and/or host→guest ("down", -R) against a server on the host's loopback; the
 * tool is attached while the guest sleeps a second before each transfer. The server's
 * own CPU per GB is printed beside the backend's: on loopback the two share the
 * kernel's work (see {@link Row.peerCpuPerGB}).
 *
 * Options: --backends tpasst-vhost,passt-vhost (default), --directions down,up
 * (default down), --bytes N (per transfer, default 2000M; iperf3's K/M/G suffixes),
 * --warm-up N (before the measured transfers, one unmeasured transfer of N bytes each
 * direction through the same backend: its JIT has compiled the datapath by then;
 * default 0, none), --warm-up-transfers N (how many such transfers each direction,
 * default 1: a connection's first close still deoptimises code its open and data had
 * optimised, so one transfer leaves recompiles for the measured one),
 * --tool perf|strace|record|none (default perf), --tpasst-tree DIR (adds backend
 * "tpasst-tree": DIR/bin/tpasst, another checkout, e.g. the code before a change;
 * repeatable: the second is "tpasst-tree2", and so on),
 * --variant OPTIONS (repeatable; adds backend "tpasst[OPTIONS]": tpasst-vhost with QEMU
 * virtio-net-pci OPTIONS, e.g. event_idx=off),
 * --rounds N (default 1, alternating backends), --congestion ALGO (the host peer's
 * TCP congestion control, iperf3 -C: e.g. cubic where the host's default is bbr),
 * --debug (tpasst -d: the link's counters at the end are printed), --verbose (serial console); DATAPATH_COUNTS_OUTPUT=1
 * prints the end of the backend's output.
 *
 * Run as root (perf and strace attach to the backend). Never a test.
 *
 * @module
 */

import { type BackendKind, startBackend } from "../tests/e2e/backends.ts";
import { freePort, startIperfServer } from "../tests/e2e/host_services.ts";
import { QemuGuest } from "../tests/e2e/qemu.ts";
import {
  processCpuSeconds,
  processSchedulerStats,
  type SchedulerStats,
  threadRunSeconds,
} from "./qemu_process_stats.ts";
import { ratioSummary, roundOrder } from "./rounds.ts";

const BACKENDS = ["tpasst-vhost", "passt-vhost", "tpasst-tree"] as const;
/** A backend of BACKENDS, or a variant: `tpasst[OPTIONS]` (tpasst-vhost, QEMU device OPTIONS). */
type Backend = string;

/** The backend name of the `index`th --tpasst-tree (from 0): tpasst-tree, tpasst-tree2, … */
function treeBackend(index: number): Backend {
  return index === 0 ? "tpasst-tree" : `tpasst-tree${index + 1}`;
}

/** Which --tpasst-tree `backend` runs (from 0), or -1 when it is no tree backend. */
function treeIndex(backend: Backend): number {
  const match = /^tpasst-tree(\d*)$/.exec(backend);
  if (match === null) return -1;
  return match[1] === "" ? 0 : Number(match[1]) - 1;
}

/** The QEMU device options of a `tpasst[OPTIONS]` variant, or null for a plain backend. */
function variantOptions(backend: Backend): string | null {
  return /^tpasst\[(.*)\]$/.exec(backend)?.[1] ?? null;
}
type Direction = "up" | "down";
type Tool = "perf" | "strace" | "record" | "none";

interface Args {
  backends: Backend[];
  directions: Direction[];
  bytes: string;
  /** Bytes of the unmeasured transfer each direction before the measured ones ("0": none). */
  warmUp: string;
  /** Unmeasured transfers of {@link warmUp} bytes each direction, all before the measured ones. */
  warmUpTransfers: number;
  tool: Tool;
  /** Checkouts of --tpasst-tree, in order: backends tpasst-tree, tpasst-tree2, … */
  tpasstTrees: string[];
  rounds: number;
  /** The host peer's TCP congestion control (iperf3 -C), or null for the host's default. */
  congestion: string | null;
  debug: boolean;
  verbose: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    backends: ["tpasst-vhost", "passt-vhost"],
    directions: ["down"],
    bytes: "2000M",
    warmUp: "0",
    warmUpTransfers: 1,
    tool: "perf",
    tpasstTrees: [],
    rounds: 1,
    congestion: null,
    debug: false,
    verbose: false,
  };
  let backendsGiven = false;
  const variants: Backend[] = [];
  for (let i = 0; i < argv.length; i++) {
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`Option ${argv[i - 1]} needs a value`);
      return v;
    };
    switch (argv[i]) {
      case "--backends":
        backendsGiven = true;
        args.backends = value().split(",").map((b) => {
          if (!(BACKENDS as readonly string[]).includes(b) && treeIndex(b) < 0) {
            throw new Error(`Unknown backend ${b}: expected one of ${BACKENDS.join(", ")}`);
          }
          return b as Backend;
        });
        break;
      case "--directions":
        args.directions = value().split(",").map((d) => {
          if (d !== "up" && d !== "down") throw new Error(`Unknown direction ${d}: up or down`);
          return d;
        });
        break;
      case "--bytes":
        args.bytes = value();
        if (!/^[0-9]+[KMG]?$/.test(args.bytes)) throw new Error(`Bad --bytes ${args.bytes}`);
        break;
      case "--tool": {
        const t = value();
        if (t !== "perf" && t !== "strace" && t !== "record" && t !== "none") {
          throw new Error(`Unknown tool ${t}: perf, strace, record or none`);
        }
        args.tool = t;
        break;
      }
      case "--variant":
        variants.push(`tpasst[${value()}]`);
        break;
      case "--tpasst-tree":
        args.tpasstTrees.push(value());
        break;
      case "--warm-up":
        args.warmUp = value();
        if (!/^[0-9]+[KMG]?$/.test(args.warmUp)) throw new Error(`Bad --warm-up ${args.warmUp}`);
        break;
      case "--warm-up-transfers":
        args.warmUpTransfers = Number(value());
        if (!Number.isInteger(args.warmUpTransfers) || args.warmUpTransfers < 1) {
          throw new Error(
            `Bad --warm-up-transfers ${args.warmUpTransfers}: a whole number, 1 or more`,
          );
        }
        break;
      case "--rounds":
        args.rounds = Number(value());
        break;
      case "--congestion":
        args.congestion = value();
        if (!/^[a-z0-9_]+$/.test(args.congestion)) {
          throw new Error(`Bad --congestion ${args.congestion}: a congestion control's name`);
        }
        break;
      case "--debug":
        args.debug = true;
        break;
      case "--verbose":
        args.verbose = true;
        break;
      default:
        throw new Error(`Unknown option ${argv[i]}`);
    }
  }
  if (!backendsGiven) args.backends.push(...args.tpasstTrees.map((_, i) => treeBackend(i)));
  args.backends.push(...variants);
  const missing = args.backends.find((b) => treeIndex(b) >= args.tpasstTrees.length);
  if (missing !== undefined) {
    throw new Error(`Backend ${missing} needs one more --tpasst-tree DIR`);
  }
  return args;
}

/**
 * Guest shell lines defining `snapshot`: one line of NAME=VALUE counters the guest
 * kernel keeps, read before and after each transfer (their differences per GB are
 * what the guest did for it): interrupts of the virtio device (/proc/interrupts),
 * eth0's frames (statistics/), CPU jiffies by kind (/proc/stat: USER_HZ 100),
 * context switches, NET_RX softirqs, TCP segments (/proc/net/snmp) and TcpExt counters
 * (/proc/net/netstat: delayed ACKs, coalescing, window events).
 */
const GUEST_SNAPSHOT_LINES: readonly string[] = [
  "snapshot() {",
  "  s=/sys/class/net/eth0/statistics",
  '  printf "irq=%s " "$(awk \'/virtio/ {s += $2} END {print s + 0}\' /proc/interrupts)"',
  '  printf "rx_frames=%s rx_bytes=%s tx_frames=%s " $(cat $s/rx_packets $s/rx_bytes $s/tx_packets)',
  '  awk \'/^cpu / {printf "j_user=%d j_sys=%d j_idle=%d j_irq=%d j_softirq=%d ", $2 + $3, $4, $5, $7, $8}',
  '    /^ctxt / {printf "ctxt=%d ", $2}\' /proc/stat',
  "  awk '$1 ~ /^(NET_RX|NET_TX|TIMER):$/ {printf \"softirq_%s=%d \", substr($1, 1, length($1) - 1), $2}' /proc/softirqs",
  "  for f in /proc/net/snmp /proc/net/netstat; do",
  '    awk \'$1 == "Tcp:" || $1 == "TcpExt:" { if (h[$1] == "") { h[$1] = $0; next }',
  '      n = split(h[$1], k); split($0, v); for (i = 2; i <= n; i++) printf "%s=%s ", k[i], v[i] }\' $f',
  "  done",
  "  echo",
  "}",
];

function guestScript(
  port: number,
  directions: Direction[],
  bytes: string,
  warmUp: string,
  warmUpTransfers: number,
  congestion: string | null,
): string {
  // iperf3 asks its server for the same algorithm: -R makes the server the sender.
  const iperfOptions = congestion === null ? "" : ` -C ${congestion}`;
  const lines = [
    'mark() { echo "TPASST-MARK $*"; }',
    "udhcpc -i eth0 -f -q -n -t 5 -T 3 -s /etc/udhcpc.sh 2>/dev/null >/dev/null",
    "gw=$(cat /tmp/router 2>/dev/null)",
    'if [ -z "$gw" ]; then mark error no-dhcp-lease; exit 1; fi',
    "result() { awk '/receiver/ {print $(NF-4), $(NF-3), $(NF-2); f=1} END {if (!f) print \"failed\"}'; }",
    ...GUEST_SNAPSHOT_LINES,
  ];
  for (let i = 0; warmUp !== "0" && i < warmUpTransfers; i++) {
    for (const d of directions) {
      lines.push(
        `timeout 300 iperf3 -c "$gw" -p ${port}${iperfOptions} -n ${warmUp} ${
          d === "down" ? "-R" : ""
        } >/dev/null 2>&1`,
      );
    }
  }
  for (const d of directions) {
    lines.push(
      `mark ${d}-start`,
      "sleep 1", // the host attaches its tool meanwhile
      `mark ${d}-guest-before "$(snapshot)"`,
      `mark ${d} "$(timeout 300 iperf3 -c "$gw" -p ${port}${iperfOptions} -n ${bytes} -f m ${
        d === "down" ? "-R" : ""
      } 2>&1 | result)"`,
      `mark ${d}-guest-after "$(snapshot)"`,
    );
  }
  lines.push("exit 0", "");
  return lines.join("\n");
}

/** A tool attached to a process until stopped; returns its report. */
interface Attached {
  stop(): Promise<string>;
}

function attach(tool: Tool, pid: number, label: string): Attached {
  if (tool === "none") return { stop: () => Promise.resolve("") };
  const args = tool === "perf"
    ? ["stat", "-x", ",", "-e", "instructions,cycles,context-switches", "-p", `${pid}`]
    : tool === "record"
    ? [
      "record",
      "-F",
      "2000",
      ...(Deno.env.get("DATAPATH_COUNTS_CALLGRAPH") ? ["-g"] : []),
      "-o",
      `perf-${label}.data`,
      "-p",
      `${pid}`,
    ]
    : ["-c", "-f", "-p", `${pid}`];
  const command = tool === "strace" ? "strace" : "perf";
  const child = new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).spawn();
  return {
    async stop() {
      child.kill("SIGINT");
      const out = await child.output();
      const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
      if (tool !== "record") return text;
      // The kernel's copy into the guest's buffers costs the same per byte for every
      // backend: the samples per copy sample are CPU per byte, less sensitive to load.
      const report = await new Deno.Command("perf", {
        args: ["report", "-i", `perf-${label}.data`, "--stdio", "--sort", "sym", "-g", "none"],
        stdout: "piped",
        stderr: "null",
      }).output();
      const lines = new TextDecoder().decode(report.stdout).split("\n");
      const samples = lines.find((l) => l.startsWith("# Samples:")) ?? "";
      const copy = lines.map((l) => l.match(/^\s*([0-9.]+)%.*\] (_copy_to_iter|_copy_from_iter)/))
        .filter((m) => m !== null).reduce((a, m) => a + Number(m![1]), 0);
      return `${samples.trim()}; copy ${copy.toFixed(1)}% -> ${
        (100 / copy).toFixed(2)
      } samples per copy sample`;
    },
  };
}

const IPERF_UNITS: Readonly<Record<string, number>> = {
  Bytes: 1,
  KBytes: 1024,
  MBytes: 1024 ** 2,
  GBytes: 1024 ** 3,
};

interface Row {
  /** The round it was measured in (1-based; 0 until the round loop sets it). */
  round: number;
  backend: Backend;
  direction: Direction;
  gbps: number;
  gb: number;
  cpuPerGB: number;
  /** QEMU's CPU seconds per GB (the TCG vCPU and its I/O threads). */
  qemuCpuPerGB: number;
  /**
   * The host peer's (iperf3's) CPU seconds per GB. On loopback the two ends share the
   * kernel's work: an ACK that opens the window makes the peer's kernel send from
   * within the receiver's system call, so backend + peer is the comparable total.
   */
  peerCpuPerGB: number;
  /** Seconds QEMU's threads were runnable but waited for a CPU, per GB. */
  qemuWaitPerGB: number;
  /** The same for the backend's threads. */
  backendWaitPerGB: number;
  /** The backend's threads' voluntary context switches (waits for events) per GB. */
  backendSleepsPerGB: number;
  /** The backend's threads' involuntary context switches per GB. */
  backendPreemptionsPerGB: number;
  /** Differences of the host's TCP counters ({@link hostTcpCounters}) per GB. */
  hostPerGB: Map<string, number>;
  /** Differences of the guest's counters ({@link GUEST_SNAPSHOT_LINES}) per GB. */
  guestPerGB: Map<string, number>;
  instructionsPerGB: number | null;
  cyclesPerGB: number | null;
  contextSwitchesPerGB: number | null;
  syscallsPerGB: Map<string, number>;
  /** The backend's seconds on a CPU per GB, by thread name (schedstat). */
  threadsPerGB: Map<string, number>;
}

/**
 * How much `field` of the threads' scheduler counts (seconds waiting for a CPU, sleeps,
 * preemptions) grew between two samples; 0 when one is missing.
 */
function schedulerDelta(
  before: SchedulerStats | null,
  after: SchedulerStats | null,
  field: "waitSeconds" | "sleeps" | "preemptions",
): number {
  return before === null || after === null ? 0 : after[field] - before[field];
}

/**
 * The host kernel's TCP counters (/proc/net/snmp "Tcp:", /proc/net/netstat "TcpExt:")
 * by name. On loopback they count both ends of the transfer: the backend's host
 * socket and the iperf3 server's.
 */
function hostTcpCounters(): Map<string, number> {
  const out = new Map<string, number>();
  for (const file of ["/proc/net/snmp", "/proc/net/netstat"]) {
    const lines = Deno.readTextFileSync(file).split("\n");
    for (let i = 0; i + 1 < lines.length; i++) {
      const names = lines[i].split(" ");
      const values = lines[i + 1].split(" ");
      if ((names[0] !== "Tcp:" && names[0] !== "TcpExt:") || values[0] !== names[0]) continue;
      for (let k = 1; k < names.length; k++) out.set(names[k], Number(values[k]));
      i++;
    }
  }
  return out;
}

/** Host TCP counters printed per GB (name in /proc/net, label). */
const HOST_COUNTERS: readonly (readonly [string, string])[] = [
  ["InSegs", "segments in"],
  ["OutSegs", "segments out"],
  ["DelayedACKs", "delayed ACKs"],
  ["TCPPureAcks", "pure ACKs"],
  ["TCPHPAcks", "predicted ACKs"],
  ["TCPHPHits", "predicted data"],
  ["TCPBacklogCoalesce", "backlog coalesce"],
  ["TCPRcvCoalesce", "rcv coalesce"],
  ["TCPWantZeroWindowAdv", "want zero window"],
];

/** The backend's sleeps and preemptions and the host's TCP counters per GB. */
function hostSummary(r: Row): string {
  const counts = HOST_COUNTERS.filter(([k]) => r.hostPerGB.has(k)).map(([k, label]) =>
    `${label} ${r.hostPerGB.get(k)!.toFixed(0)}`
  ).join(", ");
  return `backend per GB: sleeps ${r.backendSleepsPerGB.toFixed(0)}, preemptions ${
    r.backendPreemptionsPerGB.toFixed(0)
  }; host TCP per GB: ${counts}`;
}

/** A `snapshot` line of the guest (NAME=VALUE ...) as a map. */
function parseSnapshot(line: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const pair of line.trim().split(/\s+/)) {
    const [name, value] = pair.split("=");
    if (value !== undefined && Number.isFinite(Number(value))) out.set(name, Number(value));
  }
  return out;
}

/** Clock ticks per second of the guest's /proc/stat (USER_HZ, fixed at 100 on Linux). */
const GUEST_USER_HZ = 100;

/** Guest counters printed per GB, in this order, and the label each gets. */
const GUEST_COUNTERS: readonly (readonly [string, string])[] = [
  ["irq", "interrupts"],
  ["rx_frames", "rx frames"],
  ["tx_frames", "tx frames"],
  ["softirq_NET_RX", "NET_RX softirqs"],
  ["softirq_NET_TX", "NET_TX softirqs"],
  ["ctxt", "context switches"],
  ["OutSegs", "TCP out"],
  ["DelayedACKs", "delayed ACKs"],
  ["TCPHPHits", "fast-path hits"],
  ["TCPRcvCoalesce", "rcv coalesce"],
  ["TCPBacklogCoalesce", "backlog coalesce"],
  ["TCPOFOQueue", "OFO"],
  ["TCPWantZeroWindowAdv", "want zero window"],
  ["TCPToZeroWindowAdv", "to zero window"],
];

/** One line of the guest's counters per GB and its CPU shares during the transfer. */
function guestSummary(perGB: Map<string, number>): string {
  const jiffies = ["j_user", "j_sys", "j_idle", "j_irq", "j_softirq"].map((k) => perGB.get(k) ?? 0);
  const total = jiffies.reduce((a, b) => a + b, 0);
  const busySeconds = (total - jiffies[2]) / GUEST_USER_HZ;
  const shares = total === 0 ? "" : `; guest busy ${busySeconds.toFixed(2)} s/GB, ` +
    `user/sys/idle/irq/softirq ${jiffies.map((j) => `${(100 * j / total).toFixed(0)}%`).join("/")}`;
  const counts = GUEST_COUNTERS.filter(([k]) => perGB.has(k)).map(([k, label]) =>
    `${label} ${perGB.get(k)!.toFixed(0)}`
  ).join(", ");
  return `guest per GB: ${counts}${shares}`;
}

/** `perf stat -x,` lines: value,unit,event,... */
function perfCounts(report: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of report.split("\n")) {
    const cells = line.split(",");
    if (cells.length < 3) continue;
    const value = Number(cells[0]);
    if (Number.isFinite(value)) out.set(cells[2].replace(/:u$/, ""), value);
  }
  return out;
}

/** `strace -c` table rows: % time, seconds, usecs/call, calls, [errors], syscall. */
function straceCounts(report: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of report.split("\n")) {
    const cells = line.trim().split(/\s+/);
    if (cells.length < 5 || !/^[0-9.]+$/.test(cells[0])) continue;
    const name = cells[cells.length - 1];
    if (name === "total") continue;
    out.set(name, Number(cells[3]));
  }
  return out;
}

async function measure(backend: Backend, args: Args): Promise<Row[]> {
  const iperf = await startIperfServer(freePort());
  const rows: Row[] = [];
  try {
    const options = variantOptions(backend);
    const kind =
      (treeIndex(backend) >= 0 || options !== null ? "tpasst-vhost" : backend) as BackendKind;
    const started = await startBackend(kind, {
      forwards: [],
      deviceOptions: options ?? undefined,
      extraArgs: args.debug && kind === "tpasst-vhost" ? ["-d"] : [],
      tpasstBin: treeIndex(backend) >= 0
        ? `${args.tpasstTrees[treeIndex(backend)]}/bin/tpasst`
        : undefined,
    });
    try {
      await using guest = await QemuGuest.launch({
        netdev: started.netdev,
        script: guestScript(
          iperf.port,
          args.directions,
          args.bytes,
          args.warmUp,
          args.warmUpTransfers,
          args.congestion,
        ),
        onLine: args.verbose ? (l) => console.log(`  [${backend}] ${l}`) : undefined,
      });
      const pid = started.pid!;
      for (const direction of args.directions) {
        const start = await guest.waitForAnyMark([`${direction}-start`, "error"], 300_000);
        if (start.name === "error") throw guest.failure(`guest: ${start.value}`);
        const tool = attach(args.tool, pid, `${backend}-${direction}`);
        const cpu0 = processCpuSeconds(pid) ?? 0;
        const qemuCpu0 = processCpuSeconds(guest.pid) ?? 0;
        const peerCpu0 = processCpuSeconds(iperf.pid) ?? 0;
        const qemuSched0 = processSchedulerStats(guest.pid);
        const backendSched0 = processSchedulerStats(pid);
        const threads0 = threadRunSeconds(pid) ?? new Map<string, number>();
        const host0 = hostTcpCounters();
        const value = await guest.waitForMark(direction, 600_000);
        const cpu = (processCpuSeconds(pid) ?? cpu0) - cpu0;
        const qemuCpu = (processCpuSeconds(guest.pid) ?? qemuCpu0) - qemuCpu0;
        const peerCpu = (processCpuSeconds(iperf.pid) ?? peerCpu0) - peerCpu0;
        const qemuWait = schedulerDelta(
          qemuSched0,
          processSchedulerStats(guest.pid),
          "waitSeconds",
        );
        const backendSched = processSchedulerStats(pid);
        const backendWait = schedulerDelta(backendSched0, backendSched, "waitSeconds");
        const host = hostTcpCounters();
        const threads = threadRunSeconds(pid) ?? new Map<string, number>();
        const report = await tool.stop();
        const guestBefore = parseSnapshot(await guest.waitForMark(`${direction}-guest-before`, 1));
        const guestAfter = parseSnapshot(
          await guest.waitForMark(`${direction}-guest-after`, 60_000),
        );
        const [amount, unit, rate] = value.split(" ");
        if (IPERF_UNITS[unit] === undefined) throw new Error(`iperf3 ${direction}: ${value}`);
        const gb = Number(amount) * IPERF_UNITS[unit] / 1e9;
        const perf = args.tool === "perf" ? perfCounts(report) : new Map();
        const calls = args.tool === "strace" ? straceCounts(report) : new Map();
        const perGB = new Map([...calls].map(([k, v]) => [k, v / gb]));
        if (args.tool === "record") console.log(`  [${backend} ${direction}] ${report}`);
        rows.push({
          round: 0,
          backend,
          direction,
          gbps: Number(rate) / 1000,
          gb,
          cpuPerGB: cpu / gb,
          qemuCpuPerGB: qemuCpu / gb,
          peerCpuPerGB: peerCpu / gb,
          qemuWaitPerGB: qemuWait / gb,
          backendWaitPerGB: backendWait / gb,
          backendSleepsPerGB: schedulerDelta(backendSched0, backendSched, "sleeps") / gb,
          backendPreemptionsPerGB: schedulerDelta(backendSched0, backendSched, "preemptions") / gb,
          hostPerGB: new Map([...host].map(([k, v]) => [k, (v - (host0.get(k) ?? 0)) / gb])),
          guestPerGB: new Map(
            [...guestAfter].map(([k, v]) => [k, (v - (guestBefore.get(k) ?? 0)) / gb]),
          ),
          instructionsPerGB: perf.has("instructions") ? perf.get("instructions")! / gb : null,
          cyclesPerGB: perf.has("cycles") ? perf.get("cycles")! / gb : null,
          contextSwitchesPerGB: perf.has("context-switches")
            ? perf.get("context-switches")! / gb
            : null,
          syscallsPerGB: perGB,
          threadsPerGB: new Map(
            [...threads].map(([k, v]) => [k, (v - (threads0.get(k) ?? 0)) / gb]),
          ),
        });
      }
      await guest.waitForDone(60_000).catch(() => {});
    } finally {
      await started.stop();
      if (Deno.env.get("DATAPATH_COUNTS_OUTPUT")) console.log(started.output().slice(-8000));
      if (args.debug) {
        const counters = started.output().split("\n").filter((l) =>
          /vhost-user link:|frames accepted|tcp:.*counters|event loop/i.test(l)
        );
        for (const l of counters) console.log(`  [${backend}] ${l}`);
      }
    }
  } finally {
    await iperf.close();
  }
  return rows;
}

/** Seconds per GB by thread name, busiest first, each with its share of all of them. */
function threadSummary(perGB: Map<string, number>): string {
  const total = [...perGB.values()].reduce((a, b) => a + b, 0);
  return [...perGB].filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${v.toFixed(3)} s/GB (${(100 * v / total).toFixed(1)} %)`)
    .join(", ");
}

const fmt = (n: number | null, digits = 2) => n === null ? "-" : n.toFixed(digits);

async function main(): Promise<void> {
  const args = parseArgs(Deno.args);
  const load = Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  console.log(
    `datapath counts: ${args.backends.join(", ")}; ${args.directions.join(", ")}; ${args.bytes} ` +
      `per transfer (warm-up ${args.warmUpTransfers} × ${args.warmUp}); tool ${args.tool}; ${args.rounds} round(s); host peer's congestion control ${
        args.congestion ?? "the host's default"
      }; load average ${load}`,
  );
  const all: Row[] = [];
  for (let round = 1; round <= args.rounds; round++) {
    for (const backend of roundOrder(args.backends, round)) {
      try {
        const rows = await measure(backend, args);
        for (const r of rows) {
          r.round = round;
          all.push(r);
          const top = [...r.syscallsPerGB].sort((a, b) => b[1] - a[1]).slice(0, 10)
            .map(([k, v]) => `${k} ${v.toFixed(0)}`).join(", ");
          console.log(
            `round ${round} ${backend} ${r.direction}: ${r.gb.toFixed(2)} GB at ${
              r.gbps.toFixed(2)
            } Gbit/s; CPU ${r.cpuPerGB.toFixed(3)} s/GB; instructions ${
              fmt(r.instructionsPerGB === null ? null : r.instructionsPerGB / 1e9, 3)
            } G/GB, cycles ${
              fmt(r.cyclesPerGB === null ? null : r.cyclesPerGB / 1e9, 3)
            } G/GB, context switches ${fmt(r.contextSwitchesPerGB, 0)} per GB` +
              (top === "" ? "" : `; syscalls per GB: ${top}`),
          );
          console.log(
            `  QEMU CPU ${r.qemuCpuPerGB.toFixed(3)} s/GB; host peer (iperf3) CPU ${
              r.peerCpuPerGB.toFixed(3)
            } s/GB, backend + peer ${
              (r.cpuPerGB + r.peerCpuPerGB).toFixed(3)
            } s/GB; waiting for a CPU: QEMU ${r.qemuWaitPerGB.toFixed(3)}, backend ${
              r.backendWaitPerGB.toFixed(3)
            } s/GB; ${guestSummary(r.guestPerGB)}`,
          );
          console.log(`  backend threads on a CPU: ${threadSummary(r.threadsPerGB)}`);
          console.log(`  ${hostSummary(r)}`);
        }
      } catch (error) {
        console.log(`round ${round} ${backend}: n/a (${(error as Error).message.split("\n")[0]})`);
      }
    }
  }
  console.log("");
  for (const direction of args.directions) {
    for (const backend of args.backends) {
      const rows = all.filter((r) => r.backend === backend && r.direction === direction);
      if (rows.length === 0) continue;
      const mean = (f: (r: Row) => number | null) => {
        const v = rows.map(f).filter((x): x is number => x !== null);
        return v.length === 0 ? null : v.reduce((a, b) => a + b, 0) / v.length;
      };
      const ins = mean((r) => r.instructionsPerGB);
      const cyc = mean((r) => r.cyclesPerGB);
      console.log(
        `${direction} ${backend.padEnd(13)} ${fmt(mean((r) => r.gbps))} Gbit/s  CPU ${
          fmt(mean((r) => r.cpuPerGB), 3)
        } s/GB  instr ${fmt(ins === null ? null : ins / 1e9, 3)} G/GB  cycles ${
          fmt(cyc === null ? null : cyc / 1e9, 3)
        } G/GB  QEMU CPU ${fmt(mean((r) => r.qemuCpuPerGB), 3)} s/GB  peer CPU ${
          fmt(mean((r) => r.peerCpuPerGB), 3)
        } s/GB  backend + peer ${
          fmt(mean((r) => r.cpuPerGB + r.peerCpuPerGB), 3)
        } s/GB  waits QEMU ${fmt(mean((r) => r.qemuWaitPerGB), 3)} backend ${
          fmt(mean((r) => r.backendWaitPerGB), 3)
        } s/GB  (${rows.length} runs)`,
      );
      const guestMean = new Map<string, number>();
      for (const key of rows[0].guestPerGB.keys()) {
        guestMean.set(key, mean((r) => r.guestPerGB.get(key) ?? null) ?? 0);
      }
      console.log(`  ${guestSummary(guestMean)}`);
    }
    const ratios = roundRatios(all, args.backends, direction);
    if (ratios !== "") console.log(ratios);
  }
}

/**
 * Each backend's CPU per GB and rate against the reference's (passt-vhost when
 * measured, else the last backend) in the same round, with the median and mean of
 * those ratios: one round's numbers swing with the machine's load, the same round's
 * pair less.
 */
function roundRatios(all: Row[], backends: Backend[], direction: Direction): string {
  const reference = backends.includes("passt-vhost") ? "passt-vhost" : backends.at(-1)!;
  const measures: [string, (r: Row) => number][] = [
    ["CPU per GB", (r) => r.cpuPerGB],
    ["rate", (r) => r.gbps],
  ];
  const lines: string[] = [];
  for (const backend of backends) {
    if (backend === reference) continue;
    const pairs = all.flatMap((r) => {
      if (r.backend !== backend || r.direction !== direction) return [];
      const ref = all.find((x) =>
        x.backend === reference && x.direction === direction && x.round === r.round
      );
      return ref === undefined ? [] : [[r, ref] as const];
    });
    for (const [label, of] of measures) {
      const summary = ratioSummary(pairs.map(([r, ref]) => [of(r), of(ref)] as const));
      if (summary === null) continue;
      lines.push(`${direction} ${backend} ${label} / ${reference}'s, per round: ${summary}`);
    }
  }
  return lines.join("\n");
}

if (import.meta.main) await main();
