import assert from "node:assert/strict";
import { wiredTranslator } from "../../../tests/support/net/tcp_host.ts";
import { TEST_GATEWAY4, TEST_GATEWAY6 } from "../../../tests/support/net/tcp_plan.ts";
import { Logger } from "../../log/logger.ts";
import { type FrameSpace, gatherFrame, type GuestLink } from "../../tap/frame_transport.ts";
import { frameFlowHash } from "../../tap/flow_hash.ts";

for (const family of [4, 6] as const) {
  Deno.test(`TCP data frames reserved toward the guest carry their flow's hash, the one a link computes of the flow's other frames (IPv${family})`, async () => {
    const logger = new Logger();
    logger.setSink(() => {});
    const { sender, guest, close } = wiredTranslator({ logger }, family);
    const reserved: number[] = [];
    const committed: number[] = [];
    const whole: number[] = [];
    let open: FrameSpace | null = null;
    const scratch = new Uint8Array(65536);
    // Between the sender and the guest: records the hashes and passes everything on.
    const recording: GuestLink = {
      kind: "recording",
      get l4ChecksumsOptional() {
        return guest.l4ChecksumsOptional;
      },
      get maxFrameLength() {
        return guest.maxFrameLength;
      },
      get tcpSegmentation() {
        return guest.tcpSegmentation;
      },
      get deviceMtu() {
        return guest.deviceMtu;
      },
      sendFrame(frame, checksumStart, checksumOffset) {
        whole.push(frameFlowHash(frame));
        return guest.sendFrame(frame, checksumStart, checksumOffset);
      },
      reserveFrame(space, maxLength, headerLength) {
        reserved.push(space.flowHash);
        open = space;
        return guest.reserveFrame(space, maxLength, headerLength);
      },
      commitFrame(length, checksumStart, checksumOffset, segments) {
        gatherFrame(open!, Math.min(length, 64), scratch);
        committed.push(frameFlowHash(scratch.subarray(0, Math.min(length, 64))));
        return guest.commitFrame(length, checksumStart, checksumOffset, segments);
      },
      cancelFrame: () => guest.cancelFrame(),
      flush: () => guest.flush(),
      onWritable: (callback) => guest.onWritable(callback),
    };
    sender.setLink(recording);
    const server = Deno.listen({ hostname: family === 4 ? "127.0.0.1" : "::1", port: 0 });
    const port = (server.addr as Deno.NetAddr).port;
    const served = (async () => {
      const conn = await server.accept();
      await conn.write(new Uint8Array(20000).fill(7));
      conn.close();
    })();
    const c = family === 4
      ? guest.connect(TEST_GATEWAY4, port)
      : guest.connect(0, port, TEST_GATEWAY6);
    await c.until(() => c.receivedBytes >= 20000, 5000, "data delivered");
    await served;
    server.close();
    close();
    assert.ok(committed.length > 0, "data went through reservations");
    assert.deepEqual(
      reserved.slice(0, committed.length),
      committed,
      "hash given = hash of the frame",
    );
    assert.ok(whole.length > 0, "the handshake went whole");
    assert.deepEqual(new Set([...whole, ...committed]).size, 1, "one flow, one hash");
  });
}
