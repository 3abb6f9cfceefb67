/**
 * A foreign multiqueue front-end against the real daemon: DPDK's testpmd
 * (`--vdev=net_virtio_user0,queues=4`, `--txq=4 --rxq=4`, txonly) sends UDP on all four
 * transmit queues of `bin/tpasst --vhost-user -d` for a few seconds; the daemon's link
 * counters (logged with -d when testpmd leaves) must show frames taken from every pair,
 * and nothing logged as an error. Both run in a network namespace of their own (the
 * datagrams go to the gateway, i.e. that namespace's loopback, where nobody listens).
 *
 * Needs root (the namespace) and `dpdk-testpmd` (Debian's dpdk-dev); ignored otherwise.
 */
import assert from "node:assert/strict";
import { TPASST_BIN } from "../e2e/backends.ts";

const QUEUE_PAIRS = 4;
/** How long testpmd sends. */
const SEND_SECONDS = 5;
/** The namespace's own address (the guest gets it) and its gateway. */
const HOST_ADDRESS = "192.0.2.2";
const GATEWAY = "192.0.2.1";
/** The daemon's MAC toward the guest (tpasst's default, as passt's). */
const BACKEND_MAC = "9a:55:9a:55:9a:55";

const testpmdMissing = (() => {
  if (Deno.uid() !== 0) return "needs root for a network namespace";
  try {
    Deno.statSync("/usr/bin/dpdk-testpmd");
    return null;
  } catch {
    return "dpdk-testpmd is not installed (Debian's dpdk-dev)";
  }
})();

async function run(command: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(command, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${command} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Collects a child's standard error as text. */
function collect(child: Deno.ChildProcess): { text: () => string; done: Promise<void> } {
  let text = "";
  const done = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) text += chunk;
  })().catch(() => {});
  return { text: () => text, done };
}

Deno.test({
  name: `testpmd with ${QUEUE_PAIRS} queue pairs: every transmit queue is served by bin/tpasst${
    testpmdMissing ? ` (ignored: ${testpmdMissing})` : ""
  }`,
  ignore: testpmdMissing !== null,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const namespace = `tpasst-mq-${Deno.pid}`;
    const dir = await Deno.makeTempDir({ prefix: "tpasst-testpmd-mq-" });
    const socket = `${dir}/vhost-user.sock`;
    await run("ip", ["netns", "add", namespace]);
    const inside = (...args: string[]) => run("ip", ["netns", "exec", namespace, ...args]);
    let daemon: Deno.ChildProcess | null = null;
    let testpmd: Deno.ChildProcess | null = null;
    try {
      await inside("ip", "link", "set", "lo", "up");
      await inside("ip", "link", "add", "mq0", "type", "veth", "peer", "name", "mq1");
      await inside("ip", "link", "set", "mq0", "up");
      await inside("ip", "link", "set", "mq1", "up");
      await inside("ip", "addr", "add", `${HOST_ADDRESS}/24`, "dev", "mq0");
      await inside("ip", "route", "add", "default", "via", GATEWAY);
      daemon = new Deno.Command("ip", {
        args: ["netns", "exec", namespace, TPASST_BIN, "-f", "-d", "--vhost-user", "-s", socket],
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
      const daemonLog = collect(daemon);
      const deadline = performance.now() + 15_000;
      while (!(await Deno.lstat(socket).then(() => true, () => false))) {
        assert.ok(performance.now() < deadline, `no socket: ${daemonLog.text()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      testpmd = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          namespace,
          "timeout",
          `${SEND_SECONDS}`,
          "dpdk-testpmd",
          "-l",
          "0-1",
          "--no-pci",
          "--no-huge",
          "-m",
          "1024",
          "--file-prefix",
          `tpasst-mq-${Deno.pid}`,
          `--vdev=net_virtio_user0,path=${socket},queues=${QUEUE_PAIRS},mac=02:00:00:00:00:01`,
          "--",
          `--txq=${QUEUE_PAIRS}`,
          `--rxq=${QUEUE_PAIRS}`,
          "--forward-mode=txonly",
          `--tx-ip=${HOST_ADDRESS},${GATEWAY}`,
          "--tx-udp=4000,9",
          `--eth-peer=0,${BACKEND_MAC}`,
          "--txpkts=64",
          "--nb-cores=1",
          "--auto-start",
          "--stats-period",
          "1",
        ],
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
      const testpmdLog = collect(testpmd);
      await testpmd.status; // `timeout` ends it after SEND_SECONDS
      await testpmdLog.done;
      testpmd = null;
      const counters = async () => {
        const until = performance.now() + 10_000;
        for (;;) {
          const line = daemonLog.text().split("\n").findLast((l) =>
            l.includes("frames per queue pair")
          );
          if (line !== undefined) return line;
          assert.ok(
            performance.now() < until,
            `no per-pair counters after testpmd left:\n${daemonLog.text().slice(-3000)}\n` +
              `testpmd:\n${testpmdLog.text().slice(-2000)}`,
          );
          await new Promise((r) => setTimeout(r, 100));
        }
      };
      const line = await counters();
      const tx = /TX (\d+(?:,\d+)*)$/.exec(line.trim())?.[1].split(",").map(Number) ?? [];
      assert.equal(tx.length, QUEUE_PAIRS, line);
      assert.ok(tx.every((n) => n > 0), `frames taken per pair: ${tx}`);
      const errors = daemonLog.text().split("\n").filter((l) => /\berror\b/i.test(l));
      assert.deepEqual(errors, []);
    } finally {
      if (testpmd !== null) {
        try {
          testpmd.kill("SIGKILL");
        } catch { /* gone */ }
        await testpmd.status;
      }
      if (daemon !== null) {
        try {
          daemon.kill("SIGTERM");
        } catch { /* gone */ }
        await daemon.status;
      }
      await run("ip", ["netns", "del", namespace]).catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
