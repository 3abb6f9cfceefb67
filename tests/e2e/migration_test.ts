/**
 * Live migration of a VM on tpasst (vhost-user) under QEMU 10: QEMU migrates only when
 * the backend offers dirty logging (VHOST_F_LOG_ALL and VHOST_USER_PROTOCOL_F_LOG_SHMFD;
 * without them `migrate` fails with "vhost-user backend lacks
 * VHOST_USER_PROTOCOL_F_LOG_SHMFD"). A guest without open connections on tpasst A is
 * migrated to a second QEMU (`-incoming`) on tpasst B over a unix socket; the target
 * guest must then still ping its gateway and fetch the host's page; further tests move
 * open TCP connections (device state, TCP repair), cancel a migration, and run both
 * with 4 queue pairs (`queues=4`, `mq=on`, all turned on in the guest: every ring
 * logged, the state moved with every pair running).
 * @module
 */
import assert from "node:assert/strict";
import {
  failureReport,
  pingGatewayUnavailable,
  startBackend,
  type StartedBackend,
} from "./backends.ts";
import { fillPseudoRandom, HELLO_BODY, startHttpServer } from "./host_services.ts";
import { createHash } from "node:crypto";
import { waitFor } from "../cli/cli_helpers.ts";
import { LEASE_SCRIPT_LINES, QemuGuest } from "./qemu.ts";
import { hasPasstRepair, startPasstRepair, WITHOUT_NET_ADMIN } from "./passt_repair.ts";

/** Boot and lease under TCG on a loaded machine. */
const ONLINE_TIMEOUT_MS = 180_000;
/** The migration itself (256 MiB over a unix socket) and the target's first ping. */
const MIGRATION_TIMEOUT_MS = 120_000;
/** Seconds the guest keeps pinging after it said it is ready to move. */
const GUEST_LOOP_SECONDS = 300;

/** Queue pairs of the multiqueue variants (`queues=4`, `mq=on`, all turned on in the guest). */
const MULTIQUEUE_PAIRS = 4;

/** Guest lines turning on all `queues` pairs (after the lease lines), or none for one. */
function channelLines(queues: number): string[] {
  return queues > 1
    ? [
      `if ! probe channels eth0 ${queues} >/tmp/channels.log 2>&1; then`,
      '  mark error "channels $(tail -n 1 /tmp/channels.log)"; exit 1',
      "fi",
    ]
    : [];
}

/** Guest: lease, one ping and one fetch, then a ping and a fetch every second, numbered. */
function migrationScript(httpPort: number, queues = 1): string {
  return [
    ...LEASE_SCRIPT_LINES,
    ...channelLines(queues),
    `url="http://$gw:${httpPort}/hello"`,
    'if ping -c 1 -W 5 "$gw" >/dev/null 2>&1; then mark ping-before ok; else mark error ping-before; exit 1; fi',
    "mark ready migrate",
    "i=0",
    `while [ $i -lt ${GUEST_LOOP_SECONDS} ]; do`,
    "  sleep 1; i=$((i + 1))",
    '  if ping -c 1 -W 2 "$gw" >/dev/null 2>&1; then',
    '    if timeout 10 wget -q -O /tmp/a "$url" 2>/dev/null; then mark online "$i $(cat /tmp/a)"; fi',
    "  fi",
    "done",
    "exit 0",
    "",
  ].join("\n");
}

/** A QMP connection (QEMU's JSON monitor) over a unix socket. */
class Qmp {
  readonly #connection: Deno.UnixConn;
  readonly #lines: AsyncIterator<string>;

  private constructor(connection: Deno.UnixConn) {
    this.#connection = connection;
    this.#lines = lines(connection.readable);
  }

  /** Connects (retrying while QEMU creates the socket) and leaves capabilities negotiation. */
  static async connect(path: string, timeoutMs = 30_000): Promise<Qmp> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      try {
        const qmp = new Qmp(await Deno.connect({ transport: "unix", path }));
        await qmp.#next(); // greeting
        await qmp.execute("qmp_capabilities");
        return qmp;
      } catch (error) {
        if (performance.now() > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }

  /** Runs a command; returns its `return` value, throws its `error`. Events are skipped. */
  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const request = JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) });
    await this.#connection.write(new TextEncoder().encode(request + "\n"));
    for (;;) {
      const reply = await this.#next();
      if ("event" in reply) continue;
      if ("error" in reply) {
        throw new Error(`QMP ${command}: ${JSON.stringify(reply.error)}`);
      }
      return reply.return;
    }
  }

  async #next(): Promise<Record<string, unknown>> {
    const { value, done } = await this.#lines.next();
    if (done) throw new Error("QMP connection closed");
    return JSON.parse(value);
  }

  close(): void {
    try {
      this.#connection.close();
    } catch { /* closed */ }
  }
}

async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of stream) {
    pending += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, newline).trim();
      pending = pending.slice(newline + 1);
      if (line !== "") yield line;
    }
  }
}

const ignore = pingGatewayUnavailable("tpasst-vhost");

/** Where the migration was when it ended (or when {@link MIGRATION_TIMEOUT_MS} ran out). */
interface MigrationEnd {
  /** query-migrate's status: "completed", "failed", "cancelled", or where it stood at the timeout. */
  readonly status: string;
  /** query-migrate's whole answer, for a failing test's message. */
  readonly info: Record<string, unknown>;
}

/** Polls the source's query-migrate until the migration ends, for at most MIGRATION_TIMEOUT_MS. */
async function migrationEnd(sourceMonitor: Qmp): Promise<MigrationEnd> {
  const deadline = performance.now() + MIGRATION_TIMEOUT_MS;
  let status = "";
  let info: Record<string, unknown> = {};
  while (performance.now() < deadline) {
    info = await sourceMonitor.execute("query-migrate") as Record<string, unknown>;
    status = String(info.status);
    if (status === "completed" || status === "failed" || status === "cancelled") break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return { status, info };
}

/**
 * Launches the source QEMU on tpasst A (`backends[0]`) running `script` and waits for
 * its guest's `ready` mark, then the target QEMU on tpasst B waiting for the migration
 * on `dir`/migration.sock; connects to both QMP monitors. The QEMUs and monitors go into
 * `guests` and `monitors` (for the caller to end). A guest that fails before `ready`
 * fails the test with A's log and statistics ({@link failureReport}).
 */
async function launchPair(
  dir: string,
  backends: readonly StartedBackend[],
  script: string,
  guests: QemuGuest[],
  monitors: Qmp[],
): Promise<{ source: QemuGuest; target: QemuGuest; sourceMonitor: Qmp }> {
  const source = await QemuGuest.launch({
    netdev: backends[0].netdev,
    script,
    extraArguments: ["-qmp", `unix:${dir}/source.qmp,server=on,wait=off`],
  });
  guests.push(source);
  const ready = await source.waitForAnyMark(["ready", "error"], ONLINE_TIMEOUT_MS).catch((
    error,
  ) => ({ name: "timeout", value: (error as Error).message }));
  if (ready.name !== "ready") {
    // the source's daemon, banner cut and statistics asked for: where the frames stopped
    assert.fail(
      `the guest on A: ${ready.name} ${ready.value}\n${source.serialTail()}\n--- tpasst A ---\n${await failureReport(
        backends[0],
      )}`,
    );
  }
  const target = await QemuGuest.launch({
    netdev: backends[1].netdev,
    script,
    extraArguments: [
      "-qmp",
      `unix:${dir}/target.qmp,server=on,wait=off`,
      "-incoming",
      `unix:${dir}/migration.sock`,
    ],
  });
  guests.push(target);
  const sourceMonitor = await Qmp.connect(`${dir}/source.qmp`);
  monitors.push(sourceMonitor);
  monitors.push(await Qmp.connect(`${dir}/target.qmp`)); // the target is listening
  return { source, target, sourceMonitor };
}

for (
  const variant of [
    { queues: 1 },
    { queues: 1, deviceOptions: "packed=on" },
    { queues: MULTIQUEUE_PAIRS },
  ]
) {
  Deno.test({
    name: `e2e tpasst-vhost${variant.deviceOptions ? " packed rings" : ""}${
      variant.queues > 1 ? ` with ${variant.queues} queue pairs` : ""
    }: QEMU 10 migrates a guest to a second QEMU on a second tpasst; the target pings its gateway${
      ignore ? ` (ignored: ${ignore})` : ""
    }`,
    ignore: ignore !== null,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: () => migratesAndPings(variant.queues, variant.deviceOptions),
  });
}

/**
 * The guest migrates from A to B with `queues` pairs and `deviceOptions` on its
 * virtio-net device; every write A made was logged.
 */
async function migratesAndPings(queues: number, deviceOptions?: string): Promise<void> {
  {
    const dir = await Deno.makeTempDir({ prefix: "tpasst-migration-" });
    const http = startHttpServer();
    const backends: StartedBackend[] = [];
    const guests: QemuGuest[] = [];
    const monitors: Qmp[] = [];
    const script = migrationScript(http.port, queues);
    const outputs = () =>
      backends.map((b, i) => `--- tpasst ${"AB"[i]} ---\n${b.output()}`).join("\n");
    try {
      backends.push(await startBackend("tpasst-vhost", { forwards: [], queues, deviceOptions }));
      backends.push(await startBackend("tpasst-vhost", { forwards: [], queues, deviceOptions }));
      const { target, sourceMonitor } = await launchPair(
        dir,
        backends,
        script,
        guests,
        monitors,
      );
      await sourceMonitor.execute("migrate", { uri: `unix:${dir}/migration.sock` });
      const { status, info } = await migrationEnd(sourceMonitor);
      assert.equal(status, "completed", `migration: ${JSON.stringify(info)}\n${outputs()}`);
      const online = await target.waitForAnyMark(["online"], MIGRATION_TIMEOUT_MS).catch(
        (error) => {
          throw new Error(`${(error as Error).message}\n${outputs()}`);
        },
      );
      assert.equal(online.value.replace(/^\d+ /, ""), HELLO_BODY.trim());
      if (deviceOptions !== undefined) {
        // QEMU turns packed=on off silently when a backend lacks the packed ring
        Deno.kill(backends[1].pid!, "SIGUSR1");
        const layout = await waitFor(
          "tpasst B's stats",
          () => backends[1].output().match(/ringLayout[ =":]+(\w+)/),
        );
        assert.equal(layout[1], "packed", "the target's rings run packed");
      }
      assert.ok(
        backends[0].output().includes("dirty logging on"),
        `tpasst A logged dirty pages during the migration:\n${outputs()}`,
      );
      assert.ok(
        !backends[0].output().includes("dirty log:"),
        `tpasst A marked every write it made:\n${outputs()}`,
      );
    } finally {
      for (const monitor of monitors) monitor.close();
      for (const guest of guests) await guest.kill();
      for (const backend of backends) await backend.stop();
      await http.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }
}

// ------------------------------------------------------------------------------------
// Open TCP connections across the migration (device state, TCP repair)

/** Bytes of the download and of the upload that run across the migration. */
const TRANSFER_BYTES = 24 * 1024 * 1024;
/** Pace of both transfers (bytes per second): long enough to be cut by the migration. */
const TRANSFER_RATE = 768 * 1024;
/** Chunk the paced peers move at a time. */
const PACE_CHUNK = 64 * 1024;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** How a host peer's connection ended; null while it is open. */
type PeerEnd = null | "complete" | string;

/** A paced HTTP download: `/paced` streams TRANSFER_BYTES pseudo-random bytes at TRANSFER_RATE. */
function startPacedDownload() {
  const state = { sha256: "", end: null as PeerEnd, sent: 0, paused: false };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    const hash = createHash("sha256");
    let random = 0x12345678;
    const started = performance.now();
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (state.sent >= TRANSFER_BYTES) {
          state.sha256 = hash.digest("hex");
          state.end = "complete";
          controller.close();
          return;
        }
        const due = started + (state.sent / TRANSFER_RATE) * 1000;
        if (due > performance.now()) await sleep(due - performance.now());
        while (state.paused) await sleep(20);
        const chunk = new Uint8Array(Math.min(PACE_CHUNK, TRANSFER_BYTES - state.sent));
        random = fillPseudoRandom(chunk, random);
        hash.update(chunk);
        state.sent += chunk.length;
        controller.enqueue(chunk);
      },
      cancel(reason) {
        state.end = `cancelled after ${state.sent} bytes: ${reason}`;
      },
    });
    return new Response(body, {
      headers: {
        "content-length": `${TRANSFER_BYTES}`,
        "content-type": "application/octet-stream",
      },
    });
  });
  return { port: server.addr.port, state, close: () => server.shutdown() };
}

/** A paced TCP sink: reads TRANSFER_BYTES at TRANSFER_RATE, hashing them, then closes. */
function startPacedSink() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const state = { sha256: "", bytes: 0, end: null as PeerEnd, paused: false };
  (async () => {
    const conn = await listener.accept();
    const hash = createHash("sha256");
    const buffer = new Uint8Array(PACE_CHUNK);
    const started = performance.now();
    try {
      while (state.bytes < TRANSFER_BYTES) {
        const due = started + (state.bytes / TRANSFER_RATE) * 1000;
        if (due > performance.now()) await sleep(due - performance.now());
        while (state.paused) await sleep(20);
        const n = await conn.read(
          buffer.subarray(0, Math.min(PACE_CHUNK, TRANSFER_BYTES - state.bytes)),
        );
        if (n === null) {
          state.end = `end of stream after ${state.bytes} bytes`;
          break;
        }
        hash.update(buffer.subarray(0, n));
        state.bytes += n;
      }
      state.sha256 = hash.digest("hex");
      state.end ??= "complete";
    } catch (error) {
      state.end = `error after ${state.bytes} bytes: ${error}`;
    }
    try {
      conn.close();
    } catch { /* closed */ }
  })().catch(() => {});
  return { port: (listener.addr as Deno.NetAddr).port, state, close: () => listener.close() };
}

/** A line echo server for the idle interactive connection; notes how it ended. */
function startEcho() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const state = { lines: [] as string[], end: null as PeerEnd };
  let open: Deno.Conn | null = null;
  (async () => {
    const conn = await listener.accept();
    open = conn;
    const buffer = new Uint8Array(4096);
    try {
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) {
          state.end = "end of stream";
          return;
        }
        state.lines.push(new TextDecoder().decode(buffer.subarray(0, n)).trim());
        await conn.write(buffer.subarray(0, n));
      }
    } catch (error) {
      state.end = `error: ${error}`;
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    state,
    close: () => {
      listener.close();
      try {
        open?.close();
      } catch { /* closed */ }
    },
  };
}

/** Guest: lease; an idle echo connection; a paced download and upload; migrate mark; results. */
function connectionsScript(http: number, sink: number, echo: number, queues = 1): string {
  return [
    ...LEASE_SCRIPT_LINES,
    ...channelLines(queues),
    "mkfifo /tmp/in /tmp/up.fifo",
    `nc "$gw" ${echo} </tmp/in >/tmp/echo.out 2>/dev/null &`,
    "exec 3>/tmp/in",
    "echo before >&3",
    "sleep 2",
    "if grep -q before /tmp/echo.out; then mark echo-before ok; else mark error echo-before; exit 1; fi",
    "sha256sum </tmp/up.fifo >/tmp/up.sum &",
    "sum_pid=$!",
    `(timeout 900 probe tcp-send "$gw" ${sink} ${TRANSFER_BYTES} /tmp/up.fifo 2>/tmp/up.log; echo $? >/tmp/up.rc) &`,
    "up_pid=$!",
    `(timeout 900 wget -q -O - "http://$gw:${http}/paced" 2>/tmp/down.log | sha256sum >/tmp/down.sum) &`,
    "down_pid=$!",
    "sleep 3",
    "mark ready migrate",
    "wait $down_pid",
    "mark down-sha256 \"$(cut -d' ' -f1 /tmp/down.sum) $(tail -n 1 /tmp/down.log)\"",
    "wait $up_pid",
    "wait $sum_pid",
    "mark up-sha256 \"$(cut -d' ' -f1 /tmp/up.sum) rc=$(cat /tmp/up.rc) $(tail -n 1 /tmp/up.log)\"",
    "echo after >&3",
    "sleep 2",
    "if grep -q after /tmp/echo.out; then mark echo-after ok; else mark echo-after failed; fi",
    "sleep 600",
    "",
  ].join("\n");
}

/** Starts passt-repair on `backend`'s repair socket; waits until tpasst has it. */
function startBackendRepair(backend: StartedBackend): Promise<Deno.ChildProcess> {
  if (backend.netdev.kind !== "vhost-user") throw new Error("passt-repair needs vhost-user");
  return startPasstRepair(backend.netdev.socketPath, () => backend.output());
}

/**
 * Runs the transfers across a migration from A to B, or (`cancel`) across one QEMU
 * cancels half-way through the memory copy, after which the guest goes on against A.
 */
async function connectionsAcrossMigration(
  cancel: boolean,
  unprivileged = false,
  queues = 1,
  deviceOptions?: string,
): Promise<void> {
  {
    const helpers: Deno.ChildProcess[] = [];
    const wrapper = unprivileged ? WITHOUT_NET_ADMIN : [];
    const dir = await Deno.makeTempDir({ prefix: "tpasst-migration-tcp-" });
    const download = startPacedDownload();
    const sink = startPacedSink();
    const echo = startEcho();
    const backends: StartedBackend[] = [];
    const guests: QemuGuest[] = [];
    const monitors: Qmp[] = [];
    const script = connectionsScript(download.port, sink.port, echo.port, queues);
    const outputs = () =>
      backends.map((b, i) => `--- tpasst ${"AB"[i]} ---\n${b.output()}`).join("\n");
    try {
      // one machine: A lets go of migrated sockets at once so that B can take them
      backends.push(
        await startBackend("tpasst-vhost", {
          forwards: [],
          extraArgs: ["--migrate-no-linger"],
          wrapper,
          queues,
          deviceOptions,
        }),
      );
      backends.push(
        await startBackend("tpasst-vhost", { forwards: [], wrapper, queues, deviceOptions }),
      );
      if (unprivileged) {
        for (const b of backends) helpers.push(await startBackendRepair(b));
      }
      const { source, target, sourceMonitor } = await launchPair(
        dir,
        backends,
        script,
        guests,
        monitors,
      );
      // One machine: between A letting go of a socket and B taking it over, a segment
      // from a host peer would find no socket and draw a RST from the kernel. The host
      // peers hold still over the migration (the guest goes on uploading into A's
      // socket, and the download waits in it: both move with the connection).
      download.state.paused = sink.state.paused = true;
      await sleep(500);
      const sentBefore = download.state.sent;
      const readBefore = sink.state.bytes;
      if (cancel) {
        // slow enough (4 MiB/s for 256 MiB of RAM) to be cancelled during the copy
        await sourceMonitor.execute("migrate-set-parameters", { "max-bandwidth": 4 << 20 });
      }
      await sourceMonitor.execute("migrate", { uri: `unix:${dir}/migration.sock` });
      if (cancel) {
        await sleep(3000);
        await sourceMonitor.execute("migrate_cancel");
      }
      const { status, info } = await migrationEnd(sourceMonitor);
      assert.equal(
        status,
        cancel ? "cancelled" : "completed",
        `migration: ${JSON.stringify(info)}\n${outputs()}`,
      );
      if (!cancel) {
        await waitFor(
          "B to restore the connections",
          () => /TCP connection\(s\) restored/.test(backends[1].output()),
        );
      }
      download.state.paused = sink.state.paused = false;
      // the migration cut both transfers in the middle
      const transfers = () =>
        `download sent ${sentBefore} before (${
          JSON.stringify(download.state)
        }), upload read ${readBefore} before (${
          JSON.stringify(sink.state)
        })\n${source.serialTail()}\n${outputs()}`;
      assert.ok(
        sentBefore > 0 && download.state.end === null,
        `the download was under way: ${transfers()}`,
      );
      assert.ok(
        readBefore > 0 && sink.state.end === null,
        `the upload was under way: ${transfers()}`,
      );
      const result = async (name: string) => {
        const guest = cancel ? source : target;
        const mark = await guest.waitForAnyMark([name], 300_000).catch((error) => {
          throw new Error(`${(error as Error).message}\n${guest.serialTail()}\n${outputs()}`);
        });
        return mark.value;
      };
      const down = await result("down-sha256");
      assert.equal(download.state.end, "complete", outputs());
      assert.equal(down.split(" ")[0], download.state.sha256, `download: ${down}`);
      const up = await result("up-sha256");
      assert.equal(sink.state.end, "complete", `${up}\n${outputs()}`);
      assert.equal(sink.state.bytes, TRANSFER_BYTES);
      assert.equal(up.split(" ")[0], sink.state.sha256, `upload: ${up}`);
      assert.equal(await result("echo-after"), "ok", outputs());
      assert.deepEqual(echo.state.lines, ["before", "after"]);
      assert.equal(echo.state.end, null, "the idle connection ended");
      if (cancel) {
        assert.ok(!/migration: saving/.test(backends[0].output()), "A saved a device state");
        assert.ok(!/restored/.test(backends[1].output()), "B restored connections");
      } else {
        assert.match(backends[1].output(), /(\d+) of \1 TCP connection\(s\) restored/, outputs());
        assert.ok(
          !/DHCP.*(DISCOVER|REQUEST)/i.test(backends[1].output()),
          `the guest asked B for a lease:\n${outputs()}`,
        );
      }
    } finally {
      for (const monitor of monitors) monitor.close();
      for (const guest of guests) await guest.kill();
      for (const backend of backends) await backend.stop();
      // passt-repair exits at the end of file of its connection
      for (const helper of helpers) await helper.status;
      echo.close();
      sink.close();
      await download.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }
}

Deno.test({
  name:
    "e2e tpasst-vhost: a download, an upload and an idle connection survive QEMU 10's migration to a second tpasst",
  ignore: ignore !== null || Deno.uid() !== 0,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => connectionsAcrossMigration(false),
});

Deno.test({
  name:
    "e2e tpasst-vhost packed rings: a download, an upload and an idle connection survive QEMU 10's migration to a second tpasst",
  ignore: ignore !== null || Deno.uid() !== 0,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => connectionsAcrossMigration(false, false, 1, "packed=on"),
});

Deno.test({
  name:
    `e2e tpasst-vhost with ${MULTIQUEUE_PAIRS} queue pairs: a download, an upload and an idle connection survive QEMU 10's migration to a second tpasst`,
  ignore: ignore !== null || Deno.uid() !== 0,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => connectionsAcrossMigration(false, false, MULTIQUEUE_PAIRS),
});

Deno.test({
  name:
    "e2e tpasst-vhost: a migration QEMU cancels half-way leaves the guest and its connections on tpasst A",
  ignore: ignore !== null || Deno.uid() !== 0,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => connectionsAcrossMigration(true),
});

Deno.test({
  name:
    "e2e tpasst-vhost without CAP_NET_ADMIN: the connections survive the migration through Debian 13's passt-repair",
  ignore: ignore !== null || Deno.uid() !== 0 || !hasPasstRepair,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => connectionsAcrossMigration(false, true),
});
