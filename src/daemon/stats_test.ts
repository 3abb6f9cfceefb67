import { assertEquals } from "../../tests/support/assert.ts";
import type { FlowInfo } from "../net/flows/flow_info.ts";
import {
  collectStats,
  formatAge,
  formatBytes,
  formatStatsJson,
  formatStatsText,
  STATS_JSON_PREFIX,
  type StatsDumpSource,
  statsLine,
  StatsReporter,
  type StatsSource,
} from "./stats.ts";

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

/** A dump source with one IPv4 TCP flow, one IPv6 UDP flow and one echo flow. */
function dumpSource(): StatsDumpSource {
  const flows: FlowInfo[] = [
    {
      protocol: "tcp",
      guest: "10.0.2.15:40000",
      remote: "10.0.2.2:8080",
      host: "127.0.0.1:8080",
      state: "established (guest-fin)",
      bytesFromGuest: 1536,
      bytesToGuest: 3 * 1024 * 1024,
      ageMs: 65_400.4,
      idleMs: 250,
    },
    {
      protocol: "udp",
      guest: "[fd00::15]:5353",
      remote: "[fd00::2]:53",
      host: "[::1]:53",
      state: "active",
      bytesFromGuest: 40,
      bytesToGuest: 0,
      ageMs: 1_500,
      idleMs: 1_500,
    },
    {
      protocol: "icmp",
      guest: "10.0.2.15 id 7",
      remote: "10.0.2.2",
      host: "127.0.0.1",
      state: "active",
      bytesFromGuest: 64,
      bytesToGuest: 64,
      ageMs: 7_300_000,
      idleMs: 10,
    },
  ];
  return {
    accepted: { tcp: 10, arp: 1 },
    drops: { "tcp-bad-checksum": 2 },
    bytesFromGuest: 4321,
    sender: {
      counters: { sent: 9, noRoom: 1, dropped: 0 },
      bytesSent: 8765,
      link: {
        kind: "vhost-user",
        describeState: () => ({ up: true, rxRing: "running", rxFrames: 9, rxNoRoom: 1 }),
      },
    },
    describeFlows: (now) => {
      assertEquals(now, 100_000);
      return flows;
    },
    protocolCounters: () => ({ tcp: { outbound: 1, retransmits: 0 } }),
  };
}

const MEMORY = {
  rss: 50 * 1024 * 1024,
  heapTotal: 8 * 1024 * 1024,
  heapUsed: 6291456,
  external: 512,
};

Deno.test("collectStats() gathers frames, bytes, drops, link state, memory and flows", () => {
  const snapshot = collectStats(dumpSource(), 100_000, 40_000, MEMORY);
  assertEquals(snapshot.uptimeMs, 60_000);
  assertEquals(snapshot.fromGuest, {
    frames: 13,
    bytes: 4321,
    byKind: { tcp: 10, arp: 1 },
    dropped: 2,
    dropsByReason: { "tcp-bad-checksum": 2 },
  });
  assertEquals(snapshot.toGuest, { frames: 9, bytes: 8765, noRoom: 1, dropped: 0, noLink: 0 });
  assertEquals(snapshot.link, {
    kind: "vhost-user",
    up: true,
    rxRing: "running",
    rxFrames: 9,
    rxNoRoom: 1,
  });
  assertEquals(snapshot.memory, MEMORY);
  assertEquals(snapshot.flows.length, 3);
  assertEquals(snapshot.flows[0].ageMs, 65_400); // rounded to whole ms
});

Deno.test("formatStatsText() shows each flow's ends, state, bytes each way and age", () => {
  const lines = formatStatsText(collectStats(dumpSource(), 100_000, 40_000, MEMORY));
  assertEquals(lines, [
    "stats: up 1 min 00 s; from guest 13 frame(s), 4.2 KiB (tcp 10, arp 1), 2 dropped (tcp-bad-checksum 2)",
    "stats: to guest 9 frame(s), 8.6 KiB, 1 without room, 0 dropped, 0 without link",
    "stats: link: kind vhost-user, up true, rxRing running, rxFrames 9, rxNoRoom 1",
    "stats: tcp: outbound 1",
    "stats: memory: RSS 50.0 MiB, heap 6.0 MiB used of 8.0 MiB, external 512 B",
    "stats: 3 flow(s)",
    "stats: tcp 10.0.2.15:40000 -> 10.0.2.2:8080 (host 127.0.0.1:8080) established (guest-fin); " +
    "guest->host 1536 B, host->guest 3145728 B; age 1 min 05 s, idle 250 ms",
    "stats: udp [fd00::15]:5353 -> [fd00::2]:53 (host [::1]:53) active; " +
    "guest->host 40 B, host->guest 0 B; age 1.5 s, idle 1.5 s",
    "stats: icmp 10.0.2.15 id 7 -> 10.0.2.2 (host 127.0.0.1) active; " +
    "guest->host 64 B, host->guest 64 B; age 2 h 01 min, idle 10 ms",
  ]);
});

Deno.test("formatStatsText() says when no frontend is connected", () => {
  const source = dumpSource();
  const lines = formatStatsText(
    collectStats({ ...source, sender: { ...source.sender, link: null } }, 100_000, 0, MEMORY),
  );
  assertEquals(lines[2], "stats: link: none connected");
});

Deno.test("formatStatsJson() is one greppable line whose JSON holds every field", () => {
  const line = formatStatsJson(collectStats(dumpSource(), 100_000, 40_000, MEMORY));
  assertEquals(line.includes("\n"), false);
  assertEquals(line.startsWith(STATS_JSON_PREFIX), true);
  const parsed = JSON.parse(line.slice(STATS_JSON_PREFIX.length));
  assertEquals(Object.keys(parsed).sort(), [
    "flows",
    "fromGuest",
    "link",
    "memory",
    "protocols",
    "toGuest",
    "uptimeMs",
  ]);
  assertEquals(parsed.flows[1], dumpSource().describeFlows(100_000)[1]); // the UDP flow, as given
  assertEquals(parsed.memory.rss, 50 * 1024 * 1024);
  assertEquals(parsed.fromGuest.dropsByReason, { "tcp-bad-checksum": 2 });
});

Deno.test("StatsReporter writes the extra (JSON) line after each counters line", () => {
  const s = source();
  const lines: string[] = [];
  let n = 0;
  const reporter = new StatsReporter(s, (line) => lines.push(line), () => `extra ${++n}`);
  s.sender.counters.sent = 1;
  reporter.tick();
  reporter.tick(); // nothing new: neither line
  s.sender.counters.sent = 2;
  reporter.tick();
  assertEquals(lines.length, 4);
  assertEquals([lines[1], lines[3]], ["extra 1", "extra 2"]);
});

Deno.test("formatBytes() and formatAge() pick a readable unit", () => {
  assertEquals(formatBytes(0), "0 B");
  assertEquals(formatBytes(1023), "1023 B");
  assertEquals(formatBytes(1024), "1.0 KiB");
  assertEquals(formatBytes(5 * 1024 ** 3), "5.0 GiB");
  assertEquals(formatAge(999), "999 ms");
  assertEquals(formatAge(59_949), "59.9 s");
  assertEquals(formatAge(3_599_000), "59 min 59 s");
  assertEquals(formatAge(3_600_000), "1 h 00 min");
});
