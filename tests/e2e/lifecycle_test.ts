/**
 * Lifecycle scenarios against tpasst under QEMU, for vhost-user and the stream socket:
 * QEMU killed and started again against the same daemon, `--one-off` (the daemon exits
 * once QEMU goes), and the daemon restarted under a running guest whose QEMU reconnects
 * (`reconnect=1`; for `-netdev stream` only from QEMU 8.0 on).
 * @module
 */
import assert from "node:assert/strict";
import { startBackend, type StartedBackend } from "./backends.ts";
import { HELLO_BODY, type HttpServer, startHttpServer } from "./host_services.ts";
import { LEASE_SCRIPT_LINES, QemuGuest, streamReconnectSupported } from "./qemu.ts";
import { buildGuestScript } from "./scenario.ts";

const KINDS = ["tpasst-vhost", "tpasst-stream"] as const;
/** Boot, lease and first fetch under TCG on a loaded machine. */
const ONLINE_TIMEOUT_MS = 180_000;
/** How long the daemon may take to exit after QEMU went (--one-off). */
const EXIT_TIMEOUT_MS = 30_000;

/** Guest script: DHCP lease, then one fetch of the host's page through the gateway. */
function onlineScript(http: HttpServer): string {
  return buildGuestScript(
    ["dhcp", "http"],
    { http: http.port, dns: 0, udpEcho: 0, sink: 0, iperf: 0, hostLoopback6: null },
    0,
    0,
  );
}

/** Waits for the guest's fetch and checks the page, with both sides' output on failure. */
async function expectOnline(guest: QemuGuest, backend: StartedBackend): Promise<void> {
  const mark = await guest.waitForAnyMark(
    ["http-get", "http-failed", "dhcp-failed", "error"],
    ONLINE_TIMEOUT_MS,
  );
  assert.equal(
    `${mark.name} ${mark.value}`,
    `http-get ${HELLO_BODY.trim()}`,
    `${guest.serialTail()}\n--- ${backend.kind} ---\n${backend.output()}`,
  );
}

function lifecycleTest(name: string, fn: () => Promise<void>, ignore: string | null = null) {
  Deno.test({
    name: `${name}${ignore ? ` (ignored: ${ignore})` : ""}`,
    ignore: ignore !== null,
    sanitizeOps: false,
    sanitizeResources: false,
    fn,
  });
}

for (const kind of KINDS) {
  lifecycleTest(
    `e2e ${kind}: after QEMU is killed (SIGKILL) a new QEMU on the same daemon gets a lease and fetches a page`,
    async () => {
      const http = startHttpServer();
      let backend: StartedBackend | null = null;
      const guests: QemuGuest[] = [];
      try {
        backend = await startBackend(kind, { forwards: [] });
        for (const round of [1, 2]) {
          const guest = await QemuGuest.launch({
            netdev: backend.netdev,
            script: onlineScript(http),
          });
          guests.push(guest);
          await expectOnline(guest, backend);
          if (round === 1) {
            guest.abort(); // SIGKILL: no clean vhost-user/stream shutdown
            await guest.kill();
          }
        }
        assert.equal(await guests[1].waitForDone(60_000), 0);
        assert.equal((await guests[1].waitForExit(30_000)).code, 0);
        // The daemon served both and is still there for a third.
        assert.equal(await Promise.race([backend.status, Promise.resolve("running")]), "running");
      } finally {
        for (const guest of guests) await guest.kill();
        await backend?.stop();
        await http.close();
      }
    },
  );

  lifecycleTest(
    `e2e ${kind}: with --one-off the daemon exits with status 0 once QEMU is gone`,
    async () => {
      const http = startHttpServer();
      let backend: StartedBackend | null = null;
      let guest: QemuGuest | null = null;
      try {
        backend = await startBackend(kind, { forwards: [], oneOff: true });
        guest = await QemuGuest.launch({ netdev: backend.netdev, script: onlineScript(http) });
        await expectOnline(guest, backend);
        assert.equal(await guest.waitForDone(60_000), 0);
        assert.equal((await guest.waitForExit(30_000)).code, 0);
        let timer: ReturnType<typeof setTimeout> | undefined;
        const status = await Promise.race([
          backend.status!,
          new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), EXIT_TIMEOUT_MS)),
        ]);
        clearTimeout(timer);
        assert.ok(
          status !== null,
          `${kind} --one-off still runs ${EXIT_TIMEOUT_MS} ms after QEMU exited:\n${backend.output()}`,
        );
        assert.equal(status.code, 0, backend.output());
      } finally {
        await guest?.kill();
        await backend?.stop();
        await http.close();
      }
    },
  );
}

/** Guest: lease, one fetch, then retry the fetch for a minute while the host restarts tpasst. */
function restartScript(httpPort: number): string {
  return [
    ...LEASE_SCRIPT_LINES,
    `url="http://$gw:${httpPort}/hello"`,
    'if timeout 30 wget -q -O /tmp/a "$url"; then mark before "$(cat /tmp/a)"; else mark error before; exit 1; fi',
    "mark ready restart",
    "sleep 3 # the host restarts the daemon meanwhile",
    "i=0",
    "while [ $i -lt 60 ]; do",
    '  if timeout 10 wget -q -O /tmp/b "$url" 2>/dev/null; then mark after "$(cat /tmp/b)"; exit 0; fi',
    "  sleep 1; i=$((i + 1))",
    "done",
    "mark error after-restart",
    "exit 1",
    "",
  ].join("\n");
}

for (const kind of KINDS) {
  const ignore = kind === "tpasst-stream" && !streamReconnectSupported()
    ? "this QEMU's -netdev stream has no reconnect= (added in QEMU 8.0; 7.2 rejects it)"
    : null;
  lifecycleTest(
    `e2e ${kind}: the guest's traffic resumes after the daemon is restarted (QEMU reconnect=1)`,
    async () => {
      const dir = await Deno.makeTempDir({ prefix: "tpasst-reconnect-" });
      const socketPath = `${dir}/tpasst.sock`;
      const http = startHttpServer();
      let backend: StartedBackend | null = null;
      let guest: QemuGuest | null = null;
      try {
        backend = await startBackend(kind, { forwards: [], socketPath, reconnect: true });
        guest = await QemuGuest.launch({
          netdev: backend.netdev,
          script: restartScript(http.port),
        });
        const first = await guest.waitForAnyMark(["before", "error"], ONLINE_TIMEOUT_MS);
        assert.equal(first.name, "before", guest.serialTail());
        assert.equal(first.value, HELLO_BODY.trim());
        await guest.waitForMark("ready", 60_000);
        await backend.stop();
        await Deno.remove(socketPath).catch(() => {});
        backend = await startBackend(kind, { forwards: [], socketPath, reconnect: true });
        const after = await guest.waitForAnyMark(["after", "error"], ONLINE_TIMEOUT_MS);
        assert.equal(
          after.name,
          "after",
          `${guest.serialTail()}\n--- ${kind} ---\n${backend.output()}`,
        );
        assert.equal(after.value, HELLO_BODY.trim());
        assert.equal(await guest.waitForDone(60_000), 0);
      } finally {
        await guest?.kill();
        await backend?.stop();
        await http.close();
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    },
    ignore,
  );
}
