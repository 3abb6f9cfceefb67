/**
 * The argv contract of QEMU's `-netdev passt`: QEMU runs the backend with one end of
 * a connected socketpair as fd 3, waits for exit status 0, reads the daemon's pid
 * from the pid file and talks on its end (here: one real exchange in each protocol).
 */
import type { UnixStream } from "../../ffi/unix_stream.ts";
import { assertEquals, assertTrue } from "../../src/test_support/assert.ts";
import {
  killProcesses,
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
    "lo",
    "--outbound",
    "192.0.2.10",
    "--outbound-if4",
    "lo",
    "--outbound-if6",
    "lo",
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
          // --quiet: every option is honoured, nothing to warn about
          assertEquals(
            { code: result.code, stdout: result.stdout, stderr: result.stderr },
            { code: 0, stdout: "", stderr: "" },
          );
          const pid = readPidFile(pidFile);
          assertTrue(processAlive(pid), `daemon pid ${pid} is not running`);
          assertTrue(processCommandLine(pid).includes("--fd 3"), processCommandLine(pid));
          // The daemon serves the other end in the requested protocol.
          if (vhostUser) {
            await assertVhostUserAnswers(peer);
          } else {
            await assertStreamAnswersArp(peer);
          }
          assertTrue(stillOpen(peer), "the daemon closed fd 3 after a valid exchange");
          Deno.kill(pid, "SIGTERM");
          await waitFor("the daemon to exit after SIGTERM", () => !processAlive(pid));
          await waitForEof(peer, "the daemon's end of fd 3 to close");
          assertTrue(!(await exists(pidFile)), "pid file left behind");
        } finally {
          peer.close();
        }
      } finally {
        killProcesses(dir); // a daemon left behind by a failed assertion
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
}

Deno.test(
  "bin/tpasst under QEMU's argv with param=--debug,--mtu=9000 (after QEMU's --quiet and --mtu) " +
    "starts and logs at debug level",
  async () => {
    const dir = await makeTempDir();
    try {
      const pidFile = `${dir}/passt.pid`;
      // QEMU puts the user's param= options after its own: the last ones win, as in passt.
      const args = [...qemuArgv(pidFile, true), "--debug", "--mtu", "9000"];
      const { result, peer } = await runTpasstWithFd3(dir, args);
      try {
        assertEquals([result.code, result.stdout], [0, ""], result.stderr);
        // Debug mode: time-stamped lines, the plan and the daemon's readiness included.
        assertTrue(/^[0-9]+\.[0-9]{4}: MTU: 9000$/m.test(result.stderr), result.stderr);
        assertTrue(/^[0-9]+\.[0-9]{4}: Ready \(pid [0-9]+\)$/m.test(result.stderr), result.stderr);
        const pid = readPidFile(pidFile);
        Deno.kill(pid, "SIGTERM");
        await waitFor("the daemon to exit after SIGTERM", () => !processAlive(pid));
      } finally {
        peer.close();
      }
    } finally {
      killProcesses(dir);
      await Deno.remove(dir, { recursive: true });
    }
  },
);

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
    killProcesses(dir);
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
    killProcesses(dir);
    await Deno.remove(dir, { recursive: true });
  }
});

/** Reads exactly `length` bytes from `stream` (nonblocking), failing after the wait limit. */
async function readExactly(stream: UnixStream, length: number, what: string): Promise<Uint8Array> {
  stream.setNonBlocking(true);
  const out = new Uint8Array(length);
  let got = 0;
  await waitFor(what, () => {
    const n = stream.recv(out.subarray(got));
    if (n === 0) throw new Error(`the daemon closed the connection while waiting for ${what}`);
    if (n > 0) got += n;
    return got === length;
  });
  return out;
}

/** vhost-user: GET_FEATURES (request 1, version 1) must get a reply carrying 8 bytes. */
async function assertVhostUserAnswers(peer: UnixStream): Promise<void> {
  const request = new Uint8Array(12);
  const view = new DataView(request.buffer);
  view.setUint32(0, 1, true); // VHOST_USER_GET_FEATURES
  view.setUint32(4, 0x1, true); // version 1
  view.setUint32(8, 0, true); // no payload
  assertEquals(peer.send(request), 12);
  const reply = new DataView((await readExactly(peer, 20, "the GET_FEATURES reply")).buffer);
  assertEquals(
    [reply.getUint32(0, true), reply.getUint32(4, true), reply.getUint32(8, true)],
    [1, 0x5, 8],
  );
  const VIRTIO_F_VERSION_1 = 32;
  assertTrue((reply.getUint32(16, true) & (1 << (VIRTIO_F_VERSION_1 - 32))) !== 0);
}

/**
 * Stream protocol: a length-prefixed ARP request from the guest (10.0.2.15 asking
 * for the gateway 10.0.2.2) must get a length-prefixed ARP reply.
 */
async function assertStreamAnswersArp(peer: UnixStream): Promise<void> {
  const guestMac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
  const arp = [
    ...[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ...guestMac,
    0x08,
    0x06, // EtherType ARP
    0x00,
    0x01,
    0x08,
    0x00,
    6,
    4,
    0x00,
    0x01, // Ethernet/IPv4, request
    ...guestMac,
    10,
    0,
    2,
    15,
    0,
    0,
    0,
    0,
    0,
    0,
    10,
    0,
    2,
    2,
  ];
  const message = new Uint8Array(4 + arp.length);
  new DataView(message.buffer).setUint32(0, arp.length, false);
  message.set(arp, 4);
  assertEquals(peer.send(message), message.length);
  const length = new DataView((await readExactly(peer, 4, "a frame length")).buffer)
    .getUint32(0, false);
  assertTrue(length >= 42 && length <= 65535, `frame length ${length}`);
  const frame = await readExactly(peer, length, "the ARP reply");
  assertEquals([...frame.subarray(0, 6)], guestMac); // to the guest
  assertEquals([frame[12], frame[13], frame[20], frame[21]], [0x08, 0x06, 0x00, 0x02]);
  assertEquals([...frame.subarray(28, 32)], [10, 0, 2, 2]); // sender: the gateway
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}
