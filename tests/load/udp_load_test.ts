/**
 * UDP load through the REAL daemon over vhost-user (the TypeScript front-end harness
 * with the scripted guest draining its RX ring): datagrams from the guest to a host
 * echo peer via the gateway and their echoes back, and datagrams from a host socket
 * to the guest through a `-u` forward (issue 16, item 5: half of them were lost).
 * Each datagram carries its index and a payload seeded by it: a corrupt one fails the
 * test, losses are counted and must stay under 2 % at a rate the guest can take.
 *
 * Environment: TPASST_LOAD_DATAGRAMS=N datagrams each way (default 20000),
 * TPASST_LOAD_UDP_RATE=N datagrams per second (default 10000).
 */

import assert from "node:assert/strict";
import { TEST_GATEWAY4 } from "../support/net/tcp_plan.ts";
import type { TestGuest } from "../support/net/tcp_guest.ts";
import { withDaemon } from "../net/daemon_run.ts";
import { freeUdpPort, UdpPeer } from "../net/host_peers.ts";
import { datagram, Tally } from "./udp_pattern.ts";
import {
  idleBaseline,
  PeakSampler,
  printFigures,
  resourceFigures,
  statsDump,
  timeUntil,
} from "./load_support.ts";

/** Datagrams sent each way. */
const DATAGRAMS = Number(Deno.env.get("TPASST_LOAD_DATAGRAMS") ?? "20000");
/** Datagrams sent per second (a rate the scripted guest drains). */
const RATE = Number(Deno.env.get("TPASST_LOAD_UDP_RATE") ?? "10000");
/** Datagrams sent per timer tick. */
const PER_TICK = 50;
/** Smallest share of the datagrams that must arrive each way (issue 16: passt 98 %). */
const MIN_DELIVERY = 0.98;
/** Guest port the -u rule forwards to. */
const GUEST_UDP_PORT = 7000;
/** Time the last datagrams get to arrive. */
const DRAIN_MS = 3_000;

/** The UDP echo peer in a child process (tests/load/udp_echo_child.ts). */
class EchoChild {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncIterator<string>;
  port = 0;

  constructor(count: number, seed: number) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-ffi",
        "--allow-read",
        new URL("./udp_echo_child.ts", import.meta.url).pathname,
        String(count),
        String(seed),
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#lines = this.#child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(
      new LineSplitter(),
    )[Symbol.asyncIterator]();
  }

  /** Waits for the child's port. */
  async ready(): Promise<void> {
    const line = (await this.#lines.next()).value ?? "";
    this.port = Number(/port (\d+)/.exec(line)?.[1]);
    if (!(this.port > 0)) throw new Error(`the UDP echo child said ${JSON.stringify(line)}`);
  }

  /** What the child received so far: distinct intact datagrams, and corrupt ones. */
  async tally(): Promise<{ received: number; corrupt: number }> {
    await this.#writer.write(new TextEncoder().encode("\n"));
    const line = (await this.#lines.next()).value ?? "";
    const m = /received (\d+) corrupt (\d+)/.exec(line);
    if (m === null) throw new Error(`the UDP echo child said ${JSON.stringify(line)}`);
    return { received: Number(m[1]), corrupt: Number(m[2]) };
  }

  /** Ends the child. */
  async stop(): Promise<void> {
    await this.#writer.close().catch(() => {});
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), 5_000);
    await this.#child.status;
    clearTimeout(timer);
    await this.#lines.return?.();
  }
}

/** Splits text into lines. */
class LineSplitter extends TransformStream<string, string> {
  constructor() {
    let rest = "";
    super({
      transform(chunk, out) {
        const parts = (rest + chunk).split("\n");
        rest = parts.pop()!;
        for (const p of parts) out.enqueue(p);
      },
      flush(out) {
        if (rest) out.enqueue(rest);
      },
    });
  }
}

/** The daemon's UDP counters and its frames toward the guest, from a statistics dump. */
function daemonUdpLines(dump: string): string {
  return dump.split("\n").filter((l) => /stats: (udp|to guest|link)/.test(l)).join("\n");
}

/** Calls `send(i)` for i = 0..DATAGRAMS-1 at {@link RATE} per second. */
async function paced(send: (i: number) => void): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < DATAGRAMS;) {
    const due = Math.min(
      DATAGRAMS,
      Math.floor(((performance.now() - t0) / 1000) * RATE) + PER_TICK,
    );
    for (; i < due; i++) send(i);
    await new Promise((r) => setTimeout(r, (PER_TICK / RATE) * 1000));
  }
  return performance.now() - t0;
}

/** The datagrams `g` received on `port` since `from`, fed to `tally`; returns the new `from`. */
function takeGuestDatagrams(g: TestGuest, port: number, tally: Tally, from: number): number {
  const list = g.datagrams;
  for (let k = from; k < list.length; k++) if (list[k].toPort === port) tally.add(list[k].data);
  return list.length;
}

Deno.test({
  name: `load: ${DATAGRAMS} UDP datagrams from the guest to a host echo peer and back`,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const peer = new EchoChild(DATAGRAMS, 1);
    try {
      await peer.ready();
      await withDaemon("vhost-user", [], async (d) => {
        const g = d.guest4;
        const pid = d.process.pid;
        const guestPort = await freeUdpPort();
        const idle = idleBaseline(pid);
        const peaks = new PeakSampler(pid);
        const echoed = new Tally(DATAGRAMS, 1);
        let seenGuest = 0;
        const sendMs = await paced((i) => {
          g.sendUdp(guestPort, TEST_GATEWAY4, peer.port, datagram(i, 1));
          if (i % 1000 === 0) seenGuest = takeGuestDatagrams(g, guestPort, echoed, seenGuest);
        });
        await timeUntil(() => g.datagrams.length >= DATAGRAMS, DRAIN_MS);
        takeGuestDatagrams(g, guestPort, echoed, seenGuest);
        const toHost = await peer.tally();
        peaks.stop();
        console.log(daemonUdpLines(await statsDump(d)));
        printFigures("udp-guest-to-host-and-back", {
          sent: DATAGRAMS,
          ratePerS: RATE,
          sendMs: Math.round(sendMs),
          hostReceived: toHost.received,
          hostCorrupt: toHost.corrupt,
          guestReceivedEchoes: echoed.delivered,
          guestCorrupt: echoed.corrupt,
          deliveredToHostPct: (100 * toHost.received) / DATAGRAMS,
          echoesDeliveredPct: (100 * echoed.delivered) / Math.max(1, toHost.received),
          ...resourceFigures(pid, idle, peaks),
        });
        assert.equal(toHost.corrupt, 0, "corrupt datagrams at the host");
        assert.equal(echoed.corrupt, 0, "corrupt datagrams at the guest");
        assert.ok(
          toHost.received >= DATAGRAMS * MIN_DELIVERY,
          `guest → host: ${toHost.received} of ${DATAGRAMS}`,
        );
        assert.ok(
          echoed.delivered >= toHost.received * MIN_DELIVERY,
          `host → guest (echoes): ${echoed.delivered} of ${toHost.received}`,
        );
      });
    } finally {
      await peer.stop();
    }
  },
});

Deno.test({
  name: `load: ${DATAGRAMS} UDP datagrams from a host socket to the guest through -u`,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const port = await freeUdpPort();
    const sender = await UdpPeer.open("127.0.0.1", false);
    try {
      await withDaemon("vhost-user", ["-u", `127.0.0.1/${port}:${GUEST_UDP_PORT}`], async (d) => {
        const g = d.guest4;
        const pid = d.process.pid;
        const idle = idleBaseline(pid);
        const peaks = new PeakSampler(pid);
        const tally = new Tally(DATAGRAMS, 2);
        let seen = 0;
        const sendMs = await paced((i) => {
          sender.send(datagram(i, 2), port, "127.0.0.1");
          if (i % 1000 === 0) seen = takeGuestDatagrams(g, GUEST_UDP_PORT, tally, seen);
        });
        await timeUntil(() => g.datagrams.length >= DATAGRAMS, DRAIN_MS);
        takeGuestDatagrams(g, GUEST_UDP_PORT, tally, seen);
        peaks.stop();
        console.log(daemonUdpLines(await statsDump(d)));
        printFigures("udp-host-to-guest-forward", {
          sent: DATAGRAMS,
          ratePerS: RATE,
          sendMs: Math.round(sendMs),
          guestReceived: tally.delivered,
          guestCorrupt: tally.corrupt,
          duplicates: tally.duplicates,
          deliveredPct: (100 * tally.delivered) / DATAGRAMS,
          ...resourceFigures(pid, idle, peaks),
        });
        assert.equal(tally.corrupt, 0, "corrupt datagrams at the guest");
        assert.ok(
          tally.delivered >= DATAGRAMS * MIN_DELIVERY,
          `host → guest: ${tally.delivered} of ${DATAGRAMS}`,
        );
      });
    } finally {
      await sender.close();
    }
  },
});
