/**
 * Checksum offload through the REAL daemon (`bin/tpasst -f -1 --vhost-user`, a child
 * process) with the TypeScript front-end harness and the scripted guest of
 * tests/net/daemon_guest.ts, host peers on 127.0.0.1 and ::1:
 *
 * - with VIRTIO_NET_F_CSUM and GUEST_CSUM acked, guest TCP and UDP leave with
 *   NEEDS_CSUM and a checksum that is deliberately wrong, and still get through
 *   (the daemon's frame handler chain must carry FrameInfo.ChecksumPending from the
 *   link to the translators); TCP frames toward the guest carry a partial checksum
 *   marked NEEDS_CSUM (csum_start at the TCP header, csum_offset 16) that completes to
 *   the right one, every other frame is marked DATA_VALID with its checksum filled;
 * - TCP segments spread over several guest buffers (as a Linux guest sends a large
 *   segment: headers, then page-sized fragments) reach the host intact with their
 *   payload sent straight from guest memory;
 * - a wrong checksum without NEEDS_CSUM is dropped, and so is a NEEDS_CSUM frame when
 *   CSUM was not acked (then every checksum toward the guest is filled and no frame
 *   is marked DATA_VALID).
 *
 * "No answer" is shown without waiting for a timeout: a bare ACK for no connection is
 * answered at once with a RST, so a valid probe sent after the bad segment is
 * answered after the bad one would have been.
 */

import assert from "node:assert/strict";
import dgram from "node:dgram";
import { Buffer } from "node:buffer";
import { ETHERTYPE_IPV4, ETHERTYPE_IPV6 } from "../../src/net/wire/ethernet.ts";
import {
  TCP_ACK_FLAG,
  TCP_CHECKSUM_OFFSET,
  TCP_RST,
  tcpChecksumOkV4,
  tcpChecksumOkV6,
} from "../../src/net/wire/tcp_header.ts";
import type { GuestTcpConn, TestGuest } from "../support/net/tcp_guest.ts";
import { TEST_GATEWAY4, TEST_GATEWAY6 } from "../support/net/tcp_plan.ts";
import { udpChecksumOkV4, udpChecksumOkV6 } from "../../src/net/wire/udp.ts";
import { featureBit } from "../../src/vhost_user/protocol.ts";
import {
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
} from "../../src/tap/net_header.ts";
import { QEMU_NET_FEATURES } from "../support/frontend/vhost_user_frontend.ts";
import { DaemonGuest, l4ChecksumField, type VhostOptions } from "../net/daemon_guest.ts";
import { withDaemon } from "../net/daemon_run.ts";
import { readAll } from "../net/host_peers.ts";
import { waitFor } from "../cli/cli_helpers.ts";
import { IPPROTO_TCP, IPPROTO_UDP } from "../../src/net/wire/ip_protocol.ts";
import { STATS_JSON_PREFIX } from "../../src/daemon/stats.ts";
import { VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM } from "../../src/tap/net_features.ts";

/** QEMU's usual features plus both checksum offloads, as a Linux virtio-net guest acks them. */
const OFFLOAD_FEATURES = QEMU_NET_FEATURES | featureBit(VIRTIO_NET_F_CSUM) |
  featureBit(VIRTIO_NET_F_GUEST_CSUM);
/** Bytes moved each way per connection (several segments, several RX buffers). */
const TRANSFER_BYTES = 300_000;
/** Longest wait for something the daemon should do promptly. */
const WAIT_MS = 10_000;
/** Offset of the IP header in an untagged Ethernet frame. */
const IP_OFFSET = 14;
/** Where the destination port sits in a TCP or UDP header (RFC 9293 §3.1, RFC 768). */
const DST_PORT_AT = 2;

const enc = new TextEncoder();

/** The TCP or UDP part of an Ethernet/IP frame: protocol, addresses, bounds. */
interface L4View {
  protocol: number;
  family: 4 | 6;
  src4: number;
  dst4: number;
  src6: Uint8Array;
  dst6: Uint8Array;
  start: number;
  length: number;
  checksumAt: number;
}

/** Locates the TCP or UDP message of `frame`; null for other frames. */
function l4View(frame: Uint8Array): L4View | null {
  const field = l4ChecksumField(frame);
  if (field === null) return null;
  const type = (frame[12] << 8) | frame[13];
  const ip = new DataView(frame.buffer, frame.byteOffset + IP_OFFSET);
  if (type === ETHERTYPE_IPV4) {
    return {
      protocol: frame[IP_OFFSET + 9],
      family: 4,
      src4: ip.getUint32(12),
      dst4: ip.getUint32(16),
      src6: new Uint8Array(16),
      dst6: new Uint8Array(16),
      start: field.start,
      length: ip.getUint16(2) - (field.start - IP_OFFSET),
      checksumAt: field.start + field.offset,
    };
  }
  if (type !== ETHERTYPE_IPV6) return null;
  return {
    protocol: frame[IP_OFFSET + 6],
    family: 6,
    src4: 0,
    dst4: 0,
    src6: frame.slice(IP_OFFSET + 8, IP_OFFSET + 24),
    dst6: frame.slice(IP_OFFSET + 24, IP_OFFSET + 40),
    start: field.start,
    length: ip.getUint16(4),
    checksumAt: field.start + field.offset,
  };
}

/** Whether the TCP or UDP checksum of the message `v` describes in `frame` is right. */
function checksumValid(frame: Uint8Array, v: L4View): boolean {
  if (v.protocol === IPPROTO_TCP) {
    return v.family === 4
      ? tcpChecksumOkV4(frame, v.start, v.length, v.src4, v.dst4)
      : tcpChecksumOkV6(frame, v.start, v.length, v.src6, v.dst6);
  }
  return v.family === 4
    ? udpChecksumOkV4(frame, v.start, v.length, v.src4, v.dst4)
    : udpChecksumOkV6(frame, v.start, v.length, v.src6, v.dst6);
}

/**
 * Whether the message carries a right checksum, not just an acceptable one: a zero UDP
 * checksum over IPv4 means "none" (RFC 768) and does not count.
 */
function checksumFilled(frame: Uint8Array, v: L4View): boolean {
  const none = v.protocol === IPPROTO_UDP && frame[v.checksumAt] === 0 &&
    frame[v.checksumAt + 1] === 0;
  return !none && checksumValid(frame, v);
}

/**
 * Makes the checksum of `v` in `frame` wrong: never left equal (modulo the ones'-
 * complement 0/0xffff) nor made 0, which means "no checksum" for UDP over IPv4.
 */
function spoil(frame: Uint8Array, v: L4View): void {
  const at = v.checksumAt;
  const old = (frame[at] << 8) | frame[at + 1];
  let spoiled = old ^ 0x5aa5;
  if (spoiled === 0) spoiled = old ^ 0x0f0f;
  frame[at] = spoiled >> 8;
  frame[at + 1] = spoiled & 0xff;
}

/** Counts of what crossed the virtio-net link each way. */
interface Traffic {
  /** Guest TCP/UDP frames sent with NEEDS_CSUM and a spoiled checksum, by protocol. */
  spoiled: Map<number, number>;
  /** Of those, how many the test's own check found valid (must stay 0). */
  spoiledButValid: number;
  /** RX header flags seen, by value. */
  rxFlags: Map<number, number>;
  /** RX TCP/UDP frames by protocol and whether their checksum is filled in, e.g. "6:false". */
  rxChecksums: Map<string, number>;
  /** A copy of the last TCP frame received. */
  lastRxTcp: Uint8Array | null;
  /** RX frames whose NEEDS_CSUM csum_start/csum_offset do not name their TCP checksum. */
  rxPartialMisplaced: number;
}

function newTraffic(): Traffic {
  return {
    spoiled: new Map(),
    spoiledButValid: 0,
    rxFlags: new Map(),
    rxChecksums: new Map(),
    lastRxTcp: null,
    rxPartialMisplaced: 0,
  };
}

function bump<K>(m: Map<K, number>, key: K): void {
  m.set(key, (m.get(key) ?? 0) + 1);
}

/**
 * Link options that send the guest frames `offload` picks with NEEDS_CSUM and a wrong
 * checksum, and record the RX headers and checksums into `traffic`.
 */
function offloadingLink(
  features: bigint,
  traffic: Traffic,
  offload: (frame: Uint8Array, v: L4View) => boolean,
): VhostOptions {
  return {
    features,
    txHeaderFlags(frame) {
      const v = l4View(frame);
      if (v === null || !offload(frame, v)) return 0;
      spoil(frame, v);
      bump(traffic.spoiled, v.protocol);
      if (checksumValid(frame, v)) traffic.spoiledButValid++;
      return VIRTIO_NET_HDR_F_NEEDS_CSUM;
    },
    onRxFrame(header, frame) {
      bump(traffic.rxFlags, header[0]);
      const v = l4View(frame);
      if (header[0] === VIRTIO_NET_HDR_F_NEEDS_CSUM) {
        const start = header[6] | (header[7] << 8); // csum_start (virtio 1.2 §5.1.6)
        const offset = header[8] | (header[9] << 8); // csum_offset
        if (
          v === null || v.protocol !== IPPROTO_TCP || start !== v.start ||
          offset !== TCP_CHECKSUM_OFFSET
        ) {
          traffic.rxPartialMisplaced++;
        }
      }
      if (v === null) return;
      // A partial checksum (NEEDS_CSUM) counts as not filled whatever its value: one in
      // 65,536 pseudo-header sums also verifies as a whole checksum (CI once saw one).
      const partial = header[0] === VIRTIO_NET_HDR_F_NEEDS_CSUM;
      bump(traffic.rxChecksums, `${v.protocol}:${!partial && checksumFilled(frame, v)}`);
      if (v.protocol === IPPROTO_TCP) traffic.lastRxTcp = frame.slice();
    },
  };
}

/** A reproducible pseudo-random payload (xorshift32). */
function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x;
  }
  return out;
}

/** The first index where `a` and `b` differ, or -1 when they are equal. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** Opens a guest connection to a fresh host server on loopback, moves data both ways. */
async function exchange(d: DaemonGuest, family: 4 | 6): Promise<void> {
  const hostname = family === 4 ? "127.0.0.1" : "::1";
  const guest = family === 4 ? d.guest4 : d.guest6;
  const server = Deno.listen({ hostname, port: 0 });
  try {
    const port = (server.addr as Deno.NetAddr).port;
    const c = family === 4
      ? guest.connect(TEST_GATEWAY4, port)
      : guest.connect(0, port, TEST_GATEWAY6);
    const accepting = server.accept();
    accepting.catch(() => {}); // rejected by server.close() when the handshake fails
    await established(c);
    const conn = await accepting;
    try {
      const up = pattern(TRANSFER_BYTES, 11 * family);
      const down = pattern(TRANSFER_BYTES, 13 * family);
      const hostReads = readAll(conn);
      const hostWrites = (async () => {
        for (let at = 0; at < down.length;) at += await conn.write(down.subarray(at));
        await conn.closeWrite();
      })();
      guest.write(c, up);
      guest.close(c);
      const got = await deadline(hostReads, "the guest's data and FIN at the host");
      await deadline(hostWrites, "the host's data taken by the guest");
      assert.equal(firstDifference(got, up), -1, `guest → host IPv${family}: ${got.length} bytes`);
      await c.until(() => c.eof, WAIT_MS, "the host's data and FIN");
      const received = c.takeReceived();
      assert.equal(
        firstDifference(received, down),
        -1,
        `host → guest IPv${family}: ${received.length} bytes`,
      );
      await c.until(() => c.finAcked, WAIT_MS, "the guest's FIN acknowledged");
    } finally {
      conn.close();
    }
  } finally {
    server.close();
  }
}

/** Resolves like `p`, or rejects after {@link WAIT_MS} naming `what` (a hang, not a timing check). */
async function deadline<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), WAIT_MS);
  });
  try {
    return await Promise.race([p, expired]);
  } finally {
    clearTimeout(timer);
  }
}

async function established(c: GuestTcpConn): Promise<void> {
  await c.until(() => c.state === "established" || c.gotRst, WAIT_MS, "the handshake");
  assert.equal(c.state, "established", `connection ${c.localPort} was reset instead`);
}

/** A UDP echo socket on 127.0.0.1 or ::1 answering "echo:" + the datagram. */
async function udpEcho(family: 4 | 6): Promise<{ port: number; close: () => void }> {
  const sock = dgram.createSocket(family === 4 ? "udp4" : "udp6");
  sock.on(
    "message",
    (msg, r) => sock.send(Buffer.concat([Buffer.from("echo:"), msg]), r.port, r.address),
  );
  await new Promise<void>((resolve) => sock.bind(0, family === 4 ? "127.0.0.1" : "::1", resolve));
  return { port: sock.address().port, close: () => sock.close() };
}

/** Sends a bare ACK for no connection to the gateway's `port` (answered with a RST if accepted). */
function bareAck(
  guest: TestGuest,
  srcPort: number,
  port: number,
  mangle?: (s: Uint8Array) => void,
) {
  const fields = { srcPort, dstPort: port, seq: 1000, ack: 2000, flags: TCP_ACK_FLAG, window: 100 };
  if (guest.family === 4) guest.rawTcp(srcPort, TEST_GATEWAY4, null, fields, null, mangle);
  else guest.rawTcp(srcPort, 0, TEST_GATEWAY6, fields, null, mangle);
}

/**
 * Waits for the RST answering the probe sent from `probePort`, then checks that it is
 * the only TCP segment the guest received: frames are answered in order, so an answer
 * to the bad segment sent before the probe would have come first.
 */
async function onlyProbeAnswered(guest: TestGuest, probePort: number): Promise<void> {
  await guest.until(
    () => guest.headers.some((h) => h.dstPort === probePort),
    WAIT_MS,
    "the probe's RST",
  );
  assert.deepEqual(
    guest.headers.map((h) => [h.dstPort, (h.flags & TCP_RST) !== 0]),
    [[probePort, true]],
    `IPv${guest.family}: only the probe is answered`,
  );
  assert.equal(guest.rsts, 1);
}

/** The TCP destination port of a frame's L4 message. */
function dstPort(frame: Uint8Array, v: L4View): number {
  return (frame[v.start + DST_PORT_AT] << 8) | frame[v.start + DST_PORT_AT + 1];
}

/** Each byte of the MAC the daemon uses (daemon_guest.ts passes -M 9a:55:9a:55:9a:55). */
const DAEMON_MAC_BYTE_A = 0x9a, DAEMON_MAC_BYTE_B = 0x55;
/** Sizes of the libpcap global and record headers (pcap-savefile(5)). */
const PCAP_GLOBAL_HEADER = 24, PCAP_RECORD_HEADER = 16;
/** Offset of incl_len in a pcap record header. */
const PCAP_INCL_LEN = 8;

/** The frames of a little-endian libpcap capture. */
function pcapRecords(bytes: Uint8Array): Uint8Array[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const frames: Uint8Array[] = [];
  for (let at = PCAP_GLOBAL_HEADER; at + PCAP_RECORD_HEADER <= bytes.length;) {
    const length = view.getUint32(at + PCAP_INCL_LEN, true);
    at += PCAP_RECORD_HEADER;
    frames.push(bytes.subarray(at, at + length));
    at += length;
  }
  return frames;
}

/** Ports of the bad segments and the probes (nothing listens: only RSTs come back). */
const BAD_PORT = 9, PROBE_PORT = 7;

Deno.test("bin/tpasst over vhost-user with CSUM and GUEST_CSUM: guest TCP and UDP with NEEDS_CSUM and wrong checksums get through intact, TCP to the guest is NEEDS_CSUM, the rest DATA_VALID", async () => {
  const traffic = newTraffic();
  const echoes = [await udpEcho(4), await udpEcho(6)];
  try {
    const vhost = offloadingLink(OFFLOAD_FEATURES, traffic, () => true);
    await withDaemon("vhost-user", [], async (d) => {
      // The link completes NEEDS_CSUM checksums; the guests then check every one.
      d.guest4.l4ChecksumsOptional = true;
      d.guest6.l4ChecksumsOptional = true;
      d.guest4.mss = 1460; // many Ethernet-sized segments; IPv6 keeps the default 65000
      await exchange(d, 4);
      await exchange(d, 6);
      d.guest4.sendUdp(41000, TEST_GATEWAY4, echoes[0].port, enc.encode("offloaded v4"));
      d.guest6.sendUdp(41000, 0, echoes[1].port, enc.encode("offloaded v6"), TEST_GATEWAY6);
      for (const [guest, text] of [[d.guest4, "v4"], [d.guest6, "v6"]] as const) {
        await guest.until(() => guest.datagrams.length > 0, WAIT_MS, `the UDP echo ${text}`);
        assert.equal(new TextDecoder().decode(guest.datagrams[0].data), `echo:offloaded ${text}`);
        assert.equal(guest.badChecksumFrames, 0, `${text}: every checksum completes right`);
      }
      // The host's data went into runs of frames, each run filled by one peek.
      Deno.kill(d.process.pid, "SIGUSR1");
      await waitFor("the stats-json line", () => d.stderr.includes(STATS_JSON_PREFIX));
      const line = d.stderr.split("\n").find((l) => l.includes(STATS_JSON_PREFIX))!;
      const link =
        JSON.parse(line.slice(line.indexOf(STATS_JSON_PREFIX) + STATS_JSON_PREFIX.length))
          .link;
      assert.ok(link.rxRuns > 0, `runs of several frames reserved: ${link.rxRuns}`);
    }, vhost);
  } finally {
    for (const echo of echoes) echo.close();
  }
  assert.ok((traffic.spoiled.get(IPPROTO_TCP) ?? 0) > 10, "TCP left the guest with NEEDS_CSUM");
  assert.equal(traffic.spoiled.get(IPPROTO_UDP), 2, "the datagrams left with NEEDS_CSUM");
  assert.equal(traffic.spoiledButValid, 0, "every checksum sent was wrong");
  assert.deepEqual(
    [...traffic.rxFlags.keys()].sort(),
    [VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_F_DATA_VALID],
    "RX header flags",
  );
  assert.equal(traffic.rxPartialMisplaced, 0, "NEEDS_CSUM names the TCP checksum field");
  // TCP checksums toward a GUEST_CSUM guest are partial (NEEDS_CSUM); UDP ones are filled.
  assert.ok((traffic.rxChecksums.get(`${IPPROTO_TCP}:false`) ?? 0) > 0, "TCP checksums partial");
  assert.equal(traffic.rxChecksums.get(`${IPPROTO_TCP}:true`), undefined);
  assert.equal(traffic.rxChecksums.get(`${IPPROTO_UDP}:true`), 2, "the UDP echoes' checksums");
  assert.equal(traffic.rxChecksums.get(`${IPPROTO_UDP}:false`), undefined);
});

Deno.test("bin/tpasst over vhost-user with CSUM: a wrong checksum without NEEDS_CSUM gets no answer", async () => {
  const traffic = newTraffic();
  const vhost = offloadingLink(OFFLOAD_FEATURES, traffic, () => false);
  await withDaemon("vhost-user", [], async (d) => {
    for (const guest of [d.guest4, d.guest6]) {
      guest.l4ChecksumsOptional = true;
      guest.recordHeaders = true;
      bareAck(guest, 42000, BAD_PORT, (segment) => {
        segment[TCP_CHECKSUM_OFFSET] ^= 0x5a;
        segment[TCP_CHECKSUM_OFFSET + 1] ^= 0xa5;
      });
      bareAck(guest, 42001, PROBE_PORT);
      await onlyProbeAnswered(guest, 42001);
    }
  }, vhost);
  assert.equal(traffic.spoiled.size, 0);
  // The probes' RSTs are TCP, so NEEDS_CSUM; anything else (router advertisements, sent
  // on a timer that may or may not fire within the test) DATA_VALID.
  const flags = [...traffic.rxFlags.keys()];
  assert.ok(flags.includes(VIRTIO_NET_HDR_F_NEEDS_CSUM), `RX flags seen: ${flags}`);
  assert.ok(
    flags.every((f) => f === VIRTIO_NET_HDR_F_NEEDS_CSUM || f === VIRTIO_NET_HDR_F_DATA_VALID),
    `RX flags seen: ${flags}`,
  );
  assert.equal(traffic.rxPartialMisplaced, 0);
});

Deno.test("bin/tpasst over vhost-user without CSUM: a NEEDS_CSUM frame gets no answer and every checksum toward the guest is filled", async () => {
  const traffic = newTraffic();
  const vhost = offloadingLink(
    QEMU_NET_FEATURES,
    traffic,
    (frame, v) => v.protocol === IPPROTO_TCP && dstPort(frame, v) === BAD_PORT,
  );
  await withDaemon("vhost-user", [], async (d) => {
    for (const guest of [d.guest4, d.guest6]) {
      // l4ChecksumsOptional stays false: the guest drops frames with wrong checksums.
      guest.recordHeaders = true;
      bareAck(guest, 43000, BAD_PORT);
      bareAck(guest, 43001, PROBE_PORT);
      await onlyProbeAnswered(guest, 43001);
      assert.equal(guest.badChecksumFrames, 0);
      // The guest does check: the RST it took, with a wrong checksum, is refused.
      const rst = traffic.lastRxTcp!;
      spoil(rst, l4View(rst)!);
      guest.sendFrame(rst);
      await guest.until(() => guest.badChecksumFrames === 1, WAIT_MS, "the spoiled RST");
      assert.equal(guest.rsts, 1);
    }
    await waitFor(
      "the daemon's log of the dropped offload",
      () => /offload flags 1 gso 0 were not negotiated/.test(d.stderr),
    );
  }, vhost);
  assert.equal(traffic.spoiled.get(IPPROTO_TCP), 2, "one bad segment per family");
  assert.equal(traffic.spoiledButValid, 0);
  assert.deepEqual([...traffic.rxFlags.keys()], [0], "no DATA_VALID without GUEST_CSUM");
  assert.equal(traffic.rxChecksums.get(`${IPPROTO_TCP}:true`), 2, "both RSTs carry checksums");
  assert.equal(traffic.rxChecksums.get(`${IPPROTO_TCP}:false`), undefined);
});

Deno.test("bin/tpasst over vhost-user with CSUM, GUEST_CSUM and --pcap: offloaded guest TCP gets through and the capture's TCP checksums toward the guest are real", async () => {
  const traffic = newTraffic();
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "tpcsum" });
  try {
    const pcap = `${dir}/capture.pcap`;
    const vhost = offloadingLink(OFFLOAD_FEATURES, traffic, () => true);
    await withDaemon("vhost-user", ["--pcap", pcap], async (d) => {
      // The guest checks: what the capture shows is what it gets.
      d.guest4.mss = 1460;
      await exchange(d, 4);
      assert.equal(d.guest4.badChecksumFrames, 0);
    }, vhost);
    assert.ok((traffic.spoiled.get(IPPROTO_TCP) ?? 0) > 10, "TCP left the guest with NEEDS_CSUM");
    assert.deepEqual([...traffic.rxFlags.keys()], [VIRTIO_NET_HDR_F_DATA_VALID]);
    assert.ok((traffic.rxChecksums.get(`${IPPROTO_TCP}:true`) ?? 0) > 10);
    assert.equal(traffic.rxChecksums.get(`${IPPROTO_TCP}:false`), undefined);
    // The capture: frames toward the guest with real TCP checksums; the guest's as sent.
    const captured = { toGuest: new Map<boolean, number>(), fromGuest: new Map<boolean, number>() };
    for (const frame of pcapRecords(await Deno.readFile(pcap))) {
      const v = l4View(frame);
      if (v === null || v.protocol !== IPPROTO_TCP) continue;
      const src = frame.subarray(6, 12);
      const fromDaemon = src.every((b, i) =>
        b === (i % 2 === 0 ? DAEMON_MAC_BYTE_A : DAEMON_MAC_BYTE_B)
      );
      bump(fromDaemon ? captured.toGuest : captured.fromGuest, checksumFilled(frame, v));
    }
    assert.equal(captured.toGuest.get(false), undefined, "no unset checksum in the capture");
    assert.equal(captured.toGuest.get(true), traffic.rxChecksums.get(`${IPPROTO_TCP}:true`));
    assert.equal(captured.fromGuest.get(true), undefined);
    assert.equal(captured.fromGuest.get(false), traffic.spoiled.get(IPPROTO_TCP));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bin/tpasst over vhost-user with CSUM: guest TCP segments over several 4 KiB buffers reach the host intact, their payload sent from guest memory", async () => {
  const traffic = newTraffic();
  const vhost: VhostOptions = {
    ...offloadingLink(OFFLOAD_FEATURES, traffic, (_frame, v) => v.protocol === IPPROTO_TCP),
    txBufferSize: 4096,
  };
  const d = await DaemonGuest.start("vhost-user", ["-d"], vhost);
  let result: { code: number; stderr: string };
  try {
    d.guest4.l4ChecksumsOptional = true;
    d.guest6.l4ChecksumsOptional = true;
    await exchange(d, 4);
    await exchange(d, 6);
  } finally {
    result = await d.close();
  }
  assert.equal(result.code, 0, result.stderr);
  assert.ok((traffic.spoiled.get(IPPROTO_TCP) ?? 0) > 10, "TCP left the guest with NEEDS_CSUM");
  const counters =
    /vhost-user link: TX \d+ frames \(\d+ segmented, \d+ rejected, (\d+) sent from guest memory\)/
      .exec(result.stderr);
  assert.ok(counters !== null, `the link's counters at the end:\n${result.stderr.slice(-2000)}`);
  // Both directions' 300,000 bytes in segments of up to 65,000: at least 5 + 5 scattered.
  assert.ok(Number(counters[1]) >= 10, counters[0]);
});
