/**
 * A guest driver unbound and bound again, as the harness front-end drives it: both
 * rings stopped (GET_VRING_BASE, as QEMU does when the device is reset), later set up
 * afresh at the same place with new, empty rings (SET_VRING_NUM/BASE/ADDR/KICK/CALL,
 * as QEMU does when the driver starts the device again). The new RX ring has no
 * buffers until the caller posts some.
 *
 * @module
 */

import { Request } from "../../../src/vhost_user/protocol.ts";
import { ringFootprint, SplitRingDriver } from "../virtio/split_ring_driver.ts";
import { RX, TX, type VhostUserFrontend } from "./vhost_user_frontend.ts";
import {
  u64Payload,
  vringAddrPayload,
  vringStatePayload,
} from "../../../src/vhost_user/payload_codec.ts";

/** Where negotiate() puts the rings: from this guest-physical address, RX then TX. */
const RINGS_BASE = 0x10000;

/** Stops both rings of `frontend` (the driver unbound: the device is reset). */
export async function stopRings(frontend: VhostUserFrontend): Promise<void> {
  for (const i of [RX, TX]) await frontend.stopRing(i);
}

/** Starts new empty rings of `ringSize` where negotiate() put the first ones (the driver bound again). */
export async function startRings(frontend: VhostUserFrontend, ringSize: number): Promise<void> {
  const vrings: SplitRingDriver[] = [];
  for (const i of [RX, TX]) {
    const base = RINGS_BASE + i * ringFootprint(ringSize);
    const region = frontend.memory.view(base, ringFootprint(ringSize));
    const vring = new SplitRingDriver({ index: i, base, size: ringSize, region });
    vrings.push(vring);
    frontend.send(Request.SET_VRING_NUM, vringStatePayload(i, ringSize));
    frontend.send(Request.SET_VRING_BASE, vringStatePayload(i, 0));
    frontend.send(
      Request.SET_VRING_ADDR,
      vringAddrPayload(i, {
        descriptor: frontend.memory.userAddress(vring.areas.descriptor),
        used: frontend.memory.userAddress(vring.areas.used),
        available: frontend.memory.userAddress(vring.areas.available),
      }),
    );
    frontend.send(Request.SET_VRING_KICK, u64Payload(i), [frontend.kicks[i].fd]);
    frontend.send(Request.SET_VRING_CALL, u64Payload(i), [frontend.calls[i].fd]);
  }
  frontend.vrings = vrings;
  // A round trip makes sure everything above was processed.
  await frontend.requestU64(Request.GET_FEATURES);
}
