/**
 * Address representations used throughout the stack and their text forms:
 * MAC addresses as 48-bit numbers, IPv4 addresses as unsigned 32-bit numbers,
 * IPv6 addresses as 16-byte arrays. Parsers return null for invalid text.
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

/** Parses "aa:bb:cc:dd:ee:ff" (or with '-') into a number; null when malformed. */
export function parseMac(text: string): number | null {
  const m =
    /^([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})$/i
      .exec(text.trim());
  if (!m) return null;
  let v = 0;
  for (let i = 1; i <= 6; i++) v = v * 256 + parseInt(m[i], 16);
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

/** Formats an IPv4 address as dotted quad. */
export function ipv4ToString(addr: number): string {
  return `${addr >>> 24}.${(addr >>> 16) & 255}.${(addr >>> 8) & 255}.${addr & 255}`;
}

/** Parses a dotted-quad IPv4 address into an unsigned 32-bit number; null when malformed. */
export function parseIpv4(text: string): number | null {
  const parts = text.trim().split(".");
  if (parts.length !== 4) return null;
  let v = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    v = v * 256 + n;
  }
  return v >>> 0;
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

/** Parses an IPv6 address (RFC 4291 §2.2 text forms, incl. "::" and embedded IPv4). */
export function parseIpv6(text: string): Uint8Array | null {
  let s = text.trim();
  const pct = s.indexOf("%");
  if (pct >= 0) s = s.slice(0, pct);
  if (s.length === 0 || s.length > 45) return null;
  const out = new Uint8Array(16);
  const dbl = s.indexOf("::");
  if (dbl >= 0 && s.indexOf("::", dbl + 1) >= 0) return null;
  const parseGroups = (part: string): number[] | null => {
    if (part === "") return [];
    const groups: number[] = [];
    const items = part.split(":");
    for (let i = 0; i < items.length; i++) {
      const it = items[i];
      if (i === items.length - 1 && it.includes(".")) {
        const v4 = parseIpv4(it);
        if (v4 === null) return null;
        groups.push(v4 >>> 16, v4 & 0xffff);
      } else {
        if (!/^[0-9a-f]{1,4}$/i.test(it)) return null;
        groups.push(parseInt(it, 16));
      }
    }
    return groups;
  };
  let groups: number[];
  if (dbl >= 0) {
    const head = parseGroups(s.slice(0, dbl));
    const tail = parseGroups(s.slice(dbl + 2));
    if (!head || !tail || head.length + tail.length > 7) return null;
    groups = [...head, ...new Array(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    const all = parseGroups(s);
    if (!all || all.length !== 8) return null;
    groups = all;
  }
  for (let i = 0; i < 8; i++) {
    out[2 * i] = groups[i] >>> 8;
    out[2 * i + 1] = groups[i] & 0xff;
  }
  return out;
}

/** Formats an IPv6 address in the canonical form of RFC 5952 (lower case, longest "::"). */
export function ipv6ToString(addr: Uint8Array, offset = 0): string {
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((addr[offset + 2 * i] << 8) | addr[offset + 2 * i + 1]);
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestStart < 0) return g.map((x) => x.toString(16)).join(":");
  const head = g.slice(0, bestStart).map((x) => x.toString(16)).join(":");
  const tail = g.slice(bestStart + bestLen).map((x) => x.toString(16)).join(":");
  return `${head}::${tail}`;
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

/** Address text ("127.0.0.1", "::1") → raw bytes, or null when it is not a literal. */
export function addressBytes(hostname: string): Uint8Array | null {
  const v4 = parseIpv4(hostname);
  if (v4 !== null) {
    const bytes = new Uint8Array(4);
    writeIpv4(bytes, 0, v4);
    return bytes;
  }
  const text = hostname.startsWith("[") && hostname.endsWith("]")
    ? hostname.slice(1, -1)
    : hostname;
  return parseIpv6(text);
}

/** Raw bytes → address text; an IPv4-mapped IPv6 address keeps its dotted tail. */
export function addressText(address: Uint8Array): string {
  if (address.byteLength === 4) return address.join(".");
  const mapped = address.subarray(0, 10).every((b) => b === 0) && address[10] === 0xff &&
    address[11] === 0xff;
  return mapped ? `::ffff:${address.subarray(12).join(".")}` : ipv6ToString(address);
}
