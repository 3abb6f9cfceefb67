/**
 * The daemon's lifecycle as a process: signals, socket and pid files, socket path
 * selection, one frontend at a time, failed starts, and descriptor leaks.
 */
import { assertEquals, assertMatch, assertTrue } from "../support/assert.ts";
import { UnixListener, unixSocketInUse } from "../../ffi/unix_listener.ts";
import { UnixStream } from "../../ffi/unix_stream.ts";
import {
  exists,
  ForegroundTpasst,
  killProcesses,
  makeTempDir,
  processAlive,
  processFdCount,
  readPidFile,
  runTpasst,
  stillOpen,
  waitFor,
  waitForEof,
} from "./cli_helpers.ts";

async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await makeTempDir();
  try {
    await body(dir);
  } finally {
    killProcesses(dir); // a daemon left behind by a failed assertion
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("bin/tpasst daemon removes its socket and pid file on SIGTERM", async () => {
  await withTempDir(async (dir) => {
    const socket = `${dir}/s.sock`;
    const pidFile = `${dir}/d.pid`;
    const result = await runTpasst(["-q", "-s", socket, "-P", pidFile]);
    assertEquals([result.code, result.stderr], [0, ""]);
    const pid = readPidFile(pidFile);
    assertTrue(processAlive(pid));
    // The frontend connects before the probe: the probe is a connection too, and a
    // frontend that came while the daemon still served it would be refused as a second
    // one (CI: the probe's hang-up and this connect landed in one batch of events).
    const frontend = UnixStream.connect(socket);
    assertTrue(unixSocketInUse(socket), "the socket does not accept connections");
    assertTrue(stillOpen(frontend));
    Deno.kill(pid, "SIGTERM");
    await waitFor("the daemon to exit", () => !processAlive(pid));
    await waitForEof(frontend, "the session to be closed");
    frontend.close();
    assertTrue(!exists(socket), "socket file left behind");
    assertTrue(!exists(pidFile), "pid file left behind");
  });
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`bin/tpasst -f exits 0 on ${signal} with its files removed`, async () => {
    await withTempDir(async (dir) => {
      const socket = `${dir}/s.sock`;
      const pidFile = `${dir}/d.pid`;
      const daemon = new ForegroundTpasst(["-s", socket, "-P", pidFile]);
      await daemon.waitForStderr(/listening at/, "the daemon to listen");
      assertEquals(readPidFile(pidFile), daemon.process.pid);
      const frontend = UnixStream.connect(socket);
      await daemon.waitForStderr(/connected/, "the frontend to be accepted");
      daemon.process.kill(signal);
      const { code, stderr } = await daemon.exit();
      assertEquals(code, 0, stderr);
      assertMatch(stderr, new RegExp(`${signal} received: shutting down`));
      await waitForEof(frontend, "the session to be closed");
      frontend.close();
      assertTrue(!exists(socket) && !exists(pidFile), "files left behind");
    });
  });
}

Deno.test("bin/tpasst prints the QEMU options for each mode", async () => {
  await withTempDir(async (dir) => {
    for (
      const [mode, expected] of [
        [
          [],
          `-device virtio-net-pci,netdev=s -netdev stream,id=s,server=off,addr.type=unix,` +
          `addr.path=${dir}/s.sock`,
        ],
        [
          ["--vhost-user"],
          `-object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem ` +
          `-chardev socket,id=chr0,path=${dir}/s.sock -netdev vhost-user,id=netdev0,` +
          `chardev=chr0 -device virtio-net-pci,netdev=netdev0`,
        ],
      ] as const
    ) {
      const daemon = new ForegroundTpasst([...mode, "-s", `${dir}/s.sock`]);
      await daemon.waitForStderr(/addr\.path|chardev=chr0 /, "the QEMU options");
      daemon.process.kill("SIGTERM");
      const { stderr } = await daemon.exit();
      assertTrue(stderr.split("\n").includes(`    ${expected}`), stderr);
    }
  });
});

Deno.test("bin/tpasst picks the first default socket path not in use", async () => {
  // Occupy the first default path nobody listens on, then expect a later one.
  const taken: UnixListener[] = [];
  let occupied = "";
  try {
    for (let n = 1; n <= 64 && occupied === ""; n++) {
      const path = `/tmp/tpasst_${n}.socket`;
      if (unixSocketInUse(path) || exists(path)) continue;
      taken.push(UnixListener.listen(path));
      occupied = path;
    }
    assertTrue(occupied !== "", "no default socket path was free for the test");
    const daemon = new ForegroundTpasst([]);
    const [, chosen] = await daemon.waitForStderr(
      /listening at (\/tmp\/tpasst_(\d+)\.socket)/,
      "the chosen path",
    );
    daemon.process.kill("SIGTERM");
    const { code } = await daemon.exit();
    assertEquals(code, 0);
    const occupiedN = Number(/_(\d+)\./.exec(occupied)![1]);
    const chosenN = Number(/_(\d+)\./.exec(chosen)![1]);
    assertTrue(chosenN > occupiedN, `chose ${chosen} although ${occupied} is in use`);
    assertTrue(!exists(chosen), "socket file left behind");
    assertTrue(exists(occupied), "the daemon removed a socket that is in use");
  } finally {
    for (const listener of taken) listener.close();
    if (occupied !== "") await Deno.remove(occupied).catch(() => {});
  }
});

Deno.test("bin/tpasst refuses an explicit socket in use and reuses a stale one", async () => {
  await withTempDir(async (dir) => {
    const socket = `${dir}/s.sock`;
    const live = UnixListener.listen(socket);
    try {
      const busy = await runTpasst(["-f", "-s", socket]);
      assertEquals(busy.code, 1);
      assertEquals(busy.stderr, `tpasst: Socket path ${socket} is in use by another process\n`);
    } finally {
      live.close(); // leaves a stale socket file behind
    }
    assertTrue(exists(socket) && !unixSocketInUse(socket));
    const daemon = new ForegroundTpasst(["-q", "-s", socket]);
    await waitFor("the daemon to take over the stale socket", () => unixSocketInUse(socket));
    daemon.process.kill("SIGTERM");
    assertEquals((await daemon.exit()).code, 0);
  });
});

Deno.test("bin/tpasst reports a failed daemon start with exit 1 and cleans up", async () => {
  await withTempDir(async (dir) => {
    const socket = `${dir}/s.sock`;
    const result = await runTpasst(["-s", socket, "-P", `${dir}/missing/d.pid`]);
    assertEquals(result.code, 1);
    assertMatch(
      result.stderr,
      /^tpasst: --pid \S*missing\/d\.pid: cannot write the pid file: no such file or directory \(ENOENT\)$/m,
    );
    assertTrue(!exists(socket), "socket file left behind");
  });
});

Deno.test("bin/tpasst names the option of a log or capture file it cannot open, exit 1", async () => {
  await withTempDir(async (dir) => {
    for (
      const [args, expected] of [
        [
          ["-l", `${dir}/missing/t.log`],
          `--log-file ${dir}/missing/t.log: cannot open the log file`,
        ],
        [
          ["-p", `${dir}/missing/c.pcap`],
          `--pcap ${dir}/missing/c.pcap: cannot open the capture file`,
        ],
      ]
    ) {
      const result = await runTpasst(["-s", `${dir}/s.sock`, ...args]);
      assertEquals(result.code, 1, result.stderr);
      assertTrue(
        result.stderr.includes(`tpasst: ${expected}: no such file or directory (ENOENT)\n`),
        result.stderr,
      );
      assertTrue(!exists(`${dir}/s.sock`), "socket file left behind");
    }
  });
});

Deno.test("bin/tpasst -f -d time-stamps its standard error lines as passt does", async () => {
  await withTempDir(async (dir) => {
    const daemon = new ForegroundTpasst(["-d", "-s", `${dir}/s.sock`]);
    await daemon.waitForStderr(/listening at/, "the daemon to listen");
    daemon.process.kill("SIGTERM");
    const { code, stderr } = await daemon.exit();
    assertEquals(code, 0);
    const lines = stderr.trimEnd().split("\n");
    const bad = lines.filter((line) => !/^[0-9]+\.[0-9]{4}: /.test(line));
    assertEquals(bad, []);
    assertTrue(lines.some((line) => /^[0-9]+\.[0-9]{4}: Shut down$/.test(line)), stderr);
  });
});

Deno.test("bin/tpasst serves one frontend at a time and the next after a disconnect", async () => {
  await withTempDir(async (dir) => {
    const socket = `${dir}/s.sock`;
    const daemon = new ForegroundTpasst(["-s", socket]);
    await daemon.waitForStderr(/listening at/, "the daemon to listen");
    const first = UnixStream.connect(socket);
    const second = UnixStream.connect(socket);
    await waitForEof(second, "the second frontend to be refused");
    assertTrue(stillOpen(first), "the first frontend lost its connection");
    await daemon.waitForStderr(/Refusing a second frontend connection/, "the refusal log line");
    second.close();
    first.close();
    await daemon.waitForStderr(/waiting for the next connection/, "the first session to end");
    const third = UnixStream.connect(socket);
    const fourth = UnixStream.connect(socket);
    await waitForEof(fourth, "the fourth frontend to be refused");
    assertTrue(stillOpen(third), "the third frontend was not served");
    third.close();
    fourth.close();
    daemon.process.kill("SIGTERM");
    assertEquals((await daemon.exit()).code, 0);
  });
});

Deno.test("bin/tpasst keeps its descriptor count flat over many connections", async () => {
  await withTempDir(async (dir) => {
    const socket = `${dir}/s.sock`;
    const daemon = new ForegroundTpasst(["-s", socket]);
    await daemon.waitForStderr(/listening at/, "the daemon to listen");
    const pid = daemon.process.pid;
    // Connections ended: served ones that went, and ones refused as a second frontend.
    const ended = () =>
      daemon.stderr.split("waiting for the next connection").length - 1 +
      daemon.stderr.split("Refusing a second frontend").length - 1;
    const cycle = async (round: number) => {
      const frontend = UnixStream.connect(socket);
      const extra = UnixStream.connect(socket);
      frontend.send(new Uint8Array(1000)); // not a vhost-user message: its session ends
      // The extra connection waits for that frontend to go and is served then (or is
      // refused, if it took longer than NEXT_FRONTEND_WAIT_MS); it has hung up by then.
      extra.close();
      frontend.close();
      await waitFor(`round ${round}'s two connections to end`, () => ended() >= 2 * round);
    };
    await cycle(1);
    const before = processFdCount(pid);
    for (let round = 2; round <= 30; round++) await cycle(round);
    assertEquals(processFdCount(pid), before);
    daemon.process.kill("SIGTERM");
    assertEquals((await daemon.exit()).code, 0);
  });
});

Deno.test("bin/tpasst -l logs only to the file and keeps it within --log-size", async () => {
  await withTempDir(async (dir) => {
    const socket = `${dir}/s.sock`;
    const logFile = `${dir}/t.log`;
    const daemon = new ForegroundTpasst([
      ...["-s", socket, "-l", logFile, "--log-size", "4096", "--runas", "nobody"],
    ]);
    await waitFor("the daemon to listen", () => unixSocketInUse(socket));
    const gone = () => (Deno.readTextFileSync(logFile).match(/Frontend gone/g) ?? []).length;
    for (let round = 0; round < 40; round++) {
      const before = Deno.readTextFileSync(logFile).length;
      UnixStream.connect(socket).close();
      await waitFor(
        "the session to end",
        () => gone() > 0 && Deno.readTextFileSync(logFile).length !== before,
      );
      const size = Deno.statSync(logFile).size;
      assertTrue(size <= 4096, `log file grew to ${size} bytes`);
    }
    daemon.process.kill("SIGTERM");
    const { code, stderr } = await daemon.exit();
    assertEquals([code, stderr], [0, ""]);
    const log = Deno.readTextFileSync(logFile);
    assertTrue(!log.includes("--runas nobody ignored"), "the oldest lines were not dropped");
    assertMatch(
      log,
      /^tpasst [0-9.]+: \S+main\.ts \([0-9]+\)( - log truncated at [0-9]+\.[0-9]{4})?\n/,
    );
    assertMatch(log, /\n[0-9]+\.[0-9]{4}: info: {4}Shut down\n$/);
  });
});

Deno.test("bin/tpasst explains that --runas is ignored", async () => {
  await withTempDir(async (dir) => {
    const daemon = new ForegroundTpasst(["-s", `${dir}/s.sock`, "--runas", "nobody"]);
    await daemon.waitForStderr(/listening at/, "the daemon to listen");
    daemon.process.kill("SIGTERM");
    const { stderr } = await daemon.exit();
    assertMatch(stderr, /--runas nobody ignored: tpasst never changes user/);
  });
});
