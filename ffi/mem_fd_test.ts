import assert from "node:assert/strict";
import { MemFd } from "./mem_fd.ts";
import { openFdCount } from "./process.ts";

Deno.test("`MemFd.create()` makes a file of the requested size that close() releases", () => {
  const before = openFdCount();
  const memory = MemFd.create("mem-fd-test", 3 * 4096);
  assert.equal(memory.size, 3 * 4096);
  assert.ok(memory.fd >= 0);
  assert.equal(openFdCount(), before + 1);
  assert.equal(Deno.statSync(`/proc/self/fd/${memory.fd}`).size, 3 * 4096);
  memory.close();
  memory.close();
  assert.equal(memory.fd, -1);
  assert.equal(openFdCount(), before);
});
