/**
 * virtio-net device feature bits (virtio 1.2 §5.1.3): what the device offers about
 * the virtio-net header and frames. They belong to the transport that reads and
 * writes that header (src/tap/vhost_user_link.ts, net_header.ts); the vhost-user
 * control plane negotiates them (src/vhost_user/protocol.ts imports them) and
 * src/virtio/ knows nothing of them.
 *
 * @module
 */

/**
 * VIRTIO_NET_F_CSUM (virtio 1.2 §5.1.3): the driver may leave a transmitted frame's
 * TCP/UDP checksum for the device (NEEDS_CSUM). We terminate TCP and UDP, so a
 * partial checksum is simply not verified.
 */
export const VIRTIO_NET_F_CSUM = 0;
/**
 * VIRTIO_NET_F_GUEST_CSUM (virtio 1.2 §5.1.3): the device may mark received frames
 * DATA_VALID, so that the driver does not verify their checksums.
 */
export const VIRTIO_NET_F_GUEST_CSUM = 1;
/** VIRTIO_NET_F_MTU (virtio 1.2 §5.1.3): the device reports an MTU. */
export const VIRTIO_NET_F_MTU = 3;
/**
 * VIRTIO_NET_F_GUEST_TSO4 (virtio 1.2 §5.1.3): the device may give the driver TCP/IPv4
 * frames larger than the MTU, marked GSO_TCPV4 with the segment size (§5.1.6.4).
 * Requires VIRTIO_NET_F_GUEST_CSUM (§5.1.3.1).
 */
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
/** VIRTIO_NET_F_GUEST_TSO6 (virtio 1.2 §5.1.3): as GUEST_TSO4, for TCP/IPv6 (GSO_TCPV6). */
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
/**
 * VIRTIO_NET_F_GUEST_ECN (virtio 1.2 §5.1.3): GUEST_TSO frames may carry the GSO_ECN
 * bit. Requires GUEST_TSO4 or GUEST_TSO6.
 */
export const VIRTIO_NET_F_GUEST_ECN = 9;
/**
 * VIRTIO_NET_F_HOST_TSO4 (virtio 1.2 §5.1.3): the driver may send TCP/IPv4 frames of up
 * to 64 KiB marked GSO_TCPV4 for the device to segment (§5.1.6.2). We terminate TCP,
 * so such a frame is translated like any segment. Requires VIRTIO_NET_F_CSUM.
 */
export const VIRTIO_NET_F_HOST_TSO4 = 11;
/** VIRTIO_NET_F_HOST_TSO6 (virtio 1.2 §5.1.3): as HOST_TSO4, for TCP/IPv6 (GSO_TCPV6). */
export const VIRTIO_NET_F_HOST_TSO6 = 12;
/**
 * VIRTIO_NET_F_HOST_ECN (virtio 1.2 §5.1.3): HOST_TSO frames may carry the GSO_ECN bit.
 * Requires HOST_TSO4 or HOST_TSO6.
 */
export const VIRTIO_NET_F_HOST_ECN = 13;
/** VIRTIO_NET_F_MAC (virtio 1.2 §5.1.3). Not offered: QEMU owns the config space. */
export const VIRTIO_NET_F_MAC = 5;
/** VIRTIO_NET_F_MRG_RXBUF (virtio 1.2 §5.1.3): mergeable receive buffers. */
export const VIRTIO_NET_F_MRG_RXBUF = 15;
/** VIRTIO_NET_F_STATUS (virtio 1.2 §5.1.3). Not offered: QEMU owns the config space. */
export const VIRTIO_NET_F_STATUS = 16;
/**
 * VIRTIO_NET_F_MQ (virtio 1.2 §5.1.3): several receive/transmit queue pairs. QEMU's
 * vhost-user-net shows it to the guest only when the backend offers it (and `mq=on`);
 * the control queue that sets the number of pairs stays in QEMU, which enables and
 * disables the pairs' rings with SET_VRING_ENABLE.
 */
export const VIRTIO_NET_F_MQ = 22;
