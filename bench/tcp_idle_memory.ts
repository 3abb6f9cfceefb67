/**
 * Memory of idle TCP connections: starts the daemon (bin/tpasst, vhost-user by
 * default) behind the scripted guest of tests/net, opens N connections from the
 * guest to a server in a child process on 127.0.0.1 (which accepts and holds them),
 * moves a few bytes each way on each, then lets them sit, and prints the daemon's
 * resident set (VmRSS) before and after: the growth per connection is what a
 * connection costs while idle. A measurement, never a pass/fail test.
 *
 *   deno run -A bench/tcp_idle_memory.ts [--connections 10000] [--transport stream]
 *
 * @module
 */

import type { GuestTcpConn } from "../tests/support/net/tcp_guest.ts";
import { DaemonGuest, type Transport } from "../tests/net/daemon_guest.ts";
import { parseIpv4 } from "../ffi/ip_address_text.ts";

const GATEWAY = parseIpv4("10.0.2.2")!;
/** Connections opened before the baseline is taken: the code paths are warm by then. */
const WARM_UP = 100;
/** Connections in flight at once while opening them. */
const BATCH = 500;

function option(name: string, fallback: string): string {
  const at = Deno.args.indexOf(name);
  return at >= 0 && at + 1 < Deno.args.length ? Deno.args[at + 1] : fallback;
}

/** VmRSS of `pid` in KiB. */
function rssKiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
}

const SERVER = `
const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(listener.addr.port);
const held = [];
for await (const conn of listener) {
  held.push(conn);
  (async () => {
    const buf = new Uint8Array(16);
    const n = await conn.read(buf).catch(() => null);
    if (n) await conn.write(buf.subarray(0, n)).catch(() => {});
  })();
}
`;

async function main(): Promise<void> {
  const count = Number(option("--connections", "10000"));
  const transport = option("--transport", "vhost-user") as Transport;
  const server = new Deno.Command(Deno.execPath(), {
    args: ["eval", SERVER],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = server.stdout.getReader();
  const first = await reader.read();
  const port = Number(new TextDecoder().decode(first.value).trim());
  const daemon = await DaemonGuest.start(transport, []);
  const guest = daemon.guest4;
  const pid = daemon.process.pid;
  const conns: GuestTcpConn[] = [];
  const open = async (n: number) => {
    for (let done = 0; done < n; done += BATCH) {
      const batch: GuestTcpConn[] = [];
      for (let i = 0; i < Math.min(BATCH, n - done); i++) {
        const c = guest.connect(GATEWAY, port);
        c.discardReceived = true;
        batch.push(c);
      }
      await guest.until(() => batch.every((c) => c.state === "established"), 60_000, "batch");
      for (const c of batch) guest.write(c, new Uint8Array([1, 2, 3, 4]));
      await guest.until(() => batch.every((c) => c.totalReceived === 4), 60_000, "echoes");
      conns.push(...batch);
    }
  };
  try {
    await open(WARM_UP);
    await new Promise((r) => setTimeout(r, 1000));
    const before = rssKiB(pid);
    const t0 = performance.now();
    await open(count);
    const opened = performance.now() - t0;
    await new Promise((r) => setTimeout(r, 3000));
    const after = rssKiB(pid);
    const grown = (after - before) / 1024;
    console.log(
      `tpasst ${transport}: ${count} idle TCP connections (+${WARM_UP} warm-up) opened in ${
        (opened / 1000).toFixed(1)
      } s; daemon RSS ${(before / 1024).toFixed(1)} -> ${(after / 1024).toFixed(1)} MiB: +${
        grown.toFixed(1)
      } MiB, ${((after - before) * 1024 / count).toFixed(0)} bytes per connection`,
    );
  } finally {
    for (const c of conns) guest.reset(c);
    await daemon.close();
    server.kill();
    await server.status;
  }
}

await main();
