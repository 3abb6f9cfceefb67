import assert from "node:assert/strict";
import {
  Epoll,
  EPOLL_EVENT_DATA_HIGH,
  EPOLL_EVENT_DATA_LOW,
  EPOLL_EVENT_EVENTS,
  EPOLL_EVENT_SIZE,
  EPOLLIN,
  EPOLLOUT,
} from "./epoll.ts";
import { EventFd } from "./event_fd.ts";
import { openFdCount } from "./process.ts";

Deno.test("`Epoll.wait()` reports a signalled eventfd with its 64-bit tag", () => {
  const before = openFdCount();
  const epoll = Epoll.create();
  const event = EventFd.create();
  const buffer = new Uint8Array(4 * EPOLL_EVENT_SIZE);
  const view = new DataView(buffer.buffer);
  epoll.add(event.fd, EPOLLIN, 0x12345678, 0x9abcdef0);
  assert.equal(epoll.wait(buffer, 4, 0), 0);
  event.signal();
  assert.equal(epoll.wait(buffer, 4, 0), 1);
  assert.equal(view.getUint32(EPOLL_EVENT_EVENTS, true), EPOLLIN);
  assert.equal(view.getUint32(EPOLL_EVENT_DATA_LOW, true), 0x12345678);
  assert.equal(view.getUint32(EPOLL_EVENT_DATA_HIGH, true), 0x9abcdef0);
  epoll.modify(event.fd, EPOLLIN | EPOLLOUT, 7, 0);
  assert.equal(epoll.wait(buffer, 4, 0), 1);
  assert.equal(view.getUint32(EPOLL_EVENT_EVENTS, true), EPOLLIN | EPOLLOUT);
  assert.equal(view.getUint32(EPOLL_EVENT_DATA_LOW, true), 7);
  assert.equal(epoll.remove(event.fd), true);
  assert.equal(epoll.remove(event.fd), false);
  assert.equal(epoll.wait(buffer, 4, 0), 0);
  assert.throws(() => epoll.wait(buffer, 5, 0), RangeError);
  event.close();
  epoll.close();
  epoll.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`Epoll.waitAsync()` wakes when an eventfd is signalled later", async () => {
  const before = openFdCount();
  const epoll = Epoll.create();
  const event = EventFd.create();
  const buffer = new Uint8Array(EPOLL_EVENT_SIZE);
  epoll.add(event.fd, EPOLLIN, 1);
  const pending = epoll.waitAsync(buffer, 1, -1);
  const timer = setTimeout(() => event.signal(3), 20);
  assert.equal(await pending, 1);
  clearTimeout(timer);
  assert.equal(new DataView(buffer.buffer).getUint32(EPOLL_EVENT_DATA_LOW, true), 1);
  assert.equal(event.drain(), 3);
  event.close();
  epoll.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`Epoll.waitMicroseconds()` waits less than a millisecond and reports events", () => {
  const before = openFdCount();
  const epoll = Epoll.create();
  const event = EventFd.create();
  const buffer = new Uint8Array(EPOLL_EVENT_SIZE);
  epoll.add(event.fd, EPOLLIN, 5);
  // The shortest of several 200 µs waits: a millisecond-granular wait takes >= 1 ms.
  let shortest = Infinity;
  for (let i = 0; i < 5; i++) {
    const start = performance.now();
    assert.equal(epoll.waitMicroseconds(buffer, 1, 200), 0);
    shortest = Math.min(shortest, performance.now() - start);
  }
  assert.ok(shortest >= 0.2 && shortest < 0.9, `200 µs wait took ${shortest} ms`);
  event.signal();
  assert.equal(epoll.waitMicroseconds(buffer, 1, 1_000_000), 1);
  assert.equal(new DataView(buffer.buffer).getUint32(EPOLL_EVENT_DATA_LOW, true), 5);
  assert.equal(epoll.waitMicroseconds(buffer, 1, 0), 1);
  assert.throws(() => epoll.waitMicroseconds(buffer, 2, 0), RangeError);
  event.close();
  epoll.close();
  assert.equal(openFdCount(), before);
});
