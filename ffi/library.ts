/**
 * Loads the C helper (native/libtpasst_helper.so) once, on first use. This is the
 * only place in tpasst that calls `Deno.dlopen`.
 *
 * The path is resolved relative to this module, so it works in a checkout and in a
 * `deno compile --include native/libtpasst_helper.so` binary (Deno extracts the
 * included file at run time).
 *
 * @module
 */
import { symbols } from "./symbols.ts";

/** The helper's functions, typed from {@link symbols}. */
export type HelperSymbols = Deno.DynamicLibrary<typeof symbols>["symbols"];

/** Where the helper is loaded from. */
export const HELPER_URL: URL = new URL("../native/libtpasst_helper.so", import.meta.url);

let loaded: HelperSymbols | null = null;

/**
 * Returns the helper's functions, loading the library on the first call (which also
 * installs the memory guard's SIGBUS handler, see memory_guard.ts).
 *
 * @throws Error saying to run `make native` if the library file is missing or
 * cannot be loaded.
 */
export function helper(): HelperSymbols {
  if (loaded !== null) return loaded;
  try {
    loaded = Deno.dlopen(HELPER_URL, symbols).symbols;
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(
      `Cannot load the native helper ${HELPER_URL.pathname} (${reason}); ` +
        "run `make native` to build it",
      { cause: error },
    );
  }
  // The memory guard (see memory_guard.ts) goes in as the library loads: its SIGBUS
  // handler is in place before any mapping exists, and its one eventfd is open before
  // anyone counts fds. A failure here is reported by the first mapping, which retries.
  loaded.tp_memory_guard_install();
  return loaded;
}

const encoder = new TextEncoder();

/** Encodes `text` as a NUL-terminated UTF-8 C string for `buffer` parameters. */
export function cString(text: string): Uint8Array<ArrayBuffer> {
  if (text.includes("\0")) {
    throw new TypeError(`Cannot pass ${JSON.stringify(text)} to C: it contains a NUL character`);
  }
  const bytes = new Uint8Array(encoder.encode(text).length + 1);
  encoder.encodeInto(text, bytes);
  return bytes;
}
