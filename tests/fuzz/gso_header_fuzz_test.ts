/**
 * Random virtio-net headers on TX frames through the vhost-user link and the network
 * stack: segmentation fields (gso_type of every kind, ECN bit, gso_size 0 or not,
 * hdr_len below, at and past the frame, NEEDS_CSUM or not) on TCP and UDP frames of
 * both IP versions up to 64 KiB, with random offload features acked. A frame reaches
 * the TCP translator exactly when its header is valid for the features (virtio 1.2
 * §5.1.6.2) and its gso_type names its IP version and TCP; nothing throws, and every
 * chain goes back to the guest.
 *
 * Runs: TPASST_FUZZ_ITERATIONS (default 300), seed TPASST_FUZZ_SEED.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { Logger } from "../../src/log/logger.ts";
import { IPPROTO_TCP, IPPROTO_UDP } from "../../src/net/wire/ip_protocol.ts";
import { buildNetworkPlan } from "../../src/net/plan/network_plan.ts";
import type { L4Handler, L4Packet } from "../../src/net/l4_handler.ts";
import { NetworkStack } from "../../src/net/stack.ts";
import { guestIpv4Frame, guestIpv6Frame } from "../support/net/frames.ts";
import { VhostUserLink } from "../../src/tap/vhost_user_link.ts";
import { ArrayGuestMemory } from "../support/virtio/array_guest_memory.ts";
import {
  createNetHeader,
  encodeNetHeader,
  NET_HDR_SIZE,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
} from "../../src/tap/net_header.ts";
import { SplitRingDriver } from "../support/virtio/split_ring_driver.ts";

const runs = Number(Deno.env.get("TPASST_FUZZ_ITERATIONS") ?? 300);
const seed = Number(Deno.env.get("TPASST_FUZZ_SEED") ?? 1515);

const NO_HOST = { readFile: () => null, networkInterfaces: () => [] };
const GUEST4 = 0x0a000215, REMOTE4 = 0xc0000201;
const GUEST6 = new Uint8Array([0x20, 1, 0xd, 0xb8, ...new Array(11).fill(0), 0x15]);
const REMOTE6 = new Uint8Array([0x20, 1, 0xd, 0xb8, 0xff, 0xff, ...new Array(9).fill(0), 1]);

/** Counts the packets handed to it. */
class CountingL4 implements L4Handler {
  packets = 0;
  handlePacket(_p: L4Packet): void {
    this.packets++;
  }
}

const features = fc.record({
  checksumOffload: fc.boolean(),
  hostTso4: fc.boolean(),
  hostTso6: fc.boolean(),
  hostEcn: fc.boolean(),
  mergeableRxBuffers: fc.boolean(),
  indirectDescriptors: fc.constant(true),
});

const frameCase = fc.record({
  family: fc.constantFrom(4, 6),
  protocol: fc.constantFrom(IPPROTO_TCP, IPPROTO_TCP, IPPROTO_UDP),
  payload: fc.oneof(fc.integer({ min: 0, max: 3000 }), fc.integer({ min: 0, max: 65400 })),
  flags: fc.constantFrom(0, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_F_NEEDS_CSUM),
  gsoType: fc.oneof(
    fc.constantFrom(
      VIRTIO_NET_HDR_GSO_NONE,
      VIRTIO_NET_HDR_GSO_TCPV4,
      VIRTIO_NET_HDR_GSO_TCPV6,
      VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN,
      VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN,
      3, // UDP (UFO)
      5, // UDP_L4 (USO)
    ),
    fc.integer({ min: 0, max: 255 }),
  ),
  gsoSize: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 65535 })),
  // hdr_len relative to the frame: far below, the headers, at the end, just past, far past.
  hdrLen: fc.oneof(
    fc.constantFrom("zero", "headers", "end", "past-end"),
    fc.integer({ min: 0, max: 65535 }),
  ),
  layout: fc.constantFrom("one", "split", "indirect"),
});

/** Whether the link should take the frame, and whether TCP should then get it. */
function expected(
  f: { checksumOffload: boolean; hostTso4: boolean; hostTso6: boolean; hostEcn: boolean },
  c: { family: number; protocol: number; flags: number; gsoType: number; gsoSize: number },
  hdrLen: number,
  frameLength: number,
): { linkTakes: boolean; tcpGets: boolean } {
  const needsCsum = c.flags !== 0;
  if (needsCsum && !f.checksumOffload) return { linkTakes: false, tcpGets: false };
  if (c.gsoType === VIRTIO_NET_HDR_GSO_NONE) {
    return { linkTakes: true, tcpGets: c.protocol === IPPROTO_TCP };
  }
  const type = c.gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
  const allowed = f.checksumOffload &&
    ((type === VIRTIO_NET_HDR_GSO_TCPV4 && f.hostTso4) ||
      (type === VIRTIO_NET_HDR_GSO_TCPV6 && f.hostTso6));
  const valid = allowed && ((c.gsoType & VIRTIO_NET_HDR_GSO_ECN) === 0 || f.hostEcn) &&
    needsCsum && c.gsoSize > 0 && hdrLen <= frameLength;
  if (!valid) return { linkTakes: false, tcpGets: false };
  const family = type === VIRTIO_NET_HDR_GSO_TCPV4 ? 4 : 6;
  return { linkTakes: true, tcpGets: family === c.family && c.protocol === IPPROTO_TCP };
}

Deno.test(`VhostUserLink and NetworkStack take exactly the valid GSO TX frames (${runs} random headers)`, () => {
  let segmentedTaken = 0, gsoRefused = 0, mismatched = 0;
  fc.assert(
    fc.property(features, fc.array(frameCase, { minLength: 1, maxLength: 6 }), (f, cases) => {
      const logger = new Logger();
      logger.setSink(() => {});
      const memory = new ArrayGuestMemory();
      const driver = (index: number, base: number) =>
        new SplitRingDriver({ size: 16, index, features: f, memory, base, dataBytes: 1 << 20 });
      const rx = driver(0, 0x10_0000), tx = driver(1, 0x1000_0000);
      const plan = buildNetworkPlan({
        address4: "10.0.2.21/24",
        gateway4: "10.0.2.2",
        address6: "2001:db8::15",
        gateway6: "fe80::1",
      }, NO_HOST);
      const stack = new NetworkStack(plan, { logger });
      const tcp = new CountingL4(), udp = new CountingL4();
      stack.registerL4(IPPROTO_TCP, tcp);
      stack.registerL4(IPPROTO_UDP, udp);
      const link = new VhostUserLink(stack, { logger, clock: () => 0 });
      link.startVring(rx.vring(), 0);
      link.startVring(tx.vring(), 0);
      let linkTakes = 0, tcpGets = 0;
      for (const [i, c] of cases.entries()) {
        const l4 = new Uint8Array((c.protocol === IPPROTO_TCP ? 20 : 8) + c.payload);
        if (c.protocol === IPPROTO_TCP) l4[12] = 0x50; // data offset 5
        else new DataView(l4.buffer).setUint16(4, l4.length);
        const frame = c.family === 4
          ? guestIpv4Frame(c.protocol, GUEST4, REMOTE4, l4)
          : guestIpv6Frame(c.protocol, GUEST6, REMOTE6, l4);
        const headers = (c.family === 4 ? 34 : 54) + (c.protocol === IPPROTO_TCP ? 20 : 8);
        const hdrLen = typeof c.hdrLen === "number"
          ? c.hdrLen
          : { zero: 0, headers, end: frame.length, "past-end": frame.length + 1 }[c.hdrLen];
        const header = createNetHeader();
        header.flags = c.flags;
        header.gsoType = c.gsoType;
        header.gsoSize = c.gsoSize;
        header.hdrLen = hdrLen;
        header.csumStart = headers - (c.protocol === IPPROTO_TCP ? 20 : 8);
        header.csumOffset = c.protocol === IPPROTO_TCP ? 16 : 6;
        const packet = new Uint8Array(NET_HDR_SIZE + frame.length);
        encodeNetHeader(header, packet, 0);
        packet.set(frame, NET_HDR_SIZE);
        const addr = tx.alloc(packet.length);
        tx.write(addr, packet);
        const cut = c.layout === "one" ? packet.length : NET_HDR_SIZE + (i % 40);
        const pieces = [{ addr, length: cut, writable: false }];
        if (cut < packet.length) {
          pieces.push({ addr: addr + cut, length: packet.length - cut, writable: false });
        }
        assert.notEqual(tx.addChain(pieces, c.layout === "indirect"), null);
        const want = expected(f, c, hdrLen, frame.length);
        if (want.linkTakes) linkTakes++;
        if (want.tcpGets) tcpGets++;
        if (c.gsoType !== VIRTIO_NET_HDR_GSO_NONE) {
          if (want.tcpGets) segmentedTaken++;
          else if (want.linkTakes) mismatched++;
          else gsoRefused++;
        }
      }
      link.kick(1, 0);
      assert.equal(tx.takeUsed().length, cases.length, "every chain went back");
      assert.equal(link.counters.txFrames, linkTakes, "frames the link handed over");
      assert.equal(link.counters.txRejected, cases.length - linkTakes);
      assert.equal(tcp.packets, tcpGets, "frames TCP got");
      assert.equal(stack.drops.exception, undefined);
    }),
    { numRuns: runs, seed },
  );
  // The generator must reach each outcome, or it tests nothing.
  assert.ok(segmentedTaken > 0, "some GSO frames were valid");
  assert.ok(gsoRefused > 0, "some GSO headers were refused by the link");
  assert.ok(mismatched > 0, "some GSO frames named the wrong IP version or protocol");
});
