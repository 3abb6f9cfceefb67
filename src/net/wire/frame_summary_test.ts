import { assertEquals } from "../../../tests/support/assert.ts";
import { describeFrame } from "./frame_summary.ts";
import { guestIpv4Frame, guestIpv6Frame, udpDatagram } from "../../../tests/support/net/frames.ts";
import { IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP } from "./ip_protocol.ts";
import { parseIpv6 } from "../../../ffi/ip_address_text.ts";

Deno.test("describeFrame() sums up ARP, IPv4 and IPv6 frames on one line", () => {
  const arp = new Uint8Array(42);
  arp.set([0x08, 0x06], 12);
  arp.set([0, 1, 8, 0, 6, 4, 0, 1], 14);
  arp.set([10, 0, 2, 15], 28);
  arp.set([10, 0, 2, 2], 38);
  assertEquals(describeFrame(arp), "ARP who-has 10.0.2.2 tell 10.0.2.15 len 42");
  const syn = new Uint8Array(20);
  syn.set([0xa0, 0x28, 0, 80], 0);
  syn[12] = 5 << 4;
  syn[13] = 0x02 | 0x10; // SYN, ACK
  assertEquals(
    describeFrame(guestIpv4Frame(IPPROTO_TCP, 0x0a00020f, 0x0a000202, syn)),
    "IPv4 10.0.2.15:41000 > 10.0.2.2:80 TCP [S.] len 54",
  );
  const guest = parseIpv6("fe80::5054:ff:fe12:3456")!;
  const router = parseIpv6("fe80::1")!;
  assertEquals(
    describeFrame(
      guestIpv6Frame(IPPROTO_UDP, guest, router, udpDatagram(546, 547, new Uint8Array(4))),
    ),
    "IPv6 [fe80::5054:ff:fe12:3456]:546 > [fe80::1]:547 UDP len 66",
  );
  assertEquals(
    describeFrame(guestIpv6Frame(IPPROTO_ICMPV6, guest, router, new Uint8Array([133, 0, 0, 0]))),
    "IPv6 [fe80::5054:ff:fe12:3456] > [fe80::1] ICMPv6 type 133 code 0 len 58",
  );
  assertEquals(describeFrame(new Uint8Array(10)), "runt frame, len 10");
  assertEquals(describeFrame(new Uint8Array(20).fill(0x08, 12, 13)), "IPv4 (truncated) len 20");
  const other = new Uint8Array(60);
  other.set([0x88, 0xcc], 12);
  assertEquals(describeFrame(other), "EtherType 0x88cc len 60");
});
