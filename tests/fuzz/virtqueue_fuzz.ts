/**
 * A descriptor/ring fuzzer for the split virtqueue engine and the vhost-user link:
 * builds random rings (random descriptors, indices, flags, indirect tables,
 * addresses in, near and far outside guest memory), lets the guest rewrite them
 * while frames are being handled, and checks that the device side never throws,
 * never hangs, never returns an id outside the ring and never leaves a healthy
 * queue stuck with chains it did not consume. Frames toward the guest go one at a
 * time (sendFrame) and as runs reserved at once (reserveFrames), committed in part,
 * while the guest rewrites the ring under them: every RX chain taken comes back.
 *
 * Run directly for long runs: `deno run -A tests/fuzz/virtqueue_fuzz.ts 100000 [seed] [first-iteration]`.
 *
 * @module
 */

import { Logger } from "../../src/log/logger.ts";
import {
  type FrameHandler,
  MAX_FRAME_LENGTH,
  MIN_FRAME_LENGTH,
  newFrameSpace,
  SendResult,
} from "../../src/tap/frame_transport.ts";
import { VhostUserLink } from "../../src/tap/vhost_user_link.ts";
import { reserveRandomRun } from "./random_run.ts";
import { ArrayGuestMemory } from "../support/virtio/array_guest_memory.ts";
import { SplitRingDriver } from "../support/virtio/split_ring_driver.ts";
import { RX_QUEUE_INDEX, TX_QUEUE_INDEX } from "../../src/tap/vring_datapath.ts";
import { AVAIL_IDX, USED_ELEM_LEN, USED_RING } from "../../src/virtio/ring_layout.ts";

/** What a fuzz run saw, for the report. */
export interface FuzzStats {
  iterations: number;
  framesDelivered: number;
  framesSent: number;
  /** Runs of several frames reserved, and frames committed from them. */
  runs: number;
  runFramesSent: number;
  noRoom: number;
  dropped: number;
  brokenQueues: number;
  usedElements: number;
}

/** A small seeded PRNG (xorshift32), so that a failing seed can be replayed. */
class Random {
  #state: number;
  constructor(seed: number) {
    this.#state = (seed >>> 0) || 0x9e3779b9;
  }
  u32(): number {
    let x = this.#state;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    this.#state = x;
    return x;
  }
  below(n: number): number {
    return this.u32() % n;
  }
  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }
}

const DATA_BYTES = 16384;

/** Picks an address: mostly inside the data area, sometimes outside or wrapping. */
function randomAddress(r: Random, driver: SplitRingDriver, dataStart: number): [number, number] {
  switch (r.below(8)) {
    case 0:
      return [r.u32(), r.u32()];
    case 1:
      return [0xffff_ffff - r.below(64), 0xffff_ffff];
    case 2:
      return [driver.base + driver.bytes.length - r.below(64), 0];
    case 3:
      return [r.below(0x1000), 0];
    default: {
      const gpa = dataStart + r.below(DATA_BYTES);
      return [gpa, 0];
    }
  }
}

function randomLength(r: Random): number {
  switch (r.below(8)) {
    case 0:
      return 0;
    case 1:
      return r.u32();
    case 2:
      return 16 * (1 + r.below(8));
    case 3:
      return 1 + r.below(12);
    default:
      return 1 + r.below(2048);
  }
}

function randomFlags(r: Random): number {
  return r.chance(0.1) ? r.below(0x10000) : r.below(8);
}

/** Writes random descriptors at `count` slots starting at guest address `gpa`. */
function scribble(
  r: Random,
  driver: SplitRingDriver,
  gpa: number,
  count: number,
  tableSize: number,
  dataStart: number,
) {
  for (let i = 0; i < count; i++) {
    const [low, high] = randomAddress(r, driver, dataStart);
    const next = r.chance(0.9) ? r.below(tableSize) : r.below(0x10000);
    driver.writeDescriptorAt(gpa + 16 * i, low, high, randomLength(r), randomFlags(r), next);
  }
}

function makeRing(r: Random, index: number, memory: ArrayGuestMemory, base: number) {
  const size = 1 << r.below(8); // 1..128
  const features = {
    eventIndex: r.chance(0.5),
    indirectDescriptors: r.chance(0.6),
    mergeableRxBuffers: r.chance(0.5),
    checksumOffload: r.chance(0.5),
    guestChecksum: r.chance(0.5),
  };
  const driver = new SplitRingDriver({
    size,
    index,
    features,
    memory,
    base,
    dataBytes: DATA_BYTES,
  });
  const dataStart = driver.alloc(0);
  const lastAvail = r.below(0x10000);
  driver.setAvailIndex(lastAvail);
  let pending: number;
  if (r.chance(0.5)) {
    // Mostly well-formed chains, then a few corrupted bytes.
    pending = 0;
    const chains = r.below(size + 1);
    for (let c = 0; c < chains; c++) {
      const total = index === TX_QUEUE_INDEX ? 12 + 14 + r.below(1600) : 12 + r.below(3000);
      const pieces = 1 + r.below(3);
      const segments = [];
      let at = dataStart + r.below(DATA_BYTES - total);
      for (let left = total, k = 0; left > 0; k++) {
        const n = k === pieces - 1 ? left : Math.min(left, 1 + r.below(total));
        segments.push({ addr: at, length: n, writable: index === RX_QUEUE_INDEX });
        at += n;
        left -= n;
      }
      if (driver.addChain(segments, features.indirectDescriptors && r.chance(0.5)) === null) break;
      pending++;
    }
    for (let k = r.below(4); k > 0; k--) {
      const area = r.chance(0.7) ? driver.descAddr : driver.availAddr;
      driver.bytes[area - driver.base + r.below(16 * size)] = r.below(256);
    }
  } else {
    // Random data (also serves as indirect tables), then random descriptors.
    for (let i = 0; i < DATA_BYTES; i += 4) {
      driver.bytes[dataStart - driver.base + i] = r.below(256);
    }
    for (let i = 0; i < DATA_BYTES / 16; i += 1 + r.below(4)) {
      scribble(r, driver, dataStart + 16 * i, 1, 1 + r.below(size * 2), dataStart);
    }
    scribble(r, driver, driver.descAddr, size, size, dataStart);
    pending = r.chance(0.05) ? size + 1 + r.below(100) : r.below(size + 1);
    for (let i = 0; i < pending; i++) {
      driver.offer(r.chance(0.99) ? r.below(size) : size + r.below(10));
    }
  }
  if (r.chance(0.3)) driver.setAvailFlags(1);
  driver.setUsedEvent(r.below(0x10000));
  return { driver, size, lastAvail, pending, dataStart };
}

/** The available index as the device sees it (the fuzzer may have corrupted it). */
function availIndexInMemory(driver: SplitRingDriver): number {
  const at = driver.availAddr - driver.base + AVAIL_IDX;
  return driver.bytes[at] | (driver.bytes[at + 1] << 8);
}

function readUsed(
  driver: SplitRingDriver,
  from: number,
  to: number,
): { id: number; len: number }[] {
  const out = [];
  const view = new DataView(driver.bytes.buffer);
  const usedAt = driver.usedAddr - driver.base;
  for (let i = from; i !== to; i = (i + 1) & 0xffff) {
    const at = usedAt + USED_RING + (i & (driver.size - 1)) * 8;
    out.push({ id: view.getUint32(at, true), len: view.getUint32(at + USED_ELEM_LEN, true) });
  }
  return out;
}

/** Runs `iterations` random rings from `seed`; throws with the seed on the first violated property. */
export function runVirtqueueFuzz(iterations: number, seed: number, firstIteration = 0): FuzzStats {
  const stats: FuzzStats = {
    iterations: 0,
    framesDelivered: 0,
    framesSent: 0,
    runs: 0,
    runFramesSent: 0,
    noRoom: 0,
    dropped: 0,
    brokenQueues: 0,
    usedElements: 0,
  };
  const logger = new Logger();
  let lines: string[] = [];
  logger.setSink((_level, line) => lines.push(line));
  const frame = new Uint8Array(MAX_FRAME_LENGTH);
  const space = newFrameSpace();
  space.acceptVectors = true;
  for (let it = firstIteration; it < firstIteration + iterations; it++) {
    const r = new Random(seed + it * 0x9e37);
    const fail = (what: string): never => {
      throw new Error(`virtqueue fuzz: ${what} (seed ${seed}, iteration ${it})`);
    };
    const memory = new ArrayGuestMemory();
    const rx = makeRing(r, RX_QUEUE_INDEX, memory, 0x10_0000);
    const tx = makeRing(r, TX_QUEUE_INDEX, memory, 0x1000_0000);
    const rxUsedStart = rx.driver.usedIndex;
    const txUsedStart = tx.driver.usedIndex;
    let delivered = 0;
    let extraOffers = 0;
    lines = [];
    const handler: FrameHandler = {
      handleFrame(f) {
        if (f.length < MIN_FRAME_LENGTH || f.length > MAX_FRAME_LENGTH) {
          fail(`frame of ${f.length} bytes delivered`);
        }
        delivered++;
        // The guest rewrites descriptors and ring entries while we work.
        if (r.chance(0.3)) {
          scribble(r, tx.driver, tx.driver.descAddr, tx.size, tx.size, tx.dataStart);
        }
        if (r.chance(0.1)) {
          tx.driver.offer(r.below(tx.size + 2));
          extraOffers++;
        }
      },
      endOfBatch() {},
      linkUp() {},
      linkDown() {},
    };
    const link = new VhostUserLink(handler, { logger, clock: () => it * 10 });
    link.startVring(rx.driver.vring(rx.lastAvail), 0);
    link.startVring(tx.driver.vring(tx.lastAvail), 0);
    link.kick(TX_QUEUE_INDEX, 1);
    for (let k = 0; k < 1 + r.below(6); k++) {
      if (r.chance(0.3)) {
        reserveRandomRun(link, space, r, stats, () => {
          if (r.chance(0.2)) {
            scribble(r, rx.driver, rx.driver.descAddr, rx.size, rx.size, rx.dataStart);
          }
        });
        continue;
      }
      const length = r.chance(0.1) ? r.below(MAX_FRAME_LENGTH + 100) : 14 + r.below(2000);
      const result = link.sendFrame(frame.subarray(0, Math.min(length, frame.length)));
      if (result === SendResult.Sent) stats.framesSent++;
      else if (result === SendResult.NoRoom) stats.noRoom++;
      else stats.dropped++;
      if (r.chance(0.2)) scribble(r, rx.driver, rx.driver.descAddr, rx.size, rx.size, rx.dataStart);
    }
    link.flush();
    link.kick(RX_QUEUE_INDEX, 2);
    const txNext = link.stopVring(TX_QUEUE_INDEX);
    const rxNext = link.stopVring(RX_QUEUE_INDEX);
    // Properties: ids in range, TX lengths 0, consumed = returned, no stuck healthy TX queue.
    for (
      const [ring, usedStart, next] of [[tx, txUsedStart, txNext], [
        rx,
        rxUsedStart,
        rxNext,
      ]] as const
    ) {
      const used = readUsed(ring.driver, usedStart, ring.driver.usedIndex);
      stats.usedElements += used.length;
      for (const u of used) {
        if (u.id >= ring.size) fail(`used id ${u.id} ≥ size ${ring.size}`);
        if (ring === tx && u.len !== 0) fail(`TX used len ${u.len}`);
        if (ring === rx && u.len > 12 + MAX_FRAME_LENGTH) fail(`RX used len ${u.len}`);
      }
      const consumed = (next - ring.lastAvail) & 0xffff;
      if (consumed > ring.size + 16) {
        fail(`consumed ${consumed} chains from a ring of ${ring.size}`);
      }
      if (ring === tx && used.length !== consumed) {
        fail(`TX consumed ${consumed} chains but returned ${used.length}`);
      }
      if (
        ring === rx && used.length !== consumed &&
        !lines.some((line) => line.includes("virtqueue RX is broken"))
      ) {
        fail(`RX consumed ${consumed} chains but returned ${used.length}`);
      }
    }
    const txBroken = lines.some((line) => line.includes("virtqueue TX is broken"));
    if (tx.pending > tx.size && !txBroken) {
      fail("TX avail index ran ahead but the queue was not broken");
    }
    const txAvail = availIndexInMemory(tx.driver);
    if (!txBroken && extraOffers === 0 && txNext !== txAvail) {
      fail(`healthy TX queue left chains ${txNext}..${txAvail} unconsumed`);
    }
    if (txBroken) stats.brokenQueues++;
    stats.framesDelivered += delivered;
    stats.iterations++;
  }
  return stats;
}

if (import.meta.main) {
  const iterations = Number(Deno.args[0] ?? 100_000);
  const seed = Number(Deno.args[1] ?? Date.now() % 0x7fff_ffff);
  const first = Number(Deno.args[2] ?? 0);
  const started = performance.now();
  const stats = runVirtqueueFuzz(iterations, seed, first);
  const seconds = (performance.now() - started) / 1000;
  console.log(`seed ${seed}: ${JSON.stringify(stats)} in ${seconds.toFixed(1)} s`);
}
