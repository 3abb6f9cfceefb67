/**
 * Worker side of tests/support/loop/eventfd_ticker.ts: signals the eventfd it is given
 * at the requested pace (sleeping with Atomics.wait between signals). It posts "ready"
 * once loaded and "done" after the last signal. It never closes the fd: the main
 * thread owns it.
 *
 * @module
 */
/// <reference lib="deno.worker" />

import { EventFd } from "../../../ffi/event_fd.ts";
import type { TickerRequest } from "./eventfd_ticker.ts";

const US_PER_MS = 1000;

self.onmessage = (event: MessageEvent<TickerRequest>) => {
  const { fd, count, intervalUs } = event.data;
  const ticker = EventFd.fromFd(fd);
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < count; i++) {
    Atomics.wait(sleeper, 0, 0, intervalUs / US_PER_MS);
    ticker.signal();
  }
  self.postMessage("done");
};
self.postMessage("ready");
