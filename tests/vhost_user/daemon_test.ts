/**
 * The harness front-end against the real daemon (bin/tpasst --vhost-user -f -s PATH):
 * negotiation, reconnects, a malformed front-end, fd hygiene across sessions.
 *
 * Runs once src/daemon/session_factories.ts serves vhost-user mode with
 * `vhostUserSessionFactory` (until then the daemon runs a placeholder that never
 * answers, and this test is skipped with that reason in its name).
 */
import assert from "node:assert/strict";
import { ForegroundTpasst, waitFor } from "../cli/cli_helpers.ts";
import { encodeRequest, vringStatePayload } from "../../src/vhost_user/request_encoder.ts";
import { Request } from "../../src/vhost_user/protocol.ts";
import { RX, TX, VhostUserFrontend } from "../harness/vhost_user_frontend.ts";

const wired = (() => {
  try {
    return Deno.readTextFileSync(new URL("../../src/daemon/session_factories.ts", import.meta.url))
      .includes("vhostUserSessionFactory");
  } catch {
    return false;
  }
})();

function daemonFdCount(pid: number): number {
  return [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
}

/** The daemon serves one front-end at a time: wait until it has let go of the last one. */
async function frontendGone(daemon: ForegroundTpasst, count: number): Promise<void> {
  await waitFor(
    `the daemon to release front-end #${count}`,
    () =>
      (daemon.stderr.match(/Frontend gone; waiting for the next connection/g) ?? []).length >=
        count,
  );
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: `\`bin/tpasst --vhost-user\` serves the harness front-end across reconnects${
    wired ? "" : " (skipped: vhost-user mode not wired in src/daemon/session_factories.ts)"
  }`,
  ignore: !wired,
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
      const baseline = daemonFdCount(pid);
      frontend.sendFrame(new Uint8Array(60).fill(0xff, 0, 6));
      await frontend.waitUsed(TX, 1);
      frontend.postRxBuffers(4);
      assert.equal(await frontend.stopRing(RX) >= 0, true);
      frontend.close();
      await frontendGone(daemon, 1);
      // a malformed front-end is disconnected, the daemon keeps running
      frontend = VhostUserFrontend.connect(path);
      await frontend.negotiate({ replyAck: false, memSlots: false });
      frontend.sendRaw(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(7, 256)));
      await frontend.waitClosed();
      frontend.close();
      await daemon.waitForStderr(/queue index 7 is not below 2/, "the protocol error log line");
      await frontendGone(daemon, 2);
      // the next front-end works and the daemon's fds are back to the connected baseline
      frontend = VhostUserFrontend.connect(path);
      await frontend.negotiate();
      await waitFor(
        "the daemon's fd count back to its baseline",
        () => daemonFdCount(pid) === baseline,
      );
      frontend.close();
      await frontendGone(daemon, 3);
    } finally {
      daemon.process.kill("SIGTERM");
      const { code, stderr } = await daemon.exit();
      Deno.removeSync(dir, { recursive: true });
      assert.equal(code, 0, stderr);
    }
  },
});
