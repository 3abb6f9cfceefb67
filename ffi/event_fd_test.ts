import assert from "node:assert/strict";
import { describeFd, EventFd } from "./event_fd.ts";
import { cString, helper } from "./library.ts";
import { closeFd, createPipe, openFdCount } from "./process.ts";
import { UnixStream } from "./unix_stream.ts";

Deno.test("`EventFd.drain()` returns the summed signals, then 0", () => {
  const before = openFdCount();
  const event = EventFd.create();
  assert.equal(event.drain(), 0);
  event.signal();
  event.signal(41);
  assert.equal(event.drain(), 42);
  assert.equal(event.drain(), 0);
  event.signal(0xffffffff);
  event.signal(0xffffffff);
  assert.equal(event.drain(), 2 * 0xffffffff);
  assert.throws(() => event.signal(0), RangeError);
  assert.throws(() => event.signal(2 ** 32), RangeError);
  event.close();
  event.close();
  assert.throws(() => event.signal(), /closed/);
  assert.equal(openFdCount(), before);
});

Deno.test("`describeFd()` accepts only an eventfd in normal mode and names everything else", () => {
  const before = openFdCount();
  const normal = EventFd.create();
  const semaphore = EventFd.create({ semaphore: true });
  const [readEnd, writeEnd] = createPipe();
  const [left, right] = UnixStream.pair();
  const dir = Deno.makeTempDirSync({ prefix: "tpasst-describe-fd-" });
  const file = helper().tp_file_open(cString(`${dir}/plain`), 0);
  assert.ok(file >= 0, `open: ${file}`);
  try {
    assert.deepEqual(describeFd(normal.fd), {
      normalEventFd: true,
      verified: true,
      text: "an eventfd",
    });
    assert.deepEqual(describeFd(semaphore.fd), {
      normalEventFd: false,
      verified: true,
      text: "a semaphore-mode eventfd (EFD_SEMAPHORE)",
    });
    const pipe = describeFd(readEnd);
    assert.equal(pipe.normalEventFd, false);
    assert.match(pipe.text, /^a pipe \(pipe:\[\d+\]\)$/);
    assert.match(describeFd(writeEnd).text, /^a pipe /);
    assert.match(describeFd(left.fd).text, /^a socket \(socket:\[\d+\]\)$/);
    const regular = describeFd(file);
    assert.equal(regular.normalEventFd, false);
    assert.equal(regular.text, `a regular file (${dir}/plain)`);
  } finally {
    for (const fd of [readEnd, writeEnd, file]) closeFd(fd);
    left.close();
    right.close();
    normal.close();
    semaphore.close();
    Deno.removeSync(dir, { recursive: true });
  }
  // above the hard fd limit (20,000 here): never an open descriptor
  assert.throws(() => describeFd(1_000_000), /EBADF/);
  assert.equal(openFdCount(), before);
});

Deno.test("`EventFd.create({ semaphore: true })` takes one off the counter per read", () => {
  const event = EventFd.create({ semaphore: true });
  try {
    event.signal(3);
    assert.deepEqual([event.drain(), event.drain(), event.drain(), event.drain()], [1, 1, 1, 0]);
  } finally {
    event.close();
  }
});
