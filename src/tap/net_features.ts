/**
 * virtio-net device feature bits (virtio 1.2 §5.1.3): what the device offers about
 * the virtio-net header and frames. They belong to the transport that reads and
 * writes that header (src/tap/vhost_user_link.ts, net_header.ts); the vhost-user
 * control plane negotiates them (src/vhost_user/protocol.ts re-exports them) and
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
/** VIRTIO_NET_F_MAC (virtio 1.2 §5.1.3). Not offered: QEMU owns the config space. */
export const VIRTIO_NET_F_MAC = 5;
/** VIRTIO_NET_F_MRG_RXBUF (virtio 1.2 §5.1.3): mergeable receive buffers. */
export const VIRTIO_NET_F_MRG_RXBUF = 15;
/** VIRTIO_NET_F_STATUS (virtio 1.2 §5.1.3). Not offered: QEMU owns the config space. */
export const VIRTIO_NET_F_STATUS = 16;
