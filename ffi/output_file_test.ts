import assert from "node:assert/strict";
import { OutputFile, removeFile } from "./output_file.ts";
import { openFdCount } from "./process.ts";

Deno.test("`OutputFile.open()` truncates or appends, creating mode 0644, and removeFile() deletes", () => {
  const before = openFdCount();
  const dir = Deno.makeTempDirSync();
  const path = `${dir}/out.txt`;
  const encoder = new TextEncoder();

  const first = OutputFile.open(path, { append: false });
  first.write(encoder.encode("one\n"));
  first.write(encoder.encode("two\n"));
  first.close();
  first.close();
  assert.throws(() => first.write(encoder.encode("x")), /closed/);
  assert.equal(Deno.readTextFileSync(path), "one\ntwo\n");
  assert.equal(Deno.statSync(path).mode! & 0o777, 0o644 & ~readUmask());

  const appended = OutputFile.open(path, { append: true });
  appended.write(encoder.encode("three\n"));
  appended.close();
  assert.equal(Deno.readTextFileSync(path), "one\ntwo\nthree\n");

  const truncated = OutputFile.open(path, { append: false });
  truncated.write(encoder.encode("new\n"));
  truncated.close();
  assert.equal(Deno.readTextFileSync(path), "new\n");

  assert.equal(removeFile(path), true);
  assert.equal(removeFile(path), false);
  assert.equal(removeFile(`${dir}/missing-dir/x`), false);
  assert.throws(() => removeFile(dir), /EISDIR/);
  assert.throws(() => OutputFile.open(`${dir}/no/such/dir`, { append: false }), /ENOENT/);
  Deno.removeSync(dir);
  assert.equal(openFdCount(), before);
});

function readUmask(): number {
  const status = Deno.readTextFileSync("/proc/self/status");
  const match = /^Umask:\s+([0-7]+)/m.exec(status);
  return match ? parseInt(match[1], 8) : 0o022;
}
