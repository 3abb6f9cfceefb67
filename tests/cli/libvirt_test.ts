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
  makeTempDir,
  processAlive,
  runTpasst,
  stillOpen,
  waitFor,
} from "./cli_helpers.ts";

function libvirtArgv(socket: string, logFile: string, vhostUser: boolean): string[] {
  return [
    "--one-off",
    "--socket",
    socket,
    "--mac-addr",
    "52:54:00:3e:6f:01",
    "--mtu",
    "1500",
    "--interface",
    "nonexistent0",
    "--log-file",
    logFile,
    "--address",
    "192.168.122.50",
    "--netmask",
    "24",
    "--tcp-ports",
    "127.0.0.1/40022:22",
    "--tcp-ports",
    "40080-40081:80-81",
    "--udp-ports",
    "127.0.0.1/40053:53",
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
        const result = await runTpasst(libvirtArgv(socket, logFile, vhostUser));
        assertEquals(result.code, 0, result.stderr);
        assertEquals([result.stdout, result.stderr], ["", ""]);
        // libvirt connects as soon as we exited: the socket must already listen.
        assertTrue(exists(socket), "socket file missing after exit 0");
        const [pid] = findProcesses(socket);
        assertTrue(pid !== undefined && processAlive(pid), "no daemon process serves the socket");
        const frontend = UnixStream.connect(socket);
        try {
          assertTrue(stillOpen(frontend), "the daemon refused the first frontend");
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
        assertMatch(log, /info: Exiting after the one-off frontend/);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
}
