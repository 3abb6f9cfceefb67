/**
 * A frame toward the guest that finds too few RX buffers (MRG_RXBUF, a frame over two
 * buffers with two posted, or none posted) gets NoRoom. The link then asks the guest to
 * kick when it posts its next buffer, on either ring layout, and waits for that kick:
 * it does not retry from the loop turn after turn while nothing new is posted. A buffer
 * the guest posts between the failed fill and that request comes without a kick: the
 * request's answer makes the link use it.
 */
import assert from "node:assert/strict";
import { PackedRingDriver } from "../../tests/support/virtio/packed_ring_driver.ts";
import { SplitRingDriver } from "../../tests/support/virtio/split_ring_driver.ts";
import { PackedVirtqueue } from "../virtio/packed_virtqueue.ts";
import { SplitVirtqueue } from "../virtio/virtqueue.ts";
import { SendResult } from "./frame_transport.ts";
import {
  frameOf,
  linkOnRings,
  type PostedBuffers,
  postRxBuffers,
} from "../../tests/support/tap/link_rings.ts";

/** RX buffer size the guest posts, and a frame that needs three of them. */
const BUFFER_BYTES = 2048;
const FRAME_BYTES = 5000;
/** Loop turns watched for retries with nothing new posted. */
const TURNS = 20;

const loopTurn = () => new Promise((resolve) => setImmediate(resolve));

for (const layout of ["split", "packed"] as const) {
  Deno.test(`\`VhostUserLink\` (${layout} ring, EVENT_IDX) waits for the guest's kick when too few RX buffers are posted, and gets it with the next buffer`, async () => {
    const { rx, link } = linkOnRings(
      (o) => layout === "packed" ? new PackedRingDriver(o) : new SplitRingDriver(o),
      { size: 32, features: { mergeableRxBuffers: true, eventIndex: true }, dataBytes: 1 << 20 },
    );
    let woken = 0;
    link.onWritable(() => {
      woken++;
      link.sendFrame(frameOf(FRAME_BYTES, 1)); // as a sender that got NoRoom does
    });
    const posted: PostedBuffers = new Map();
    postRxBuffers(rx, posted, 2, BUFFER_BYTES);
    rx.needsKick(); // the guest kicked for these
    assert.equal(link.sendFrame(frameOf(FRAME_BYTES, 1)), SendResult.NoRoom);
    for (let i = 0; i < TURNS; i++) await loopTurn();
    assert.ok(woken <= 1, `woken ${woken} times in ${TURNS} loop turns with nothing new posted`);
    postRxBuffers(rx, posted, 1, BUFFER_BYTES);
    assert.equal(rx.needsKick(), true, "the guest's next buffer kicks the device");
  });
}

for (const layout of ["split", "packed"] as const) {
  // Two buffers posted: too few for a 5000-byte frame, or used up by two small frames.
  for (const usedUp of [false, true]) {
    Deno.test(
      `\`VhostUserLink\` (${layout} ring, EVENT_IDX, RX buffers ${
        usedUp ? "used up" : "too few"
      }) uses a buffer posted while it asks for the kick`,
      async () => {
        const { rx, link } = linkOnRings(
          (o) => layout === "packed" ? new PackedRingDriver(o) : new SplitRingDriver(o),
          {
            size: 32,
            features: { mergeableRxBuffers: true, eventIndex: true },
            dataBytes: 1 << 20,
          },
        );
        const frameBytes = usedUp ? 500 : FRAME_BYTES;
        let delivered = false;
        link.onWritable(() => {
          if (link.sendFrame(frameOf(frameBytes, 1)) === SendResult.Sent) delivered = true;
        });
        const posted: PostedBuffers = new Map();
        postRxBuffers(rx, posted, 2, BUFFER_BYTES);
        rx.needsKick();
        if (usedUp) {
          assert.equal(link.sendFrame(frameOf(frameBytes, 2)), SendResult.Sent);
          assert.equal(link.sendFrame(frameOf(frameBytes, 3)), SendResult.Sent);
        }
        // Another vCPU posts the buffer the frame lacks just as the link asks for the kick,
        // before the request is visible: the guest does not kick for it.
        const engine = (layout === "packed" ? PackedVirtqueue : SplitVirtqueue).prototype;
        const enable = engine.enableNotifications;
        let raced = false;
        engine.enableNotifications = function (this: PackedVirtqueue & SplitVirtqueue) {
          if (!raced) {
            raced = true;
            postRxBuffers(rx, posted, 1, BUFFER_BYTES);
            assert.equal(rx.needsKick(), false, "no kick for the racing buffer");
          }
          return enable.call(this);
        };
        let result: SendResult;
        try {
          result = link.sendFrame(frameOf(frameBytes, 1));
        } finally {
          engine.enableNotifications = enable;
        }
        for (let i = 0; i < TURNS && result !== SendResult.Sent && !delivered; i++) {
          await loopTurn();
        }
        assert.ok(raced, "the link asked for the kick");
        assert.ok(
          result === SendResult.Sent || delivered,
          "the frame went into the buffers posted",
        );
      },
    );
  }
}
