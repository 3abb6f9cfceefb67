import { assertEquals, assertMatch } from "../../tests/support/assert.ts";
import { fileHeader, fileLine, logTimestamp, syslogLine, syslogTimestamp } from "./log_format.ts";

Deno.test("logTimestamp() writes seconds with four decimals, as passt does", () => {
  assertEquals(logTimestamp(0), "0.0000");
  assertEquals(logTimestamp(1.23), "0.0012");
  assertEquals(logTimestamp(2500), "2.5000");
  assertEquals(logTimestamp(61234.56789), "61.2345");
  assertEquals(logTimestamp(-5), "0.0000");
});

Deno.test("fileLine() and fileHeader() lay lines out as passt's log file", () => {
  assertEquals(fileLine(1500, "info", "started"), "1.5000: info:    started\n");
  assertEquals(fileLine(0, "warn", "careful"), "0.0000: WARNING: careful\n");
  assertEquals(fileLine(0, "error", "broken"), "0.0000: ERROR:   broken\n");
  assertEquals(fileLine(0, "debug", "detail"), "0.0000:          detail\n");
  assertEquals(
    fileHeader("tpasst", "1.2.3", "/usr/bin/deno", 42),
    "tpasst 1.2.3: /usr/bin/deno (42)",
  );
});

Deno.test("syslogLine() is syslog(3)'s format: facility daemon, RFC 3164 time, ident[pid]", () => {
  const date = new Date(2026, 0, 5, 7, 8, 9);
  assertEquals(syslogTimestamp(date), "Jan  5 07:08:09");
  assertEquals(
    syslogLine("info", "Shut down", "tpasst", 1234, date),
    "<30>Jan  5 07:08:09 tpasst[1234]: Shut down",
  );
  assertMatch(syslogLine("error", "x", "tpasst", 1, date), /^<27>/);
  assertMatch(syslogLine("warn", "x", "tpasst", 1, date), /^<28>/);
  assertMatch(syslogLine("debug", "x", "tpasst", 1, date), /^<31>/);
  assertEquals(syslogTimestamp(new Date(2026, 11, 25, 23, 59, 0)), "Dec 25 23:59:00");
});
