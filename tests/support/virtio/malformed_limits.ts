/**
 * How many malformed chains break a split virtqueue, for the tests of the queue
 * (src/virtio/virtqueue_test.ts) and of the link over it (src/tap/vhost_user_link_test.ts).
 *
 * @module
 */

import {
  MALFORMED_RUN_DESCRIPTOR_LIMIT,
  MALFORMED_RUN_LIMIT,
} from "../../../src/virtio/virtqueue.ts";

/**
 * Malformed chains of `perChain` descriptors each after which a queue breaks: at
 * MALFORMED_RUN_LIMIT chains or MALFORMED_RUN_DESCRIPTOR_LIMIT descriptors, whichever
 * comes first.
 */
export function chainsToBreak(perChain: number): number {
  return Math.min(MALFORMED_RUN_LIMIT, Math.ceil(MALFORMED_RUN_DESCRIPTOR_LIMIT / perChain));
}
