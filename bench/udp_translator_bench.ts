/**
 * UDP packet rate through the translator, in one process: datagrams/s guest → host
 * (the guest's datagrams handed to `UdpTranslator.handlePacket()` in batches, ended by
 * `endOfBatch()`, toward a sink on 127.0.0.1) and host → guest (a source on
 * 127.0.0.1 sending to a `-u`-style listener, the guest link counting the frames).
 * The sink and the source are child processes on the helper's batched UDP sockets,
 * so that they are not what is measured. Two numbers per direction: datagrams per
 * second of wall time (the sink or the source may lose the race on a loaded machine),
 * and datagrams per CPU second of this process (the translator with its sockets and
 * the scripted guest; steadier when other work shares the cores).
 *
 *   deno run -A bench/udp_translator_bench.ts                      # this tree's translator
 *   deno run -A bench/udp_translator_bench.ts --net-dir /other/src/net  # another tree's
 *   TPASST_BENCH_DATAGRAMS=1000000 TPASST_BENCH_PAYLOAD=64 deno run -A bench/udp_translator_bench.ts
 *
 * `--net-dir` runs the translator of another checkout (e.g. before a change) under the
 * same sink, source and conditions.
 *
 * @module
 */

import process from "node:process";
import { UDP_MAX_BATCH, UdpMessageRecords, UdpSocket } from "../ffi/udp_socket.ts";
import { WOULD_BLOCK } from "../ffi/tcp_socket.ts";

/** Datagrams per direction. */
const COUNT = Number(Deno.env.get("TPASST_BENCH_DATAGRAMS") ?? "300000");
/** UDP payload bytes per datagram. */
const PAYLOAD = Number(Deno.env.get("TPASST_BENCH_PAYLOAD") ?? "64");
/** Guest datagrams per TX batch (one endOfBatch each), like a virtqueue kick's worth. */
const GUEST_BATCH = 64;
/** The sink and the source stop after this long without progress, in ms. */
const IDLE_LIMIT_MS = 2000;
/** Room per datagram in the children's receive buffer. */
const SLOT = 2048;
const LOOPBACK4 = new Uint8Array([127, 0, 0, 1]);

/** Ethernet + IPv4 header bytes before the UDP header in a guest frame. */
const L4_OFFSET = 14 + 20;
/** UDP header length (RFC 768). */
const UDP_HEADER = 8;

/** CPU seconds (user + system) this process has used. */
function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** What one direction measured. */
interface Result {
  /** Datagrams the translator sent or delivered per second of wall time. */
  rate: number;
  /** Datagrams through the translator per CPU second of this process. */
  perCpuSecond: number;
  /** Datagrams that reached the far end. */
  delivered: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Child: receives on 127.0.0.1 until COUNT arrived or idle; prints count and span.
 * It spins instead of sleeping, so that its socket never overflows.
 */
function sink(): void {
  const socket = UdpSocket.open(4, { address: LOOPBACK4 });
  console.log(socket.localAddress().port);
  const buffer = new Uint8Array(SLOT * UDP_MAX_BATCH);
  const records = new UdpMessageRecords(UDP_MAX_BATCH);
  let got = 0;
  let last = performance.now();
  while (got < COUNT && performance.now() - last < IDLE_LIMIT_MS) {
    const n = socket.receiveBatch(buffer, SLOT, records);
    if (n === WOULD_BLOCK) continue;
    last = performance.now();
    got += n;
  }
  // Wall-clock time of the last datagram, comparable with the parent's Date.now().
  console.log(JSON.stringify({ got, lastAt: Date.now() - (performance.now() - last) }));
  socket.close();
}

/** Child: sends COUNT datagrams of PAYLOAD bytes to 127.0.0.1:`port` in full batches. */
function source(port: number): void {
  const socket = UdpSocket.open(4);
  const buffer = new Uint8Array(PAYLOAD * UDP_MAX_BATCH);
  const records = new UdpMessageRecords(UDP_MAX_BATCH);
  for (let i = 0; i < UDP_MAX_BATCH; i++) records.set(i, i * PAYLOAD, PAYLOAD, LOOPBACK4, port);
  let sent = 0;
  while (sent < COUNT) {
    const n = socket.sendBatch(buffer, records, Math.min(UDP_MAX_BATCH, COUNT - sent));
    if (n !== WOULD_BLOCK) sent += n;
  }
  socket.close();
}

/** Starts this file as a child in `mode`; returns the process and its stdout lines. */
function child(args: string[]) {
  const spawned = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, ...args],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = spawned.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  const nextLine = async (): Promise<string> => {
    for (;;) {
      const cut = pending.indexOf("\n");
      if (cut >= 0) {
        const line = pending.slice(0, cut);
        pending = pending.slice(cut + 1);
        return line;
      }
      const { value, done } = await lines.read();
      if (done) throw new Error("the child ended early");
      pending += value;
    }
  };
  return { process: spawned, nextLine };
}

/** Returns after Deno's next I/O phase (lets asynchronous sockets run). */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

// deno-lint-ignore no-explicit-any
type Module = any;

async function guestToHost(net: Module): Promise<Result> {
  const { GuestSender } = await import(`${net}/guest_sender.ts`) as Module;
  const { UdpTranslator } = await import(`${net}/udp/translator.ts`) as Module;
  const { testRules, TEST_GATEWAY4, TEST_GUEST4 } = await import(
    `${net}/../../tests/support/net/tcp_plan.ts`
  );
  const { newL4Packet } = await import(`${net}/l4_handler.ts`) as Module;
  const { buildUdp, newUdpHeader, parseUdp } = await import(`${net}/wire/udp.ts`) as Module;
  const sink = child(["--sink"]);
  const port = Number(await sink.nextLine());
  const sender = new GuestSender(0x9a559a559a55);
  const udp = new UdpTranslator(sender, testRules());
  const frame = new Uint8Array(L4_OFFSET + UDP_HEADER + PAYLOAD);
  buildUdp(frame, L4_OFFSET, 40000, port, PAYLOAD);
  const p = newL4Packet();
  p.family = 4;
  p.protocol = 17;
  p.src4 = TEST_GUEST4;
  p.dst4 = TEST_GATEWAY4;
  p.frame = frame;
  p.ipOffset = 14;
  p.l4Offset = L4_OFFSET;
  p.l4Length = UDP_HEADER + PAYLOAD;
  p.checksumPending = true;
  // the header as the stack hands it over (a tree whose translator parses it ignores this)
  p.udp = newUdpHeader();
  parseUdp(frame, L4_OFFSET, frame.length, p.udp);
  // One datagram first, so that the flow and its socket exist (node:dgram binds
  // asynchronously) before the clock starts.
  udp.handlePacket(p, performance.now());
  udp.endOfBatch(performance.now());
  await sleep(200);
  const t0 = Date.now();
  const cpu0 = cpuSeconds();
  for (let sent = 1; sent < COUNT;) {
    const now = performance.now();
    for (let i = 0; i < GUEST_BATCH && sent < COUNT; i++, sent++) udp.handlePacket(p, now);
    udp.endOfBatch(now);
    await nextTurn();
  }
  const offeredAt = Date.now();
  const result = JSON.parse(await sink.nextLine());
  const cpu = cpuSeconds() - cpu0; // node:dgram's sends finish asynchronously: count them too
  await sink.process.status;
  console.log(`  translator counters: ${JSON.stringify(udp.counters)}`);
  const sent = udp.counters.toHost - udp.counters.socketErrors - 1;
  udp.close();
  // Sent once handed over (the helper's sockets) or once at the sink (node:dgram's
  // asynchronous sends), whichever is later.
  const ms = Math.max(offeredAt, result.lastAt) - t0;
  return { rate: sent / (ms / 1000), perCpuSecond: sent / cpu, delivered: result.got };
}

async function hostToGuest(net: Module): Promise<Result> {
  const { GuestSender } = await import(`${net}/guest_sender.ts`) as Module;
  const { UdpTranslator } = await import(`${net}/udp/translator.ts`) as Module;
  const { testRules, TEST_GUEST4 } = await import(`${net}/../../tests/support/net/tcp_plan.ts`);
  const sender = new GuestSender(0x9a559a559a55);
  const udp = new UdpTranslator(sender, testRules());
  let delivered = 0;
  let first = 0;
  let last = 0;
  sender.setLink({
    kind: "counting",
    l4ChecksumsOptional: false,
    maxFrameLength: 65535,
    sendFrame() {
      last = performance.now();
      if (delivered++ === 0) first = last;
      return 0; // SendResult.Sent
    },
    flush() {},
    onWritable() {},
  });
  sender.guestIpv4Seen = TEST_GUEST4;
  const port = await udp.listen("127.0.0.1", 0, 5353);
  const cpu0 = cpuSeconds();
  const source = child(["--source", String(port)]);
  const status = source.process.status;
  let sourceDone = false;
  status.then(() => sourceDone = true);
  let seen = -1;
  let seenAt = performance.now();
  while (delivered < COUNT) {
    await sleep(50);
    if (delivered !== seen) {
      seen = delivered;
      seenAt = performance.now();
    } else if (sourceDone && performance.now() - seenAt > IDLE_LIMIT_MS) break;
  }
  await status;
  const cpu = cpuSeconds() - cpu0;
  console.log(`  translator counters: ${JSON.stringify(udp.counters)}`);
  udp.close();
  return {
    rate: delivered / ((last - first) / 1000),
    perCpuSecond: delivered / cpu,
    delivered,
  };
}

if (Deno.args[0] === "--sink") {
  sink();
} else if (Deno.args[0] === "--source") {
  source(Number(Deno.args[1]));
} else {
  const at = Deno.args.indexOf("--net-dir");
  const net = at >= 0 ? Deno.args[at + 1] : new URL("../src/net", import.meta.url).pathname;
  const dir = net.startsWith("/") ? `file://${net}` : net;
  console.log(`UDP translator ${dir}: ${COUNT} datagrams of ${PAYLOAD} B each way`);
  const show = (name: string, r: Result, where: string) =>
    console.log(
      `${name}  ${(r.rate / 1000).toFixed(1)} k datagrams/s, ` +
        `${(r.perCpuSecond / 1000).toFixed(1)} k per CPU second ` +
        `(${r.delivered} of ${COUNT} reached the ${where})`,
    );
  show("guest->host", await guestToHost(dir), "sink");
  show("host->guest", await hostToGuest(dir), "guest");
  Deno.exit(0);
}
