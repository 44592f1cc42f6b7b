/**
 * Where the time goes, for the throughput rows of issue 14's targets: for each row one migration
 * qmigd → qmigd with both ends under --cpu-prof (each JavaScript thread's self time per
 * function) and, where perf is installed, a perf record of each process (every thread, kernel
 * included), then the same row QEMU 7.2 → QEMU 7.2 under perf. Both at the bench's
 * settings (bench/migration.ts's scenarios: qmigd as 7.2, max-bandwidth unlimited). Prints per
 * end the CPU time it used, where perf saw it (by DSO: kernel, node's own code, JIT-compiled
 * JavaScript, libc) and the top symbols, and per JavaScript thread its busy time and top
 * functions. The files stay in DIR.
 *
 *   node dist/bench/profile.js [--out DIR] [SIZE=1G] [ROW...]   ROW: single prealloc multifd zero
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { makeTempDir } from '../src/cli/migration-pair.js';
import { parseSize } from '../src/cli/size.js';
import { fmt, MiB, qemuVersion, sleep, table } from './common.js';
import type { End } from './ends.js';
import { makeContext, migrateOnce, scenarios, type AroundMigration, type MigrationContext, type Scenario } from './migration.js';

/** Issue 14's throughput rows: the qmigd scenario and its QEMU counterpart. */
const ROWS: Record<string, [string, string]> = {
  single: ['qmigd-random-paused', 'qemu-random-paused'],
  prealloc: ['qmigd-random-paused-prealloc', 'qemu-random-paused-prealloc'],
  multifd: ['qmigd-random-paused-multifd2', 'qemu-random-paused-multifd2'],
  zero: ['qmigd-zero-paused', 'qemu-zero-paused'],
};

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples: number[];
  timeDeltas: number[];
}

/** A .cpuprofile's busy time (all but "(idle)") and its top `n` functions by self time. */
function summarizeCpuProfile(path: string, n: number): { busyMs: number; totalMs: number; top: string[][] } {
  const prof = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  const byId = new Map(prof.nodes.map((x) => [x.id, x]));
  const self = new Map<string, number>();
  let total = 0;
  let idle = 0;
  prof.samples.forEach((id, i) => {
    const f = byId.get(id)!.callFrame;
    const name = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/dist\//, '')}${f.url ? `:${f.lineNumber + 1}` : ''}`;
    const dt = (prof.timeDeltas[i + 1] ?? 0) / 1000;
    self.set(name, (self.get(name) ?? 0) + dt);
    total += dt;
    if (f.functionName === '(idle)') idle += dt;
  });
  const top = [...self.entries()]
    .filter(([name]) => !name.startsWith('(idle)'))
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([name, ms]) => [name, ms.toFixed(0), `${((ms / (total - idle)) * 100).toFixed(1)}%`]);
  return { busyMs: total - idle, totalMs: total, top };
}

function hasPerf(): boolean {
  return spawnSync('perf', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Samples per second per busy thread: a sample is about a millisecond of CPU. */
const PERF_HZ = 999;

/** perf record -g of each end (all its threads, a file each) from `migrate` until the destination is done. */
function perfAround(file: (end: 'source' | 'destination') => string): AroundMigration {
  return async (src: End, dst: End) => {
    const record = (end: 'source' | 'destination', pid: number) =>
      spawn('perf', ['record', '-q', '-g', '-F', String(PERF_HZ), '-o', file(end), '-p', String(pid)], { stdio: 'ignore' });
    const perfs = [record('source', src.pid), record('destination', dst.pid)];
    await sleep(300); // perf attaches
    return async () => {
      await Promise.all(perfs.map((p) => new Promise((r) => {
        p.on('exit', r);
        p.kill('SIGINT');
      })));
    };
  };
}

/** perf report of a recording: self time by `sort` (dso; dso,sym), ms (samples) and share, lines of 1 % and more. */
function perfReport(file: string, sort: string, lines: number): string {
  const r = spawnSync('perf', ['report', '-i', file, '-n', '--no-children', '--sort', sort, '--stdio', '-g', 'none', '--percent-limit', '1'], { encoding: 'utf8', maxBuffer: 64 << 20 });
  return r.stdout.split('\n').filter((l) => /^\s+\d/.test(l)).slice(0, lines).join('\n');
}

/** One migration of `s` profiled; prints what each end spent its time on. */
export async function profileScenario(s: Scenario, ctx: MigrationContext, outDir: string, label = s.id): Promise<void> {
  const cpuDir = (end: string): string => join(outDir, `${s.id}-${end}-cpuprof`);
  const cpuArgs = (end: string): string[] => ['--cpu-prof', `--cpu-prof-dir=${cpuDir(end)}`, '--cpu-prof-interval=200', '--perf-basic-prof-only-functions'];
  const qmigd = s.impl === 'qmigd';
  if (qmigd) for (const end of ['source', 'destination']) mkdirSync(cpuDir(end), { recursive: true });
  const profiled: Scenario = qmigd ? { ...s, srcNodeArgs: cpuArgs('source'), dstNodeArgs: cpuArgs('destination') } : s;
  const perfFile = (end: string): string => join(outDir, `${s.id}-${end}.perf.data`);
  const perf = hasPerf() ? perfAround(perfFile) : undefined;
  // No RAM check: its digests would be half of the JavaScript profiles (the bench checks the RAM).
  const { run } = await migrateOnce(profiled, ctx, false, perf);
  console.log(`\n== ${label}: ${run.status}, total-time ${run.totalTimeMs} ms (${fmt(run.mibPerSec, 0)} MiB/s), CPU used from migrate to the end: source ${fmt(run.srcCpuMs, 0)} ms, destination ${fmt(run.dstCpuMs, 0)} ms`);
  for (const end of ['source', 'destination'] as const) {
    if (perf) {
      console.log(`-- ${end}, perf (all threads; samples ≈ ms), self time by DSO:`);
      console.log(perfReport(perfFile(end), 'dso', 8));
      console.log(`-- ${end}, perf, top symbols:`);
      console.log(perfReport(perfFile(end), 'dso,sym', 15));
    }
    if (!qmigd) continue;
    for (const file of readdirSync(cpuDir(end)).filter((f) => f.endsWith('.cpuprofile')).sort()) {
      const { busyMs, totalMs, top } = summarizeCpuProfile(join(cpuDir(end), file), 12);
      console.log(`-- ${end}, --cpu-prof ${file} (one JavaScript thread, whole life): busy ${busyMs.toFixed(0)} of ${totalMs.toFixed(0)} ms; top functions by self time:`);
      table(['function', 'ms', 'of busy'], top);
    }
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const outAt = args.indexOf('--out');
  const outDir = resolve(outAt >= 0 ? args.splice(outAt, 2)[1]! : makeTempDir('qmigd-profile-'));
  const size = args[0] && /^\d/.test(args[0]) ? parseSize(args.shift()!) : 1 << 30;
  const rows = args.length ? args : Object.keys(ROWS);
  const all = scenarios();
  const dir = makeTempDir('qmigd-profile-ram-');
  mkdirSync(outDir, { recursive: true });
  console.log(`profiles of ${rows.join(', ')}; ${size / MiB} MiB guest; files in ${outDir}; perf ${hasPerf() ? 'installed' : 'not installed (JavaScript profiles only)'}`);
  try {
    const ctx = await makeContext(dir, size);
    for (const row of rows) {
      const ids = ROWS[row];
      if (!ids) throw new Error(`unknown row ${row}: one of ${Object.keys(ROWS).join(' ')}`);
      for (const id of ids) {
        const s = all.find((x) => x.id === id)!;
        if (s.impl === 'qemu' && !qemuVersion()) continue;
        await profileScenario(s, ctx, outDir, `${row}: ${id}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
