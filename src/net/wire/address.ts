/**
 * Address representations used throughout the stack: MAC addresses as 48-bit
 * numbers (and their text form), IPv4 addresses as unsigned 32-bit numbers, IPv6
 * addresses as 16-byte arrays; reading and writing them in frames, prefixes and
 * address classes. IP addresses in text: ffi/ip_address_text.ts.
 *
 * @module
 */

/** The Ethernet broadcast address ff:ff:ff:ff:ff:ff as a number. */
export const MAC_BROADCAST = 0xffffffffffff;

/** Reads a 6-byte MAC address at `offset` as a number (no bounds check beyond the array's). */
export function readMac(buf: Uint8Array, offset: number): number {
  return ((buf[offset] << 8) | buf[offset + 1]) * 0x100000000 +
    (((buf[offset + 2] << 24) | (buf[offset + 3] << 16) | (buf[offset + 4] << 8) |
      buf[offset + 5]) >>> 0);
}

/** Writes the 48-bit MAC address `mac` at `offset`. */
export function writeMac(buf: Uint8Array, offset: number, mac: number): void {
  const hi = Math.floor(mac / 0x100000000);
  const lo = mac >>> 0;
  buf[offset] = hi >>> 8;
  buf[offset + 1] = hi;
  buf[offset + 2] = lo >>> 24;
  buf[offset + 3] = lo >>> 16;
  buf[offset + 4] = lo >>> 8;
  buf[offset + 5] = lo;
}

/** Formats a MAC address as "aa:bb:cc:dd:ee:ff". */
export function macToString(mac: number): string {
  const b = new Uint8Array(6);
  writeMac(b, 0, mac);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(":");
}

/** Parses "aa:bb:cc:dd:ee:ff" (hex digits of any case) into a number; null when malformed. */
export function parseMac(text: string): number | null {
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(text)) return null;
  let v = 0;
  for (const part of text.split(":")) v = v * 256 + parseInt(part, 16);
  return v;
}

/** Whether `mac` has the group (multicast/broadcast) bit set (IEEE 802, first octet bit 0). */
export function isMulticastMac(mac: number): boolean {
  return (Math.floor(mac / 0x10000000000) & 1) === 1;
}

/** Reads a big-endian IPv4 address at `offset` as an unsigned 32-bit number. */
export function readIpv4(buf: Uint8Array, offset: number): number {
  return ((buf[offset] << 24) | (buf[offset + 1] << 16) | (buf[offset + 2] << 8) |
    buf[offset + 3]) >>> 0;
}

/** Writes IPv4 address `addr` (unsigned 32-bit) big-endian at `offset`. */
export function writeIpv4(buf: Uint8Array, offset: number, addr: number): void {
  buf[offset] = addr >>> 24;
  buf[offset + 1] = addr >>> 16;
  buf[offset + 2] = addr >>> 8;
  buf[offset + 3] = addr;
}

/** The IPv4 netmask for a prefix length 0..32 as an unsigned number. */
export function ipv4PrefixMask(prefix: number): number {
  if (prefix <= 0) return 0;
  if (prefix >= 32) return 0xffffffff;
  return (0xffffffff << (32 - prefix)) >>> 0;
}

/** The prefix length of a contiguous netmask, or null when the mask is not contiguous. */
export function ipv4MaskToPrefix(mask: number): number | null {
  for (let p = 0; p <= 32; p++) if (ipv4PrefixMask(p) === mask >>> 0) return p;
  return null;
}

/** Whether `a` and `b` are in the same IPv4 subnet of length `prefix`. */
export function ipv4SameSubnet(a: number, b: number, prefix: number): boolean {
  const m = ipv4PrefixMask(prefix);
  return ((a & m) >>> 0) === ((b & m) >>> 0);
}

/** Whether two 16-byte address ranges are equal. */
export function ipv6Equal(a: Uint8Array, aOffset: number, b: Uint8Array, bOffset: number): boolean {
  for (let i = 0; i < 16; i++) if (a[aOffset + i] !== b[bOffset + i]) return false;
  return true;
}

/** Whether the 16 bytes at `offset` are all zero (the unspecified address "::"). */
export function ipv6IsUnspecified(a: Uint8Array, offset = 0): boolean {
  for (let i = 0; i < 16; i++) if (a[offset + i] !== 0) return false;
  return true;
}

/** Whether the address at `offset` is link-local unicast fe80::/10 (RFC 4291 §2.5.6). */
export function ipv6IsLinkLocal(a: Uint8Array, offset = 0): boolean {
  return a[offset] === 0xfe && (a[offset + 1] & 0xc0) === 0x80;
}

/** Whether the address at `offset` is multicast ff00::/8 (RFC 4291 §2.7). */
export function ipv6IsMulticast(a: Uint8Array, offset = 0): boolean {
  return a[offset] === 0xff;
}

/** Whether the address at `offset` is the loopback address ::1. */
export function ipv6IsLoopback(a: Uint8Array, offset = 0): boolean {
  for (let i = 0; i < 15; i++) if (a[offset + i] !== 0) return false;
  return a[offset + 15] === 1;
}
