/**
 * vhost-user reconnect under QEMU: the guest keeps its network when tpasst is restarted
 * on the same socket (QEMU's chardev has reconnect=1). Ignored with the other tpasst e2e
 * tests until the datapath is declared wired (see backends.ts, or run with TPASST_E2E=1).
 * @module
 */
import assert from "node:assert/strict";
import {
  startBackend,
  type StartedBackend,
  TPASST_DATAPATH_WIRED,
  TPASST_IGNORE_REASON,
} from "./backends.ts";
import { HELLO_BODY, startHttpServer } from "./host_services.ts";
import { QemuGuest } from "./qemu.ts";

const enabled = TPASST_DATAPATH_WIRED || Deno.env.get("TPASST_E2E") === "1";

/** Guest: lease, one fetch, then retry the fetch for a minute while the host restarts tpasst. */
function script(httpPort: number): string {
  return [
    'mark() { echo "TPASST-MARK $*"; }',
    "udhcpc -i eth0 -f -q -n -t 5 -T 3 -s /etc/udhcpc.sh 2>/dev/null >/dev/null",
    "gw=$(cat /tmp/router 2>/dev/null)",
    'if [ -z "$gw" ]; then mark error no-dhcp-lease; exit 1; fi',
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

Deno.test({
  name: `e2e tpasst-vhost: the guest's traffic resumes after the daemon restarts (reconnect=1)${
    enabled ? "" : ` (ignored: ${TPASST_IGNORE_REASON})`
  }`,
  ignore: !enabled,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tpasst-reconnect-" });
    const socketPath = `${dir}/tpasst.sock`;
    const http = startHttpServer();
    let backend: StartedBackend | null = null;
    let guest: QemuGuest | null = null;
    try {
      backend = await startBackend("tpasst-vhost", { forwards: [], socketPath, reconnect: true });
      guest = await QemuGuest.launch({ netdev: backend.netdev, script: script(http.port) });
      const first = await guest.waitForAnyMark(["before", "error"], 180_000);
      assert.equal(first.name, "before", guest.serialTail());
      assert.equal(first.value, HELLO_BODY.trim());
      await guest.waitForMark("ready", 60_000);
      await backend.stop();
      await Deno.remove(socketPath).catch(() => {});
      backend = await startBackend("tpasst-vhost", { forwards: [], socketPath, reconnect: true });
      const after = await guest.waitForAnyMark(["after", "error"], 180_000);
      assert.equal(
        after.name,
        "after",
        `${guest.serialTail()}\n--- tpasst ---\n${backend.output()}`,
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
});
