/**
 * Strict parsing of the address syntaxes the command line accepts (IPv4 dotted
 * quad, IPv6 per RFC 4291 section 2.2, MAC, netmask, interface names, domain names)
 * into canonical text, through the one parser and formatter of each family
 * (ffi/ip_address_text.ts for IP, src/net/wire/address.ts for MAC). Each parser
 * returns `null` for anything malformed; the caller words the error.
 *
 * @module
 */

import { addressBytes, addressText, parseIpv4 } from "../../ffi/ip_address_text.ts";
import { macToString, parseMac } from "../net/wire/address.ts";

/** Largest interface name length: IFNAMSIZ (16, linux/if.h) minus the terminating NUL. */
export const MAX_INTERFACE_NAME_LENGTH = 15;

/** Longest domain name in text form (RFC 1035 section 2.3.4: 255 octets on the wire). */
export const MAX_DOMAIN_NAME_LENGTH = 253;

/** Longest label of a domain name (RFC 1035 section 2.3.4). */
export const MAX_DOMAIN_LABEL_LENGTH = 63;

/** Address family and canonical text of a parsed IP address. */
export interface IpAddressText {
  readonly family: 4 | 6;
  readonly text: string;
  /** 4 or 16 bytes in network order. */
  readonly bytes: Uint8Array;
}

/** Parses an IPv4 or IPv6 address into its family and canonical text, or `null`. */
export function parseIpAddress(text: string): IpAddressText | null {
  if (text.startsWith("[")) return null;
  const bytes = addressBytes(text);
  if (bytes === null) return null;
  return { family: bytes.byteLength === 4 ? 4 : 6, text: addressText(bytes), bytes };
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
  const mac = parseMac(text);
  return mac === null ? null : macToString(mac);
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
  const mask = parseIpv4(text);
  if (mask === null) return null;
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
