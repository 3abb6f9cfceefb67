/**
 * The JavaScript cost of one guest → host TCP segment on the vhost-user datapath, in
 * one process and without QEMU: a scripted guest puts a segment the way a Linux guest
 * does at tpasst's MTU of 65520 (an indirect chain: the virtio-net header and the 66
 * bytes of Ethernet, IPv4 and TCP headers with timestamps in one buffer, the 65468
 * payload bytes in three page fragments of a 32 KiB compound page each, as counted
 * under a real guest's upload: four buffers per frame; NEEDS_CSUM, no GSO) on the TX
 * ring of the daemon's own VhostUserLink, and kicks it. The frame goes through the network stack and the TCP translator, which
 * sends the payload from "guest memory" to a loopback socket (a sink in a child
 * process reads it) and writes its ACK into the RX ring; the guest reads that ACK,
 * re-posts its RX buffer and sends the next segment from the acknowledged edge.
 *
 * Prints this process's CPU microseconds per segment (the JavaScript: the ring
 * walk, the stack's parse, the translator, the ACK; the system calls' kernel time is
 * left out) and bytes allocated on the JS heap per segment, after a warm-up: the least
 * and the median of short rounds (the least is the least disturbed on a shared
 * machine). The guest's own work (writing 66 header bytes, reading the ACK) is in it,
 * the same for every tree.
 *
 * `--stub-host` puts a stand-in in place of the host socket: it takes every byte at once
 * without a system call (after building the gather list a real send passes to the
 * kernel), so that only the JavaScript is measured.
 *
 * `--allocations` then samples this tree's allocations over one more round (V8's
 * sampling heap profiler) and prints the sites that allocate the most per segment,
 * each with its callers.
 *
 * `--cpu-profile` then samples where this tree's JavaScript spends its time over a few
 * more rounds (V8's CPU profiler) and prints the functions with the most samples.
 *
 * `--tree DIR` runs the same rounds over another checkout's modules (e.g. the code
 * before a change) in the same process, round by round in turn with this one, and
 * prints the ratio DIR / this tree per round (median and quartiles).
 *
 *   deno run -A --v8-flags=--expose-gc bench/upload_frame_bench.ts [--stub-host] [--allocations] [--cpu-profile] [--tree DIR]
 *
 * Everything stays on 127.0.0.1: the guest's gateway maps to the host's loopback, and
 * the bench's host side refuses any other connect.
 *
 * @module
 */

import inspector from "node:inspector";
import process from "node:process";
import { memoryOverDrivers } from "./driver_memory.ts";
import { benchTrees } from "./tree_args.ts";

/** Ring size of both queues. */
const RING_SIZE = 256;
/** Guest RX buffer size (Linux's mergeable buffers are about a page). */
const RX_BUFFER_BYTES = 4096;
/** RX chains kept posted. */
const POSTED_RX = 64;
/** Guest-physical bases of the two rings' regions. */
const RX_BASE = 0x10_0000;
const TX_BASE = 0x1000_0000;
/** The TCP payload of one segment at MTU 65520: 65520 - 20 (IPv4) - 32 (TCP). */
const PAYLOAD = 65468;
/** Where the payload lies: the ends of three fragments of 32 KiB compound pages. */
const FRAGMENTS = [24_576, 32_768, PAYLOAD - 24_576 - 32_768];
/** Ethernet (14) + IPv4 (20) + TCP with the timestamps option (32). */
const HEADERS = 66;
const IP_AT = 14;
const TCP_AT = 34;
/** The guest's payload pages. */
const PAGE = 4096;
/** virtio 1.2 §5.1.6: the header's fields (12 bytes with num_buffers). */
const NET_HDR_SIZE = 12;
const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/** Used ring layout (virtio 1.2 §2.7.8): idx at 2, elements of 8 bytes from 4, id first. */
const USED_IDX = 2;
const USED_RING = 4;
const USED_ELEM_SIZE = 8;
/** TCP flags (RFC 9293 §3.1). */
const TCP_SYN = 0x02;
const TCP_ACK = 0x10;
const TCP_PSH = 0x08;
const GUEST_PORT = 40_000;
const GUEST_ISN = 1_000;
/** Guest MAC, the stack's MAC is learned from its first frame. */
const GUEST_MAC = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

const SEGMENTS_PER_ROUND = 5_000;
/** Average bytes between two samples of the allocation profile (--allocations). */
const ALLOCATION_SAMPLING_BYTES = 64;
/** Segments of the heap measure in each round (a few hundred KiB of allocations). */
const HEAP_SEGMENTS = 200;
const ROUNDS = Number(Deno.env.get("TPASST_BENCH_ROUNDS") ?? "20");
const WARM_UP_ROUNDS = 4;

/** One round: sends `segments` segments; returns CPU µs and heap bytes per segment. */
type Runner = (segments: number) => Promise<{ cpuMicros: number; heapBytes: number }>;

/**
 * This process's CPU time (user + system) in microseconds. The kernel splits it into
 * user and system by ticks, too coarsely for a few microseconds per segment; the sum
 * is exact. The system part (the loopback send, the same in every tree) is in it.
 */
function cpuMicros(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/** Starts the sink: a child process that accepts one connection and reads it to the end. */
async function startSink(): Promise<{ port: number; stop: () => Promise<void> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "--sink"],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const first = await reader.read();
  const port = Number(first.value?.trim());
  if (!(port > 0)) throw new Error(`the sink did not start: ${first.value}`);
  return {
    port,
    stop: async () => {
      reader.releaseLock();
      child.kill();
      await child.status;
    },
  };
}

/** Runs as the sink: listens on 127.0.0.1, prints the port, reads every connection. */
async function sink(): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log((listener.addr as Deno.NetAddr).port);
  const buffer = new Uint8Array(1 << 20);
  for await (const conn of listener) {
    (async () => {
      while ((await conn.read(buffer)) !== null) { /* discard */ }
    })().catch(() => {});
  }
}

/** What a host connection needs to build its gather list: the translator's scattered frame. */
interface Scattered {
  vectorsOf(from: number, length: number, vectors: { clear(): void }): number;
}

/**
 * With --stub-host: a host connection that takes every byte at once without a system
 * call (it builds the gather list a real send would pass to sendmsg, then drops it),
 * reports its connect done on the next task, and has a send buffer that never fills.
 */
function stubConnection(vectors: { clear(): void }) {
  /** EVENT_WRITABLE (EPOLLOUT): the connect is done. */
  const EVENT_WRITABLE = 4;
  return {
    setHandler(handler: (events: number, now: number) => void) {
      setTimeout(() => handler(EVENT_WRITABLE, performance.now()), 0);
    },
    peek: () => -1,
    discard() {},
    send: (data: Uint8Array) => data.length,
    sendScattered(frame: Scattered, from: number, length: number) {
      vectors.clear();
      return frame.vectorsOf(from, length, vectors);
    },
    queues(out: { sendBuffer: number; sendQueued: number }) {
      out.sendBuffer = 4 << 20;
      out.sendQueued = 0;
    },
    shutdownWrite() {},
    takeError: () => null,
    requestWritable() {},
    wantReadable() {},
    close() {},
  };
}

/** Sets up a link, stack and translator from the checkout at `root` (a directory URL). */
async function setUp(root: URL, sinkPort: number, stubHost: boolean): Promise<Runner> {
  const at = (path: string) => new URL(path, root).href;
  const { VhostUserLink } = await import(at("src/tap/vhost_user_link.ts"));
  const { GuestMemoryMap } = await import(at("src/vhost_user/guest_memory_map.ts"));
  const { SplitRingDriver } = await import(at("tests/support/virtio/split_ring_driver.ts"));
  const { NetworkStack } = await import(at("src/net/stack.ts"));
  const { TcpTranslator } = await import(at("src/net/tcp/translator.ts"));
  const { nativeHostTcp } = await import(at("src/net/tcp/host_socket.ts"));
  const { buildForwardRules } = await import(at("src/net/plan/fwd.ts"));
  const { dualStackPlan } = await import(at("tests/support/net/built_plan.ts"));
  const { EventLoop } = await import(at("src/loop/event_loop.ts"));
  const { setTcpChecksumV4 } = await import(at("src/net/wire/tcp_header.ts"));
  const { buildIpv4 } = await import(at("src/net/wire/ipv4.ts"));

  const features = {
    eventIndex: false,
    indirectDescriptors: true,
    mergeableRxBuffers: true,
    checksumOffload: true,
    guestChecksum: true,
  };
  const rx = new SplitRingDriver({
    size: RING_SIZE,
    index: 0,
    features,
    base: RX_BASE,
    dataBytes: POSTED_RX * RX_BUFFER_BYTES + PAGE,
  });
  const tx = new SplitRingDriver({
    size: RING_SIZE,
    index: 1,
    features,
    base: TX_BASE,
    dataBytes: 3 * PAGE + FRAGMENTS.length * 32_768,
  });
  // The daemon's memory map over the drivers' bytes (one region each, as mapped memfds).
  const memory = memoryOverDrivers(GuestMemoryMap, [rx, tx]);

  const plan = dualStackPlan();
  const stack = new NetworkStack(plan);
  const rules = buildForwardRules(plan);
  const loop = new EventLoop();
  // Runs until the process exits (host sockets' events during the handshake and pauses).
  loop.run().catch((error: unknown) => console.error(`event loop: ${error}`));
  const native = nativeHostTcp(loop);
  const { IoVectors } = await import(at("ffi/io_vectors.ts"));
  let hostName = "";
  const host = {
    connect(name: string, port: number, address?: Uint8Array) {
      if (name !== "127.0.0.1") {
        throw new Error(`the bench connects to 127.0.0.1 only, not ${name}`);
      }
      hostName = name;
      return stubHost ? stubConnection(new IoVectors(64)) : native.connect(name, port, address);
    },
    listen(): never {
      throw new Error("the bench listens on nothing");
    },
  };
  const tcp = new TcpTranslator(stack.sender, rules, { host, loop });
  stack.registerL4(6, tcp);
  const link = new VhostUserLink(stack);
  link.startVring({ ...rx.vring(), memory }, 0);
  link.startVring({ ...tx.vring(), memory }, 0);
  // The guest's RX buffers: one page each, posted again once the stack used them.
  const rxAddress = new Map<number, number>();
  for (let i = 0; i < POSTED_RX; i++) {
    const addr = rx.alloc(RX_BUFFER_BYTES);
    const head = rx.addChain([{ addr, length: RX_BUFFER_BYTES, writable: true }]);
    if (head === null) throw new Error("no RX descriptors");
    rxAddress.set(head, addr);
  }

  // Where the guest writes its segments' first bytes: the handshake's in one buffer, the
  // data segment's header buffer (its payload pages follow in an indirect table).
  const controlAddr = tx.alloc(PAGE);
  const headerAddr = tx.alloc(PAGE);
  const payloadPages: number[] = [];
  for (const n of FRAGMENTS) payloadPages.push(tx.alloc(n));
  const header = tx.bytes.subarray(headerAddr - TX_BASE, headerAddr - TX_BASE + PAGE);
  const control = tx.bytes.subarray(controlAddr - TX_BASE, controlAddr - TX_BASE + PAGE);
  const headerView = new DataView(header.buffer, header.byteOffset);
  const controlView = new DataView(control.buffer, control.byteOffset);
  const stackMac = new Uint8Array(6);
  new DataView(stackMac.buffer).setUint16(0, Math.floor(stack.sender.ourMac / 2 ** 32));
  new DataView(stackMac.buffer).setUint32(2, stack.sender.ourMac % 2 ** 32);

  const guest4 = plan.ipv4!.address;
  const gateway4 = plan.ipv4!.gateway!;

  /** Writes Ethernet + IPv4 + TCP headers (with timestamps) at `frame[12..]`. */
  const writeHeaders = (
    bytes: Uint8Array,
    view: DataView,
    payload: number,
    flags: number,
    seq: number,
    ack: number,
  ) => {
    const f = NET_HDR_SIZE;
    bytes.fill(0, 0, NET_HDR_SIZE + HEADERS);
    bytes.set(stackMac, f);
    bytes.set(GUEST_MAC, f + 6);
    view.setUint16(f + 12, 0x0800);
    buildIpv4(bytes, f + IP_AT, {
      payloadLength: 32 + payload,
      protocol: 6,
      src: guest4,
      dst: gateway4,
    });
    const t = f + TCP_AT;
    view.setUint16(t, GUEST_PORT);
    view.setUint16(t + 2, sinkPort);
    view.setUint32(t + 4, seq >>> 0);
    view.setUint32(t + 8, ack >>> 0);
    bytes[t + 12] = 8 << 4; // 32 bytes
    bytes[t + 13] = flags;
    view.setUint16(t + 14, 65535); // window (scale 7 from the SYN)
    // Options: NOP NOP timestamps (RFC 7323 §3).
    bytes.set([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0], t + 20);
  };

  // The ACK the stack sent last: read from the RX used ring, buffers posted again.
  const usedRing = new DataView(rx.bytes.buffer, rx.usedAddr - RX_BASE);
  let lastRxUsed = 0;
  let hostSeq = 0;
  let acked = 0;
  let sawSynAck = false;
  const rxBytes = rx.bytes;
  const rxView = new DataView(rxBytes.buffer, rxBytes.byteOffset);
  const readRx = () => {
    const idx = usedRing.getUint16(USED_IDX, true);
    while (lastRxUsed !== idx) {
      const slot = lastRxUsed & (RING_SIZE - 1);
      const id = usedRing.getUint32(USED_RING + slot * USED_ELEM_SIZE, true);
      const addr = rxAddress.get(id);
      if (addr === undefined) throw new Error(`RX used id ${id} was never posted`);
      const frame = addr - RX_BASE + NET_HDR_SIZE; // the frame's offset in rxBytes
      if (rxView.getUint16(frame + 12) === 0x0800 && rxBytes[frame + IP_AT + 9] === 6) {
        const t = frame + IP_AT + (rxBytes[frame + IP_AT] & 0x0f) * 4;
        const flags = rxBytes[t + 13];
        if ((flags & (TCP_SYN | TCP_ACK)) === (TCP_SYN | TCP_ACK)) {
          sawSynAck = true;
          hostSeq = (rxView.getUint32(t + 4) + 1) >>> 0;
        }
        if (flags & TCP_ACK) acked = rxView.getUint32(t + 8);
      }
      rx.offer(id);
      lastRxUsed = (lastRxUsed + 1) & 0xffff;
    }
  };

  /** Waits (letting the loop run) until `done()` or 5 s pass. */
  const waitFor = async (done: () => boolean, what: string) => {
    const deadline = performance.now() + 5_000;
    while (!done()) {
      if (performance.now() > deadline) throw new Error(`no ${what} within 5 s`);
      await new Promise((r) => setTimeout(r, 1));
      readRx();
    }
  };

  // The handshake: SYN (no payload, one buffer), SYN-ACK, ACK.
  const controlHead = (() => {
    writeHeaders(control, controlView, 0, TCP_SYN, GUEST_ISN, 0);
    // The SYN carries MSS 65495 and window scale 7 in place of the timestamps.
    control.set([2, 4, 0xff, 0xd7, 1, 3, 3, 7, 1, 1, 1, 0], NET_HDR_SIZE + TCP_AT + 20);
    setTcpChecksumV4(control.subarray(NET_HDR_SIZE), TCP_AT, 32, guest4, gateway4);
    return tx.addChain([{ addr: controlAddr, length: NET_HDR_SIZE + HEADERS, writable: false }]);
  })();
  if (controlHead === null) throw new Error("no TX descriptors for the SYN");
  link.kick(1, performance.now());
  await waitFor(() => sawSynAck, "SYN-ACK from the stack");
  if (hostName !== "127.0.0.1") throw new Error("the flow's host side is not on 127.0.0.1");
  let seq = (GUEST_ISN + 1) >>> 0;
  writeHeaders(control, controlView, 0, TCP_ACK, seq, hostSeq);
  setTcpChecksumV4(control.subarray(NET_HDR_SIZE), TCP_AT, 32, guest4, gateway4);
  tx.offer(controlHead);
  link.kick(1, performance.now());
  readRx();

  // The data segment's fixed parts: the virtio-net header (the checksum left to the
  // device) and the headers; per segment only the sequence number changes. The chain is
  // built once and offered again each time the stack has returned it.
  writeHeaders(header, headerView, PAYLOAD, TCP_ACK | TCP_PSH, seq, hostSeq);
  header[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  headerView.setUint16(6, TCP_AT, true); // csum_start
  headerView.setUint16(8, 16, true); // csum_offset: TCP's checksum field
  const dataHead = tx.addChain(
    [
      { addr: headerAddr, length: NET_HDR_SIZE + HEADERS, writable: false },
      ...payloadPages.map((addr, i) => ({ addr, length: FRAGMENTS[i], writable: false })),
    ],
    true,
  );
  if (dataHead === null) throw new Error("no TX descriptors for the data chain");
  let offered = true; // addChain offered it
  let stalls = 0;

  const sendSegments = (count: number) => {
    for (let i = 0; i < count; i++) {
      headerView.setUint32(NET_HDR_SIZE + TCP_AT + 4, seq);
      if (!offered) tx.offer(dataHead);
      offered = false;
      link.kick(1, performance.now());
      readRx();
      if (acked === seq) return i; // the host socket took nothing: backpressure
      seq = acked;
    }
    return count;
  };

  /** Sends `count` segments, pausing for the sink when the host socket is full. */
  const run = async (count: number) => {
    let left = count;
    let paused = 0;
    while (left > 0) {
      left -= sendSegments(left);
      if (left > 0) {
        stalls++;
        // Let the sink drain and the loop report the socket writable (not counted).
        const pausedAt = cpuMicros();
        await new Promise((r) => setTimeout(r, 1));
        paused += cpuMicros() - pausedAt;
      }
    }
    if (stalls > count) throw new Error(`${stalls} stalls in ${count} segments`);
    return paused;
  };

  return async (count) => {
    // Heap: a short run after a full collection, short enough that no scavenge
    // runs in it (the young generation's first semi-space is 1 MiB or more).
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    const heapBefore = Deno.memoryUsage().heapUsed;
    await run(HEAP_SEGMENTS);
    const heapBytes = (Deno.memoryUsage().heapUsed - heapBefore) / HEAP_SEGMENTS;
    const before = cpuMicros();
    const paused = await run(count);
    const cpu = cpuMicros() - before - paused;
    return { cpuMicros: cpu / count, heapBytes: gc === undefined ? NaN : heapBytes };
  };
}

/** Where a profile's sample or allocation was: V8's Runtime.CallFrame, as used here. */
interface CallFrame {
  functionName: string;
  url: string;
}

/**
 * A function and its file, relative to the checkout; not its line: the lines are the
 * transpiled JavaScript's, not the source's.
 */
function frameName(frame: CallFrame): string {
  return `${frame.functionName || "(anonymous)"} ${
    frame.url.replace(/^.*\/(src|ffi|bench|tests)\//, "$1/")
  }`;
}

/** An inspector session on this isolate, and a Promise-returning `post` of it. */
function connectInspector<R>(): {
  post(method: string, params?: object): Promise<R>;
  disconnect(): void;
} {
  const session = new inspector.Session();
  session.connect();
  return {
    post: (method, params = {}) =>
      new Promise<R>((done, fail) =>
        session.post(
          method,
          params,
          (error, result) => error ? fail(error) : done((result ?? {}) as R),
        )
      ),
    disconnect: () => session.disconnect(),
  };
}

/** A node of V8's sampling heap profile (HeapProfiler.SamplingHeapProfileNode). */
interface AllocationNode {
  callFrame: CallFrame;
  selfSize: number;
  children: AllocationNode[];
}

/** Samples the allocations of one round of `runner` and prints the top sites per segment. */
async function printAllocations(runner: Runner): Promise<void> {
  const { post, disconnect } = connectInspector<{ profile?: { head: AllocationNode } }>();
  await post("HeapProfiler.enable");
  await post("HeapProfiler.startSampling", {
    samplingInterval: ALLOCATION_SAMPLING_BYTES,
    // Every allocation counts, not only what is still alive at the end.
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  await runner(SEGMENTS_PER_ROUND);
  const { profile } = await post("HeapProfiler.stopSampling");
  disconnect();
  const sites = new Map<string, number>();
  const walk = (node: AllocationNode, callers: string[]) => {
    const frames = [frameName(node.callFrame), ...callers];
    const path = frames.slice(0, 3).join(" < ");
    if (node.selfSize > 0) sites.set(path, (sites.get(path) ?? 0) + node.selfSize);
    for (const child of node.children) walk(child, frames);
  };
  if (profile !== undefined) walk(profile.head, []);
  const segments = SEGMENTS_PER_ROUND + HEAP_SEGMENTS;
  console.log(
    `allocation sites (sampled every ${ALLOCATION_SAMPLING_BYTES} B), bytes per segment:`,
  );
  for (const [path, bytes] of [...sites].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
    console.log(`${(bytes / segments).toFixed(0).padStart(6)}  ${path}`);
  }
}

/** A node of V8's CPU profile (Profiler.ProfileNode). */
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}

/** Microseconds between two samples of the CPU profile (--cpu-profile). */
const CPU_SAMPLING_MICROS = 25;
/** Rounds of `SEGMENTS_PER_ROUND` the CPU profile covers. */
const CPU_PROFILE_ROUNDS = 10;

/**
 * Samples where this tree's JavaScript spends its time over a few rounds of `runner`
 * (V8's CPU profiler) and prints the functions with the most samples of their own and,
 * beside each, its share with the functions it calls.
 */
async function printCpuProfile(runner: Runner): Promise<void> {
  const { post, disconnect } = connectInspector<{ profile?: { nodes: ProfileNode[] } }>();
  await post("Profiler.enable");
  await post("Profiler.setSamplingInterval", { interval: CPU_SAMPLING_MICROS });
  await post("Profiler.start");
  for (let round = 0; round < CPU_PROFILE_ROUNDS; round++) await runner(SEGMENTS_PER_ROUND);
  const { profile } = await post("Profiler.stop");
  disconnect();
  if (profile === undefined) return;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  // A function's total counts each sample once, however often it recurs on the stack.
  const walk = (node: ProfileNode, onStack: Set<string>): number => {
    const key = frameName(node.callFrame);
    let hits = node.hitCount ?? 0;
    self.set(key, (self.get(key) ?? 0) + hits);
    const inner = new Set(onStack).add(key);
    for (const child of node.children ?? []) hits += walk(byId.get(child)!, inner);
    if (!onStack.has(key)) total.set(key, (total.get(key) ?? 0) + hits);
    return hits;
  };
  const all = walk(profile.nodes[0], new Set());
  // Not the segments' JavaScript: the runner's full collection before each round's heap
  // measure is most of the collector's samples.
  const outside = ["(root)", "(idle)", "(program)", "(garbage collector)"].map((k) => `${k} `);
  const js = all - outside.reduce((sum, k) => sum + (self.get(k) ?? 0), 0);
  console.log(
    `CPU profile, ${CPU_PROFILE_ROUNDS} rounds (a sample every ${CPU_SAMPLING_MICROS} µs): ` +
      `${js} samples in JavaScript of ${all}; % of those, own / with callees:`,
  );
  const ranked = [...self].filter(([key]) => !outside.includes(key)).sort((a, b) => b[1] - a[1]);
  for (const [key, hits] of ranked.slice(0, 30)) {
    const pct = (n: number) => (100 * n / js).toFixed(1).padStart(5);
    console.log(`${pct(hits)} ${pct(total.get(key) ?? hits)}  ${key}`);
  }
}

async function main(): Promise<void> {
  const trees = benchTrees(Deno.args);
  const sinkProcess = await startSink();
  try {
    const runners: Runner[] = [];
    const stubHost = Deno.args.includes("--stub-host");
    for (const tree of trees) runners.push(await setUp(tree.root, sinkProcess.port, stubHost));
    const cpu = trees.map(() => [] as number[]);
    const heap = trees.map(() => [] as number[]);
    for (let round = 0; round < WARM_UP_ROUNDS + ROUNDS; round++) {
      for (let k = 0; k < trees.length; k++) {
        const t = (k + round) % trees.length; // each tree goes first in turn
        const r = await runners[t](SEGMENTS_PER_ROUND);
        if (round >= WARM_UP_ROUNDS) {
          cpu[t].push(r.cpuMicros);
          heap[t].push(r.heapBytes);
        }
      }
    }
    const sorted = (values: number[]) => values.toSorted((a, b) => a - b);
    const median = (values: number[]) => sorted(values)[values.length >> 1];
    console.log(
      `one ${PAYLOAD}-byte segment guest → host (TX ring → stack → TCP → loopback socket, ` +
        `its ACK into the RX ring), ${ROUNDS} rounds of ${SEGMENTS_PER_ROUND}:`,
    );
    trees.forEach((tree, t) => {
      let line = `${tree.name}: CPU min ${sorted(cpu[t])[0].toFixed(2)}, median ${
        median(cpu[t]).toFixed(2)
      } µs per segment; JS heap ${median(heap[t]).toFixed(0)} B per segment (median)`;
      if (t > 0) {
        const ratios = sorted(cpu[t].map((v, i) => v / cpu[0][i]));
        const q = (p: number) => ratios[Math.floor(p * (ratios.length - 1))].toFixed(2);
        line += `; ratio to this tree per round ${q(0.5)} (quartiles ${q(0.25)}–${q(0.75)})`;
      }
      console.log(line);
    });
    if (Deno.args.includes("--allocations")) await printAllocations(runners[0]);
    if (Deno.args.includes("--cpu-profile")) await printCpuProfile(runners[0]);
  } finally {
    await sinkProcess.stop();
  }
  Deno.exit(0);
}

if (import.meta.main) {
  if (Deno.args.includes("--sink")) await sink();
  else await main();
}
