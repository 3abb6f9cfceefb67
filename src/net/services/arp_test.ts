import assert from "node:assert/strict";
import fc from "fast-check";
import { MAC_BROADCAST } from "../wire/address.ts";
import {
  ARP_OP_REPLY,
  ARP_OP_REQUEST,
  ArpResponder,
  buildArp,
  newArpMessage,
  parseArp,
} from "./arp.ts";
import {
  buildEthernet,
  ETHERTYPE_ARP,
  newEthernetHeader,
  parseEthernet,
} from "../wire/ethernet.ts";
import { GuestSender } from "../guest_sender.ts";
import { nextTask, RecordingLink } from "../../../tests/support/net/recording_link.ts";

const OUR = 0x9a559a559a55, GUEST = 0x525400000001;
const GUEST_IP = 0x0a000002, GW = 0x0a000001;

function request(senderIp: number, targetIp: number, op = ARP_OP_REQUEST): Uint8Array {
  const f = new Uint8Array(60);
  buildEthernet(f, 0, MAC_BROADCAST, GUEST, ETHERTYPE_ARP);
  buildArp(f, 14, { op, senderMac: GUEST, senderIp, targetMac: 0, targetIp });
  return f;
}

function setup() {
  const sender = new GuestSender(OUR);
  const link = new RecordingLink();
  sender.setLink(link);
  return { sender, link, arp: new ArpResponder(sender, GUEST_IP) };
}

Deno.test("`parseArp()` inverts `buildArp()`", () => {
  fc.assert(fc.property(
    fc.integer({ min: 0, max: 0xffff }),
    fc.integer({ min: 0, max: 0xffffffffffff }),
    fc.integer({ min: 0, max: 0xffffffff }),
    fc.integer({ min: 0, max: 0xffffffffffff }),
    fc.integer({ min: 0, max: 0xffffffff }),
    (op, senderMac, senderIp, targetMac, targetIp) => {
      const b = new Uint8Array(28);
      const m = { op, senderMac, senderIp, targetMac, targetIp };
      buildArp(b, 0, m);
      const out = newArpMessage();
      assert.equal(parseArp(b, 0, 28, out), "ok");
      assert.deepEqual(out, m);
    },
  ));
});

Deno.test("`parseArp()` rejects short and non-Ethernet/IPv4 messages without throwing", () => {
  const out = newArpMessage();
  assert.equal(parseArp(new Uint8Array(27), 0, 27, out), "arp-truncated");
  const b = new Uint8Array(28);
  buildArp(b, 0, newArpMessage());
  b[4] = 8;
  assert.equal(parseArp(b, 0, 28, out), "arp-unsupported");
  fc.assert(fc.property(fc.uint8Array({ maxLength: 40 }), (x) => {
    parseArp(x, 0, x.length, out);
  }));
});

Deno.test("`ArpResponder.handle()` answers for the gateway with our MAC", () => {
  const { arp, link } = setup();
  assert.equal(arp.handle(request(GUEST_IP, GW), 14, 60), "ok");
  const [f] = link.take();
  assert.equal(f.length, 42);
  const eth = newEthernetHeader();
  parseEthernet(f, eth);
  assert.deepEqual(eth, { dst: GUEST, src: OUR, etherType: ETHERTYPE_ARP });
  const m = newArpMessage();
  assert.equal(parseArp(f, 14, f.length, m), "ok");
  assert.deepEqual(m, {
    op: ARP_OP_REPLY,
    senderMac: OUR,
    senderIp: GW,
    targetMac: GUEST,
    targetIp: GUEST_IP,
  });
  // Any other address as well.
  arp.handle(request(GUEST_IP, 0x08080808), 14, 60);
  assert.equal(link.take().length, 1);
  assert.equal(arp.counters.replied, 2);
});

Deno.test("`ArpResponder.handle()` ignores the guest's own address, announcements and replies", () => {
  const { arp, link } = setup();
  arp.handle(request(0, GUEST_IP), 14, 60); // DAD probe for its own address
  arp.handle(request(GUEST_IP, GUEST_IP), 14, 60); // gratuitous
  arp.handle(request(GW, GW), 14, 60); // announcement
  arp.handle(request(GUEST_IP, GW, ARP_OP_REPLY), 14, 60);
  assert.equal(link.frames.length, 0);
  assert.equal(arp.counters.ignored, 4);
});

Deno.test("`ArpResponder.handle()` answering outside a batch of guest frames is flushed", async () => {
  const { link, arp } = setup();
  // No endOfBatch follows: the sender itself must end the task with a flush.
  assert.equal(arp.handle(request(GUEST_IP, GW), 14, 60), "ok");
  assert.equal(link.frames.length, 1);
  await nextTask();
  assert.equal(link.unflushedFrames, 0);
  assert.equal(link.flushes, 1);
});
