/**
 * Reads small kernel-provided text files (/proc/net/route, /sys/class/net/IF/mtu)
 * through the helper: Deno refuses those paths, which link into /proc/self and
 * /sys/devices, unless it runs with --allow-all.
 *
 * @module
 */
import { cString, helper } from "./library.ts";
import { Errno, NativeError } from "./native_error.ts";

/** Largest file read by {@link readKernelFile} unless the caller asks for more. */
export const DEFAULT_KERNEL_FILE_LIMIT = 1 << 20;

/**
 * Returns the text of the file at `path` (cut at `maxBytes`), or null when it does
 * not exist.
 * @throws NativeError for other failures (EACCES, EISDIR...)
 */
export function readKernelFile(
  path: string,
  maxBytes = DEFAULT_KERNEL_FILE_LIMIT,
): string | null {
  const buffer = new Uint8Array(maxBytes);
  const rc = helper().tp_read_small_file(cString(path), buffer, maxBytes);
  if (rc === -Errno.ENOENT || rc === -Errno.ENOTDIR) return null;
  if (rc < 0) throw new NativeError(-rc, `read(${JSON.stringify(path)})`);
  return new TextDecoder().decode(buffer.subarray(0, rc));
}
