/**
 * Output files written through the helper (the daemon has no Deno write permission):
 * pid file, log file, pcap capture; and file removal (pid file, socket file).
 *
 * @module
 */
import { cString, helper } from "./library.ts";
import { Errno, NativeError } from "./native_error.ts";

/** Options of {@link OutputFile.open}. */
export interface OutputFileOptions {
  /** True to keep existing content and append; false to truncate. */
  append: boolean;
}

/** A write-only file, created with mode 0644 if missing. */
export class OutputFile {
  #fd: number;
  readonly #path: string;

  private constructor(fd: number, path: string) {
    this.#fd = fd;
    this.#path = path;
  }

  /** Opens (creating, mode 0644) `path` for writing, truncated or in append mode. */
  static open(path: string, options: OutputFileOptions): OutputFile {
    const rc = helper().tp_file_open(cString(path), options.append ? 1 : 0);
    if (rc < 0) throw new NativeError(-rc, `open(${JSON.stringify(path)})`);
    return new OutputFile(rc, path);
  }

  /** The descriptor, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /** Writes all of `bytes` (retrying short writes). */
  write(bytes: Uint8Array): void {
    if (this.#fd < 0) throw new Error(`Cannot write ${this.#path}: the file is closed`);
    let offset = 0;
    while (offset < bytes.byteLength) {
      const chunk = offset === 0 ? bytes : bytes.subarray(offset);
      const rc = helper().tp_write(this.#fd, chunk, chunk.byteLength);
      if (rc < 0) throw new NativeError(-rc, `write(${JSON.stringify(this.#path)})`);
      if (rc === 0) throw new NativeError(Errno.EIO, `write(${JSON.stringify(this.#path)})`);
      offset += rc;
    }
  }

  /** Closes the file; later calls do nothing. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    helper().tp_close(fd);
  }
}

/**
 * Removes the file at `path`. Returns true if it was removed, false if it did not exist.
 * @throws NativeError for other failures (EACCES, EISDIR...)
 */
export function removeFile(path: string): boolean {
  const rc = helper().tp_unlink(cString(path));
  if (rc === 0) return true;
  if (rc === -Errno.ENOENT) return false;
  throw new NativeError(-rc, `unlink(${JSON.stringify(path)})`);
}
