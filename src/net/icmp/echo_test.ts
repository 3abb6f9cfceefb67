import assert from "node:assert/strict";
import { l4ChecksumV6 } from "../wire/checksum.ts";
import { buildNetworkPlan } from "../plan/network_plan.ts";
import { buildIcmpEcho, icmpv4ChecksumOk, Icmpv4Type, Icmpv6Type } from "../wire/icmp.ts";
import {
  ECHO_IDLE_TIMEOUT_MS,
  type EchoSocket,
  type FdWatcher,
  ICMPV4_ADMIN_PROHIBITED,
  ICMPV6_ADMIN_PROHIBITED,
} from "./echo.ts";
import type { ForwardOptions } from "../plan/fwd.ts";
import { NetworkStack } from "../stack.ts";
import { decodeFrame, guestIpv4Frame, guestIpv6Frame } from "../../../tests/support/net/frames.ts";
import { nextTask, RecordingLink } from "../../../tests/support/net/recording_link.ts";
import { Logger } from "../../log/logger.ts";
import { IPPROTO_ICMP, IPPROTO_ICMPV6 } from "../wire/ip_protocol.ts";
import { ipv4ToString, ipv6ToString, parseIpv6 } from "../../../ffi/ip_address_text.ts";
import { dualStackPlan, NO_HOST } from "../../../tests/support/net/built_plan.ts";
import { recordingLogger } from "../../../tests/support/recording_logger.ts";
import { canUnshare, runInNetNamespace } from "../../../tests/support/net_namespace.ts";

const GUEST4 = 0x0a000215, GW4 = 0x0a000202;
const GUEST6 = parseIpv6("2001:db8::15")!;

/** A socket that echoes every request back with the socket's own identifier. */
class FakeSocket implements EchoSocket {
  static nextFd = 100;
  readonly fd = FakeSocket.nextFd++;
  readonly sent: { payload: Uint8Array; address: Uint8Array }[] = [];
  readonly pending: Uint8Array[] = [];
  closed = false;
  constructor(readonly family: 4 | 6, readonly kernelId: number) {}
  sendTo(payload: Uint8Array, address: Uint8Array): number {
    this.sent.push({ payload: payload.slice(), address: address.slice() });
    const reply = payload.slice();
    reply[0] = this.family === 4 ? Icmpv4Type.EchoReply : Icmpv6Type.EchoReply;
    reply[4] = this.kernelId >> 8;
    reply[5] = this.kernelId & 0xff;
    reply[2] = reply[3] = 0xee; // the kernel's checksum, wrong for the guest's id
    this.pending.push(reply);
    return payload.length;
  }
  receive(buf: Uint8Array) {
    const r = this.pending.shift();
    if (!r) return null;
    buf.set(r);
    return { length: r.length, address: new Uint8Array(this.family === 4 ? 4 : 16) };
  }
  close(): void {
    this.closed = true;
  }
}

class FakeWatcher implements FdWatcher {
  readonly handlers = new Map<number, (events: number, now: number) => void>();
  watch(fd: number, handler: (events: number, now: number) => void): void {
    this.handlers.set(fd, handler);
  }
  unwatch(fd: number): void {
    this.handlers.delete(fd);
  }
  fireAll(now: number): void {
    for (const h of [...this.handlers.values()]) h(1, now);
  }
}

function setup(
  factory?: (family: 4 | 6) => EchoSocket,
  logger?: Logger,
  permitted?: (address: string) => boolean,
) {
  const plan = dualStackPlan();
  const sockets: FakeSocket[] = [];
  const watcher = new FakeWatcher();
  const stack = new NetworkStack(plan, {
    echoSocketFactory: factory ?? ((f) => {
      const s = new FakeSocket(f, 4000 + sockets.length);
      sockets.push(s);
      return s;
    }),
    fdWatcher: watcher,
    logger,
    echoPermitted: permitted,
  });
  const link = new RecordingLink();
  stack.linkUp(link, 0);
  stack.tick(0); // initial RA
  link.take();
  return { stack, link, sockets, watcher };
}

function echo(type: number, id: number, seq: number, data: number[]): Uint8Array {
  const b = new Uint8Array(8 + data.length);
  buildIcmpEcho(b, 0, type, id, seq);
  b.set(data, 8);
  return b;
}

Deno.test("`IcmpEcho` forwards an IPv4 echo and restores the guest's identifier", () => {
  const { stack, link, sockets, watcher } = setup();
  const dst = 0xc0000201; // 192.0.2.1 (never reached: fake socket)
  stack.handleFrame(
    guestIpv4Frame(IPPROTO_ICMP, GUEST4, dst, echo(8, 0x1234, 7, [1, 2, 3])),
    10,
  );
  assert.equal(sockets.length, 1);
  assert.deepEqual(Array.from(sockets[0].sent[0].address), [192, 0, 2, 1]);
  assert.deepEqual(Array.from(sockets[0].sent[0].payload.slice(8)), [1, 2, 3]);
  watcher.fireAll(11);
  const d = decodeFrame(link.take()[0]);
  assert.equal(ipv4ToString(d.ip4!.src), "192.0.2.1");
  assert.equal(ipv4ToString(d.ip4!.dst), "10.0.2.21");
  assert.equal(d.l4[0], Icmpv4Type.EchoReply);
  assert.equal((d.l4[4] << 8) | d.l4[5], 0x1234);
  assert.equal((d.l4[6] << 8) | d.l4[7], 7);
  assert.ok(icmpv4ChecksumOk(d.l4, 0, d.l4.length));
  // Same flow: same socket.
  stack.handleFrame(guestIpv4Frame(IPPROTO_ICMP, GUEST4, dst, echo(8, 0x1234, 8, [])), 12);
  assert.equal(sockets.length, 1);
  assert.equal(stack.icmpEcho!.counters.replies, 1);
});

Deno.test("`IcmpEcho` flushes a reply that arrives with no other traffic", async () => {
  for (const family of [4, 6] as const) {
    const { stack, link, watcher } = setup();
    const request = family === 4
      ? guestIpv4Frame(IPPROTO_ICMP, GUEST4, GW4, echo(8, 5, 1, [1]))
      : guestIpv6Frame(IPPROTO_ICMPV6, GUEST6, parseIpv6("2001:db8::2")!, echo(128, 5, 1, [1]));
    stack.handleFrame(request, 10);
    stack.endOfBatch(10);
    await nextTask();
    const flushesBefore = link.flushes;
    // The reply comes later, from the ping socket's readiness alone.
    watcher.fireAll(11);
    assert.equal(link.frames.length, 1, `IPv${family} reply sent`);
    await nextTask();
    assert.equal(link.unflushedFrames, 0, `IPv${family} reply left unflushed`);
    assert.equal(link.flushes, flushesBefore + 1);
  }
});

Deno.test("`IcmpEcho` maps the gateway to the host's loopback", () => {
  const { stack, link, sockets, watcher } = setup();
  stack.handleFrame(guestIpv4Frame(IPPROTO_ICMP, GUEST4, GW4, echo(8, 1, 1, [])), 10);
  assert.deepEqual(Array.from(sockets[0].sent[0].address), [127, 0, 0, 1]);
  watcher.fireAll(11);
  const d = decodeFrame(link.take()[0]);
  assert.equal(ipv4ToString(d.ip4!.src), "10.0.2.2");
});

Deno.test("`IcmpEcho` forwards an IPv6 echo with a valid ICMPv6 checksum back", () => {
  const { stack, link, sockets, watcher } = setup();
  const dst = parseIpv6("2001:db8:ffff::1")!;
  stack.handleFrame(guestIpv6Frame(IPPROTO_ICMPV6, GUEST6, dst, echo(128, 0x4242, 3, [9, 9])), 10);
  assert.equal(sockets[0].family, 6);
  watcher.fireAll(11);
  const d = decodeFrame(link.take()[0]);
  assert.equal(ipv6ToString(d.ip6!.src), "2001:db8:ffff::1");
  assert.equal(ipv6ToString(d.ip6!.dst), "2001:db8::15");
  assert.equal(d.l4[0], Icmpv6Type.EchoReply);
  assert.equal((d.l4[4] << 8) | d.l4[5], 0x4242);
  assert.equal(l4ChecksumV6(d.l4, 0, d.l4.length, 58, d.ip6!.src, 0, d.ip6!.dst, 0), 0);
});

Deno.test("`IcmpEcho.tick()` closes sockets idle for 60 s, logging each flow's start and end at debug level", () => {
  const { logger, lines } = recordingLogger({ level: "debug", withLevel: true });
  const { stack, sockets, watcher } = setup(undefined, logger);
  stack.handleFrame(guestIpv4Frame(IPPROTO_ICMP, GUEST4, 0xc0000201, echo(8, 1, 1, [])), 1000);
  stack.handleFrame(guestIpv4Frame(IPPROTO_ICMP, GUEST4, 0xc0000202, echo(8, 1, 1, [])), 5000);
  assert.equal(stack.icmpEcho!.size, 2);
  assert.equal(stack.icmpEcho!.nextTimerAt(), 1000 + ECHO_IDLE_TIMEOUT_MS);
  stack.tick(1000 + ECHO_IDLE_TIMEOUT_MS);
  assert.equal(stack.icmpEcho!.size, 1);
  assert.ok(sockets[0].closed && !sockets[1].closed);
  const flow = "icmp 10.0.2.21 id 1 -> 192.0.2.1 (host 192.0.2.1)";
  assert.ok(lines.includes(`debug: ${flow} opened: echo request from the guest`), lines.join("\n"));
  assert.ok(
    lines.includes(
      `debug: ${flow} closed: idle for 60.0 s; guest->host 8 B, host->guest 0 B, after 60.0 s`,
    ),
    lines.join("\n"),
  );
  assert.equal(watcher.handlers.size, 1);
  stack.close();
  assert.ok(sockets[1].closed);
  assert.equal(watcher.handlers.size, 0);
});

Deno.test("`IcmpEcho` warns once when ping sockets are not permitted", () => {
  const { logger, lines } = recordingLogger({ withLevel: true });
  const { stack, link } = setup(() => {
    throw Object.assign(new Error("ping_open(IPv4): EACCES"), { errno: 13 });
  }, logger);
  for (let i = 0; i < 3; i++) {
    stack.handleFrame(guestIpv4Frame(IPPROTO_ICMP, GUEST4, 0xc0000201, echo(8, 1, i, [])), i);
  }
  stack.handleFrame(guestIpv4Frame(IPPROTO_ICMP, GUEST4, 0xc0000201, echo(8, 1, 9, [])), 20_000);
  assert.equal(
    lines.filter((l) => l.startsWith("warn") && l.includes("ping_group_range")).length,
    1,
  );
  assert.equal(stack.icmpEcho!.counters.notPermitted, 4);
  assert.equal(link.frames.length, 0);
  assert.equal(stack.drops.exception, undefined);
});

Deno.test("`IcmpEcho` drops bad checksums, short messages and multicast targets", () => {
  const { stack, sockets } = setup();
  const f = guestIpv4Frame(IPPROTO_ICMP, GUEST4, 0xc0000201, echo(8, 1, 1, [5]));
  f[f.length - 1] ^= 0xff;
  stack.handleFrame(f, 1);
  stack.handleFrame(guestIpv4Frame(IPPROTO_ICMP, GUEST4, 0xc0000201, new Uint8Array(4)), 1);
  stack.handleFrame(guestIpv4Frame(IPPROTO_ICMP, GUEST4, 0xe0000001, echo(8, 1, 1, [])), 1);
  stack.handleFrame(guestIpv4Frame(IPPROTO_ICMP, GUEST4, 0xc0000201, echo(0, 1, 1, [])), 1);
  assert.equal(sockets.length, 0);
  assert.equal(stack.drops["icmp-bad-checksum"], 1);
  assert.equal(stack.drops["icmp-truncated"], 1);
  assert.equal(stack.drops["icmp-bad-destination"], 1);
  assert.equal(stack.icmpEcho!.counters.ignored, 1);
});

Deno.test({
  name: "`IcmpEcho` pings 127.0.0.1 and ::1 through real ping sockets",
  // ping_group_range is per network namespace: a fresh one leaves the host's alone.
  ignore: !canUnshare,
  fn: async () => {
    const r = await runInNetNamespace(
      "ip link set lo up && sysctl -q -w net.ipv4.ping_group_range='0 2147483647'",
      new URL("../../../tests/support/net/icmp/echo_fixture.ts", import.meta.url),
    );
    assert.equal(r.sockets, 2);
    const byFamily = (f: number) => r.replies.find((x: { family: number }) => x.family === f);
    assert.deepEqual(byFamily(4), {
      family: 4,
      src: "127.0.0.1",
      dst: "10.0.2.21",
      type: Icmpv4Type.EchoReply,
      id: 0x7777,
      data: [1, 2, 3, 4],
      checksumOk: true,
    });
    assert.deepEqual(byFamily(6), {
      family: 6,
      src: "::1",
      dst: "2001:db8::15",
      type: Icmpv6Type.EchoReply,
      id: 0x6666,
      data: [5, 6],
      checksumOk: true,
    });
    assert.equal(r.open, 0);
    assert.equal(r.handlers, 0);
  },
});

/** Pings `destination` from the guest through a stack built with `forward`; returns where the socket sent. */
function pingTarget(forward: ForwardOptions, destination: number): number[] {
  const plan = buildNetworkPlan(
    { address4: "10.0.2.21/24", gateway4: "10.0.2.2", ipv4Only: true },
    NO_HOST,
  );
  const sockets: FakeSocket[] = [];
  const stack = new NetworkStack(plan, {
    echoSocketFactory: (f) => {
      const s = new FakeSocket(f, 1);
      sockets.push(s);
      return s;
    },
    fdWatcher: new FakeWatcher(),
    forward,
  });
  stack.linkUp(new RecordingLink(), 0);
  stack.handleFrame(guestIpv4Frame(IPPROTO_ICMP, GUEST4, destination, echo(8, 1, 1, [])), 10);
  return Array.from(sockets[0].sent[0].address);
}

Deno.test("`IcmpEcho` pings the gateway as the host's loopback, or as itself with --no-map-gw", () => {
  assert.deepEqual(pingTarget({}, GW4), [127, 0, 0, 1]);
  assert.deepEqual(pingTarget({ noMapGw: true }, GW4), [10, 0, 2, 2]);
  assert.deepEqual(pingTarget({ mapHostLoopback4: "none" }, GW4), [10, 0, 2, 2]);
});

Deno.test("`IcmpEcho` pings the --map-guest-addr address as the host's own address, like TCP and UDP", () => {
  const mapped = 0x0a0002fe; // 10.0.2.254
  assert.deepEqual(pingTarget({ mapGuestAddr4: "10.0.2.254" }, mapped), [10, 0, 2, 21]);
  assert.deepEqual(pingTarget({}, mapped), [10, 0, 2, 254], "unmapped without the option");
});

Deno.test("`IcmpEcho` holds pings to the net permission: allowed ones go out, refused ones get administratively prohibited and one log line", () => {
  const { logger, lines } = recordingLogger({ withLevel: true });
  const asked: string[] = [];
  // Only the host loopback (the gateway's translation) and 2001:db8::1 are granted.
  const { stack, link, sockets } = setup(undefined, logger, (address) => {
    asked.push(address);
    return address === "127.0.0.1" || address === "2001:db8::1";
  });
  stack.handleFrame(guestIpv4Frame(IPPROTO_ICMP, GUEST4, GW4, echo(8, 7, 1, [1])), 1);
  assert.equal(sockets.length, 1, "the gateway (host loopback) is granted");
  assert.deepEqual(asked, ["127.0.0.1"]);

  const denied4 = 0xc0000201; // 192.0.2.1
  for (let i = 0; i < 3; i++) {
    stack.handleFrame(guestIpv4Frame(IPPROTO_ICMP, GUEST4, denied4, echo(8, 8, i, [2])), 2 + i);
  }
  const denied6 = parseIpv6("2001:db8::2")!;
  stack.handleFrame(
    guestIpv6Frame(IPPROTO_ICMPV6, GUEST6, denied6, echo(128, 9, 1, [3])),
    5,
  );
  assert.equal(sockets.length, 1, "no socket for a refused destination");
  assert.equal(stack.icmpEcho!.counters.netDenied, 4);
  const errors = link.take().map(decodeFrame);
  assert.equal(errors.length, 4);
  for (const e of errors.slice(0, 3)) {
    assert.equal(e.ip4?.src, denied4, "from the destination the guest pinged");
    assert.equal(e.ip4?.dst, GUEST4);
    assert.equal(e.l4[0], Icmpv4Type.DestinationUnreachable);
    assert.equal(e.l4[1], ICMPV4_ADMIN_PROHIBITED);
    assert.ok(icmpv4ChecksumOk(e.l4, 0, e.l4.length));
    // The quote: the guest's IPv4 header, then its echo request.
    assert.equal(e.l4[8] >> 4, 4);
    assert.equal(e.l4[8 + 20], Icmpv4Type.EchoRequest);
  }
  const e6 = errors[3];
  assert.deepEqual(e6.ip6?.src, denied6);
  assert.equal(e6.l4[0], Icmpv6Type.DestinationUnreachable);
  assert.equal(e6.l4[1], ICMPV6_ADMIN_PROHIBITED);
  assert.equal(e6.l4[8] >> 4, 6);
  assert.equal(e6.l4[8 + 40], Icmpv6Type.EchoRequest);
  const denials = lines.filter((l) => l.includes("not permitted (--allow-net)"));
  assert.equal(denials.length, 1, "one line within a second for four refusals");
  assert.match(denials[0], /^warn: .*ping: .*192\.0\.2\.1 not permitted/);
  stack.close();
});
