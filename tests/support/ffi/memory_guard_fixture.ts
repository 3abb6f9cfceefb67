/**
 * Test fixture for memory_guard_test.ts: installs the memory guard, maps a memfd
 * *without* guarding it (`unguarded`) or guards and then unregisters the mapping
 * (`unregistered`), shrinks the memfd to 0 and reads the mapping. The guard must
 * leave that fault alone: the process dies of SIGBUS before printing "survived".
 *
 * @module
 */
import { helper } from "../../../ffi/library.ts";
import { MemFd } from "../../../ffi/mem_fd.ts";
import { MemoryGuard } from "../../../ffi/memory_guard.ts";

const PAGE_SIZE = 4096;
const scenario = Deno.args[0];
if (scenario !== "unguarded" && scenario !== "unregistered") {
  throw new Error(`unknown scenario ${scenario}: expected unguarded or unregistered`);
}

MemoryGuard.faultSignalFd();
const memfd = MemFd.create("guard-fixture", 2 * PAGE_SIZE);
const address = new Uint32Array(2);
const rc = helper().tp_mmap_shared(
  memfd.fd,
  BigInt(2 * PAGE_SIZE),
  0n,
  new Uint8Array(address.buffer),
);
if (rc < 0) throw new Error(`mmap failed: ${rc}`);
const pointer = Deno.UnsafePointer.create((BigInt(address[1]) << 32n) | BigInt(address[0]))!;
if (scenario === "unregistered") {
  MemoryGuard.unregister(MemoryGuard.register(pointer, 2 * PAGE_SIZE));
}
const bytes = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(pointer, 2 * PAGE_SIZE));
memfd.truncate(0);
console.log(`read ${bytes[PAGE_SIZE]}`);
console.log("survived");
