/**
 * The contract between the vhost-user control plane (this directory), which owns
 * the connection, the guest memory map and the kick/call eventfds, and the
 * datapath (src/tap/vhost_user_link.ts), which runs the virtqueues.
 *
 * virtio-net queue numbering (virtio 1.2 §5.1.2): queue 0 is receiveq1 (frames to
 * the guest, "RX"), queue 1 is transmitq1 (frames from the guest, "TX").
 *
 * @module
 */

import type { GuestMemory } from "../virtio/guest_memory.ts";

/** virtio-net receive queue index (virtio 1.2 §5.1.2). */
export const RX_QUEUE_INDEX = 0;
/** virtio-net transmit queue index (virtio 1.2 §5.1.2). */
export const TX_QUEUE_INDEX = 1;

/** Feature bits the datapath must honour, as negotiated with the frontend. */
export interface NegotiatedFeatures {
  /** VIRTIO_F_RING_EVENT_IDX (bit 29): used_event / avail_event (virtio 1.2 §2.7.10). */
  readonly eventIndex: boolean;
  /** VIRTIO_F_INDIRECT_DESC (bit 28): indirect descriptor tables (virtio 1.2 §2.7.5.3). */
  readonly indirectDescriptors: boolean;
  /** VIRTIO_NET_F_MRG_RXBUF (bit 15): a received frame may span several buffers (§5.1.6.3). */
  readonly mergeableRxBuffers: boolean;
}

/** Everything the datapath needs to run one split virtqueue, valid until stopVring(). */
export interface StartedVring {
  /** Queue index: {@link RX_QUEUE_INDEX} or {@link TX_QUEUE_INDEX}. */
  readonly index: number;
  /** Number of descriptors: a power of two, 1..32768 (virtio 1.2 §2.7). */
  readonly size: number;
  /** The descriptor table, exactly 16 × size bytes (virtio 1.2 §2.7.5). */
  readonly descriptorTable: Uint8Array;
  /** The available ring, exactly 6 + 2 × size bytes (virtio 1.2 §2.7.6). */
  readonly availableRing: Uint8Array;
  /** The used ring, exactly 6 + 8 × size bytes (virtio 1.2 §2.7.8). */
  readonly usedRing: Uint8Array;
  /** Where to resume consuming the available ring (VHOST_USER_SET_VRING_BASE). */
  readonly lastAvailIndex: number;
  /** Guest memory by guest-physical address, for descriptor buffers. */
  readonly memory: GuestMemory;
  /** Negotiated features relevant to the ring. */
  readonly features: NegotiatedFeatures;
  /** Signals the frontend's call eventfd; does nothing when the frontend gave none. */
  notifyGuest(): void;
}

/** The datapath behind a vhost-user session. */
export interface VringDatapath {
  /** Ring `ring.index` has addresses, a kick fd and is enabled: it may be used until stopped. */
  startVring(ring: StartedVring, now: number): void;

  /** The frontend kicked ring `index` (its kick eventfd became readable and was drained). */
  kick(index: number, now: number): void;

  /**
   * Stops using ring `index` and drops every view into its memory.
   * @returns the next available-ring index to process (VHOST_USER_GET_VRING_BASE reply)
   */
  stopVring(index: number): number;
}
