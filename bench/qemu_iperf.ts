/**
 * One iperf3 measurement through one backend under QEMU: boots the e2e guest against the
 * backend, runs the guest's iperf3 client against an iperf3 server on the host's
 * 127.0.0.1 (reached through the backend's gateway address), guest→host then
 * host→guest (-R), and samples the backend's CPU time and peak RSS around each run.
 *
 * @module
 */

import { type BackendKind, startBackend } from "../tests/e2e/backends.ts";
import { freePort, startIperfServer } from "../tests/e2e/host_services.ts";
import { LEASE_SCRIPT_LINES, QemuGuest } from "../tests/e2e/qemu.ts";
import { processCpuSeconds, processPeakRssKiB } from "./qemu_process_stats.ts";

/** One direction's numbers. */
export interface DirectionResult {
  /** Receiver throughput reported by iperf3, Gbit/s. */
  readonly gbps: number;
  /** Bytes the receiver got. */
  readonly bytes: number;
  /** Backend CPU seconds (user + system) during the run. */
  readonly backendCpuSeconds: number;
  /** Backend CPU seconds per GB (10^9 bytes) moved. */
  readonly cpuSecondsPerGB: number;
  /** QEMU's CPU seconds during the run (guest emulation under TCG included). */
  readonly qemuCpuSeconds: number;
}

/** A backend's measurement in one round. */
export interface IperfResult {
  readonly backend: BackendKind;
  /** Guest → host (iperf3 client in the guest sending). */
  readonly up: DirectionResult;
  /** Host → guest (iperf3 -R). */
  readonly down: DirectionResult;
  /** Backend peak RSS (VmHWM) in KiB at the end. */
  readonly peakRssKiB: number | null;
  /** Whose CPU/RSS the numbers are: the backend process, or QEMU for slirp. */
  readonly measuredProcess: "backend" | "qemu (slirp runs inside QEMU)";
  /** Host milliseconds from QEMU start to the guest's userspace. */
  readonly bootMs: number | null;
  /** The guest interface's MTU during the runs (null: not reported). */
  readonly guestMtu: number | null;
}

/** Options for {@link measureIperf}. */
export interface IperfOptions {
  /** Seconds per direction. */
  readonly seconds: number;
  /**
   * Seconds of an unmeasured iperf3 run each direction before the measured ones (0:
   * none): tpasst's JIT has compiled its datapath by then, as in a daemon that has run
   * for a while, and every backend gets the same runs.
   */
  readonly warmUpSeconds?: number;
  /** How many such runs each direction (default 1), all before the measured ones. */
  readonly warmUpRuns?: number;
  /** Serial lines, for debugging. */
  readonly onLine?: (line: string) => void;
  /** tpasst backends: the launcher to run (another checkout's bin/tpasst). */
  readonly tpasstBin?: string;
  /** vhost-user backends: extra virtio-net-pci options, e.g. `host_mtu=1500,host_tso4=off`. */
  readonly deviceOptions?: string;
}

/** Transfer units in iperf3's output (binary multiples, iperf3's unit_snprintf). */
const IPERF_UNITS: Readonly<Record<string, number>> = {
  Bytes: 1,
  KBytes: 1024,
  MBytes: 1024 ** 2,
  GBytes: 1024 ** 3,
};

function guestScript(
  port: number,
  seconds: number,
  warmUpSeconds: number,
  warmUpRuns: number,
): string {
  const warmUp = (reverse: string) =>
    `timeout ${warmUpSeconds + 30} iperf3 -c "$gw" -p ${port} -t ${warmUpSeconds}${reverse} ` +
    ">/dev/null 2>&1";
  return [
    ...LEASE_SCRIPT_LINES,
    // receiver line: [ ID] interval sec <transfer> <KBytes|MBytes|GBytes> <rate> Mbits/sec receiver
    "result() { awk '/receiver/ {print $(NF-4), $(NF-3), $(NF-2); f=1} END {if (!f) print \"failed\"}'; }",
    'mark mtu "$(cat /sys/class/net/eth0/mtu)"',
    ...(warmUpSeconds > 0
      ? Array.from({ length: warmUpRuns }, () => [warmUp(""), warmUp(" -R")]).flat()
      : []),
    "mark up-start",
    `mark up "$(timeout ${
      seconds + 30
    } iperf3 -c "$gw" -p ${port} -t ${seconds} -f m 2>&1 | result)"`,
    "mark down-start",
    `mark down "$(timeout ${
      seconds + 30
    } iperf3 -c "$gw" -p ${port} -t ${seconds} -f m -R 2>&1 | result)"`,
    "exit 0",
    "",
  ].join("\n");
}

/** Runs the guest→host and host→guest iperf3 measurement through backend `kind`. */
export async function measureIperf(kind: BackendKind, options: IperfOptions): Promise<IperfResult> {
  const iperf = await startIperfServer(freePort());
  try {
    const backend = await startBackend(kind, {
      forwards: [],
      tpasstBin: options.tpasstBin,
      deviceOptions: options.deviceOptions,
    });
    try {
      await using guest = await QemuGuest.launch({
        netdev: backend.netdev,
        script: guestScript(
          iperf.port,
          options.seconds,
          options.warmUpSeconds ?? 0,
          options.warmUpRuns ?? 1,
        ),
        onLine: options.onLine,
      });
      const pid = backend.pid ?? guest.pid;
      const warmUpTotal = 2 * (options.warmUpSeconds ?? 0) * (options.warmUpRuns ?? 1);
      const timeoutMs = 180_000 + (options.seconds + warmUpTotal) * 4_000;
      const direction = async (name: "up" | "down"): Promise<DirectionResult> => {
        const start = await guest.waitForAnyMark([`${name}-start`, "error"], timeoutMs);
        if (start.name === "error") throw guest.failure(`guest: ${start.value}`);
        const cpu0 = processCpuSeconds(pid) ?? 0;
        const qemu0 = processCpuSeconds(guest.pid) ?? 0;
        const value = await guest.waitForMark(name, timeoutMs);
        const cpu = (processCpuSeconds(pid) ?? cpu0) - cpu0;
        const qemuCpu = (processCpuSeconds(guest.pid) ?? qemu0) - qemu0;
        const [amount, unit, rate] = value.split(" ");
        const mbits = Number(rate);
        const scale = IPERF_UNITS[unit];
        if (!Number.isFinite(mbits) || scale === undefined) {
          throw guest.failure(`iperf3 ${name} failed (${value})${backendLog(backend.output())}`);
        }
        const bytes = Number(amount) * scale;
        return {
          gbps: mbits / 1000,
          bytes,
          backendCpuSeconds: cpu,
          cpuSecondsPerGB: cpu / (bytes / 1e9),
          qemuCpuSeconds: qemuCpu,
        };
      };
      const guestMtu = Number(await guest.waitForMark("mtu", timeoutMs)) || null;
      const up = await direction("up");
      const down = await direction("down");
      const peakRssKiB = processPeakRssKiB(pid);
      await guest.waitForDone(60_000).catch(() => {});
      return {
        backend: kind,
        up,
        down,
        peakRssKiB,
        measuredProcess: backend.pid === null ? "qemu (slirp runs inside QEMU)" : "backend",
        bootMs: guest.bootMs,
        guestMtu,
      };
    } finally {
      await backend.stop();
    }
  } finally {
    await iperf.close();
  }
}

function backendLog(output: string): string {
  const tail = output.trim().split("\n").slice(-20).join("\n");
  return tail === "" ? "" : `\n--- backend output ---\n${tail}`;
}
