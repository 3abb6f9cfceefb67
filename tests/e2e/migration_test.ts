/**
 * Live migration of a VM on tpasst (vhost-user) under QEMU 10: QEMU migrates only when
 * the backend offers dirty logging (VHOST_F_LOG_ALL and VHOST_USER_PROTOCOL_F_LOG_SHMFD;
 * without them `migrate` fails with "vhost-user backend lacks
 * VHOST_USER_PROTOCOL_F_LOG_SHMFD"). A guest without open connections on tpasst A is
 * migrated to a second QEMU (`-incoming`) on tpasst B over a unix socket; the target
 * guest must then still ping its gateway and fetch the host's page. Connections open
 * across the migration (device state) are not part of this test.
 * @module
 */
import assert from "node:assert/strict";
import { pingGatewayUnavailable, startBackend, type StartedBackend } from "./backends.ts";
import { HELLO_BODY, startHttpServer } from "./host_services.ts";
import { QemuGuest } from "./qemu.ts";

/** Boot and lease under TCG on a loaded machine. */
const ONLINE_TIMEOUT_MS = 180_000;
/** The migration itself (256 MiB over a unix socket) and the target's first ping. */
const MIGRATION_TIMEOUT_MS = 120_000;
/** Seconds the guest keeps pinging after it said it is ready to move. */
const GUEST_LOOP_SECONDS = 300;

/** Guest: lease, one ping and one fetch, then a ping and a fetch every second, numbered. */
function migrationScript(httpPort: number): string {
  return [
    'mark() { echo "TPASST-MARK $*"; }',
    "udhcpc -i eth0 -f -q -n -t 5 -T 3 -s /etc/udhcpc.sh 2>/dev/null >/dev/null",
    "gw=$(cat /tmp/router 2>/dev/null)",
    'if [ -z "$gw" ]; then mark error no-dhcp-lease; exit 1; fi',
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

Deno.test({
  name:
    `e2e tpasst-vhost: QEMU 10 migrates a guest to a second QEMU on a second tpasst; the target pings its gateway${
      ignore ? ` (ignored: ${ignore})` : ""
    }`,
  ignore: ignore !== null,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tpasst-migration-" });
    const http = startHttpServer();
    const backends: StartedBackend[] = [];
    const guests: QemuGuest[] = [];
    const monitors: Qmp[] = [];
    const script = migrationScript(http.port);
    const outputs = () =>
      backends.map((b, i) => `--- tpasst ${"AB"[i]} ---\n${b.output()}`).join("\n");
    try {
      backends.push(await startBackend("tpasst-vhost", { forwards: [] }));
      backends.push(await startBackend("tpasst-vhost", { forwards: [] }));
      const source = await QemuGuest.launch({
        netdev: backends[0].netdev,
        script,
        extraArguments: ["-qmp", `unix:${dir}/source.qmp,server=on,wait=off`],
      });
      guests.push(source);
      const ready = await source.waitForAnyMark(["ready", "error"], ONLINE_TIMEOUT_MS);
      assert.equal(ready.name, "ready", `${source.serialTail()}\n${outputs()}`);
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
      await sourceMonitor.execute("migrate", { uri: `unix:${dir}/migration.sock` });
      const deadline = performance.now() + MIGRATION_TIMEOUT_MS;
      let status = "";
      let info: Record<string, unknown> = {};
      while (performance.now() < deadline) {
        info = await sourceMonitor.execute("query-migrate") as Record<string, unknown>;
        status = String(info.status);
        if (status === "completed" || status === "failed" || status === "cancelled") break;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      assert.equal(status, "completed", `migration: ${JSON.stringify(info)}\n${outputs()}`);
      const online = await target.waitForAnyMark(["online"], MIGRATION_TIMEOUT_MS).catch(
        (error) => {
          throw new Error(`${(error as Error).message}\n${outputs()}`);
        },
      );
      assert.equal(online.value.replace(/^\d+ /, ""), HELLO_BODY.trim());
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
  },
});
