/**
 * `npm run bench`: every benchmark in one process tree, then the summary against the targets of
 * the issue "Performance: migrate faster than QEMU", and bench/results.json with the same
 * numbers. Prints numbers; never passes or fails on them (the exit status is non-zero only when
 * a benchmark could not run at all).
 *
 *  1. idle QMP latency (qmp-idle.ts)
 *  2. the transport's limit: a raw 1 GiB pump between two Node processes (pump.ts), once at the
 *     start of each round of
 *  3. migrations qmigd → qmigd and QEMU 7.2 → QEMU 7.2: random and all-zero RAM, paused and
 *     running, single channel and multifd; QMP latency during them; peak RSS (migration.ts)
 *  4. XBZRLE codec throughput (xbzrle.ts)
 *  5. COLO checkpoints and failover (colo.ts)
 *  6. what hostile QMP clients cost: memory, and the other clients' latency (qmp-abuse.ts)
 *  7. start-up as libvirt sees it, qmigd-qemu beside QEMU 7.2 and a bare Node process (startup.ts)
 *
 * Environment: QMIGD_BENCH_REPEATS (rounds of pump + migrations, default 5; after
 * 3 rounds of migrations no further round starts once QMIGD_BENCH_MIGRATION_BUDGET_S, default
 * 170, have passed, to keep the whole run near 5 minutes on a busy machine),
 * QMIGD_BENCH_SIZE (guest RAM, default 1G), QMIGD_BENCH_COLO=0 to leave COLO out.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { makeTempDir, writeRandomFile } from '../src/cli/migration-pair.js';
import { parseSize } from '../src/cli/size.js';
import { coloBench, type ColoResult } from './colo.js';
import { attempt, cpuBusy, fmt, machine, otherCpuMeter, median, MiB, progress, sha256File, sha256Zeros, table, type Quantiles } from './common.js';
import { MAX_BANDWIDTH, migrationBench, SAMPLE_EVERY_MS, WORKLOAD, writeZeroFile, type ScenarioResult } from './migration.js';
import { pumpOnce, pumpResult, type PumpResult, type PumpRun } from './pump.js';
import { abuseBench, printAbuse, type AbuseResult } from './qmp-abuse.js';
import { IDLE_SAMPLES, idleQmpBench } from './qmp-idle.js';
import { startupBench, STARTUP_RUNS, type StartupRow } from './startup.js';
import { xbzrleBench, type XbzrleRow } from './xbzrle.js';

const RESULTS = resolve(import.meta.dirname, '..', '..', 'bench', 'results.json');
const REPEATS = Math.max(1, Number(process.env.QMIGD_BENCH_REPEATS ?? 5) || 5);
const SIZE = process.env.QMIGD_BENCH_SIZE ? parseSize(process.env.QMIGD_BENCH_SIZE) : 1 << 30;
const COLO = process.env.QMIGD_BENCH_COLO !== '0';
/** After 3 rounds, no further round of migrations starts once they have taken this long. */
const MIGRATION_BUDGET_MS = Number(process.env.QMIGD_BENCH_MIGRATION_BUDGET_S ?? 170) * 1000;

/** The issue's targets. */
const TARGET = {
  singleVsPump: 0.8,
  singleVsQemu: 1.5,
  zeroVsQemu: 1.0,
  xbzrleEncodeGBps: 1.0,
  qmpP99Ms: 2,
  qmpMaxMs: 50,
  rssOverRamMiB: 96,
};

interface Target {
  target: string;
  /** For the summary table's target column. */
  short?: string;
  measured: string;
  /** null: could not be measured. */
  met: boolean | null;
  result: string;
  value?: number;
  limit?: number;
}

/** A "value ≥ limit" target; `unit` formats both. */
function atLeast(target: string, value: number | undefined, limit: number, show: (v: number) => string, extra = ''): Target {
  if (value === undefined || !Number.isFinite(value)) return { target, measured: 'not measured', met: null, result: 'not measured' };
  const met = value >= limit;
  const result = met ? 'met' : `missed by ${show(limit - value)} (needs ${(limit / value).toFixed(2)}× what was measured)`;
  return { target, measured: `${show(value)}${extra}`, met, result, value, limit };
}

/** A "value ≤ limit" target. */
function atMost(target: string, value: number | undefined, limit: number, show: (v: number) => string, extra = ''): Target {
  if (value === undefined || !Number.isFinite(value)) return { target, measured: 'not measured', met: null, result: 'not measured' };
  const met = value <= limit;
  return { target, measured: `${show(value)}${extra}`, met, result: met ? 'met' : `missed by ${show(value - limit)}`, value, limit };
}

function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0 ? undefined : a / b;
}

interface ThroughputRow {
  migration: string;
  qmigdMiBps: number | null;
  qmigdVsPump: number | null;
  qemuMiBps: number | null;
  qemuVsPump: number | null;
  qmigdVsQemu: number | null;
  /** Why a side has no number. */
  qmigdNote?: string;
  qemuNote?: string;
}

function summary(
  size: number,
  pump: PumpResult | undefined,
  migrations: ScenarioResult[],
  idle: Quantiles | undefined,
  xbzrle: XbzrleRow[] | undefined,
  qemu: string | null,
): { targets: Target[]; throughput: ThroughputRow[] } {
  const throughput: ThroughputRow[] = [];
  const n = (v: number | undefined): number | null => (v === undefined || !Number.isFinite(v) ? null : v);
  const by = (id: string): ScenarioResult | undefined => migrations.find((r) => r.scenario.id === id);
  const p = pump?.mibPerSec;
  const ramMiB = size / MiB;
  const rounds = Math.max(0, ...migrations.map((r) => r.runs.length));
  const x = (v: number | undefined, d = 2): string => (v === undefined ? '-' : `${v.toFixed(d)}×`);
  const speed = (r: ScenarioResult | undefined, why?: string): string => {
    if (!r) return why ?? '-';
    if (r.mibPerSec !== undefined) return fmt(r.mibPerSec);
    if (r.notRun) return r.notRun;
    return r.runs.map((run) => `${run.status}${run.errorDesc ? `: ${run.errorDesc}` : ''}`).join('; ') || '-';
  };

  // Targets.
  const single = by('qmigd-random-paused')?.mibPerSec;
  const qemuSingle = by('qemu-random-paused')?.mibPerSec;
  const qemuSingleThpOff = by('qemu-random-paused-thpoff')?.mibPerSec;
  const pre = by('qmigd-random-paused-prealloc')?.mibPerSec;
  const qemuPre = by('qemu-random-paused-prealloc')?.mibPerSec;
  const zero = by('qmigd-zero-paused')?.mibPerSec;
  const qemuZero = by('qemu-zero-paused')?.mibPerSec;
  const qmp = by('qmigd-random-paused')?.qmp;
  const delta = xbzrle?.find((r) => r.scenario === 'delta');
  const ms = (v: number): string => `${v.toFixed(2)} ms`;
  const times = (v: number): string => `${v.toFixed(2)}×`;
  const targets: Target[] = [
    atLeast(`qmigd single channel (random, paused) ≥ ${TARGET.singleVsPump} × raw pump`, ratio(single, p), TARGET.singleVsPump, times, single !== undefined && p !== undefined ? ` (${fmt(single)} / ${fmt(p)} MiB/s)` : ''),
    atLeast(`qmigd single channel ≥ ${TARGET.singleVsQemu} × QEMU single channel`, ratio(single, qemuSingle), TARGET.singleVsQemu, times, single !== undefined && qemuSingle !== undefined ? ` (${fmt(single)} / ${fmt(qemuSingle)} MiB/s)` : ''),
    atLeast(`(control) qmigd single channel ≥ ${TARGET.singleVsQemu} × QEMU single channel with THP off`, ratio(single, qemuSingleThpOff), TARGET.singleVsQemu, times, single !== undefined && qemuSingleThpOff !== undefined ? ` (${fmt(single)} / ${fmt(qemuSingleThpOff)} MiB/s)` : ''),
    atLeast(`(pre-allocated destination RAM on both) qmigd single channel ≥ ${TARGET.singleVsPump} × raw pump`, ratio(pre, p), TARGET.singleVsPump, times, pre !== undefined && p !== undefined ? ` (${fmt(pre)} / ${fmt(p)} MiB/s)` : ''),
    atLeast(`(pre-allocated destination RAM on both) qmigd single channel ≥ ${TARGET.singleVsQemu} × QEMU single channel`, ratio(pre, qemuPre), TARGET.singleVsQemu, times, pre !== undefined && qemuPre !== undefined ? ` (${fmt(pre)} / ${fmt(qemuPre)} MiB/s)` : ''),
    atLeast('all-zero guest: qmigd ≥ QEMU', ratio(zero, qemuZero), TARGET.zeroVsQemu, times, zero !== undefined && qemuZero !== undefined ? ` (${fmt(zero)} / ${fmt(qemuZero)} MiB/s)` : ''),
    atLeast(`XBZRLE encode ≥ ${TARGET.xbzrleEncodeGBps} GB/s (16–64 changed bytes per page)`, delta ? delta.encodeMBps / 1000 : undefined, TARGET.xbzrleEncodeGBps, (v) => `${v.toFixed(2)} GB/s`),
    atMost(`QMP query-migrate p99 ≤ ${TARGET.qmpP99Ms} ms during the single-channel migration`, qmp?.p99, TARGET.qmpP99Ms, ms),
    atMost(`QMP query-migrate max ≤ ${TARGET.qmpMaxMs} ms during the single-channel migration`, qmp?.max, TARGET.qmpMaxMs, ms),
  ];
  targets[0]!.short = `qmigd ≥ ${TARGET.singleVsPump.toFixed(2)}× pump`;
  targets[1]!.short = `qmigd ≥ ${TARGET.singleVsQemu.toFixed(2)}× QEMU`;
  targets[2]!.short = `qmigd ≥ ${TARGET.singleVsQemu.toFixed(2)}× QEMU (THP off)`;
  targets[3]!.short = `qmigd ≥ ${TARGET.singleVsPump.toFixed(2)}× pump`;
  targets[4]!.short = `qmigd ≥ ${TARGET.singleVsQemu.toFixed(2)}× QEMU`;
  targets[5]!.short = `qmigd ≥ ${TARGET.zeroVsQemu.toFixed(2)}× QEMU`;
  for (const r of migrations.filter((m) => m.scenario.impl === 'qmigd' && (m.srcPeakRss !== undefined || m.dstPeakRss !== undefined))) {
    // One row per migration: the worse end decides.
    const ends = ([['source', r.srcPeakRss], ['destination', r.dstPeakRss]] as const).filter(([, v]) => v !== undefined) as Array<[string, number]>;
    const over = ends.map(([end, v]) => ({ end, mib: v / MiB, over: v / MiB - ramMiB }));
    const worst = over.reduce((a, b) => (b.over > a.over ? b : a));
    const t = atMost(`peak RSS ≤ RAM + ${TARGET.rssOverRamMiB} MiB: qmigd, ${r.label}`, worst.over, TARGET.rssOverRamMiB, (m) => `${m.toFixed(0)} MiB`);
    t.measured = over.map((o) => `${o.end} ${o.mib.toFixed(0)} MiB (RAM ${o.over >= 0 ? '+' : '−'} ${Math.abs(o.over).toFixed(0)})`).join(', ');
    if (!t.met) t.result += ` (${worst.end})`;
    targets.push(t);
  }
  console.log('');
  console.log(`## Summary: ${ramMiB} MiB guest over TCP 127.0.0.1, median of ${rounds} runs; MiB/s of guest RAM = ram.total / total-time (query-migrate)`);
  console.log('');
  const rows: string[][] = [];
  rows.push([
    `raw pump: Node → Node, TCP 127.0.0.1, ${pump ? pump.chunk / MiB : 1} MiB writes honouring back-pressure (the limit; median of ${pump?.runs.length ?? 0})`,
    pump ? fmt(p) : 'could not run', pump ? '1.00×' : '-', '-', '-', '-', '',
  ]);
  const noQemu = qemu ? undefined : 'QEMU not installed';
  const line = (label: string, q: ScenarioResult | undefined, e: ScenarioResult | undefined, goals: Target[], qemuWhy?: string): void => {
    const goal = goals.map((t) => `${t.short}: ${t.met === null ? 'not measured' : t.met ? 'met' : 'missed'}`).join('; ');
    rows.push([label, speed(q), x(ratio(q?.mibPerSec, p)), speed(e, qemuWhy), x(ratio(e?.mibPerSec, p)), x(ratio(q?.mibPerSec, e?.mibPerSec)), goal]);
    throughput.push({
      migration: label,
      qmigdMiBps: n(q?.mibPerSec),
      qmigdVsPump: n(ratio(q?.mibPerSec, p)),
      qemuMiBps: n(e?.mibPerSec),
      qemuVsPump: n(ratio(e?.mibPerSec, p)),
      qmigdVsQemu: n(ratio(q?.mibPerSec, e?.mibPerSec)),
      ...(q?.mibPerSec === undefined ? { qmigdNote: speed(q) } : {}),
      ...(e?.mibPerSec === undefined ? { qemuNote: speed(e, qemuWhy) } : {}),
    });
  };
  line('random RAM, paused (-S), single channel', by('qmigd-random-paused'), by('qemu-random-paused'), [targets[0]!, targets[1]!]);
  line('(control) the same, QEMU with transparent huge pages off', by('qmigd-random-paused'), by('qemu-random-paused-thpoff'), [targets[2]!]);
  line('random RAM, paused (-S), single channel, destination RAM pre-allocated (qmigd --mem-prealloc, QEMU prealloc=on)', by('qmigd-random-paused-prealloc'), by('qemu-random-paused-prealloc'), [targets[3]!, targets[4]!]);
  line(`random RAM, running (workload ${WORKLOAD.rate}/s ${WORKLOAD.pattern}), single channel`, by('qmigd-random-running'), undefined, [], noQemu ?? 'n/a: QEMU -M none has no CPU, so no workload (paused case only)');
  line('random RAM, paused (-S), multifd 2 channels', by('qmigd-random-paused-multifd2'), by('qemu-random-paused-multifd2'), []);
  line('all-zero RAM, paused (-S), single channel', by('qmigd-zero-paused'), by('qemu-zero-paused'), [targets[5]!]);
  table(['migration', 'qmigd MiB/s', 'qmigd / pump', 'QEMU 7.2 MiB/s', 'QEMU / pump', 'qmigd / QEMU', 'target (issue)'], rows);
  console.log('');
  console.log(
    'The control row: QEMU maps guest RAM with transparent huge pages (madvise), qmigd (a Node Buffer) does not. Where first touching fresh memory is slow ' +
      '(e.g. a VM that hands free memory back to its host), the QEMU destination spends most of a single-channel migration zeroing huge pages in the kernel ' +
      "(clear_page), and its time swings between runs; with THP off (prctl PR_SET_THP_DISABLE, both QEMU processes) it faults 4 KiB pages as qmigd does. See 'CPU ms src/dst' in the migration table. " +
      'The pre-allocated rows pay those first-touch faults before the migration, on both implementations (not counted in total-time).',
  );

  console.log('');
  console.log(`Peak RSS (VmHWM, MiB; largest over the runs) of each process; guest RAM ${ramMiB} MiB, target for qmigd ≤ RAM + ${TARGET.rssOverRamMiB} MiB = ${ramMiB + TARGET.rssOverRamMiB} MiB`);
  console.log('');
  const rss = (v: number | undefined, mark: boolean): string => {
    if (v === undefined) return '-';
    const over = v / MiB - ramMiB;
    const s = `${(v / MiB).toFixed(0)} (${over >= 0 ? '+' : ''}${over.toFixed(0)})`;
    return mark ? `${s} ${over <= TARGET.rssOverRamMiB ? 'met' : 'missed'}` : s;
  };
  const rssRows: string[][] = [];
  for (const [label, qi, ei] of [
    ['random RAM, paused, single channel', 'qmigd-random-paused', 'qemu-random-paused'],
    ['(control) the same, QEMU with THP off', undefined, 'qemu-random-paused-thpoff'],
    ['random RAM, paused, single channel, destination RAM pre-allocated', 'qmigd-random-paused-prealloc', 'qemu-random-paused-prealloc'],
    ['random RAM, running, single channel', 'qmigd-random-running', undefined],
    ['random RAM, paused, multifd 2 channels', 'qmigd-random-paused-multifd2', 'qemu-random-paused-multifd2'],
    ['all-zero RAM, paused, single channel', 'qmigd-zero-paused', 'qemu-zero-paused'],
  ] as const) {
    const q = qi ? by(qi) : undefined;
    const e = ei ? by(ei) : undefined;
    rssRows.push([label, rss(q?.srcPeakRss, true), rss(q?.dstPeakRss, true), rss(e?.srcPeakRss, false), rss(e?.dstPeakRss, false)]);
  }
  if (pump) {
    rssRows.push(['raw pump (sender / receiver)', '-', '-', '-', `${fmt(median(pump.runs.map((r) => (r.senderPeakRss ?? NaN) / MiB)), 0)} / ${fmt(median(pump.runs.map((r) => (r.receiverPeakRss ?? NaN) / MiB)), 0)}`]);
  }
  table(['migration', 'qmigd source', 'qmigd destination', 'QEMU source', 'QEMU destination'], rssRows);

  console.log('');
  console.log('QMP round trips (ms)');
  console.log('');
  const qrows: string[][] = [];
  const qrow = (label: string, q: Quantiles | undefined): void => {
    qrows.push([label, fmt(q?.p50, 3), fmt(q?.p99, 3), fmt(q?.max, 3), String(q?.samples ?? 0)]);
  };
  qrow(`query-status, idle qmigd (${IDLE_SAMPLES.toLocaleString('en')}, back to back)`, idle);
  qrow(`query-migrate on the qmigd source during random paused migrations (one every ${SAMPLE_EVERY_MS} ms, all runs)`, by('qmigd-random-paused')?.qmp);
  qrow(`query-migrate on the qmigd source during random running migrations (same)`, by('qmigd-random-running')?.qmp);
  qrow(`query-migrate on the QEMU 7.2 source during random paused single-channel migrations (same)`, by('qemu-random-paused')?.qmp);
  qrow(`query-migrate on the qmigd source during random paused multifd migrations (same)`, by('qmigd-random-paused-multifd2')?.qmp);
  table(['QMP', 'p50', 'p99', 'max', 'samples'], qrows);

  console.log('');
  console.log('## Targets (issue "Performance: migrate faster than QEMU")');
  console.log('');
  table(['target', 'measured', 'result'], targets.map((t) => [t.target, t.measured, t.result]));
  return { targets, throughput };
}

async function main(): Promise<void> {
  const m = machine();
  const startedAt = performance.now();
  console.log(`qmigd benchmarks — ${m.date}; Node ${m.node}; ${m.cpu}, ${m.cores} cores; ${m.qemu ?? 'QEMU not installed'}; ${m.kernel}`);
  const busyBefore = await cpuBusy(1000);
  const otherCpu = otherCpuMeter();
  console.log(`guest RAM ${SIZE / MiB} MiB; up to ${REPEATS} rounds of (raw pump, every migration); CPUs busy with other work just before: ${busyBefore === undefined ? '?' : `${(busyBefore * 100).toFixed(0)}%`}`);
  if (busyBefore !== undefined && busyBefore > 0.1) console.log(`note: other processes were using ${(busyBefore * 100).toFixed(0)}% of the ${m.cores} CPUs when the benchmarks started; numbers will be lower and noisier`);

  progress('idle QMP latency');
  const idleRun = await attempt('idle QMP benchmark', idleQmpBench);
  const idle = 'value' in idleRun ? idleRun.value : undefined;

  const dir = makeTempDir('qmigd-bench-ram-');
  // Interrupted: remove the RAM images (GiBs in the temp dir); the children get the signal too.
  const onSignal = (sig: NodeJS.Signals): void => {
    rmSync(dir, { recursive: true, force: true });
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let migrations: ScenarioResult[] = [];
  let xbzrle: XbzrleRow[] | undefined;
  let colo: ColoResult | undefined;
  let randomFileMs = 0;
  let pump: PumpResult | undefined;
  try {
    progress(`writing the ${SIZE / MiB} MiB random RAM image (shared by every migration and COLO)`);
    const randomFile = join(dir, 'random-ram.bin');
    const zeroFile = join(dir, 'zero-ram.bin');
    const t0 = performance.now();
    await writeRandomFile(randomFile, SIZE);
    randomFileMs = performance.now() - t0;
    writeZeroFile(zeroFile, SIZE);
    const ctx = { size: SIZE, randomFile, zeroFile, randomSha: await sha256File(randomFile), zeroSha: sha256Zeros(SIZE) };

    // One pump run at the start of each round of migrations, so that the limit and the
    // migrations are measured on the same machine state.
    const pumpRuns: PumpRun[] = [];
    let pumpError: string | undefined;
    const pumpRound = async (): Promise<void> => {
      if (pumpError) return;
      progress(`raw pump of ${SIZE / MiB} MiB`);
      const run = await attempt('raw pump', () => pumpOnce(SIZE));
      if ('value' in run) pumpRuns.push(run.value);
      else pumpError = run.error;
    };
    migrations = await migrationBench(ctx, REPEATS, m.qemu !== null, MIGRATION_BUDGET_MS, pumpRound);
    if (pumpRuns.length) {
      pump = pumpResult(SIZE, pumpRuns);
      console.log('');
      console.log(`raw pump, ${SIZE / MiB} MiB Node → Node over TCP 127.0.0.1 (one run before each round of migrations): ${fmt(pump.mibPerSec)} MiB/s (median; runs ${pump.runs.map((r) => fmt(r.mibPerSec, 0)).join(' / ')})`);
    }

    progress('XBZRLE codec');
    const xbzrleRun = await attempt('XBZRLE benchmark', xbzrleBench);
    if ('value' in xbzrleRun) xbzrle = xbzrleRun.value;

    if (COLO) {
      progress('COLO');
      colo = await coloBench(SIZE, SIZE, randomFile);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }

  progress('hostile QMP clients');
  const abuseRun = await attempt('QMP abuse benchmark', () => abuseBench());
  const abuse: AbuseResult[] | undefined = 'value' in abuseRun ? abuseRun.value : undefined;

  progress('start-up');
  const startupRun = await attempt('start-up benchmark', () => startupBench(m.qemu !== null));
  const startup: StartupRow[] | undefined = 'value' in startupRun ? startupRun.value : undefined;

  const { targets, throughput } = summary(SIZE, pump, migrations, idle, xbzrle, m.qemu);
  if (abuse) {
    console.log('');
    console.log('## Hostile QMP clients (a fresh daemon each; a probe in a process of its own asks every 20 ms)');
    console.log('');
    printAbuse(abuse);
  }
  if (startup) {
    console.log('');
    console.log(`## Start-up (${STARTUP_RUNS} runs each, interleaved; ms p50 / max)`);
    console.log('');
    const cell = (q?: Quantiles): string => (q ? `${fmt(q.p50, 0)} / ${fmt(q.max, 0)}` : '—');
    table(['program', 'exec → qmp_capabilities answered', `libvirt's probe: exec → -daemonize returns → ${'last answer'}`], startup.map((r) => [r.program, cell(r.firstReply), cell(r.probe)]));
  }
  const totalSec = (performance.now() - startedAt) / 1000;
  console.log('');
  const otherDuring = otherCpu();
  const pct = (v: number | undefined): string => (v === undefined ? '?' : `${(v * 100).toFixed(0)}%`);
  console.log(`benchmarks ran in ${totalSec.toFixed(0)} s; other processes used ${pct(otherDuring)} of the CPUs meanwhile (${pct(busyBefore)} just before); numbers written to ${RESULTS}`);
  if (otherDuring !== undefined && otherDuring > 0.1) console.log('note: other work on the machine competed with the benchmarks; numbers are lower and noisier than on a quiet machine');

  const results = {
    machine: m,
    config: {
      guestRamBytes: SIZE,
      repeats: REPEATS,
      transport: 'tcp 127.0.0.1',
      maxBandwidthBytesPerSec: MAX_BANDWIDTH,
      runningWorkload: WORKLOAD,
      qmpSampleEveryMs: SAMPLE_EVERY_MS,
      units: { throughput: 'MiB/s of guest RAM (ram.total / total-time)', rss: 'bytes (VmHWM)', xbzrle: 'MB/s = 10^6 bytes of page data per second', latency: 'ms' },
    },
    summary: { pumpMiBps: pump?.mibPerSec ?? null, throughput },
    pump: pump ?? null,
    migrations,
    qmp: {
      idleQueryStatus: idle ?? null,
      duringMigration: Object.fromEntries(migrations.filter((r) => r.qmp).map((r) => [r.scenario.id, r.qmp])),
    },
    xbzrle: xbzrle ?? null,
    colo: colo ?? null,
    qmpAbuse: abuse ?? null,
    startup: startup ?? null,
    targets,
    randomFileWriteMs: Math.round(randomFileMs),
    totalSeconds: Math.round(totalSec),
    otherCpuBusyBefore: busyBefore ?? null,
    otherCpuBusyDuring: otherDuring ?? null,
  };
  writeFileSync(RESULTS, `${JSON.stringify(results, null, 2)}\n`);
}

await main();
