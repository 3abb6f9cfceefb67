/**
 * An idle daemon's resident set (issue 11: at most 50 MiB, as the process's VmRSS
 * counts it — its heap and the runtime's file pages it keeps mapped).
 */
import { assertTrue } from "../support/assert.ts";
import { ForegroundTpasst, makeTempDir } from "./cli_helpers.ts";

/** Issue 11's ceiling for an idle daemon's resident set. */
const IDLE_RSS_LIMIT_KIB = 50 * 1024;

function statusKiB(pid: number, field: string): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]);
}

Deno.test("an idle bin/tpasst (vhost-user, no frontend) stays within 50 MiB resident once started", async () => {
  const dir = await makeTempDir();
  const daemon = new ForegroundTpasst(["--vhost-user", "-d", "-s", `${dir}/s.sock`]);
  try {
    await daemon.waitForStderr(/listening at|addr\.path|chardev=chr0/, "the daemon to listen");
    // Start-up is over 2 s after the start (STARTUP_RELEASE_MS), then a second of idling.
    await new Promise((r) => setTimeout(r, 3_000));
    const pid = daemon.process.pid;
    const rss = statusKiB(pid, "VmRSS");
    const detail = `VmRSS ${rss} KiB (anonymous ${statusKiB(pid, "RssAnon")}, file ${
      statusKiB(pid, "RssFile")
    })`;
    assertTrue(rss <= IDLE_RSS_LIMIT_KIB, detail);
  } finally {
    daemon.process.kill("SIGTERM");
    await daemon.exit();
    await Deno.remove(dir, { recursive: true });
  }
});
