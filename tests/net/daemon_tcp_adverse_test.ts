/**
 * TCP through the REAL daemon under conditions a guest can impose: a link that
 * loses frames both ways (the daemon must retransmit and cope with retransmissions),
 * a guest advertising a small window, and over vhost-user a starved RX ring (few
 * small buffers) and a front-end that does not negotiate MRG_RXBUF. Every transfer
 * is checked byte for byte with SHA-256.
 */

import assert from "node:assert/strict";
import { featureBit } from "../../src/vhost_user/protocol.ts";
import { TEST_GATEWAY4 } from "../support/net/tcp_plan.ts";
import type { TestGuest } from "../support/net/tcp_guest.ts";
import { QEMU_NET_FEATURES } from "../support/frontend/vhost_user_frontend.ts";
import { type Transport, TRANSPORTS, type VhostOptions } from "./daemon_guest.ts";
import { withDaemon } from "./daemon_run.ts";
import { drainWithDigest, patternBytes, sha256, sha256Hex, writeAll } from "./host_peers.ts";
import { VIRTIO_NET_F_MRG_RXBUF } from "../../src/tap/net_features.ts";

/** Bytes moved each way per case. */
const BYTES = 1024 * 1024;
/** Bytes moved each way on the lossy link (each loss costs the daemon about one RTO). */
const LOSSY_BYTES = 256 * 1024;
/** Longest a transfer may take before the test calls it a hang (not a timing check). */
const TRANSFER_LIMIT_MS = 60_000;

/** Moves `bytes` guest→host and then host→guest through `g`, checking both. */
async function transferBothWays(g: TestGuest, bytes: number, seed: number): Promise<void> {
  const data = patternBytes(bytes, seed);
  const expected = sha256Hex(data);
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const up = server.accept().then(async (h) => {
      try {
        return await drainWithDigest(h);
      } finally {
        h.close();
      }
    });
    const c = g.connect(TEST_GATEWAY4, server.addr.port);
    await c.until(() => c.state === "established", TRANSFER_LIMIT_MS, "the handshake");
    g.write(c, data);
    g.close(c);
    const got = await up;
    assert.equal(got.bytes, bytes, "guest→host length");
    assert.equal(got.sha256, expected, "guest→host SHA-256");
    await c.until(() => c.finAcked && c.eof, TRANSFER_LIMIT_MS, "both FINs");

    const down = server.accept().then(async (h) => {
      try {
        await writeAll(h, data);
      } finally {
        h.close();
      }
    });
    const r = g.connect(TEST_GATEWAY4, server.addr.port);
    const digest = sha256();
    r.discardReceived = true;
    r.onData = (chunk) => digest.update(chunk);
    await r.until(() => r.state === "established", TRANSFER_LIMIT_MS, "the handshake");
    if (g.loseFromGuestOneIn > 0) {
      // TestGuest does not answer a retransmitted SYN-ACK once established: if the
      // link lost its handshake ACK, repeat the ACK until the daemon's data flows.
      await r.until(
        () => {
          if (r.totalReceived === 0 && !r.eof) g.sendAck(r);
          return r.totalReceived > 0 || r.eof;
        },
        TRANSFER_LIMIT_MS,
        "the first data from the host",
      );
    }
    await down;
    await r.until(() => r.eof, TRANSFER_LIMIT_MS, "the host's data and FIN");
    assert.equal(r.totalReceived, bytes, "host→guest length");
    assert.equal(digest.hex(), expected, "host→guest SHA-256");
    g.close(r);
    await r.until(() => r.finAcked, TRANSFER_LIMIT_MS, "our FIN acknowledged");
  } finally {
    server.close();
  }
}

function adverse(
  transport: Transport,
  what: string,
  setup: (g: TestGuest) => void,
  vhost: VhostOptions = {},
  ignoreReason: string | null = null,
  bytes = BYTES,
): void {
  Deno.test({
    name: `bin/tpasst over ${transport}: ${bytes >> 10} KiB each way arrive intact ${what}`,
    ignore: ignoreReason !== null,
    async fn() {
      await withDaemon(transport, [], async (d) => {
        const g = d.guest4;
        setup(g);
        const t0 = performance.now();
        await transferBothWays(g, bytes, 0xadd);
        console.log(`${transport} ${what}: ${(performance.now() - t0).toFixed(0)} ms`);
      }, vhost);
    },
  });
}

for (const transport of TRANSPORTS) {
  adverse(
    transport,
    "in 1460-byte segments when about one frame in 37 is lost each way",
    (g) => {
      g.mss = 1460; // ~180 segments each way, so a handful of losses each way
      g.loseToGuestOneIn = 37;
      g.loseFromGuestOneIn = 37;
    },
    {},
    null,
    LOSSY_BYTES,
  );
  adverse(transport, "to a guest advertising a 16 KiB window", (g) => {
    g.rcvWindow = 16 * 1024;
    g.offerWindowScale = false;
  });
}

// 17 × 4 KiB holds one maximal segment (the guest's MSS is 65000): the daemon keeps
// running out of RX buffers and must resume on each RX kick.
adverse("vhost-user", "with only 17 RX buffers of 4 KiB posted", () => {}, {
  rxBuffers: 17,
  rxBufferSize: 4096,
});

// 15 × 4 KiB (61440 bytes) cannot hold one maximal segment (65000 bytes of payload): the
// daemon must size segments to the buffers posted, since the guest will not kick again.
adverse(
  "vhost-user",
  "with only 15 RX buffers of 4 KiB posted (less than one maximal segment)",
  () => {},
  { rxBuffers: 15, rxBufferSize: 4096 },
);

adverse("vhost-user", "without MRG_RXBUF (each frame must fit one 16 KiB RX buffer)", () => {}, {
  features: QEMU_NET_FEATURES & ~featureBit(VIRTIO_NET_F_MRG_RXBUF),
  rxBufferSize: 16 * 1024,
});
