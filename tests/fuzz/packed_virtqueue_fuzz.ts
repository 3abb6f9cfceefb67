/**
 * A descriptor-ring fuzzer for the packed virtqueue engine and the vhost-user link:
 * builds random packed rings (well-formed lists with a few corrupted bytes, or random
 * descriptors: flags, Buffer IDs, lists, indirect tables, addresses in, near and far
 * outside guest memory, random starting positions and wrap counters), lets the guest
 * rewrite slots while frames are being handled, and checks that the device side never
 * throws, never hangs, returns every buffer of a well-formed ring exactly once with the
 * right lengths, leaves no available list behind on a healthy TX queue, stops at a
 * consistent ring state and reports every byte it writes to the dirty-page log. A
 * quarter of the rings run without a log, where frames toward the guest also go as runs
 * reserved at once (reserveFrames), committed in part.
 *
 * Run directly for long runs: `deno run -A tests/fuzz/packed_virtqueue_fuzz.ts 100000 [seed] [first-iteration]`.
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
import { PackedRingDriver } from "../support/virtio/packed_ring_driver.ts";
import {
  decodePackedState,
  encodePackedState,
  isAvailable,
  PACKED_DESC_FLAGS,
  PACKED_DESC_SIZE,
} from "../../src/virtio/packed_ring_layout.ts";
import { RX_QUEUE_INDEX, TX_QUEUE_INDEX } from "../../src/tap/vring_datapath.ts";
import { WriteRecord } from "../support/virtio/recording_write_log.ts";

/** What a fuzz run saw, for the report. */
export interface PackedFuzzStats {
  iterations: number;
  wellFormedRings: number;
  framesDelivered: number;
  framesSent: number;
  /** Runs of several frames reserved (rings without a write log), and frames committed from them. */
  runs: number;
  runFramesSent: number;
  noRoom: number;
  dropped: number;
  brokenQueues: number;
  usedBuffers: number;
  refusedStarts: number;
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

function randomAddress(r: Random, driver: PackedRingDriver, dataStart: number): number {
  switch (r.below(8)) {
    case 0:
      return r.u32() * 0x1_0000 + r.below(0x1_0000); // anywhere below 2^48
    case 1:
      return 2 ** 64 - 1 - r.below(64);
    case 2:
      return driver.base + driver.bytes.length - r.below(64);
    case 3:
      return r.below(0x1000);
    default:
      return dataStart + r.below(DATA_BYTES);
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

/** Random descriptor flags: mostly NEXT/WRITE/INDIRECT combinations, sometimes anything. */
function randomFlags(r: Random): number {
  return r.chance(0.1) ? r.below(0x10000) : r.below(8);
}

/** Writes random descriptors at `count` table entries from guest address `gpa`. */
function scribbleTable(
  r: Random,
  driver: PackedRingDriver,
  gpa: number,
  count: number,
  dataStart: number,
) {
  for (let i = 0; i < count; i++) {
    driver.writeDescriptorAt(
      gpa + PACKED_DESC_SIZE * i,
      randomAddress(r, driver, dataStart),
      randomLength(r),
      r.below(0x10000),
      randomFlags(r),
    );
  }
}

function makeRing(r: Random, index: number, memory: ArrayGuestMemory, base: number) {
  const size = r.chance(0.7) ? 1 << r.below(8) : 1 + r.below(100); // packed: any size
  const features = {
    eventIndex: r.chance(0.5),
    indirectDescriptors: r.chance(0.6),
    mergeableRxBuffers: r.chance(0.5),
    checksumOffload: r.chance(0.5),
    guestChecksum: r.chance(0.5),
  };
  const driver = new PackedRingDriver({
    size,
    index,
    features,
    memory,
    base,
    dataBytes: DATA_BYTES,
  });
  const dataStart = driver.alloc(0);
  // Both sides start at a random position, as after some laps.
  driver.startAt(r.below(size), r.below(2));
  let state = driver.state;
  const wellFormed = r.chance(0.5);
  let corrupted = false;
  if (wellFormed) {
    for (let c = r.below(size + 1); c > 0; c--) {
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
    }
    if (r.chance(0.3)) {
      corrupted = true;
      for (let k = 1 + r.below(4); k > 0; k--) {
        driver.bytes[driver.descAddr - driver.base + r.below(PACKED_DESC_SIZE * size)] = r.below(
          256,
        );
      }
    }
  } else {
    corrupted = true;
    for (let i = 0; i < DATA_BYTES; i += 4) {
      driver.bytes[dataStart - driver.base + i] = r.below(256);
    }
    for (let i = 0; i < DATA_BYTES / 16; i += 1 + r.below(4)) {
      scribbleTable(r, driver, dataStart + 16 * i, 1, dataStart);
    }
    for (let lists = r.below(size + 2); lists > 0; lists--) {
      const length = 1 + (r.chance(0.9) ? r.below(4) : r.below(size + 2));
      const entries = [];
      for (let k = 0; k < length; k++) {
        const last = k === length - 1;
        const flags = randomFlags(r);
        entries.push({
          addr: randomAddress(r, driver, dataStart),
          len: randomLength(r),
          id: r.chance(0.9) ? r.below(size) : r.below(0x10000),
          flags: r.chance(0.8) ? (last ? flags & ~1 : flags | 1) : flags,
        });
      }
      driver.placeRaw(entries);
    }
  }
  if (r.chance(0.3)) driver.setDriverEvent(r.below(4), r.below(0x8000), r.below(2));
  // Sometimes a state no ring could be in: the engine must refuse it.
  if (r.chance(0.03)) state = r.u32();
  return { driver, size, state, dataStart, wellFormed, corrupted };
}

/** Runs `iterations` random rings from `seed`; throws with the seed on the first violated property. */
export function runPackedVirtqueueFuzz(
  iterations: number,
  seed: number,
  firstIteration = 0,
): PackedFuzzStats {
  const stats: PackedFuzzStats = {
    iterations: 0,
    wellFormedRings: 0,
    framesDelivered: 0,
    framesSent: 0,
    runs: 0,
    runFramesSent: 0,
    noRoom: 0,
    dropped: 0,
    brokenQueues: 0,
    usedBuffers: 0,
    refusedStarts: 0,
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
      throw new Error(`packed virtqueue fuzz: ${what} (seed ${seed}, iteration ${it})`);
    };
    const memory = new ArrayGuestMemory();
    const rx = makeRing(r, RX_QUEUE_INDEX, memory, 0x10_0000);
    const tx = makeRing(r, TX_QUEUE_INDEX, memory, 0x1000_0000);
    const record = new WriteRecord([
      { base: rx.driver.base, bytes: rx.driver.bytes },
      { base: tx.driver.base, bytes: tx.driver.bytes },
    ]);
    let scribbled = false;
    let delivered = 0;
    lines = [];
    const handler: FrameHandler = {
      handleFrame(f) {
        if (f.length < MIN_FRAME_LENGTH || f.length > MAX_FRAME_LENGTH) {
          fail(`frame of ${f.length} bytes delivered`);
        }
        delivered++;
        if (!tx.wellFormed && r.chance(0.3)) {
          // The guest rewrites slots while we work.
          scribbled = true;
          const slot = r.below(tx.size);
          tx.driver.writeDescriptorAt(
            tx.driver.slotAddress(slot),
            randomAddress(r, tx.driver, tx.dataStart),
            randomLength(r),
            r.below(tx.size + 2),
            randomFlags(r) | (r.chance(0.5) ? 0x80 : 0x8000),
          );
        }
      },
      endOfBatch() {},
      linkUp() {},
      linkDown() {},
    };
    const link = new VhostUserLink(handler, { logger, clock: () => it * 10 });
    const logged = r.chance(0.75);
    link.startVring({
      ...rx.driver.vring(rx.state),
      writeLog: logged ? record.ringLog(rx.driver.deviceAddr) : null,
    }, 0);
    link.startVring({
      ...tx.driver.vring(tx.state),
      writeLog: logged ? record.ringLog(tx.driver.deviceAddr) : null,
    }, 0);
    const started = lines.filter((l) => l.includes("cannot start queue")).length;
    stats.refusedStarts += started;
    link.kick(TX_QUEUE_INDEX, 1);
    for (let k = 0; k < 1 + r.below(6); k++) {
      if (!logged && r.chance(0.4)) {
        reserveRandomRun(link, space, r, stats);
        continue;
      }
      const length = r.chance(0.1) ? r.below(MAX_FRAME_LENGTH + 100) : 14 + r.below(2000);
      const result = link.sendFrame(frame.subarray(0, Math.min(length, frame.length)));
      if (result === SendResult.Sent) stats.framesSent++;
      else if (result === SendResult.NoRoom) stats.noRoom++;
      else stats.dropped++;
    }
    link.flush();
    link.kick(RX_QUEUE_INDEX, 2);
    const txState = link.stopVring(TX_QUEUE_INDEX);
    const rxState = link.stopVring(RX_QUEUE_INDEX);
    if (logged && !scribbled) {
      const missed = record.unreported();
      if (missed.length > 0) {
        fail(`${missed.length} written bytes not reported, first 0x${missed[0].toString(16)}`);
      }
    }
    for (const [ring, state] of [[tx, txState], [rx, rxState]] as const) {
      if (started > 0 && state === 0) continue; // refused at start: nothing ran
      const { avail, used } = decodePackedState(state);
      if (avail.index >= ring.size || used.index >= ring.size) {
        fail(`state 0x${state.toString(16)} beyond a ring of ${ring.size}`);
      }
      const period = 2 * ring.size;
      const seq = (p: { index: number; wrap: number }) =>
        p.wrap === 1 ? p.index : p.index + ring.size;
      if ((seq(avail) - seq(used) + period) % period > ring.size) {
        fail(`state 0x${state.toString(16)}: available position more than a ring ahead of used`);
      }
      if (!ring.corrupted) {
        // Every buffer comes back exactly once, at the slots the driver expects
        // (takeUsed throws on an ID not in use), TX ones with length 0.
        const usedBuffers = ring.driver.takeUsed();
        stats.usedBuffers += usedBuffers.length;
        for (const u of usedBuffers) {
          if (ring === tx && u.len !== 0) fail(`TX used len ${u.len}`);
          if (ring === rx && u.len > 12 + MAX_FRAME_LENGTH) fail(`RX used len ${u.len}`);
        }
        if (encodePackedState({ avail, used }) !== state) fail("state does not round-trip");
      }
    }
    const txBroken = lines.some((line) => line.includes("virtqueue TX is broken"));
    if (!txBroken && !scribbled && started === 0) {
      // A healthy TX queue takes every list made available.
      const { avail } = decodePackedState(txState);
      const flags = tx.driver.bytes[avail.index * PACKED_DESC_SIZE + PACKED_DESC_FLAGS] |
        (tx.driver.bytes[avail.index * PACKED_DESC_SIZE + PACKED_DESC_FLAGS + 1] << 8);
      if (isAvailable(flags, avail.wrap)) {
        fail(`healthy TX queue left slot ${avail.index} available`);
      }
      if (!tx.corrupted && tx.driver.freeSlots !== tx.size) {
        fail(`TX: ${tx.size - tx.driver.freeSlots} slots not returned`);
      }
    }
    if (txBroken) stats.brokenQueues++;
    if (rx.wellFormed && tx.wellFormed) stats.wellFormedRings++;
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
  const stats = runPackedVirtqueueFuzz(iterations, seed, first);
  const seconds = (performance.now() - started) / 1000;
  console.log(`seed ${seed}: ${JSON.stringify(stats)} in ${seconds.toFixed(1)} s`);
}
