/**
 * The JavaScript cost of reserving one host→guest TCP frame, in one process and
 * without QEMU or system calls: a 64 KiB frame is reserved in a vhost-user RX ring
 * whose guest posts 4 KiB buffers (as a Linux guest does under MRG_RXBUF: 16 chains
 * per frame), the iovec table the peek would use is made, and the reservation is
 * given back. Two ways, alternating: the payload as views of each guest buffer
 * turned into a table by the caller (what TCP did before), and as a table the link
 * fills itself from located buffers (FrameSpace.acceptVectors). Prints wall-clock
 * microseconds per frame, after a warm-up.
 *
 *   deno run -A bench/rx_reserve_bench.ts
 *
 * @module
 */

import { IoVectors } from "../ffi/io_vectors.ts";
import { newFrameSpace, SendResult } from "../src/tap/frame_transport.ts";
import { RecordingHandler } from "../tests/support/tap/frame_handler.ts";
import { VhostUserLink } from "../src/tap/vhost_user_link.ts";
import { ArrayGuestMemory } from "../tests/support/virtio/array_guest_memory.ts";
import { SplitRingDriver } from "../tests/support/virtio/split_ring_driver.ts";

/** Guest RX buffer size (Linux's mergeable buffers are about a page). */
const BUFFER_BYTES = 4096;
const RING_SIZE = 256;
/** Ethernet + IPv4 + TCP headers in front of the payload. */
const HEADERS = 54;
/** The payload of a 65520-byte MTU segment. */
const PAYLOAD = 65440;
const FRAMES_PER_ROUND = 100_000;
const ROUNDS = 12;
const WARM_UP_ROUNDS = 4;

const memory = new ArrayGuestMemory();
const rx = new SplitRingDriver({
  size: RING_SIZE,
  index: 0,
  features: { mergeableRxBuffers: true, guestChecksum: true },
  memory,
  base: 0x10_0000,
  dataBytes: RING_SIZE * BUFFER_BYTES + 4096,
});
const tx = new SplitRingDriver({ size: 16, index: 1, memory, base: 0x1000_0000 });
const link = new VhostUserLink(new RecordingHandler());
link.startVring(rx.vring(), 0);
link.startVring(tx.vring(), 0);
for (let i = 0; i < 64; i++) {
  rx.addChain([{ addr: rx.alloc(BUFFER_BYTES), length: BUFFER_BYTES, writable: true }]);
}

const space = newFrameSpace();
const table = new IoVectors(1024);
const results = { views: [] as number[], table: [] as number[] };
for (let round = 0; round < ROUNDS; round++) {
  const asTable = round % 2 === 1;
  space.acceptVectors = asTable;
  let bytes = 0;
  const started = performance.now();
  for (let i = 0; i < FRAMES_PER_ROUND; i++) {
    space.vectors = null;
    if (link.reserveFrame(space, HEADERS + PAYLOAD, HEADERS) !== SendResult.Sent) {
      throw new Error("no room: the bench's ring ran dry");
    }
    const vectors = space.vectors as IoVectors | null; // set by reserveFrame
    if (vectors === null) {
      // What the peek did with views: a table entry per view, after the headers.
      table.clear();
      table.push(space.views[0].subarray(HEADERS));
      for (let j = 1; j < space.count; j++) table.push(space.views[j]);
      bytes += table.totalBytes;
    } else {
      bytes += vectors.totalBytes;
    }
    link.cancelFrame();
    link.flush();
  }
  const micros = (performance.now() - started) * 1000 / FRAMES_PER_ROUND;
  if (bytes !== FRAMES_PER_ROUND * PAYLOAD) throw new Error(`tables of ${bytes} bytes`);
  if (round >= WARM_UP_ROUNDS) (asTable ? results.table : results.views).push(micros);
}
const line = (name: string, values: number[]) =>
  `${name}: ${values.map((v) => v.toFixed(2)).join(", ")} µs per frame (min ${
    Math.min(...values).toFixed(2)
  })`;
console.log(`reserve + iovec table + cancel of a ${PAYLOAD}-byte payload over 16 RX chains`);
console.log(line("views, table made by the caller", results.views));
console.log(line("table filled by the link       ", results.table));
