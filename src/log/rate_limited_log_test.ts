import { assertEquals } from "../../tests/support/assert.ts";
import { RateLimitedLog } from "./rate_limited_log.ts";
import { recordingLogger } from "../../tests/support/recording_logger.ts";

Deno.test("RateLimitedLog.write() writes once per interval and counts the rest", () => {
  const { logger, lines } = recordingLogger({ level: "trace" });
  const limited = new RateLimitedLog("warn", 1000, logger);
  assertEquals(limited.write(0, "bad descriptor"), true);
  assertEquals(limited.write(10, "bad descriptor"), false);
  assertEquals(limited.write(999, "bad descriptor"), false);
  assertEquals(limited.suppressed, 2);
  assertEquals(limited.write(1000, "bad descriptor"), true);
  assertEquals(lines, ["bad descriptor", "bad descriptor (2 similar suppressed)"]);
});

Deno.test("Logger.write() drops lines below the threshold", () => {
  const { logger, lines } = recordingLogger({ level: "trace" });
  logger.setLevel("warn");
  logger.info("plan");
  logger.debug("detail");
  logger.error("broken");
  assertEquals(lines, ["broken"]);
  assertEquals(logger.enabled("info"), false);
  assertEquals(logger.enabled("warn"), true);
});
