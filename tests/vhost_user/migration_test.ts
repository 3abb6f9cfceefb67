/**
 * Live migration through two REAL daemons (`bin/tpasst --vhost-user`, child
 * processes) with the TS front-end harness playing both QEMUs in QEMU 10.0.2's
 * order: daemon A saves its device state (rings stopped, SET_DEVICE_STATE_FD save,
 * CHECK_DEVICE_STATE), daemon B loads it before SET_FEATURES and the memory table,
 * and the scripted guest's TCP connection to a host peer on loopback carries on
 * through B, every byte checked both ways, while the host peer sees neither FIN nor
 * RST. Also: hostile state streams on the load side fail CHECK_DEVICE_STATE and
 * leave the daemon serving.
 *
 * TCP_REPAIR needs CAP_NET_ADMIN: the connection tests run as root only.
 */

import assert from "node:assert/strict";
import { TEST_GATEWAY4 } from "../support/net/tcp_plan.ts";
import type { GuestTcpConn, TestGuest } from "../support/net/tcp_guest.ts";
import { DaemonGuest, readPipe } from "../net/daemon_guest.ts";
import { closeFd, createPipe } from "../../ffi/process.ts";
import { RX, TX } from "../support/frontend/vhost_user_frontend.ts";
import { patternBytes } from "../net/host_peers.ts";
import { waitFor } from "../cli/cli_helpers.ts";
import { hasPasstRepair, startPasstRepair, WITHOUT_NET_ADMIN } from "../e2e/passt_repair.ts";

const isRoot = Deno.uid() === 0;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
/** SET_DEVICE_STATE_FD's reply on success: no fd of the backend's (bit 8), status 0. */
const STATE_FD_OK = 0x100n;
/**
 * Bytes the host sends while the guest's RX ring is stopped: they wait in the host
 * socket's receive queue and move with it. Within the first window of an autotuned
 * receive buffer (tcp_rmem's default 128 KiB start took ~95 KB here).
 */
const IN_FLIGHT_BYTES = 64_000;

async function established(c: GuestTcpConn, ms = 10_000): Promise<void> {
  await c.until(() => c.state === "established" || c.gotRst, ms, "the handshake");
  assert.equal(c.state, "established", `connection ${c.localPort} was reset instead`);
}

/** The host end of the connection: reads everything, notes an end of stream or error. */
class HostPeer {
  readonly conn: Deno.Conn;
  received: Uint8Array[] = [];
  receivedBytes = 0;
  ended: string | null = null;
  readonly #reading: Promise<void>;

  constructor(conn: Deno.Conn) {
    this.conn = conn;
    this.#reading = this.#read();
  }

  async #read(): Promise<void> {
    const buf = new Uint8Array(65536);
    try {
      for (;;) {
        const n = await this.conn.read(buf);
        if (n === null) {
          this.ended = "end of stream (FIN)";
          return;
        }
        this.received.push(buf.slice(0, n));
        this.receivedBytes += n;
      }
    } catch (e) {
      this.ended = `error: ${e}`;
    }
  }

  async until(bytes: number, what: string): Promise<void> {
    const deadline = Date.now() + 20_000;
    while (this.receivedBytes < bytes) {
      if (this.ended !== null) throw new Error(`${what}: the host peer saw ${this.ended}`);
      if (Date.now() > deadline) {
        throw new Error(`${what}: ${this.receivedBytes} of ${bytes} bytes after 20 s`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  take(): Uint8Array {
    const out = new Uint8Array(this.receivedBytes);
    let at = 0;
    for (const c of this.received) {
      out.set(c, at);
      at += c.length;
    }
    this.received = [];
    this.receivedBytes = 0;
    return out;
  }

  async write(bytes: Uint8Array): Promise<void> {
    let at = 0;
    while (at < bytes.length) at += await this.conn.write(bytes.subarray(at));
  }

  async close(): Promise<void> {
    try {
      this.conn.close();
    } catch { /* closed */ }
    await this.#reading;
  }
}

/** Waits until the guest holds `bytes` received bytes on `c`, then takes them. */
async function guestReceives(c: GuestTcpConn, bytes: number, what: string): Promise<Uint8Array> {
  await c.until(() => c.receivedBytes >= bytes || c.gotRst || c.eof, 20_000, what);
  assert.ok(!c.gotRst, `${what}: the guest got a RST`);
  assert.ok(!c.eof, `${what}: the guest got a FIN`);
  return c.takeReceived();
}

/**
 * Moves a live connection from daemon A to daemon B (see the module comment); with
 * `helper`, both daemons run without CAP_NET_ADMIN and switch repair mode through
 * Debian 13's passt-repair.
 */
async function moveLiveConnection(helper: boolean): Promise<void> {
  {
    const wrapper = helper ? WITHOUT_NET_ADMIN : [];
    const helpers: Deno.ChildProcess[] = [];
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    // --migrate-no-linger: A lets go of the socket at once, so that B (on the same
    // machine) can take over the same addresses.
    const a = await DaemonGuest.start(
      "vhost-user",
      ["--migrate-no-linger", "-d"],
      {
        deviceState: true,
      },
      true,
      null,
      wrapper,
    );
    if (helper) helpers.push(await startPasstRepair(a.socketPath, () => a.stderr));
    let b: DaemonGuest | null = null;
    let peer: HostPeer | null = null;
    const guests: { guest4: TestGuest; guest6: TestGuest } = { guest4: a.guest4, guest6: a.guest6 };
    try {
      const c = a.guest4.connect(TEST_GATEWAY4, port);
      await established(c);
      peer = new HostPeer(await listener.accept());

      // Traffic before the move, both ways.
      let up = 0; // guest → host bytes so far (pattern offset)
      let down = 0; // host → guest
      a.guest4.write(c, patternBytes(100_000, 1));
      await peer.until(100_000, "upload before");
      assert.deepEqual(peer.take(), patternBytes(100_000, 1));
      up += 100_000;
      await peer.write(patternBytes(50_000, 2));
      assert.deepEqual(await guestReceives(c, 50_000, "download before"), patternBytes(50_000, 2));
      down += 50_000;
      // Bytes in flight as the guest stops: QEMU stops the RX ring first, the host goes
      // on sending, and what A could not deliver waits in its socket's receive queue.
      // No more than its (autotuned) window takes: a peer left holding bytes probes the
      // closed window, and on one host a probe in the moment between A's close and B's
      // restore meets no socket and is answered with a RST (README, "On one machine").
      await a.frontend.stopRing(RX);
      const inFlight = patternBytes(down + IN_FLIGHT_BYTES, 2).subarray(down);
      await peer.write(inFlight);
      await new Promise((r) => setTimeout(r, 50));

      const saved = await a.saveDeviceState();
      assert.equal(saved.setReply, STATE_FD_OK);
      assert.equal(saved.check, 0n, `A's CHECK_DEVICE_STATE failed:\n${a.stderr}`);
      // header, guest, one flow record, trailer, and the undelivered bytes
      assert.ok(saved.bytes.length >= 224 + IN_FLIGHT_BYTES, `${saved.bytes.length} bytes saved`);

      let loaded: [bigint, bigint] | null = null;
      // B's helper must be there before the load: QEMU 10 sends the state early.
      b = await DaemonGuest.start(
        "vhost-user",
        ["-d"],
        {
          loadDeviceState: saved.bytes,
          onDeviceStateLoaded: (set, check) => (loaded = [set, check]),
          beforeNegotiation: helper
            ? async (path, stderr) => void helpers.push(await startPasstRepair(path, stderr))
            : undefined,
        },
        true,
        guests,
        wrapper,
      );
      assert.deepEqual(loaded, [STATE_FD_OK, 0n], `B's load failed:\n${b.stderr}`);
      const left = await a.detach();
      if (Deno.env.get("MIG_DEBUG")) console.error(left.stderr);
      assert.equal(left.code, 0, left.stderr);
      assert.match(left.stderr, /1 migrated TCP connection\(s\) closed without FIN or RST/);
      await waitFor(
        "B's log of the load",
        () => /1 of 1 TCP connection\(s\) restored/.test(b!.stderr),
      );

      // The in-flight bytes arrive through B, in order, none twice.
      assert.deepEqual(await guestReceives(c, inFlight.length, "in-flight download"), inFlight);
      down += inFlight.length;
      // Both ways again through B.
      a.guest4.write(c, patternBytes(up + 200_000, 1).subarray(up));
      await peer.until(200_000, "upload after");
      assert.deepEqual(peer.take(), patternBytes(up + 200_000, 1).subarray(up));
      up += 200_000;
      await peer.write(patternBytes(down + 100_000, 2).subarray(down));
      assert.deepEqual(
        await guestReceives(c, 100_000, "download after"),
        patternBytes(down + 100_000, 2).subarray(down),
      );
      assert.equal(peer.ended, null, "the host peer saw the connection end");
      // An orderly end: the host sees the guest's FIN only now.
      a.guest4.close(c);
      await c.until(() => c.finAcked, 10_000, "the guest's FIN acknowledged");
      const deadline = Date.now() + 10_000;
      while (peer.ended === null && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.equal(peer.ended, "end of stream (FIN)");
    } finally {
      await peer?.close();
      listener.close();
      const result = await b?.close();
      if (Deno.env.get("MIG_DEBUG")) console.error(result?.stderr);
      if (b === null) await a.close();
      else if (result && result.code !== 0) console.error(result.stderr);
      // passt-repair exits at the end of file of its connection
      for (const h of helpers) await h.status;
    }
  }
}

Deno.test({
  name: "bin/tpasst --vhost-user: a live TCP connection moves from daemon A to daemon B",
  ignore: !isRoot,
  fn: () => moveLiveConnection(false),
});

Deno.test({
  name:
    "bin/tpasst --vhost-user without CAP_NET_ADMIN: the connection moves through Debian 13's passt-repair",
  ignore: !isRoot || !hasPasstRepair,
  fn: () => moveLiveConnection(true),
});

Deno.test({
  name: "bin/tpasst --vhost-user: a migration cancelled after the save leaves the connection on A",
  ignore: !isRoot,
  async fn() {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    const a = await DaemonGuest.start("vhost-user", ["-d"], { deviceState: true });
    let peer: HostPeer | null = null;
    try {
      const c = a.guest4.connect(TEST_GATEWAY4, port);
      await established(c);
      peer = new HostPeer(await listener.accept());
      a.guest4.write(c, patternBytes(50_000, 1));
      await peer.until(50_000, "upload before");
      assert.deepEqual(peer.take(), patternBytes(50_000, 1));
      await a.frontend.stopRing(RX);
      const inFlight = patternBytes(200_000, 2);
      await peer.write(inFlight);
      await new Promise((r) => setTimeout(r, 50));
      const saved = await a.saveDeviceState();
      assert.equal(saved.check, 0n, a.stderr);
      await waitFor(
        "A's log of the completed save",
        () => /stay silent until the front-end leaves/.test(a.stderr),
      );
      // QEMU gives up (say the target failed) and resumes the guest here.
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(peer.ended, null, "the host peer saw the connection end while frozen");
      await a.frontend.restartRing(RX, saved.bases[0]);
      await a.frontend.restartRing(TX, saved.bases[1]);
      assert.deepEqual(await guestReceives(c, inFlight.length, "download after"), inFlight);
      await waitFor(
        "A's log of the cancel",
        () => /cancelled; 1 TCP connection\(s\) left repair mode/.test(a.stderr),
      );
      a.guest4.write(c, patternBytes(150_000, 1).subarray(50_000));
      await peer.until(100_000, "upload after");
      assert.deepEqual(peer.take(), patternBytes(150_000, 1).subarray(50_000));
      await peer.write(patternBytes(300_000, 2).subarray(200_000));
      assert.deepEqual(
        await guestReceives(c, 100_000, "more download"),
        patternBytes(300_000, 2).subarray(200_000),
      );
      assert.equal(peer.ended, null, "the host peer saw the connection end");
    } finally {
      await peer?.close();
      listener.close();
      const { stderr } = await a.close();
      if (Deno.env.get("MIG_DEBUG")) console.error(stderr);
    }
  },
});

Deno.test({
  name:
    "bin/tpasst --vhost-user: a hostile device state fails CHECK_DEVICE_STATE and the daemon goes on",
  async fn() {
    const source = await DaemonGuest.start("vhost-user", [], { deviceState: true });
    let good: Uint8Array;
    try {
      const saved = await source.saveDeviceState();
      assert.equal(saved.check, 0n);
      good = saved.bytes;
    } finally {
      await source.close();
    }
    const flipped = good.slice();
    flipped[20] ^= 0x40;
    const garbage = patternBytes(5000, 9);
    const hostile: [string, Uint8Array][] = [
      ["empty", new Uint8Array(0)],
      ["truncated", good.subarray(0, good.length - 3)],
      ["one byte altered", flipped],
      ["trailing bytes", new Uint8Array([...good, 1, 2, 3])],
      ["garbage", garbage],
    ];
    for (const [what, bytes] of hostile) {
      let loaded: [bigint, bigint] | null = null;
      const d = await DaemonGuest.start("vhost-user", ["-d"], {
        loadDeviceState: bytes,
        onDeviceStateLoaded: (set, check) => (loaded = [set, check]),
      });
      try {
        assert.deepEqual(loaded, [STATE_FD_OK, 1n], `${what}: CHECK_DEVICE_STATE must fail`);
        // The reply to CHECK_DEVICE_STATE may reach the test before the daemon's log line.
        await waitFor(
          `${what}: the daemon's log of the refused state`,
          () => /Invalid device state|exceeds the limit/.test(d.stderr),
        );
        // Still serving: the guest gets a DHCP-free TCP connection through it.
        const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        try {
          const c = d.guest4.connect(TEST_GATEWAY4, (server.addr as Deno.NetAddr).port);
          await established(c);
          (await server.accept()).close();
        } finally {
          server.close();
        }
      } finally {
        const { code, stderr } = await d.close();
        assert.equal(code, 0, `${what}:\n${stderr}`);
      }
    }
  },
});

Deno.test("bin/tpasst --vhost-user --migrate-exit: the source exits once QEMU confirmed the saved state", async () => {
  const d = await DaemonGuest.start("vhost-user", ["--migrate-exit"], { deviceState: true });
  let exited = false;
  try {
    const saved = await d.saveDeviceState();
    assert.equal(saved.check, 0n);
    // the front-end is still connected: only the completed migration ends the daemon
    const status = await Promise.race([d.process.status, sleep(10_000).then(() => null)]);
    assert.ok(status !== null, "the daemon did not exit");
    assert.equal(status.code, 0);
    exited = true;
    await waitFor(
      "the exit's log line",
      () => /complete, exiting \(--migrate-exit\)/.test(d.stderr),
    );
  } finally {
    const { code, stderr } = await d.close();
    if (!exited) console.error(stderr);
    assert.equal(code, 0);
  }
});

Deno.test({
  name:
    "bin/tpasst --vhost-user: guest segments on a frozen connection wait (a save while the rings run resets nothing)",
  ignore: !isRoot,
  async fn() {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    const a = await DaemonGuest.start("vhost-user", [], { deviceState: true });
    let peer: HostPeer | null = null;
    try {
      const c = a.guest4.connect(TEST_GATEWAY4, port);
      await established(c);
      peer = new HostPeer(await listener.accept());
      // a front-end that saves without stopping the rings first (QEMU stops them)
      const [readEnd, writeEnd] = createPipe();
      try {
        assert.equal(await a.frontend.setDeviceStateFd(0, writeEnd), 0x100n);
      } finally {
        closeFd(writeEnd);
      }
      await readPipe(readEnd);
      assert.equal(await a.frontend.checkDeviceState(), 0n);
      a.guest4.write(c, patternBytes(10_000, 3));
      await sleep(300);
      assert.ok(!c.gotRst, "the guest got a RST");
      assert.equal(peer.ended, null, "the host peer saw the connection end");
      assert.equal(peer.receivedBytes, 0, "bytes went through a frozen connection");
      // QEMU resumes: the connection carries on with what the guest sent meanwhile
      const bases = [await a.frontend.stopRing(RX), await a.frontend.stopRing(TX)];
      await a.frontend.restartRing(RX, bases[0]);
      await a.frontend.restartRing(TX, bases[1]);
      await peer.until(10_000, "the held-back upload");
      assert.deepEqual(peer.take(), patternBytes(10_000, 3));
    } finally {
      await peer?.close();
      listener.close();
      await a.close();
    }
  },
});
