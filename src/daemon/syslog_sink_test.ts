import { UnixDatagramSocket } from "../../ffi/unix_datagram.ts";
import { openFdCount } from "../../ffi/process.ts";
import { assertEquals, assertTrue } from "../../tests/support/assert.ts";
import { SYSLOG_RETRY_MS, SyslogSink } from "./syslog_sink.ts";

function received(receiver: UnixDatagramSocket): string[] {
  const buffer = new Uint8Array(4096);
  const out: string[] = [];
  for (;;) {
    const n = receiver.receive(buffer);
    if (n < 0) return out;
    out.push(new TextDecoder().decode(buffer.subarray(0, n)));
  }
}

Deno.test("SyslogSink sends syslog(3) lines with the program name and pid, info and above", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "tpsl" });
  try {
    const receiver = UnixDatagramSocket.bind(`${dir}/log`);
    const date = () => new Date(2026, 6, 16, 9, 5, 3);
    const sink = new SyslogSink({ path: `${dir}/log`, pid: 4321, date });
    assertTrue(sink.connected);
    sink.sink("info", "Forwarding 3 TCP and 0 UDP port(s) to the guest");
    sink.sink("warn", "careful");
    sink.sink("error", "broken");
    sink.sink("debug", "not sent");
    sink.sink("trace", "not sent either");
    assertEquals(received(receiver), [
      "<30>Jul 16 09:05:03 tpasst[4321]: Forwarding 3 TCP and 0 UDP port(s) to the guest",
      "<28>Jul 16 09:05:03 tpasst[4321]: careful",
      "<27>Jul 16 09:05:03 tpasst[4321]: broken",
    ]);
    sink.close();
    sink.sink("info", "after close");
    assertEquals(received(receiver), []);
    receiver.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SyslogSink does nothing without a system logger and finds one that comes later", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "tpsl" });
  const fds = openFdCount();
  try {
    let now = 0;
    const sink = new SyslogSink({ path: `${dir}/log`, now: () => now });
    assertTrue(!sink.connected);
    sink.sink("error", "nobody listens"); // silently dropped, no exception
    const receiver = UnixDatagramSocket.bind(`${dir}/log`);
    sink.sink("info", "too early to look again");
    assertEquals(received(receiver), []);
    now += SYSLOG_RETRY_MS;
    sink.sink("info", "found");
    assertEquals(received(receiver).map((l) => l.replace(/^.*: /, "")), ["found"]);
    // The logger restarts: lines are lost until it is found again, never thrown.
    receiver.close();
    await Deno.remove(`${dir}/log`);
    sink.sink("info", "lost");
    const again = UnixDatagramSocket.bind(`${dir}/log`);
    now += SYSLOG_RETRY_MS;
    sink.sink("info", "back");
    assertEquals(received(again).map((l) => l.replace(/^.*: /, "")), ["back"]);
    sink.close();
    again.close();
    assertEquals(openFdCount(), fds);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SyslogSink keeps lines the logger has no room for yet and sends them in order", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "tpsl" });
  try {
    const receiver = UnixDatagramSocket.bind(`${dir}/log`);
    const sink = new SyslogSink({ path: `${dir}/log` });
    // Far more than the socket queue holds (net.unix.max_dgram_qlen, 10 by default).
    for (let i = 0; i < 200; i++) sink.sink("info", `line ${i}`);
    assertTrue(sink.backlog > 0, "nothing waited: the queue is larger than expected");
    const got: string[] = [];
    const deadline = performance.now() + 5000;
    while (got.length < 200 && performance.now() < deadline) {
      got.push(...received(receiver));
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assertEquals(
      got.map((l) => l.replace(/^.*: /, "")),
      Array.from({ length: 200 }, (_, i) => `line ${i}`),
    );
    assertEquals(sink.backlog, 0);
    sink.close();
    receiver.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
