/**
 * Byte fixtures written as hex text, one line per header row, instead of one array
 * element per line.
 *
 * @module
 */

/**
 * The bytes of `text`: pairs of hex digits, white space between them ignored.
 * @throws RangeError when `text` holds anything else or an odd number of digits
 */
export function hexBytes(text: string): Uint8Array {
  const digits = text.replace(/\s+/g, "");
  if (!/^([0-9a-fA-F]{2})*$/.test(digits)) {
    throw new RangeError(`Cannot read hex bytes from ${JSON.stringify(text)}`);
  }
  const out = new Uint8Array(digits.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(digits.slice(2 * i, 2 * i + 2), 16);
  return out;
}
