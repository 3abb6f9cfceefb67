/**
 * Test fixture for process_test.ts: plays both sides of the daemon handshake, the
 * way main.ts does.
 *
 * Parent (`daemon_fixture.ts <scenario>`): spawns itself as a daemon keeping one end
 * of a socketpair, waits for readiness, prints a JSON report on stdout.
 * Child (same command line + `child --keep=N --daemon-ready-fd=M`): reports facts
 * about its environment over the kept socket, then acts out the scenario:
 * "ready" signals readiness, "exit" exits with status 3, "silent" never signals.
 *
 * @module
 */
import {
  daemonReadyFdFromArgs,
  reapChild,
  signalDaemonReady,
  spawnDaemon,
  waitForDaemonReady,
} from "../../../ffi/process.ts";
import { MemFd } from "../../../ffi/mem_fd.ts";
import { UnixStream } from "../../../ffi/unix_stream.ts";

/** Name of a memfd the parent holds open; the child must not inherit it. */
const MARKER = "daemon-fixture-marker";

const readyFd = daemonReadyFdFromArgs(Deno.args);

if (readyFd === null) {
  const scenario = Deno.args[0];
  const marker = MemFd.create(MARKER, 0);
  const [mine, theirs] = UnixStream.pair();
  const child = spawnDaemon(["child", `--keep=${theirs.fd}`], [theirs.fd]);
  theirs.close();
  const readiness = waitForDaemonReady(child.readyFd, scenario === "silent" ? 300 : 10_000);
  let facts = null;
  if (readiness.state === "ready") {
    const buf = new Uint8Array(4096);
    let length = 0;
    for (let n = mine.recv(buf); n > 0; n = mine.recv(buf.subarray(length))) length += n;
    facts = JSON.parse(new TextDecoder().decode(buf.subarray(0, length)));
  } else if (readiness.state === "timeout") {
    Deno.kill(child.pid, "SIGKILL");
    facts = { reapedStatus: reapChild(child.pid, true) };
  }
  mine.close();
  marker.close();
  console.log(JSON.stringify({ readiness, facts, pid: child.pid }));
} else {
  const scenario = Deno.args[0]; // the parent's own argument, inherited
  const keep = Number(Deno.args.find((arg) => arg.startsWith("--keep="))!.slice(7));
  if (scenario === "exit") Deno.exit(3);
  if (scenario === "silent") {
    await new Promise((resolve) => setTimeout(resolve, 5000));
    Deno.exit(0);
  }
  const stat = Deno.readTextFileSync("/proc/self/stat");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const openFds = [...Deno.readDirSync("/proc/self/fd")].map((entry) => Number(entry.name));
  const facts = {
    args: Deno.args,
    sessionLeader: Number(fields[3]) === Deno.pid,
    stdin: Deno.readLinkSync("/proc/self/fd/0"),
    stdout: Deno.readLinkSync("/proc/self/fd/1"),
    stderr: Deno.readLinkSync("/proc/self/fd/2"),
    keptFdOpen: openFds.includes(keep),
    keptFdIsSocket: Deno.readLinkSync(`/proc/self/fd/${keep}`).startsWith("socket:"),
    markerInherited: openFds.some((fd) => {
      try {
        return Deno.readLinkSync(`/proc/self/fd/${fd}`).includes(MARKER);
      } catch {
        return false;
      }
    }),
    readyFdOpen: openFds.includes(readyFd),
    keep,
    readyFd,
  };
  const socket = UnixStream.fromFd(keep);
  socket.send(new TextEncoder().encode(JSON.stringify(facts)));
  socket.close();
  signalDaemonReady(readyFd);
}
