/**
 * A signal kept from the Deno runtime's own listeners and counted on an eventfd
 * (native/signal_event.c), for the event loop to watch.
 *
 * Why: Deno (since 2.9.2) answers SIGUSR1 by starting a V8 inspector server on
 * 127.0.0.1:9229, from a listener its runtime registers 500 ms after start. Any
 * local user could connect to that port and run code in the process. Deno
 * dispatches every signal it catches to all listeners registered for it, so a
 * listener of ours cannot stop its own; only replacing the signal's disposition
 * does.
 *
 * How: {@link SignalEvent.take} first registers a listener that does nothing
 * through Deno.addSignalListener, so that Deno's signal registry installs its
 * process-wide handler for the signal now and never again (a registry installs a
 * signal's handler once, at the signal's first listener; the listener stays for the
 * life of the process). Then the helper replaces that handler with one that only
 * adds 1 to an eventfd. Deno's listeners for the signal, its inspector's included,
 * are never called after that.
 *
 * @module
 */
import { helper } from "./library.ts";
import { NativeError } from "./native_error.ts";

/** Signal numbers on Linux (signal(7), x86-64 and arm64) of the signals that can be taken. */
const SIGNAL_NUMBERS = { SIGUSR1: 10, SIGUSR2: 12 } as const;

/** A signal {@link SignalEvent.take} accepts. */
export type TakenSignal = keyof typeof SIGNAL_NUMBERS;

const TWO_POW_32 = 2 ** 32;

/** Does nothing: it only keeps Deno's registry holding the signal (see the module comment). */
const holdInDenoRegistry = () => {};

/** One signal taken from Deno for the life of the process. */
export class SignalEvent {
  static readonly #taken = new Map<TakenSignal, SignalEvent>();

  readonly #counter = new Uint32Array(2);
  readonly #counterBytes = new Uint8Array(this.#counter.buffer);

  private constructor(
    /** The signal's name. */
    readonly signal: TakenSignal,
    /** The eventfd: readable while signals are uncounted. It belongs to the process: never close it. */
    readonly fd: number,
  ) {}

  /**
   * Takes `signal` from Deno's listeners (once per process; later calls return the
   * same SignalEvent): from now on each delivery of the signal only adds 1 to
   * {@link fd}'s counter.
   * @throws NativeError when the eventfd or the handler cannot be set up
   */
  static take(signal: TakenSignal): SignalEvent {
    const known = SignalEvent.#taken.get(signal);
    if (known !== undefined) return known;
    Deno.addSignalListener(signal, holdInDenoRegistry);
    const rc = helper().tp_signal_event_install(SIGNAL_NUMBERS[signal]);
    if (rc < 0) {
      Deno.removeSignalListener(signal, holdInDenoRegistry);
      throw new NativeError(-rc, `signal event install (sigaction ${signal})`);
    }
    const taken = new SignalEvent(signal, rc);
    SignalEvent.#taken.set(signal, taken);
    return taken;
  }

  /** Reads and resets the count of signals received since the last drain (0 when none). */
  drain(): number {
    const rc = helper().tp_eventfd_read(this.fd, this.#counterBytes);
    if (rc < 0) throw new NativeError(-rc, `eventfd_read(${this.signal})`);
    return this.#counter[0] + this.#counter[1] * TWO_POW_32;
  }
}
