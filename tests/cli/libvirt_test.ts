/**
 * The argv contract of libvirt's passt backend: libvirt runs the binary with
 * `--one-off --socket PATH …`, expects exit 0 once the socket listens, lets QEMU
 * connect, and expects the daemon to exit (removing its socket) when QEMU goes away.
 */
import { assertEquals, assertMatch, assertTrue } from "../support/assert.ts";
import { UnixStream } from "../../ffi/unix_stream.ts";
import {
  exists,
  findProcesses,
  killProcesses,
  makeTempDir,
  processAlive,
  runTpasst,
  stillOpen,
  TPASST,
  waitFor,
} from "./cli_helpers.ts";

/** A random base for forwarded ports, below the usual ephemeral range (32768-60999). */
function randomBasePort(): number {
  return 20000 + Math.floor(Math.random() * 12000);
}

function libvirtArgv(
  socket: string,
  logFile: string,
  vhostUser: boolean,
  basePort: number,
): string[] {
  return [
    "--one-off",
    "--socket",
    socket,
    "--mac-addr",
    "52:54:00:3e:6f:01",
    "--mtu",
    "1500",
    "--interface",
    "lo",
    "--log-file",
    logFile,
    "--address",
    "192.168.122.50",
    "--netmask",
    "24",
    "--tcp-ports",
    `127.0.0.1/${basePort}:22`,
    "--tcp-ports",
    `127.0.0.1/${basePort + 1}-${basePort + 2}:80-81`,
    ...(vhostUser ? ["--vhost-user"] : []),
  ];
}

for (const vhostUser of [false, true]) {
  Deno.test(
    `bin/tpasst under libvirt's argv${vhostUser ? " with --vhost-user" : ""} listens, ` +
      "serves one frontend and exits when it disconnects",
    async () => {
      const dir = await makeTempDir();
      try {
        const socket = `${dir}/net0.socket`;
        const logFile = `${dir}/passt.log`;
        const basePort = randomBasePort();
        const result = await runTpasst(libvirtArgv(socket, logFile, vhostUser, basePort));
        assertEquals(result.code, 0, result.stderr);
        assertEquals([result.stdout, result.stderr], ["", ""]);
        // libvirt connects as soon as we exited: the socket must already listen.
        assertTrue(exists(socket), "socket file missing after exit 0");
        const [pid] = findProcesses(socket);
        assertTrue(pid !== undefined && processAlive(pid), "no daemon process serves the socket");
        const frontend = UnixStream.connect(socket);
        try {
          assertTrue(stillOpen(frontend), "the daemon refused the first frontend");
          // -t 127.0.0.1/PORT:22 listens on the host while the daemon runs.
          const forwarded = await Deno.connect({ hostname: "127.0.0.1", port: basePort });
          forwarded.close();
          await waitFor(
            "the log to record the connection",
            () => Deno.readTextFileSync(logFile).includes("connected"),
          );
        } finally {
          frontend.close();
        }
        await waitFor("the one-off daemon to exit", () => !processAlive(pid));
        assertTrue(!exists(socket), "socket file left behind");
        const log = Deno.readTextFileSync(logFile);
        assertMatch(log, /[0-9]+\.[0-9]{4}: info: {4}Exiting after the one-off frontend/);
        // The forwarded ports were listening while the daemon ran, and are free now.
        assertTrue(/Forwarding 3 TCP and 0 UDP port\(s\)/.test(log), log);
      } finally {
        killProcesses(dir);
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
}

Deno.test("bin/tpasst under libvirt's argv exits 1 naming an interface the host lacks", async () => {
  const dir = await makeTempDir();
  try {
    const args = libvirtArgv(`${dir}/net0.socket`, `${dir}/passt.log`, false, randomBasePort());
    args[args.indexOf("lo")] = "tpnosuchif0";
    const result = await runTpasst(args);
    assertEquals(result.code, 1, result.stderr);
    assertTrue(
      result.stderr.includes(
        "tpasst: --interface tpnosuchif0: no such network interface on this host",
      ),
      result.stderr,
    );
    assertTrue(!exists(`${dir}/net0.socket`), "socket file left behind");
  } finally {
    killProcesses(dir);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bin/tpasst under libvirt's argv exits 1 when a forwarded port cannot be listened on", async () => {
  const dir = await makeTempDir();
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (busy.addr as Deno.NetAddr).port;
  try {
    const result = await runTpasst([
      ...["--one-off", "--socket", `${dir}/net0.socket`, "--log-file", `${dir}/passt.log`],
      ...["--tcp-ports", `127.0.0.1/${port}:22`],
    ]);
    assertEquals(result.code, 1, result.stderr);
    assertTrue(
      result.stderr.includes(
        `tpasst: -t 127.0.0.1/${port}:22: cannot listen on 127.0.0.1 port ${port}: in use (EADDRINUSE)`,
      ),
      result.stderr,
    );
    assertTrue(!exists(`${dir}/net0.socket`), "socket file left behind");
  } finally {
    busy.close();
    killProcesses(dir);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bin/tpasst with -t all binds as many ports as the open-file limit allows and names the rest", async () => {
  const dir = await makeTempDir();
  try {
    const socket = `${dir}/net0.socket`;
    const logFile = `${dir}/passt.log`;
    // A low limit keeps the test quick; on these machines the hard limit (20,000) is
    // also below the 37,000-odd ports of "all".
    const output = await new Deno.Command("prlimit", {
      args: [
        "--nofile=2048:2048",
        TPASST,
        ...["--one-off", "--socket", socket, "--log-file", logFile, "-4"],
        ...["--tcp-ports", "127.0.0.1/all", "--no-udp"],
      ],
      stdin: "null",
    }).output();
    const stderr = new TextDecoder().decode(output.stderr);
    assertEquals(output.code, 0, stderr);
    const [pid] = findProcesses(socket);
    assertTrue(pid !== undefined, "no daemon");
    const log = Deno.readTextFileSync(logFile);
    const listening = /-t 127\.0\.0\.1\/all: listening on ([0-9]+) of ([0-9]+) port\(s\)/.exec(log);
    assertTrue(listening !== null, log);
    const bound = Number(listening[1]);
    assertTrue(bound > 500 && bound < 1024, `bound ${bound}`);
    assertMatch(
      log,
      /WARNING: -t 127\.0\.0\.1\/all: [0-9]+ port\(s\) not bound: the open file limit \(2048\) leaves no descriptor for them \(1024 are kept for connections\): [0-9]+-32767, 61000-65535/,
    );
    // The daemon still serves: a frontend gets through.
    const frontend = UnixStream.connect(socket);
    assertTrue(stillOpen(frontend), "the daemon refused the frontend");
    frontend.close();
    await waitFor("the one-off daemon to exit", () => !processAlive(pid));
  } finally {
    killProcesses(dir);
    await Deno.remove(dir, { recursive: true });
  }
});
