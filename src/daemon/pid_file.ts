/**
 * The `--pid FILE` file: written (through the helper; no Deno write permission) once
 * the daemon is set up and before it reports ready, removed at shutdown.
 *
 * @module
 */

import { OutputFile, removeFile } from "../../ffi/output_file.ts";

const encoder = new TextEncoder();

/** Writes `pid` followed by a newline to `path`, replacing its content. */
export function writePidFile(path: string, pid: number): void {
  const file = OutputFile.open(path, { append: false });
  try {
    file.write(encoder.encode(`${pid}\n`));
  } finally {
    file.close();
  }
}

/** Removes the pid file; returns false if it was already gone. */
export function removePidFile(path: string): boolean {
  return removeFile(path);
}
