/**
 * A ring that starts before its call fd arrives. QEMU restarting a pair that is still
 * enabled (after GET_VRING_BASE, which drops the call fd: VM stop and cont, guest
 * reset, a migration target whose enables came first) sends SET_VRING_KICK, which
 * starts the ring, and only then SET_VRING_CALL. A used element published in between
 * is counted as signalled by the split ring's VIRTIO_F_EVENT_IDX bookkeeping, yet no
 * interrupt went out; the guest, waiting at its used_event with a vector of its own
 * per queue, would never be interrupted again. The new call fd is signalled once.
 */
import assert from "node:assert/strict";
import {
  BackendRig,
  RIG_FEATURES,
  RING_SIZE,
  ringAreas,
  userRingAreas,
  wholeMemoryTable,
} from "../../tests/support/vhost_user/backend_doubles.ts";
import { encodeRequest } from "../../tests/support/vhost_user/request_encoder.ts";
import { Request } from "./protocol.ts";
import { u64Payload, vringAddrPayload, vringStatePayload } from "./payload_codec.ts";
import { SplitVirtqueue } from "../virtio/virtqueue.ts";
import { DescriptorChain } from "../virtio/descriptor_chain.ts";

const MEMORY_SIZE = 0x20000;
/** used_event: the u16 after the available ring's entries (virtio 1.2 §2.7.10). */
const USED_EVENT_AT = 4 + 2 * RING_SIZE;
/** The used ring's idx field (virtio 1.2 §2.7.8). */
const USED_IDX_AT = 2;
/** Available ring: idx at 2, entries from 4 (virtio 1.2 §2.7.6). */
const AVAIL_IDX_AT = 2;
const AVAIL_RING_AT = 4;
/** A split descriptor: addr (u64), len (u32), flags (u16), next (u16) (virtio 1.2 §2.7.5). */
const DESC_SIZE = 16;
const DESC_LEN_AT = 8;
const DESC_FLAGS_AT = 12;
const VIRTQ_DESC_F_WRITE = 2;
/** Where the guest's RX buffers lie, and how large each is. */
const BUFFERS_AT = 0x10000;
const BUFFER_BYTES = 2048;

/** NUM, BASE, ADDR and KICK of ring 0, as QEMU's vhost_virtqueue_start sends them. */
function setUpRing(rig: BackendRig): void {
  rig.send(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(0, RING_SIZE)));
  rig.send(encodeRequest(Request.SET_VRING_BASE, vringStatePayload(0, 0)));
  rig.send(encodeRequest(Request.SET_VRING_ADDR, vringAddrPayload(0, userRingAreas(0))));
  rig.send(encodeRequest(Request.SET_VRING_KICK, u64Payload(0)), [rig.fds.create()]);
}

Deno.test("`VhostUserBackend` signals a running ring's new call fd once: an interrupt decided on before it came is not lost", () => {
  const rig = new BackendRig();
  rig.send(encodeRequest(Request.SET_OWNER));
  rig.send(encodeRequest(Request.SET_FEATURES, u64Payload(RIG_FEATURES)));
  const memory = rig.fds.memfd(MEMORY_SIZE);
  rig.send(encodeRequest(Request.SET_MEM_TABLE, wholeMemoryTable(MEMORY_SIZE)), [memory.fd]);
  rig.send(encodeRequest(Request.SET_VRING_ENABLE, vringStatePayload(0, 1)));
  setUpRing(rig);
  rig.send(encodeRequest(Request.SET_VRING_CALL, u64Payload(0)), [rig.fds.create()]);
  // A stop (GET_VRING_BASE drops the call fd), then the ring set up again, still enabled.
  rig.send(encodeRequest(Request.GET_VRING_BASE, vringStatePayload(0, 0)));
  assert.equal(rig.datapath.rings.size, 0);
  setUpRing(rig);
  assert.equal(
    rig.datapath.rings.size,
    1,
    "the ring runs from SET_VRING_KICK on, before its call fd",
  );
  const rx = new SplitVirtqueue(rig.datapath.rings.get(0)!, { name: "RX" });

  // The guest posts one writable buffer per frame and waits for used index 1.
  const view = new DataView(memory.bytes.buffer, memory.bytes.byteOffset, MEMORY_SIZE);
  const { descriptor, available, used } = ringAreas(0);
  let posted = 0;
  const chain = new DescriptorChain(RING_SIZE);
  const deliverFrame = (): boolean => {
    const at = descriptor + DESC_SIZE * posted;
    view.setUint32(at, BUFFERS_AT + BUFFER_BYTES * posted, true);
    view.setUint32(at + 4, 0, true);
    view.setUint32(at + DESC_LEN_AT, BUFFER_BYTES, true);
    view.setUint16(at + DESC_FLAGS_AT, VIRTQ_DESC_F_WRITE, true);
    view.setUint16(available + AVAIL_RING_AT + 2 * posted, posted, true);
    posted++;
    view.setUint16(available + AVAIL_IDX_AT, posted, true);
    assert.equal(rx.pop(chain), true);
    rx.pushUsed(chain.head, 100);
    chain.release();
    return rx.publish();
  };
  view.setUint16(available + USED_EVENT_AT, 0, true);
  assert.equal(deliverFrame(), true, "the first frame asks for an interrupt, with no call fd yet");

  const call = rig.fds.create();
  rig.send(encodeRequest(Request.SET_VRING_CALL, u64Payload(0)), [call]);
  assert.equal(rig.error, null);
  const notifier = rig.notifiers.get(call)!;
  assert.equal(notifier.signals, 1, "the guest is interrupted for the frame published before");

  // The guest read used index 1 and waits for the next element: interrupts go on.
  view.setUint16(available + USED_EVENT_AT, 1, true);
  assert.equal(deliverFrame(), true);
  assert.equal(view.getUint16(used + USED_IDX_AT, true), 2);
  assert.equal(notifier.signals, 2);
});

Deno.test("`VhostUserBackend` does not signal a call fd set on a ring that is not running", () => {
  const rig = new BackendRig();
  rig.send(encodeRequest(Request.SET_OWNER));
  rig.send(encodeRequest(Request.SET_FEATURES, u64Payload(RIG_FEATURES)));
  const call = rig.fds.create();
  rig.send(encodeRequest(Request.SET_VRING_CALL, u64Payload(0)), [call]);
  assert.equal(rig.error, null);
  assert.equal(rig.notifiers.get(call)!.signals, 0);
});
