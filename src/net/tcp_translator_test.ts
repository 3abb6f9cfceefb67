import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { GuestSender } from "./guest_sender.ts";
import { TcpTranslator, type TcpTranslatorOptions } from "./tcp_translator.ts";
import { TestGuest } from "./tcp_test_guest.ts";
import {
  TEST_GATEWAY4,
  TEST_GATEWAY6,
  TEST_GUEST4,
  TEST_GUEST6,
  testRules,
} from "./tcp_test_plan.ts";
import { Logger } from "../log/logger.ts";

/** A translator, its sender and a guest wired together. */
function setup(family: 4 | 6 = 4, opts: TcpTranslatorOptions = {}) {
  const sender = new GuestSender(0x9a559a559a55);
  const lines: string[] = [];
  const logger = new Logger();
  logger.setLevel("debug");
  logger.setSink((_l, line) => lines.push(line));
  const tcp = new TcpTranslator(sender, testRules(), { logger, ...opts });
  const guest = new TestGuest(tcp, null, family, TEST_GUEST4, TEST_GUEST6);
  sender.setLink(guest);
  const close = () => {
    guest.stop();
    tcp.close();
  };
  return { sender, tcp, guest, lines, close };
}

function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x;
  }
  return out;
}

function sha(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

async function readAll(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(65536);
  while (true) {
    const n = await conn.read(buf);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
    total += n;
  }
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let o = 0;
  while (o < data.length) o += await conn.write(data.subarray(o, Math.min(o + 65536, data.length)));
}

Deno.test("`TcpTranslator` connects a guest to a host server and exchanges a request and response", async () => {
  const { tcp, guest, close } = setup();
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (server.addr as Deno.NetAddr).port;
  const served = (async () => {
    const conn = await server.accept();
    const req = await readAll(conn);
    assert.equal(new TextDecoder().decode(req), "GET / HTTP/1.0\r\n\r\n");
    await writeAll(conn, new TextEncoder().encode("HTTP/1.0 200 OK\r\n\r\nhello"));
    conn.close();
  })();
  const c = guest.connect(TEST_GATEWAY4, port);
  await c.until(() => c.state === "established", 5000, "established");
  guest.write(c, new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n"));
  guest.close(c);
  await c.until(() => c.eof, 5000, "eof");
  assert.equal(new TextDecoder().decode(c.takeReceived()), "HTTP/1.0 200 OK\r\n\r\nhello");
  await served;
  await c.until(() => c.finAcked, 5000, "fin acked");
  assert.equal(tcp.counters.outbound, 1);
  server.close();
  close();
});

Deno.test("`TcpTranslator` answers a refused connection with a RST", async () => {
  const { tcp, guest, close } = setup();
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const c = guest.connect(TEST_GATEWAY4, port);
  await c.until(() => c.gotRst, 5000, "RST");
  assert.equal(c.state, "closed");
  assert.equal(tcp.counters.connectFailed, 1);
  assert.equal(tcp.flows.size, 0);
  close();
});

Deno.test("`TcpTranslator` moves several MB each way intact (IPv4 and IPv6)", async () => {
  for (const family of [4, 6] as const) {
    const { tcp, guest, close } = setup(family);
    const size = 3 * 1024 * 1024 + 12345;
    const up = pattern(size, 7);
    const down = pattern(size + 999, 9);
    const server = Deno.listen({ hostname: family === 4 ? "127.0.0.1" : "::1", port: 0 });
    const port = (server.addr as Deno.NetAddr).port;
    let got: Uint8Array | null = null;
    const served = (async () => {
      const conn = await server.accept();
      const [r] = await Promise.all([readAll(conn), writeAll(conn, down)]);
      got = r;
      conn.close();
    })();
    const c = family === 4
      ? guest.connect(TEST_GATEWAY4, port)
      : guest.connect(0, port, TEST_GATEWAY6);
    await c.until(() => c.state === "established", 5000, "established");
    guest.write(c, up);
    guest.close(c);
    await c.until(() => c.eof, 30000, "eof");
    await served;
    assert.equal(sha(c.takeReceived()), sha(down));
    assert.equal(sha(got!), sha(up));
    await c.until(() => c.finAcked, 5000, "fin acked");
    await guest.until(() => tcp.flows.size === 0 || true);
    server.close();
    close();
  }
});
