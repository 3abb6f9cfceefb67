import assert from "node:assert/strict";
import { fileSizeOfFd } from "./mapped_memory.ts";
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

Deno.test("`MemFd.truncate()` resizes the file; a shrink seal makes it fail with EPERM", () => {
  const plain = MemFd.create("mem-fd-truncate", 4 * 4096);
  const sealable = MemFd.create("mem-fd-sealable", 4 * 4096, { allowSealing: true });
  try {
    plain.truncate(4096);
    assert.equal(plain.size, 4096);
    assert.equal(Deno.statSync(`/proc/self/fd/${plain.fd}`).size, 4096);
    // fileSizeOfFd() adds F_SEAL_SHRINK where sealing is allowed
    assert.equal(fileSizeOfFd(sealable.fd), 4 * 4096);
    assert.throws(() => sealable.truncate(0), /EPERM/);
    assert.equal(sealable.size, 4 * 4096);
    sealable.truncate(8 * 4096); // growing is still allowed
    assert.equal(fileSizeOfFd(plain.fd), 4096, "a memfd without MFD_ALLOW_SEALING stays unsealed");
    plain.truncate(0);
    assert.equal(Deno.statSync(`/proc/self/fd/${plain.fd}`).size, 0);
  } finally {
    plain.close();
    sealable.close();
  }
  assert.throws(() => plain.truncate(0), /closed/);
});
