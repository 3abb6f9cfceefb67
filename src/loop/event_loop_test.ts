import assert from "node:assert/strict";
import { EventFd } from "../../ffi/event_fd.ts";
import { openFdCount } from "../../ffi/process.ts";
import { UnixStream } from "../../ffi/unix_stream.ts";
import { log, type LogLevel, stderrSink } from "../log/logger.ts";
import { waitUntil } from "../../tests/support/wait_until.ts";
import { countDenoTurns, tickFromWorker } from "../../tests/support/loop/eventfd_ticker.ts";
import {
  DENO_TURN_INTERVAL_MS,
  EVENT_EDGE_TRIGGERED,
  EVENT_HANGUP,
  EVENT_READABLE,
  EVENT_WRITABLE,
  EventLoop,
  monotonicNow,
  pendingSoonTasks,
  runSoon,
} from "./event_loop.ts";

Deno.test("`EventLoop.run()` wakes up for a signalled eventfd and passes the wake-up time", async () => {
  const before = openFdCount();
  const loop = new EventLoop();
  const event = EventFd.create();
  const calls: { events: number; now: number; drained: number }[] = [];
  loop.watch(event.fd, (events, now) => {
    calls.push({ events, now, drained: event.drain() });
    loop.stop();
  });
  const start = monotonicNow();
  setTimeout(() => event.signal(4), 10);
  await loop.run();
  assert.equal(calls.length, 1);
  assert.equal(calls[0].events, EVENT_READABLE);
  assert.equal(calls[0].drained, 4);
  assert.ok(calls[0].now >= start && calls[0].now <= monotonicNow());
  loop.close();
  event.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`EventLoop` reports every write to an eventfd watched edge-triggered, its counter never read", async () => {
  const loop = new EventLoop();
  const event = EventFd.create();
  let calls = 0;
  loop.watch(event.fd, () => calls++, (EVENT_READABLE | EVENT_EDGE_TRIGGERED) >>> 0);
  const running = loop.run();
  try {
    for (let i = 1; i <= 3; i++) {
      event.signal();
      await waitUntil(`wake-up ${i}`, () => calls === i);
    }
    // No write, no call: the counter left at 3 is not reported again.
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(calls, 3);
    assert.equal(event.drain(), 3);
  } finally {
    loop.stop();
    await running;
    loop.close();
    event.close();
  }
});

Deno.test("`EventLoop.stop()` ends a run that is waiting with nothing to do", async () => {
  const before = openFdCount();
  const loop = new EventLoop();
  const event = EventFd.create();
  let called = false;
  loop.watch(event.fd, () => called = true);
  setTimeout(() => loop.stop(), 20);
  const running = loop.run();
  assert.equal(loop.running, true);
  await running;
  assert.equal(loop.running, false);
  assert.equal(called, false);
  // The loop can run again after a stop.
  setTimeout(() => loop.stop(), 5);
  await loop.run();
  loop.close();
  event.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`EventLoop.stop()` before run() makes run() return at once", async () => {
  const loop = new EventLoop();
  loop.stop();
  await loop.run();
  loop.close();
  loop.close();
  assert.throws(() => loop.watch(0, () => {}), /closed/);
});

Deno.test("`EventLoop.close()` while running stops the loop and releases its fds", async () => {
  const before = openFdCount();
  const loop = new EventLoop();
  const running = loop.run();
  setTimeout(() => loop.close(), 10);
  await running;
  assert.equal(openFdCount(), before);
});

Deno.test("`EventLoop` drops events of an fd unwatched and reused within the same batch", async () => {
  const before = openFdCount();
  const loop = new EventLoop();
  const first = EventFd.create();
  const second = EventFd.create();
  let replacement: EventFd | null = null;
  let reusedNumber = -1;
  let replacementCalls = 0;
  let originalCalls = 0;

  // Whichever of the two runs first closes the other and watches a new eventfd that
  // takes over the closed number; the other's event, fetched in the same wait, must
  // not reach the replacement's handler.
  const handlerFor = (mine: EventFd, other: EventFd) => () => {
    originalCalls++;
    mine.drain();
    if (replacement !== null) return;
    reusedNumber = other.fd;
    loop.unwatch(other.fd);
    other.close();
    replacement = EventFd.create();
    loop.watch(replacement.fd, () => replacementCalls++);
    setTimeout(() => loop.stop(), 30);
  };
  loop.watch(first.fd, handlerFor(first, second));
  loop.watch(second.fd, handlerFor(second, first));
  first.signal();
  second.signal();
  await loop.run();

  assert.ok(replacement !== null);
  const created: EventFd = replacement;
  assert.equal(created.fd, reusedNumber, "the new eventfd reuses the closed number");
  assert.equal(originalCalls, 1, "the closed fd's handler did not run either");
  assert.equal(replacementCalls, 0, "the stale event did not reach the new owner");
  loop.close();
  first.close();
  second.close();
  created.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`EventLoop` drops events fetched by a wait in flight for an fd closed and reused meanwhile", async () => {
  const before = openFdCount();
  const loop = new EventLoop();
  const event = EventFd.create();
  const stopper = EventFd.create();
  let staleCalls = 0;
  let reuseCalls = 0;
  loop.watch(event.fd, () => staleCalls++);
  loop.watch(stopper.fd, () => loop.stop());
  const running = loop.run(); // parks in the asynchronous wait
  event.signal();
  // Give the wait's worker thread time to return the event before the JS side sees it.
  const until = performance.now() + 5;
  while (performance.now() < until) { /* spin: the result must arrive while we hold the thread */ }
  const number = event.fd;
  loop.unwatch(number);
  event.close();
  const reuse = EventFd.create();
  assert.equal(reuse.fd, number, "the new eventfd reuses the closed number");
  loop.watch(reuse.fd, () => reuseCalls++);
  setTimeout(() => stopper.signal(), 20);
  await running;
  assert.equal(staleCalls, 0);
  assert.equal(reuseCalls, 0, "the old file's event did not reach the new owner");
  loop.close();
  reuse.close();
  stopper.close();
  assert.equal(openFdCount(), before);
});

Deno.test("`EventLoop` logs a throwing handler and keeps dispatching", async () => {
  const before = openFdCount();
  const lines: string[] = [];
  log.setSink((_level: LogLevel, line: string) => lines.push(line));
  try {
    const loop = new EventLoop();
    const bad = EventFd.create();
    const good = EventFd.create();
    let goodCalls = 0;
    loop.watch(bad.fd, () => {
      bad.drain();
      throw new Error("handler exploded");
    });
    loop.watch(good.fd, () => {
      good.drain();
      goodCalls++;
      if (goodCalls === 2) loop.stop();
      else setTimeout(() => good.signal(), 5);
    });
    bad.signal();
    good.signal();
    await loop.run();
    assert.equal(goodCalls, 2);
    assert.equal(lines.length, 1);
    assert.match(lines[0], new RegExp(`handler for fd ${bad.fd} threw: Error: handler exploded`));
    loop.close();
    bad.close();
    good.close();
  } finally {
    log.setSink(stderrSink);
  }
  assert.equal(openFdCount(), before);
});

Deno.test("`EventLoop.modify()` switches a socket to writable events and reports hang-up", async () => {
  const before = openFdCount();
  const loop = new EventLoop();
  const [a, b] = UnixStream.pair(true);
  const seen: number[] = [];
  loop.watch(a.fd, (events) => {
    seen.push(events);
    if (seen.length === 1) {
      loop.modify(a.fd, EVENT_WRITABLE);
    } else if (seen.length === 2) {
      loop.modify(a.fd, EVENT_READABLE);
      b.close();
    } else {
      loop.stop();
    }
  });
  b.send(new Uint8Array([1]));
  await loop.run();
  assert.equal(seen[0], EVENT_READABLE);
  assert.equal(seen[1] & EVENT_WRITABLE, EVENT_WRITABLE);
  assert.equal(seen[2] & EVENT_HANGUP, EVENT_HANGUP);
  assert.throws(() => loop.modify(12345, EVENT_READABLE), /not watched/);
  loop.unwatch(a.fd);
  loop.unwatch(a.fd);
  assert.equal(loop.isWatching(a.fd), false);
  loop.close();
  a.close();
  assert.equal(openFdCount(), before);
});

for (const hotWaitMs of [0, 1]) {
  Deno.test(`\`EventLoop.run()\` leaves Deno's own async sockets working (hotWaitMs ${hotWaitMs})`, async () => {
    const before = openFdCount();
    const loop = new EventLoop({ hotWaitMs });
    const tick = EventFd.create();
    let ticks = 0;
    loop.watch(tick.fd, () => {
      tick.drain();
      ticks++;
    });
    const running = loop.run();

    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const echo = (async () => {
      const connection = await listener.accept();
      const buf = new Uint8Array(1024);
      for (let n = await connection.read(buf); n !== null; n = await connection.read(buf)) {
        await connection.write(buf.subarray(0, n));
      }
      connection.close();
    })();
    const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    const reply = new Uint8Array(5);
    for (let round = 0; round < 20; round++) {
      tick.signal();
      await client.write(new TextEncoder().encode(`msg${round % 10}!`));
      let got = 0;
      while (got < 5) {
        const n = await client.read(reply.subarray(got));
        assert.ok(n !== null);
        got += n;
      }
      assert.equal(new TextDecoder().decode(reply), `msg${round % 10}!`);
      // An eventfd adds up signals not yet read: wait for this round's tick before the
      // next signal, or several rounds may be handled as one wake-up.
      for (let waits = 0; ticks <= round; waits++) {
        assert.ok(waits < 10_000, `the loop never handled tick ${round + 1}`);
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    }
    client.close();
    await echo;
    listener.close();
    loop.stop();
    await running;
    assert.ok(ticks >= 20, `loop handled ${ticks} ticks`);
    loop.close();
    tick.close();
    assert.equal(openFdCount(), before);
  });
}

Deno.test("`runSoon()` runs the callback after Deno's next I/O phase; `cancel()` drops it", async () => {
  const ran: string[] = [];
  const first = runSoon(() => ran.push("first"));
  const second = runSoon(() => ran.push("second"));
  assert.equal(pendingSoonTasks(), 2);
  assert.deepEqual(ran, [], "not run synchronously");
  second.cancel();
  second.cancel();
  assert.equal(pendingSoonTasks(), 1);
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(ran, ["first"]);
  assert.equal(first.done, true);
  assert.equal(second.done, true);
  assert.equal(pendingSoonTasks(), 0);
  first.cancel(); // after it ran: nothing to drop, the count stays right
  assert.equal(pendingSoonTasks(), 0);
});

Deno.test("`EventLoop` with hotWaitMs does not wait on the JS thread while work queued with runSoon is due", async () => {
  // A wait on the JS thread would hold the queued work (and this test) for 2 s per round.
  const loop = new EventLoop({ hotWaitMs: 2_000 });
  const event = EventFd.create();
  let rounds = 0;
  // Work that keeps queueing itself, like a ring polled again after every busy turn:
  // each round is still due when the loop decides how to wait.
  const poll = () => {
    if (++rounds < 5) runSoon(poll);
    else loop.stop();
  };
  loop.watch(event.fd, () => {
    event.drain();
    runSoon(poll);
  });
  event.signal();
  await loop.run();
  assert.equal(rounds, 5);
  assert.equal(loop.counters.blockingWaits, 0, loop.describeCounters());
  assert.equal(loop.counters.asyncWaits, 1, "the first wait only: the loop stayed hot");
  loop.close();
  event.close();
});

Deno.test("`EventLoop` with hotWaitMs serves Deno's timers while events keep coming", async () => {
  const loop = new EventLoop({ hotWaitMs: 1 });
  const busy = EventFd.create();
  let calls = 0;
  loop.watch(busy.fd, () => calls++); // never drained: readable on every wait
  busy.signal();
  const running = loop.run();
  setTimeout(() => loop.stop(), 5);
  await running;
  assert.ok(calls > 1, `${calls} calls`);
  assert.equal(loop.counters.asyncWaits, 1, "the loop stayed on the JS thread");
  loop.close();
  busy.close();
});

Deno.test("`EventLoop` with hotWaitMs waits on the JS thread after events and on a worker thread once they stop", async () => {
  const loop = new EventLoop({ hotWaitMs: 1 });
  const event = EventFd.create();
  let calls = 0;
  loop.watch(event.fd, () => {
    event.drain();
    calls++;
  });
  const running = loop.run();
  event.signal();
  await waitUntil("the first event", () => calls === 1);
  await waitUntil("the wait on a worker thread again", () => loop.counters.asyncWaits === 2);
  assert.ok(loop.counters.blockingWaits >= 1, loop.describeCounters());
  event.signal();
  await waitUntil("the second event", () => calls === 2);
  loop.stop();
  await running;
  loop.close();
  event.close();
});

Deno.test("`EventLoop` with hotWaitMs does not wait on the JS thread while another loop runs", async () => {
  const first = new EventLoop({ hotWaitMs: 60_000 });
  const second = new EventLoop({ hotWaitMs: 60_000 });
  const a = EventFd.create();
  const b = EventFd.create();
  first.watch(a.fd, () => {
    a.drain();
    setTimeout(() => b.signal(), 5); // while the first loop is hot
  });
  second.watch(b.fd, () => {
    b.drain();
    first.stop();
    second.stop();
  });
  const runs = [first.run(), second.run()];
  a.signal();
  await Promise.all(runs);
  assert.equal(first.counters.blockingWaits, 0, first.describeCounters());
  assert.equal(second.counters.blockingWaits, 0, second.describeCounters());
  first.close();
  second.close();
  a.close();
  b.close();
});

Deno.test("`EventLoop` with hotWaitMs waits for the next events on the JS thread without a turn of Deno's event loop each time", async () => {
  const loop = new EventLoop({ hotWaitMs: 1 });
  const event = EventFd.create();
  const turns = countDenoTurns();
  // Deno's turns so far at each wake-up.
  const turnsAtWakeup: number[] = [];
  loop.watch(event.fd, () => {
    event.drain();
    turnsAtWakeup.push(turns.turns);
  });
  const running = loop.run();
  // A guest kicking every 100 µs: each kick arrives while the loop waits for it.
  await tickFromWorker(event.fd, 200, 100);
  turns.stop();
  loop.stop();
  await running;
  let withoutTurn = 0;
  for (let i = 1; i < turnsAtWakeup.length; i++) {
    if (turnsAtWakeup[i] === turnsAtWakeup[i - 1]) withoutTurn++;
  }
  // Deno gets a turn every DENO_TURN_INTERVAL_MS (40 kicks), not after every wake-up.
  const pairs = turnsAtWakeup.length - 1;
  assert.ok(pairs >= 10, `${turnsAtWakeup.length} wake-ups`);
  assert.ok(
    withoutTurn >= pairs / 3,
    `${withoutTurn} of ${pairs} wake-ups came without a turn of Deno's event loop before ` +
      `them; ${loop.describeCounters()}`,
  );
  loop.close();
  event.close();
});

Deno.test("`EventLoop` with hotWaitMs keeps Deno's timers on time while events keep coming", async () => {
  const loop = new EventLoop({ hotWaitMs: 1 });
  const busy = EventFd.create();
  loop.watch(busy.fd, () => {}); // never drained: readable on every wait
  busy.signal();
  const running = loop.run();
  const lateness: number[] = [];
  for (let i = 0; i < 20; i++) {
    const due = performance.now() + 2;
    await new Promise((resolve) => setTimeout(resolve, 2));
    lateness.push(performance.now() - due);
  }
  loop.stop();
  await running;
  lateness.sort((a, b) => a - b);
  // Deno's timers are millisecond-granular themselves; the loop adds at most
  // DENO_TURN_INTERVAL_MS (and the batch being handled) to that.
  const median = lateness[lateness.length >> 1];
  assert.ok(
    median <= 1 + 2 * DENO_TURN_INTERVAL_MS,
    `median lateness ${median.toFixed(2)} ms; ${loop.describeCounters()}`,
  );
  assert.equal(loop.counters.asyncWaits, 1, "the loop stayed on the JS thread");
  loop.close();
  busy.close();
});

Deno.test("`EventLoop` runs work queued with runSoon between its polls, without a turn of Deno's event loop each time", async () => {
  const loop = new EventLoop({ hotWaitMs: 1 });
  const event = EventFd.create();
  const rounds = 500;
  let done = 0;
  const turns = countDenoTurns();
  // Counted from the first round: the loop holds the JS thread from then on.
  let turnsAtStart = 0;
  let turnsDuring = 0;
  let start = 0;
  let elapsedMs = 0;
  // Work that keeps queueing itself, like a ring polled again after every busy turn.
  const poll = () => {
    if (done === 0) {
      turnsAtStart = turns.turns;
      start = performance.now();
    }
    if (++done < rounds) {
      runSoon(poll);
      return;
    }
    elapsedMs = performance.now() - start;
    turnsDuring = turns.turns - turnsAtStart;
    loop.stop();
  };
  loop.watch(event.fd, () => {
    event.drain();
    runSoon(poll);
  });
  event.signal();
  await loop.run();
  turns.stop();
  assert.equal(done, rounds);
  const bound = elapsedMs / DENO_TURN_INTERVAL_MS + 5;
  assert.ok(
    turnsDuring <= bound,
    `${turnsDuring} turns of Deno's event loop for ${rounds} rounds in ${
      elapsedMs.toFixed(1)
    } ms (at most ${bound.toFixed(0)}); ${loop.describeCounters()}`,
  );
  assert.equal(pendingSoonTasks(), 0);
  loop.close();
  event.close();
});

Deno.test("`EventLoop.watch()` refuses a closed fd and replaces a second watch of one fd", () => {
  const loop = new EventLoop();
  const event = EventFd.create();
  const fd = event.fd;
  loop.watch(fd, () => {});
  loop.watch(fd, () => {});
  assert.equal(loop.size, 1);
  loop.unwatch(fd);
  event.close();
  assert.throws(() => loop.watch(fd, () => {}), /EBADF/);
  assert.equal(loop.isWatching(fd), false);
  loop.close();
});

/** Counts calls of the global setImmediate until `restore()`. */
function countSetImmediate(): { calls: number; restore(): void } {
  const original = globalThis.setImmediate;
  const counter = {
    calls: 0,
    restore: () => {
      globalThis.setImmediate = original;
    },
  };
  globalThis.setImmediate = ((...args: Parameters<typeof setImmediate>) => {
    counter.calls++;
    return original(...args);
  }) as typeof setImmediate;
  return counter;
}

Deno.test("`runSoon()` from a handler of the only running loop is left to that loop: no setImmediate per task", async () => {
  const loop = new EventLoop({ hotWaitMs: 1 });
  const event = EventFd.create();
  const rounds = 200;
  let done = 0;
  const poll = () => {
    if (++done < rounds) runSoon(poll);
    else loop.stop();
  };
  loop.watch(event.fd, () => {
    event.drain();
    runSoon(poll);
  });
  event.signal();
  const immediates = countSetImmediate();
  try {
    await loop.run();
  } finally {
    immediates.restore();
  }
  assert.equal(done, rounds);
  assert.equal(pendingSoonTasks(), 0);
  // The loop's own turns to Deno use setImmediate; the tasks add none.
  assert.ok(
    immediates.calls <= loop.counters.denoTurns,
    `${immediates.calls} setImmediate calls for ${rounds} tasks; ${loop.describeCounters()}`,
  );
  loop.close();
  event.close();
});

Deno.test("`runSoon()` work a loop's handler queued still runs when that loop stops first, and a cancelled one does not", async () => {
  const loop = new EventLoop();
  const event = EventFd.create();
  const ran: string[] = [];
  loop.watch(event.fd, () => {
    event.drain();
    runSoon(() => ran.push("left behind"));
    runSoon(() => ran.push("cancelled")).cancel();
    loop.stop();
  });
  event.signal();
  await loop.run();
  assert.deepEqual(ran, [], "the loop stopped before its next poll");
  assert.equal(pendingSoonTasks(), 1);
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(ran, ["left behind"]);
  assert.equal(pendingSoonTasks(), 0);
  loop.close();
  event.close();
});

Deno.test("`runSoon()` work one loop's handler queued runs when a second loop starts on the thread", async () => {
  const first = new EventLoop({ hotWaitMs: 1 });
  const second = new EventLoop();
  const event = EventFd.create();
  const ran: string[] = [];
  let secondRun: Promise<void> | undefined;
  first.watch(event.fd, () => {
    event.drain();
    runSoon(() => {
      ran.push("queued");
      first.stop();
      second.stop();
    });
    // A second loop starts before the first polls again: the first now leaves queued
    // work to Deno's turns, so the task must have its setImmediate.
    secondRun = second.run();
  });
  event.signal();
  await first.run();
  await secondRun;
  assert.deepEqual(ran, ["queued"]);
  assert.equal(pendingSoonTasks(), 0);
  first.close();
  second.close();
  event.close();
});
