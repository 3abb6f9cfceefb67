/**
 * The command line reaches the guest: a daemon started with explicit addresses
 * answers a DHCPDISCOVER sent over passt's stream protocol with exactly those
 * values (checks the whole chain: parsing, host-config overrides, stack, transport).
 */
import { UnixStream } from "../../ffi/unix_stream.ts";
import {
  DHCP_CHADDR,
  DHCP_CLIENT_PORT,
  DHCP_COOKIE,
  DHCP_HLEN,
  DHCP_HTYPE,
  DHCP_MAGIC_COOKIE,
  DHCP_OP,
  DHCP_OPTIONS,
  DHCP_SERVER_PORT,
  DHCP_XID,
  DHCP_YIADDR,
} from "../../src/net/services/dhcp.ts";
import { decodeFrame, guestIpv4Frame, udpDatagram } from "../support/net/frames.ts";
import { assertEquals, assertTrue } from "../support/assert.ts";
import { ForegroundTpasst, makeTempDir, waitFor } from "./cli_helpers.ts";
import { IPPROTO_UDP } from "../../src/net/wire/ip_protocol.ts";

/** DHCP option codes (RFC 2132). */
const OPT_SUBNET_MASK = 1;
const OPT_ROUTER = 3;
const OPT_DNS = 6;
const OPT_MTU = 26;
const OPT_MESSAGE_TYPE = 53;
const OPT_END = 255;
const DHCPDISCOVER = 1;
const DHCPOFFER = 2;

const GUEST_MAC = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const XID = 0x1234abcd;

function discoverFrame(extraOptions: number[] = []): Uint8Array {
  const bootp = new Uint8Array(DHCP_OPTIONS + 4 + extraOptions.length);
  const view = new DataView(bootp.buffer);
  bootp[DHCP_OP] = 1; // BOOTREQUEST
  bootp[DHCP_HTYPE] = 1; // Ethernet
  bootp[DHCP_HLEN] = 6;
  view.setUint32(DHCP_XID, XID);
  bootp.set(GUEST_MAC, DHCP_CHADDR);
  view.setUint32(DHCP_COOKIE, DHCP_MAGIC_COOKIE);
  bootp.set([OPT_MESSAGE_TYPE, 1, DHCPDISCOVER, ...extraOptions, OPT_END], DHCP_OPTIONS);
  return guestIpv4Frame(
    IPPROTO_UDP,
    0,
    0xffffffff,
    udpDatagram(DHCP_CLIENT_PORT, DHCP_SERVER_PORT, bootp),
    { dstMac: 0xffffffffffff },
  );
}

/** Reads length-prefixed frames from `stream` until `accept` returns a value. */
async function nextFrame<T>(
  stream: UnixStream,
  accept: (frame: Uint8Array) => T | null,
): Promise<T> {
  stream.setNonBlocking(true);
  let pending = new Uint8Array(0);
  const buffer = new Uint8Array(65536 + 4);
  return await waitFor("the DHCP offer", () => {
    const n = stream.recv(buffer);
    if (n === 0) throw new Error("the daemon closed the stream");
    if (n > 0) {
      const joined = new Uint8Array(pending.length + n);
      joined.set(pending);
      joined.set(buffer.subarray(0, n), pending.length);
      pending = joined;
    }
    while (pending.length >= 4) {
      const length = new DataView(pending.buffer, pending.byteOffset).getUint32(0, false);
      if (pending.length < 4 + length) break;
      const frame = pending.slice(4, 4 + length);
      pending = pending.slice(4 + length);
      const value = accept(frame);
      if (value !== null) return value;
    }
    return null;
  });
}

/** Options of a DHCP message as code → value bytes. */
function dhcpOptions(bootp: Uint8Array): Map<number, number[]> {
  const options = new Map<number, number[]>();
  for (let i = DHCP_OPTIONS; i < bootp.length && bootp[i] !== OPT_END;) {
    if (bootp[i] === 0) {
      i++;
      continue;
    }
    options.set(bootp[i], [...bootp.subarray(i + 2, i + 2 + bootp[i + 1])]);
    i += 2 + bootp[i + 1];
  }
  return options;
}

Deno.test("bin/tpasst offers the command line's addresses over DHCP (stream protocol)", async () => {
  const dir = await makeTempDir();
  const socket = `${dir}/s.sock`;
  const daemon = new ForegroundTpasst([
    ...["-s", socket, "-a", "10.0.2.15", "-n", "24", "-g", "10.0.2.2", "-D", "10.0.2.3"],
    ...["-m", "1400", "-M", "9a:55:9a:55:9a:01", "-4"],
  ]);
  try {
    await daemon.waitForStderr(/listening at/, "the daemon to listen");
    const stream = UnixStream.connect(socket);
    try {
      const frame = discoverFrame();
      const message = new Uint8Array(4 + frame.length);
      new DataView(message.buffer).setUint32(0, frame.length, false);
      message.set(frame, 4);
      assertEquals(stream.send(message), message.length);
      const offer = await nextFrame(stream, (f) => {
        const d = decodeFrame(f);
        if (d.ip4 === null || d.ip4.protocol !== IPPROTO_UDP) return null;
        const port = new DataView(d.l4.buffer).getUint16(0);
        return port === DHCP_SERVER_PORT ? { frame: f, bootp: d.l4.slice(8) } : null;
      });
      const view = new DataView(offer.bootp.buffer);
      assertEquals(view.getUint32(DHCP_XID), XID);
      assertEquals([...offer.bootp.subarray(DHCP_YIADDR, DHCP_YIADDR + 4)], [10, 0, 2, 15]);
      assertEquals([...offer.frame.subarray(6, 12)], [0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x01]);
      const options = dhcpOptions(offer.bootp);
      assertEquals(options.get(OPT_MESSAGE_TYPE), [DHCPOFFER]);
      assertEquals(options.get(OPT_SUBNET_MASK), [255, 255, 255, 0]);
      assertEquals(options.get(OPT_ROUTER), [10, 0, 2, 2]);
      assertEquals(options.get(OPT_DNS), [10, 0, 2, 3]);
      assertEquals(options.get(OPT_MTU), [1400 >> 8, 1400 & 0xff]);
      assertTrue(!options.has(0), "pad option recorded");
    } finally {
      stream.close();
    }
  } finally {
    try {
      daemon.process.kill("SIGTERM");
    } catch {
      // Already exited: the exit code below tells.
    }
    const { code, stderr } = await daemon.exit();
    assertEquals(code, 0, stderr);
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * Starts `bin/tpasst -f -s SOCKET args`, sends one DHCPDISCOVER (with `extraOptions`)
 * over the stream protocol, and returns the offer's options and, after SIGTERM, the
 * daemon's standard error.
 */
async function discover(
  args: string[],
  extraOptions: number[] = [],
  beforeExit?: (daemon: ForegroundTpasst) => Promise<void>,
): Promise<{ options: Map<number, number[]>; stderr: string }> {
  const dir = await makeTempDir();
  const socket = `${dir}/s.sock`;
  const daemon = new ForegroundTpasst([
    "-s",
    socket,
    "-4",
    "-a",
    "10.0.2.15/24",
    "-g",
    "10.0.2.2",
    ...args,
  ]);
  try {
    await daemon.waitForStderr(/listening at/, "the daemon to listen");
    const stream = UnixStream.connect(socket);
    let options: Map<number, number[]>;
    try {
      const frame = discoverFrame(extraOptions);
      const message = new Uint8Array(4 + frame.length);
      new DataView(message.buffer).setUint32(0, frame.length, false);
      message.set(frame, 4);
      assertEquals(stream.send(message), message.length);
      options = await nextFrame(stream, (f) => {
        const d = decodeFrame(f);
        if (d.ip4 === null || d.ip4.protocol !== IPPROTO_UDP) return null;
        const port = new DataView(d.l4.buffer).getUint16(0);
        return port === DHCP_SERVER_PORT ? dhcpOptions(d.l4.slice(8)) : null;
      });
      await beforeExit?.(daemon);
    } finally {
      stream.close();
    }
    daemon.process.kill("SIGTERM");
    const { code, stderr } = await daemon.exit();
    assertEquals(code, 0, stderr);
    return { options, stderr };
  } finally {
    try {
      daemon.process.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    await daemon.exit();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("bin/tpasst takes the last of repeated options, and --mtu 0 advertises no MTU", async () => {
  const repeated = await discover(["-m", "1500", "--mtu", "9000", "-g", "10.0.2.1"]);
  assertEquals(repeated.options.get(OPT_MTU), [9000 >> 8, 9000 & 0xff]);
  assertEquals(repeated.options.get(OPT_ROUTER), [10, 0, 2, 1]);
  const none = await discover(["--mtu", "0"]);
  assertTrue(!none.options.has(OPT_MTU), "an MTU was advertised with --mtu 0");
});

Deno.test("bin/tpasst sends --fqdn as DHCP option 81 to a client that asks for it", async () => {
  const OPT_PARAMETER_REQUEST_LIST = 55;
  const OPT_CLIENT_FQDN = 81;
  const { options } = await discover(
    ["--fqdn", "vm1.example.com"],
    [OPT_PARAMETER_REQUEST_LIST, 2, OPT_ROUTER, OPT_CLIENT_FQDN],
  );
  const name = [3, ..."vm1", 7, ..."example", 3, ..."com", 0].map((c) =>
    typeof c === "string" ? c.charCodeAt(0) : c
  );
  assertEquals(options.get(OPT_CLIENT_FQDN), [0x0c, 255, 255, ...name]);
});

Deno.test("bin/tpasst -d logs the DHCP exchange; --trace logs every frame each way", async () => {
  const debug = await discover(["-d"]);
  assertTrue(
    /^[0-9]+\.[0-9]{4}: DHCP: offer to discover from 52:54:00:12:34:56: 10\.0\.2\.15\/24, router 10\.0\.2\.2$/m
      .test(debug.stderr),
    debug.stderr,
  );
  assertTrue(!debug.stderr.includes("from guest: "), "frames traced without --trace");
  const trace = await discover(["--quiet", "--trace"]);
  assertTrue(
    /: from guest: IPv4 0\.0\.0\.0:68 > 255\.255\.255\.255:67 UDP len [0-9]+$/m.test(trace.stderr),
    trace.stderr,
  );
  assertTrue(
    /: to guest: IPv4 10\.0\.2\.2:67 > 10\.0\.2\.15:68 UDP len [0-9]+$/m.test(trace.stderr),
  );
});

Deno.test("bin/tpasst -f --stats 1 shows statistics once frames went through", async () => {
  const { stderr } = await discover(["--stats", "1"], [], async (daemon) => {
    await daemon.waitForStderr(/^stats-json: /m, "a statistics JSON line");
  });
  assertTrue(
    /^stats: from guest 1 frame\(s\) \(dhcp 1\), 0 dropped; to guest [1-9][0-9]* frame\(s\)/m.test(
      stderr,
    ),
    stderr,
  );
  // The machine-readable form follows each line: one JSON object after the prefix.
  const json = stderr.split("\n").find((line) => line.startsWith("stats-json: "));
  assertTrue(json !== undefined, stderr);
  const dump = JSON.parse(json.slice("stats-json: ".length));
  assertTrue(dump.fromGuest.byKind.dhcp === 1 && Array.isArray(dump.flows), json);
  assertTrue(dump.memory.rss > 0, json);
});
