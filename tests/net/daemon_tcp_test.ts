/**
 * Process-level test of the TCP translator inside the real daemon: bin/tpasst in
 * the foreground speaking passt's stream protocol on a unix socket, a scripted
 * guest (tests/support/net/tcp_guest.ts) on the other end of that socket, and host
 * peers on 127.0.0.1.
 */

import assert from "node:assert/strict";
import type { L4Handler } from "../../src/net/l4_handler.ts";
import { TestGuest } from "../support/net/tcp_guest.ts";
import { parseIpv4 } from "../../ffi/ip_address_text.ts";

const TPASST = new URL("../../bin/tpasst", import.meta.url).pathname;
const GUEST = parseIpv4("10.0.2.15")!;
const GATEWAY = parseIpv4("10.0.2.2")!;

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p = (l.addr as Deno.NetAddr).port;
  l.close();
  return p;
}

async function waitForFile(path: string, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    try {
      await Deno.stat(path);
      return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${path} did not appear within ${ms} ms`);
}

async function readAll(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(65536);
  while (true) {
    const n = await conn.read(buf);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
  }
  const out = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

Deno.test("bin/tpasst translates guest and host TCP connections over the stream protocol", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tpasst-tcp-" });
  const sock = `${dir}/t.sock`;
  const fwdPort = freePort();
  const child = new Deno.Command(TPASST, {
    args: [
      "-f",
      "-1",
      "-4",
      "-s",
      sock,
      "-a",
      "10.0.2.15/24",
      "-g",
      "10.0.2.2",
      "-M",
      "9a:55:9a:55:9a:55",
      "-t",
      `127.0.0.1/${fwdPort}:8080`,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let conn: Deno.UnixConn | null = null;
  let exitCode = -1;
  let stderr = "";
  try {
    await waitForFile(sock, 15000);
    conn = await Deno.connect({ transport: "unix", path: sock });
    const c0 = conn;
    const none: L4Handler = { handlePacket() {} };
    const guest = new TestGuest(none, null, 4, GUEST);
    let chain = Promise.resolve();
    guest.useStack({
      handleFrame(frame: Uint8Array) {
        const msg = new Uint8Array(4 + frame.length);
        new DataView(msg.buffer).setUint32(0, frame.length);
        msg.set(frame, 4);
        chain = chain.then(async () => {
          let o = 0;
          while (o < msg.length) o += await c0.write(msg.subarray(o));
        }).catch(() => {});
      },
      endOfBatch() {},
      tick() {},
      nextTimerAt: () => Infinity,
    });
    // Frames from the daemon, length-prefixed, to the guest.
    (async () => {
      let pending = new Uint8Array(0);
      const buf = new Uint8Array(1 << 17);
      while (true) {
        const n = await c0.read(buf).catch(() => null);
        if (n === null) break;
        const joined = new Uint8Array(pending.length + n);
        joined.set(pending);
        joined.set(buf.subarray(0, n), pending.length);
        let o = 0;
        while (joined.length - o >= 4) {
          const len = new DataView(joined.buffer, o).getUint32(0);
          if (joined.length - o - 4 < len) break;
          guest.sendFrame(joined.subarray(o + 4, o + 4 + len));
          o += 4 + len;
        }
        pending = joined.slice(o);
      }
    })();

    // Guest → host: the gateway reaches the host's 127.0.0.1.
    const port = (server.addr as Deno.NetAddr).port;
    const served = server.accept().then(async (h) => {
      const req = await readAll(h);
      await h.write(new TextEncoder().encode(`echo ${new TextDecoder().decode(req)}`));
      h.close();
    });
    const c = guest.connect(GATEWAY, port);
    await c.until(() => c.state === "established", 10000, "established through the daemon");
    guest.write(c, new TextEncoder().encode("hello daemon"));
    guest.close(c);
    await c.until(() => c.eof, 10000, "reply");
    assert.equal(new TextDecoder().decode(c.takeReceived()), "echo hello daemon");
    await served;

    // Host → guest through -t.
    guest.listening.add(8080);
    const client = await Deno.connect({ hostname: "127.0.0.1", port: fwdPort });
    await guest.until(() => guest.accepted.length === 1, 10000, "inbound SYN");
    const a = guest.accepted[0];
    assert.equal(a.remote4, GATEWAY);
    await client.write(new TextEncoder().encode("knock knock"));
    await a.until(() => a.receivedBytes === 11, 10000, "inbound data");
    assert.equal(new TextDecoder().decode(a.takeReceived()), "knock knock");
    guest.write(a, new TextEncoder().encode("who's there"));
    guest.close(a);
    assert.equal(new TextDecoder().decode(await readAll(client)), "who's there");
    client.close();
    guest.stop();
  } finally {
    server.close();
    try {
      conn?.close();
    } catch { /* closed */ }
    const deadline = setTimeout(() => {
      try {
        child.kill("SIGTERM");
      } catch { /* exited */ }
    }, 5000);
    const out = await output;
    clearTimeout(deadline);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    exitCode = out.code;
    stderr = new TextDecoder().decode(out.stderr);
  }
  assert.equal(exitCode, 0, `daemon exit status; stderr:\n${stderr}`);
  assert.doesNotMatch(stderr, /internal error|exception/i);
});
