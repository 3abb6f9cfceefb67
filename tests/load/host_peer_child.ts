/**
 * A host peer in a process of its own, for the fault test that kills it (SIGKILL)
 * under open flows: it listens on 127.0.0.1 (printing `port N` on standard output),
 * and on each connection it accepts it sends `CHUNK` bytes every `EVERY_MS` and reads
 * whatever comes. With a second argument it also opens that many connections to
 * 127.0.0.1:PORT (the daemon's `-t` forward) and trickles on them the same way.
 *
 * Usage: deno run --allow-net host_peer_child.ts [FORWARD_PORT COUNT]
 *
 * @module
 */

/** Bytes written per tick on each connection. */
const CHUNK = 1024;
/** Interval of the writes. */
const EVERY_MS = 100;

const chunk = new Uint8Array(CHUNK).fill(0x5a);

function trickle(conn: Deno.Conn): void {
  const timer = setInterval(() => {
    conn.write(chunk).catch(() => clearInterval(timer));
  }, EVERY_MS);
  (async () => {
    const buf = new Uint8Array(65536);
    try {
      while ((await conn.read(buf)) !== null) { /* read and drop */ }
    } catch { /* reset */ }
    clearInterval(timer);
  })();
}

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(`port ${listener.addr.port}`);
const [forwardPort, count] = Deno.args.map(Number);
if (forwardPort > 0) {
  for (let i = 0; i < count; i++) {
    Deno.connect({ hostname: "127.0.0.1", port: forwardPort }).then(trickle, () => {});
  }
}
for await (const conn of listener) trickle(conn);
