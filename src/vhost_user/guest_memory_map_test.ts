import assert from "node:assert/strict";
import fc from "fast-check";
import { GuestMemoryMap } from "./guest_memory_map.ts";
import { FakeFds } from "../../tests/support/vhost_user/backend_doubles.ts";
import { PIECES_NO_ROOM, PIECES_OUTSIDE_MEMORY } from "../virtio/guest_memory.ts";

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

/** The byte every test region holds at guest-physical address `gpa`. */
const patternAt = (gpa: number) => (gpa * 31 + 7) & 0xff;

/**
 * Maps regions of `sizes` bytes end to end in guest-physical space from `base`
 * (memory slots: DIMMs, virtio-mem), each from its own fd at its own user address,
 * added in reverse order; `gapAfter` leaves a hole of 0x1000 after that region.
 */
function slots(base: number, sizes: readonly number[], gapAfter = -1) {
  const fds = new FakeFds();
  const map = new GuestMemoryMap(fds.map, 32);
  let guest = base;
  const placed = sizes.map((size, i) => {
    const region = {
      guestAddress: guest,
      size,
      userAddress: USER + 0x100_0000 * i,
      mmapOffset: 0x10 * i,
    };
    guest += size + (i === gapAfter ? 0x1000 : 0);
    return region;
  });
  for (const region of [...placed].reverse()) {
    const m = fds.memfd(region.mmapOffset + region.size);
    for (let i = 0; i < region.size; i++) {
      m.bytes[region.mmapOffset + i] = patternAt(region.guestAddress + i);
    }
    map.add(region, m.fd);
  }
  return { map, end: guest };
}

Deno.test("`GuestMemoryMap.viewPieces()` covers exactly the bytes of any range inside adjacent regions (property)", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 2 ** 52 }),
      fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 6 }),
      fc.nat(),
      fc.nat(),
      (base, sizes, a, b) => {
        const { map, end } = slots(base, sizes);
        const start = base + (a % (end - base));
        const length = 1 + (b % (end - start));
        const low = start % 2 ** 32, high = Math.floor(start / 2 ** 32);
        const out: Uint8Array[] = [new Uint8Array(1)];
        const pieces = map.viewPieces(low, high, length, out, 1, 8);
        assert.ok(pieces >= 1, `got ${pieces}`);
        assert.equal(out.length, 1 + pieces);
        let gpa = start;
        for (const piece of out.slice(1)) {
          assert.ok(piece.length > 0);
          for (const byte of piece) assert.equal(byte, patternAt(gpa++));
        }
        assert.equal(gpa - start, length, "exactly the range");
        assert.equal(map.viewPieces(low, high, end - start + 1, [], 0, 8), PIECES_OUTSIDE_MEMORY);
        if (pieces > 1) {
          assert.equal(map.viewPieces(low, high, length, [], 0, pieces - 1), PIECES_NO_ROOM);
        }
      },
    ),
  );
});

Deno.test("`GuestMemoryMap.viewPieces()` rejects a range across a gap between regions", () => {
  const { map } = slots(0x10_0000, [0x1000, 0x1000, 0x1000], 1);
  const out: Uint8Array[] = [];
  assert.equal(map.viewPieces(0x10_0ff0, 0, 0x20, out, 0, 4), 2, "regions 0 and 1 are adjacent");
  assert.equal(map.viewPieces(0x10_1ff0, 0, 0x20, [], 0, 4), PIECES_OUTSIDE_MEMORY, "into the gap");
  assert.equal(
    map.viewPieces(0x10_1ff0, 0, 0x1020, [], 0, 4),
    PIECES_OUTSIDE_MEMORY,
    "over the gap",
  );
  assert.equal(map.viewPieces(0x10_2000, 0, 1, [], 0, 4), PIECES_OUTSIDE_MEMORY, "in the gap");
  assert.equal(map.viewPieces(0xffff_fff0, 0xffff_ffff, 0x20, [], 0, 4), PIECES_OUTSIDE_MEMORY);
  assert.equal(map.view(0x10_0ff0, 0, 0x20), null, "view() itself stays within one region");
});

Deno.test("`GuestMemoryMap.guestAddressOfView()` gives the guest address of views it returned, -1 for others", () => {
  const { fds, map } = twoRegions();
  const inA = map.view(0x1234, 0, 16)!;
  const inB = map.view(0x10, 1, 0x100)!; // region b: mmap offset 0x1000, guest 2^32
  assert.equal(map.guestAddressOfView(inA), 0x1234);
  assert.equal(map.guestAddressOfView(inB), 0x1_0000_0010);
  assert.equal(map.guestAddressOfView(inB.subarray(0x80)), 0x1_0000_0090, "part of a view");
  assert.equal(map.guestAddressOfView(inA), 0x1234, "again after the other region");
  const pieces: Uint8Array[] = [];
  // two regions of one file, adjacent in guest space: views share the file's buffer
  const shared = fds.memfd(0x4000);
  const adjacent = new GuestMemoryMap(fds.map, 32);
  adjacent.add(
    { guestAddress: 0x8000, size: 0x1000, userAddress: USER, mmapOffset: 0x3000 },
    shared.fd,
  );
  adjacent.add(
    { guestAddress: 0x9000, size: 0x1000, userAddress: USER + 0x1000, mmapOffset: 0 },
    shared.fd,
  );
  assert.equal(adjacent.viewPieces(0x8ff0, 0, 0x20, pieces, 0, 4), 2);
  assert.equal(adjacent.guestAddressOfView(pieces[0]), 0x8ff0);
  assert.equal(adjacent.guestAddressOfView(pieces[1]), 0x9000);
  assert.equal(map.guestAddressOfView(new Uint8Array(16)), -1, "not guest memory");
  assert.equal(map.guestAddressOfView(shared.bytes.subarray(0, 16)), -1, "another map's file");
  assert.equal(
    adjacent.guestAddressOfView(shared.bytes.subarray(0x1000, 0x1010)),
    -1,
    "unmapped part",
  );
  map.clear();
  assert.equal(map.guestAddressOfView(inA), -1, "after unmapping");
});
