import assert from "node:assert/strict";
import dgram from "node:dgram";

const CHILD = new URL("./deny_child.ts", import.meta.url).pathname;
/** The helper library: the translator's host sockets are the helper's, as in the daemon. */
const HELPER = new URL("../../native/libtpasst_helper.so", import.meta.url).pathname;

Deno.test("`TcpTranslator` refuses a destination outside --allow-net with a RST and one log line", async () => {
  const allowed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const denied = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const ap = (allowed.addr as Deno.NetAddr).port;
  const dp = (denied.addr as Deno.NetAddr).port;
  let deniedAccepts = 0;
  const acceptAllowed = allowed.accept().then((c) => c);
  denied.accept().then((c) => {
    deniedAccepts++;
    c.close();
  }).catch(() => {});
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      `--allow-net=127.0.0.1:${ap}`,
      `--allow-ffi=${HELPER}`,
      CHILD,
      String(ap),
      String(dp),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `child failed:\n${stdout}\n${stderr}`);
  assert.match(stdout, /allowed ok/);
  assert.match(stdout, /denied rst/);
  const lines = stderr.split("\n").filter((l) => /not permitted/.test(l));
  assert.equal(lines.length, 1, stderr);
  assert.match(lines[0], new RegExp(`127\\.0\\.0\\.1 port ${dp}`));
  assert.equal(deniedAccepts, 0);
  (await acceptAllowed).close();
  allowed.close();
  denied.close();
});

const UDP_CHILD = new URL("./udp_deny_child.ts", import.meta.url).pathname;

/** A UDP socket on 127.0.0.1 that echoes what it receives and counts it. */
async function udpEcho() {
  const socket = dgram.createSocket("udp4");
  let received = 0;
  socket.on("message", (message, from) => {
    received++;
    socket.send(message, from.port, from.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  return { socket, port: socket.address().port, received: () => received };
}

/** A UDP port on 127.0.0.1 free a moment ago. */
async function freeUdpPort(): Promise<number> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  const port = socket.address().port;
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

Deno.test("`UdpTranslator` under a narrowed --allow-net: allowed UDP flows, denied UDP is dropped and logged once", async () => {
  const allowed = await udpEcho();
  const denied = await udpEcho();
  const listenPort = await freeUdpPort();
  const listenDenied = await freeUdpPort();
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        "--allow-ffi",
        `--allow-net=127.0.0.1:${allowed.port},127.0.0.1:${listenPort}`,
        UDP_CHILD,
        String(allowed.port),
        String(denied.port),
        String(listenPort),
        String(listenDenied),
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `child failed:\n${stdout}\n${stderr}`);
    for (const line of ["allowed ok", "denied dropped", "listen ok", "listen denied"]) {
      assert.match(stdout, new RegExp(line));
    }
    const lines = stderr.split("\n").filter((l) => /not permitted/.test(l));
    assert.equal(lines.length, 1, stderr);
    assert.match(lines[0], new RegExp(`udp: .*127\\.0\\.0\\.1 port ${denied.port} not permitted`));
    assert.equal(allowed.received(), 1);
    assert.equal(denied.received(), 0, "nothing reached the denied peer");
  } finally {
    allowed.socket.close();
    denied.socket.close();
  }
});
