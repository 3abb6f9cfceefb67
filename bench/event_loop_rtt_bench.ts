/**
 * Request/response latency through `EventLoop`: a UDP socket of the helper watched by
 * the loop sends one datagram to an echo peer (a child process) and, in its readable
 * handler, sends the next as soon as the answer is read, so every round trip includes
 * one wake-up of the loop. Prints round-trip percentiles and this process's CPU time
 * per round trip for the loop waiting only on a worker thread between events
 * (hotWaitMs 0) and waiting up to 1 ms on the JS thread first (the daemon's setting).
 * Never passes or fails.
 *
 *   deno run -A bench/event_loop_rtt_bench.ts                       # this tree's loop
 *   deno run -A bench/event_loop_rtt_bench.ts --loop-dir /other/src/loop  # another tree's
 *   TPASST_BENCH_ROUND_TRIPS=20000 TPASST_BENCH_ROUNDS=5 deno run -A bench/event_loop_rtt_bench.ts
 *
 * `--loop-dir` runs the event loop of another checkout (e.g. before a change) with the
 * same two settings, alternating with this tree's under the same echo peer.
 *
 * @module
 */

import dgram from "node:dgram";
import process from "node:process";
import { UdpMessageRecords, UdpSocket } from "../ffi/udp_socket.ts";
import { EventLoop } from "../src/loop/event_loop.ts";

/** Round trips per measurement (the first WARM_UP are not counted). */
const ROUND_TRIPS = Number(Deno.env.get("TPASST_BENCH_ROUND_TRIPS") ?? "10000");
/** Measurements per variant, alternating. */
const ROUNDS = Number(Deno.env.get("TPASST_BENCH_ROUNDS") ?? "3");
const WARM_UP = 200;
const LOOPBACK4 = new Uint8Array([127, 0, 0, 1]);
const PAYLOAD_BYTES = 32;
/** Room for one received datagram. */
const SLOT = 2048;

interface LoopLike {
  watch(fd: number, handler: () => void): void;
  run(): Promise<void>;
  stop(): void;
  close(): void;
}

interface Variant {
  readonly name: string;
  readonly create: () => LoopLike;
}

/** CPU seconds (user + system) this process has used. */
function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Runs as the echo peer: answers every datagram on 127.0.0.1:`port`'s socket. */
async function echoPeer(): Promise<void> {
  const socket = dgram.createSocket("udp4");
  socket.on("message", (message, from) => socket.send(message, from.port, from.address));
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  console.log(socket.address().port);
}

async function measure(variant: Variant, peerPort: number) {
  const socket = UdpSocket.open(4, { address: LOOPBACK4, port: 0 });
  const loop = variant.create();
  const payload = new Uint8Array(PAYLOAD_BYTES);
  const records = new UdpMessageRecords(1);
  records.set(0, 0, PAYLOAD_BYTES, LOOPBACK4, peerPort);
  const received = new Uint8Array(SLOT);
  const receivedRecords = new UdpMessageRecords(1);
  const rtts: number[] = [];
  let sentAt = 0;
  let cpuAtWarmUp = 0;
  loop.watch(socket.fd, () => {
    while (socket.receiveBatch(received, SLOT, receivedRecords, 1) > 0) {
      rtts.push(performance.now() - sentAt);
      if (rtts.length === WARM_UP) cpuAtWarmUp = cpuSeconds();
      if (rtts.length === ROUND_TRIPS + WARM_UP) {
        loop.stop();
        return;
      }
      sentAt = performance.now();
      socket.sendBatch(payload, records, 1);
    }
  });
  const running = loop.run();
  sentAt = performance.now();
  socket.sendBatch(payload, records, 1);
  await running;
  const cpu = cpuSeconds() - cpuAtWarmUp;
  loop.close();
  socket.close();
  const sorted = rtts.slice(WARM_UP).sort((a, b) => a - b);
  const q = (p: number) => sorted[Math.floor(p * (sorted.length - 1))] * 1000;
  return { p50: q(0.5), p90: q(0.9), p99: q(0.99), cpuPerRoundTrip: (cpu / ROUND_TRIPS) * 1e6 };
}

async function main(): Promise<void> {
  const variants: Variant[] = [
    { name: "worker-thread wait (hotWaitMs 0)", create: () => new EventLoop() },
    { name: "JS-thread wait (hotWaitMs 1)", create: () => new EventLoop({ hotWaitMs: 1 }) },
  ];
  const at = Deno.args.indexOf("--loop-dir");
  if (at >= 0) {
    const dir = Deno.args[at + 1];
    const other = await import(`${new URL(`file://${dir}/`).href}event_loop.ts`);
    variants.push(
      { name: `${dir}: hotWaitMs 0`, create: () => new other.EventLoop() },
      { name: `${dir}: hotWaitMs 1`, create: () => new other.EventLoop({ hotWaitMs: 1 }) },
    );
  }
  const peer = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "--echo"],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = peer.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const first = await reader.read();
  const peerPort = Number(first.value?.trim());
  console.log(`${ROUND_TRIPS} round trips of ${PAYLOAD_BYTES} B per run, ${ROUNDS} runs each`);
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      for (const variant of variants) {
        const r = await measure(variant, peerPort);
        console.log(
          `${variant.name}: RTT p50 ${r.p50.toFixed(0)} p90 ${r.p90.toFixed(0)} p99 ${
            r.p99.toFixed(0)
          } µs, CPU ${r.cpuPerRoundTrip.toFixed(1)} µs per round trip`,
        );
      }
    }
  } finally {
    peer.kill();
    await peer.status;
  }
}

if (import.meta.main) {
  if (Deno.args.includes("--echo")) await echoPeer();
  else await main();
}
