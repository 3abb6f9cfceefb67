/**
 * The signal that asks the daemon for a statistics dump (flows and counters, at info
 * level). It is taken from the Deno runtime's own listeners (ffi/signal_event.ts):
 * Deno would answer it by opening a V8 inspector on 127.0.0.1:9229. main.ts takes
 * it before loading anything else; the daemon watches it once its loop runs.
 *
 * @module
 */
import type { TakenSignal } from "../../ffi/signal_event.ts";

export const STATS_SIGNAL: TakenSignal = "SIGUSR1";
