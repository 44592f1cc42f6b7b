/**
 * The native addon's RAM advice (src/native/ram-advice.ts): madvise over the 2 MiB-aligned
 * interior of a SharedArrayBuffer segment, seen where the kernel shows it, in the VmFlags of
 * /proc/self/smaps (hg: MADV_HUGEPAGE, nh: MADV_NOHUGEPAGE) and, once the memory is touched,
 * in AnonHugePages; the daemon's --ram-hugepages applying it to its guest RAM; and regions
 * faulted in at once (MADV_POPULATE_WRITE), seen in the mapping's Rss, as a destination's guest
 * RAM does before it writes a page (GuestRam.willWrite()).
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { GuestRam } from '../../src/guest/ram.js';
import { RamLoader } from '../../src/migration/ram/ram-load.js';
import { RamFlag } from '../../src/migration/stream/constants.js';
import { StreamReader } from '../../src/migration/stream/reader.js';
import { ChunkSource } from '../helpers/chunk-source.js';
import { eager } from '../helpers/stream-differential.js';
import { adviseHugePages, populate } from '../../src/native/ram-advice.js';
import { startDaemon } from '../helpers/daemon.js';

const MiB = 1 << 20;

interface Mapping {
  sizeKiB: number;
  rssKiB: number;
  anonHugeKiB: number;
  flags: string[];
}

function mappings(pid: number | 'self'): Mapping[] {
  const out: Mapping[] = [];
  let cur: Mapping | undefined;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) out.push((cur = { sizeKiB: 0, rssKiB: 0, anonHugeKiB: 0, flags: [] }));
    else if (cur && line.startsWith('Size:')) cur.sizeKiB = Number(/\d+/.exec(line)![0]);
    else if (cur && line.startsWith('Rss:')) cur.rssKiB = Number(/\d+/.exec(line)![0]);
    else if (cur && line.startsWith('AnonHugePages:')) cur.anonHugeKiB = Number(/\d+/.exec(line)![0]);
    else if (cur && line.startsWith('VmFlags:')) cur.flags = line.slice('VmFlags:'.length).trim().split(/\s+/);
  }
  return out;
}

/** The mappings of exactly `bytes` that carry VmFlag `flag`. */
const flagged = (pid: number | 'self', flag: string, bytes: number): Mapping[] => mappings(pid).filter((m) => m.flags.includes(flag) && m.sizeKiB * 1024 === bytes);

const thpMode = (): string => /\[(\w+)\]/.exec(readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1] ?? 'unknown';

t.test('on: MADV_HUGEPAGE over the aligned interior, and the touched pages come as huge pages', async (t) => {
  const segment = Buffer.from(new SharedArrayBuffer(64 * MiB));
  t.equal(flagged('self', 'hg', 62 * MiB).length + flagged('self', 'hg', 64 * MiB).length, 0, 'no such advised mapping before');
  const r = adviseHugePages([segment], 'on');
  if (!('bytes' in r)) throw new Error(r.error);
  // calloc puts a header before the data, so the interior loses (at most) one huge page.
  t.ok(r.bytes === 62 * MiB || r.bytes === 64 * MiB, `advised ${r.bytes / MiB} MiB`);
  const advised = flagged('self', 'hg', r.bytes);
  t.equal(advised.length, 1, 'one mapping of exactly the advised size is flagged hg');
  t.equal(advised[0]!.anonHugeKiB, 0, 'untouched: no huge page yet');
  segment.fill(1);
  const after = flagged('self', 'hg', r.bytes)[0]!;
  if (thpMode() === 'never') t.equal(after.anonHugeKiB, 0, 'THP disabled system-wide: advice changes nothing');
  else t.ok(after.anonHugeKiB >= 2048, `touched: ${after.anonHugeKiB} KiB in huge pages`);
});

t.test('off: MADV_NOHUGEPAGE, and the touched pages stay 4 KiB', async (t) => {
  const segment = Buffer.from(new SharedArrayBuffer(32 * MiB));
  const r = adviseHugePages([segment], 'off');
  if (!('bytes' in r)) throw new Error(r.error);
  t.ok(r.bytes === 30 * MiB || r.bytes === 32 * MiB, `advised ${r.bytes / MiB} MiB`);
  segment.fill(1);
  const advised = flagged('self', 'nh', r.bytes);
  t.equal(advised.length, 1, 'one mapping of exactly the advised size is flagged nh');
  t.equal(advised[0]!.anonHugeKiB, 0, 'no huge pages');
});

t.test('kernel: no advice at all; a view without a whole huge page: nothing to advise', async (t) => {
  t.same(adviseHugePages([Buffer.from(new SharedArrayBuffer(8 * MiB))], 'kernel'), { bytes: 0 });
  t.same(adviseHugePages([Buffer.alloc(4096)], 'on'), { bytes: 0 });
});

t.test('qmigd --ram-hugepages on advises its guest RAM, and by default it does not', async (t) => {
  const size = 128 * MiB;
  for (const [args, flag, want] of [
    [['--ram-hugepages', 'on'], 'hg', 1],
    [['--ram-hugepages', 'off'], 'nh', 1],
    [[], 'hg', 0],
  ] as const) {
    const d = await startDaemon(['-m', String(size), '-S', ...args]);
    try {
      // The segment's interior: its size less at most one huge page.
      const found = mappings(d.proc.pid!).filter((m) => m.flags.includes(flag) && m.sizeKiB * 1024 >= size - 2 * MiB && m.sizeKiB * 1024 <= size);
      t.equal(found.length, want, `${args.join(' ') || 'no option'}: ${want} mapping of about ${size / MiB} MiB flagged ${flag}`);
    } finally {
      await d.stop();
    }
  }
});

t.test('--ram-hugepages takes on, off or kernel', async (t) => {
  await t.rejects(startDaemon(['--ram-hugepages', 'yes']), /--ram-hugepages: 'yes' is not one of on, off, kernel/);
});

/**
 * `segment` advised MADV_NOHUGEPAGE, so that it is faulted in by 4 KiB pages whatever the THP mode
 * and its interior is a mapping of its own: how to read that mapping's Rss (KiB).
 */
function watch(segment: Uint8Array): () => number {
  const r = adviseHugePages([segment], 'off');
  if (!('bytes' in r)) throw new Error(r.error);
  return () => {
    const found = flagged('self', 'nh', r.bytes);
    if (found.length !== 1) throw new Error(`${found.length} mappings of ${r.bytes} bytes flagged nh`);
    return found[0]!.rssKiB;
  };
}

t.test('populate: the pages of a range are faulted in at once, and their contents stay', async (t) => {
  const size = 48 * MiB;
  const segment = Buffer.from(new SharedArrayBuffer(size));
  const rss = watch(segment);
  segment[10 * MiB] = 7; // one page touched the usual way
  const before = rss();
  t.ok(before <= 8, `before: ${before} KiB resident`);
  t.equal(populate(segment, 16 * MiB, 8 * MiB), true, 'populated');
  const after = rss();
  t.ok(after - before >= 8188 && after - before <= 8192, `8 MiB more resident: ${after - before} KiB`);
  t.equal(segment[10 * MiB], 7, 'a page written before keeps its byte');
  t.ok(segment.subarray(16 * MiB, 24 * MiB).every((b) => b === 0), 'the populated pages read as zero');
  t.throws(() => populate(segment, size - 4096, 8192), TypeError, 'a range past the view is refused');
});

t.test('GuestRam.willWrite(): the first write into a 2 MiB region faults the whole region in, once', async (t) => {
  const ram = new GuestRam('pc.ram', 40 * MiB);
  const rss = watch(ram.segments[0]!);
  const before = rss();
  ram.willWrite(1000); // region 1: pages 512..1023
  const one = rss() - before;
  t.ok(one >= 2040 && one <= 2048, `one region resident: ${one} KiB`);
  t.same([...ram.faultedIn!.subarray(0, 3)], [0, 1, 0], 'the region is marked');
  ram.willWrite(600); // the same region: nothing more
  t.equal(rss() - before, one, 'again in that region: nothing more');
  ram.willWrite(1024 + 3); // region 2
  const two = rss() - before - one;
  t.ok(two >= 2040 && two <= 2048, `another region, and only it: ${two} KiB`);
  const preallocated = new GuestRam('pc.ram', 4 * MiB);
  preallocated.prealloc();
  t.ok(preallocated.faultedIn!.every((b) => b === 1), '--mem-prealloc: every region counts as faulted in');
});

t.test('a destination backs the regions its pages go to, and none for zero pages', async (t) => {
  // Regions 0..17; 1..16 lie wholly in the watched interior. Over 32 MiB, glibc's largest mmap
  // threshold, so that the memory is a fresh mapping: a 16 MiB one once came from memory freed
  // earlier in this process, already resident, and grew by nothing.
  const ram = new GuestRam('pc.ram', 36 * MiB); // not 40: the test above watches one of that size
  const rss = watch(ram.segments[0]!);
  const before = rss();
  t.ok(before <= 8, `before: ${before} KiB resident`);
  // ZERO records for every page of regions 0 and 1, then one PAGE record into region 3.
  const records: Buffer[] = [];
  for (let page = 0; page < 1024; page++) {
    const head = Buffer.alloc(8);
    head.writeUInt32BE(page * 4096 + RamFlag.ZERO + (page ? RamFlag.CONTINUE : 0), 4);
    records.push(head, ...(page ? [] : [Buffer.from([6, ...Buffer.from('pc.ram')])]), Buffer.from([0]));
  }
  const pageHead = Buffer.alloc(8);
  pageHead.writeUInt32BE(3 * 512 * 4096 + RamFlag.PAGE + RamFlag.CONTINUE, 4);
  const eos = Buffer.alloc(8);
  eos.writeUInt32BE(RamFlag.EOS, 4);
  records.push(pageHead, Buffer.alloc(4096, 9), eos);
  await new RamLoader(ram).load(new StreamReader(new ChunkSource([Buffer.concat(records)], eager)), 4);
  t.same([...ram.faultedIn!], Array.from({ length: 18 }, (_, i) => (i === 3 ? 1 : 0)), 'only the region a page was written to is marked');
  const grew = rss() - before;
  t.ok(grew >= 2040 && grew <= 2048, `one region resident: ${grew} KiB`);
  t.equal(ram.segments[0]![3 * 512 * 4096], 9, 'and the page is there');
});
