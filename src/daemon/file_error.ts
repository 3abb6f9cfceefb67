/**
 * Messages for files named on the command line (`--log-file`, `--pid`, `--pcap`)
 * that cannot be opened or written: the option and the path first, then why, in
 * words and as the errno name.
 *
 * @module
 */

import { NativeError } from "../../ffi/native_error.ts";

/** What the errnos a file open or write may fail with mean (strerror(3) wording). */
const FILE_ERRNO_TEXT: Readonly<Record<string, string>> = {
  ENOENT: "no such file or directory",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EISDIR: "is a directory",
  ENOTDIR: "a component of the path is not a directory",
  EROFS: "read-only file system",
  ENOSPC: "no space left on device",
  EDQUOT: "disk quota exceeded",
  ENAMETOOLONG: "file name too long",
  ELOOP: "too many levels of symbolic links",
  EFBIG: "file too large",
  EIO: "input/output error",
};

/** Why a file operation failed: `no such file or directory (ENOENT)`, or the error's message. */
export function describeFileError(error: unknown): string {
  if (error instanceof NativeError) {
    const text = FILE_ERRNO_TEXT[error.errnoName];
    return text === undefined ? error.errnoName : `${text} (${error.errnoName})`;
  }
  return error instanceof Error ? error.message : String(error);
}

/** `--OPTION PATH: cannot WHAT: why` for a file named on the command line. */
export function fileOptionError(option: string, path: string, what: string, error: unknown): Error {
  return new Error(`--${option} ${path}: cannot ${what}: ${describeFileError(error)}`, {
    cause: error,
  });
}
