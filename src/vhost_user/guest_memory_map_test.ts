import assert from "node:assert/strict";
import fc from "fast-check";
import { GuestMemoryMap } from "./guest_memory_map.ts";
import { FakeFds } from "./backend_test_doubles.ts";

const USER = 0x7f00_0000_0000;

function twoRegions() {
  const fds = new FakeFds();
  const map = new GuestMemoryMap(fds.map, 32);
  const a = fds.memfd(0x2000);
  const b = fds.memfd(0x3000);
  map.add({ guestAddress: 0, size: 0x2000, userAddress: USER, mmapOffset: 0 }, a.fd);
  map.add({
    guestAddress: 0x1_0000_0000,
    size: 0x2000,
    userAddress: USER + 0x10000,
    mmapOffset: 0x1000,
  }, b.fd);
  return { fds, map, a, b };
}

Deno.test("`GuestMemoryMap.view()` resolves guest-physical ranges in each region", () => {
  const { map, a, b } = twoRegions();
  a.bytes[0x10] = 0xaa;
  b.bytes[0x1000 + 0x20] = 0xbb; // region b starts at mmap offset 0x1000
  assert.equal(map.view(0x10, 0, 1)?.[0], 0xaa);
  assert.equal(map.view(0x20, 1, 4)?.[0], 0xbb);
  assert.equal(map.view(0x20, 1, 4)?.length, 4);
});

Deno.test("`GuestMemoryMap.view()` rejects ranges that leave a region, wrap or exceed 2^53", () => {
  const { map } = twoRegions();
  assert.equal(map.view(0x1fff, 0, 2), null, "crosses the end of region a");
  assert.notEqual(map.view(0x1fff, 0, 1), null);
  assert.equal(map.view(0x2000, 0, 1), null, "between regions");
  assert.equal(map.view(0xffffffff, 0xffffffff, 16), null, "wraps past 2^64");
  assert.equal(map.view(0, 0x200000, 1), null, "≥ 2^53");
  assert.equal(map.view(0, 1, 0x2001), null);
});

Deno.test("`GuestMemoryMap.view()` never returns a view shorter than asked (property)", () => {
  const { map } = twoRegions();
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.constantFrom(0, 1, 2, 0x1fffff, 0x200000),
      fc.integer({ min: 0, max: 0x10000 }),
      (low, high, length) => {
        const view = map.view(low, high, length);
        return view === null || view.length === length;
      },
    ),
  );
});

Deno.test("`GuestMemoryMap.viewByUserAddress()` resolves front-end addresses", () => {
  const { map, b } = twoRegions();
  b.bytes[0x1000 + 5] = 9;
  assert.equal(map.viewByUserAddress(USER + 0x10005, 1)?.[0], 9);
  assert.equal(map.viewByUserAddress(USER + 0x11fff, 2), null);
  assert.equal(map.viewByUserAddress(2 ** 53, 1), null);
});

Deno.test("`GuestMemoryMap.validate()` rejects zero-size, overlapping and out-of-range regions", () => {
  const { map } = twoRegions();
  assert.match(
    map.validate([{ guestAddress: 0x5000, size: 0, userAddress: 0, mmapOffset: 0 }], false)!,
    /has zero size/,
  );
  assert.match(
    map.validate([{ guestAddress: 0x1000, size: 0x2000, userAddress: 0, mmapOffset: 0 }], false)!,
    /overlaps region guest 0x0 size 0x2000/,
  );
  assert.match(
    map.validate([{
      guestAddress: 0x10000,
      size: 0x1000,
      userAddress: USER + 0x1000,
      mmapOffset: 0,
    }], false)!,
    /user range overlaps/,
  );
  assert.match(
    map.validate(
      [{ guestAddress: 2 ** 53 - 0x1000, size: 0x2000, userAddress: 0, mmapOffset: 0 }],
      true,
    )!,
    /ends at or beyond 2\^53/,
  );
  assert.equal(
    map.validate([{ guestAddress: 0x1000, size: 0x2000, userAddress: 0, mmapOffset: 0 }], true),
    null,
    "replacing: old regions do not count",
  );
  const tooMany = Array.from({ length: 31 }, (_, i) => ({
    guestAddress: 0x100000 * (i + 1),
    size: 0x1000,
    userAddress: 0x100000 * (i + 1),
    mmapOffset: 0,
  }));
  assert.match(map.validate(tooMany, false)!, /33 regions exceed the limit of 32/);
});

Deno.test("`GuestMemoryMap.add()` maps from the page below an unaligned mmap offset", () => {
  const fds = new FakeFds();
  const map = new GuestMemoryMap(fds.map, 8);
  const m = fds.memfd(0x3000);
  m.bytes[0x1234] = 0x42;
  map.add({ guestAddress: 0x8000, size: 0x100, userAddress: 0, mmapOffset: 0x1234 }, m.fd);
  assert.deepEqual(fds.mapCalls, [{ fd: m.fd, size: 0x334, offset: 0x1000 }]);
  assert.equal(map.view(0x8000, 0, 1)?.[0], 0x42);
});

Deno.test("`GuestMemoryMap.remove()` and `clear()` unmap and stop resolving", () => {
  const { map, fds } = twoRegions();
  assert.equal(fds.mappings, 2);
  assert.equal(map.remove(0, 0x1000), false, "size must match");
  assert.equal(map.remove(0, 0x2000), true);
  assert.equal(fds.mappings, 1);
  assert.equal(map.view(0, 0, 1), null);
  map.clear();
  assert.equal(fds.mappings, 0);
  assert.equal(map.view(0, 1, 1), null);
});

Deno.test("`GuestMemoryMap.faultedRegion()` names the region whose mapping faulted", () => {
  const faulted = new Map<number, boolean>();
  const map = new GuestMemoryMap((fd, size) => ({
    bytes: new Uint8Array(size),
    get faulted() {
      return faulted.get(fd) ?? false;
    },
    unmap() {},
  }), 32);
  map.add({ guestAddress: 0, size: 0x2000, userAddress: USER, mmapOffset: 0 }, 10);
  map.add({
    guestAddress: 0x1_0000_0000,
    size: 0x2000,
    userAddress: USER + 0x10000,
    mmapOffset: 0x1000,
  }, 11);
  assert.equal(map.faultedRegion(), null);
  faulted.set(11, true);
  assert.deepEqual(map.faultedRegion(), {
    guestAddress: 0x1_0000_0000,
    size: 0x2000,
    userAddress: USER + 0x10000,
    mmapOffset: 0x1000,
  });
  map.clear();
  assert.equal(map.faultedRegion(), null);
});
