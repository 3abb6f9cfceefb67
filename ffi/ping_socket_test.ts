import assert from "node:assert/strict";
import { NativeError } from "./native_error.ts";
import { PingSocket } from "./ping_socket.ts";
import { openFdCount } from "./process.ts";

Deno.test("`PingSocket.open()` either opens or throws NativeError EACCES", () => {
  const before = openFdCount();
  for (const family of [4, 6] as const) {
    try {
      const socket = PingSocket.open(family);
      assert.ok(socket.fd >= 0);
      assert.equal(socket.family, family);
      socket.close();
      socket.close();
    } catch (error) {
      assert.ok(error instanceof NativeError, String(error));
      assert.equal(error.errno, 13);
      assert.equal(error.errnoName, "EACCES");
      assert.match(error.message, /ping_open\(IPv\d\) failed: EACCES/);
    }
  }
  assert.equal(openFdCount(), before);
});

/** Whether this host lets us open ping sockets (net.ipv4.ping_group_range). */
const pingSocketsAllowed = (() => {
  try {
    PingSocket.open(4).close();
    return true;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "`PingSocket.sendTo()` rejects an address of the wrong length" +
    (pingSocketsAllowed ? "" : " (ignored: net.ipv4.ping_group_range forbids ping sockets here)"),
  ignore: !pingSocketsAllowed,
  fn() {
    const socket = PingSocket.open(4);
    try {
      assert.throws(() => socket.sendTo(new Uint8Array(8), new Uint8Array(16)), RangeError);
    } finally {
      socket.close();
    }
  },
});

const canUnshare = Deno.uid() === 0 && (() => {
  try {
    return Deno.statSync("/usr/bin/unshare").isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "`PingSocket` echoes 127.0.0.1 and ::1 in a private network namespace",
  ignore: !canUnshare,
  async fn() {
    const fixture = new URL("../tests/support/ffi/ping_fixture.ts", import.meta.url).pathname;
    const script = "ip link set lo up && sysctl -q -w net.ipv4.ping_group_range='0 2147483647' " +
      `&& exec "$0" run -A --no-prompt "$1"`;
    const output = await new Deno.Command("unshare", {
      args: ["--net", "sh", "-c", script, Deno.execPath(), fixture],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 0, stderr);
    const result = JSON.parse(new TextDecoder().decode(output.stdout));
    assert.deepEqual(result.v4, { type: 0, sequence: 5, from: [127, 0, 0, 1] });
    assert.deepEqual(result.v6, {
      type: 129,
      sequence: 5,
      from: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    });
  },
});
