/**
 * The contract between the vhost-user control plane (src/vhost_user/), which owns
 * the connection, the guest memory map and the kick/call eventfds, and the
 * datapath (src/tap/vhost_user_link.ts), which runs the virtqueues. It lives below both
 * users (imports point down: vhost_user/ → tap/).
 *
 * virtio-net queue numbering (virtio 1.2 §5.1.2): queue 0 is receiveq1 (frames to
 * the guest, "RX"), queue 1 is transmitq1 (frames from the guest, "TX"); with
 * VIRTIO_NET_F_MQ, queue 2k is receiveq(k+1) and 2k+1 transmitq(k+1), for up to
 * {@link MAX_QUEUE_PAIRS} pairs (the control queue stays in QEMU).
 *
 * @module
 */

import type { StartedVring } from "../virtio/started_vring.ts";
import type { GuestWriteLog } from "../virtio/guest_write_log.ts";

/**
 * Queue pairs a datapath serves at most: 16 (Linux guests use one pair per vCPU; the
 * task's bound). The control plane offers as many (GET_QUEUE_NUM).
 */
export const MAX_QUEUE_PAIRS = 16;

/** virtio-net receive queue index (virtio 1.2 §5.1.2). */
export const RX_QUEUE_INDEX = 0;
/** virtio-net transmit queue index (virtio 1.2 §5.1.2). */
export const TX_QUEUE_INDEX = 1;

/** Whether ring `index` is a transmit queue (transmitq(k+1) is ring 2k+1, virtio 1.2 §5.1.2). */
export function isTransmitRing(index: number): boolean {
  return (index & 1) === TX_QUEUE_INDEX;
}

/** The datapath behind a vhost-user session. */
export interface VringDatapath {
  /** Ring `ring.index` has addresses, a kick fd and is enabled: it may be used until stopped. */
  startVring(ring: StartedVring, now: number): void;

  /**
   * From now on, every write ring `index` makes into guest memory (its buffers and its
   * used ring) is reported to `log`; null stops reporting. Sent while the ring runs,
   * when the front-end turns dirty logging on or off (live migration) or replaces the
   * log; a ring that is not started ignores it (it gets the log with its start).
   */
  setWriteLog(index: number, log: GuestWriteLog | null): void;

  /**
   * Started TX ring `index` was disabled (`enabled` false) or enabled again by
   * SET_VRING_ENABLE. A started but disabled ring is still processed, without side
   * effects (vhost-user.rst "Ring states": a network device takes and discards its TX
   * frames), so the guest gets back what it queued there before it stopped using the
   * queue. The control plane stops a disabled RX ring instead: it supplies nothing.
   */
  setTransmitEnabled(index: number, enabled: boolean): void;

  /** The frontend kicked ring `index` (its kick eventfd became readable and was drained). */
  kick(index: number, now: number): void;

  /**
   * Stops using ring `index` and drops every view into its memory — also when it
   * throws: the control plane unmaps the memory afterwards in every case.
   * @returns where to resume (VHOST_USER_GET_VRING_BASE reply `num`): the next
   *   available-ring index of a split ring; of a packed ring, the next slot to read and
   *   the next used slot with their wrap counters (src/virtio/packed_ring_layout.ts)
   */
  stopVring(index: number): number;

  /**
   * The front-end's session ended, after every ring was stopped: no ring of it starts
   * again (a new front-end gets a new datapath). Until then a link without rings may
   * only be paused (a VM stopped, a guest resetting its device).
   */
  frontendGone(now: number): void;
}
