/**
 * The argv contract of libvirt's passt backend: libvirt runs the binary with
 * `--one-off --socket PATH …`, expects exit 0 once the socket listens, lets QEMU
 * connect, and expects the daemon to exit (removing its socket) when QEMU goes away.
 */
import { assertEquals, assertMatch, assertTrue } from "../../src/test_support/assert.ts";
import { UnixStream } from "../../ffi/unix_stream.ts";
import {
  exists,
  findProcesses,
  killProcesses,
  makeTempDir,
  processAlive,
  runTpasst,
  stillOpen,
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
