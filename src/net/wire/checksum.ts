/**
 * The Internet checksum (RFC 1071) over byte ranges, the IPv4/IPv6 pseudo-header
 * sums used by TCP, UDP and ICMPv6, and incremental updates (RFC 1624) for
 * rewriting addresses and ports without summing the whole packet again.
 *
 * Sums are kept as plain non-negative numbers (not folded) until {@link foldSum};
 * a double holds 2^53 exactly, so a 64 KiB packet cannot overflow the accumulator.
 *
 * @module
 */

/** Below this many bytes the simple 16-bit loop beats setting up a 32-bit view. */
const WIDE_SUM_THRESHOLD = 256;

/** Whether the platform is little-endian (a Uint32Array then reads words byte-swapped). */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * Adds the bytes `buf[offset, offset + length)` as big-endian 16-bit words to `initial`
 * (RFC 1071 §4.1); an odd trailing byte is padded with a zero byte. The range is
 * clamped to the buffer, so a bad length cannot throw.
 *
 * Long ranges are summed 32 bits at a time through a Uint32Array over the aligned
 * middle part: the one's complement sum is independent of byte order up to a final
 * swap (RFC 1071 §2 (B)) and of the word size up to folding (§2 (C)).
 * @returns the unfolded sum
 */
export function sumBytes(buf: Uint8Array, offset: number, length: number, initial = 0): number {
  if (offset < 0) offset = 0;
  const end = Math.min(buf.length, offset + length);
  if (end - offset >= WIDE_SUM_THRESHOLD && LITTLE_ENDIAN) {
    return initial + sumWide(buf, offset, end);
  }
  return initial + sumNarrow(buf, offset, end);
}

function sumNarrow(buf: Uint8Array, offset: number, end: number): number {
  let sum = 0;
  let i = offset;
  // Fold every 2^16 words so the sum stays an exact small integer on any input.
  while (i + 1 < end) {
    const chunkEnd = Math.min(end - 1, i + 131072);
    let s = 0;
    for (; i < chunkEnd; i += 2) s += (buf[i] << 8) | buf[i + 1];
    sum += s;
    sum = (sum & 0xffff) + Math.floor(sum / 65536);
  }
  if (i < end) sum += buf[i] << 8;
  return sum;
}

function sumWide(buf: Uint8Array, offset: number, end: number): number {
  let sum = 0;
  let i = offset;
  // Head bytes up to 4-byte alignment of the underlying buffer; each byte is the high
  // or low half of its word depending on its distance from `offset`.
  while (((buf.byteOffset + i) & 3) !== 0) {
    sum += ((i - offset) & 1) === 0 ? buf[i] << 8 : buf[i];
    i++;
  }
  const words = (end - i) >>> 2;
  const view = new Uint32Array(buf.buffer, buf.byteOffset + i, words);
  let wide = 0;
  for (let w = 0; w < words;) {
    // 2^20 words of at most 2^32 each stay below 2^53.
    const stop = Math.min(words, w + 1048576);
    let s = 0;
    for (; w < stop; w++) s += view[w];
    wide += s;
    wide = (wide % 4294967296) + Math.floor(wide / 4294967296);
  }
  // Fold to 16 bits: this is the little-endian sum, i.e. the byte-swapped big-endian
  // sum of the region with words counted from its own start.
  let le = wide;
  while (le > 0xffff) le = (le & 0xffff) + Math.floor(le / 65536);
  const swapped = ((le & 0xff) << 8) | (le >>> 8);
  // Region starting at an even distance from `offset`: its words are ours (take the
  // big-endian sum); at an odd distance they are shifted by a byte (take it swapped).
  sum += ((i - offset) & 1) === 0 ? swapped : le;
  i += words * 4;
  for (; i < end; i++) sum += ((i - offset) & 1) === 0 ? buf[i] << 8 : buf[i];
  return sum;
}

/** Folds a running sum into 16 bits with end-around carry (RFC 1071 §4.1). */
export function foldSum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 65536);
  return sum;
}

/** Completes a checksum: folds `sum` and takes its one's complement. */
export function finishChecksum(sum: number): number {
  return ~foldSum(sum) & 0xffff;
}

/** The Internet checksum of `buf[offset, offset + length)` plus an optional initial sum. */
export function internetChecksum(
  buf: Uint8Array,
  offset: number,
  length: number,
  initial = 0,
): number {
  return finishChecksum(sumBytes(buf, offset, length, initial));
}

/**
 * Sum of the IPv4 pseudo-header (RFC 9293 §3.1, RFC 768): source, destination,
 * zero + protocol, upper-layer length.
 * @param src IPv4 source address as an unsigned 32-bit number
 * @param dst IPv4 destination address as an unsigned 32-bit number
 */
export function ipv4PseudoSum(src: number, dst: number, protocol: number, length: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + protocol +
    (length & 0xffff);
}

/**
 * Sum of the IPv6 pseudo-header (RFC 8200 §8.1): source, destination, 32-bit
 * upper-layer length, 24 zero bits, next header.
 * @param src buffer holding the 16-byte source address at `srcOffset`
 * @param dst buffer holding the 16-byte destination address at `dstOffset`
 */
export function ipv6PseudoSum(
  src: Uint8Array,
  srcOffset: number,
  dst: Uint8Array,
  dstOffset: number,
  protocol: number,
  length: number,
): number {
  let sum = sumBytes(src, srcOffset, 16, 0);
  sum = sumBytes(dst, dstOffset, 16, sum);
  return sum + Math.floor(length / 65536) + (length & 0xffff) + protocol;
}

/**
 * Updates checksum `check` for one 16-bit word changing from `oldWord` to `newWord`
 * (RFC 1624 §3, eqn. 3: HC' = ~(~HC + ~m + m')).
 */
export function checksumAdjust16(check: number, oldWord: number, newWord: number): number {
  const sum = (~check & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff);
  return ~foldSum(sum) & 0xffff;
}

/** Updates checksum `check` for a 32-bit value (e.g. an IPv4 address) changing (RFC 1624). */
export function checksumAdjust32(check: number, oldValue: number, newValue: number): number {
  const sum = (~check & 0xffff) + (~(oldValue >>> 16) & 0xffff) + (~oldValue & 0xffff) +
    (newValue >>> 16) + (newValue & 0xffff);
  return ~foldSum(sum) & 0xffff;
}

/**
 * Updates checksum `check` for a 16-byte IPv6 address changing from the one at
 * `oldAddr[oldOffset]` to the one at `newAddr[newOffset]` (RFC 1624).
 */
export function checksumAdjust128(
  check: number,
  oldAddr: Uint8Array,
  oldOffset: number,
  newAddr: Uint8Array,
  newOffset: number,
): number {
  let sum = ~check & 0xffff;
  for (let i = 0; i < 16; i += 2) {
    sum += ~((oldAddr[oldOffset + i] << 8) | oldAddr[oldOffset + i + 1]) & 0xffff;
    sum += (newAddr[newOffset + i] << 8) | newAddr[newOffset + i + 1];
  }
  return ~foldSum(sum) & 0xffff;
}

/**
 * Checksum of an upper-layer message over IPv4 (TCP, UDP) with its pseudo-header.
 * The checksum field inside the message must be zero (or is included as-is).
 */
export function l4ChecksumV4(
  buf: Uint8Array,
  offset: number,
  length: number,
  protocol: number,
  src: number,
  dst: number,
): number {
  return internetChecksum(buf, offset, length, ipv4PseudoSum(src, dst, protocol, length));
}

/** Checksum of an upper-layer message over IPv6 (TCP, UDP, ICMPv6) with its pseudo-header. */
export function l4ChecksumV6(
  buf: Uint8Array,
  offset: number,
  length: number,
  protocol: number,
  src: Uint8Array,
  srcOffset: number,
  dst: Uint8Array,
  dstOffset: number,
): number {
  return internetChecksum(
    buf,
    offset,
    length,
    ipv6PseudoSum(src, srcOffset, dst, dstOffset, protocol, length),
  );
}

/** Stores checksum `value` big-endian in the 16-bit field at `buf[at]`. */
function putChecksum(buf: Uint8Array, at: number, value: number): void {
  buf[at] = value >>> 8;
  buf[at + 1] = value;
}

/**
 * Computes the IPv4 checksum of the upper-layer message `buf[offset, offset+length)`
 * and stores it in the message's checksum field at `offset + field` (zeroed first).
 * @returns the stored checksum
 */
export function setL4ChecksumV4(
  buf: Uint8Array,
  offset: number,
  length: number,
  protocol: number,
  field: number,
  src: number,
  dst: number,
): number {
  putChecksum(buf, offset + field, 0);
  const c = l4ChecksumV4(buf, offset, length, protocol, src, dst);
  putChecksum(buf, offset + field, c);
  return c;
}

/**
 * Computes the IPv6 checksum of the upper-layer message `buf[offset, offset+length)`
 * and stores it in the message's checksum field at `offset + field` (zeroed first).
 * @returns the stored checksum
 */
export function setL4ChecksumV6(
  buf: Uint8Array,
  offset: number,
  length: number,
  protocol: number,
  field: number,
  src: Uint8Array,
  dst: Uint8Array,
): number {
  putChecksum(buf, offset + field, 0);
  const c = l4ChecksumV6(buf, offset, length, protocol, src, 0, dst, 0);
  putChecksum(buf, offset + field, c);
  return c;
}
