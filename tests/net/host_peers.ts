/**
 * Host-side peers and data helpers for the process-level traffic tests: reproducible
 * pseudo-random payloads, SHA-256 digests, reading a host connection to its end, a
 * TCP echo server and a UDP echo socket on loopback, and free loopback ports.
 *
 * @module
 */

import { TcpListenSocket, type TcpSocket } from "../../ffi/tcp_socket.ts";
import { createHash } from "node:crypto";
import dgram from "node:dgram";
import { Buffer } from "node:buffer";

/** Fills a new buffer of `length` bytes from a xorshift32 stream seeded with `seed`. */
export function patternBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  const words = new Uint32Array(out.buffer, 0, length >>> 2);
  let x = (seed | 0) || 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
  for (let i = words.length * 4; i < length; i++) out[i] = (x >>> (8 * (i & 3))) & 0xff;
  return out;
}

/** An incremental SHA-256 (node:crypto). */
export interface Digest {
  update(chunk: Uint8Array): void;
  hex(): string;
}

/** Starts an incremental SHA-256. */
export function sha256(): Digest {
  const h = createHash("sha256");
  return {
    update: (chunk) => void h.update(chunk),
    hex: () => h.digest("hex"),
  };
}

/** SHA-256 of `data` as hex. */
export function sha256Hex(data: Uint8Array): string {
  const d = sha256();
  d.update(data);
  return d.hex();
}

/** Reads `conn` to end of file; returns the byte count and SHA-256 of what arrived. */
export async function drainWithDigest(
  conn: Deno.Conn,
): Promise<{ bytes: number; sha256: string }> {
  const d = sha256();
  const buf = new Uint8Array(1 << 18);
  let bytes = 0;
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) break;
    bytes += n;
    d.update(buf.subarray(0, n));
  }
  return { bytes, sha256: d.hex() };
}

/** Reads `conn` to end of file and returns everything. */
export async function readAll(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(65536);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
  }
  return concat(chunks);
}

/** Joins byte arrays. */
export function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

/** Writes all of `data` to `conn`. */
export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let o = 0;
  while (o < data.length) o += await conn.write(data.subarray(o));
}

/** A TCP echo server on loopback: echoes each connection until EOF, then closes it. */
export class TcpEchoServer {
  readonly listener: Deno.TcpListener;
  /** Connections accepted. */
  accepted = 0;
  /** Most connections open at the same time. */
  peakOpen = 0;
  /** Connections echoed to the end. */
  completed = 0;
  /** Errors on server-side connections. */
  readonly errors: string[] = [];
  readonly #conns = new Set<Deno.Conn>();
  readonly #loop: Promise<void>;

  constructor(hostname = "127.0.0.1") {
    this.listener = Deno.listen({ hostname, port: 0 });
    this.#loop = this.#accept();
  }

  /** The port it listens on. */
  get port(): number {
    return this.listener.addr.port;
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await this.listener.accept();
      } catch {
        return;
      }
      this.accepted++;
      this.#conns.add(conn);
      this.peakOpen = Math.max(this.peakOpen, this.#conns.size);
      this.#echo(conn);
    }
  }

  async #echo(conn: Deno.Conn): Promise<void> {
    const buf = new Uint8Array(65536);
    try {
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        await writeAll(conn, buf.subarray(0, n));
      }
      this.completed++;
    } catch (e) {
      this.errors.push(String(e));
    } finally {
      this.#conns.delete(conn);
      try {
        conn.close();
      } catch { /* closed */ }
    }
  }

  /** Stops listening and closes every open connection. */
  async close(): Promise<void> {
    this.listener.close();
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await this.#loop;
  }
}

/** A datagram a host socket received. */
export interface HostDatagram {
  readonly data: Uint8Array;
  readonly address: string;
  readonly port: number;
}

/** A UDP socket on loopback that records datagrams and optionally echoes them. */
export class UdpPeer {
  readonly socket: dgram.Socket;
  readonly received: HostDatagram[] = [];
  #echo: boolean;

  private constructor(socket: dgram.Socket, echo: boolean) {
    this.socket = socket;
    this.#echo = echo;
    socket.on("message", (msg: Buffer, rinfo: dgram.RemoteInfo) => {
      const data = new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength).slice();
      this.received.push({ data, address: rinfo.address, port: rinfo.port });
      if (this.#echo) socket.send(msg, rinfo.port, rinfo.address);
    });
  }

  /** Binds a socket on `address` port `port` (0 = any). */
  static open(address: string, echo: boolean, port = 0): Promise<UdpPeer> {
    const socket = dgram.createSocket(address.includes(":") ? "udp6" : "udp4");
    return new Promise((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(port, address, () => {
        socket.off("error", reject);
        resolve(new UdpPeer(socket, echo));
      });
    });
  }

  /** The bound port. */
  get port(): number {
    return this.socket.address().port;
  }

  /** Sends `data` to `address`:`port`. */
  send(data: Uint8Array, port: number, address: string): void {
    this.socket.send(data, port, address);
  }

  /** Closes the socket. */
  close(): Promise<void> {
    return new Promise((done) => this.socket.close(() => done()));
  }
}

/** A TCP port on `hostname` that was free a moment ago. */
export function freeTcpPort(hostname = "127.0.0.1"): number {
  const l = Deno.listen({ hostname, port: 0 });
  const p = l.addr.port;
  l.close();
  return p;
}

/** A UDP port on `hostname` that was free a moment ago. */
export async function freeUdpPort(hostname = "127.0.0.1"): Promise<number> {
  const peer = await UdpPeer.open(hostname, false);
  const p = peer.port;
  await peer.close();
  return p;
}

/**
 * A host TCP server whose connections can be closed with a RST (SO_LINGER 0), which
 * Deno's own TcpConn cannot do: it listens through the helper on 127.0.0.1.
 */
export class ResettingTcpServer {
  readonly #listener = TcpListenSocket.listen({ address: new Uint8Array([127, 0, 0, 1]), port: 0 });
  /** The port it listens on. */
  readonly port: number = this.#listener.localAddress().port;

  /** Waits (polling) for the next connection, up to `timeoutMs`. */
  async accept(timeoutMs = 10_000): Promise<TcpSocket> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      const accepted = this.#listener.accept();
      if (accepted !== null) return accepted.socket;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    throw new Error(`no connection to port ${this.port} within ${timeoutMs} ms`);
  }

  /** Stops listening. */
  close(): void {
    this.#listener.close();
  }
}
