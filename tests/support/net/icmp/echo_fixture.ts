/**
 * Run by icmp_echo_test.ts inside a fresh network namespace whose
 * ping_group_range allows ping sockets: pings 127.0.0.1 and ::1 from a simulated
 * guest through the NetworkStack and real ping sockets, and prints what came back
 * as JSON on standard output.
 *
 * @module
 */

import { buildNetworkPlan } from "../../../../src/net/plan/network_plan.ts";
import {
  buildIcmpEcho,
  icmpv4ChecksumOk,
  icmpv6ChecksumOk,
} from "../../../../src/net/wire/icmp.ts";
import type { FdWatcher } from "../../../../src/net/icmp/echo.ts";
import { pingSocketFactory } from "../../../../src/net/icmp/ping_echo_socket.ts";
import { NetworkStack } from "../../../../src/net/stack.ts";
import { decodeFrame, guestIpv4Frame, guestIpv6Frame } from "../frames.ts";
import { RecordingLink } from "../recording_link.ts";
import { IPPROTO_ICMP, IPPROTO_ICMPV6 } from "../../../../src/net/wire/ip_protocol.ts";
import { ipv4ToString, ipv6ToString, parseIpv6 } from "../../../../ffi/ip_address_text.ts";

const handlers = new Map<number, (events: number, now: number) => void>();
const watcher: FdWatcher = {
  watch: (fd, h) => void handlers.set(fd, h),
  unwatch: (fd) => void handlers.delete(fd),
};
const plan = buildNetworkPlan({
  address4: "10.0.2.21/24",
  gateway4: "10.0.2.2",
  address6: "2001:db8::15",
  gateway6: "fe80::1",
}, { readFile: () => null, networkInterfaces: () => [] });
const stack = new NetworkStack(plan, { echoSocketFactory: pingSocketFactory, fdWatcher: watcher });
const link = new RecordingLink();
stack.linkUp(link, 0);
link.take();
const guest6 = parseIpv6("2001:db8::15")!;
const ping4 = new Uint8Array(12);
buildIcmpEcho(ping4, 0, 8, 0x7777, 1);
ping4.set([1, 2, 3, 4], 8);
const ping6 = new Uint8Array(10);
buildIcmpEcho(ping6, 0, 128, 0x6666, 2);
ping6.set([5, 6], 8);
stack.handleFrame(guestIpv4Frame(IPPROTO_ICMP, 0x0a000215, 0x7f000001, ping4), 1);
stack.handleFrame(guestIpv6Frame(IPPROTO_ICMPV6, guest6, parseIpv6("::1")!, ping6), 1);
const sockets = stack.icmpEcho!.size;
const replies: unknown[] = [];
for (let i = 0; i < 200 && replies.length < 2; i++) {
  await new Promise((r) => setTimeout(r, 10));
  for (const h of handlers.values()) h(1, 2);
  for (const f of link.take()) {
    const d = decodeFrame(f);
    replies.push(
      d.ip4
        ? {
          family: 4,
          src: ipv4ToString(d.ip4.src),
          dst: ipv4ToString(d.ip4.dst),
          type: d.l4[0],
          id: (d.l4[4] << 8) | d.l4[5],
          data: Array.from(d.l4.slice(8)),
          checksumOk: icmpv4ChecksumOk(d.l4, 0, d.l4.length),
        }
        : {
          family: 6,
          src: ipv6ToString(d.ip6!.src),
          dst: ipv6ToString(d.ip6!.dst),
          type: d.l4[0],
          id: (d.l4[4] << 8) | d.l4[5],
          data: Array.from(d.l4.slice(8)),
          checksumOk: icmpv6ChecksumOk(d.l4, 0, d.l4.length, d.ip6!.src, d.ip6!.dst),
        },
    );
  }
}
stack.close();
console.log(
  JSON.stringify({ sockets, replies, open: stack.icmpEcho!.size, handlers: handlers.size }),
);
