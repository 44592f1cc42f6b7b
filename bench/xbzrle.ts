/**
 * XBZRLE encode and decode throughput of the built codec (dist/src/migration/ram/xbzrle.js), on
 * PAGES 4 KiB pages (more than a CPU cache holds): the old pages random, the new ones
 *  - "delta": each a copy of its old page with 16–64 bytes changed, in 1–4 runs at random places
 *    (every changed byte really differs);
 *  - "identical": equal to the old page (encode finds nothing: a dirty page rewritten unchanged).
 * Pages are views into two large buffers (the sender's cache and guest RAM), made before timing.
 * Encode is xbzrleEncode(old, new, out, 4096) as QEMU's save_xbzrle_page calls it; decode applies
 * each encoding to a copy of the old page. Each is timed over whole passes for at least
 * MIN_MS after a warm-up pass; MB/s counts page bytes (4096 per page, 1 MB = 10^6 bytes).
 * The first pass is checked: decode(encode(page)) is the new page.
 *
 * Run by bench/run.ts, or alone: node dist/bench/xbzrle.js
 */
import { randomFillSync } from 'node:crypto';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { xbzrleDecode, xbzrleEncode } from '../src/migration/ram/xbzrle.js';
import { rng } from '../src/rng.js';
import { fmt, PAGE, table } from './common.js';

const PAGES = 16384;
const MIN_MS = 1000;

export interface XbzrleRow {
  scenario: 'delta' | 'identical';
  description: string;
  pages: number;
  meanEncodedBytes: number;
  encodeMBps: number;
  encodePagesPerSec: number;
  /** Undefined where nothing is sent (identical pages). */
  decodeMBps?: number;
  decodePagesPerSec?: number;
}

function views(buf: Buffer, pages: number, size = PAGE): Buffer[] {
  return Array.from({ length: pages }, (_, i) => buf.subarray(i * size, (i + 1) * size));
}

/** Runs `pass` (one pass over every page) for at least MIN_MS; returns passes per second. */
function timed(pass: () => void): number {
  pass(); // warm-up
  let passes = 0;
  const t0 = performance.now();
  let elapsed = 0;
  do {
    pass();
    passes++;
    elapsed = performance.now() - t0;
  } while (elapsed < MIN_MS || passes < 3);
  return passes / (elapsed / 1000);
}

function scenario(kind: 'delta' | 'identical'): XbzrleRow {
  const next = rng(kind === 'delta' ? 0x5eed : 0x1d);
  const oldBuf = randomFillSync(Buffer.alloc(PAGES * PAGE));
  const curBuf = Buffer.from(oldBuf);
  if (kind === 'delta') {
    for (let p = 0; p < PAGES; p++) {
      const total = 16 + Math.floor(next() * 49); // 16..64 bytes
      const runs = 1 + Math.floor(next() * 4); // 1..4 runs
      let left = total;
      for (let r = 0; r < runs; r++) {
        const len = r === runs - 1 ? left : Math.max(1, Math.floor(total / runs));
        left -= len;
        const at = p * PAGE + Math.floor(next() * (PAGE - len));
        for (let j = 0; j < len; j++) curBuf[at + j] = oldBuf[at + j]! ^ (1 + Math.floor(next() * 255));
        if (left <= 0) break;
      }
    }
  }
  const olds = views(oldBuf, PAGES);
  const curs = views(curBuf, PAGES);

  // Encode once into one buffer (a page's encoding never exceeds PAGE here: 64 bytes changed).
  const encBuf = Buffer.alloc(PAGES * PAGE);
  const outs = views(encBuf, PAGES);
  const lens = new Int32Array(PAGES);
  for (let p = 0; p < PAGES; p++) {
    lens[p] = xbzrleEncode(olds[p]!, curs[p]!, outs[p]!, PAGE);
    if (lens[p]! < 0 || (kind === 'identical') !== (lens[p] === 0)) throw new Error(`xbzrle: page ${p} encoded to ${lens[p]}`);
  }
  const encs = outs.map((o, p) => o.subarray(0, lens[p]));
  const dstBuf = Buffer.from(oldBuf);
  const dsts = views(dstBuf, PAGES);
  if (kind === 'delta') {
    for (let p = 0; p < PAGES; p++) {
      if (xbzrleDecode(encs[p]!, dsts[p]!) < 0) throw new Error(`xbzrle: page ${p} did not decode`);
    }
    if (!dstBuf.equals(curBuf)) throw new Error('xbzrle: decode(encode(page)) differs from the page');
  }

  let sink = 0;
  const encodeRate = timed(() => {
    for (let p = 0; p < PAGES; p++) sink += xbzrleEncode(olds[p]!, curs[p]!, outs[p]!, PAGE);
  });
  let decodeRate: number | undefined;
  if (kind === 'delta') {
    decodeRate = timed(() => {
      for (let p = 0; p < PAGES; p++) sink += xbzrleDecode(encs[p]!, dsts[p]!);
    });
  }
  if (sink === -1) console.log(''); // keep the loops' results alive
  let encodedBytes = 0;
  for (let p = 0; p < PAGES; p++) encodedBytes += lens[p]!;
  return {
    scenario: kind,
    description: kind === 'delta' ? '16–64 bytes changed per page, in 1–4 runs' : 'identical pages (nothing to send)',
    pages: PAGES,
    meanEncodedBytes: encodedBytes / PAGES,
    encodeMBps: (encodeRate * PAGES * PAGE) / 1e6,
    encodePagesPerSec: encodeRate * PAGES,
    decodeMBps: decodeRate === undefined ? undefined : (decodeRate * PAGES * PAGE) / 1e6,
    decodePagesPerSec: decodeRate === undefined ? undefined : decodeRate * PAGES,
  };
}

export function xbzrleBench(): XbzrleRow[] {
  const rows = [scenario('delta'), scenario('identical')];
  console.log('');
  console.log(`XBZRLE (built codec, in the benchmark's process), ${PAGES} pages of random data (${(PAGES * PAGE) >> 20} MiB), each timed for >= ${MIN_MS} ms; MB/s of page data (10^6 bytes)`);
  console.log('');
  table(
    ['pages', 'mean encoding, bytes/page', 'encode MB/s', 'encode pages/s', 'decode MB/s', 'decode pages/s'],
    rows.map((r) => [
      r.description,
      fmt(r.meanEncodedBytes),
      fmt(r.encodeMBps, 0),
      fmt(r.encodePagesPerSec / 1e6, 2) + ' M',
      r.decodeMBps === undefined ? '- (nothing sent)' : fmt(r.decodeMBps, 0),
      r.decodePagesPerSec === undefined ? '-' : fmt(r.decodePagesPerSec / 1e6, 2) + ' M',
    ]),
  );
  return rows;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  xbzrleBench();
}
