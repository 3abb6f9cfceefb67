import assert from "node:assert/strict";
import dgram from "node:dgram";
import { Buffer } from "node:buffer";
import { NetworkStack } from "./stack.ts";
import {
  DEFAULT_EPHEMERAL,
  expandForwards,
  MAX_FORWARDED_PORTS,
  startForwarding,
} from "./fwd_setup.ts";
import { TestGuest } from "./tcp_test_guest.ts";
import { TEST_GATEWAY4, TEST_GUEST4, TEST_GUEST6, testPlan } from "./tcp_test_plan.ts";
import { parsePortForwardTable } from "../config/port_spec.ts";
import { Logger } from "../log/logger.ts";
import { EventLoop } from "../loop/event_loop.ts";
import { nativeListen } from "./native_host_tcp.ts";

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p = (l.addr as Deno.NetAddr).port;
  l.close();
  return p;
}

async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket("udp4");
  await new Promise<void>((r) => s.bind(0, "127.0.0.1", r));
  const p = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

Deno.test("`expandForwards()` lists host ports with their guest targets", () => {
  const t = parsePortForwardTable(["127.0.0.1/2000-2002:3000-3002", "22"]);
  const { forwards, truncated } = expandForwards(t, DEFAULT_EPHEMERAL);
  assert.equal(truncated, false);
  assert.deepEqual(forwards.map((x) => [x.bind, x.host, x.guest]), [
    ["127.0.0.1", 2000, 3000],
    ["127.0.0.1", 2001, 3001],
    ["127.0.0.1", 2002, 3002],
    [null, 22, 22],
  ]);
});

Deno.test("`expandForwards()` stops at the limit and says so; `all` skips the ephemeral range", () => {
  const all = expandForwards(parsePortForwardTable(["all"]), DEFAULT_EPHEMERAL);
  assert.equal(all.truncated, true);
  assert.equal(all.forwards.length, MAX_FORWARDED_PORTS);
  const small = expandForwards(parsePortForwardTable(["all"]), DEFAULT_EPHEMERAL, 70000);
  assert.equal(small.truncated, false);
  const ephemeralCount = DEFAULT_EPHEMERAL.last - DEFAULT_EPHEMERAL.first + 1;
  assert.equal(small.forwards.length, 65535 - ephemeralCount);
  assert.ok(
    small.forwards.every((f) =>
      f.host < DEFAULT_EPHEMERAL.first || f.host > DEFAULT_EPHEMERAL.last
    ),
  );
});

Deno.test("`startForwarding()` registers TCP and UDP with the NetworkStack and opens -t/-u forwards", async () => {
  const logger = new Logger();
  const lines: string[] = [];
  logger.setSink((_l, line) => lines.push(line));
  const stack = new NetworkStack(testPlan(), {
    logger,
    forward: { outbound4: "127.0.0.1", outboundIf4: "lo" },
  });
  const tport = freePort();
  const uport = await freeUdpPort();
  const fw = startForwarding(stack, {
    logger,
    tcpForwards: parsePortForwardTable([`127.0.0.1/${tport}:8080`]),
    udpForwards: parsePortForwardTable([`127.0.0.1/${uport}:5353`]),
  });
  assert.deepEqual(fw.listening, { tcp: 1, udp: 1 });
  assert.ok(
    !lines.some((l) => /outbound-if4|^-o /.test(l)),
    "-o and --outbound-if4 are honoured for TCP and UDP: nothing to say",
  );
  const guest = new TestGuest(fw.tcp!, fw.udp, 4, TEST_GUEST4, TEST_GUEST6);
  guest.useStack(stack);
  stack.linkUp(guest, performance.now());
  guest.listening.add(8080);

  // Guest → host TCP through the stack.
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const sport = (server.addr as Deno.NetAddr).port;
  const served = server.accept().then(async (conn) => {
    await conn.write(new TextEncoder().encode("hi guest"));
    conn.close();
  });
  const c = guest.connect(TEST_GATEWAY4, sport);
  await c.until(() => c.eof, 5000, "host data and FIN");
  assert.equal(new TextDecoder().decode(c.takeReceived()), "hi guest");
  await served;
  guest.close(c);

  // Host → guest TCP through the -t forward.
  const client = await Deno.connect({ hostname: "127.0.0.1", port: tport });
  await client.write(new TextEncoder().encode("knock"));
  await guest.until(() => guest.accepted.length === 1 && guest.accepted[0].receivedBytes === 5);
  assert.equal(new TextDecoder().decode(guest.accepted[0].takeReceived()), "knock");
  client.close();

  // Host → guest UDP through the -u forward.
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", r));
  sock.send(Buffer.from("dgram"), uport, "127.0.0.1");
  await guest.until(() => guest.datagrams.length === 1, 5000, "datagram");
  assert.equal(guest.datagrams[0].toPort, 5353);
  assert.equal(new TextDecoder().decode(guest.datagrams[0].data), "dgram");
  sock.close();

  server.close();
  guest.stop();
  fw.close();
  stack.close();
});

Deno.test("`startForwarding()` binds `%IF` TCP and UDP forwards to that interface, and they work", async () => {
  const logger = new Logger();
  const lines: string[] = [];
  logger.setSink((_l, line) => lines.push(line));
  const loop = new EventLoop();
  const running = loop.run();
  const stack = new NetworkStack(testPlan(), { logger });
  const tport = freePort();
  const uport = await freeUdpPort();
  const fw = startForwarding(stack, {
    logger,
    tcpForwards: parsePortForwardTable([`127.0.0.1%lo/${tport}:8080`]),
    udpForwards: parsePortForwardTable([`127.0.0.1%lo/${uport}:5353`]),
    tcpListen: nativeListen(loop),
    udpWatcher: loop,
  });
  const guest = new TestGuest(fw.tcp!, fw.udp, 4, TEST_GUEST4, TEST_GUEST6);
  guest.useStack(stack);
  stack.linkUp(guest, performance.now());
  const client = dgram.createSocket("udp4");
  try {
    assert.deepEqual(fw.listening, { tcp: 1, udp: 1 }, lines.join("\n"));
    // Bound to "lo", the listeners still take loopback connections and datagrams.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: tport });
    conn.close();
    await new Promise<void>((r) => client.bind(0, "127.0.0.1", r));
    const replies: string[] = [];
    client.on("message", (m) => replies.push(m.toString()));
    client.send(Buffer.from("via lo"), uport, "127.0.0.1");
    await guest.until(() => guest.datagrams.length === 1, 5000, "the datagram through %lo");
    const d = guest.datagrams[0];
    assert.equal(new TextDecoder().decode(d.data), "via lo");
    assert.equal(d.toPort, 5353);
    guest.sendUdp(5353, d.from4, d.fromPort, new TextEncoder().encode("back via lo"));
    await guest.until(() => replies.length === 1, 5000, "the guest's reply");
    assert.deepEqual(replies, ["back via lo"]);
  } finally {
    client.close();
    guest.stop();
    fw.close();
    stack.close();
    loop.stop();
    await running;
    loop.close();
  }
});

Deno.test("`startForwarding()` reports a `%IF` UDP forward on an unknown interface as not listening", async () => {
  const logger = new Logger();
  const lines: string[] = [];
  logger.setSink((_l, line) => lines.push(line));
  const stack = new NetworkStack(testPlan(), { logger });
  const uport = await freeUdpPort();
  const fw = startForwarding(stack, {
    logger,
    udpForwards: parsePortForwardTable([`127.0.0.1%tpnosuch0/${uport}:5353`]),
  });
  try {
    assert.deepEqual(fw.listening, { tcp: 0, udp: 0 });
    assert.ok(
      lines.some((l) => /udp: 1 port forward\(s\) not listening.*ENODEV/.test(l)),
      lines.join("\n"),
    );
  } finally {
    fw.close();
    stack.close();
  }
});

Deno.test("`startForwarding()` over Deno.listen reports a `%IF` TCP forward as not listening", () => {
  const logger = new Logger();
  const lines: string[] = [];
  logger.setSink((_l, line) => lines.push(line));
  const stack = new NetworkStack(testPlan(), { logger });
  const tport = freePort();
  const fw = startForwarding(stack, {
    logger,
    tcpForwards: parsePortForwardTable([`127.0.0.1%lo/${tport}:8080`]),
  });
  assert.deepEqual(fw.listening, { tcp: 0, udp: 0 });
  assert.ok(lines.some((l) => /Deno\.listen cannot bind to one/.test(l)), lines.join("\n"));
  fw.close();
  stack.close();
});
