/**
 * Writes what the stack sends for DHCP, NDP/RA, DHCPv6, ARP and ICMP echo (and the
 * guest requests that caused it) into a libpcap file under /tmp and asks tshark to
 * dissect it with checksum validation on: no "Malformed" and no bad checksum.
 */
import assert from "node:assert/strict";
import { buildNetworkPlan } from "./plan/network_plan.ts";
import { buildIcmpEcho } from "./wire/icmp.ts";
import type { EchoSocket } from "./icmp/echo.ts";
import { NetworkStack } from "./stack.ts";
import {
  guestArpRequest,
  guestIpv4Frame,
  guestIpv6Frame,
  udpDatagram,
} from "../../tests/support/net/frames.ts";
import { RecordingLink } from "../../tests/support/net/recording_link.ts";
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_UDP } from "./wire/ip_protocol.ts";
import { parseIpv6 } from "../../ffi/ip_address_text.ts";
import { commandSucceeds } from "../../tests/support/command_succeeds.ts";

/** libpcap file format: magic, v2.4, snaplen, LINKTYPE_ETHERNET (1). */
function pcapFile(frames: Uint8Array[]): Uint8Array {
  const total = 24 + frames.reduce((n, f) => n + 16 + f.length, 0);
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, 0xa1b2c3d4, true);
  dv.setUint16(4, 2, true);
  dv.setUint16(6, 4, true);
  dv.setUint32(16, 65535, true);
  dv.setUint32(20, 1, true);
  let p = 24;
  frames.forEach((f, i) => {
    dv.setUint32(p, 1_700_000_000 + i, true);
    dv.setUint32(p + 8, f.length, true);
    dv.setUint32(p + 12, f.length, true);
    out.set(f, p + 16);
    p += 16 + f.length;
  });
  return out;
}

function dhcp(type: number, extra: number[] = [], ciaddr = 0): Uint8Array {
  const opts = [53, 1, type, 55, 7, 1, 3, 6, 15, 26, 119, 121, ...extra, 255];
  const b = new Uint8Array(240 + opts.length);
  const dv = new DataView(b.buffer);
  b[0] = 1;
  b[1] = 1;
  b[2] = 6;
  dv.setUint32(4, 0x01020304);
  dv.setUint32(12, ciaddr);
  dv.setUint16(28, 0x5254);
  dv.setUint32(30, 0x00123456);
  dv.setUint32(236, 0x63825363);
  b.set(opts, 240);
  return b;
}

function dhcpv6(type: number, opts: number[]): Uint8Array {
  return new Uint8Array([type, 0, 0, 9, ...opts]);
}

function opt6(code: number, data: number[]): number[] {
  return [code >> 8, code & 0xff, data.length >> 8, data.length & 0xff, ...data];
}

const tshark = commandSucceeds("tshark", ["-v"]);

Deno.test({
  name: "`NetworkStack` replies dissect cleanly in tshark (no Malformed, checksums good)",
  ignore: !tshark,
  fn: async () => {
    const plan = buildNetworkPlan({
      address4: "203.0.113.7/32", // off-subnet gateway: option 121
      gateway4: "203.0.113.1",
      address6: "2001:db8::15",
      gateway6: "fe80::1",
      dns: ["203.0.113.53", "2001:db8::53"],
      search: ["example.org", "lab.example.org"],
      fqdn: "vm.example.org",
      mtu: 1500,
    }, { readFile: () => null, networkInterfaces: () => [] });
    const pending: Uint8Array[] = [];
    const socket: EchoSocket = {
      fd: 7,
      sendTo(p) {
        const r = p.slice();
        r[0] = r[0] === 8 ? 0 : 129;
        pending.push(r);
        return p.length;
      },
      receive(buf) {
        const r = pending.shift();
        if (!r) return null;
        buf.set(r);
        return { length: r.length, address: new Uint8Array(4) };
      },
      close() {},
    };
    let readable: ((e: number, n: number) => void) | null = null;
    const stack = new NetworkStack(plan, {
      echoSocketFactory: () => socket,
      fdWatcher: { watch: (_fd, h) => (readable = h), unwatch: () => {} },
    });
    const link = new RecordingLink();
    stack.linkUp(link, 0);
    const all: Uint8Array[] = [];
    const feed = (f: Uint8Array) => {
      all.push(f);
      stack.handleFrame(f, 1);
      readable?.(1, 1);
      all.push(...link.take());
    };
    stack.tick(0);
    all.push(...link.take());
    const arp = guestArpRequest(0xcb007107, 0xcb007101);
    feed(arp);
    const v4 = (m: Uint8Array, src = 0) =>
      guestIpv4Frame(IPPROTO_UDP, src, 0xffffffff, udpDatagram(68, 67, m));
    feed(v4(dhcp(1)));
    feed(v4(dhcp(1, [80, 0])));
    feed(v4(dhcp(3, [50, 4, 203, 0, 113, 7, 54, 4, 203, 0, 113, 1])));
    feed(v4(dhcp(3, [50, 4, 10, 9, 9, 9])));
    feed(v4(dhcp(8, [], 0xcb007107), 0xcb007107));
    const ping = new Uint8Array(16);
    buildIcmpEcho(ping, 0, 8, 0x99, 1);
    feed(guestIpv4Frame(IPPROTO_ICMP, 0xcb007107, 0xc6336401, ping));
    const ll = parseIpv6("fe80::5054:ff:fe12:3456")!;
    const nd = { hopLimit: 255 };
    feed(
      guestIpv6Frame(
        IPPROTO_ICMPV6,
        ll,
        parseIpv6("ff02::2")!,
        new Uint8Array([133, 0, 0, 0, 0, 0, 0, 0]),
        nd,
      ),
    );
    feed(guestIpv6Frame(
      IPPROTO_ICMPV6,
      ll,
      parseIpv6("ff02::1:ff00:1")!,
      new Uint8Array([
        135,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        ...parseIpv6("fe80::1")!,
        1,
        1,
        0x52,
        0x54,
        0,
        0x12,
        0x34,
        0x56,
      ]),
      nd,
    ));
    const client = opt6(1, [0, 3, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    const server = opt6(2, [0, 3, 0, 1, 0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55]);
    const ia = opt6(3, [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    const iaWrong = opt6(3, [
      0,
      0,
      0,
      1,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      ...opt6(5, [...parseIpv6("2001:db8:9::1")!, 0, 0, 0, 0, 0, 0, 0, 0]),
    ]);
    const v6 = (m: Uint8Array) =>
      guestIpv6Frame(IPPROTO_UDP, ll, parseIpv6("ff02::1:2")!, udpDatagram(546, 547, m));
    feed(v6(dhcpv6(1, [...client, ...ia])));
    feed(v6(dhcpv6(1, [...client, ...ia, ...opt6(14, [])])));
    feed(v6(dhcpv6(3, [...client, ...server, ...ia])));
    feed(v6(dhcpv6(3, [...client, ...server, ...iaWrong])));
    feed(v6(dhcpv6(4, [...client, ...iaWrong])));
    feed(v6(dhcpv6(11, [...client])));
    const ping6 = new Uint8Array(16);
    buildIcmpEcho(ping6, 0, 128, 0x98, 1);
    feed(
      guestIpv6Frame(
        IPPROTO_ICMPV6,
        parseIpv6("2001:db8::15")!,
        parseIpv6("2001:db8:1::1")!,
        ping6,
      ),
    );
    const replies = all.length;
    assert.ok(replies >= 30, `${replies} frames`);
    const path = await Deno.makeTempFile({ dir: "/tmp", prefix: "tpasst-net-", suffix: ".pcap" });
    try {
      await Deno.writeFile(path, pcapFile(all));
      const out = await new Deno.Command("tshark", {
        args: [
          "-r",
          path,
          "-V",
          "-o",
          "ip.check_checksum:TRUE",
          "-o",
          "udp.check_checksum:TRUE",
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      assert.doesNotMatch(text, /Malformed/);
      assert.doesNotMatch(text, /\[(Checksum Status|Header checksum status): Bad\]/);
      assert.doesNotMatch(text, /incorrect, should be/);
      // The dissector saw what we meant to send.
      for (
        const expected of [
          /DHCP: Offer/,
          /DHCP: ACK/,
          /DHCP: NAK/,
          /Rapid Commit/,
          /Classless Static Route/,
          /Domain Search/,
          /Router Advertisement/,
          /Neighbor Advertisement/,
          /Recursive DNS Server/,
          /DNS Search List/,
          /Advertise \(2\)/,
          /Reply \(7\)/,
          /NotOnLink/,
          /Echo \(ping\) reply/,
          /Address Resolution Protocol \(reply\)/,
        ]
      ) assert.match(text, expected);
    } finally {
      if (!Deno.env.get("KEEP_PCAP")) await Deno.remove(path);
    }
  },
});
