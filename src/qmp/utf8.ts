/**
 * QEMU's "modified UTF-8" rules (util/unicode.c): U+0000 may be written as C0 80, surrogates and
 * non-characters are invalid code points, and a bad sequence is consumed the way
 * mod_utf8_codepoint() consumes it, so that error texts and replacement characters line up with
 * QEMU's byte for byte.
 */
const MIN_CODEPOINT = [0x80, 0x800, 0x10000, 0x200000, 0x4000000];

export function isValidCodepoint(cp: number): boolean {
  if (cp < 0 || cp > 0x10ffff) return false;
  if ((cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe) return false;
  return !(cp >= 0xd800 && cp <= 0xdfff);
}

/** Decodes one code point at `pos`; returns it (or -1) and where the next one starts. */
export function modUtf8Codepoint(buf: Uint8Array, pos: number, end = buf.length): [number, number] {
  let p = pos;
  let byte = buf[p++]!;
  if (byte < 0x80) return [byte, p];
  if (byte >= 0xfe || (byte & 0x40) === 0) return [-1, p];
  let len = 0;
  let mask = 0x80;
  for (; byte & mask; mask >>= 1) len++;
  let cp = byte & (mask - 1);
  for (let i = 1; i < len; i++) {
    byte = p < end ? buf[p]! : 0;
    if ((byte & 0xc0) !== 0x80) return [-1, p];
    p++;
    cp = (cp << 6) | (byte & 0x3f);
  }
  if (!isValidCodepoint(cp)) return [-1, p];
  if (cp < MIN_CODEPOINT[len - 2]! && !(len === 2 && cp === 0)) return [-1, p];
  return [cp, p];
}

/**
 * Bytes to a JS string the way QEMU's JSON writer reads a C string: stop at NUL, and every bad
 * sequence becomes U+FFFD.
 */
export function decodeLenient(buf: Uint8Array): string {
  let out = '';
  let p = 0;
  while (p < buf.length && buf[p] !== 0) {
    const [cp, next] = modUtf8Codepoint(buf, p);
    out += String.fromCodePoint(cp < 0 ? 0xfffd : cp);
    p = next;
  }
  return out;
}
