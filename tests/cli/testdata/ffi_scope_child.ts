/**
 * Child process of permissions_test.ts: loads the helper and maps one page of a memfd
 * the way guest memory is mapped (MappedMemory: Deno.UnsafePointer.create and
 * Deno.UnsafePointerView.getArrayBuffer). Prints "mapped" when it worked; otherwise
 * the error's name and message, and exits 1.
 *
 * @module
 */

import { MappedMemory } from "../../../ffi/mapped_memory.ts";
import { MemFd } from "../../../ffi/mem_fd.ts";

/** One page. */
const PAGE = 4096;

try {
  const memfd = MemFd.create("ffi-scope", PAGE);
  const memory = MappedMemory.map(memfd.fd, PAGE, 0);
  memory.bytes[0] = 1;
  memory.close();
  memfd.close();
  console.log("mapped");
} catch (error) {
  console.log(`${(error as Error).name}: ${(error as Error).message}`);
  Deno.exit(1);
}
