/**
 * The first turn of hostile rings whose chains share descriptors: every head starting
 * the same loop or running into one long chain, every head naming the same indirect
 * table. Chains made available together may not share descriptors or large tables
 * (src/virtio/virtqueue.ts), so those walk the shared part once and break the queue;
 * heads sharing a small table (SHARED_TABLE_CHECK_MIN_ENTRIES entries, not checked)
 * still walk a whole descriptor budget (TURN_DESCRIPTOR_BUDGET) in one turn. Prints
 * the time of one turn and the cost per descriptor walked (memory lookups counted),
 * the figures that size the budget.
 *
 * @module
 */

import { Logger } from "../../src/log/logger.ts";
import type { FrameHandler, GuestLink } from "../../src/tap/frame_transport.ts";
import { VhostUserLink } from "../../src/tap/vhost_user_link.ts";
import { ArrayGuestMemory } from "../../tests/support/virtio/array_guest_memory.ts";
import { CountingGuestMemory } from "../../tests/support/virtio/counting_guest_memory.ts";
import { SHARED_TABLE_CHECK_MIN_ENTRIES } from "../../src/virtio/virtqueue.ts";
import {
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../../src/virtio/ring_layout.ts";
import { SplitRingDriver } from "../../tests/support/virtio/split_ring_driver.ts";
import { RX_QUEUE_INDEX, TX_QUEUE_INDEX } from "../../src/tap/vring_datapath.ts";

/** Bytes of one descriptor (virtio 1.2 §2.7.5). */
const DESC_BYTES = 16;

/** One hostile case: what a turn walked and how long it took. */
export interface HostileResult {
  readonly name: string;
  readonly descriptors: number;
  readonly milliseconds: number;
}

const quietHandler: FrameHandler = {
  handleFrame(): void {},
  endOfBatch(): void {},
  linkUp(_link: GuestLink): void {},
  linkDown(): void {},
};

function hostileLink(direction: "TX" | "RX", size: number) {
  const memory = new ArrayGuestMemory();
  const features = { indirectDescriptors: true, mergeableRxBuffers: true };
  const common = { features, memory, dataBytes: size * DESC_BYTES + (1 << 16) };
  const rx = new SplitRingDriver({
    ...common,
    size: direction === "RX" ? size : 64,
    index: RX_QUEUE_INDEX,
    base: 0x10_0000,
  });
  const tx = new SplitRingDriver({
    ...common,
    size: direction === "TX" ? size : 64,
    index: TX_QUEUE_INDEX,
    base: 0x1000_0000,
  });
  const logger = new Logger();
  logger.setSink(() => {});
  const link = new VhostUserLink(quietHandler, { logger, clock: () => 0 });
  const counting = new CountingGuestMemory(memory);
  link.startVring({ ...rx.vring(), memory: counting }, 0);
  link.startVring({ ...tx.vring(), memory: counting }, 0);
  return { link, driver: direction === "RX" ? rx : tx, counting };
}

/**
 * Every head starts on one chain through all `size` descriptors, which loops back to
 * the first when `loops`.
 */
function offerLoops(driver: SplitRingDriver, flags: number, loops = true): void {
  const a = driver.alloc(8);
  const size = driver.size;
  for (let i = 0; i < size; i++) {
    const last = i === size - 1 && !loops;
    driver.setDescriptor(i, a, 0, 1, flags | (last ? 0 : VIRTQ_DESC_F_NEXT), (i + 1) % size);
  }
  for (let i = 0; i < size; i++) driver.offer(i);
}

/** Every head names one table of `entries` chained entries. */
function offerSharedTable(
  driver: SplitRingDriver,
  entryBytes: number,
  flags: number,
  entries = driver.size,
): void {
  const size = driver.size;
  const a = driver.alloc(entryBytes);
  const table = driver.alloc(entries * DESC_BYTES);
  for (let j = 0; j < entries; j++) {
    const last = j === entries - 1;
    driver.writeDescriptorAt(
      table + DESC_BYTES * j,
      a,
      0,
      entryBytes,
      flags | (last ? 0 : VIRTQ_DESC_F_NEXT),
      last ? 0 : j + 1,
    );
  }
  for (let i = 0; i < size; i++) {
    driver.setDescriptor(i, table, 0, entries * DESC_BYTES, VIRTQ_DESC_F_INDIRECT, 0);
    driver.offer(i);
  }
}

const CASES: {
  name: string;
  direction: "TX" | "RX";
  size: number;
  build: (d: SplitRingDriver) => void;
}[] = [
  { name: "TX 16384 loops", direction: "TX", size: 16384, build: (d) => offerLoops(d, 0) },
  { name: "TX 32768 loops", direction: "TX", size: 32768, build: (d) => offerLoops(d, 0) },
  {
    name: "TX 8192 heads, one chain",
    direction: "TX",
    size: 8192,
    build: (d) => offerLoops(d, 0, false),
  },
  {
    // 16,384 × 4 bytes: a valid 65,524-byte frame (the first head's), handed to the handler.
    name: "TX 16384 heads, one table",
    direction: "TX",
    size: 16384,
    build: (d) => offerSharedTable(d, 4, 0),
  },
  {
    // Valid 116-byte frames: a table small enough to go unchecked, a whole budget a turn.
    name: "TX 32768 heads, small table",
    direction: "TX",
    size: 32768,
    build: (d) => offerSharedTable(d, 4, 0, SHARED_TABLE_CHECK_MIN_ENTRIES),
  },
  {
    name: "RX 16384 loops",
    direction: "RX",
    size: 16384,
    build: (d) => offerLoops(d, VIRTQ_DESC_F_WRITE),
  },
];

/** Times the first turn of each hostile case (best of `rounds` fresh rings). */
export function benchHostile(rounds = 5): HostileResult[] {
  const frame = new Uint8Array(60);
  return CASES.map(({ name, direction, size, build }) => {
    let best = Infinity;
    let descriptors = 0;
    for (let r = 0; r < rounds; r++) {
      const { link, driver, counting } = hostileLink(direction, size);
      build(driver);
      const started = performance.now();
      if (direction === "TX") link.kick(TX_QUEUE_INDEX, 0);
      else link.sendFrame(frame);
      const elapsed = performance.now() - started;
      if (direction === "RX") link.flush();
      descriptors = counting.total; // one lookup per buffer descriptor or table
      best = Math.min(best, elapsed);
      link.stopVring(TX_QUEUE_INDEX);
      link.stopVring(RX_QUEUE_INDEX);
    }
    return { name, descriptors, milliseconds: best };
  });
}

/** Formats one hostile result as a line of the report. */
export function formatHostile(r: HostileResult): string {
  return `hostile ${r.name.padEnd(28)} one turn: ${
    String(r.descriptors).padStart(6)
  } descriptors in ${r.milliseconds.toFixed(2).padStart(6)} ms, ${
    (r.milliseconds * 1e6 / r.descriptors).toFixed(0).padStart(4)
  } ns/descriptor`;
}
