import { assertEquals } from "../test_support/assert.ts";
import { statsLine, StatsReporter, type StatsSource } from "./stats.ts";

function source(): StatsSource & {
  sender: { counters: { sent: number; noRoom: number; dropped: number } };
} {
  return {
    accepted: {} as Record<string, number>,
    drops: {} as Record<string, number>,
    sender: { counters: { sent: 0, noRoom: 0, dropped: 0 } },
  };
}

Deno.test("StatsReporter.tick() writes a line only when something happened since the last one", () => {
  const s = source();
  const lines: string[] = [];
  const reporter = new StatsReporter(s, (line) => lines.push(line));
  reporter.tick();
  assertEquals(lines, []); // no event yet: nothing shown, as in passt
  (s.accepted as Record<string, number>).arp = 1;
  (s.accepted as Record<string, number>).dhcp = 2;
  (s.drops as Record<string, number>)["udp-bad-checksum"] = 1;
  s.sender.counters.sent = 3;
  reporter.tick();
  reporter.tick();
  assertEquals(lines, [
    "stats: from guest 3 frame(s) (arp 1, dhcp 2), 1 dropped; to guest 3 frame(s), " +
    "0 without room, 0 dropped",
  ]);
  s.sender.counters.noRoom = 1;
  reporter.tick();
  assertEquals(lines.length, 2);
  assertEquals(
    statsLine(source()),
    "stats: from guest 0 frame(s), 0 dropped; to guest 0 frame(s), 0 without room, 0 dropped",
  );
});
