/**
 * What the virtqueue engine needs to run one started split virtqueue: the views of
 * its three parts, guest memory and the negotiated ring features. The vhost-user
 * control plane fills it (see src/tap/vring_datapath.ts).
 *
 * @module
 */

import type { GuestMemory } from "./guest_memory.ts";
import type { GuestWriteLog } from "./guest_write_log.ts";

/** Feature bits the datapath must honour, as negotiated with the frontend. */
export interface NegotiatedFeatures {
  /** VIRTIO_F_RING_EVENT_IDX (bit 29): used_event / avail_event (virtio 1.2 §2.7.10). */
  readonly eventIndex: boolean;
  /** VIRTIO_F_INDIRECT_DESC (bit 28): indirect descriptor tables (virtio 1.2 §2.7.5.3). */
  readonly indirectDescriptors: boolean;
  /** VIRTIO_NET_F_MRG_RXBUF (bit 15): a received frame may span several buffers (§5.1.6.3). */
  readonly mergeableRxBuffers: boolean;
  /** VIRTIO_NET_F_CSUM (bit 0): transmitted frames may carry NEEDS_CSUM (§5.1.6.2). */
  readonly checksumOffload: boolean;
  /** VIRTIO_NET_F_GUEST_CSUM (bit 1): received frames may be marked DATA_VALID (§5.1.6.4). */
  readonly guestChecksum: boolean;
  /**
   * VIRTIO_F_RING_PACKED (bit 34): the rings are packed virtqueues (virtio 1.2 §2.8);
   * absent or false: split (§2.7).
   */
  readonly packedRing?: boolean;
  /** VIRTIO_NET_F_HOST_TSO4 (bit 11): transmitted frames may be GSO_TCPV4 (§5.1.6.2); absent: false. */
  readonly hostTso4?: boolean;
  /** VIRTIO_NET_F_HOST_TSO6 (bit 12): transmitted frames may be GSO_TCPV6; absent: false. */
  readonly hostTso6?: boolean;
  /** VIRTIO_NET_F_HOST_ECN (bit 13): transmitted GSO frames may carry GSO_ECN; absent: false. */
  readonly hostEcn?: boolean;
  /** VIRTIO_NET_F_GUEST_TSO4 (bit 7): received frames may be GSO_TCPV4 (§5.1.6.4); absent: false. */
  readonly guestTso4?: boolean;
  /** VIRTIO_NET_F_GUEST_TSO6 (bit 8): received frames may be GSO_TCPV6; absent: false. */
  readonly guestTso6?: boolean;
  /**
   * The MTU the device reports to the driver (VIRTIO_NET_F_MTU acked and set by
   * VHOST_USER_NET_SET_MTU, virtio 1.2 §5.1.4): the largest IP packet the guest sends
   * unsegmented and expects. 0 or absent: the device reports none.
   */
  readonly mtu?: number;
}

/**
 * Everything the datapath needs to run one virtqueue, valid until stopVring(). A packed
 * ring (features.packedRing) has no available and used rings: its three parts are the
 * descriptor ring, the driver event suppression area and the device event suppression
 * area (virtio 1.2 §2.8), given here as `descriptorTable`, `availableRing` and
 * `usedRing` (the addresses QEMU sends in SET_VRING_ADDR's descriptor, available and
 * used fields).
 */
export interface StartedVring {
  /** Queue index (virtio-net: 0 receiveq, 1 transmitq; virtio 1.2 §5.1.2). */
  readonly index: number;
  /** Number of descriptors: a power of two, 1..32768 (virtio 1.2 §2.7); packed: any, 1..32768 (§2.8). */
  readonly size: number;
  /** The descriptor table (packed: descriptor ring), exactly 16 × size bytes (virtio 1.2 §2.7.5, §2.8.13). */
  readonly descriptorTable: Uint8Array;
  /** The available ring, exactly 6 + 2 × size bytes (virtio 1.2 §2.7.6); packed: the 4-byte driver area (§2.8.14). */
  readonly availableRing: Uint8Array;
  /** The used ring, exactly 6 + 8 × size bytes (virtio 1.2 §2.7.8); packed: the 4-byte device area (§2.8.14). */
  readonly usedRing: Uint8Array;
  /**
   * Where to resume (VHOST_USER_SET_VRING_BASE `num`): the next available-ring index of
   * a split ring; a packed ring's both positions and wrap counters (packed_ring_layout.ts).
   */
  readonly lastAvailIndex: number;
  /** Guest memory by guest-physical address, for descriptor buffers. */
  readonly memory: GuestMemory;
  /** Negotiated features relevant to the ring. */
  readonly features: NegotiatedFeatures;
  /**
   * Where writes into guest memory are reported while the front-end logs dirty pages
   * (null or absent: not logging). It may change while the ring runs
   * (`VringDatapath.setWriteLog`).
   */
  readonly writeLog?: GuestWriteLog | null;
  /** Signals the frontend's call eventfd; does nothing when the frontend gave none. */
  notifyGuest(): void;
}
