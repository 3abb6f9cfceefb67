/**
 * What the tests of both ring engines (src/virtio/virtqueue_test.ts,
 * src/virtio/packed_virtqueue_test.ts) set up alike: a queue over a test driver's
 * vring with its log lines kept, and the check that a queue whose write log was
 * turned off reports nothing.
 *
 * @module
 */

import assert from "node:assert/strict";
import { DescriptorChain } from "../../../src/virtio/descriptor_chain.ts";
import type { StartedVring } from "../../../src/virtio/started_vring.ts";
import type { Virtqueue, VirtqueueOptions } from "../../../src/virtio/virtqueue.ts";
import type { WriteRecord } from "./recording_write_log.ts";
import { recordingLogger } from "../recording_logger.ts";

/** A queue named "TX" over `driver`'s vring, started by `start`, a chain for it and its log lines. */
export function queueFixture<D extends { vring(): StartedVring }, Q extends Virtqueue>(
  driver: D,
  start: (ring: StartedVring, options: VirtqueueOptions) => Q,
): { driver: D; queue: Q; chain: DescriptorChain; lines: string[] } {
  const { logger, lines } = recordingLogger();
  const queue = start(driver.vring(), { name: "TX", logger });
  const chain = new DescriptorChain(queue.size);
  return { driver, queue, chain, lines };
}

/**
 * Turns `queue`'s write log off, then pops the chain `offer` makes available, uses and
 * publishes it and asks for notifications: `record` must see nothing reported, and the
 * ring written all the same.
 */
export function assertNothingReportedWithLogOff(
  queue: Virtqueue,
  chain: DescriptorChain,
  record: WriteRecord,
  offer: () => void,
): void {
  queue.setWriteLog(null);
  offer();
  record.snapshot();
  assert.ok(queue.pop(chain, 0));
  queue.pushUsed(chain.head, 1);
  queue.publish();
  queue.enableNotifications();
  assert.deepEqual(record.ranges, [], "logging off: nothing reported");
  assert.notDeepEqual(record.unreported(), [], "the ring was written all the same");
}
