/**
 * The harness front-end against the real daemon (bin/tpasst --vhost-user -f -s PATH):
 * negotiation, reconnects, a malformed front-end, fd hygiene across sessions.
 *
 * Skipped (with the reason in its name) when deno.json's daemon permission set lacks
 * `"ffi": true`, without which the daemon cannot map guest memory.
 */
import assert from "node:assert/strict";
import { exists, ForegroundTpasst, processFdCount, waitFor } from "../cli/cli_helpers.ts";
import { encodeRequest } from "../support/vhost_user/request_encoder.ts";
import { Request } from "../../src/vhost_user/protocol.ts";
import { RX, TX, VhostUserFrontend } from "../support/frontend/vhost_user_frontend.ts";
import { singleRegionPayload, vringStatePayload } from "../../src/vhost_user/payload_codec.ts";

/**
 * Mapping guest memory needs Deno.UnsafePointerView.getArrayBuffer, which only full
 * --allow-ffi permits: the daemon's permission set in deno.json must grant `"ffi": true`.
 */
const daemonMayMapMemory = (() => {
  try {
    const config = JSON.parse(
      Deno.readTextFileSync(new URL("../../deno.json", import.meta.url)),
    );
    return config.permissions?.daemon?.ffi === true;
  } catch {
    return false;
  }
})();

/** The daemon serves one front-end at a time: wait until it has let go of the last one. */
async function frontendGone(daemon: ForegroundTpasst, count: number): Promise<void> {
  await waitFor(
    `the daemon to release front-end #${count}`,
    () =>
      (daemon.stderr.match(/Frontend gone; waiting for the next connection/g) ?? []).length >=
        count,
  );
}

Deno.test({
  name: `\`bin/tpasst --vhost-user\` serves the harness front-end across reconnects${
    daemonMayMapMemory
      ? ""
      : ' (skipped: deno.json\'s daemon permission set lacks "ffi": true, needed to map guest memory)'
  }`,
  ignore: !daemonMayMapMemory,
  async fn() {
    const dir = Deno.makeTempDirSync({ prefix: "tpasst-vu-daemon-" });
    const path = `${dir}/vhost-user.sock`;
    const daemon = new ForegroundTpasst(["--vhost-user", "-s", path]);
    try {
      await waitFor("the daemon's socket", () => exists(path));
      const pid = daemon.process.pid;
      // first front-end: full negotiation, a TX frame, then disconnect
      let frontend = VhostUserFrontend.connect(path);
      await frontend.negotiate();
      const baseline = processFdCount(pid);
      frontend.sendFrame(new Uint8Array(60).fill(0xff, 0, 6));
      await frontend.waitUsed(TX, 1);
      frontend.postRxBuffers(4);
      assert.equal(await frontend.stopRing(RX) >= 0, true);
      frontend.close();
      await frontendGone(daemon, 1);
      // malformed front-ends are disconnected, the daemon keeps running
      const malformed: [string, (f: VhostUserFrontend) => void, RegExp][] = [
        [
          "queue index",
          (f) => f.sendRaw(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(37, 256))),
          /queue index 37 is not below 32/,
        ],
      ];
      let gone = 1;
      for (const [what, send, logLine] of malformed) {
        frontend = VhostUserFrontend.connect(path);
        await frontend.negotiate({ replyAck: false });
        send(frontend);
        await frontend.waitClosed();
        frontend.close();
        await daemon.waitForStderr(logLine, `the log line for ${what}`);
        await frontendGone(daemon, ++gone);
      }
      // the next front-end works and the daemon's fds are back to the connected baseline
      frontend = VhostUserFrontend.connect(path);
      await frontend.negotiate();
      await waitFor(
        "the daemon's fd count back to its baseline",
        () => processFdCount(pid) === baseline,
      );
      frontend.close();
      await frontendGone(daemon, ++gone);
    } finally {
      daemon.process.kill("SIGTERM");
      const { code, stderr } = await daemon.exit();
      Deno.removeSync(dir, { recursive: true });
      assert.equal(code, 0, stderr);
    }
  },
});

Deno.test({
  name:
    `\`bin/tpasst --vhost-user\` refuses a memory region larger than its file instead of dying of SIGBUS${
      daemonMayMapMemory
        ? ""
        : ' (skipped: deno.json\'s daemon permission set lacks "ffi": true, needed to map guest memory)'
    }`,
  ignore: !daemonMayMapMemory,
  async fn() {
    const dir = Deno.makeTempDirSync({ prefix: "tpasst-vu-sigbus-" });
    const path = `${dir}/vhost-user.sock`;
    const daemon = new ForegroundTpasst(["--vhost-user", "-s", path]);
    try {
      await waitFor("the daemon's socket", () => exists(path));
      const frontend = VhostUserFrontend.connect(path);
      try {
        await frontend.negotiate({ replyAck: false });
        // a region four times its 1 MiB memfd: refused before it is mapped, so no ring
        // can ever be placed beyond the file's end
        const region = frontend.memory.regions[0];
        const user = 0x7e00_0000_0000;
        frontend.send(
          Request.ADD_MEM_REG,
          singleRegionPayload({
            guestAddress: 0x10_0000_0000,
            size: region.memfd.size * 4,
            userAddress: user,
            mmapOffset: 0,
          }),
          [region.memfd.fd],
        );
        await frontend.waitClosed();
      } finally {
        frontend.close();
      }
      await daemon.waitForStderr(/ends beyond its 1048576-byte file/, "the refusal log line");
      await frontendGone(daemon, 1);
    } finally {
      try {
        daemon.process.kill("SIGTERM");
      } catch { /* it already exited: the assertion below reports how */ }
      const { code, stderr } = await daemon.exit();
      Deno.removeSync(dir, { recursive: true });
      assert.equal(code, 0, `daemon exit code ${code} (135 = SIGBUS)\n${stderr.slice(-2000)}`);
    }
  },
});
