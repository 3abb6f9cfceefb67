/**
 * SignalEvent: a taken signal only counts on its eventfd; Deno's listeners for it
 * are never called. (Under `deno test` Deno registers no inspector listener of its
 * own: tests/net/daemon_stats_test.ts checks that the daemon opens no inspector.)
 */
import assert from "node:assert/strict";
import { helper } from "./library.ts";
import { SignalEvent } from "./signal_event.ts";
import { Errno } from "./native_error.ts";
import { waitUntil } from "../tests/support/wait_until.ts";

Deno.test("SignalEvent: SIGUSR1 is counted on the eventfd and reaches no Deno listener", async () => {
  const taken = SignalEvent.take("SIGUSR1");
  assert.equal(SignalEvent.take("SIGUSR1"), taken, "taken once per process");
  let denoListenerCalls = 0;
  const denoListener = () => denoListenerCalls++;
  Deno.addSignalListener("SIGUSR1", denoListener);
  try {
    assert.equal(taken.drain(), 0);
    // One at a time: two standard signals pending at once are delivered once.
    let counted = 0;
    for (const expected of [1, 2]) {
      Deno.kill(Deno.pid, "SIGUSR1");
      await waitUntil(
        `SIGUSR1 number ${expected} counted`,
        () => (counted += taken.drain()) >= expected,
      );
      assert.equal(counted, expected);
    }
    // Give Deno's signal thread the time it would need to call its listeners.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(denoListenerCalls, 0, "a Deno listener saw the taken signal");
  } finally {
    Deno.removeSignalListener("SIGUSR1", denoListener);
  }
});

Deno.test("SignalEvent: the helper takes no signal but SIGUSR1 and SIGUSR2", () => {
  // Linux numbers (signal(7)): the runtime's, the memory guard's, faults, and uncatchable ones.
  const SIGHUP = 1, SIGINT = 2, SIGILL = 4, SIGBUS = 7, SIGFPE = 8, SIGKILL = 9;
  const SIGSEGV = 11, SIGTERM = 15, SIGSTOP = 19, SIGRTMIN = 34;
  const refused = [SIGHUP, SIGINT, SIGILL, SIGBUS, SIGFPE, SIGKILL, SIGSEGV, SIGTERM, SIGSTOP];
  for (const signo of [0, -1, 64, 65, 1000, SIGRTMIN, ...refused]) {
    assert.equal(helper().tp_signal_event_install(signo), -Errno.EINVAL, `signal ${signo}`);
  }
});
