import { Errno, NativeError } from "../../ffi/native_error.ts";
import { assertEquals } from "../../tests/support/assert.ts";
import { describeFileError, fileOptionError } from "./file_error.ts";

Deno.test("fileOptionError() names the option, the path and why, in words and errno", () => {
  const enoent = new NativeError(Errno.ENOENT, 'file_open("/nope/x.log")');
  assertEquals(
    fileOptionError("log-file", "/nope/x.log", "open the log file", enoent).message,
    "--log-file /nope/x.log: cannot open the log file: no such file or directory (ENOENT)",
  );
  assertEquals(describeFileError(new NativeError(Errno.EXDEV, "x")), "EXDEV");
  assertEquals(describeFileError(new Error("plain")), "plain");
});
