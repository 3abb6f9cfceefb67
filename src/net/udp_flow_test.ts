import assert from "node:assert/strict";
import dgram from "node:dgram";
import { Buffer } from "node:buffer";
import { GuestSender } from "./guest_sender.ts";
import { UdpTranslator } from "./udp_flow.ts";
import { TcpTranslator } from "./tcp_translator.ts";
import { TestGuest } from "./tcp_test_guest.ts";
import {
  TEST_DNS4,
  TEST_GATEWAY4,
  TEST_GATEWAY6,
  TEST_GUEST4,
  TEST_GUEST6,
  testRules,
} from "./tcp_test_plan.ts";
import type { ForwardRules } from "./fwd.ts";
import { nextTask, PublishOnFlushLink } from "./testing_link.ts";

function setup(family: 4 | 6 = 4, rules: ForwardRules = testRules()) {
  const sender = new GuestSender(0x9a559a559a55);
  const udp = new UdpTranslator(sender, rules);
  const tcp = new TcpTranslator(sender, rules);
  const guest = new TestGuest(tcp, udp, family, TEST_GUEST4, TEST_GUEST6);
  sender.setLink(guest);
  guest.onWritable((now) => tcp.linkWritable(now));
  return {
    sender,
    udp,
    tcp,
    guest,
    close: () => {
      guest.stop();
      udp.close();
      tcp.close();
    },
  };
}

/** A UDP echo server on loopback recording the source ports it saw. */
async function echoServer(type: "udp4" | "udp6") {
  const sock = dgram.createSocket(type);
  const seen: number[] = [];
  sock.on("message", (msg, r) => {
    seen.push(r.port);
    sock.send(Buffer.concat([Buffer.from("echo:"), msg]), r.port, r.address);
  });
  await new Promise<void>((res) => sock.bind(0, type === "udp4" ? "127.0.0.1" : "::1", res));
  return { sock, port: sock.address().port, seen };
}

function freeUdpPort(): number {
  // Ports in 20000..29999 chosen at random; collisions only cause the ephemeral fallback.
  return 20000 + Math.floor(Math.random() * 10000);
}

Deno.test("`UdpTranslator` echoes a guest datagram through the host keeping the source port", async () => {
  for (const family of [4, 6] as const) {
    const { udp, guest, close } = setup(family);
    const echo = await echoServer(family === 4 ? "udp4" : "udp6");
    const srcPort = freeUdpPort();
    guest.sendUdp(
      srcPort,
      TEST_GATEWAY4,
      echo.port,
      new TextEncoder().encode("ping"),
      family === 6 ? TEST_GATEWAY6 : undefined,
    );
    await guest.until(() => guest.datagrams.length > 0, 5000, "echo reply");
    const d = guest.datagrams[0];
    assert.equal(new TextDecoder().decode(d.data), "echo:ping");
    assert.equal(d.toPort, srcPort);
    assert.equal(d.fromPort, echo.port);
    if (family === 4) assert.equal(d.from4, TEST_GATEWAY4);
    else assert.deepEqual(d.from6, TEST_GATEWAY6);
    if (udp.counters.ephemeralFallback === 0) assert.deepEqual(echo.seen, [srcPort]);
    assert.equal(udp.flows.size, 1);
    echo.sock.close();
    close();
  }
});

Deno.test("`UdpTranslator` ends every datagram from the host with a flush", async () => {
  const { sender, guest, close } = setup(4);
  // The guest sees a frame only once flushed, and its own timer (whose endOfBatch
  // flushes too) is off: only the sender's flush at the end of the task delivers.
  guest.stop();
  const link = new PublishOnFlushLink(guest);
  sender.setLink(link);
  const echo = await echoServer("udp4");
  const srcPort = freeUdpPort();
  for (let i = 0; i < 5; i++) {
    guest.sendUdp(srcPort, TEST_GATEWAY4, echo.port, new TextEncoder().encode(`n${i}`));
  }
  await guest.until(() => guest.datagrams.length === 5, 2000, "five echo replies");
  await nextTask();
  assert.equal(link.unflushedFrames, 0);
  assert.equal(link.flushedFrames, 5);
  echo.sock.close();
  close();
});

Deno.test("`UdpTranslator.listen()` forwards a host port to the guest and carries the reply back", async () => {
  const { udp, guest, close } = setup(4);
  const hostPort = await udp.listen("127.0.0.1", 0, 5353);
  const client = dgram.createSocket("udp4");
  await new Promise<void>((res) => client.bind(0, "127.0.0.1", res));
  const replies: string[] = [];
  const replyFrom: number[] = [];
  client.on("message", (m, r) => {
    replies.push(m.toString());
    replyFrom.push(r.port);
  });
  client.send(Buffer.from("hello guest"), hostPort, "127.0.0.1");
  await guest.until(() => guest.datagrams.length > 0, 5000, "inbound datagram");
  const d = guest.datagrams[0];
  assert.equal(new TextDecoder().decode(d.data), "hello guest");
  assert.equal(d.toPort, 5353);
  assert.equal(d.from4, TEST_GATEWAY4);
  assert.equal(d.fromPort, client.address().port);
  guest.sendUdp(5353, TEST_GATEWAY4, d.fromPort, new TextEncoder().encode("hello host"));
  await guest.until(() => replies.length > 0, 5000, "reply at the host");
  assert.deepEqual(replies, ["hello host"]);
  assert.deepEqual(replyFrom, [hostPort]);
  client.close();
  close();
});

Deno.test("`UdpTranslator` drops datagrams toward a guest link without room and counts them", async () => {
  const { udp, guest, close } = setup(4);
  const echo = await echoServer("udp4");
  guest.noRoom = true;
  guest.sendUdp(freeUdpPort(), TEST_GATEWAY4, echo.port, new Uint8Array([1, 2, 3]));
  await guest.until(() => udp.counters.noRoom > 0, 5000, "no-room drop");
  assert.equal(guest.datagrams.length, 0);
  echo.sock.close();
  close();
});

Deno.test("`UdpTranslator` forwards DNS to the configured resolver and answers from the DNS address", async () => {
  const resolver = dgram.createSocket("udp4");
  const queries: Buffer[] = [];
  resolver.on("message", (m, r) => {
    queries.push(m);
    const answer = Buffer.from(m);
    answer[2] |= 0x80; // QR: response
    resolver.send(answer, r.port, r.address);
  });
  await new Promise<void>((res) => resolver.bind(0, "127.0.0.1", res));
  const rules = testRules("127.0.0.1", { dnsHostPort: resolver.address().port });
  const { guest, close } = setup(4, rules);
  // A minimal query: id 0x1234, RD, one question "a." IN A.
  const q = new Uint8Array([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0x61, 0, 0, 1, 0, 1]);
  guest.sendUdp(freeUdpPort(), TEST_DNS4, 53, q);
  await guest.until(() => guest.datagrams.length > 0, 5000, "DNS answer");
  const d = guest.datagrams[0];
  assert.equal(d.from4, TEST_DNS4);
  assert.equal(d.fromPort, 53);
  assert.equal(queries.length, 1);
  assert.equal(d.data[2] & 0x80, 0x80);
  assert.deepEqual(d.data.subarray(3), q.subarray(3));
  resolver.close();
  close();
});

Deno.test("`TcpTranslator` forwards DNS over TCP to the configured resolver", async () => {
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const rules = testRules("127.0.0.1", { dnsHostPort: (server.addr as Deno.NetAddr).port });
  const { guest, close } = setup(4, rules);
  const served = (async () => {
    const conn = await server.accept();
    const buf = new Uint8Array(100);
    const n = await conn.read(buf);
    await conn.write(buf.subarray(0, n!));
    conn.close();
  })();
  const c = guest.connect(TEST_DNS4, 53);
  await c.until(() => c.state === "established", 5000, "established");
  guest.write(c, new Uint8Array([0, 3, 9, 8, 7]));
  await c.until(() => c.eof, 5000, "eof");
  assert.deepEqual(c.takeReceived(), new Uint8Array([0, 3, 9, 8, 7]));
  await served;
  server.close();
  close();
});

Deno.test("`UdpTranslator` expires idle flows and closes their sockets", async () => {
  const sender = new GuestSender(0x9a559a559a55);
  const udp = new UdpTranslator(sender, testRules(), { idleTimeoutMs: 200 });
  const tcp = new TcpTranslator(sender, testRules());
  const guest = new TestGuest(tcp, udp, 4, TEST_GUEST4, TEST_GUEST6);
  sender.setLink(guest);
  const echo = await echoServer("udp4");
  const srcPort = freeUdpPort();
  guest.sendUdp(srcPort, TEST_GATEWAY4, echo.port, new Uint8Array([1]));
  await guest.until(() => guest.datagrams.length === 1, 5000, "reply");
  assert.equal(udp.flows.size, 1);
  await guest.until(() => udp.flows.size === 0, 5000, "expiry");
  assert.equal(udp.boundPort(srcPort), null, "the socket closed with its last flow");
  echo.sock.close();
  guest.stop();
  udp.close();
  tcp.close();
});

Deno.test("`UdpTranslator` drops new flows beyond the flow limit and counts them", async () => {
  const sender = new GuestSender(0x9a559a559a55);
  const udp = new UdpTranslator(sender, testRules(), { maxFlows: 3 });
  const tcp = new TcpTranslator(sender, testRules());
  const guest = new TestGuest(tcp, udp, 4, TEST_GUEST4, TEST_GUEST6);
  sender.setLink(guest);
  const echo = await echoServer("udp4");
  const base = freeUdpPort();
  for (let i = 0; i < 5; i++) {
    guest.sendUdp(base + i, TEST_GATEWAY4, echo.port, new Uint8Array([i]));
  }
  assert.equal(udp.flows.size, 3);
  assert.equal(udp.counters.tableFull, 2);
  await guest.until(() => guest.datagrams.length === 3, 5000, "three replies");
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(guest.datagrams.map((d) => d.data[5]).sort(), [0, 1, 2]);
  echo.sock.close();
  guest.stop();
  udp.close();
  tcp.close();
});

Deno.test("`UdpTranslator.listen()` forwards an IPv6 host port, shown from the IPv6 gateway", async () => {
  const { udp, guest, close } = setup(6);
  const hostPort = await udp.listen("::1", 0, 7000);
  const client = dgram.createSocket("udp6");
  await new Promise<void>((res) => client.bind(0, "::1", res));
  const replies: string[] = [];
  client.on("message", (m) => replies.push(m.toString()));
  client.send(Buffer.from("v6 hello"), hostPort, "::1");
  await guest.until(() => guest.datagrams.length > 0, 5000, "inbound datagram");
  const d = guest.datagrams[0];
  assert.deepEqual(d.from6, TEST_GATEWAY6);
  assert.equal(d.toPort, 7000);
  guest.sendUdp(7000, 0, d.fromPort, new TextEncoder().encode("v6 reply"), TEST_GATEWAY6);
  await guest.until(() => replies.length > 0, 5000, "reply at the host");
  assert.deepEqual(replies, ["v6 reply"]);
  client.close();
  close();
});
