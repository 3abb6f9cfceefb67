import assert from "node:assert/strict";
import { EventFd } from "./event_fd.ts";
import { MappedMemory } from "./mapped_memory.ts";
import { MemFd } from "./mem_fd.ts";
import { closeFd, openFdCount } from "./process.ts";
import { MAX_FDS_PER_MESSAGE, UnixStream } from "./unix_stream.ts";

Deno.test("`UnixStream.pair()` streams carry bytes both ways, report would-block and EOF", () => {
  const before = openFdCount();
  const [a, b] = UnixStream.pair(true);
  const buf = new Uint8Array(16);
  assert.equal(b.recv(buf), -1);
  assert.equal(a.send(new Uint8Array([1, 2, 3])), 3);
  assert.equal(b.recv(buf), 3);
  assert.deepEqual([...buf.subarray(0, 3)], [1, 2, 3]);
  assert.equal(b.send(new Uint8Array([9])), 1);
  assert.equal(a.recv(buf), 1);
  assert.equal(buf[0], 9);
  a.close();
  assert.equal(b.recv(buf), 0);
  b.close();
  b.close();
  assert.equal(b.fd, -1);
  assert.throws(() => b.recv(buf), /closed/);
  assert.equal(openFdCount(), before);
});

Deno.test("`UnixStream.send()` returns -1 when the socket is full and throws EPIPE after the peer closed", () => {
  const before = openFdCount();
  const [a, b] = UnixStream.pair(true);
  const chunk = new Uint8Array(65536);
  let sent = 0;
  let rc = 0;
  while ((rc = a.send(chunk)) > 0) sent += rc;
  assert.equal(rc, -1);
  assert.ok(sent > 0);
  b.close();
  assert.throws(() => a.send(chunk), (error: Error & { errnoName?: string }) => {
    return error.errnoName === "EPIPE" || error.errnoName === "ECONNRESET";
  });
  a.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`UnixStream.recvWithFds()` delivers usable eventfd and memfd descriptors", () => {
  const before = openFdCount();
  const [a, b] = UnixStream.pair();
  const event = EventFd.create();
  const memory = MemFd.create("fd-passing", 8192);
  assert.equal(a.sendWithFds(new Uint8Array([42]), [event.fd, memory.fd]), 1);

  const buf = new Uint8Array(8);
  const message = b.recvWithFds(buf, 8);
  assert.equal(message.bytes, 1);
  assert.equal(buf[0], 42);
  assert.equal(message.fds.length, 2);
  assert.equal(message.fdsDropped, false);
  assert.notEqual(message.fds[0], event.fd);

  const receivedEvent = EventFd.fromFd(message.fds[0]);
  receivedEvent.signal(5);
  assert.equal(event.drain(), 5);
  event.signal(2);
  assert.equal(receivedEvent.drain(), 2);

  const receivedMap = MappedMemory.map(message.fds[1], 8192, 0);
  const originalMap = MappedMemory.map(memory.fd, 8192, 0);
  receivedMap.bytes[4100] = 0xab;
  assert.equal(originalMap.bytes[4100], 0xab);
  originalMap.bytes[7] = 0xcd;
  assert.equal(receivedMap.bytes[7], 0xcd);

  receivedMap.close();
  originalMap.close();
  closeFd(message.fds[1]);
  receivedEvent.close();
  event.close();
  memory.close();
  a.close();
  b.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`UnixStream.recvWithFds()` closes descriptors beyond maxFds", () => {
  const before = openFdCount();
  const [a, b] = UnixStream.pair();
  const events = [EventFd.create(), EventFd.create(), EventFd.create(), EventFd.create()];
  const fds = events.map((event) => event.fd);
  a.sendWithFds(new Uint8Array([1]), fds);
  const withAll = openFdCount();
  const message = b.recvWithFds(new Uint8Array(4), 1);
  assert.equal(message.bytes, 1);
  assert.equal(message.fds.length, 1);
  assert.equal(message.fdsDropped, true);
  assert.equal(openFdCount(), withAll + 1, "only the one accepted fd was added");
  closeFd(message.fds[0]);

  a.sendWithFds(new Uint8Array([2]), fds);
  const none = b.recvWithFds(new Uint8Array(4), 0);
  assert.equal(none.bytes, 1);
  assert.deepEqual(none.fds, []);
  assert.equal(none.fdsDropped, true);
  assert.equal(openFdCount(), withAll, "maxFds 0 closes every received fd");

  for (const event of events) event.close();
  a.close();
  b.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`UnixStream.recvWithFds()` reports MSG_CTRUNC without leaking descriptors", () => {
  const before = openFdCount();
  const [a, b] = UnixStream.pair();
  // SO_PASSCRED makes the kernel put credentials before the fds, so a full set of
  // SCM_MAX_FD descriptors no longer fits the control buffer: MSG_CTRUNC.
  b.setPassCredentials(true);
  const event = EventFd.create();
  const many = new Array<number>(MAX_FDS_PER_MESSAGE).fill(event.fd);
  assert.equal(a.sendWithFds(new Uint8Array([7]), many), 1);
  const message = b.recvWithFds(new Uint8Array(4), MAX_FDS_PER_MESSAGE);
  assert.equal(message.bytes, 1);
  assert.equal(message.fdsDropped, true);
  assert.ok(message.fds.length < MAX_FDS_PER_MESSAGE, `got ${message.fds.length} fds`);
  assert.equal(openFdCount(), before + 3 + message.fds.length);
  for (const fd of message.fds) closeFd(fd);
  event.close();
  a.close();
  b.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`UnixStream.recvWithFds()` returns bytes -1 on would-block and 0 at EOF", () => {
  const before = openFdCount();
  const [a, b] = UnixStream.pair();
  b.setNonBlocking(true);
  assert.deepEqual(b.recvWithFds(new Uint8Array(4), 4), { bytes: -1, fds: [], fdsDropped: false });
  a.close();
  assert.deepEqual(b.recvWithFds(new Uint8Array(4), 4), { bytes: 0, fds: [], fdsDropped: false });
  b.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`UnixStream.sendWithFds()` rejects a bad descriptor with EBADF", () => {
  const before = openFdCount();
  const [a, b] = UnixStream.pair();
  assert.throws(
    () => a.sendWithFds(new Uint8Array([1]), [1_000_000]),
    (error: Error & { errnoName?: string }) => error.errnoName === "EBADF",
  );
  a.close();
  b.close();
  assert.equal(openFdCount(), before);
});
