import assert from "node:assert/strict";
import dgram from "node:dgram";
import { UdpSocket } from "../../ffi/udp_socket.ts";
import { Buffer } from "node:buffer";
import { NetworkStack } from "./stack.ts";
import {
  DEFAULT_EPHEMERAL,
  describePorts,
  expandForwards,
  FDS_KEPT_FREE,
  type Forwarding,
  type ForwardingOptions,
  ForwardSetupError,
  hostEphemeralRange,
  listenerBudget,
  openFileLimit,
  startForwarding,
} from "./fwd_setup.ts";
import { assertThrows } from "../../tests/support/assert.ts";
import { TestGuest } from "../../tests/support/net/tcp_guest.ts";
import {
  TEST_GATEWAY4,
  TEST_GUEST4,
  TEST_GUEST6,
  testPlan,
} from "../../tests/support/net/tcp_plan.ts";
import { parsePortForwardTable } from "../config/port_spec.ts"; // test input only
import { EventLoop } from "../loop/event_loop.ts";
import { nativeHostTcp } from "./tcp/host_socket.ts";
import { recordingLogger } from "../../tests/support/recording_logger.ts";

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p = (l.addr as Deno.NetAddr).port;
  l.close();
  return p;
}

/**
 * A UDP port free on 127.0.0.1 just now, from the helper's socket: its close(2) is
 * synchronous (a node:dgram socket may still hold the port after its close callback).
 */
function freeUdpPort(): number {
  const s = UdpSocket.open(4, { address: new Uint8Array([127, 0, 0, 1]), port: 0 });
  try {
    return s.localAddress().port;
  } finally {
    s.close();
  }
}

/** Attempts of {@link forwardOnFreePorts} before an EADDRINUSE fails the test. */
const FREE_PORT_ATTEMPTS = 5;

/**
 * startForwarding() on a fresh stack from `makeStack` and on a TCP and a UDP port
 * picked free just before, the forwards built from them by `options`: another test may
 * take one in between (explicit forwards then fail with EADDRINUSE, leaving the stack
 * with its translators registered), so the stack is closed, new ports are picked and
 * it is tried again on a new stack.
 */
function forwardOnFreePorts(
  makeStack: () => NetworkStack,
  options: (tport: number, uport: number) => ForwardingOptions,
): { stack: NetworkStack; fw: Forwarding; tport: number; uport: number } {
  for (let attempt = 1;; attempt++) {
    const tport = freePort();
    const uport = freeUdpPort();
    const stack = makeStack();
    try {
      return { stack, fw: startForwarding(stack, options(tport, uport)), tport, uport };
    } catch (error) {
      stack.close();
      if (attempt >= FREE_PORT_ATTEMPTS || !/EADDRINUSE/.test((error as Error).message)) {
        throw error;
      }
    }
  }
}

Deno.test("`expandForwards()` lists host ports with their guest targets", () => {
  const t = parsePortForwardTable(["127.0.0.1/2000-2002:3000-3002", "22"]);
  const forwards = expandForwards(t, DEFAULT_EPHEMERAL);
  assert.deepEqual(forwards.map((x) => [x.bind, x.host, x.guest]), [
    ["127.0.0.1", 2000, 3000],
    ["127.0.0.1", 2001, 3001],
    ["127.0.0.1", 2002, 3002],
    [null, 22, 22],
  ]);
});

Deno.test("`expandForwards()` carries each spec's target address to its ports", () => {
  const t = parsePortForwardTable([
    "0.0.0.0/5000:127.0.0.5/6000",
    "127.0.0.6/all:127.0.0.7,~1-79,~82-65535",
    "7000",
  ]);
  const forwards = expandForwards(t, DEFAULT_EPHEMERAL);
  assert.deepEqual(forwards.map((x) => [x.bind, x.host, x.guest, x.target]), [
    ["0.0.0.0", 5000, 6000, "127.0.0.5"],
    ["127.0.0.6", 80, 80, "127.0.0.7"],
    ["127.0.0.6", 81, 81, "127.0.0.7"],
    [null, 7000, 7000, null],
  ]);
});

Deno.test("`expandForwards()` gives `all` every port but the ephemeral range, without a cap", () => {
  const all = expandForwards(parsePortForwardTable(["all"]), DEFAULT_EPHEMERAL);
  const ephemeralCount = DEFAULT_EPHEMERAL.last - DEFAULT_EPHEMERAL.first + 1;
  assert.equal(all.length, 65535 - ephemeralCount);
  assert.ok(
    all.every((f) => f.host < DEFAULT_EPHEMERAL.first || f.host > DEFAULT_EPHEMERAL.last),
  );
});

Deno.test("`hostEphemeralRange()`, `openFileLimit()` and `describePorts()` read and say what they should", () => {
  assert.deepEqual(hostEphemeralRange(() => "32768\t60999\n"), { first: 32768, last: 60999 });
  assert.deepEqual(hostEphemeralRange(() => "1024 2047\n"), { first: 1024, last: 2047 });
  assert.deepEqual(hostEphemeralRange(() => null), DEFAULT_EPHEMERAL);
  assert.deepEqual(hostEphemeralRange(() => "garbage"), DEFAULT_EPHEMERAL);
  const limits =
    "Limit                     Soft Limit           Hard Limit           Units     \n" +
    "Max open files            20000                20000                files     \n";
  assert.equal(openFileLimit(() => limits), 20000);
  assert.equal(openFileLimit(() => limits.replace("20000  ", "unlimited")), null);
  assert.equal(typeof openFileLimit(), "number"); // this process's own
  assert.equal(listenerBudget(20000, 30), 20000 - 30 - FDS_KEPT_FREE);
  assert.equal(listenerBudget(null, 30), Infinity);
  assert.equal(describePorts([1, 2, 3, 7, 9, 10]), "1-3, 7, 9-10");
  assert.equal(
    describePorts([1, 3, 5, 7, 9, 11, 13, 15, 17, 19]),
    "1, 3, 5, 7, 9, 11, 13, 15, and 2 more",
  );
});

Deno.test("`startForwarding()` fails on an explicit port it cannot listen on, naming it", () => {
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (busy.addr as Deno.NetAddr).port;
  const { logger } = recordingLogger({ level: "debug", withLevel: true });
  const stack = new NetworkStack(testPlan(), { logger });
  try {
    const error = assertThrows(
      () =>
        startForwarding(stack, {
          logger,
          tcpForwards: parsePortForwardTable([`127.0.0.1/${port}`]),
        }),
      new RegExp(
        `^-t 127\\.0\\.0\\.1/${port}: cannot listen on 127\\.0\\.0\\.1 port ${port}: ` +
          "in use \\(EADDRINUSE\\)$",
      ),
    );
    assert.ok(error instanceof ForwardSetupError);
  } finally {
    busy.close();
    stack.close();
  }
});

Deno.test("`startForwarding()` binds `all` as far as descriptors allow and names the ports left out", () => {
  const { logger, lines } = recordingLogger({ level: "debug", withLevel: true });
  const stack = new NetworkStack(testPlan(), { logger });
  // 65000-65535 on 127.0.0.1, with room for only 5 listeners.
  const fw = startForwarding(stack, {
    logger,
    tcpForwards: parsePortForwardTable(["127.0.0.1/~1-64999"]),
    ephemeral: DEFAULT_EPHEMERAL,
    maxListeners: 5,
  });
  try {
    assert.equal(fw.listening.tcp, 5);
    const warning = lines.find((l) => l.startsWith("warn: -t 127.0.0.1/~1-64999: "));
    assert.ok(warning !== undefined, lines.join("\n"));
    assert.match(
      warning,
      /: [0-9]+ port\(s\) not bound: the open file limit.* leaves no descriptor/,
    );
    assert.match(warning, /6500[5-9]-65535/);
    assert.ok(
      lines.some((l) => /^info: -t 127\.0\.0\.1\/~1-64999: listening on 5 of 536 port/.test(l)),
    );
  } finally {
    fw.close();
    stack.close();
  }
});

Deno.test("`startForwarding()` takes target addresses without a warning and warns about UDP --freebind", () => {
  const { logger, lines } = recordingLogger({ level: "debug", withLevel: true });
  const { stack, fw, tport, uport } = forwardOnFreePorts(
    () => new NetworkStack(testPlan(), { logger }),
    (tport, uport) => ({
      logger,
      tcpForwards: parsePortForwardTable([`127.0.0.1/${tport}:127.0.0.99/22`]),
      udpForwards: parsePortForwardTable([`127.0.0.1/${uport}`]),
      freebind: true,
    }),
  );
  try {
    assert.deepEqual(fw.listening, { tcp: 1, udp: 1 });
    assert.ok(!lines.some((l) => /target address/.test(l)), lines.join("\n"));
    assert.ok(
      lines.some((l) => l.startsWith(`warn: -u 127.0.0.1/${uport}: --freebind not honoured`)),
    );
    assert.ok(
      lines.includes(`debug: tcp forward 127.0.0.1:${tport} => 127.0.0.99:22`),
      lines.join("\n"),
    );
  } finally {
    fw.close();
    stack.close();
  }
});

Deno.test("`startForwarding()` registers TCP and UDP with the NetworkStack and opens -t/-u forwards", async () => {
  const { logger, lines } = recordingLogger();
  const { stack, fw, tport, uport } = forwardOnFreePorts(() =>
    new NetworkStack(testPlan(), {
      logger,
      forward: { outbound4: "127.0.0.1", outboundIf4: "lo" },
    }), (tport, uport) => ({
      logger,
      tcpForwards: parsePortForwardTable([`127.0.0.1/${tport}:8080`]),
      udpForwards: parsePortForwardTable([`127.0.0.1/${uport}:5353`]),
    }));
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
  const { logger, lines } = recordingLogger();
  const loop = new EventLoop();
  const running = loop.run();
  const { stack, fw, tport, uport } = forwardOnFreePorts(
    () => new NetworkStack(testPlan(), { logger }),
    (tport, uport) => ({
      logger,
      tcpForwards: parsePortForwardTable([`127.0.0.1%lo/${tport}:8080`]),
      udpForwards: parsePortForwardTable([`127.0.0.1%lo/${uport}:5353`]),
      tcpHost: nativeHostTcp(loop),
      loop,
      udpWatcher: loop,
    }),
  );
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

Deno.test("`startForwarding()` without a loop binds a `%IF` TCP forward with host sockets on an event loop of its own", async () => {
  const { logger, lines } = recordingLogger();
  const stack = new NetworkStack(testPlan(), { logger });
  const tport = freePort();
  const fw = startForwarding(stack, {
    logger,
    tcpForwards: parsePortForwardTable([`127.0.0.1%lo/${tport}:8080`]),
  });
  assert.deepEqual(fw.listening, { tcp: 1, udp: 0 }, lines.join("\n"));
  const client = await Deno.connect({ hostname: "127.0.0.1", port: tport });
  client.close();
  fw.close();
  stack.close();
});

Deno.test("`startForwarding()` fails on a `%IF` UDP forward on an unknown interface, naming ENODEV", () => {
  const { logger } = recordingLogger({ level: "debug", withLevel: true });
  const stack = new NetworkStack(testPlan(), { logger });
  const uport = freeUdpPort();
  try {
    const error = assertThrows(
      () =>
        startForwarding(stack, {
          logger,
          udpForwards: parsePortForwardTable([`127.0.0.1%tpnosuch0/${uport}:5353`]),
        }),
      new RegExp(
        `^-u 127\\.0\\.0\\.1%tpnosuch0/${uport}:5353: cannot listen on 127\\.0\\.0\\.1 port ` +
          `${uport}: ENODEV$`,
      ),
    );
    assert.ok(error instanceof ForwardSetupError);
  } finally {
    stack.close();
  }
});

Deno.test("`startForwarding()` shares the descriptors left evenly between `all` specs", () => {
  const { logger, lines } = recordingLogger({ level: "debug", withLevel: true });
  const stack = new NetworkStack(testPlan(), { logger });
  const fw = startForwarding(stack, {
    logger,
    tcpForwards: parsePortForwardTable(["127.0.0.1/~1-64999"]),
    udpForwards: parsePortForwardTable(["127.0.0.1/~1-64999"]),
    ephemeral: DEFAULT_EPHEMERAL,
    maxListeners: 10,
  });
  try {
    assert.deepEqual(fw.listening, { tcp: 5, udp: 5 }, lines.join("\n"));
    assert.ok(
      lines.some((l) => /^warn: -u 127\.0\.0\.1\/~1-64999: 531 port\(s\) not bound/.test(l)),
    );
  } finally {
    fw.close();
    stack.close();
  }
});
