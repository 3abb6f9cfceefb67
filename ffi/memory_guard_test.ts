import assert from "node:assert/strict";
import { MappedMemory, PAGE_SIZE } from "./mapped_memory.ts";
import { MemFd } from "./mem_fd.ts";
import { MEMORY_GUARD_SLOTS, MemoryGuard } from "./memory_guard.ts";
import { Errno, NativeError } from "./native_error.ts";
import { openFdCount } from "./process.ts";

const fixture = new URL("../tests/support/ffi/memory_guard_fixture.ts", import.meta.url).pathname;

function isErrno(errno: number): (error: unknown) => boolean {
  return (error) => error instanceof NativeError && error.errno === errno;
}

Deno.test("`MappedMemory` over a memfd shrunk to 0 reads zeros and reports the fault instead of dying of SIGBUS", () => {
  MemoryGuard.drainFaults(); // faults of earlier tests
  const fdsBefore = openFdCount();
  const memfd = MemFd.create("guard-shrink-to-zero", 4 * PAGE_SIZE);
  const mapping = MappedMemory.map(memfd.fd, 4 * PAGE_SIZE, 0);
  const view = new DataView(mapping.bytes.buffer);
  try {
    mapping.bytes[PAGE_SIZE + 1] = 0x5a;
    view.setUint32(3 * PAGE_SIZE, 0xdeadbeef, true);
    assert.equal(mapping.faulted, false);
    assert.equal(MemoryGuard.drainFaults(), 0);
    memfd.truncate(0);
    assert.equal(mapping.bytes[PAGE_SIZE + 1], 0, "the faulting read sees zeros");
    assert.equal(mapping.faulted, true);
    assert.equal(MemoryGuard.drainFaults(), 1, "the fault eventfd was signalled once");
    assert.equal(view.getUint32(3 * PAGE_SIZE, true), 0, "the whole mapping reads zeros");
    view.setUint32(2 * PAGE_SIZE, 7, true); // writes land in private zero pages
    assert.equal(view.getUint32(2 * PAGE_SIZE, true), 7);
    assert.equal(MemoryGuard.drainFaults(), 0, "no further fault came");
    assert.equal(Deno.statSync(`/proc/self/fd/${memfd.fd}`).size, 0, "the file is untouched");
  } finally {
    mapping.close(); // unregisters, then unmaps the replacement
    memfd.close();
  }
  assert.equal(mapping.faulted, false, "a closed mapping reports no fault");
  assert.equal(openFdCount(), fdsBefore, "the guard's eventfd is the same one throughout");
});

Deno.test("`MappedMemory` over a memfd shrunk to half: only the faulting mapping turns to zeros", () => {
  MemoryGuard.drainFaults();
  const memfd = MemFd.create("guard-shrink-to-half", 4 * PAGE_SIZE);
  const whole = MappedMemory.map(memfd.fd, 4 * PAGE_SIZE, 0);
  const low = MappedMemory.map(memfd.fd, 2 * PAGE_SIZE, 0);
  try {
    whole.bytes[10] = 0x11;
    whole.bytes[3 * PAGE_SIZE] = 0x33;
    memfd.truncate(2 * PAGE_SIZE);
    assert.equal(whole.bytes[10], 0x11, "the part still inside the file is still shared");
    assert.equal(whole.faulted, false);
    whole.bytes[3 * PAGE_SIZE] = 0x44; // a write beyond the end faults too
    assert.equal(whole.faulted, true);
    assert.equal(whole.bytes[3 * PAGE_SIZE], 0x44, "the write went to the replacement");
    assert.equal(whole.bytes[10], 0, "the whole faulted mapping was replaced");
    assert.equal(low.faulted, false, "the other mapping of the file is not affected");
    assert.equal(low.bytes[10], 0x11, "it still sees the file");
    assert.equal(MemoryGuard.drainFaults(), 1);
  } finally {
    whole.close();
    low.close();
    memfd.close();
  }
});

Deno.test("`MemoryGuard` slots are reused; unregistering twice or asking a free slot is EINVAL", () => {
  const memfd = MemFd.create("guard-slots", PAGE_SIZE);
  const first = MappedMemory.map(memfd.fd, PAGE_SIZE, 0);
  const pointer = Deno.UnsafePointer.of(first.bytes)!;
  try {
    const slot = MemoryGuard.register(pointer, PAGE_SIZE);
    MemoryGuard.unregister(slot);
    assert.throws(() => MemoryGuard.unregister(slot), isErrno(Errno.EINVAL));
    assert.throws(() => MemoryGuard.faulted(slot), isErrno(Errno.EINVAL));
    assert.equal(MemoryGuard.register(pointer, PAGE_SIZE), slot, "the freed slot comes back");
    MemoryGuard.unregister(slot);
    assert.throws(() => MemoryGuard.register(pointer, 0), RangeError);
    assert.throws(() => MemoryGuard.unregister(MEMORY_GUARD_SLOTS), isErrno(Errno.EINVAL));
    assert.throws(() => MemoryGuard.unregister(-1), isErrno(Errno.EINVAL));
  } finally {
    first.close();
    memfd.close();
  }
});

Deno.test("`MemoryGuard.register()` fails with ENOSPC when every slot is taken, and `MappedMemory.map()` then maps nothing", () => {
  const memfd = MemFd.create("guard-full", PAGE_SIZE);
  const probe = MappedMemory.map(memfd.fd, PAGE_SIZE, 0);
  const pointer = Deno.UnsafePointer.of(probe.bytes)!;
  const slots: number[] = [];
  let full = false;
  try {
    // the registry is process-wide: other live mappings may hold slots too
    while (!full && slots.length < MEMORY_GUARD_SLOTS) {
      try {
        slots.push(MemoryGuard.register(pointer, PAGE_SIZE));
      } catch (error) {
        assert.ok(isErrno(Errno.ENOSPC)(error), String(error));
        full = true;
      }
    }
    assert.ok(full, `ENOSPC after ${slots.length} registrations`);
    assert.ok(slots.length <= MEMORY_GUARD_SLOTS - 1, "the probe holds a slot");
    const mapsBefore = Deno.readTextFileSync("/proc/self/maps").split("\n").length;
    assert.throws(() => MappedMemory.map(memfd.fd, PAGE_SIZE, 0), isErrno(Errno.ENOSPC));
    assert.equal(Deno.readTextFileSync("/proc/self/maps").split("\n").length, mapsBefore);
  } finally {
    for (const slot of slots) MemoryGuard.unregister(slot);
    probe.close();
    memfd.close();
  }
});

for (const scenario of ["unguarded", "unregistered"]) {
  Deno.test(`\`MemoryGuard\` leaves a SIGBUS in an ${scenario} mapping alone: the process dies of it`, async () => {
    const { code, signal, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-prompt", fixture, scenario],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const output = new TextDecoder().decode(stdout);
    assert.doesNotMatch(output, /survived/, new TextDecoder().decode(stderr));
    assert.equal(signal, "SIGBUS", `exit code ${code}, signal ${signal}`);
  });
}
