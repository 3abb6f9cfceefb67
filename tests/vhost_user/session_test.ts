import assert from "node:assert/strict";
import { EventFd } from "../../ffi/event_fd.ts";
import { openFdCount } from "../../ffi/process.ts";
import { RecordingDatapath } from "../support/vhost_user/backend_doubles.ts";
import { encodeRequest } from "../support/vhost_user/request_encoder.ts";
import { Request } from "../../src/vhost_user/protocol.ts";
import { InProcessBackend } from "../support/frontend/in_process.ts";
import { RX, TX, type VhostUserFrontend } from "../support/frontend/vhost_user_frontend.ts";
import { waitUntil } from "../support/wait_until.ts";
import {
  memTablePayload,
  singleRegionPayload,
  u64Payload,
  vringAddrPayload,
  vringStatePayload,
} from "../../src/vhost_user/payload_codec.ts";

const variants = [
  { name: "with REPLY_ACK and memory slots", options: {} },
  { name: "with REPLY_ACK, SET_MEM_TABLE", options: { memSlots: false } },
  { name: "without REPLY_ACK", options: { replyAck: false } },
  { name: "without protocol features", options: { protocolFeatures: false } },
];

for (const variant of variants) {
  Deno.test(`\`createVhostUserSession()\` completes QEMU 7.2's negotiation ${variant.name} over a socket`, async () => {
    const baseline = openFdCount();
    const backend = new InProcessBackend();
    const datapath = new RecordingDatapath();
    const { frontend, session } = backend.connect(datapath);
    try {
      await frontend.negotiate(variant.options);
      assert.deepEqual([...datapath.rings.keys()].sort(), [RX, TX]);
      const rx = datapath.rings.get(RX)!;
      // the backend's views are the frontend's memfd memory
      rx.usedRing[2] = 0x34;
      assert.equal(frontend.memory.view(frontend.vrings[RX].areas.used + 2, 1)[0], 0x34);
      const high = frontend.memory.regions[1].description.guestAddress;
      frontend.memory.view(high + 0x100, 1)[0] = 0x99;
      assert.equal(rx.memory.view(0x100, high / 2 ** 32, 1)?.[0], 0x99);
      // kick → datapath.kick with the loop's timestamp; notifyGuest → call eventfd
      frontend.kicks[TX].signal();
      await waitUntil(
        "TX kick",
        () => datapath.events.some((e) => e.call === "kick" && e.index === TX),
      );
      datapath.rings.get(TX)!.notifyGuest();
      assert.ok(await frontend.waitCall(TX) >= 1);
      assert.equal(await frontend.stopRing(RX), 0);
      assert.equal(datapath.rings.has(RX), false);
      assert.equal(datapath.frontendGoneCalls, 0, "a stopped ring is no front-end gone");
    } finally {
      frontend.close();
      await session.closed;
      await backend.close();
    }
    assert.equal(datapath.rings.size, 0, "rings stopped at disconnect");
    assert.equal(datapath.frontendGoneCalls, 1, "the datapath learns the front-end left");
    assert.equal(openFdCount(), baseline, "fd count back to baseline");
  });
}

interface BadMessage {
  name: string;
  /** Sends the bad message on a negotiated front-end. */
  send: (frontend: VhostUserFrontend) => void;
  log: RegExp;
}

function withEventFds(count: number, use: (fds: number[]) => void): void {
  const fds = Array.from({ length: count }, () => EventFd.create());
  try {
    use(fds.map((e) => e.fd));
  } finally {
    for (const e of fds) e.close();
  }
}

const badMessages: BadMessage[] = [
  {
    name: "queue index out of range (SET_VRING_CALL)",
    send: (f) => withEventFds(1, (fds) => f.send(Request.SET_VRING_CALL, u64Payload(39), fds)),
    log: /SET_VRING_CALL: queue index 39 is not below 32/,
  },
  {
    name: "queue index out of range (GET_VRING_BASE)",
    send: (f) => f.send(Request.GET_VRING_BASE, vringStatePayload(32, 0)),
    log: /GET_VRING_BASE: queue index 32 is not below 32/,
  },
  {
    name: "ring size not a power of two",
    send: (f) => {
      f.send(Request.GET_VRING_BASE, vringStatePayload(0, 0));
      f.send(Request.SET_VRING_NUM, vringStatePayload(0, 3));
    },
    log: /ring 0 size 3 is not a power of two/,
  },
  {
    name: "ring area outside mapped memory",
    send: (f) => {
      f.send(Request.GET_VRING_BASE, vringStatePayload(1, 0));
      f.send(
        Request.SET_VRING_ADDR,
        vringAddrPayload(1, { descriptor: 0x1000, used: 0x2000, available: 0x3000 }),
      );
    },
    log: /ring 1 descriptor table 0x1000\+4096 is outside mapped memory/,
  },
  {
    name: "nregions different from the fds sent",
    send: (f) =>
      withEventFds(3, (fds) =>
        f.send(
          Request.SET_MEM_TABLE,
          memTablePayload(f.memory.regions.map((r) => r.description)),
          fds,
        )),
    log: /SET_MEM_TABLE: 2 regions but 3 fds/,
  },
  {
    name: "extra fds on a message that takes none",
    send: (f) => withEventFds(2, (fds) => f.send(Request.GET_QUEUE_NUM, undefined, fds)),
    log: /GET_QUEUE_NUM: got 2 fds, expected 0/,
  },
  {
    name: "more fds than a message may carry",
    send: (f) => withEventFds(12, (fds) => f.send(Request.SET_VRING_CALL, u64Payload(0), fds)),
    log: /more than 8 fds came with one message/,
  },
  {
    name: "payload size wrong for the request",
    send: (f) => f.sendRaw(encodeRequest(Request.SET_VRING_ADDR, new Uint8Array(24))),
    log: /SET_VRING_ADDR: payload size 24 is not 40/,
  },
  {
    name: "header size larger than any payload",
    send: (f) =>
      f.sendRaw(encodeRequest(Request.GET_FEATURES, new Uint8Array(0), { sizeField: 0x7fffffff })),
    log: /header payload size 2147483647 exceeds the largest valid 8/,
  },
  {
    name: "ring reconfigured while started",
    send: (f) => f.send(Request.SET_VRING_NUM, vringStatePayload(1, 64)),
    log: /SET_VRING_NUM is not valid in state owned: ring 1 is started/,
  },
  {
    name: "unoffered feature bits acked",
    send: (f) => f.send(Request.SET_FEATURES, u64Payload(1n << 32n | 1n << 40n)),
    log: /SET_FEATURES: acked feature bits 0x10000000000 were not offered/,
  },
  {
    name: "a memory region larger than its file (SIGBUS guard)",
    send: (f) => {
      const region = f.memory.regions[0];
      f.send(
        Request.ADD_MEM_REG,
        singleRegionPayload({
          guestAddress: 0x10_0000_0000,
          size: region.memfd.size + 0x1000,
          userAddress: 0x7e00_0000_0000,
          mmapOffset: 0,
        }),
        [region.memfd.fd],
      );
    },
    log:
      /ADD_MEM_REG: region guest 0x1000000000 size 0x101000 offset 0x0 ends beyond its 1048576-byte file/,
  },
  {
    name: "EOF in mid-message",
    send: (f) => {
      f.sendRaw(encodeRequest(Request.SET_VRING_NUM, vringStatePayload(0, 8)).subarray(0, 15));
      f.connection.shutdown("write");
    },
    log: /closed the connection after 3 of 8 payload bytes of SET_VRING_NUM/,
  },
];

for (const bad of badMessages) {
  Deno.test(`\`createVhostUserSession()\` closes the connection on ${bad.name}, logs it once and leaks nothing`, async () => {
    const baseline = openFdCount();
    const backend = new InProcessBackend();
    try {
      const first = backend.connect(new RecordingDatapath());
      await first.frontend.negotiate();
      const before = backend.lines.length;
      bad.send(first.frontend);
      await first.frontend.waitClosed();
      await first.session.closed;
      const closing = backend.lines.slice(before).filter((l) =>
        l.includes("closing the connection")
      );
      assert.equal(closing.length, 1, `one closing line, got ${JSON.stringify(closing)}`);
      assert.match(closing[0], bad.log);
      first.frontend.close();
      // the next front-end works
      const datapath = new RecordingDatapath();
      const second = backend.connect(datapath);
      await second.frontend.negotiate();
      assert.equal(datapath.rings.size, 2);
      second.frontend.close();
      await second.session.closed;
    } finally {
      await backend.close();
    }
    assert.equal(openFdCount(), baseline, "fd count back to baseline");
  });
}

Deno.test("`createVhostUserSession()` logs a clean disconnect at info level", async () => {
  const backend = new InProcessBackend();
  const { frontend, session } = backend.connect(new RecordingDatapath());
  await frontend.negotiate();
  frontend.close();
  await session.closed;
  await backend.close();
  assert.ok(
    backend.linesAt("info").some((l) =>
      /closing the connection: front-end closed the connection$/.test(l)
    ),
  );
  assert.deepEqual(backend.linesAt("error"), []);
});

Deno.test("`createVhostUserSession()` starts a ring only once SET_VRING_ENABLE 1 arrives (protocol features)", async () => {
  const backend = new InProcessBackend();
  const datapath = new RecordingDatapath();
  const { frontend, session } = backend.connect(datapath);
  try {
    await frontend.negotiate({ enable: false, mtu: 1400 });
    assert.equal(datapath.rings.size, 0);
    frontend.setRingEnabled(TX, true);
    await waitUntil("TX started", () => datapath.rings.has(TX));
    assert.equal(datapath.rings.has(RX), false);
    assert.ok(backend.lines.some((l) => l.includes("front-end set MTU 1400")));
  } finally {
    frontend.close();
    await session.closed;
    await backend.close();
  }
});

Deno.test("`createVhostUserSession()` treats a reset connection (front-end gone with unread replies) as a disconnect", async () => {
  const backend = new InProcessBackend();
  const { frontend, session } = backend.connect(new RecordingDatapath());
  await frontend.negotiate();
  frontend.send(Request.GET_FEATURES);
  await new Promise((resolve) => setTimeout(resolve, 20)); // the reply arrives and sits unread
  frontend.close();
  await session.closed;
  await backend.close();
  assert.deepEqual(backend.linesAt("error"), []);
  assert.ok(backend.linesAt("info").some((l) => l.includes("front-end closed the connection")));
});

Deno.test("`createVhostUserSession()` treats a front-end gone before its reply as a disconnect", async () => {
  const backend = new InProcessBackend();
  const { frontend, session } = backend.connect(new RecordingDatapath());
  await frontend.negotiate();
  frontend.send(Request.GET_FEATURES);
  frontend.close(); // before the backend has read the request and replied
  await session.closed;
  await backend.close();
  assert.deepEqual(backend.linesAt("error"), []);
});

/** The warning lines naming the shared-memory options QEMU needs. */
function memoryHints(backend: InProcessBackend): string[] {
  return backend.linesAt("warn").filter((l) =>
    l.includes("-object memory-backend-memfd,id=mem,size=<guest RAM>,share=on")
  );
}

Deno.test("`createVhostUserSession()` names QEMU's shared memory options when the front-end leaves before its memory table", async () => {
  const backend = new InProcessBackend();
  try {
    // QEMU without a shared memory backend: features, owner, then it gives up.
    const { frontend, session } = backend.connect(new RecordingDatapath());
    await frontend.requestU64(Request.GET_FEATURES);
    frontend.send(Request.SET_OWNER);
    await frontend.requestU64(Request.GET_FEATURES);
    frontend.close();
    await session.closed;
    const hints = memoryHints(backend);
    assert.equal(hints.length, 1, backend.lines.join("\n"));
    assert.match(hints[0], /left before sending its memory table \(SET_MEM_TABLE\)/);
    // A front-end that negotiated fully, or said nothing at all, gets no hint.
    const full = backend.connect(new RecordingDatapath());
    await full.frontend.negotiate();
    full.frontend.close();
    await full.session.closed;
    const silent = backend.connect(new RecordingDatapath());
    silent.frontend.close();
    await silent.session.closed;
    assert.equal(memoryHints(backend).length, 1);
  } finally {
    await backend.close();
  }
});

Deno.test("`createVhostUserSession()` names QEMU's shared memory options when guest memory cannot be mapped shared", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "tpmem" });
  const backend = new InProcessBackend();
  const path = `${dir}/ram`;
  Deno.writeFileSync(path, new Uint8Array(1 << 16));
  // A read-only descriptor: MAP_SHARED with write access is refused (EACCES).
  const file = Deno.openSync(path, { read: true });
  try {
    const fd = [...Deno.readDirSync("/proc/self/fd")].map((e) => Number(e.name)).find((n) => {
      try {
        return Deno.readLinkSync(`/proc/self/fd/${n}`) === path;
      } catch {
        return false;
      }
    });
    assert.ok(fd !== undefined, "the read-only descriptor");
    const { frontend, session } = backend.connect(new RecordingDatapath());
    frontend.send(Request.SET_OWNER);
    frontend.send(
      Request.SET_MEM_TABLE,
      memTablePayload([{
        guestAddress: 0,
        size: 1 << 16,
        userAddress: 0x7f0000000000,
        mmapOffset: 0,
      }]),
      [fd],
    );
    await session.closed;
    frontend.close();
    const hints = memoryHints(backend);
    assert.equal(hints.length, 1, backend.lines.join("\n"));
    assert.match(hints[0], /its guest memory could not be mapped shared/);
  } finally {
    file.close();
    await backend.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Kicks the datapath saw on ring `index`. */
function kicksOn(datapath: RecordingDatapath, index: number): number {
  return datapath.events.filter((e) => e.call === "kick" && e.index === index).length;
}

Deno.test("`createVhostUserSession()` kicks once per signal even on a kick fd that never empties (accepted unverified, as without /proc)", async () => {
  const baseline = openFdCount();
  const backend = new InProcessBackend();
  const datapath = new RecordingDatapath();
  // without /proc a semaphore-mode eventfd looks like any anonymous inode
  const { frontend, session } = backend.connect(datapath, {
    describeFd: () => ({
      normalEventFd: true,
      verified: false,
      text: "an anonymous inode (without /proc/self/fd, not known to be an eventfd)",
    }),
  });
  const semaphore = EventFd.create({ semaphore: true });
  try {
    semaphore.signal(0xffffffff); // each read takes 1 off: it would take hours to empty
    await frontend.negotiate({ fds: { kick: [undefined, semaphore.fd] } });
    await waitUntil("the first TX kick", () => kicksOn(datapath, TX) >= 1);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const afterIdle = kicksOn(datapath, TX);
    assert.ok(afterIdle <= 2, `${afterIdle} kicks for one signal: the watch fires on and on`);
    semaphore.signal();
    await waitUntil("the kick of the next signal", () => kicksOn(datapath, TX) > afterIdle);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.ok(kicksOn(datapath, TX) <= afterIdle + 2, `${kicksOn(datapath, TX)} kicks`);
    assert.equal(
      backend.linesAt("warn").filter((l) => /fd is an anonymous inode .*used as an eventfd/.test(l))
        .length,
      1,
      "one warning that the fd could not be verified",
    );
  } finally {
    frontend.close();
    await session.closed;
    await backend.close();
    semaphore.close();
  }
  assert.equal(openFdCount(), baseline, "fd count back to baseline");
});

Deno.test("`createVhostUserSession()` serves one eventfd given as kick fd of both rings: each ring is kicked, nothing spins", async () => {
  const baseline = openFdCount();
  const backend = new InProcessBackend();
  const datapath = new RecordingDatapath();
  const { frontend, session } = backend.connect(datapath);
  const shared = EventFd.create();
  try {
    await frontend.negotiate({ fds: { kick: [shared.fd, shared.fd] } });
    shared.signal();
    await waitUntil(
      "a kick on both rings",
      () => kicksOn(datapath, RX) >= 1 && kicksOn(datapath, TX) >= 1,
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.ok(kicksOn(datapath, RX) + kicksOn(datapath, TX) <= 4, "one kick per ring and signal");
    // the same eventfd sent again as TX's kick fd: the ring restarts on the new copy
    frontend.send(Request.SET_VRING_KICK, u64Payload(TX), [shared.fd]);
    await frontend.requestU64(Request.GET_FEATURES);
    const before = kicksOn(datapath, TX);
    shared.signal();
    await waitUntil("the TX kick on the new copy", () => kicksOn(datapath, TX) > before);
    assert.equal(backend.linesAt("error").length, 0, backend.lines.join("\n"));
  } finally {
    frontend.close();
    await session.closed;
    await backend.close();
    shared.close();
  }
  assert.equal(openFdCount(), baseline, "fd count back to baseline");
});
