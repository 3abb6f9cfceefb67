/**
 * The argv contract of QEMU's `-netdev passt` (QEMU ≥ 10.1, net/passt.c): QEMU runs the
 * backend with the argv qemu_passt_argv.ts rebuilds and one end of a connected
 * socketpair as fd 3, waits for exit status 0, reads the daemon's pid from the pid file
 * it created, talks on its end (here: one real exchange in each protocol) and ends the
 * daemon with SIGTERM.
 */
import type { UnixStream } from "../../ffi/unix_stream.ts";
import { assertEquals, assertTrue } from "../support/assert.ts";
import {
  killProcesses,
  makeTempDir,
  processAlive,
  processCommandLine,
  readPidFile,
  type RunResult,
  runTpasstWithFd3,
  stillOpen,
  waitFor,
  waitForEof,
} from "./cli_helpers.ts";
import { qemuPasstArgv, type QemuPasstOptions } from "./qemu_passt_argv.ts";

/** A TCP port on 127.0.0.1 nothing listens on now. */
function freeTcpPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

/** Every `-netdev passt` option but ports, lists and params, with plausible values. */
const EVERY_OPTION: QemuPasstOptions = {
  mtu: 1500,
  address: "10.0.2.15",
  netmask: "24",
  mac: "9a:55:9a:55:9a:55",
  gateway: "10.0.2.2",
  interface: "lo",
  outbound: "127.0.0.1",
  outboundIf4: "lo",
  outboundIf6: "lo",
  dns: "10.0.2.3",
  fqdn: "guest.example",
  dhcpDns: false,
  dhcpSearch: false,
  mapHostLoopback: "10.0.2.2",
  mapGuestAddr: "10.0.2.4",
  dnsForward: "10.0.2.3",
  dnsHost: "127.0.0.1",
  tcp: false,
  udp: false,
  icmp: false,
  dhcp: false,
  ndp: false,
  dhcpv6: false,
  ra: false,
  freebind: true,
  ipv6: false,
  search: ["example.com", "example.org"],
};

Deno.test("qemuPasstArgv() builds QEMU 10.1's argv (net/passt.c) for the defaults, vhost-user and params", () => {
  assertEquals(qemuPasstArgv({}, "/tmp/passt-AbC123.pid"), [
    "--quiet",
    "--pid",
    "/tmp/passt-AbC123.pid",
    "--fd",
    "3",
  ]);
  assertEquals(
    qemuPasstArgv(
      {
        vhostUser: true,
        mtu: 9000,
        ipv4: false,
        tcpPorts: ["127.0.0.1/5000:80", "5001:81"],
        udpPorts: ["127.0.0.1/5353"],
        param: ["--debug", "--stats", "10"],
      },
      "F",
    ),
    [
      "--vhost-user",
      "--quiet",
      "--mtu",
      "9000",
      "--ipv6-only",
      "--tcp-ports",
      "127.0.0.1/5000:80,5001:81",
      "--udp-ports",
      "127.0.0.1/5353",
      "--debug",
      "--stats",
      "10",
      "--pid",
      "F",
      "--fd",
      "3",
    ],
  );
  assertEquals(qemuPasstArgv({ quiet: false }, "F"), ["--pid", "F", "--fd", "3"]);
});

/**
 * Runs bin/tpasst as QEMU 10.1 does for `options` (argv, an empty pid file QEMU made
 * beforehand, a connected socket as fd 3), then `check` with the daemon's pid and our
 * end, and stops it with SIGTERM as QEMU's cleanup does.
 */
async function underQemu(
  options: QemuPasstOptions,
  check: (run: { result: RunResult; peer: UnixStream; pid: number }) => void | Promise<void>,
): Promise<void> {
  const dir = await makeTempDir();
  try {
    // g_file_open_tmp("passt-XXXXXX.pid"): the file exists, empty, before passt runs.
    const pidFile = await Deno.makeTempFile({ dir, prefix: "passt-", suffix: ".pid" });
    const { result, peer } = await runTpasstWithFd3(dir, qemuPasstArgv(options, pidFile));
    try {
      assertEquals([result.code, result.stdout], [0, ""], result.stderr);
      const pid = readPidFile(pidFile);
      assertTrue(processAlive(pid), `daemon pid ${pid} is not running`);
      assertTrue(processCommandLine(pid).includes("--fd 3"), processCommandLine(pid));
      await check({ result, peer, pid });
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
}

for (const vhostUser of [false, true]) {
  Deno.test(
    `bin/tpasst under QEMU's default -netdev passt argv${vhostUser ? " with vhost-user=on" : ""} ` +
      "daemonizes silently, writes its pid and serves fd 3 until killed",
    async () => {
      await underQemu({ vhostUser }, async ({ result, peer }) => {
        assertEquals(result.stderr, "", "--quiet: nothing to say");
        if (vhostUser) await assertVhostUserAnswers(peer);
        else await assertStreamAnswersArp(peer);
        assertTrue(stillOpen(peer), "the daemon closed fd 3 after a valid exchange");
      });
    },
  );
}

Deno.test(
  "bin/tpasst under QEMU's argv with every -netdev passt option starts silently (all honoured)",
  async () => {
    await underQemu({ ...EVERY_OPTION, vhostUser: true }, async ({ result, peer }) => {
      assertEquals(result.stderr, "");
      await assertVhostUserAnswers(peer);
    });
  },
);

Deno.test(
  "bin/tpasst under QEMU's argv with tcp-ports.0/.1 and udp-ports listens on every port of the joined spec",
  async () => {
    const [tcp1, tcp2] = [freeTcpPort(), freeTcpPort()];
    await underQemu(
      {
        tcpPorts: [`127.0.0.1/${tcp1}:8080`, `${tcp2}:8081`],
        udpPorts: [`127.0.0.1/${tcp1}`],
        ipv6: false,
      },
      async ({ result }) => {
        assertEquals(result.stderr, "");
        for (const port of [tcp1, tcp2]) {
          const conn = await Deno.connect({ hostname: "127.0.0.1", port });
          conn.close();
        }
      },
    );
  },
);

Deno.test(
  "bin/tpasst under QEMU's argv with quiet=off, ipv4=off and param=--debug,param=--mtu,param=9000 " +
    "(after QEMU's own --mtu) starts and logs at debug level",
  async () => {
    await underQemu(
      { vhostUser: true, mtu: 1500, param: ["--debug", "--mtu", "9000"] },
      ({ result }) => {
        // Debug mode: time-stamped lines, the plan and the daemon's readiness included.
        assertTrue(/^[0-9]+\.[0-9]{4}: MTU: 9000$/m.test(result.stderr), result.stderr);
        assertTrue(/^[0-9]+\.[0-9]{4}: Ready \(pid [0-9]+\)$/m.test(result.stderr), result.stderr);
      },
    );
    // quiet=off: info level (the plan, no warnings); ipv4=off: --ipv6-only.
    await underQemu({ quiet: false, ipv4: false }, ({ result, peer }) => {
      assertTrue(/^NDP\/DHCPv6:$/m.test(result.stderr), result.stderr);
      assertTrue(!/^(DHCP|IPv4):$/m.test(result.stderr), result.stderr);
      assertTrue(!/warn|error/i.test(result.stderr), result.stderr);
      assertTrue(stillOpen(peer));
    });
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

/** Frames the daemon may send on its own before it answers an ARP request. */
const MAX_FRAMES_BEFORE_ARP_REPLY = 8;

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
  // Other frames may come first (an unsolicited router advertisement to 33:33:00:00:00:01).
  let frame: Uint8Array = new Uint8Array(0);
  for (let frames = 0; frames < MAX_FRAMES_BEFORE_ARP_REPLY; frames++) {
    const length = new DataView((await readExactly(peer, 4, "a frame length")).buffer)
      .getUint32(0, false);
    assertTrue(length >= 42 && length <= 65535, `frame length ${length}`);
    frame = await readExactly(peer, length, "the ARP reply");
    if (frame[12] === 0x08 && frame[13] === 0x06) break;
  }
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
