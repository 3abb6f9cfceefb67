import assert from "node:assert/strict";
import {
  PING_GROUP_RANGE_PATH,
  pingSocketsAllowed,
  pingUnavailableReason,
  WITH_PING_SOCKETS_SCRIPT,
} from "./ping_sockets.ts";

const root = Deno.uid() === 0;
const CLOSED_RANGE = "1\t0";

function readRange(): string {
  return Deno.readTextFileSync(PING_GROUP_RANGE_PATH).trim();
}

async function runWrapped(script: string): Promise<{ code: number; stdout: string }> {
  const output = await new Deno.Command(WITH_PING_SOCKETS_SCRIPT, {
    args: ["sh", "-c", script],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  return { code: output.code, stdout: new TextDecoder().decode(output.stdout).trim() };
}

Deno.test({
  name:
    "with_ping_sockets.sh opens ping_group_range for the command and puts the host's value back",
  ignore: !root,
  async fn() {
    const outer = readRange();
    try {
      Deno.writeTextFileSync(PING_GROUP_RANGE_PATH, CLOSED_RANGE);
      const ok = await runWrapped(`cat ${PING_GROUP_RANGE_PATH}`);
      assert.equal(ok.code, 0);
      assert.equal(ok.stdout.split(/\s+/).join(" "), "0 2147483647");
      assert.equal(readRange(), CLOSED_RANGE, "restored after success");
      const failed = await runWrapped("exit 7");
      assert.equal(failed.code, 7, "the command's status comes through");
      assert.equal(readRange(), CLOSED_RANGE, "restored after failure");
      assert.equal(pingSocketsAllowed(0), false);
    } finally {
      Deno.writeTextFileSync(PING_GROUP_RANGE_PATH, outer);
    }
  },
});

Deno.test("`pingUnavailableReason()` names the sysctl and the group when ping sockets are out", () => {
  const reason = pingUnavailableReason(2147483647 + 1, "tpasst-vhost");
  assert.match(reason ?? "", /ping_group_range excludes gid 2147483648: tpasst-vhost/);
});
