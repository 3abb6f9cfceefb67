/**
 * Small readers for ring structures reached only as bytes (indirect tables are views
 * of guest memory, read in place), and the address format of the ring engines' log
 * lines. Virtio rings are little-endian (virtio 1.2 §2.7, §2.8).
 *
 * @module
 */

/** Reads a little-endian u16 at `offset` of `bytes`. */
export function readU16(bytes: Uint8Array, offset: number): number {
  return bytes[offset] | (bytes[offset + 1] << 8);
}

/** Reads a little-endian u32 at `offset` of `bytes`. */
export function readU32(bytes: Uint8Array, offset: number): number {
  return (bytes[offset] | (bytes[offset + 1] << 8) | (bytes[offset + 2] << 16) |
    (bytes[offset + 3] << 24)) >>> 0;
}

/** A DataView over the first `length` bytes of `bytes` (all of them by default). */
export function viewOf(bytes: Uint8Array, length: number = bytes.byteLength): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, length);
}

/** Formats a 64-bit guest address given as two u32 halves, e.g. "0x1f000". */
export function hexAddress(low: number, high: number): string {
  return high === 0
    ? "0x" + low.toString(16)
    : "0x" + high.toString(16) + low.toString(16).padStart(8, "0");
}
