/**
 * How guest RAM is mapped, measured: qmigd → qmigd, RAM of random bytes, guest paused, one
 * channel, TCP 127.0.0.1 (bench/migration.ts's migrateOnce), with every end's --ram-hugepages
 * spelled out:
 *  - kernel: no madvise, the kernel's THP mode decides (qmigd before --ram-hugepages);
 *  - on, both ends / destination only: MADV_HUGEPAGE over the RAM segments, as QEMU advises;
 *  - off: MADV_NOHUGEPAGE (a contrast: in THP mode `madvise` it is what `kernel` gets anyway);
 *  - --mem-prealloc on the destination, with kernel and with on;
 *  - QEMU 7.2 → QEMU 7.2 at its defaults, the yardstick of the same minutes.
 * The variants alternate, round robin, so a slow spell of the machine (first-touch costs swing
 * hour to hour on this VM) hits them all, each round starting one variant later; compare the
 * medians. The first run of each is checked
 * (RAM digests).
 *
 *   node dist/bench/ram-mapping.js [SIZE=512M] [ROUNDS=7]
 *   node dist/bench/ram-mapping.js --profile DIR [SIZE]   (one migration per qmigd variant under
 *     bench/profile.ts's profiler; prints where each end spends its time)
 */
import { mkdirSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { makeTempDir } from '../src/cli/migration-pair.js';
import { parseSize } from '../src/cli/size.js';
import { fmt, median, MiB, progress, qemuVersion, sleep, table } from './common.js';
import { makeContext, migrateOnce, type MigrationContext, type MigrationRun, type Scenario } from './migration.js';
import { profileScenario } from './profile.js';

/**
 * QMIGD_BENCH_SETTLE_MS: a pause before every migration. This VM's balloon reports free 2 MiB
 * blocks to its host (virtio-balloon free page reporting, after about 2 s), which drops them;
 * touching them again costs a host fault each, which is what makes huge pages slow here. With a
 * pause of 3 s every run meets memory in that steady state, instead of the warm memory the run
 * before it freed.
 */
const SETTLE_MS = Number(process.env.QMIGD_BENCH_SETTLE_MS ?? 0);

interface Variant {
  id: string;
  label: string;
  scenario: Scenario;
}

const hp = (advice: string): string[] => ['--ram-hugepages', advice];

function variants(qemu: boolean): Variant[] {
  const base = { impl: 'qmigd', group: 'ram-mapping', content: 'random', paused: true, channels: 1 } as const;
  const list: Variant[] = [
    { id: 'kernel', label: 'qmigd, --ram-hugepages kernel (no advice) both ends', scenario: { ...base, id: 'kernel', srcArgs: hp('kernel'), dstArgs: hp('kernel') } },
    { id: 'on', label: 'qmigd, --ram-hugepages on both ends', scenario: { ...base, id: 'on', srcArgs: hp('on'), dstArgs: hp('on') } },
    { id: 'on-dst', label: 'qmigd, --ram-hugepages on destination only', scenario: { ...base, id: 'on-dst', srcArgs: hp('kernel'), dstArgs: hp('on') } },
    { id: 'on-src', label: 'qmigd, --ram-hugepages on source only', scenario: { ...base, id: 'on-src', srcArgs: hp('on'), dstArgs: hp('kernel') } },
    { id: 'off', label: 'qmigd, --ram-hugepages off both ends', scenario: { ...base, id: 'off', srcArgs: hp('off'), dstArgs: hp('off') } },
    { id: 'prealloc', label: 'qmigd, kernel, destination --mem-prealloc', scenario: { ...base, id: 'prealloc', prealloc: true, srcArgs: hp('kernel'), dstArgs: hp('kernel') } },
    { id: 'prealloc-on', label: 'qmigd, on both ends, destination --mem-prealloc', scenario: { ...base, id: 'prealloc-on', prealloc: true, srcArgs: hp('on'), dstArgs: hp('on') } },
  ];
  if (qemu) list.push({ id: 'qemu', label: 'QEMU 7.2 → QEMU 7.2 (defaults: THP advised)', scenario: { ...base, impl: 'qemu', id: 'qemu' } });
  return list;
}

async function measure(ctx: MigrationContext, rounds: number): Promise<void> {
  const list = variants(qemuVersion() !== undefined);
  const runs = new Map<string, MigrationRun[]>(list.map((v) => [v.id, []]));
  for (let round = 0; round < rounds; round++) {
    // Each round starts one variant later: which variant runs right after which (and gets the
    // memory the one before freed, not yet handed back to the host) changes from round to round.
    for (const v of [...list.slice(round % list.length), ...list.slice(0, round % list.length)]) {
      if (SETTLE_MS > 0) await sleep(SETTLE_MS);
      const done = runs.get(v.id)!;
      const check = !done.some((r) => r.status === 'completed');
      const { run } = await migrateOnce(v.scenario, ctx, check);
      done.push(run);
      progress(`round ${round + 1}/${rounds} ${v.id}: ${run.status}, total-time ${run.totalTimeMs} ms, dst CPU ${fmt(run.dstCpuMs, 0)} ms, verified ${run.verified}`);
      if (run.status !== 'completed') process.exitCode = 1;
    }
  }
  console.log('');
  console.log(`RAM mapping, ${ctx.size / MiB} MiB random RAM, paused, one channel, ${rounds} rounds round robin; median (each run)`);
  const rows = list.map((v) => {
    const ok = runs.get(v.id)!.filter((r) => r.status === 'completed');
    const each = (f: (r: MigrationRun) => number | undefined): string => ok.map((r) => fmt(f(r), 0)).join(' ');
    const med = (f: (r: MigrationRun) => number | undefined): string => fmt(median(ok.map((r) => f(r) ?? NaN)), 0);
    return [
      v.label,
      `${med((r) => r.totalTimeMs)} (${each((r) => r.totalTimeMs)})`,
      med((r) => r.mibPerSec),
      `${med((r) => r.srcCpuMs)} / ${med((r) => r.dstCpuMs)}`,
      `${fmt((Math.max(...ok.map((r) => r.dstPeakRss ?? 0)) / MiB), 0)}`,
      [...new Set(runs.get(v.id)!.map((r) => r.verified).filter((x) => x !== 'not checked'))].join('; '),
    ];
  });
  table(['variant', 'total-time ms', 'MiB/s', 'CPU ms src / dst', 'dst peak RSS MiB', 'RAM verified'], rows);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const profileAt = args.indexOf('--profile');
  const profileDir = profileAt >= 0 ? resolve(args.splice(profileAt, 2)[1]!) : undefined;
  const size = args[0] ? parseSize(args[0]) : 512 * MiB;
  const rounds = args[1] ? Number(args[1]) : 7;
  const dir = makeTempDir('qmigd-bench-ram-');
  try {
    const ctx = await makeContext(dir, size);
    if (profileDir) {
      mkdirSync(profileDir, { recursive: true });
      for (const v of variants(false).filter((x) => ['kernel', 'on', 'on-dst', 'prealloc'].includes(x.id))) await profileScenario(v.scenario, ctx, profileDir, v.label);
    } else {
      await measure(ctx, rounds);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
