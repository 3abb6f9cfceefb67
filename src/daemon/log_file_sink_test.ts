import { assertEquals, assertTrue } from "../../tests/support/assert.ts";
import { LogFileSink, type LogOutput } from "./log_file_sink.ts";

/** An in-memory file. */
class MemoryFile implements LogOutput {
  content = "";
  truncations = 0;
  write(data: Uint8Array): void {
    this.content += new TextDecoder().decode(data);
  }
  truncate(): void {
    this.content = "";
    this.truncations++;
  }
}

Deno.test("LogFileSink.writeLine() writes passt's header and time-stamped lines with their level", () => {
  let now = 1000;
  const file = new MemoryFile();
  const sink = new LogFileSink(file, 4096, () => now, "tpasst 1.0.0: /x/main.ts (7)");
  sink.writeLine("info", "started");
  now = 3500.25;
  sink.sink("warn", "careful");
  sink.sink("debug", "detail");
  assertEquals(
    file.content,
    "tpasst 1.0.0: /x/main.ts (7)\n1.0000: info:    started\n3.5002: WARNING: careful\n" +
      "3.5002:          detail\n",
  );
  assertEquals(sink.size, file.content.length);
});

Deno.test("LogFileSink rewrites the header, marked truncated, when it drops old lines", () => {
  const file = new MemoryFile();
  const header = "tpasst 1.0.0: /x/main.ts (7)";
  const sink = new LogFileSink(file, 4096, () => 2000, header);
  for (let i = 0; i < 500; i++) {
    sink.writeLine("info", `line ${i} ${"x".repeat(20)}`);
    assertTrue(file.content.length <= 4096, `file is ${file.content.length} bytes at line ${i}`);
  }
  assertTrue(sink.rotations > 0);
  assertTrue(file.content.startsWith(`${header} - log truncated at 2.0000\n`), file.content);
  const numbers = [...file.content.matchAll(/line (\d+)/g)].map((m) => Number(m[1]));
  for (let i = 1; i < numbers.length; i++) assertEquals(numbers[i], numbers[i - 1] + 1);
  assertEquals(numbers[numbers.length - 1], 499);
});

Deno.test("LogFileSink.writeLine() never lets the file exceed the limit and keeps the newest lines", () => {
  const file = new MemoryFile();
  const limit = 4096;
  const sink = new LogFileSink(file, limit, () => 0);
  for (let i = 0; i < 2000; i++) {
    sink.writeLine("debug", `line ${i} ${"x".repeat(i % 50)}`);
    assertTrue(
      file.content.length <= limit,
      `file is ${file.content.length} bytes after line ${i}`,
    );
  }
  assertTrue(sink.rotations > 0);
  assertEquals(file.truncations, sink.rotations);
  const lines = file.content.trimEnd().split("\n");
  assertTrue(lines[lines.length - 1].startsWith("0.0000:          line 1999 "));
  // Consecutive: nothing in the middle was lost, only the oldest lines.
  const numbers = lines.map((l) => Number(/line (\d+)/.exec(l)![1]));
  for (let i = 1; i < numbers.length; i++) assertEquals(numbers[i], numbers[i - 1] + 1);
  assertTrue(file.content.length >= limit / 4, "rotation dropped more than the oldest half");
});

Deno.test("LogFileSink.writeLine() cuts a line longer than half the limit", () => {
  const file = new MemoryFile();
  const sink = new LogFileSink(file, 4096, () => 0);
  sink.writeLine("error", "y".repeat(10000));
  assertTrue(file.content.length <= 2048);
  assertTrue(file.content.endsWith("\n"));
});
