import assert from "node:assert/strict";
import {
  closeFd,
  DAEMON_READY_FD_OPTION,
  daemonReadyFdFromArgs,
  openFdCount,
  reapChild,
  spawnDaemon,
} from "./process.ts";
import { UnixStream } from "./unix_stream.ts";

const fixture = new URL("../tests/support/ffi/daemon_fixture.ts", import.meta.url).pathname;

async function runFixture(scenario: string) {
  const before = openFdCount();
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-prompt", fixture, scenario],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, stderr);
  assert.equal(openFdCount(), before);
  return JSON.parse(new TextDecoder().decode(output.stdout));
}

Deno.test("`spawnDaemon()` starts a detached copy that keeps the listed fds, no others, and reports ready", async () => {
  const report = await runFixture("ready");
  assert.deepEqual(report.readiness, { state: "ready" });
  const facts = report.facts;
  assert.equal(facts.args[0], "ready", "the parent's own arguments come first");
  assert.equal(facts.args[1], "child");
  assert.equal(facts.args[2], `--keep=${facts.keep}`);
  assert.equal(facts.args[3], `${DAEMON_READY_FD_OPTION}=${facts.readyFd}`);
  assert.equal(facts.sessionLeader, true);
  assert.equal(facts.stdin, "/dev/null");
  assert.equal(facts.stdout, "/dev/null");
  assert.equal(facts.stderr, "/dev/null");
  assert.equal(facts.keptFdOpen, true);
  assert.equal(facts.keptFdIsSocket, true);
  assert.equal(facts.markerInherited, false);
  assert.equal(facts.readyFdOpen, true);
});

Deno.test("`waitForDaemonReady()` reports a child that exits before ready with its status", async () => {
  const report = await runFixture("exit");
  assert.deepEqual(report.readiness, { state: "exited", status: 3 });
});

Deno.test("`waitForDaemonReady()` times out when the child never reports", async () => {
  const report = await runFixture("silent");
  assert.deepEqual(report.readiness, { state: "timeout" });
  assert.equal(report.facts.reapedStatus, 128 + 9, "killed by SIGKILL");
});

Deno.test("`spawnDaemon()` rejects kept fds that are not open or below 3, without leaking", () => {
  const before = openFdCount();
  const [a, b] = UnixStream.pair();
  const fd = b.fd;
  b.close();
  assert.throws(() => spawnDaemon([], [fd]), /EBADF/);
  assert.throws(() => spawnDaemon([], [1]), /EINVAL/);
  assert.throws(() => spawnDaemon(["bad\0arg"], []), TypeError);
  a.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`daemonReadyFdFromArgs()` finds the readiness option", () => {
  assert.equal(daemonReadyFdFromArgs(["-f", "--daemon-ready-fd=7"]), 7);
  assert.equal(daemonReadyFdFromArgs(["-f"]), null);
  assert.throws(() => daemonReadyFdFromArgs(["--daemon-ready-fd=x"]), RangeError);
});

Deno.test("`reapChild()` throws ECHILD for a process that is not a child", () => {
  assert.throws(() => reapChild(1, false), /ECHILD/);
});

Deno.test("`closeFd()` closes a raw descriptor and throws EBADF the second time", () => {
  const before = openFdCount();
  const [a, b] = UnixStream.pair();
  const fd = a.fd;
  closeFd(fd);
  assert.equal(openFdCount(), before + 1);
  assert.throws(() => closeFd(fd), /EBADF/);
  b.close();
  assert.equal(openFdCount(), before);
});
