/**
 * TCP through the REAL daemon: a host server that writes a short HTTP response and
 * closes at once, as the e2e guest's page fetch meets it, fetched many times by the
 * scripted guest while the daemon has little room toward it — a vhost-user RX ring
 * with one small buffer posted (the FIN meets a full ring right behind the data), a
 * guest window smaller than the response, and both. Every fetch must end with the
 * whole response and then the host's FIN, never with fewer bytes or a RST.
 */

import assert from "node:assert/strict";
import { TEST_GATEWAY4 } from "../support/net/tcp_plan.ts";
import type { TestGuest } from "../support/net/tcp_guest.ts";
import { type Transport, type VhostOptions } from "./daemon_guest.ts";
import { withDaemon } from "./daemon_run.ts";
import { writeAll } from "./host_peers.ts";

/** Fetches per case (each a fresh connection). */
const FETCHES = 40;
/** Longest one fetch may take before the test calls it a hang (not a timing check). */
const FETCH_LIMIT_MS = 10_000;
/**
 * One RX buffer, virtio-net header included: 12 + 54 bytes of headers leave 62 bytes
 * of payload, so the response takes three segments and each waits for the buffer.
 */
const SMALL_RX_BUFFER = 128;
/** A guest window smaller than the response body (bytes, unscaled). */
const TINY_WINDOW = 16;

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The body the e2e host serves (tests/e2e/host_services.ts HELLO_BODY). */
const BODY = "hello from the tpasst e2e host\n";
/** A response as Deno.serve writes it for the e2e page: headers and body in one write. */
const RESPONSE = "HTTP/1.1 200 OK\r\ncontent-type: text/plain;charset=UTF-8\r\n" +
  `content-length: ${BODY.length}\r\ndate: Sun, 06 Dec 2026 12:08:25 GMT\r\n` +
  `connection: close\r\n\r\n${BODY}`;
const REQUEST = "GET /hello HTTP/1.1\r\nHost: 10.0.2.2\r\nConnection: close\r\n\r\n";

/** Serves `RESPONSE` to each connection once its request is read, then closes it. */
async function serveAndClose(server: Deno.TcpListener, count: number): Promise<void> {
  const buffer = new Uint8Array(4096);
  for (let i = 0; i < count; i++) {
    const h = await server.accept();
    try {
      let request = "";
      while (!request.endsWith("\r\n\r\n")) {
        const n = await h.read(buffer);
        if (n === null) break;
        request += dec.decode(buffer.subarray(0, n));
      }
      await writeAll(h, enc.encode(RESPONSE));
    } finally {
      h.close(); // at once: the data and the FIN reach the daemon's socket together
    }
  }
}

/** Fetches the page `FETCHES` times through `g`, checking every byte and the end. */
async function fetchRepeatedly(g: TestGuest): Promise<void> {
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = serveAndClose(server, FETCHES);
  try {
    for (let i = 0; i < FETCHES; i++) {
      const c = g.connect(TEST_GATEWAY4, server.addr.port);
      await c.until(() => c.state === "established" || c.gotRst, FETCH_LIMIT_MS, "the handshake");
      g.write(c, enc.encode(REQUEST));
      await c.until(() => c.eof || c.gotRst, FETCH_LIMIT_MS, `fetch ${i}: the host's FIN`);
      assert.equal(c.gotRst, false, `fetch ${i}: reset`);
      assert.equal(dec.decode(c.takeReceived()), RESPONSE, `fetch ${i}: the response`);
      g.close(c);
      await c.until(() => c.finAcked, FETCH_LIMIT_MS, `fetch ${i}: our FIN acknowledged`);
    }
    await served;
  } finally {
    server.close();
    // After a failed fetch the server's accept ends with the listener: the fetch's
    // assertion is the failure to report.
    await served.catch(() => {});
  }
}

function closeCase(
  transport: Transport,
  what: string,
  setup: (g: TestGuest) => void,
  vhost: VhostOptions = {},
): void {
  Deno.test(
    `bin/tpasst over ${transport}: ${FETCHES} host responses closed at once arrive whole ${what}`,
    async () => {
      await withDaemon(transport, [], async (d) => {
        setup(d.guest4);
        await fetchRepeatedly(d.guest4);
      }, vhost);
    },
  );
}

const tinyWindow = (g: TestGuest) => {
  g.rcvWindow = TINY_WINDOW;
  g.offerWindowScale = false;
};
const oneSmallRxBuffer: VhostOptions = { rxBuffers: 1, rxBufferSize: SMALL_RX_BUFFER };

closeCase("stream", "to a guest with a 16-byte window", tinyWindow);
closeCase("vhost-user", "with one 128-byte RX buffer posted", () => {}, oneSmallRxBuffer);
closeCase("vhost-user", "to a guest with a 16-byte window", tinyWindow);
closeCase(
  "vhost-user",
  "with one 128-byte RX buffer posted to a guest with a 16-byte window",
  tinyWindow,
  oneSmallRxBuffer,
);
