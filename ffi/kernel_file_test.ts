import assert from "node:assert/strict";
import { readKernelFile } from "./kernel_file.ts";
import { openFdCount } from "./process.ts";

Deno.test("readKernelFile() reads /proc/net/route, which Deno itself refuses without --allow-all", () => {
  const baseline = openFdCount();
  const text = readKernelFile("/proc/net/route");
  assert.ok(text !== null);
  assert.match(text, /^Iface\tDestination\tGateway/);
  assert.equal(openFdCount(), baseline);
});

Deno.test("readKernelFile() returns null for a missing file and cuts at maxBytes", () => {
  assert.equal(readKernelFile("/proc/net/no-such-table"), null);
  assert.equal(readKernelFile("/proc/net/route", 5), "Iface");
});

Deno.test("readKernelFile() throws EISDIR for a directory", () => {
  assert.throws(() => readKernelFile("/proc/net"), /EISDIR/);
});
