/**
 * The longest turn a hostile guest can cause: rings whose chains share descriptors
 * (every head starting the same loop, every head naming the same indirect table),
 * where one turn walks a whole descriptor budget (TURN_DESCRIPTOR_BUDGET). Prints
 * the time of one turn and the cost per descriptor walked, the figures that size
 * the budget (src/virtio/virtqueue.ts).
 *
 * @module
 */

import { Logger } from "../../src/log/logger.ts";
import type { FrameHandler, GuestLink } from "../../src/tap/frame_transport.ts";
import { VhostUserLink } from "../../src/tap/vhost_user_link.ts";
import { ArrayGuestMemory } from "../../src/virtio/array_guest_memory.ts";
import {
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "../../src/virtio/ring_layout.ts";
import { SplitRingDriver } from "../../src/virtio/split_ring_driver.ts";
import { RX_QUEUE_INDEX, TX_QUEUE_INDEX } from "../../src/vhost_user/vring_datapath.ts";

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
  link.startVring(rx.vring(), 0);
  link.startVring(tx.vring(), 0);
  return { link, driver: direction === "RX" ? rx : tx };
}

/** Every head starts the same loop through all `size` descriptors; returns descriptors per chain. */
function offerLoops(driver: SplitRingDriver, flags: number): number {
  const a = driver.alloc(8);
  for (let i = 0; i < driver.size; i++) {
    driver.setDescriptor(i, a, 0, 1, flags | VIRTQ_DESC_F_NEXT, (i + 1) % driver.size);
  }
  for (let i = 0; i < driver.size; i++) driver.offer(i);
  return driver.size;
}

/** Every head names one table of `size` chained entries; returns descriptors per chain. */
function offerSharedTable(driver: SplitRingDriver, entryBytes: number, flags: number): number {
  const size = driver.size;
  const a = driver.alloc(entryBytes);
  const table = driver.alloc(size * DESC_BYTES);
  for (let j = 0; j < size; j++) {
    const last = j === size - 1;
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
    driver.setDescriptor(i, table, 0, size * DESC_BYTES, VIRTQ_DESC_F_INDIRECT, 0);
    driver.offer(i);
  }
  return size + 1;
}

const CASES: {
  name: string;
  direction: "TX" | "RX";
  size: number;
  build: (d: SplitRingDriver) => number;
}[] = [
  { name: "TX 16384 loops", direction: "TX", size: 16384, build: (d) => offerLoops(d, 0) },
  { name: "TX 32768 loops", direction: "TX", size: 32768, build: (d) => offerLoops(d, 0) },
  {
    // 16,384 × 4 bytes: valid 65,524-byte frames, handed to the handler.
    name: "TX 16384 heads, one table",
    direction: "TX",
    size: 16384,
    build: (d) => offerSharedTable(d, 4, 0),
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
      const { link, driver } = hostileLink(direction, size);
      const perChain = build(driver);
      const started = performance.now();
      if (direction === "TX") link.kick(TX_QUEUE_INDEX, 0);
      else link.sendFrame(frame);
      const elapsed = performance.now() - started;
      if (direction === "RX") link.flush();
      // Chains returned in this one turn, each walked whole.
      descriptors = driver.usedIndex * perChain;
      best = Math.min(best, elapsed);
      link.stopVring(TX_QUEUE_INDEX);
      link.stopVring(RX_QUEUE_INDEX);
    }
    return { name, descriptors, milliseconds: best };
  });
}

/** Formats one hostile result as a line of the report. */
export function formatHostile(r: HostileResult): string {
  return `hostile ${r.name.padEnd(26)} one turn: ${
    String(r.descriptors).padStart(6)
  } descriptors in ${r.milliseconds.toFixed(2).padStart(6)} ms, ${
    (r.milliseconds * 1e6 / r.descriptors).toFixed(0).padStart(4)
  } ns/descriptor`;
}
