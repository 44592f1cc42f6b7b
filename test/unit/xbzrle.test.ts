/** XBZRLE against QEMU 7.2's rules: the documented capture, straight ports of the C code, and malformed input. */
import t from 'tap';
import { xbzrleDecode, xbzrleEncode } from '../../src/migration/ram/xbzrle.js';
import { rng } from '../helpers/rng.js';

const PAGE = 4096;

/** Straight port of xbzrle_encode_buffer, byte at a time (the word loops only change speed). */
function refEncode(old: Uint8Array, cur: Uint8Array, dst: Uint8Array, dlen: number): number {
  const slen = cur.length;
  let i = 0;
  let d = 0;
  const put = (n: number): void => {
    if (n < 0x80) dst[d++] = n;
    else {
      dst[d++] = (n & 0x7f) | 0x80;
      dst[d++] = n >> 7;
    }
  };
  while (i < slen) {
    if (d + 2 > dlen) return -1;
    let zrun = 0;
    while (i < slen && old[i] === cur[i]) {
      zrun++;
      i++;
    }
    if (zrun === slen) return 0;
    if (i === slen) return d;
    put(zrun);
    if (d + 2 > dlen) return -1;
    const start = i;
    while (i < slen && old[i] !== cur[i]) i++;
    put(i - start);
    if (d + (i - start) > dlen) return -1;
    for (let j = start; j < i; j++) dst[d++] = cur[j];
  }
  return d;
}

/** Straight port of xbzrle_decode_buffer + uleb128_decode_small. */
function refDecode(src: Uint8Array, dst: Uint8Array): number {
  const slen = src.length;
  const dlen = dst.length;
  let i = 0;
  let d = 0;
  const get = (): [number, number] => {
    if (!(src[i] & 0x80)) return [1, src[i]];
    if (src[i + 1] & 0x80) return [-1, 0];
    return [2, (src[i] & 0x7f) | (src[i + 1] << 7)];
  };
  while (i < slen) {
    if (slen - i < 2) return -1;
    let [ret, count] = get();
    if (ret < 0 || (i !== 0 && count === 0)) return -1;
    i += ret;
    d += count;
    if (d > dlen) return -1;
    if (slen - i < 2) return -1;
    [ret, count] = get();
    if (ret < 0 || count === 0) return -1;
    i += ret;
    if (d + count > dlen || i + count > slen) return -1;
    dst.set(src.subarray(i, i + count), d);
    d += count;
    i += count;
  }
  return d;
}

/** A page at a chosen byte offset inside its own buffer (0 = aligned, odd = byte path). */
function pageAt(src: Uint8Array, offset: number): Uint8Array {
  const p = new Uint8Array(new ArrayBuffer(src.length + 16), offset, src.length);
  p.set(src);
  return p;
}

function randomPage(r: () => number): Uint8Array {
  const p = new Uint8Array(PAGE);
  for (let i = 0; i < PAGE; i++) p[i] = (r() * 256) | 0;
  return p;
}

/**
 * Check one pair: both encoder paths (aligned words, unaligned bytes) give
 * QEMU's length and bytes, and decoding onto a copy of `old` gives `cur`.
 * Returns the length and a description of the first problem, if any.
 */
function roundTrip(old: Uint8Array, cur: Uint8Array, label: string): { len: number; error?: string } {
  const want = new Uint8Array(PAGE);
  const wantLen = refEncode(old, cur, want, PAGE);
  const out = new Uint8Array(PAGE);
  const len = xbzrleEncode(pageAt(old, 8), pageAt(cur, 0), out, PAGE);
  const out2 = new Uint8Array(PAGE);
  const len2 = xbzrleEncode(pageAt(old, 3), pageAt(cur, 5), out2, PAGE);
  if (len !== wantLen || len2 !== wantLen) return { len, error: `${label}: length ${len}/${len2}, QEMU ${wantLen}` };
  if (len === 0 && !bytesEqual(old, cur)) return { len, error: `${label}: 0 for different pages` };
  if (len <= 0) return { len };
  if (!bytesEqual(out.subarray(0, len), want.subarray(0, len)) || !bytesEqual(out2.subarray(0, len), want.subarray(0, len))) {
    return { len, error: `${label}: encoding differs from QEMU's` };
  }
  const dst = pageAt(old, 0);
  const covered = xbzrleDecode(out.subarray(0, len), dst);
  let last = PAGE;
  while (last > 0 && old[last - 1] === cur[last - 1]) last--;
  if (covered !== last || !bytesEqual(dst, cur)) return { len, error: `${label}: decode gave ${covered} (want ${last}) or wrong bytes` };
  return { len };
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

t.test('the worked example from the stream-format doc (E2, L = 40)', async (t) => {
  const enc = Buffer.from(
    '8110' + '12' + '42434445464748494a4b4c4c4c4c4c4c4c4c' + 'ed0d' + '10' + Buffer.from('final-change-00!').toString('hex'),
    'hex',
  );
  t.equal(enc.length, 40);
  const old = new Uint8Array(PAGE);
  for (let i = 0; i < PAGE; i++) old[i] = i & 0x0f ? 0x00 : 0x11; // anything that differs from the literals
  const dst = pageAt(old, 0);
  t.equal(xbzrleDecode(enc, dst), 0xf10, 'covers up to the end of the last literal run');
  t.same([...dst.subarray(0x801, 0x813)], [0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x4b, ...Array(8).fill(0x4c)]);
  t.equal(Buffer.from(dst.subarray(0xf00, 0xf10)).toString('latin1'), 'final-change-00!');
  t.ok(bytesEqual(dst.subarray(0, 0x801), old.subarray(0, 0x801)), 'bytes before 0x801 unchanged');
  t.ok(bytesEqual(dst.subarray(0x813, 0xf00), old.subarray(0x813, 0xf00)), 'gap unchanged');
  t.ok(bytesEqual(dst.subarray(0xf10), old.subarray(0xf10)), 'last 240 bytes unchanged');
  const out = new Uint8Array(PAGE);
  t.equal(xbzrleEncode(old, dst, out, PAGE), 40, 'encoding the result gives 40 bytes');
  t.same(Buffer.from(out.subarray(0, 40)), enc, 'byte for byte the captured encoding');
});

t.test('identical pages encode to 0', async (t) => {
  const r = rng(1);
  const p = randomPage(r);
  const out = new Uint8Array(PAGE);
  t.equal(xbzrleEncode(pageAt(p, 0), pageAt(p, 8), out, PAGE), 0);
  t.equal(xbzrleEncode(pageAt(p, 1), pageAt(p, 2), out, PAGE), 0);
  t.equal(xbzrleEncode(new Uint8Array(PAGE), new Uint8Array(PAGE), out, PAGE), 0);
  t.equal(xbzrleEncode(p, p, out, 1), -1, 'QEMU checks the 2-byte headroom before noticing');
});

t.test('boundary positions and varint edges', async (t) => {
  const r = rng(2);
  const base = randomPage(r);
  const cases: [string, number[]][] = [
    ['byte 0', [0]],
    ['byte 4095', [4095]],
    ['bytes 0 and 4095', [0, 4095]],
    ['first 8', [0, 1, 2, 3, 4, 5, 6, 7]],
    ['last 8', [4088, 4089, 4090, 4091, 4092, 4093, 4094, 4095]],
    ['every byte', Array.from({ length: PAGE }, (_, i) => i)],
  ];
  for (const z of [1, 2, 3, 4, 5, 7, 8, 9, 126, 127, 128, 129, 255, 256, 2047, 4094]) {
    cases.push([`zrun ${z}`, [z]]);
    cases.push([`zrun ${z} to the end`, Array.from({ length: PAGE - z }, (_, i) => i + z)]);
  }
  for (const n of [1, 3, 4, 5, 8, 9, 127, 128, 129, 1000]) {
    for (const at of [0, 1, 3, 4, 5, 7, 100, PAGE - n]) cases.push([`nzrun ${n} at ${at}`, Array.from({ length: n }, (_, i) => i + at)]);
  }
  for (const gap of [1, 2, 3, 4, 7, 8, 9]) cases.push([`two runs, gap ${gap}`, [100, 101, 102, 102 + gap + 1, 102 + gap + 2]]);
  cases.push(['alternating', Array.from({ length: PAGE / 2 }, (_, i) => 2 * i)]);
  const errors: string[] = [];
  for (const [label, positions] of cases) {
    const cur = Uint8Array.from(base);
    for (const p of positions) cur[p] ^= 1 + ((r() * 255) | 0);
    const { error } = roundTrip(base, cur, label);
    if (error !== undefined) errors.push(error);
  }
  t.same(errors, [], `${cases.length} cases`);
});

t.test('random page pairs: sparse, clustered and dense changes', async (t) => {
  const r = rng(3);
  const counts = { encoded: 0, identical: 0, overflow: 0 };
  const errors: string[] = [];
  for (let n = 0; n < 3000; n++) {
    const old = n % 3 === 0 ? new Uint8Array(PAGE) : randomPage(r);
    const cur = Uint8Array.from(old);
    const kind = n % 4;
    if (kind === 0) {
      // sparse single bytes
      const k = (r() * 70) | 0;
      for (let j = 0; j < k; j++) cur[(r() * PAGE) | 0] ^= 1 + ((r() * 255) | 0);
    } else if (kind === 1) {
      // a few clustered runs, sometimes with small equal gaps inside
      const k = 1 + ((r() * 6) | 0);
      for (let j = 0; j < k; j++) {
        const at = (r() * PAGE) | 0;
        const len = 1 + ((r() * 300) | 0);
        for (let p = at; p < Math.min(PAGE, at + len); p++) if (r() < 0.9) cur[p] ^= 1 + ((r() * 255) | 0);
      }
    } else if (kind === 2) {
      // dense: a random fraction of all bytes
      const f = r();
      for (let p = 0; p < PAGE; p++) if (r() < f) cur[p] ^= 1 + ((r() * 255) | 0);
    } else {
      // near the ends
      const k = (r() * 10) | 0;
      for (let j = 0; j < k; j++) cur[r() < 0.5 ? (r() * 16) | 0 : PAGE - 1 - ((r() * 16) | 0)] ^= 0x80;
    }
    const { len, error } = roundTrip(old, cur, `pair ${n} kind ${kind}`);
    if (error !== undefined) errors.push(error);
    if (len > 0) counts.encoded++;
    else if (len === 0) counts.identical++;
    else counts.overflow++;
  }
  t.same(errors.slice(0, 10), [], 'every pair matches QEMU and round-trips');
  t.ok(counts.encoded > 1000 && counts.identical > 10 && counts.overflow > 100, `mix ${JSON.stringify(counts)}`);
});

t.test('overflow: random pages give -1, and every output limit matches QEMU', async (t) => {
  const r = rng(4);
  const out = new Uint8Array(PAGE);
  for (let n = 0; n < 200; n++) {
    t.equal(xbzrleEncode(randomPage(r), randomPage(r), out, PAGE), -1);
  }
  const old = randomPage(r);
  const cur = Uint8Array.from(old);
  for (let j = 0; j < 40; j++) cur[(r() * PAGE) | 0] ^= 0x55;
  cur[PAGE - 3] ^= 1; // an unchanged tail of 2 bytes
  const want = new Uint8Array(PAGE);
  const full = refEncode(old, cur, want, PAGE);
  t.ok(full > 0);
  let bad = 0;
  for (let limit = 0; limit <= full + 2; limit++) {
    const ref = new Uint8Array(PAGE);
    const expect = refEncode(old, cur, ref, limit);
    const got = xbzrleEncode(old, cur, out.fill(0), limit);
    if (got !== expect || (got > 0 && !bytesEqual(out.subarray(0, got), ref.subarray(0, got)))) bad++;
    // the output array's length bounds the limit too
    if (xbzrleEncode(old, cur, new Uint8Array(limit), PAGE) !== expect) bad++;
  }
  t.equal(bad, 0, 'same result as QEMU for every dlen');
  // QEMU re-checks for 2 bytes of room before scanning the unchanged tail
  t.equal(xbzrleEncode(old, cur, out, full + 2), full);
  t.equal(xbzrleEncode(old, cur, out, full + 1), -1);
  t.equal(xbzrleEncode(old, cur, out, full), -1);
  // without an unchanged tail the exact length fits
  cur[PAGE - 1] ^= 1;
  const exact = refEncode(old, cur, want, PAGE);
  t.equal(xbzrleEncode(old, cur, out, exact), exact);
  t.equal(xbzrleEncode(old, cur, out, exact - 1), -1);
});

t.test('decoder: each of QEMU\'s rules', async (t) => {
  const dec = (bytes: number[], dlen = PAGE): number => xbzrleDecode(Uint8Array.from(bytes), new Uint8Array(dlen));
  t.equal(dec([]), 0, 'empty input decodes to nothing');
  t.equal(dec([0x00, 0x01, 0xaa]), 1, 'the first zrun may be 0');
  t.equal(dec([0x80, 0x00, 0x01, 0xaa]), 1, 'a 2-byte 0 as the first zrun');
  t.equal(dec([0x85, 0x00, 0x01, 0xaa]), 6, 'non-canonical 2-byte varint accepted');
  t.equal(dec([0x00, 0x01, 0xaa, 0x00, 0x01, 0xbb]), -1, 'a later zrun of 0');
  t.equal(dec([0x00, 0x01, 0xaa, 0x80, 0x00, 0x01, 0xbb]), -1, 'a later 2-byte zrun of 0');
  t.equal(dec([0x05, 0x00, 0x00]), -1, 'nzrun of 0');
  t.equal(dec([0x05, 0x80, 0x00, 0x01]), -1, '2-byte nzrun of 0');
  t.equal(dec([0x05]), -1, 'one byte left before a zrun');
  t.equal(dec([0x05, 0x01]), -1, 'one byte left before an nzrun');
  t.equal(dec([0x05, 0x01, 0xaa]), 6, 'nzrun with its literal is enough');
  t.equal(dec([0x00, 0x01, 0xaa, 0x05]), -1, 'a lone trailing byte');
  t.equal(dec([0x00, 0x01, 0xaa, 0x05, 0x01]), -1, 'a trailing zrun + 1 byte');
  t.equal(dec([0x80, 0x80, 0x01, 0x01, 0xaa]), -1, '3-byte zrun varint');
  t.equal(dec([0x05, 0x80, 0x80, 0x01, 0xaa]), -1, '3-byte nzrun varint');
  t.equal(dec([0xff, 0xff]), -1, 'second varint byte with bit 7');
  t.equal(dec([0x81, 0x20, 0x01, 0xaa]), -1, 'zrun 4097 passes the page');
  t.equal(dec([0x80, 0x20, 0x01, 0xaa]), -1, 'zrun 4096 then any literal passes the page');
  t.equal(dec([0xff, 0x1f, 0x01, 0xaa]), PAGE, 'zrun 4095 + 1 literal fills the page');
  t.equal(dec([0xff, 0x1f, 0x02, 0xaa, 0xbb]), -1, 'zrun 4095 + 2 literals');
  t.equal(dec([0xff, 0x7f, 0x01, 0xaa]), -1, 'max varint 0x3fff');
  t.equal(dec([0x00, 0x05, 1, 2, 3]), -1, 'literals past the input');
  t.equal(dec([0x00, 0x05, 1, 2, 3, 4, 5]), 5);
  t.equal(dec([0x02, 0x02, 1, 2], 4), 4, 'dlen is dst.length');
  t.equal(dec([0x02, 0x03, 1, 2, 3], 4), -1);
  // a full-page literal: 0 + 4096 bytes
  const full = new Uint8Array(3 + PAGE);
  full.set([0x00, 0x80, 0x20]);
  full.fill(7, 3);
  const dst = new Uint8Array(PAGE);
  t.equal(xbzrleDecode(full, dst), PAGE);
  t.ok(dst.every((b) => b === 7));
  t.equal(xbzrleDecode(full.subarray(0, full.length - 1), new Uint8Array(PAGE)), -1, 'one literal short');
});

t.test('decoder: random inputs behave exactly like QEMU\'s', async (t) => {
  const r = rng(5);
  let bad = 0;
  let accepted = 0;
  for (let n = 0; n < 20000; n++) {
    const len = (r() * 24) | 0;
    const src = new Uint8Array(len);
    for (let i = 0; i < len; i++) {
      // bias towards small values so that some inputs are valid
      src[i] = r() < 0.6 ? (r() * 8) | 0 : (r() * 256) | 0;
    }
    const dlen = r() < 0.5 ? PAGE : 1 + ((r() * 32) | 0);
    const seed = randomPage(r).subarray(0, dlen);
    const a = Uint8Array.from(seed);
    const b = Uint8Array.from(seed);
    const got = xbzrleDecode(src, a);
    const want = refDecode(src, b);
    if (got !== want || (want >= 0 && !bytesEqual(a, b))) bad++;
    if (want > 0) accepted++;
  }
  t.equal(bad, 0);
  t.ok(accepted > 500, `${accepted} random inputs were valid`);
});
