/**
 * The real daemon answers a guest's ping of the gateway promptly when nothing else
 * happens: the echo reply, read from a ping socket outside any batch of guest frames,
 * must be published at once — over vhost-user its RX used index updated, over the
 * stream transport its frame written to the socket — not left until some other frame
 * or timer flushes the link. Only the ping travels: the daemon runs with `--no-ra` so
 * that no router advertisement flushes the link for it.
 *
 * Ping sockets need `net.ipv4.ping_group_range` to include the daemon's group. Where
 * the host allows them (make test runs under tests/e2e/with_ping_sockets.sh) the daemon
 * runs as it is; otherwise, as root, it runs in a fresh network namespace with the
 * range opened there (the host's setting is left alone); otherwise the test is skipped
 * and says why.
 *
 * @module
 */

import assert from "node:assert/strict";
import { buildIcmpEcho, Icmpv4Type, Icmpv6Type } from "../../src/net/wire/icmp.ts";
import { decodeFrame, guestIpv4Frame, guestIpv6Frame } from "../support/net/frames.ts";
import { exists, TPASST, waitFor } from "../cli/cli_helpers.ts";
import { pingSocketsAllowed } from "../e2e/ping_sockets.ts";
import { RX, VhostUserFrontend } from "../support/frontend/vhost_user_frontend.ts";
import { BASE_ARGS, type Transport, TRANSPORTS } from "./daemon_guest.ts";
import { IPPROTO_ICMP, IPPROTO_ICMPV6 } from "../../src/net/wire/ip_protocol.ts";
import { parseIpv6 } from "../../ffi/ip_address_text.ts";
import { commandSucceeds } from "../support/command_succeeds.ts";

/** How long the reply may take: a ping of the host's loopback answers in microseconds. */
const REPLY_LIMIT_MS = 1000;
/** The guest and its gateway as BASE_ARGS configure them (10.0.2.15 → 10.0.2.2, fd00::15 → fd00::2). */
const GUEST4 = 0x0a00020f, GATEWAY4 = 0x0a000202;
const GUEST6 = parseIpv6("fd00::15")!, GATEWAY6 = parseIpv6("fd00::2")!;
/** Length prefix of a frame on passt's stream socket: 32-bit big-endian. */
const STREAM_PREFIX = 4;
/** RX buffers posted by the vhost-user front-end (a reply needs one). */
const RX_BUFFERS = 16;
/** Echo identifier and payload of the guest's ping. */
const ECHO_ID = 0x5151;
const ECHO_DATA = [0xde, 0xad, 0xbe, 0xef];
/** The range that lets every group open ping sockets. */
const ALL_GROUPS = "0 2147483647";

/** How the daemon gets ping sockets here, or null with the reason it cannot. */
const pingSetup: { namespace: boolean } | { skip: string } = (() => {
  if (pingSocketsAllowed(Deno.gid() ?? 0)) return { namespace: false };
  if (Deno.uid() !== 0) {
    return {
      skip: "ping sockets are not permitted for this group and, not being root, the test " +
        "cannot open them in a network namespace (run under tests/e2e/with_ping_sockets.sh)",
    };
  }
  if (commandSucceeds("unshare", ["--net", "true"])) return { namespace: true };
  return { skip: "ping sockets are not permitted and unshare --net is unavailable" };
})();

/** Starts the daemon in the foreground (in its own network namespace when needed). */
function startDaemon(transport: Transport, socket: string): Deno.ChildProcess {
  const args = [
    "-f",
    "-s",
    socket,
    ...(transport === "vhost-user" ? ["--vhost-user"] : []),
    ...BASE_ARGS,
    "--no-ra",
  ];
  const namespaced = "namespace" in pingSetup && pingSetup.namespace;
  const command = namespaced
    ? new Deno.Command("unshare", {
      args: [
        "--net",
        "sh",
        "-c",
        `ip link set lo up && sysctl -q -w net.ipv4.ping_group_range='${ALL_GROUPS}' && ` +
        'exec "$0" "$@"',
        TPASST,
        ...args,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    })
    : new Deno.Command(TPASST, { args, stdin: "null", stdout: "null", stderr: "piped" });
  return command.spawn();
}

/** The guest's echo request to the gateway, IPv4 or IPv6. */
function echoRequest(family: 4 | 6, sequence: number): Uint8Array {
  const icmp = new Uint8Array(8 + ECHO_DATA.length);
  buildIcmpEcho(
    icmp,
    0,
    family === 4 ? Icmpv4Type.EchoRequest : Icmpv6Type.EchoRequest,
    ECHO_ID,
    sequence,
  );
  icmp.set(ECHO_DATA, 8);
  return family === 4
    ? guestIpv4Frame(IPPROTO_ICMP, GUEST4, GATEWAY4, icmp)
    : guestIpv6Frame(IPPROTO_ICMPV6, GUEST6, GATEWAY6, icmp);
}

/** Asserts that `frame` is the gateway's echo reply to {@link echoRequest}. */
function assertEchoReply(frame: Uint8Array, family: 4 | 6, sequence: number): void {
  const d = decodeFrame(frame);
  if (family === 4) {
    assert.equal(d.ip4?.src, GATEWAY4, "reply from the gateway");
    assert.equal(d.ip4?.dst, GUEST4);
    assert.equal(d.l4[0], Icmpv4Type.EchoReply);
  } else {
    assert.deepEqual(d.ip6?.src, GATEWAY6, "reply from the gateway");
    assert.deepEqual(d.ip6?.dst, GUEST6);
    assert.equal(d.l4[0], Icmpv6Type.EchoReply);
  }
  assert.equal((d.l4[4] << 8) | d.l4[5], ECHO_ID, "the guest's identifier");
  assert.equal((d.l4[6] << 8) | d.l4[7], sequence);
  assert.deepEqual(Array.from(d.l4.subarray(8)), ECHO_DATA);
}

/** Connection attempts while the daemon's socket exists but does not listen yet. */
const CONNECT_ATTEMPTS = 50;
/** Pause between connection attempts. */
const CONNECT_RETRY_MS = 20;

/** Runs `connect` until it succeeds: the socket file appears at bind(), a moment before listen(). */
async function connectWithRetry<T>(connect: () => T | Promise<T>): Promise<T> {
  for (let attempt = 1;; attempt++) {
    try {
      return await connect();
    } catch (error) {
      if (attempt >= CONNECT_ATTEMPTS) throw error;
      await new Promise((resolve) => setTimeout(resolve, CONNECT_RETRY_MS));
    }
  }
}

/** Over vhost-user: sends the ping on TX and waits for the RX used index to move. */
async function pingOverVhostUser(socket: string): Promise<void> {
  const frontend = await connectWithRetry(() => VhostUserFrontend.connect(socket));
  try {
    await frontend.negotiate();
    frontend.postRxBuffers(RX_BUFFERS);
    for (const [family, sequence] of [[4, 1], [6, 2]] as const) {
      const sent = performance.now();
      frontend.sendFrame(echoRequest(family, sequence));
      let used;
      try {
        used = await frontend.waitUsed(RX, 1, REPLY_LIMIT_MS);
      } catch (error) {
        throw new Error(`IPv${family}: the echo reply's used index was not published: ${error}`);
      }
      const elapsed = performance.now() - sent;
      assert.ok(elapsed < REPLY_LIMIT_MS, `IPv${family} reply after ${elapsed.toFixed(0)} ms`);
      const frames = frontend.rxFrames(used);
      assert.equal(frames.length, 1, "the reply alone: no other traffic");
      assertEchoReply(frames[0], family, sequence);
    }
  } finally {
    frontend.close();
  }
}

/** Reads one length-prefixed frame from `conn`, or throws after `limitMs`. */
async function readStreamFrame(conn: Deno.UnixConn, limitMs: number): Promise<Uint8Array> {
  let pending = new Uint8Array(0);
  const chunk = new Uint8Array(65536 + STREAM_PREFIX);
  const deadline = performance.now() + limitMs;
  for (;;) {
    if (pending.length >= STREAM_PREFIX) {
      const length = new DataView(pending.buffer).getUint32(0);
      if (pending.length >= STREAM_PREFIX + length) {
        return pending.slice(STREAM_PREFIX, STREAM_PREFIX + length);
      }
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), Math.max(0, deadline - performance.now()));
    });
    const n = await Promise.race([conn.read(chunk), timeout]);
    clearTimeout(timer);
    if (n === "timeout") throw new Error(`no frame on the stream socket within ${limitMs} ms`);
    if (n === null) throw new Error("the daemon closed the stream socket");
    const joined = new Uint8Array(pending.length + n);
    joined.set(pending);
    joined.set(chunk.subarray(0, n), pending.length);
    pending = joined;
  }
}

/** Over the stream transport: writes the ping and waits for a frame on the socket. */
async function pingOverStream(socket: string): Promise<void> {
  const conn = await connectWithRetry(() => Deno.connect({ transport: "unix", path: socket }));
  try {
    for (const [family, sequence] of [[4, 1], [6, 2]] as const) {
      const frame = echoRequest(family, sequence);
      const message = new Uint8Array(STREAM_PREFIX + frame.length);
      new DataView(message.buffer).setUint32(0, frame.length);
      message.set(frame, STREAM_PREFIX);
      const sent = performance.now();
      let written = 0;
      while (written < message.length) written += await conn.write(message.subarray(written));
      let reply: Uint8Array;
      try {
        reply = await readStreamFrame(conn, REPLY_LIMIT_MS);
      } catch (error) {
        throw new Error(`IPv${family}: the echo reply did not reach the socket: ${error}`);
      }
      const elapsed = performance.now() - sent;
      assert.ok(elapsed < REPLY_LIMIT_MS, `IPv${family} reply after ${elapsed.toFixed(0)} ms`);
      assertEchoReply(reply, family, sequence);
    }
  } finally {
    conn.close();
  }
}

for (const transport of TRANSPORTS) {
  const skip = "skip" in pingSetup ? pingSetup.skip : null;
  Deno.test({
    name:
      `\`bin/tpasst\` over ${transport} publishes the echo reply to a lone ping of the gateway ` +
      `within ${REPLY_LIMIT_MS} ms${skip ? ` (skipped: ${skip})` : ""}`,
    ignore: skip !== null,
    async fn() {
      const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "tpping" });
      const socket = `${dir}/t.sock`;
      const daemon = startDaemon(transport, socket);
      let stderr = "";
      const decoder = new TextDecoder();
      const reading = (async () => {
        for await (const chunk of daemon.stderr) stderr += decoder.decode(chunk);
      })();
      try {
        await waitFor(`the daemon's socket ${socket}`, () => exists(socket));
        if (transport === "vhost-user") await pingOverVhostUser(socket);
        else await pingOverStream(socket);
        assert.doesNotMatch(stderr, /ping sockets|internal error|exception/i);
      } catch (error) {
        throw new Error(`${error instanceof Error ? error.message : error}\ndaemon:\n${stderr}`);
      } finally {
        try {
          daemon.kill("SIGTERM");
        } catch { /* exited */ }
        await daemon.status;
        await reading;
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    },
  });
}
