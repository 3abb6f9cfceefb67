/**
 * Domain names in DNS wire format (RFC 1035 §3.1) for the options that carry them:
 * DHCP option 119 (RFC 3397, with RFC 1035 §4.1.4 compression), DHCPv6 option 24
 * (RFC 3646, uncompressed) and the NDP DNSSL option (RFC 8106 §5.2, uncompressed).
 *
 * @module
 */

/** Longest label (RFC 1035 §2.3.4). */
export const MAX_LABEL_LENGTH = 63;
/** Longest encoded name (RFC 1035 §2.3.4). */
export const MAX_NAME_LENGTH = 255;
/** Compression pointer marker (RFC 1035 §4.1.4): the two high bits set. */
export const COMPRESSION_POINTER = 0xc000;

const encoder = new TextEncoder();

/**
 * Splits a domain name into encoded labels, or returns null when it cannot be
 * encoded (empty label, label > 63 bytes, name > 255 bytes). A trailing dot is allowed.
 */
export function domainLabels(name: string): Uint8Array[] | null {
  const n = name.endsWith(".") ? name.slice(0, -1) : name;
  if (n.length === 0) return null;
  const labels = n.split(".").map((l) => encoder.encode(l));
  let total = 1;
  for (const l of labels) {
    if (l.length === 0 || l.length > MAX_LABEL_LENGTH) return null;
    total += l.length + 1;
  }
  return total > MAX_NAME_LENGTH ? null : labels;
}

/**
 * Encodes names one after the other, uncompressed (each ends with a zero byte);
 * names that cannot be encoded are skipped.
 */
export function encodeDomainList(names: readonly string[]): Uint8Array {
  const parts: number[] = [];
  for (const name of names) {
    const labels = domainLabels(name);
    if (!labels) continue;
    for (const l of labels) parts.push(l.length, ...l);
    parts.push(0);
  }
  return new Uint8Array(parts);
}

/**
 * Encodes names with RFC 1035 §4.1.4 compression, pointers being offsets from the
 * start of the returned data (as RFC 3397 §2 requires for DHCP option 119).
 * Names that cannot be encoded are skipped.
 */
export function encodeDomainListCompressed(names: readonly string[]): Uint8Array {
  const out: number[] = [];
  const seen = new Map<string, number>();
  for (const name of names) {
    const labels = domainLabels(name);
    if (!labels) continue;
    const texts = labels.map((l) =>
      Array.from(l, (b) => String.fromCharCode(b)).join("").toLowerCase()
    );
    let pointer = -1;
    for (let i = 0; i < labels.length; i++) {
      const suffix = texts.slice(i).join(".");
      const at = seen.get(suffix);
      if (at !== undefined) {
        pointer = at;
        break;
      }
      // Offsets above 0x3fff cannot be pointed to.
      if (out.length <= 0x3fff) seen.set(suffix, out.length);
      out.push(labels[i].length, ...labels[i]);
    }
    if (pointer >= 0) out.push((COMPRESSION_POINTER | pointer) >> 8, pointer & 0xff);
    else out.push(0);
  }
  return new Uint8Array(out);
}

/**
 * Decodes a list of (possibly compressed) names from `data` (for tests and
 * diagnostics). Returns null on malformed input (pointer loops, overruns).
 */
export function decodeDomainList(data: Uint8Array): string[] | null {
  const names: string[] = [];
  let pos = 0;
  while (pos < data.length) {
    const labels: string[] = [];
    let p = pos;
    let jumped = false;
    let hops = 0;
    for (;;) {
      if (p >= data.length) return null;
      const len = data[p];
      if (len === 0) {
        if (!jumped) pos = p + 1;
        break;
      }
      if ((len & 0xc0) === 0xc0) {
        if (p + 1 >= data.length || ++hops > 64) return null;
        const target = ((len & 0x3f) << 8) | data[p + 1];
        if (!jumped) pos = p + 2;
        jumped = true;
        p = target;
        continue;
      }
      if (len > MAX_LABEL_LENGTH || p + 1 + len > data.length) return null;
      labels.push(String.fromCharCode(...data.subarray(p + 1, p + 1 + len)));
      p += 1 + len;
    }
    names.push(labels.join("."));
  }
  return names;
}
