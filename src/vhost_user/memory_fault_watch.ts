/**
 * Tells vhost-user sessions that guest memory became unreadable. The helper's
 * SIGBUS handler (ffi/memory_guard.ts) turns a mapping whose file shrank into zeros
 * and signals one process-wide eventfd; every event loop that has a session
 * watches that eventfd once, and a wake-up calls every subscriber in the process,
 * each of which then looks at its own mappings. Several sessions (and loops, in
 * tests) may share the process; the eventfd is only a wake-up, the per-mapping
 * faulted flags say which session is hit.
 *
 * @module
 */
import { MemoryGuard } from "../../ffi/memory_guard.ts";
import type { EventLoop } from "../loop/event_loop.ts";

/** Called after guarded faults, with the loop's time of the wake-up. */
export type MemoryFaultListener = (now: number) => void;

interface Subscription {
  readonly listener: MemoryFaultListener;
}

const subscriptions = new Set<Subscription>();
/** Subscriptions per loop: the loop watches the eventfd while it has any. */
const subscribersPerLoop = new Map<EventLoop, number>();

function onFaultSignal(_events: number, now: number): void {
  MemoryGuard.drainFaults();
  for (const subscription of [...subscriptions]) {
    // a subscriber that has unsubscribed meanwhile (a session dropped by an earlier
    // listener's work) is skipped
    if (subscriptions.has(subscription)) subscription.listener(now);
  }
}

/**
 * Calls `listener` after every guarded fault in this process, through a watch of
 * the memory guard's eventfd on `loop` (one watch per loop, whatever the number of
 * subscribers).
 * @returns a function that unsubscribes (safe to call twice); the loop stops
 *   watching with its last subscriber
 * @throws NativeError when the guard cannot be installed or the loop refuses the fd
 */
export function watchMemoryFaults(loop: EventLoop, listener: MemoryFaultListener): () => void {
  const fd = MemoryGuard.faultSignalFd();
  const count = subscribersPerLoop.get(loop) ?? 0;
  if (count === 0) loop.watch(fd, onFaultSignal);
  subscribersPerLoop.set(loop, count + 1);
  const subscription: Subscription = { listener };
  subscriptions.add(subscription);
  return () => {
    if (!subscriptions.delete(subscription)) return;
    const left = (subscribersPerLoop.get(loop) ?? 1) - 1;
    if (left > 0) {
      subscribersPerLoop.set(loop, left);
      return;
    }
    subscribersPerLoop.delete(loop);
    loop.unwatch(fd);
  };
}
