import assert from "node:assert/strict";
import fc from "fast-check";
import { flowHashIpv4, flowHashIpv6, frameFlowHash } from "./flow_hash.ts";

const TCP = 6;
const UDP = 17;
const ICMP = 1;

/** An Ethernet + IPv4 frame toward the guest with the given 5-tuple (header fields only). */
function ipv4Frame(
  src: number,
  dst: number,
  protocol: number,
  srcPort: number,
  dstPort: number,
  fragment = 0,
): Uint8Array {
  const f = new Uint8Array(14 + 20 + 20);
  const v = new DataView(f.buffer);
  v.setUint16(12, 0x0800);
  f[14] = 0x45;
  v.setUint16(20, fragment);
  f[23] = protocol;
  v.setUint32(26, src >>> 0);
  v.setUint32(30, dst >>> 0);
  v.setUint16(34, srcPort);
  v.setUint16(36, dstPort);
  return f;
}

function ipv6Frame(
  src: Uint8Array,
  dst: Uint8Array,
  protocol: number,
  srcPort: number,
  dstPort: number,
): Uint8Array {
  const f = new Uint8Array(14 + 40 + 20);
  const v = new DataView(f.buffer);
  v.setUint16(12, 0x86dd);
  f[14] = 0x60;
  f[20] = protocol;
  f.set(src, 22);
  f.set(dst, 38);
  v.setUint16(54, srcPort);
  v.setUint16(56, dstPort);
  return f;
}

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const port = fc.integer({ min: 0, max: 0xffff });
const address6 = fc.uint8Array({ minLength: 16, maxLength: 16 });

Deno.test("`frameFlowHash()` of an IPv4 TCP/UDP frame equals `flowHashIpv4()` of its addresses and ports", () => {
  fc.assert(
    fc.property(u32, u32, fc.constantFrom(TCP, UDP), port, port, (src, dst, proto, sp, dp) => {
      assert.equal(
        frameFlowHash(ipv4Frame(src, dst, proto, sp, dp)),
        flowHashIpv4(src, dst, proto, sp, dp),
      );
      // signed and unsigned forms of an address are the same address
      assert.equal(
        flowHashIpv4(src | 0, dst, proto, sp, dp),
        flowHashIpv4(src >>> 0, dst, proto, sp, dp),
      );
    }),
  );
});

Deno.test("`frameFlowHash()` of an IPv6 TCP/UDP frame equals `flowHashIpv6()` of its addresses and ports", () => {
  fc.assert(
    fc.property(
      address6,
      address6,
      fc.constantFrom(TCP, UDP),
      port,
      port,
      (src, dst, proto, sp, dp) => {
        assert.equal(
          frameFlowHash(ipv6Frame(src, dst, proto, sp, dp)),
          flowHashIpv6(src, dst, proto, sp, dp),
        );
      },
    ),
  );
});

Deno.test("`frameFlowHash()` hashes ICMP and IPv4 fragments by addresses alone, and non-IP frames to 0", () => {
  const a = 0x0a000002;
  const b = 0xc0a80101;
  assert.equal(
    frameFlowHash(ipv4Frame(a, b, ICMP, 0x0800, 0x1234)),
    flowHashIpv4(a, b, ICMP, 0, 0),
  );
  // a later fragment carries no ports: all fragments of a datagram hash alike
  const first = ipv4Frame(a, b, UDP, 53, 4000, 0x2000);
  const later = ipv4Frame(a, b, UDP, 0x1111, 0x2222, 0x00b9);
  assert.equal(frameFlowHash(first), frameFlowHash(later));
  assert.equal(frameFlowHash(first), flowHashIpv4(a, b, UDP, 0, 0));
  const arp = new Uint8Array(42);
  arp[12] = 0x08;
  arp[13] = 0x06;
  assert.equal(frameFlowHash(arp), 0);
  assert.equal(frameFlowHash(new Uint8Array(0)), 0);
});

Deno.test("`frameFlowHash()` never throws and returns a u32 for any bytes, truncated headers included", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 80 }),
      fc.constantFrom(0x0800, 0x86dd, 0),
      (bytes, type) => {
        if (bytes.length >= 14 && type !== 0) {
          bytes[12] = type >> 8;
          bytes[13] = type & 0xff;
        }
        const hash = frameFlowHash(bytes);
        assert.ok(Number.isInteger(hash) && hash >= 0 && hash <= 0xffffffff);
      },
    ),
  );
});

Deno.test("`flowHashIpv4()` spreads connections that differ only in their port evenly over 2 to 16 queues", () => {
  for (const queues of [2, 3, 4, 16]) {
    const counts = new Array(queues).fill(0);
    const flows = 4000;
    for (let p = 0; p < flows; p++) {
      counts[flowHashIpv4(0x7f000001, 0x0a000002, TCP, 32768 + p, 8080) % queues]++;
    }
    const even = flows / queues;
    for (const c of counts) {
      assert.ok(Math.abs(c - even) < even * 0.2, `${queues} queues: ${counts.join(",")}`);
    }
  }
});
