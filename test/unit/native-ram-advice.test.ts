/**
 * The native addon's RAM advice (src/native/ram-advice.ts): madvise over the 2 MiB-aligned
 * interior of a SharedArrayBuffer segment, seen where the kernel shows it, in the VmFlags of
 * /proc/self/smaps (hg: MADV_HUGEPAGE, nh: MADV_NOHUGEPAGE) and, once the memory is touched,
 * in AnonHugePages; and the daemon's --ram-hugepages applying it to its guest RAM.
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { adviseHugePages } from '../../src/native/ram-advice.js';
import { startDaemon } from '../helpers/daemon.js';

const MiB = 1 << 20;

interface Mapping {
  sizeKiB: number;
  anonHugeKiB: number;
  flags: string[];
}

function mappings(pid: number | 'self'): Mapping[] {
  const out: Mapping[] = [];
  let cur: Mapping | undefined;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) out.push((cur = { sizeKiB: 0, anonHugeKiB: 0, flags: [] }));
    else if (cur && line.startsWith('Size:')) cur.sizeKiB = Number(/\d+/.exec(line)![0]);
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
