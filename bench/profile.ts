/**
 * Where the time goes, for the throughput rows of issue 14's targets: for each row one migration
 * qmigd → qmigd with both ends under --cpu-prof (each JavaScript thread's self time per
 * function) and, where perf is installed, a perf record of each process (every thread, kernel
 * included), then the same row QEMU 7.2 → QEMU 7.2 under perf. Both at the bench's
 * settings (bench/migration.ts's scenarios: qmigd as 7.2, max-bandwidth unlimited). Prints per
 * end the CPU time it used, what kind of work perf saw it in (the kernel, memory copies, V8's
 * compiler, its built-ins, compiled JavaScript, ...) and the top symbols, and per JavaScript
 * thread its busy time and top functions while the migration ran (from `migrate` until the
 * destination is done: not the start-up before it). The files stay in DIR.
 *
 *   node dist/bench/profile.js [--out DIR] [SIZE=1G] [ROW...]   ROW: single thread prealloc multifd zero
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
  thread: ['qmigd-random-paused-thread', 'qemu-random-paused'],
  prealloc: ['qmigd-random-paused-prealloc', 'qemu-random-paused-prealloc'],
  multifd: ['qmigd-random-paused-multifd2', 'qemu-random-paused-multifd2'],
  zero: ['qmigd-zero-paused', 'qemu-zero-paused'],
};

interface CpuProfile {
  startTime: number;
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples: number[];
  timeDeltas: number[];
}

/** CLOCK_MONOTONIC in microseconds: the clock of a .cpuprofile's timestamps (V8's TimeTicks on Linux). */
const monotonicUs = (): number => Number(process.hrtime.bigint() / 1000n);

/** From `migrate` until the destination is done, in monotonicUs(). */
interface Window {
  start: number;
  end: number;
}

/**
 * A .cpuprofile's busy time (all but "(idle)") within `window`, the thread's time in it, and its
 * top `n` functions by self time there.
 */
function summarizeCpuProfile(path: string, n: number, window: Window): { busyMs: number; totalMs: number; top: string[][] } {
  const prof = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  const byId = new Map(prof.nodes.map((x) => [x.id, x]));
  const self = new Map<string, number>();
  let total = 0;
  let idle = 0;
  let at = prof.startTime;
  prof.samples.forEach((id, i) => {
    at += prof.timeDeltas[i] ?? 0;
    if (at < window.start || at > window.end) return;
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

/**
 * perf record -g of each end (all its threads, a file each), where perf is installed, from
 * `migrate` until the destination is done; that window is noted in `window`.
 */
function profileAround(window: Window, file?: (end: 'source' | 'destination') => string): AroundMigration {
  return async (src: End, dst: End) => {
    const record = (end: 'source' | 'destination', pid: number) =>
      spawn('perf', ['record', '-q', '-g', '-F', String(PERF_HZ), '-o', file!(end), '-p', String(pid)], { stdio: 'ignore' });
    const perfs = file ? [record('source', src.pid), record('destination', dst.pid)] : [];
    if (file) await sleep(300); // perf attaches
    window.start = monotonicUs();
    return async () => {
      window.end = monotonicUs();
      await Promise.all(perfs.map((p) => new Promise((r) => {
        p.on('exit', r);
        p.kill('SIGINT');
      })));
    };
  };
}

/**
 * The kinds of work perf's symbols are, first match wins: what separates a JavaScript engine's
 * own costs (compiling, its built-ins, its runtime, collecting garbage) from the work any
 * migration does (the kernel's socket and page-fault paths, memory copies).
 */
const KINDS: Array<[kind: string, test: RegExp]> = [
  ['kernel', /\[kernel\.kallsyms\]/],
  ['memory copies (libc memmove/memset/memcmp)', /libc[^ ]* .*(memmove|memcpy|memset|memcmp)/],
  ['V8: optimizing compiler', /v8::internal::(compiler|maglev|turboshaft)::|Zone|RegisterAllocat|InstructionSelector|LiveRange|Pipeline/],
  ['V8: garbage collector', /v8::internal::(heap::|Heap|Scavenge|Mark|Sweep|Evacuat|Concurrent)|GCTracer/],
  ['V8: built-ins', /Builtins_/],
  ['compiled JavaScript', /\[JIT\] tid|\[unknown\]|perf-\d+\.map/],
  ['V8: its CPU profiler (the measurement)', /CpuProfiler|ProfileNode|CodeEntry|InstructionStreamMap|SamplingEventsProcessor|CpuSampler|ProfilerSignal|ProfileTree|CodeMap|PerfBasicLogger|ProfilerListener/],
  ['V8: runtime and API', /v8::|V8/],
  ['node and libuv', /node::|uv_|uv__/],
  ['the program itself (QEMU)', /qemu-system/],
  ['other libraries', /\.so/],
];

/** perf's samples of a recording (≈ ms) by KINDS, most first. */
function perfKinds(file: string): string {
  const r = spawnSync('perf', ['report', '-i', file, '-n', '--no-children', '--sort', 'dso,sym', '--stdio', '-g', 'none'], { encoding: 'utf8', maxBuffer: 256 << 20 });
  const ms = new Map<string, number>();
  let total = 0;
  for (const line of r.stdout.split('\n')) {
    const m = /^\s+[\d.]+%\s+(\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const samples = Number(m[1]);
    const kind = KINDS.find(([, test]) => test.test(m[2]!))?.[0] ?? 'other';
    ms.set(kind, (ms.get(kind) ?? 0) + samples);
    total += samples;
  }
  return [...ms.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([kind, n]) => `    ${String(n).padStart(6)} ms  ${((n / total) * 100).toFixed(1).padStart(5)} %  ${kind}`)
    .join('\n');
}

/** perf report of a recording: its top 15 symbols by self time, ms (samples) and share, each of 1 % or more. */
function printTopSymbols(end: string, file: string): void {
  const r = spawnSync('perf', ['report', '-i', file, '-n', '--no-children', '--sort', 'dso,sym', '--stdio', '-g', 'none', '--percent-limit', '1'], { encoding: 'utf8', maxBuffer: 64 << 20 });
  console.log(`-- ${end}, perf, top symbols:`);
  console.log(r.stdout.split('\n').filter((l) => /^\s+\d/.test(l)).slice(0, 15).join('\n'));
}

/**
 * `s` profiled; prints what each end spent its time on. Two migrations for qmigd: one under
 * perf alone, whose kinds of work are not skewed by V8's profiler (which makes the compiler keep
 * source positions and costs samples of its own; compiled JavaScript shows there as unknown
 * code), then one under --cpu-prof (and perf, for the JavaScript's symbols) for its functions.
 */
export async function profileScenario(s: Scenario, ctx: MigrationContext, outDir: string, label = s.id): Promise<void> {
  const qmigd = s.impl === 'qmigd';
  const perf = hasPerf();
  const perfFile = (pass: string) => (end: string): string => join(outDir, `${s.id}${pass}-${end}.perf.data`);
  // No RAM check: its digests would be half of the JavaScript profiles (the bench checks the RAM).
  if (perf) {
    const { run } = await migrateOnce(s, ctx, false, profileAround({ start: 0, end: Infinity }, perfFile('')));
    console.log(`\n== ${label}: ${run.status}, total-time ${run.totalTimeMs} ms (${fmt(run.mibPerSec, 0)} MiB/s), CPU used from migrate to the end: source ${fmt(run.srcCpuMs, 0)} ms, destination ${fmt(run.dstCpuMs, 0)} ms`);
    for (const end of ['source', 'destination'] as const) {
      console.log(`-- ${end}, perf (all threads; samples ≈ ms), by kind of work:`);
      console.log(perfKinds(perfFile('')(end)));
    }
  }
  if (!qmigd) {
    if (perf) for (const end of ['source', 'destination'] as const) printTopSymbols(end, perfFile('')(end));
    return;
  }
  const cpuDir = (end: string): string => join(outDir, `${s.id}-${end}-cpuprof`);
  const cpuArgs = (end: string): string[] => ['--cpu-prof', `--cpu-prof-dir=${cpuDir(end)}`, '--cpu-prof-interval=200', '--perf-basic-prof-only-functions'];
  for (const end of ['source', 'destination']) mkdirSync(cpuDir(end), { recursive: true });
  const window: Window = { start: 0, end: Infinity };
  const profiled: Scenario = { ...s, srcNodeArgs: cpuArgs('source'), dstNodeArgs: cpuArgs('destination') };
  const { run } = await migrateOnce(profiled, ctx, false, profileAround(window, perf ? perfFile('-cpuprof') : undefined));
  console.log(`== ${label} again, under V8's profiler too: ${run.status}, total-time ${run.totalTimeMs} ms, CPU source ${fmt(run.srcCpuMs, 0)} ms, destination ${fmt(run.dstCpuMs, 0)} ms`);
  for (const end of ['source', 'destination'] as const) {
    if (perf) printTopSymbols(end, perfFile('-cpuprof')(end));
    for (const file of readdirSync(cpuDir(end)).filter((f) => f.endsWith('.cpuprofile')).sort()) {
      const { busyMs, totalMs, top } = summarizeCpuProfile(join(cpuDir(end), file), 12, window);
      console.log(`-- ${end}, --cpu-prof ${file} (one JavaScript thread, during the migration): busy ${busyMs.toFixed(0)} of ${totalMs.toFixed(0)} ms; top functions by self time:`);
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
