import { UnixStream } from "../../ffi/unix_stream.ts";
import type { LogLevel } from "../log/logger.ts";
import { assertEquals, assertMatch } from "../../tests/support/assert.ts";
import { levelFilter, LogFile, statusSink, stderrTimestamps, teeSink } from "./logging.ts";

Deno.test("levelFilter() passes only lines at the level or more severe", () => {
  const seen: string[] = [];
  const sink = levelFilter("warn", (level, line) => seen.push(`${level}:${line}`));
  for (const level of ["error", "warn", "info", "debug", "trace"] as LogLevel[]) sink(level, "x");
  assertEquals(seen, ["error:x", "warn:x"]);
});

Deno.test("teeSink() forwards every line to each sink", () => {
  const a: string[] = [];
  const b: string[] = [];
  const sink = teeSink((_l, line) => a.push(line), (_l, line) => b.push(line));
  sink("info", "one");
  sink("error", "two");
  assertEquals([a, b], [["one", "two"], ["one", "two"]]);
});

Deno.test("statusSink() sends lines to the parent, prefixing warnings and errors", () => {
  const [parent, child] = UnixStream.pair(true);
  try {
    const sink = statusSink(child);
    sink("info", "listening");
    sink("error", "cannot write pid file");
    const buffer = new Uint8Array(256);
    const n = parent.recv(buffer);
    assertEquals(
      new TextDecoder().decode(buffer.subarray(0, n)),
      "listening\ntpasst: cannot write pid file\n",
    );
    parent.close();
    sink("error", "nobody listens"); // must not throw once the parent is gone
  } finally {
    parent.close();
    child.close();
  }
});

Deno.test("LogFile.safeSink() writes the file and never throws, even when the disk is full", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "tplog" });
  try {
    const file = new LogFile(`${dir}/t.log`, 4096, false);
    file.safeSink("info", "hello");
    file.close();
    file.safeSink("info", "after close"); // dropped, no exception
    assertMatch(
      Deno.readTextFileSync(`${dir}/t.log`),
      /^tpasst [0-9.]+: \/\S+ \([0-9]+\)\n[0-9]+\.[0-9]{4}: info: {4}hello\n$/,
    );
    const full = new LogFile("/dev/full", 4096, true);
    full.safeSink("error", "cannot be written"); // ENOSPC: reported once on stderr
    full.safeSink("error", "dropped silently");
    full.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("statusSink() time-stamps lines in debug mode, as passt's standard error", () => {
  assertEquals(["info", "debug", "trace"].map((l) => stderrTimestamps(l as LogLevel)), [
    false,
    true,
    true,
  ]);
  const [parent, child] = UnixStream.pair(true);
  try {
    statusSink(child, true)("warn", "careful");
    const buffer = new Uint8Array(256);
    const n = parent.recv(buffer);
    assertMatch(
      new TextDecoder().decode(buffer.subarray(0, n)),
      /^[0-9]+\.[0-9]{4}: tpasst: careful\n$/,
    );
  } finally {
    parent.close();
    child.close();
  }
});
