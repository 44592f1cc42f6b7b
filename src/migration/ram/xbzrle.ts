/**
 * XBZRLE page delta encoding, byte-compatible with QEMU 7.2
 * (migration/xbzrle.c `xbzrle_encode_buffer` / `xbzrle_decode_buffer`,
 * util/cutils.c `uleb128_encode_small` / `uleb128_decode_small`).
 *
 *   data  := (zrun nzrun)+        trailing unchanged run omitted
 *   zrun  := varint n             n bytes unchanged
 *   nzrun := varint m, m bytes    the NEW values of the next m bytes (not XOR)
 *   varint := 1 byte if n < 0x80, else (n & 0x7f) | 0x80, n >> 7   (max 0x3fff)
 *
 * This runs for every re-sent page, so both directions avoid allocation in the
 * hot path: pages are compared 8 bytes at a time through cached whole-buffer
 * word views (see `words`), long unchanged tails are confirmed by memcmp, and
 * short literal runs are copied byte by byte instead of `set(subarray())`.
 */

/** The small ULEB128 can carry at most 14 bits [uleb128_encode_small]. */
export const XBZRLE_MAX_VARINT = 0x3fff;

/** Below this many bytes a plain loop beats `set(subarray(...))` (measured). */
const COPY_LOOP_MAX = 48;

/**
 * After an unchanged run has been scanned this far in JS, ask memcmp (through
 * Buffer#compare, ~0.1 us per call on a 4 KiB page) whether the rest of the page
 * is unchanged too. That makes identical pages and trailing unchanged runs
 * cheap while costing at most one wasted call per long run.
 */
const NATIVE_CHECK_AFTER = 512;

const compareRange = Buffer.prototype.compare as (
  this: Uint8Array,
  target: Uint8Array,
  targetStart: number,
  targetEnd: number,
  sourceStart: number,
  sourceEnd: number,
) => number;

/** Whole-buffer word views of one ArrayBuffer. */
interface Words {
  buf: ArrayBufferLike;
  /** for equality only: measured faster than Int32Array, and no BigInt is allocated */
  w64: BigInt64Array;
  /** for bit tricks (BigInt arithmetic would allocate) */
  w32: Int32Array;
}

// The sender compares cache pages (few backing buffers) with guest RAM (one
// backing buffer), so a two-entry cache means no view is built in steady state.
let wordsA: Words | undefined;
let wordsB: Words | undefined;

/** Word views over all of `buf`, valid for bytes [0, end). */
function words(buf: ArrayBufferLike, end: number): Words {
  let w = wordsA;
  if (w !== undefined && w.buf === buf && w.w64.length * 8 >= end) return w;
  w = wordsB;
  if (w === undefined || w.buf !== buf || w.w64.length * 8 < end) {
    const n = buf.byteLength;
    w = { buf, w64: new BigInt64Array(buf, 0, n >>> 3), w32: new Int32Array(buf, 0, n >>> 2) };
  }
  wordsB = wordsA;
  wordsA = w;
  return w;
}

/** Word tricks below read bytes in little-endian order within a word. */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Index (0..3) of the lowest non-zero byte of a non-zero int32. */
function lowByte(x: number): number {
  return (31 - Math.clz32(x & -x)) >>> 3;
}

/** Write a small ULEB128 [uleb128_encode_small]; n <= 0x3fff. Returns the new offset. */
function putVarint(out: Uint8Array, d: number, n: number): number {
  if (n < 0x80) {
    out[d] = n;
    return d + 1;
  }
  out[d] = (n & 0x7f) | 0x80;
  out[d + 1] = n >>> 7;
  return d + 2;
}

/** Copy cur[from, to) to out[d...]. Returns the new offset. */
function putLiteral(out: Uint8Array, d: number, cur: Uint8Array, from: number, to: number): number {
  if (to - from <= COPY_LOOP_MAX) {
    for (let j = from; j < to; j++) out[d++] = cur[j];
    return d;
  }
  out.set(cur.subarray(from, to), d);
  return d + (to - from);
}

/**
 * Encode `cur` against `old` (the sender's cached copy) into `out`, like
 * `xbzrle_encode_buffer(old, new, slen = cur.length, dst, dlen = outLimit)`.
 *
 * Returns the encoded length, 0 if the pages are identical, or -1 if the
 * encoding does not fit in `outLimit` bytes (checked at exactly QEMU's points,
 * so e.g. -1 is returned when fewer than 2 bytes are left even if only an
 * unchanged tail remains). `outLimit` is clamped to `out.length`.
 *
 * Runs are always maximal (QEMU 7.2 has only the scalar encoder, whose
 * word-at-a-time scan still stops at the exact first differing / equal byte;
 * the AVX512 variant came in 8.0), so the output is byte-identical to QEMU's.
 *
 * Fast when both pages start 8-byte aligned in their ArrayBuffers and the
 * length is a multiple of 8 (Buffers, guest RAM pages and PageCache pages
 * are); otherwise it compares byte by byte, several times slower.
 *
 * `cur` must not change during the call: like QEMU (which copies the guest
 * page to XBZRLE.current_buf first), pass a snapshot if another thread can
 * write guest RAM, or the output may be invalid.
 */
export function xbzrleEncode(old: Uint8Array, cur: Uint8Array, out: Uint8Array, outLimit: number): number {
  const slen = cur.length;
  if (old.length < slen) throw new RangeError('xbzrle: old page shorter than new page');
  if (slen > XBZRLE_MAX_VARINT) throw new RangeError('xbzrle: page too large for a small ULEB128 run length');
  const dlen = Math.min(outLimit, out.length);
  if (LITTLE_ENDIAN && ((old.byteOffset | cur.byteOffset | slen) & 7) === 0) {
    return encodeWords(old, cur, out, dlen, slen);
  }
  return encodeBytes(old, cur, out, dlen, slen);
}

/** The byte-at-a-time encoder: the reference for the run structure. */
function encodeBytes(old: Uint8Array, cur: Uint8Array, out: Uint8Array, dlen: number, slen: number): number {
  let i = 0;
  let d = 0;
  while (i < slen) {
    if (d + 2 > dlen) return -1; // overflow
    const zstart = i;
    while (i < slen && old[i] === cur[i]) i++;
    if (i - zstart === slen) return 0; // buffer unchanged
    if (i === slen) return d; // skip last zero run
    d = putVarint(out, d, i - zstart);
    if (d + 2 > dlen) return -1; // overflow
    const nstart = i;
    while (i < slen && old[i] !== cur[i]) i++;
    d = putVarint(out, d, i - nstart);
    if (d + (i - nstart) > dlen) return -1; // overflow
    d = putLiteral(out, d, cur, nstart, i);
  }
  return d;
}

/**
 * The same encoder on words: unchanged runs advance 8 bytes per compare
 * (BigInt64Array `!==` compiles to a plain 64-bit compare), the exact run
 * boundaries come from the lowest set byte of an XOR (lowByte) or from the
 * has-zero-byte test on 32-bit words, so there are no byte loops at all.
 */
function encodeWords(old: Uint8Array, cur: Uint8Array, out: Uint8Array, dlen: number, slen: number): number {
  const ow = words(old.buffer, old.byteOffset + slen);
  const cw = words(cur.buffer, cur.byteOffset + slen);
  const o32 = ow.w32;
  const c32 = cw.w32;
  const o64 = ow.w64;
  const c64 = cw.w64;
  const ob4 = old.byteOffset >>> 2;
  const cb4 = cur.byteOffset >>> 2;
  const ob8 = old.byteOffset >>> 3;
  const cb8 = cur.byteOffset >>> 3;
  const n4 = slen >>> 2;
  const n8 = slen >>> 3;

  let i = 0;
  let d = 0;
  while (i < slen) {
    if (d + 2 > dlen) return -1; // overflow

    // zrun: find the first differing byte at or after i
    const zstart = i;
    let w = i >>> 2;
    // bytes of the first word below i are ignored
    let x = (o32[ob4 + w] ^ c32[cb4 + w]) & (-1 << ((i & 3) << 3));
    if (x === 0 && (w & 1) === 0) {
      w++;
      x = o32[ob4 + w] ^ c32[cb4 + w];
    }
    if (x !== 0) {
      i = (w << 2) + lowByte(x);
    } else {
      // 8 bytes per compare from the next 8-byte word on
      let k = (w + 1) >>> 1;
      let check = k + (NATIVE_CHECK_AFTER >>> 3);
      for (;;) {
        const stop = check < n8 ? check : n8;
        while (k + 2 <= stop && o64[ob8 + k] === c64[cb8 + k] && o64[ob8 + k + 1] === c64[cb8 + k + 1]) k += 2;
        if (k < stop && o64[ob8 + k] === c64[cb8 + k]) k++;
        if (k !== check) break; // found a difference, or reached the end
        const p = k << 3;
        if (compareRange.call(cur, old, p, slen, p, slen) === 0) {
          k = n8; // the rest of the page is unchanged
          break;
        }
        check = n8; // a difference lies ahead: plain scan from here on
      }
      if (k === n8) {
        i = slen;
      } else {
        w = k << 1;
        x = o32[ob4 + w] ^ c32[cb4 + w];
        if (x === 0) {
          w++;
          x = o32[ob4 + w] ^ c32[cb4 + w];
        }
        i = (w << 2) + lowByte(x);
      }
    }
    const zrun = i - zstart;

    if (zrun === slen) return 0; // buffer unchanged
    if (i === slen) return d; // skip last zero run
    d = putVarint(out, d, zrun);
    if (d + 2 > dlen) return -1; // overflow

    // nzrun: find the first equal byte after i. Bytes up to the next word
    // boundary one at a time (measured faster for the many short runs), then
    // words: (x - 0x01010101) & ~x & 0x80808080 flags the lowest zero byte of
    // the XOR, i.e. the first unchanged byte, exactly.
    const nstart = i;
    i++;
    while ((i & 3) !== 0 && old[i] !== cur[i]) i++;
    if ((i & 3) === 0 && i < slen) {
      w = i >>> 2;
      x = o32[ob4 + w] ^ c32[cb4 + w];
      let t = (x - 0x01010101) & ~x & 0x80808080;
      while (t === 0 && ++w < n4) {
        x = o32[ob4 + w] ^ c32[cb4 + w];
        t = (x - 0x01010101) & ~x & 0x80808080;
      }
      i = w < n4 ? (w << 2) + lowByte(t) : slen;
    }
    const nzrun = i - nstart;

    d = putVarint(out, d, nzrun);
    if (d + nzrun > dlen) return -1; // overflow
    d = putLiteral(out, d, cur, nstart, i);
  }
  return d;
}

/**
 * Apply an XBZRLE encoding `src` in place to `dst` (the receiver's current
 * copy of the page), like `xbzrle_decode_buffer(src, slen = src.length, dst,
 * dlen = dst.length)`. Returns the number of bytes of `dst` covered (the
 * position after the last literal run; 0 for empty input) or -1 when the input
 * is malformed:
 *   - fewer than 2 bytes remain when a varint is about to be read;
 *   - a varint's second byte has bit 7 set (3-byte form);
 *   - a zrun of 0 other than the very first one;
 *   - an nzrun of 0;
 *   - a run would pass the end of `dst`, or literals the end of `src`.
 * As in QEMU, literal runs before the malformed point have already been
 * written to `dst` when -1 is returned (the migration fails anyway).
 */
export function xbzrleDecode(src: Uint8Array, dst: Uint8Array): number {
  const slen = src.length;
  const dlen = dst.length;
  let i = 0;
  let d = 0;
  while (i < slen) {
    // zrun
    if (slen - i < 2) return -1;
    let b = src[i];
    let count: number;
    if (b < 0x80) {
      count = b;
      if (i !== 0 && count === 0) return -1;
      i += 1;
    } else {
      const b2 = src[i + 1];
      if (b2 >= 0x80) return -1; // we exceed a 14-bit number
      count = (b & 0x7f) | (b2 << 7);
      if (i !== 0 && count === 0) return -1;
      i += 2;
    }
    d += count;
    if (d > dlen) return -1;

    // nzrun
    if (slen - i < 2) return -1;
    b = src[i];
    if (b < 0x80) {
      count = b;
      i += 1;
    } else {
      const b2 = src[i + 1];
      if (b2 >= 0x80) return -1;
      count = (b & 0x7f) | (b2 << 7);
      i += 2;
    }
    if (count === 0) return -1;
    if (d + count > dlen || i + count > slen) return -1;

    if (count <= COPY_LOOP_MAX) {
      const end = i + count;
      while (i < end) dst[d++] = src[i++];
    } else {
      dst.set(src.subarray(i, i + count), d);
      d += count;
      i += count;
    }
  }
  return d;
}
