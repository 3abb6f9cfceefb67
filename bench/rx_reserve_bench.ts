/**
 * The JavaScript cost of reserving one host→guest TCP frame, in one process and
 * without QEMU or system calls: a 64 KiB frame is reserved in a vhost-user RX ring
 * whose guest posts 4 KiB buffers (as a Linux guest does under MRG_RXBUF: 16 chains
 * per frame) over the daemon's own guest memory map (GuestMemoryMap, one region),
 * the iovec table the peek would use is made, and the reservation is given back or
 * committed. Three ways, in turn:
 *
 * - views + cancel: the payload as views of each guest buffer turned into a table by
 *   the caller (what TCP did before FrameSpace.acceptVectors);
 * - table + cancel: a table the link fills itself from located buffers;
 * - table + commit: the same, committed whole and published (used elements, used
 *   index: what a download does per frame), the guest re-posting the used buffers.
 *
 * Prints wall-clock microseconds per frame, after a warm-up: the least and the median
 * of short rounds (this machine is shared; the least is the least disturbed).
 *
 * `--tree DIR` runs the same cases over another checkout's modules (e.g. the code
 * before a change) in the same process, round by round in turn with this one, so
 * that both see the same load; it prints each case's time ratio DIR / this tree per
 * round (median and quartiles).
 *
 *   deno run -A bench/rx_reserve_bench.ts [--tree DIR]
 *
 * @module
 */

import { memoryOverDrivers } from "./driver_memory.ts";
import { benchTrees } from "./tree_args.ts";

/** Guest RX buffer size (Linux's mergeable buffers are about a page). */
const BUFFER_BYTES = 4096;
const RING_SIZE = 256;
/** RX chains posted (a Linux guest keeps its ring about full). */
const POSTED_CHAINS = 64;
/** Ethernet + IPv4 + TCP headers in front of the payload. */
const HEADERS = 54;
/** The payload of a 65520-byte MTU segment. */
const PAYLOAD = 65440;
const FRAMES_PER_ROUND = 10_000;
/** Rounds per case and tree, after the warm-up ones. */
const ROUNDS = 30;
const WARM_UP_ROUNDS = 4;
const RX_BASE = 0x10_0000;
const TX_BASE = 0x1000_0000;
/** Used ring layout (virtio 1.2 §2.7.8): idx at 2, elements of 8 bytes from 4, id first. */
const USED_IDX = 2;
const USED_RING = 4;
const USED_ELEM_SIZE = 8;

const MODES = ["views + cancel", "table + cancel", "table + commit"] as const;

/** Runs `frames` frames of case `mode`; returns microseconds per frame. */
type Runner = (mode: number, frames: number) => number;

/** Sets up a link, its rings and memory from the checkout at `root` (a directory URL). */
async function setUp(root: URL): Promise<Runner> {
  const at = (path: string) => new URL(path, root).href;
  const { IoVectors } = await import(at("ffi/io_vectors.ts"));
  const { newFrameSpace, SendResult } = await import(at("src/tap/frame_transport.ts"));
  const { RecordingHandler } = await import(at("tests/support/tap/frame_handler.ts"));
  const { VhostUserLink } = await import(at("src/tap/vhost_user_link.ts"));
  const { GuestMemoryMap } = await import(at("src/vhost_user/guest_memory_map.ts"));
  const { SplitRingDriver } = await import(at("tests/support/virtio/split_ring_driver.ts"));

  const rx = new SplitRingDriver({
    size: RING_SIZE,
    index: 0,
    features: { mergeableRxBuffers: true, guestChecksum: true },
    base: RX_BASE,
    dataBytes: RING_SIZE * BUFFER_BYTES + 4096,
  });
  const tx = new SplitRingDriver({ size: 16, index: 1, base: TX_BASE });
  // The daemon's memory map over the drivers' bytes (one region each, as mapped memfds).
  const memory = memoryOverDrivers(GuestMemoryMap, [rx, tx]);
  const link = new VhostUserLink(new RecordingHandler());
  link.startVring({ ...rx.vring(), memory }, 0);
  link.startVring({ ...tx.vring(), memory }, 0);
  for (let i = 0; i < POSTED_CHAINS; i++) {
    rx.addChain([{ addr: rx.alloc(BUFFER_BYTES), length: BUFFER_BYTES, writable: true }]);
  }

  // The guest's side of the used ring: re-posts every chain the device returned.
  const usedRing = new DataView(rx.bytes.buffer, rx.usedAddr - RX_BASE);
  let lastUsed = 0;
  const repostUsed = () => {
    const idx = usedRing.getUint16(USED_IDX, true);
    while (lastUsed !== idx) {
      const slot = lastUsed & (RING_SIZE - 1);
      rx.offer(usedRing.getUint32(USED_RING + slot * USED_ELEM_SIZE, true));
      lastUsed = (lastUsed + 1) & 0xffff;
    }
  };

  const space = newFrameSpace();
  const table = new IoVectors(1024);
  return (mode, frames) => {
    space.acceptVectors = mode !== 0;
    const commit = mode === 2;
    let bytes = 0;
    const started = performance.now();
    for (let i = 0; i < frames; i++) {
      space.vectors = null;
      if (link.reserveFrame(space, HEADERS + PAYLOAD, HEADERS) !== SendResult.Sent) {
        throw new Error("no room: the bench's ring ran dry");
      }
      const vectors = space.vectors; // set by reserveFrame
      if (vectors === null) {
        // What the peek did with views: a table entry per view, after the headers.
        table.clear();
        table.push(space.views[0].subarray(HEADERS));
        for (let j = 1; j < space.count; j++) table.push(space.views[j]);
        bytes += table.totalBytes;
      } else {
        bytes += vectors.totalBytes;
      }
      if (commit) {
        if (link.commitFrame(HEADERS + PAYLOAD) !== SendResult.Sent) {
          throw new Error("commit failed");
        }
        link.flush();
        repostUsed();
      } else {
        link.cancelFrame();
        link.flush();
      }
    }
    const micros = (performance.now() - started) * 1000 / frames;
    if (bytes !== frames * PAYLOAD) throw new Error(`tables of ${bytes} bytes`);
    return micros;
  };
}

const trees = benchTrees(Deno.args);
const runners = await Promise.all(trees.map((tree) => setUp(tree.root)));
const results = trees.map(() => MODES.map(() => [] as number[]));
for (let round = 0; round < WARM_UP_ROUNDS + ROUNDS; round++) {
  for (let mode = 0; mode < MODES.length; mode++) {
    for (let k = 0; k < trees.length; k++) {
      const t = (k + round) % trees.length; // each tree goes first in turn
      const micros = runners[t](mode, FRAMES_PER_ROUND);
      if (round >= WARM_UP_ROUNDS) results[t][mode].push(micros);
    }
  }
}
const summary = (values: number[]) => {
  const sorted = values.toSorted((a, b) => a - b);
  return { min: sorted[0], median: sorted[sorted.length >> 1] };
};
console.log(`reserve + iovec table of a ${PAYLOAD}-byte payload over 16 RX chains, then:`);
MODES.forEach((name, mode) => {
  const ours = summary(results[0][mode]);
  let line = `${name.padEnd(15)}: min ${ours.min.toFixed(2)}, median ${
    ours.median.toFixed(2)
  } µs per frame`;
  for (let t = 1; t < trees.length; t++) {
    const other = summary(results[t][mode]);
    // Each round ran both trees back to back: the ratio of a pair saw the same load.
    const ratios = results[t][mode].map((v, i) => v / results[0][mode][i]).sort((a, b) => a - b);
    const quartile = (q: number) => ratios[Math.floor(q * (ratios.length - 1))].toFixed(2);
    line += ` | ${trees[t].name}: min ${other.min.toFixed(2)}, median ${
      other.median.toFixed(2)
    }; ratio per round ${quartile(0.5)} (quartiles ${quartile(0.25)}–${quartile(0.75)})`;
  }
  console.log(line);
});
console.log(`(${ROUNDS} rounds of ${FRAMES_PER_ROUND} frames per case and tree)`);
