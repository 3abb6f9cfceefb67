/**
 * Guest ↔ host TCP throughput through the translator, in one process: a scripted
 * guest (tests/support/net/tcp_guest.ts) on one side, a Deno.listen server on 127.0.0.1
 * on the other. Prints MB/s and CPU seconds per GB for each direction; the CPU
 * includes the scripted guest's own work (building and parsing its segments).
 *
 *   deno run -A bench/tcp_throughput_bench.ts            # 256 MB each way
 *   TPASST_BENCH_MB=1024 deno run -A bench/tcp_throughput_bench.ts
 *
 * @module
 */

import process from "node:process";
import { GuestSender } from "../src/net/guest_sender.ts";
import { TcpTranslator } from "../src/net/tcp/translator.ts";
import { TestGuest } from "../tests/support/net/tcp_guest.ts";
import {
  TEST_GATEWAY4,
  TEST_GUEST4,
  TEST_GUEST6,
  testRules,
} from "../tests/support/net/tcp_plan.ts";

const MB = 1024 * 1024;
const total = Number(Deno.env.get("TPASST_BENCH_MB") ?? "256") * MB;
const bufferSize = Number(Deno.env.get("TPASST_BENCH_BUFFER_KB") ?? "256") * 1024;

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function run(direction: "guest->host" | "host->guest"): Promise<void> {
  const sender = new GuestSender(0x9a559a559a55);
  const tcp = new TcpTranslator(sender, testRules(), { bufferSize });
  const guest = new TestGuest(tcp, null, 4, TEST_GUEST4, TEST_GUEST6);
  sender.setLink(guest);
  guest.onWritable((now) => tcp.linkWritable(now));
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (server.addr as Deno.NetAddr).port;
  const chunk = new Uint8Array(MB).fill(0x5a);
  let hostGot = 0;
  const host = (async () => {
    const conn = await server.accept();
    if (direction === "guest->host") {
      const buf = new Uint8Array(MB);
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        hostGot += n;
      }
    } else {
      for (let sent = 0; sent < total; sent += chunk.length) {
        let o = 0;
        while (o < chunk.length) o += await conn.write(chunk.subarray(o));
      }
    }
    conn.close();
  })();
  const c = guest.connect(TEST_GATEWAY4, port);
  c.discardReceived = true;
  await c.until(() => c.state === "established", 5000, "established");
  const t0 = performance.now();
  const cpu0 = cpuSeconds();
  if (direction === "guest->host") {
    for (let sent = 0; sent < total; sent += chunk.length) {
      guest.write(c, chunk);
      await c.until(() => c.sendQueueBytes < 8 * MB, 600_000, "send queue");
    }
    guest.close(c);
    await host;
  } else {
    await c.until(() => c.eof, 600_000, "eof");
    guest.close(c);
    await host;
  }
  const secs = (performance.now() - t0) / 1000;
  const cpu = cpuSeconds() - cpu0;
  const bytes = direction === "guest->host" ? hostGot : c.totalReceived;
  if (bytes !== total) throw new Error(`${direction}: moved ${bytes} of ${total} bytes`);
  const gb = bytes / (1024 * MB);
  console.log(
    `${direction}: ${(bytes / MB / secs).toFixed(1)} MB/s, ` +
      `${(cpu / gb).toFixed(2)} CPU s/GB (${bytes / MB} MB in ${secs.toFixed(2)} s)`,
  );
  guest.stop();
  tcp.close();
  server.close();
}

await run("guest->host");
await run("host->guest");
