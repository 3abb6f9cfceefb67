/**
 * Strict parsing of the address syntaxes the command line accepts (IPv4 dotted
 * quad, IPv6 per RFC 4291 section 2.2, MAC, netmask, interface names, domain names)
 * into canonical text. Each parser returns `null` for anything malformed; the caller
 * words the error.
 *
 * @module
 */

/** Largest interface name length: IFNAMSIZ (16, linux/if.h) minus the terminating NUL. */
export const MAX_INTERFACE_NAME_LENGTH = 15;

/** Longest domain name in text form (RFC 1035 section 2.3.4: 255 octets on the wire). */
export const MAX_DOMAIN_NAME_LENGTH = 253;

/** Longest label of a domain name (RFC 1035 section 2.3.4). */
export const MAX_DOMAIN_LABEL_LENGTH = 63;

const IPV4_PART = /^(0|[1-9][0-9]{0,2})$/;
const IPV6_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** Parses a dotted-quad IPv4 address (no leading zeros) into its four bytes, or `null`. */
export function parseIpv4Bytes(text: string): number[] | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const bytes: number[] = [];
  for (const part of parts) {
    if (!IPV4_PART.test(part)) return null;
    const value = Number(part);
    if (value > 255) return null;
    bytes.push(value);
  }
  return bytes;
}

/** Parses an IPv6 address (with `::` and an optional dotted IPv4 tail) into 16 bytes, or `null`. */
export function parseIpv6Bytes(text: string): number[] | null {
  if (text.length === 0 || text.length > 45) return null;
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const parseGroups = (part: string, allowIpv4Tail: boolean): number[] | null => {
    if (part === "") return [];
    const groups = part.split(":");
    const out: number[] = [];
    for (let i = 0; i < groups.length; i++) {
      const group = groups[i];
      if (allowIpv4Tail && i === groups.length - 1 && group.includes(".")) {
        const v4 = parseIpv4Bytes(group);
        if (v4 === null) return null;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        if (!IPV6_GROUP.test(group)) return null;
        out.push(parseInt(group, 16));
      }
    }
    return out;
  };
  let words: number[];
  if (halves.length === 2) {
    const head = parseGroups(halves[0], false);
    const tail = parseGroups(halves[1], true);
    if (head === null || tail === null || head.length + tail.length > 7) return null;
    words = [...head, ...new Array(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    const all = parseGroups(text, true);
    if (all === null || all.length !== 8) return null;
    words = all;
  }
  const bytes: number[] = [];
  for (const word of words) bytes.push(word >> 8, word & 0xff);
  return bytes;
}

/** Formats 16 bytes as an IPv6 address in RFC 5952 canonical form. */
export function formatIpv6(bytes: readonly number[]): string {
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((bytes[i] << 8) | bytes[i + 1]);
  // RFC 5952 section 4.2.3: compress the longest run (first if tied) of 2+ zero words.
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart < 0) return hex.join(":");
  return hex.slice(0, bestStart).join(":") + "::" + hex.slice(bestStart + bestLength).join(":");
}

/** Address family and canonical text of a parsed IP address. */
export interface IpAddressText {
  readonly family: 4 | 6;
  readonly text: string;
  readonly bytes: readonly number[];
}

/** Parses an IPv4 or IPv6 address into its family and canonical text, or `null`. */
export function parseIpAddress(text: string): IpAddressText | null {
  const v4 = parseIpv4Bytes(text);
  if (v4 !== null) return { family: 4, text: v4.join("."), bytes: v4 };
  const v6 = parseIpv6Bytes(text);
  if (v6 !== null) return { family: 6, text: formatIpv6(v6), bytes: v6 };
  return null;
}

/**
 * Names what makes `address` unusable as a unicast host address (unspecified,
 * loopback, multicast, broadcast, IPv4-mapped), or `null` if it is fine.
 * @param allowLoopback accept loopback addresses (e.g. a local resolver)
 */
export function unicastProblem(address: IpAddressText, allowLoopback = false): string | null {
  const b = address.bytes;
  if (b.every((x) => x === 0)) return "is the unspecified address";
  if (address.family === 4) {
    if (b[0] === 127 && !allowLoopback) return "is a loopback address";
    if (b[0] >= 224 && b[0] <= 239) return "is a multicast address";
    if (b.every((x) => x === 255)) return "is the broadcast address";
    if (b[0] >= 240) return "is a reserved (class E) address";
    return null;
  }
  if (b[0] === 0xff) return "is a multicast address";
  if (!allowLoopback && b.slice(0, 15).every((x) => x === 0) && b[15] === 1) {
    return "is a loopback address";
  }
  if (b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) {
    return "is an IPv4-mapped address; give the IPv4 address instead";
  }
  return null;
}

/** Parses a MAC address `xx:xx:xx:xx:xx:xx` (hex, any case) into lowercase text, or `null`. */
export function parseMacText(text: string): string | null {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(text)) return null;
  return text.toLowerCase();
}

/**
 * Parses an IPv4 netmask given as dotted quad (contiguous ones) or as a prefix length
 * 1..32, returning the prefix length or `null`.
 */
export function parseNetmask(text: string): number | null {
  if (/^(0|[1-9][0-9]?)$/.test(text)) {
    const bits = Number(text);
    return bits >= 1 && bits <= 32 ? bits : null;
  }
  const bytes = parseIpv4Bytes(text);
  if (bytes === null) return null;
  const mask = ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
  const inverted = ~mask >>> 0;
  // Contiguous ones then zeros: the inverted mask plus one is a power of two.
  if ((inverted & (inverted + 1)) !== 0) return null;
  const prefix = 32 - Math.log2(inverted + 1);
  return prefix >= 1 ? prefix : null;
}

/** Tells whether `name` is a syntactically valid Linux interface name (see dev_valid_name). */
export function isValidInterfaceName(name: string): boolean {
  if (name.length === 0 || name.length > MAX_INTERFACE_NAME_LENGTH) return false;
  if (name === "." || name === "..") return false;
  // deno-lint-ignore no-control-regex
  return !/[/:\s\x00-\x1f\x7f]/.test(name) && /^[\x20-\x7e]+$/.test(name);
}

/** Tells whether `name` is a valid domain name (letters, digits, `-`, `_`; optional final dot). */
export function isValidDomainName(name: string): boolean {
  const trimmed = name.endsWith(".") ? name.slice(0, -1) : name;
  if (trimmed.length === 0 || trimmed.length > MAX_DOMAIN_NAME_LENGTH) return false;
  return trimmed.split(".").every((label) =>
    label.length >= 1 && label.length <= MAX_DOMAIN_LABEL_LENGTH &&
    /^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?$/.test(label)
  );
}
