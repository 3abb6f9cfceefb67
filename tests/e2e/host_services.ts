/**
 * Host-side peers of the end-to-end scenarios, all bound to loopback only: an HTTP
 * server (a small page and a pseudo-random bulk stream whose SHA-256 it records), a TCP
 * sink hashing what it receives, a UDP echo server, an iperf3 server process, and the
 * TCP connection-end peers (how a connection ended, a resetting server, half-close).
 *
 * @module
 */

import { createHash } from "node:crypto";
import dgram from "node:dgram";
import { TcpListenSocket, type TcpSocket, WOULD_BLOCK } from "../../ffi/tcp_socket.ts";
import { Errno, NativeError } from "../../ffi/native_error.ts";

/** Body of the host's test page (`GET /hello`). */
export const HELLO_BODY = "hello from the tpasst e2e host\n";
/** Chunk size of generated bulk data. */
const BULK_CHUNK = 64 * 1024;

/**
 * Ports {@link freePort} picks from: below Linux's default ephemeral range (32768–60999,
 * net.ipv4.ip_local_port_range), so no connection's local port takes one between the
 * pick and the backend's bind (an ephemeral pick was taken once in CI: EADDRINUSE).
 */
export const PICK_FIRST = 20_000;
export const PICK_END = 32_768;
/** Random picks tried before falling back to a port the kernel chooses. */
const PICK_ATTEMPTS = 50;

/** Returns a TCP port that was free on 127.0.0.1 a moment ago. */
export function freePort(): number {
  for (let attempt = 0; attempt < PICK_ATTEMPTS; attempt++) {
    const port = PICK_FIRST + Math.floor(Math.random() * (PICK_END - PICK_FIRST));
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch {
      // taken: try another
    }
  }
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Returns a port free for both TCP and UDP on 127.0.0.1 a moment ago. */
export async function freeTcpUdpPort(): Promise<number> {
  for (let attempt = 0;; attempt++) {
    const port = freePort();
    const socket = dgram.createSocket("udp4");
    const free = await new Promise<boolean>((resolve) => {
      socket.once("error", () => resolve(false));
      socket.bind(port, "127.0.0.1", () => resolve(true));
    });
    await new Promise<void>((done) => socket.close(() => done()));
    if (free) return port;
    if (attempt > 100) throw new Error("Cannot find a port free for TCP and UDP on 127.0.0.1");
  }
}

/**
 * Fills `chunk` with the xorshift32 stream continuing from `state`; returns the new
 * state. Deterministic, fast, incompressible enough for a transfer test.
 */
export function fillPseudoRandom(chunk: Uint8Array, state: number): number {
  const words = new Uint32Array(chunk.buffer, chunk.byteOffset, chunk.byteLength >>> 2);
  let x = state >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  return x;
}

/** Streams `bytes` pseudo-random bytes; `onDone` gets their SHA-256 (hex) at the end. */
export function pseudoRandomStream(
  bytes: number,
  onDone: (sha256: string) => void,
): ReadableStream<Uint8Array> {
  const hash = createHash("sha256");
  let sent = 0;
  let state = 0x2545f491;
  return new ReadableStream({
    pull(controller) {
      const size = Math.min(BULK_CHUNK, bytes - sent);
      if (size <= 0) {
        controller.close();
        onDone(hash.digest("hex"));
        return;
      }
      const chunk = new Uint8Array(BULK_CHUNK);
      state = fillPseudoRandom(chunk, state);
      const part = chunk.subarray(0, size);
      hash.update(part);
      sent += size;
      controller.enqueue(part);
    },
  }, { highWaterMark: 4 });
}

/** The HTTP server: `/hello` and `/bulk?bytes=N`. */
export interface HttpServer {
  readonly port: number;
  /** SHA-256 of each completed `/bulk` response, in order. */
  readonly bulkSha256: string[];
  /** Request paths seen, in order. */
  readonly requests: string[];
  close(): Promise<void>;
}

/** Starts the HTTP server on 127.0.0.1 and ::1 at one port (0 = any free port). */
export function startHttpServer(port = 0): HttpServer {
  const bulkSha256: string[] = [];
  const requests: string[] = [];
  const handler = (request: Request): Response => {
    const url = new URL(request.url);
    requests.push(url.pathname);
    if (url.pathname === "/hello") return new Response(HELLO_BODY);
    if (url.pathname === "/bulk") {
      const bytes = Number(url.searchParams.get("bytes") ?? "0");
      return new Response(pseudoRandomStream(bytes, (sha) => bulkSha256.push(sha)), {
        headers: { "content-length": `${bytes}`, "content-type": "application/octet-stream" },
      });
    }
    return new Response("not found\n", { status: 404 });
  };
  const v4 = Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, handler);
  const actual = v4.addr.port;
  let v6: Deno.HttpServer | null = null;
  try {
    v6 = Deno.serve({ hostname: "::1", port: actual, onListen() {} }, handler);
  } catch {
    // no IPv6 loopback on this host: the IPv6 scenarios will report it
  }
  return {
    port: actual,
    bulkSha256,
    requests,
    async close() {
      await v4.shutdown();
      await v6?.shutdown();
    },
  };
}

/** A TCP sink: hashes each connection's bytes. */
export interface TcpSink {
  readonly port: number;
  /** Per finished connection: byte count and SHA-256. */
  readonly received: { bytes: number; sha256: string }[];
  close(): void;
}

/**
 * Starts a TCP sink on 127.0.0.1. A connection ends at EOF or after `expectBytes`
 * (busybox nc does not half-close when its input ends, so the sink closes first).
 */
export function startTcpSink(expectBytes: number, port = 0): TcpSink {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const received: { bytes: number; sha256: string }[] = [];
  (async () => {
    for await (const conn of listener) {
      (async () => {
        const hash = createHash("sha256");
        let bytes = 0;
        const buffer = new Uint8Array(256 * 1024);
        try {
          while (bytes < expectBytes) {
            const n = await conn.read(
              buffer.subarray(0, Math.min(buffer.length, expectBytes - bytes)),
            );
            if (n === null) break;
            hash.update(buffer.subarray(0, n));
            bytes += n;
          }
        } catch {
          // reset by peer: report what arrived
        }
        received.push({ bytes, sha256: hash.digest("hex") });
        try {
          conn.close();
        } catch { /* closed */ }
      })();
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    received,
    close: () => listener.close(),
  };
}

/** A UDP echo server answering `echo:` + payload. */
export interface UdpEcho {
  readonly port: number;
  /** Payloads received, as text. */
  readonly received: string[];
  close(): Promise<void>;
}

/** Starts a UDP echo server on 127.0.0.1 (`port` 0 = any free port). */
export function startUdpEcho(port = 0): Promise<UdpEcho> {
  const socket = dgram.createSocket("udp4");
  const received: string[] = [];
  socket.on("message", (message, remote) => {
    received.push(new TextDecoder().decode(message));
    socket.send(new TextEncoder().encode(`echo:${message}`), remote.port, remote.address);
  });
  return new Promise((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(port, "127.0.0.1", () => {
      socket.off("error", reject);
      resolve({
        port: socket.address().port,
        received,
        close: () => new Promise((done) => socket.close(() => done())),
      });
    });
  });
}

/**
 * Sends `payload` to 127.0.0.1:`port` from a fresh socket every `intervalMs` until an
 * answer arrives (the guest may not listen yet) or `timeoutMs` passes; returns it.
 */
export async function udpRequest(
  port: number,
  payload: string,
  timeoutMs: number,
  intervalMs = 500,
): Promise<string> {
  const socket = dgram.createSocket("udp4");
  try {
    return await new Promise<string>((resolve, reject) => {
      const send = () => socket.send(new TextEncoder().encode(payload), port, "127.0.0.1");
      const retry = setInterval(send, intervalMs);
      const timer = setTimeout(() => {
        clearInterval(retry);
        reject(new Error(`No UDP answer from 127.0.0.1:${port} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once("message", (message) => {
        clearInterval(retry);
        clearTimeout(timer);
        resolve(new TextDecoder().decode(message));
      });
      socket.bind(0, "127.0.0.1", send);
    });
  } finally {
    socket.close();
  }
}

/**
 * Connects to 127.0.0.1:`port`, sends `message`, and reads until the peer has sent
 * `expect`, then closes; retries while the guest is not listening yet. Sends first:
 * Debian's passt (2023) completes an inbound handshake toward the guest only once the
 * host side sends data. Returns what was read.
 */
export async function tcpExchange(
  port: number,
  message: string,
  expect: string,
  timeoutMs: number,
): Promise<string> {
  const deadline = performance.now() + timeoutMs;
  let last = "";
  while (performance.now() < deadline) {
    let conn: Deno.TcpConn | null = null;
    let readDeadline: ReturnType<typeof setTimeout> | undefined;
    try {
      conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(new TextEncoder().encode(message));
      let text = "";
      const buffer = new Uint8Array(4096);
      // Ends a read the guest never answers; the connection may be closed by then.
      readDeadline = setTimeout(() => {
        try {
          conn?.close();
        } catch { /* closed */ }
      }, 10_000);
      while (text.length < expect.length) {
        const n = await conn.read(buffer);
        if (n === null) break;
        text += new TextDecoder().decode(buffer.subarray(0, n));
      }
      clearTimeout(readDeadline);
      last = text;
      if (text === expect) {
        conn.close();
        return text;
      }
    } catch (error) {
      last = String(error);
    }
    clearTimeout(readDeadline);
    try {
      conn?.close();
    } catch { /* closed */ }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`No ${JSON.stringify(expect)} from 127.0.0.1:${port} (last: ${last})`);
}

/** An iperf3 server process bound to 127.0.0.1. */
export interface IperfServer {
  readonly port: number;
  /** Its process id (benches read its CPU time). */
  readonly pid: number;
  /** Its command line. */
  readonly command: readonly string[];
  close(): Promise<void>;
}

/** Starts `iperf3 -s` on 127.0.0.1:`port` (serves tests one after another). */
export async function startIperfServer(port: number): Promise<IperfServer> {
  const args = ["-s", "-B", "127.0.0.1", "-p", `${port}`, "--forceflush"];
  const child = new Deno.Command("iperf3", {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  // Ready once it prints "Server listening"; keep draining its output afterwards.
  const ready = Promise.withResolvers<void>();
  (async () => {
    let text = "";
    let listening = false;
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      if (!listening && (text += chunk).includes("Server listening")) {
        listening = true;
        ready.resolve();
      }
    }
    ready.reject(new Error(`iperf3 -s on 127.0.0.1:${port} exited before listening`));
  })().catch(() => {});
  const timer = setTimeout(
    () => ready.reject(new Error(`iperf3 -s on 127.0.0.1:${port} did not start in 10 s`)),
    10_000,
  );
  try {
    await ready.promise;
  } finally {
    clearTimeout(timer);
  }
  return {
    port,
    pid: child.pid,
    command: ["iperf3", ...args],
    async close() {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
    },
  };
}

/** How often the connection-end peers poll their nonblocking sockets. */
const POLL_MS = 5;
/** Longest a connection-end peer waits for one step of a connection. */
const PEER_STEP_TIMEOUT_MS = 60_000;
/** 127.0.0.1 as raw address bytes. */
const LOOPBACK4 = new Uint8Array([127, 0, 0, 1]);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Reads from `socket` until data or the end arrives: the byte count, 0 at the end of
 * the peer's stream. Throws NativeError (ECONNRESET for a RST) or on timeout.
 */
async function receiveSome(socket: TcpSocket, buf: Uint8Array): Promise<number> {
  const deadline = performance.now() + PEER_STEP_TIMEOUT_MS;
  for (;;) {
    const n = socket.receive(buf);
    if (n !== WOULD_BLOCK) return n;
    if (performance.now() > deadline) {
      throw new Error(`Nothing arrived on socket ${socket.fd} in ${PEER_STEP_TIMEOUT_MS} ms`);
    }
    await sleep(POLL_MS);
  }
}

/** Sends all of `data` on `socket` (throws NativeError, e.g. EPIPE). */
async function sendAll(socket: TcpSocket, data: Uint8Array): Promise<void> {
  let at = 0;
  while (at < data.length) {
    const n = socket.send(data.subarray(at));
    if (n === WOULD_BLOCK) await sleep(POLL_MS);
    else at += n;
  }
}

/** Reads until the end of the peer's stream; returns the text (throws on a RST). */
async function receiveToEnd(socket: TcpSocket): Promise<string> {
  const buf = new Uint8Array(4096);
  let text = "";
  for (;;) {
    const n = await receiveSome(socket, buf);
    if (n === 0) return text;
    text += new TextDecoder().decode(buf.subarray(0, n));
  }
}

/** A loopback TCP peer serving each connection with `serve`, recording its results. */
export interface TcpPeer<T> {
  readonly port: number;
  /** One result per finished connection, in order. */
  readonly results: T[];
  close(): void;
}

/**
 * Listens on 127.0.0.1 (through the helper's sockets, which report ECONNRESET and can
 * close with a RST, unlike Deno's) and runs `serve` for each connection; its result (or
 * `onError` of what it threw) is appended to `results`. The socket is closed after.
 */
function startTcpPeer<T>(
  serve: (socket: TcpSocket) => Promise<T>,
  onError: (error: unknown) => T,
): TcpPeer<T> {
  const listener = TcpListenSocket.listen({ address: LOOPBACK4, port: 0 });
  const results: T[] = [];
  let open = true;
  (async () => {
    while (open) {
      const accepted = listener.accept();
      if (accepted === null) {
        await sleep(POLL_MS);
        continue;
      }
      const { socket } = accepted;
      serve(socket).catch(onError).then((result) => {
        results.push(result);
        socket.close();
      });
    }
  })().catch(() => {});
  return {
    port: listener.localAddress().port,
    results,
    close() {
      open = false;
      listener.close();
    },
  };
}

/** How a connection ended as the host peer saw it: "eof" (FIN), "reset" (RST), else why. */
function endOf(error: unknown): string {
  if (error instanceof NativeError) {
    return error.errno === Errno.ECONNRESET ? "reset" : error.errnoName;
  }
  return String(error);
}

/** What {@link startEndWatcher} recorded of one connection. */
export interface ConnectionEnd {
  /** Text that arrived before the end. */
  readonly received: string;
  /** "eof" (FIN), "reset" (ECONNRESET: a RST) or what else failed. */
  readonly end: string;
}

/**
 * Starts a peer that answers the first line of each connection with `got\n`, then reads
 * until the connection ends and records whether it ended by FIN or by RST.
 */
export function startEndWatcher(): TcpPeer<ConnectionEnd> {
  return startTcpPeer(async (socket) => {
    const buf = new Uint8Array(4096);
    let received = "";
    let answered = false;
    try {
      for (;;) {
        const n = await receiveSome(socket, buf);
        if (n === 0) return { received, end: "eof" };
        received += new TextDecoder().decode(buf.subarray(0, n));
        if (!answered && received.includes("\n")) {
          answered = true;
          await sendAll(socket, new TextEncoder().encode("got\n"));
        }
      }
    } catch (error) {
      return { received, end: endOf(error) };
    }
  }, (error) => ({ received: "", end: endOf(error) }));
}

/**
 * Starts a peer that reads the first line of each connection, then closes it with a RST
 * (SO_LINGER 0); records the line.
 */
export function startResetter(): TcpPeer<string> {
  return startTcpPeer(async (socket) => {
    const buf = new Uint8Array(4096);
    let received = "";
    while (!received.includes("\n")) {
      const n = await receiveSome(socket, buf);
      if (n === 0) break;
      received += new TextDecoder().decode(buf.subarray(0, n));
    }
    socket.closeWithReset();
    return received;
  }, (error) => `failed: ${endOf(error)}`);
}

/**
 * Starts a peer that reads each connection to the client's FIN (its half-close), then
 * answers `reply:` + what arrived and closes; records what arrived.
 */
export function startReplyAfterEof(): TcpPeer<string> {
  return startTcpPeer(async (socket) => {
    const received = await receiveToEnd(socket);
    await sendAll(socket, new TextEncoder().encode(`reply:${received}`));
    return received;
  }, (error) => `failed: ${endOf(error)}`);
}

/**
 * Starts a peer that sends `message` on each connection and half-closes (FIN), then
 * reads the client's answer to its end; records the answer.
 */
export function startHalfCloser(message: string): TcpPeer<string> {
  return startTcpPeer(async (socket) => {
    await sendAll(socket, new TextEncoder().encode(message));
    socket.shutdownWrite();
    return await receiveToEnd(socket);
  }, (error) => `failed: ${endOf(error)}`);
}
