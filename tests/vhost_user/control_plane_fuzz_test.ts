/**
 * Randomized control-plane test: sends mutated vhost-user messages (header fields,
 * sizes, payload bytes, attached fds) to in-process sessions over real sockets,
 * reconnecting whenever a session closes, and checks that nothing throws out of the
 * session, nothing hangs, every session ends cleanly and no fd leaks.
 *
 * TPASST_FUZZ_ITERATIONS sets the number of messages (default 3000; the long run
 * uses 100000), TPASST_FUZZ_SEED the seed (printed).
 */
import assert from "node:assert/strict";
import { EventFd } from "../../ffi/event_fd.ts";
import { MemFd } from "../../ffi/mem_fd.ts";
import { openFdCount } from "../../ffi/process.ts";
import { RecordingDatapath } from "../support/vhost_user/backend_doubles.ts";
import { encodeRequest } from "../support/vhost_user/request_encoder.ts";
import { FLAGS_NEED_REPLY, FLAGS_VERSION, Request } from "../../src/vhost_user/protocol.ts";
import { InProcessBackend } from "../support/frontend/in_process.ts";
import type { VhostUserFrontend } from "../support/frontend/vhost_user_frontend.ts";
import {
  logPayload,
  memTablePayload,
  singleRegionPayload,
  u64Payload,
  vringAddrPayload,
  vringStatePayload,
} from "../../src/vhost_user/payload_codec.ts";

/** Bytes of the dirty log the fuzzer shares: covers the harness memory (region 1 at 4 GiB). */
const LOG_BYTES = 0x20100;

const ITERATIONS = Number(Deno.env.get("TPASST_FUZZ_ITERATIONS") ?? "3000");
const SEED = Number(Deno.env.get("TPASST_FUZZ_SEED") ?? String(Date.now() % 2 ** 31));

/** xorshift32: reproducible from the seed. */
function rng(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 2 ** 32;
  };
}

interface Template {
  request: number;
  payload: Uint8Array;
  fds: "none" | "eventfd" | "memory" | "log";
}

/** Valid messages (for the harness's memory and rings) that mutations start from. */
function templates(f: VhostUserFrontend): Template[] {
  const regions = f.memory.regions.map((r) => r.description);
  const t = (
    request: number,
    payload: Uint8Array = new Uint8Array(0),
    fds: Template["fds"] = "none",
  ) => ({
    request,
    payload,
    fds,
  });
  const list: Template[] = [
    t(Request.GET_FEATURES),
    t(Request.GET_PROTOCOL_FEATURES),
    t(Request.SET_PROTOCOL_FEATURES, u64Payload(0x801c)),
    t(Request.GET_MAX_MEM_SLOTS),
    t(Request.SET_OWNER),
    t(Request.RESET_OWNER),
    t(Request.SET_FEATURES, u64Payload((1n << 32n) | (1n << 30n) | (1n << 15n) | (1n << 29n))),
    t(Request.SET_MEM_TABLE, memTablePayload(regions), "memory"),
    t(Request.ADD_MEM_REG, singleRegionPayload(regions[0]), "memory"),
    t(Request.REM_MEM_REG, singleRegionPayload(regions[0])),
    t(Request.GET_QUEUE_NUM),
    t(Request.NET_SET_MTU, u64Payload(1500)),
    t(Request.SEND_RARP, new Uint8Array([0x52, 0x54, 0, 1, 2, 3, 0, 0])),
    t(Request.SET_LOG_BASE, new Uint8Array(16)),
    // dirty logging as QEMU 10 starts it (LOG_SHMFD acked, LOG_ALL, rings with F_LOG)
    t(Request.SET_PROTOCOL_FEATURES, u64Payload(0x801e)),
    t(Request.SET_LOG_BASE, logPayload(LOG_BYTES), "log"),
    t(Request.SET_LOG_BASE, logPayload(LOG_BYTES, 0x10), "log"),
    t(Request.SET_LOG_FD, new Uint8Array(0), "eventfd"),
    t(
      Request.SET_FEATURES,
      u64Payload((1n << 32n) | (1n << 30n) | (1n << 26n) | (1n << 15n) | (1n << 29n)),
    ),
    t(Request.GET_CONFIG, new Uint8Array(12)),
  ];
  for (const i of [0, 1]) {
    const base = 0x10000 + i * 0x4000;
    list.push(
      t(Request.SET_VRING_NUM, vringStatePayload(i, 64)),
      t(Request.SET_VRING_BASE, vringStatePayload(i, 0)),
      t(
        Request.SET_VRING_ADDR,
        vringAddrPayload(i, {
          descriptor: f.memory.userAddress(base),
          available: f.memory.userAddress(base + 0x1000),
          used: f.memory.userAddress(base + 0x2000),
        }),
      ),
      t(
        Request.SET_VRING_ADDR,
        vringAddrPayload(
          i,
          {
            descriptor: f.memory.userAddress(base),
            available: f.memory.userAddress(base + 0x1000),
            used: f.memory.userAddress(base + 0x2000),
          },
          1,
          base + 0x2000,
        ),
      ),
      t(Request.GET_VRING_BASE, vringStatePayload(i, 0)),
      t(Request.SET_VRING_KICK, u64Payload(i), "eventfd"),
      t(Request.SET_VRING_CALL, u64Payload(i), "eventfd"),
      t(Request.SET_VRING_ERR, u64Payload(i | 0x100)),
      t(Request.SET_VRING_ENABLE, vringStatePayload(i, 1)),
    );
  }
  return list;
}

Deno.test(`\`createVhostUserSession()\` survives ${ITERATIONS} mutated messages across reconnects (seed ${SEED})`, async () => {
  console.log(`control-plane fuzz: ${ITERATIONS} messages, seed ${SEED}`);
  const random = rng(SEED);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];
  const baseline = openFdCount();
  const backend = new InProcessBackend();
  const bugs: string[] = [];
  const closes = new Map<string, number>();
  backend.logger.setLevel("warn");
  backend.logger.setSink((level, line) => {
    // "failed:" marks an error that is not a protocol error: a bug in the session
    if (/closing the connection: failed:/.test(line) || /threw/.test(line)) bugs.push(line);
    if (line.includes("closing the connection")) {
      const kind = line.replace(/.*closing the connection: /, "").replace(/[0-9]+/g, "N")
        .slice(0, 60);
      closes.set(kind, (closes.get(kind) ?? 0) + 1);
    }
    void level;
  });
  const pool = Array.from({ length: 12 }, () => EventFd.create());
  const logFile = MemFd.create("fuzz-dirty-log", LOG_BYTES + 0x1000);
  let sent = 0;
  let sessions = 0;
  let negotiated = 0;
  const started = performance.now();
  try {
    while (sent < ITERATIONS) {
      const datapath = new RecordingDatapath();
      const { frontend, session } = backend.connect(datapath);
      sessions++;
      let alive = true;
      session.closed.then(() => (alive = false));
      try {
        if (random() < 0.3) {
          await frontend.negotiate({ replyAck: random() < 0.5, memSlots: random() < 0.5 });
          negotiated++;
        } else if (random() < 0.7) {
          frontend.send(Request.SET_OWNER);
        }
        const list = templates(frontend);
        const burst = 1 + Math.floor(random() * 200);
        for (let i = 0; i < burst && alive && sent < ITERATIONS; i++) {
          const template = pick(list);
          let request = template.request;
          let flags = FLAGS_VERSION | (random() < 0.3 ? FLAGS_NEED_REPLY : 0);
          let payload = template.payload.slice();
          let sizeField: number | undefined;
          let fds: number[] = template.fds === "eventfd"
            ? [pick(pool).fd]
            : template.fds === "log"
            ? [logFile.fd]
            : template.fds === "memory"
            ? frontend.memory.regions.map((r) => r.memfd.fd).slice(
              0,
              template.payload.length > 40 ? 2 : 1,
            )
            : [];
          const mutations = random() < 0.25 ? 0 : 1 + Math.floor(random() * 3);
          for (let m = 0; m < mutations; m++) {
            const what = random();
            if (what < 0.1) request = Math.floor(random() * 50);
            else if (what < 0.15) request = Math.floor(random() * 2 ** 32);
            else if (what < 0.25) flags = Math.floor(random() * 16);
            else if (what < 0.35) sizeField = Math.floor(random() * (payload.length + 16));
            else if (what < 0.4) sizeField = Math.floor(random() * 2 ** 32);
            else if (what < 0.55 && payload.length > 0) {
              payload[Math.floor(random() * payload.length)] = Math.floor(random() * 256);
            } else if (what < 0.65 && payload.length >= 4) {
              const view = new DataView(payload.buffer);
              const at = Math.floor(random() * Math.floor(payload.length / 4)) * 4;
              view.setUint32(
                at,
                pick([0, 1, 2, 3, 255, 256, 0x8000, 0xffff, 0xffffffff, 0x7fffffff]),
                true,
              );
            } else if (what < 0.75) {
              payload = payload.slice(0, Math.floor(random() * (payload.length + 1)));
            } else if (what < 0.8) {
              const longer = new Uint8Array(payload.length + Math.floor(random() * 64));
              longer.set(payload);
              payload = longer;
            } else {
              const count = Math.floor(random() * 11);
              fds = Array.from({ length: count }, () => pick(pool).fd);
            }
          }
          let bytes = encodeRequest(request, payload, { flags, sizeField });
          if (random() < 0.02) bytes = bytes.subarray(0, Math.floor(random() * bytes.length));
          // drain replies so that the backend's writes do not fill our buffer
          try {
            while (frontend.connection.recv(new Uint8Array(4096)) > 0) { /* discard */ }
            let offset = 0;
            let first = true;
            while (offset < bytes.length && alive) {
              const n = first && fds.length > 0
                ? frontend.connection.sendWithFds(bytes.subarray(offset), fds)
                : frontend.connection.send(bytes.subarray(offset));
              if (n < 0) {
                await new Promise((resolve) => setTimeout(resolve, 0));
                continue;
              }
              first = false;
              offset += n;
            }
          } catch {
            alive = false; // EPIPE / ECONNRESET: the session closed the connection
          }
          sent++;
          if (sent % 64 === 0) await new Promise((resolve) => setTimeout(resolve, 0));
        }
      } catch (error) {
        // only the negotiation on a fresh connection can throw here: a bug
        bugs.push(`front-end failed: ${(error as Error).stack}`);
      } finally {
        frontend.close();
        await session.closed;
      }
    }
    // the loop still serves a well-behaved front-end
    const datapath = new RecordingDatapath();
    const last = backend.connect(datapath);
    await last.frontend.negotiate();
    assert.equal(datapath.rings.size, 2);
    last.frontend.close();
    await last.session.closed;
  } finally {
    for (const e of pool) e.close();
    logFile.close();
    await backend.close();
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `control-plane fuzz: ${sent} messages, ${sessions} sessions (${negotiated} negotiated first), ` +
      `${seconds.toFixed(1)} s, fds ${baseline} → ${openFdCount()}`,
  );
  console.log(
    "closing reasons: " +
      [...closes].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([k, v]) => `${v}× ${k}`).join("; "),
  );
  assert.deepEqual(bugs, []);
  assert.equal(openFdCount(), baseline, "fd count back to baseline");
});
