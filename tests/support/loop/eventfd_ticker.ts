/**
 * Signals an eventfd from another thread at a steady pace: events that arrive while
 * the JS thread waits, as a guest's kicks or a host peer's answers do, without a
 * timer or socket of this thread producing them. {@link countDenoTurns} counts the
 * turns Deno's event loop takes meanwhile.
 *
 * @module
 */

/** What the worker is told: signal eventfd `fd` `count` times, `intervalUs` apart. */
export interface TickerRequest {
  readonly fd: number;
  readonly count: number;
  readonly intervalUs: number;
}

/**
 * Signals eventfd `fd` `count` times, `intervalUs` microseconds apart, from a Worker
 * thread; resolves once the last signal was sent.
 */
export async function tickFromWorker(fd: number, count: number, intervalUs: number): Promise<void> {
  const worker = new Worker(new URL("./eventfd_ticker_worker.ts", import.meta.url), {
    type: "module",
  });
  try {
    // The worker says "ready" once loaded, then "done" after the last signal.
    const messages: string[] = [];
    let wake = () => {};
    let failure: Error | null = null;
    worker.onmessage = (event: MessageEvent<string>) => {
      messages.push(event.data);
      wake();
    };
    worker.onerror = (event) => {
      event.preventDefault();
      failure = new Error(`eventfd ticker failed: ${event.message}`);
      wake();
    };
    const next = async (expected: string) => {
      while (messages.length === 0 && failure === null) {
        await new Promise<void>((resolve) => wake = resolve);
      }
      if (failure !== null) throw failure;
      const message = messages.shift();
      if (message !== expected) throw new Error(`eventfd ticker said ${message}, not ${expected}`);
    };
    await next("ready");
    worker.postMessage({ fd, count, intervalUs } satisfies TickerRequest);
    await next("done");
  } finally {
    worker.terminate();
  }
}

/**
 * Counts the turns of Deno's event loop (one setImmediate callback runs per turn)
 * until `stop()` is called; `turns` is the count so far. While nothing else holds the
 * JS thread the count races ahead (each turn queues the next at once): compare counts
 * taken while an EventLoop holds the thread.
 */
export function countDenoTurns(): { readonly turns: number; stop(): void } {
  let turns = 0;
  let counting = true;
  const count = () => {
    turns++;
    if (counting) setImmediate(count);
  };
  setImmediate(count);
  return {
    get turns() {
      return turns;
    },
    stop() {
      counting = false;
    },
  };
}
