/**
 * The TCP translator's one timer mechanism: every flow has at most one deadline
 * (retransmission, zero-window probe, SYN retry, connect timeout or linger), kept in
 * a binary min-heap indexed by the flow, so that arming, moving and cancelling cost
 * O(log n) and the earliest deadline — what the daemon's timer driver sleeps to — is
 * read in O(1), however many idle connections there are.
 *
 * @module
 */

import type { TcpFlow } from "./flow.ts";

/** Flows ordered by {@link TcpFlow.timerAt}; see the module comment. */
export class TimerHeap {
  readonly #heap: TcpFlow[] = [];

  /** Number of armed flows. */
  get size(): number {
    return this.#heap.length;
  }

  /** The earliest deadline, or Infinity when no flow is armed. */
  earliest(): number {
    return this.#heap.length > 0 ? this.#heap[0].timerAt : Infinity;
  }

  /** The flow with the earliest deadline, or null. */
  peek(): TcpFlow | null {
    return this.#heap.length > 0 ? this.#heap[0] : null;
  }

  /** Arms (or moves) `flow`'s deadline to `at`. */
  set(flow: TcpFlow, at: number): void {
    const old = flow.timerAt;
    flow.timerAt = at;
    if (flow.heapIndex < 0) {
      flow.heapIndex = this.#heap.length;
      this.#heap.push(flow);
      this.#up(flow.heapIndex);
    } else if (at < old) {
      this.#up(flow.heapIndex);
    } else {
      this.#down(flow.heapIndex);
    }
  }

  /** Cancels `flow`'s deadline (nothing when none is armed). */
  delete(flow: TcpFlow): void {
    flow.timerAt = Infinity;
    const i = flow.heapIndex;
    if (i < 0) return;
    flow.heapIndex = -1;
    const last = this.#heap.pop()!;
    if (last === flow) return;
    this.#heap[i] = last;
    last.heapIndex = i;
    this.#up(i);
    this.#down(last.heapIndex);
  }

  #up(i: number): void {
    const heap = this.#heap;
    const flow = heap[i];
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent].timerAt <= flow.timerAt) break;
      heap[i] = heap[parent];
      heap[i].heapIndex = i;
      i = parent;
    }
    heap[i] = flow;
    flow.heapIndex = i;
  }

  #down(i: number): void {
    const heap = this.#heap;
    const n = heap.length;
    const flow = heap[i];
    while (true) {
      const left = 2 * i + 1;
      if (left >= n) break;
      const right = left + 1;
      const child = right < n && heap[right].timerAt < heap[left].timerAt ? right : left;
      if (heap[child].timerAt >= flow.timerAt) break;
      heap[i] = heap[child];
      heap[i].heapIndex = i;
      i = child;
    }
    heap[i] = flow;
    flow.heapIndex = i;
  }
}
