import assert from "node:assert/strict";
import { EventFd } from "./event_fd.ts";
import { openFdCount } from "./process.ts";

Deno.test("`EventFd.drain()` returns the summed signals, then 0", () => {
  const before = openFdCount();
  const event = EventFd.create();
  assert.equal(event.drain(), 0);
  event.signal();
  event.signal(41);
  assert.equal(event.drain(), 42);
  assert.equal(event.drain(), 0);
  event.signal(0xffffffff);
  event.signal(0xffffffff);
  assert.equal(event.drain(), 2 * 0xffffffff);
  assert.throws(() => event.signal(0), RangeError);
  assert.throws(() => event.signal(2 ** 32), RangeError);
  event.close();
  event.close();
  assert.throws(() => event.signal(), /closed/);
  assert.equal(openFdCount(), before);
});
