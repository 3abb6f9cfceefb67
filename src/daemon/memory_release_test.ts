import assert from "node:assert/strict";
import { readKernelFile } from "../../ffi/kernel_file.ts";
import {
  cleanFileMappings,
  dropCleanFilePages,
  MemoryRelease,
  RELEASE_MIN_FREED,
  releaseMemory,
} from "./memory_release.ts";

Deno.test("`MemoryRelease.tick()` releases once the flows fell RELEASE_MIN_FREED below their peak", () => {
  let flows = 0;
  let released = 0;
  const m = new MemoryRelease({ flowCount: () => flows }, () => released++);
  const samples = [0, 100, 2000, 1900, 2000 - RELEASE_MIN_FREED + 1, 2000 - RELEASE_MIN_FREED];
  const results = samples.map((n) => {
    flows = n;
    return m.tick();
  });
  assert.deepEqual(results, [false, false, false, false, false, true]);
  assert.equal(released, 1);
  // the peak starts again from the count at the release: a slow drift does not release
  for (const n of [1700, 1600, 1500, 1600]) {
    flows = n;
    assert.equal(m.tick(), false, `at ${n}`);
  }
  flows = 0;
  assert.equal(m.tick(), true, "the rest of the flows gone");
  assert.equal(m.releases, 2);
  // steady churn at one level never releases
  for (let i = 0; i < 10; i++) {
    flows = 500 + (i % 2) * (RELEASE_MIN_FREED - 1);
    assert.equal(m.tick(), false);
  }
});

Deno.test("`releaseMemory()` runs without --expose-gc (malloc_trim only)", () => {
  releaseMemory();
});

const SMAPS_SAMPLE = `55d0a0000000-55d0a1000000 r--p 00000000 fe:01 1234    /usr/bin/deno
Size:              16384 kB
Rss:                4096 kB
Private_Dirty:         0 kB
Shared_Dirty:          0 kB
Anonymous:             0 kB
Locked:                0 kB
VmFlags: rd mr mw me sd
55d0a1000000-55d0a2000000 r-xp 01000000 fe:01 1234    /usr/bin/deno
Rss:                8192 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me sd
55d0a2000000-55d0a2010000 r--p 02000000 fe:01 1234    /usr/bin/deno
Rss:                  64 kB
Private_Dirty:        64 kB
Anonymous:            64 kB
VmFlags: rd mr mw me ac sd
55d0a2010000-55d0a2020000 rw-p 02010000 fe:01 1234    /usr/bin/deno
Rss:                  64 kB
Anonymous:             0 kB
VmFlags: rd wr mr mw me ac sd
7f0000000000-7f0000100000 r--s 00000000 00:01 77      /memfd:guest (deleted)
Rss:                1024 kB
Anonymous:             0 kB
VmFlags: rd mr mw me sd
7f0000100000-7f0000200000 r--p 00000000 fe:01 88      /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                   0 kB
Anonymous:             0 kB
VmFlags: rd mr mw me sd
7f0000200000-7f0000300000 r-xp 00000000 fe:01 89      /usr/lib/libpinned.so
Rss:                1024 kB
Anonymous:             0 kB
Locked:             1024 kB
VmFlags: rd ex mr mw me lo sd
7f0000300000-7f0000301000 r--p 00000000 00:00 0       [vvar]
Rss:                   4 kB
Anonymous:             0 kB
VmFlags: rd mr pf io de dd sd
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0       [vdso]
Rss:                   8 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me de sd
7ffe00000000-7ffe00100000 r--p 00000000 fe:01 90      /usr/lib/libcut.so
Rss:                1024 kB
`;

Deno.test("`cleanFileMappings()` picks resident, read-only private file mappings with no written page", () => {
  assert.deepEqual(cleanFileMappings(SMAPS_SAMPLE), [
    { start: 0x55d0a0000000n, length: 0x1000000n },
    { start: 0x55d0a1000000n, length: 0x1000000n },
  ]);
});

function rssFileKiB(): number {
  const status = readKernelFile("/proc/self/status")!;
  return Number(/RssFile:\s+(\d+) kB/.exec(status)![1]);
}

Deno.test("`dropCleanFilePages()` shrinks the resident file pages and the process carries on", () => {
  // A runtime binary written moments ago (a fresh install) has its pages dirty in the page
  // cache, and smaps counts them dirty: none would be picked. Written back, they are clean.
  using runtime = Deno.openSync(Deno.execPath());
  runtime.syncSync();
  const before = rssFileKiB();
  const dropped = dropCleanFilePages();
  const after = rssFileKiB();
  assert.ok(dropped > 0n, "no mapping dropped");
  // the test runner's own code is resident again at once; the rest is not
  assert.ok(before - after >= 2048, `RssFile ${before} → ${after} KiB`);
  // the runtime's code and data come back on use
  assert.equal(JSON.parse(JSON.stringify({ a: [1, 2, 3] })).a.length, 3);
});
