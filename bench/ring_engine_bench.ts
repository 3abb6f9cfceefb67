/**
 * Throughput of the virtqueue engine and vhost-user link over in-process memory:
 * frames/s and Gbit/s for 64 B, 1500 B and 64 KiB frames, guest TX (ring → frame
 * handler, zero-copy; and large segments in page fragments behind an indirect table, taken
 * as scattered frames like the upload's) and guest RX (sendFrame → guest buffers, one copy). The
 * "guest" recycles the same chains, so only the device side is measured.
 * Prints numbers only.
 *
 * Then one turn of hostile rings (bench/ring_engine/hostile_bench.ts: chains that
 * share descriptors, so that a turn spends its whole descriptor budget), and the
 * same cases as above through the vhost-user session and the TypeScript front-end
 * (bench/ring_engine/harness_bench.ts): memfd memory, eventfd kicks, event loop.
 *
 * Run: `deno run -A bench/ring_engine_bench.ts [seconds-per-case]`
 *
 * @module
 */

import { Logger } from "../src/log/logger.ts";
import { type FrameHandler, type GuestLink, SendResult } from "../src/tap/frame_transport.ts";
import { VhostUserLink } from "../src/tap/vhost_user_link.ts";
import { ArrayGuestMemory } from "../tests/support/virtio/array_guest_memory.ts";
import { NET_HDR_SIZE } from "../src/tap/net_header.ts";
import { SplitRingDriver } from "../tests/support/virtio/split_ring_driver.ts";
import { RX_QUEUE_INDEX, TX_QUEUE_INDEX } from "../src/tap/vring_datapath.ts";
import { type BenchResult, benchResult, formatResult } from "./ring_engine/bench_result.ts";
import type { ScatteredFrame } from "../src/tap/frame_transport.ts";
import { IoVectors } from "../ffi/io_vectors.ts";

const RING_SIZE = 256;

class CountingHandler implements FrameHandler {
  frames = 0;
  bytes = 0;
  checksum = 0;
  handleFrame(frame: Uint8Array): void {
    this.frames++;
    this.bytes += frame.length;
    this.checksum ^= frame[12]; // touch the frame like a stack reading the EtherType
  }
  endOfBatch(): void {}
  linkUp(_link: GuestLink): void {}
  linkDown(): void {}
}

function setup<H extends CountingHandler = CountingHandler>(
  features: { eventIndex: boolean; mergeableRxBuffers: boolean },
  dataBytes: number,
  handler: H = new CountingHandler() as H,
) {
  const memory = new ArrayGuestMemory();
  const common = { size: RING_SIZE, memory, features: { ...features, indirectDescriptors: true } };
  const rx = new SplitRingDriver({ ...common, index: RX_QUEUE_INDEX, base: 0x10_0000, dataBytes });
  const tx = new SplitRingDriver({
    ...common,
    index: TX_QUEUE_INDEX,
    base: 0x4000_0000,
    dataBytes,
  });
  const logger = new Logger();
  const link = new VhostUserLink(handler, { logger });
  link.startVring(rx.vring(), 0);
  link.startVring(tx.vring(), 0);
  return { rx, tx, handler, link };
}

/**
 * Offers the TX chains `heads` again and again, a kick per round, for `seconds`; the
 * handler's frame count restarts at the first measured round.
 * @returns the seconds measured
 */
function recycleTx(
  tx: SplitRingDriver,
  link: VhostUserLink,
  handler: CountingHandler,
  heads: number[],
  seconds: number,
): number {
  link.kick(TX_QUEUE_INDEX, 0);
  const deadline = performance.now() + seconds * 1000;
  handler.frames = 0;
  const started = performance.now();
  let now = started;
  while (now < deadline) {
    for (let round = 0; round < 16; round++) {
      for (let i = 0; i < heads.length; i++) tx.offer(heads[i]);
      link.kick(TX_QUEUE_INDEX, now);
    }
    now = performance.now();
  }
  return (now - started) / 1000;
}

/** Guest TX: a ring of chains (header and frame in one buffer, like Linux) recycled per kick. */
export function benchTx(frameBytes: number, seconds: number): BenchResult {
  const chains = Math.min(RING_SIZE, Math.max(4, Math.floor((48 << 20) / (frameBytes + 64))));
  const { tx, handler, link } = setup(
    { eventIndex: true, mergeableRxBuffers: true },
    chains * (frameBytes + 64) + 4096,
  );
  const heads: number[] = [];
  for (let i = 0; i < chains; i++) {
    const addr = tx.alloc(NET_HDR_SIZE + frameBytes);
    tx.bytes[addr - tx.base + NET_HDR_SIZE + 12] = 0x08;
    heads.push(tx.addChain([{ addr, length: NET_HDR_SIZE + frameBytes, writable: false }])!);
  }
  const elapsed = recycleTx(tx, link, handler, heads, seconds);
  return benchResult("TX", frameBytes, handler.frames, elapsed);
}

/** Ethernet, IPv4 and TCP headers (with timestamps) in front of an uploaded segment. */
const UPLOAD_HEADER_BYTES = 66;
/** Page fragments of one uploaded segment, and their size (a Linux guest's TSO frame). */
const UPLOAD_FRAGMENTS = 16;
const UPLOAD_FRAGMENT_BYTES = 4000;

/** Takes scattered frames the way TCP does: an iovec table of the payload, for sendmsg. */
class ScatterTakingHandler extends CountingHandler {
  readonly acceptsScattered = true;
  readonly #vectors = new IoVectors(64);
  vectorBytes = 0;
  override handleFrame(
    frame: Uint8Array,
    _now?: number,
    _info?: number,
    scattered?: ScatteredFrame,
  ): void {
    super.handleFrame(frame);
    if (scattered === undefined) return;
    this.#vectors.clear();
    this.vectorBytes += scattered.vectorsOf(
      UPLOAD_HEADER_BYTES,
      frame.length - UPLOAD_HEADER_BYTES,
      this.#vectors,
    );
  }
}

/**
 * Guest TX of large TCP segments as a Linux guest with TSO gives them: an indirect
 * table of the virtio-net header and the frame's headers, then page fragments; the
 * handler takes each as a scattered frame and makes its iovec table (the upload path).
 */
export function benchTxScattered(seconds: number): BenchResult {
  const frameBytes = UPLOAD_HEADER_BYTES + UPLOAD_FRAGMENTS * UPLOAD_FRAGMENT_BYTES;
  const chains = 64;
  const { tx, handler, link } = setup(
    { eventIndex: true, mergeableRxBuffers: true },
    chains * (frameBytes + 1024) + 4096,
    new ScatterTakingHandler(),
  );
  const heads: number[] = [];
  for (let i = 0; i < chains; i++) {
    const headers = tx.alloc(NET_HDR_SIZE + UPLOAD_HEADER_BYTES);
    tx.bytes[headers - tx.base + NET_HDR_SIZE + 12] = 0x08;
    const segments = [{
      addr: headers,
      length: NET_HDR_SIZE + UPLOAD_HEADER_BYTES,
      writable: false,
    }];
    for (let f = 0; f < UPLOAD_FRAGMENTS; f++) {
      segments.push({
        addr: tx.alloc(UPLOAD_FRAGMENT_BYTES),
        length: UPLOAD_FRAGMENT_BYTES,
        writable: false,
      });
    }
    heads.push(tx.addChain(segments, true)!);
  }
  const elapsed = recycleTx(tx, link, handler, heads, seconds);
  if (handler.vectorBytes === 0) throw new Error("the handler was given no scattered frame");
  return benchResult("TX", frameBytes, handler.frames, elapsed);
}

/** Guest RX: sendFrame into recycled receive buffers (MRG_RXBUF, 4 KiB buffers), flushed per ring. */
export function benchRx(frameBytes: number, seconds: number): BenchResult {
  const bufferBytes = 4096;
  const perFrame = Math.ceil((NET_HDR_SIZE + frameBytes) / bufferBytes);
  const { rx, link } = setup(
    { eventIndex: true, mergeableRxBuffers: true },
    RING_SIZE * bufferBytes + 4096,
  );
  const heads: number[] = [];
  for (let i = 0; i < RING_SIZE; i++) {
    const addr = rx.alloc(bufferBytes);
    heads.push(rx.addChain([{ addr, length: bufferBytes, writable: true }])!);
  }
  const frame = new Uint8Array(frameBytes).fill(0x5a);
  const framesPerRound = Math.floor(RING_SIZE / perFrame);
  let frames = 0;
  let first = true;
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  let now = started;
  while (now < deadline) {
    for (let round = 0; round < 16; round++) {
      if (!first) { for (let i = 0; i < heads.length; i++) rx.offer(heads[i]); }
      first = false;
      for (let i = 0; i < framesPerRound; i++) {
        if (link.sendFrame(frame) === SendResult.Sent) frames++;
      }
      link.flush();
      // Unused buffers of this round are still available: drain them so the
      // re-offer keeps the ring at exactly RING_SIZE outstanding.
      while (link.sendFrame(frame.subarray(0, 60)) === SendResult.Sent) {
        // not counted: these only use up the round's remaining buffers
      }
      link.flush();
    }
    now = performance.now();
  }
  const elapsed = (now - started) / 1000;
  return benchResult("RX", frameBytes, frames, elapsed);
}

if (import.meta.main) {
  const seconds = Number(Deno.args[0] ?? 1);
  for (const direction of ["TX", "RX"] as const) {
    for (const size of [64, 1500, 65535]) {
      const r = direction === "TX" ? benchTx(size, seconds) : benchRx(size, seconds);
      console.log(formatResult("engine ", r));
    }
  }
  console.log(formatResult("engine scattered", benchTxScattered(seconds)));
  // The longest turn hostile rings can cause (the per-turn descriptor budget).
  const { benchHostile, formatHostile } = await import("./ring_engine/hostile_bench.ts");
  for (const r of benchHostile()) console.log(formatHostile(r));
  // Through the vhost-user session (memfd memory, eventfd kicks, event loop).
  const { benchHarnessRx, benchHarnessTx } = await import("./ring_engine/harness_bench.ts");
  for (const size of [64, 1500, 65535]) {
    console.log(formatResult("session", await benchHarnessTx(size, seconds)));
  }
  for (const size of [64, 1500]) {
    console.log(formatResult("session", await benchHarnessRx(size, seconds)));
  }
}
