/**
 * The argv contract of QEMU's `-netdev passt`: QEMU runs the backend with one end of
 * a connected socketpair as fd 3, waits for exit status 0, reads the daemon's pid
 * from the pid file and talks on its end.
 */
import { assertEquals, assertTrue } from "../../src/test_support/assert.ts";
import {
  makeTempDir,
  processAlive,
  processCommandLine,
  readPidFile,
  runTpasstWithFd3,
  stillOpen,
  waitFor,
  waitForEof,
} from "./cli_helpers.ts";

/** Every option QEMU may pass, in QEMU's order (net/passt.c), with plausible values. */
function qemuArgv(pidFile: string, vhostUser: boolean): string[] {
  return [
    ...(vhostUser ? ["--vhost-user"] : []),
    "--quiet",
    "--mtu",
    "1500",
    "--address",
    "10.0.2.15",
    "--netmask",
    "24",
    "--mac-addr",
    "9a:55:9a:55:9a:55",
    "--gateway",
    "10.0.2.2",
    "--interface",
    "eth0",
    "--outbound",
    "192.0.2.10",
    "--outbound-if4",
    "eth0",
    "--outbound-if6",
    "eth0",
    "--dns",
    "10.0.2.3",
    "--fqdn",
    "guest.example",
    "--no-dhcp-dns",
    "--no-dhcp-search",
    "--map-host-loopback",
    "10.0.2.2",
    "--map-guest-addr",
    "10.0.2.4",
    "--dns-forward",
    "10.0.2.3",
    "--dns-host",
    "127.0.0.1",
    "--no-tcp",
    "--no-udp",
    "--no-icmp",
    "--no-dhcp",
    "--no-ndp",
    "--no-dhcpv6",
    "--no-ra",
    "--freebind",
    "--ipv4-only",
    "--search",
    "example.com example.org",
    "--pid",
    pidFile,
    "--fd",
    "3",
  ];
}

for (const vhostUser of [false, true]) {
  Deno.test(
    `bin/tpasst under QEMU's -netdev passt argv${vhostUser ? " with --vhost-user" : ""} ` +
      "daemonizes, writes its pid and serves fd 3 until killed",
    async () => {
      const dir = await makeTempDir();
      try {
        const pidFile = `${dir}/passt.pid`;
        const { result, peer } = await runTpasstWithFd3(dir, qemuArgv(pidFile, vhostUser));
        try {
          assertEquals(result, { code: 0, stdout: "", stderr: "" });
          const pid = readPidFile(pidFile);
          assertTrue(processAlive(pid), `daemon pid ${pid} is not running`);
          assertTrue(processCommandLine(pid).includes("--fd 3"), processCommandLine(pid));
          // The daemon holds the other end: writes are accepted and nothing closes it.
          assertEquals(peer.send(new Uint8Array(64)), 64);
          assertTrue(stillOpen(peer), "the daemon closed fd 3 early");
          Deno.kill(pid, "SIGTERM");
          await waitFor("the daemon to exit after SIGTERM", () => !processAlive(pid));
          await waitForEof(peer, "the daemon's end of fd 3 to close");
          assertTrue(!(await exists(pidFile)), "pid file left behind");
        } finally {
          peer.close();
        }
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
}

Deno.test("bin/tpasst with --fd exits by itself when QEMU closes its end (implied --one-off)", async () => {
  const dir = await makeTempDir();
  try {
    const pidFile = `${dir}/passt.pid`;
    const { result, peer } = await runTpasstWithFd3(dir, [
      "--quiet",
      "--pid",
      pidFile,
      "--fd",
      "3",
    ]);
    assertEquals(result.code, 0);
    const pid = readPidFile(pidFile);
    assertTrue(processAlive(pid));
    peer.close();
    await waitFor("the daemon to exit once fd 3 is closed", () => !processAlive(pid));
    assertTrue(!(await exists(pidFile)), "pid file left behind");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bin/tpasst with --fd naming a closed descriptor fails with exit 1", async () => {
  const dir = await makeTempDir();
  try {
    const { result, peer } = await runTpasstWithFd3(dir, ["--quiet", "--fd", "200"]);
    peer.close();
    assertEquals(result.code, 1);
    assertEquals(result.stderr.trim().split("\n").length, 1, result.stderr);
    assertTrue(result.stderr.includes("--fd 200 is not a connected socket (EBADF)"), result.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}
