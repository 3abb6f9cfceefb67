/**
 * IP addresses in text, the one parser and one formatter of each family (what
 * inet_pton(3) and inet_ntop(3) do): IPv4 as an unsigned 32-bit number, IPv6 as 16
 * bytes, and socket addresses as 4 or 16 raw bytes in network order. The socket
 * bindings here word their errors with it; the stack (src/net/), the command line
 * (src/config/) and the daemon read and write addresses through it.
 *
 * Parsing is strict, as inet_pton's: a dotted quad without leading zeros, an IPv6
 * address per RFC 4291 §2.2 (with `::` and an optional dotted IPv4 tail), no zone
 * (`%eth0`) and no white space. Formatting follows RFC 5952.
 *
 * @module
 */

/** Longest IPv6 text (RFC 4291 §2.2 with a dotted IPv4 tail: 45 characters). */
const MAX_IPV6_TEXT = 45;
/** Bytes of an IPv4 address. */
const IPV4_BYTES = 4;
/** Bytes of an IPv6 address. */
const IPV6_BYTES = 16;

const IPV4_PART = /^(0|[1-9][0-9]{0,2})$/;
const IPV6_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** Parses a dotted-quad IPv4 address (no leading zeros) into an unsigned 32-bit number, or `null`. */
export function parseIpv4(text: string): number | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  let value = 0;
  for (const part of parts) {
    if (!IPV4_PART.test(part)) return null;
    const byte = Number(part);
    if (byte > 255) return null;
    value = value * 256 + byte;
  }
  return value;
}

/** Formats an IPv4 address (unsigned 32-bit number) as a dotted quad. */
export function ipv4ToString(addr: number): string {
  return `${addr >>> 24}.${(addr >>> 16) & 255}.${(addr >>> 8) & 255}.${addr & 255}`;
}

/** The 16-bit groups of `part` (a side of `::`), the last one possibly a dotted IPv4 tail. */
function ipv6Groups(part: string, allowIpv4Tail: boolean): number[] | null {
  if (part === "") return [];
  const items = part.split(":");
  const groups: number[] = [];
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    if (allowIpv4Tail && i === items.length - 1 && item.includes(".")) {
      const v4 = parseIpv4(item);
      if (v4 === null) return null;
      groups.push(v4 >>> 16, v4 & 0xffff);
    } else {
      if (!IPV6_GROUP.test(item)) return null;
      groups.push(parseInt(item, 16));
    }
  }
  return groups;
}

/** Parses an IPv6 address (RFC 4291 §2.2: `::`, an optional dotted IPv4 tail) into 16 bytes, or `null`. */
export function parseIpv6(text: string): Uint8Array | null {
  if (text.length === 0 || text.length > MAX_IPV6_TEXT) return null;
  const halves = text.split("::");
  if (halves.length > 2) return null;
  let groups: number[];
  if (halves.length === 2) {
    const head = ipv6Groups(halves[0], false);
    const tail = ipv6Groups(halves[1], true);
    if (head === null || tail === null || head.length + tail.length > 7) return null;
    groups = [...head, ...new Array(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    const all = ipv6Groups(text, true);
    if (all === null || all.length !== 8) return null;
    groups = all;
  }
  const out = new Uint8Array(IPV6_BYTES);
  for (let i = 0; i < 8; i++) {
    out[2 * i] = groups[i] >>> 8;
    out[2 * i + 1] = groups[i] & 0xff;
  }
  return out;
}

/** Whether the 16 bytes at `offset` are an IPv4-mapped address ::ffff:0:0/96 (RFC 4291 §2.5.5.2). */
function isIpv4Mapped(addr: Uint8Array, offset: number): boolean {
  for (let i = 0; i < 10; i++) if (addr[offset + i] !== 0) return false;
  return addr[offset + 10] === 0xff && addr[offset + 11] === 0xff;
}

/**
 * Formats the IPv6 address at `addr[offset]` in RFC 5952's canonical form: lower
 * case, the longest run (the first of equal ones) of two or more zero groups as
 * `::`, and an IPv4-mapped address with its dotted tail (§5).
 */
export function ipv6ToString(addr: Uint8Array, offset = 0): string {
  if (isIpv4Mapped(addr, offset)) {
    return `::ffff:${addr[offset + 12]}.${addr[offset + 13]}.${addr[offset + 14]}.${
      addr[offset + 15]
    }`;
  }
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((addr[offset + 2 * i] << 8) | addr[offset + 2 * i + 1]);
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLength).join(":")}`;
}

/** Address text ("127.0.0.1", "::1", "[::1]") → 4 or 16 raw bytes, or `null` when it is not a literal. */
export function addressBytes(text: string): Uint8Array | null {
  const v4 = parseIpv4(text);
  if (v4 !== null) {
    const bytes = new Uint8Array(IPV4_BYTES);
    bytes[0] = v4 >>> 24;
    bytes[1] = v4 >>> 16;
    bytes[2] = v4 >>> 8;
    bytes[3] = v4;
    return bytes;
  }
  const bare = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  return parseIpv6(bare);
}

/** 4 or 16 raw bytes → address text (dotted quad, or IPv6 as {@link ipv6ToString} writes it). */
export function addressText(address: Uint8Array): string {
  if (address.byteLength === IPV4_BYTES) {
    return ipv4ToString(
      ((address[0] << 24) | (address[1] << 16) | (address[2] << 8) | address[3]) >>> 0,
    );
  }
  return ipv6ToString(address);
}
