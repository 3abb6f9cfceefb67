import { assertEquals, assertTrue } from "../../tests/support/assert.ts";
import { TimerDriver, type TimerTarget } from "./timer_driver.ts";
import { waitUntil } from "../../tests/support/wait_until.ts";

/** A target with a list of pending times; tick records when it ran and drops due times. */
class FakeTarget implements TimerTarget {
  pending: number[] = [];
  ranAt: number[] = [];
  tick(now: number): void {
    this.ranAt.push(now);
    this.pending = this.pending.filter((t) => t > now);
  }
  nextTimerAt(): number {
    return this.pending.length === 0 ? Infinity : Math.min(...this.pending);
  }
}

Deno.test("TimerDriver.rearm() runs the target once each timer is due, never early", async () => {
  const target = new FakeTarget();
  const driver = new TimerDriver(target);
  try {
    const start = performance.now();
    target.pending = [start + 30, start + 10];
    driver.rearm();
    await waitUntil("both timers to run", () => target.pending.length === 0);
    assertTrue(target.ranAt.length >= 1);
    assertTrue(target.ranAt[0] >= start + 10, "ran before the first timer was due");
    assertTrue(target.ranAt[target.ranAt.length - 1] >= start + 30);
  } finally {
    driver.close();
  }
});

Deno.test("TimerDriver.rearm() moves the timeout earlier when an earlier timer appears", async () => {
  const target = new FakeTarget();
  const driver = new TimerDriver(target);
  try {
    const start = performance.now();
    target.pending = [start + 60_000];
    driver.rearm();
    target.pending.push(start + 5);
    driver.rearm();
    await waitUntil("the earlier timer", () => driver.ticks === 1);
    assertEquals(target.pending, [start + 60_000]);
  } finally {
    driver.close();
  }
});

Deno.test("TimerDriver.close() stops all ticks and survives a throwing target", async () => {
  let calls = 0;
  const throwing: TimerTarget = {
    tick() {
      calls++;
      throw new Error("boom");
    },
    nextTimerAt: () => (calls === 0 ? performance.now() : Infinity),
  };
  const driver = new TimerDriver(throwing);
  driver.rearm();
  await waitUntil("the throwing target to run", () => calls === 1);
  driver.close();
  driver.rearm();
  assertEquals(driver.ticks, 1);
});
