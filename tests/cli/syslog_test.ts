/**
 * In the background without `-l`, tpasst logs to the system logger, as passt does.
 * The daemon runs in a private mount namespace whose /dev is a fresh tmpfs with the
 * usual device nodes bound in and /dev/log bound to a datagram socket of this test,
 * which plays the system logger. Needs root (mount namespaces); skipped otherwise.
 */
import { UnixDatagramSocket } from "../../ffi/unix_datagram.ts";
import { assertEquals, assertTrue } from "../support/assert.ts";
import {
  findProcesses,
  killProcesses,
  makeTempDir,
  processAlive,
  TPASST,
  waitFor,
} from "./cli_helpers.ts";
import { commandSucceeds } from "../support/command_succeeds.ts";

/** Replaces /dev in a new mount namespace (run by `unshare --mount`), then execs "$@". */
const NAMESPACE_SCRIPT = `
set -e
d="$1"; shift
mkdir -p "$d/hostdev"
mount --make-rprivate /
mount --rbind /dev "$d/hostdev"
mount -t tmpfs tmpfs /dev
for n in null zero full random urandom; do touch /dev/$n; mount --bind "$d/hostdev/$n" /dev/$n; done
ln -s /proc/self/fd /dev/fd
touch /dev/log
mount --bind "$d/log" /dev/log
exec "$@"
`;

function canUseMountNamespaces(): boolean {
  return Deno.uid() === 0 && commandSucceeds("unshare", ["--mount", "true"]);
}

Deno.test({
  name: "bin/tpasst in the background without -l logs to /dev/log as tpasst[PID], facility daemon",
  ignore: !canUseMountNamespaces(),
  fn: async () => {
    const dir = await makeTempDir();
    const logger = UnixDatagramSocket.bind(`${dir}/log`);
    const received: string[] = [];
    const drain = () => {
      const buffer = new Uint8Array(8192);
      for (let n = logger.receive(buffer); n >= 0; n = logger.receive(buffer)) {
        received.push(new TextDecoder().decode(buffer.subarray(0, n)));
      }
    };
    try {
      Deno.writeTextFileSync(`${dir}/ns.sh`, NAMESPACE_SCRIPT);
      const socket = `${dir}/s.sock`;
      const child = new Deno.Command("unshare", {
        args: ["--mount", "sh", `${dir}/ns.sh`, dir, TPASST, "-s", socket],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      // The system logger reads while the daemon starts (its queue holds 10 lines).
      const polling = setInterval(drain, 5);
      const output = await child.output();
      assertEquals(output.code, 0, new TextDecoder().decode(output.stderr));
      const [pid] = findProcesses(socket);
      assertTrue(pid !== undefined, "no daemon");
      Deno.kill(pid, "SIGTERM");
      await waitFor("the daemon to exit", () => !processAlive(pid));
      await waitFor("the last line", () => {
        drain();
        return received.some((l) => l.endsWith(": Shut down"));
      });
      clearInterval(polling);
      const line = (text: string) =>
        new RegExp(
          `^<30>[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} tpasst\\[${pid}\\]: ${text}$`,
        );
      // Start-up lines (also shown by the launching command) and those after it.
      assertTrue(
        received.some((l) => line(`Stream protocol socket listening at ${socket}`).test(l)),
        received.join("\n"),
      );
      assertTrue(
        received.some((l) => line("SIGTERM received: shutting down").test(l)),
        received.join("\n"),
      );
      assertTrue(received.some((l) => line("Shut down").test(l)));
    } finally {
      logger.close();
      killProcesses(dir);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
