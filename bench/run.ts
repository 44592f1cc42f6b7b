/**
 * `npm run bench`: every benchmark in one process tree, then the summary against the targets of
 * issue 14 ("As fast as QEMU's C"), and bench/results.json with the same numbers. Prints
 * numbers; never passes or fails on them (the exit status is non-zero only when a benchmark
 * could not run at all).
 *
 *  1. idle QMP latency (qmp-idle.ts)
 *  2. the transport's limit: a raw 1 GiB pump between two Node processes (pump.ts), once at the
 *     start of each round of
 *  3. migrations qmigd → qmigd and QEMU 7.2 → QEMU 7.2: random and all-zero RAM, paused,
 *     single channel (by default and with the destination pre-allocated) and multifd, each
 *     qmigd run back to back with its QEMU run, alternating which goes first; qmigd alone with a
 *     dirtying guest (the downtime row); QMP latency during them; peak RSS (migration.ts)
 *  4. XBZRLE codec throughput (xbzrle.ts)
 *  5. COLO checkpoints and failover (colo.ts)
 *  6. what hostile QMP clients cost: memory, and the other clients' latency (qmp-abuse.ts)
 *  7. start-up as libvirt sees it, qmigd-qemu beside QEMU 7.2 and a bare Node process, and the
 *     CPU each uses idle (startup.ts)
 *
 * Which qmigd release each row runs: the Debian QEMU here is 7.2, while qmigd's default release
 * is 10.0 (QEMU 10.0 is only reachable here through a chroot wrapper, whose start-up and
 * file paths would be measured with it). So every qmigd run compared with QEMU 7.2 runs as 7.2
 * (--qemu-version 7.2, QMIGD_QEMU_VERSION=7.2 for qmigd-qemu): the same stream format and the
 * same defaults on both sides. The qmigd-only dirtying-guest row runs qmigd's default release,
 * what a user gets; start-up also shows qmigd-qemu as its default release, for information.
 *
 * Environment: QMIGD_BENCH_REPEATS (rounds of pump + migrations, default 5; after
 * 3 rounds of migrations no further round starts once QMIGD_BENCH_MIGRATION_BUDGET_S, default
 * 170, have passed, to keep the whole run near 5 minutes on a busy machine),
 * QMIGD_BENCH_SIZE (guest RAM, default 1G), QMIGD_BENCH_COLO=0 to leave COLO out.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { makeTempDir } from '../src/cli/migration-pair.js';
import { parseSize } from '../src/cli/size.js';
import { coloBench, type ColoResult } from './colo.js';
import { attempt, cpuBusy, fmt, machine, otherCpuMeter, median, MiB, progress, table, type Quantiles } from './common.js';
import { COMPARED_RELEASE, DEFAULT_RELEASE, implName, makeContext, MAX_BANDWIDTH, migrationBench, SAMPLE_EVERY_MS, WORKLOAD, type MigrationRun, type ScenarioResult } from './migration.js';
import { pumpOnce, pumpResult, type PumpResult, type PumpRun } from './pump.js';
import { abuseBench, printAbuse, type AbuseResult } from './qmp-abuse.js';
import { IDLE_SAMPLES, idleQmpBench } from './qmp-idle.js';
import { IDLE_MS, startupBench, STARTUP_RUNS, type StartupRow } from './startup.js';
import { xbzrleBench, type XbzrleRow } from './xbzrle.js';

const RESULTS = resolve(import.meta.dirname, '..', '..', 'bench', 'results.json');
const REPEATS = Math.max(1, Number(process.env.QMIGD_BENCH_REPEATS ?? 5) || 5);
const SIZE = process.env.QMIGD_BENCH_SIZE ? parseSize(process.env.QMIGD_BENCH_SIZE) : 1 << 30;
const COLO = process.env.QMIGD_BENCH_COLO !== '0';
/** After 3 rounds, no further round of migrations starts once they have taken this long. */
const MIGRATION_BUDGET_MS = Number(process.env.QMIGD_BENCH_MIGRATION_BUDGET_S ?? 170) * 1000;

/**
 * Issue 14's targets: ratios within one run, both sides at their defaults unless a row says
 * otherwise (every source here has max-bandwidth unlimited, QEMU's default 128 MiB/s would
 * measure the limit, not the engine).
 */
const TARGET = {
  singleVsQemu: 1.0,
  singleVsPump: 0.8,
  preallocVsQemu: 1.0,
  multifdVsQemu: 1.0,
  zeroVsQemu: 1.0,
  qmpP99Ms: 2,
  qmpMaxMs: 50,
  /** Share of the dirtying-guest runs whose downtime is at most the downtime-limit. */
  downtimeWithinShare: 0.95,
  rssOverRamMiB: 96,
  /** qmigd-qemu's exec → qmp_capabilities answered, at most this many times QEMU's (medians). */
  startupVsQemu: 2.0,
};

/** One row of issue 14's table, as measured in this run. */
interface TargetRow {
  measure: string;
  /** The release qmigd ran as. */
  qmigdRelease: string;
  /** Display cells. */
  qmigd: string;
  qemu: string;
  /** The raw Node pump (throughput rows) or the bare Node process (start-up); '-' where none applies. */
  node: string;
  ratio: string;
  target: string;
  /** null: could not be measured. */
  met: boolean | null;
  result: string;
  /** The numbers behind the cells, for results.json. */
  values: Record<string, number | null>;
}

function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0 ? undefined : a / b;
}

const num = (v: number | undefined): number | null => (v === undefined || !Number.isFinite(v) ? null : v);
const times = (v: number | undefined): string => (v === undefined ? '-' : `${v.toFixed(2)}×`);

/**
 * The result of a row made of "measured ≥ limit" (or ≤) checks: met when all are, missed with
 * each check that is not, not measured when one cannot be judged.
 */
function judge(checks: Array<{ what: string; ok: boolean | undefined }>): { met: boolean | null; result: string } {
  if (checks.some((c) => c.ok === undefined)) {
    const missing = checks.filter((c) => c.ok === undefined).map((c) => c.what);
    return { met: null, result: `not measured (${missing.join(', ')})` };
  }
  const missed = checks.filter((c) => !c.ok).map((c) => c.what);
  return missed.length ? { met: false, result: `missed: ${missed.join('; ')}` } : { met: true, result: 'met' };
}

interface ThroughputRow {
  migration: string;
  qmigdRelease: string;
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
  startup: StartupRow[] | undefined,
  qemu: string | null,
): { targets: TargetRow[]; throughput: ThroughputRow[] } {
  const throughput: ThroughputRow[] = [];
  const by = (id: string): ScenarioResult | undefined => migrations.find((r) => r.scenario.id === id);
  const release = (r: ScenarioResult | undefined): string => (r ? implName(r.scenario).replace(/^qmigd as /, '') : '-');
  const p = pump?.mibPerSec;
  const ramMiB = size / MiB;
  const rounds = Math.max(0, ...migrations.map((r) => r.runs.length));
  const noQemu = qemu ? undefined : 'QEMU not installed';
  const speed = (r: ScenarioResult | undefined, why?: string): string => {
    if (!r) return why ?? '-';
    if (r.mibPerSec !== undefined) return fmt(r.mibPerSec);
    if (r.notRun) return r.notRun;
    return r.runs.map((run) => `${run.status}${run.errorDesc ? `: ${run.errorDesc}` : ''}`).join('; ') || '-';
  };

  console.log('');
  console.log(`## Summary: ${ramMiB} MiB guest over TCP 127.0.0.1, median of ${rounds} runs; MiB/s of guest RAM = ram.total / total-time (query-migrate)`);
  console.log('');
  console.log(
    `qmigd's release: every row compared with QEMU ${COMPARED_RELEASE} runs qmigd as ${COMPARED_RELEASE} (--qemu-version ${COMPARED_RELEASE}; qmigd-qemu with ` +
      `QMIGD_QEMU_VERSION=${COMPARED_RELEASE}), so like is compared with like; the qmigd-only running (downtime) row runs qmigd's default release, ${DEFAULT_RELEASE}.`,
  );
  console.log('');
  const rows: string[][] = [];
  rows.push([
    `raw pump: Node → Node, TCP 127.0.0.1, ${pump ? pump.chunk / MiB : 1} MiB writes honouring back-pressure (the limit; median of ${pump?.runs.length ?? 0})`,
    '-', pump ? fmt(p) : 'could not run', pump ? '1.00×' : '-', '-', '-', '-',
  ]);
  const line = (label: string, q: ScenarioResult | undefined, e: ScenarioResult | undefined, qemuWhy?: string): void => {
    rows.push([label, release(q), speed(q), times(ratio(q?.mibPerSec, p)), speed(e, qemuWhy), times(ratio(e?.mibPerSec, p)), times(ratio(q?.mibPerSec, e?.mibPerSec))]);
    throughput.push({
      migration: label,
      qmigdRelease: release(q),
      qmigdMiBps: num(q?.mibPerSec),
      qmigdVsPump: num(ratio(q?.mibPerSec, p)),
      qemuMiBps: num(e?.mibPerSec),
      qemuVsPump: num(ratio(e?.mibPerSec, p)),
      qmigdVsQemu: num(ratio(q?.mibPerSec, e?.mibPerSec)),
      ...(q?.mibPerSec === undefined ? { qmigdNote: speed(q) } : {}),
      ...(e?.mibPerSec === undefined ? { qemuNote: speed(e, qemuWhy) } : {}),
    });
  };
  const noCpu = noQemu ?? 'n/a: QEMU -M none has no CPU, so no workload (paused case only)';
  line('random RAM, paused (-S), single channel', by('qmigd-random-paused'), by('qemu-random-paused'));
  line('(control, no target) the same, QEMU with transparent huge pages off', by('qmigd-random-paused'), by('qemu-random-paused-thpoff'));
  line('random RAM, paused (-S), single channel, destination RAM pre-allocated (qmigd --mem-prealloc, QEMU prealloc=on)', by('qmigd-random-paused-prealloc'), by('qemu-random-paused-prealloc'));
  line('random RAM, paused (-S), multifd 2 channels', by('qmigd-random-paused-multifd2'), by('qemu-random-paused-multifd2'));
  line('all-zero RAM, paused (-S), single channel', by('qmigd-zero-paused'), by('qemu-zero-paused'));
  line(`random RAM, running (workload ${WORKLOAD.rate}/s ${WORKLOAD.pattern}), single channel`, by('qmigd-random-running'), undefined, noCpu);
  table(['migration', 'qmigd as', 'qmigd MiB/s', 'qmigd / pump', `QEMU ${COMPARED_RELEASE} MiB/s`, 'QEMU / pump', 'qmigd / QEMU'], rows);
  console.log('');
  console.log(
    'The control row: QEMU maps guest RAM with transparent huge pages (madvise). Where first touching fresh memory is slow ' +
      '(e.g. a VM that hands free memory back to its host), the QEMU destination spends most of a single-channel migration zeroing huge pages in the kernel ' +
      "(clear_page), and its time swings between runs; with THP off (prctl PR_SET_THP_DISABLE, both QEMU processes) it faults 4 KiB pages. See 'CPU ms src/dst' in the migration table. " +
      'The pre-allocated rows pay those first-touch faults before the migration, on both implementations (not counted in total-time).',
  );

  // Downtime, per run.
  const running = by('qmigd-random-running');
  const downRuns = running?.runs ?? [];
  const limitOf = (run: MigrationRun): number => run.downtimeLimitMs ?? 300;
  const isWithin = (run: MigrationRun): boolean => run.status === 'completed' && run.downtimeMs !== undefined && run.downtimeMs <= limitOf(run);
  const within = downRuns.filter(isWithin);
  const limits = [...new Set(downRuns.map(limitOf))];
  console.log('');
  console.log(
    `Downtime with a dirtying guest: qmigd as ${release(running)}, random RAM, workload ${WORKLOAD.rate}/s ${WORKLOAD.pattern}, single channel, ` +
      `downtime-limit ${limits.join(' / ') || '300'} ms (the default, read from query-migrate-parameters), max-bandwidth unlimited as every row`,
  );
  console.log('');
  table(
    ['run', 'status', 'downtime ms', 'downtime-limit ms', 'within the limit', 'total-time ms', 'dirty-sync-count'],
    downRuns.map((run, i) => [
      String(i + 1),
      run.status === 'completed' ? run.status : `${run.status}${run.errorDesc ? `: ${run.errorDesc}` : ''}`,
      String(run.downtimeMs ?? '-'),
      String(limitOf(run)),
      within.includes(run) ? 'yes' : 'no',
      String(run.totalTimeMs ?? '-'),
      String(run.dirtySyncCount ?? '-'),
    ]),
  );

  // Peak RSS.
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
    ['the same, qmigd --page-thread on at both ends', 'qmigd-random-paused-thread', undefined],
    ['random RAM, paused, single channel, destination RAM pre-allocated', 'qmigd-random-paused-prealloc', 'qemu-random-paused-prealloc'],
    ['random RAM, paused, multifd 2 channels', 'qmigd-random-paused-multifd2', 'qemu-random-paused-multifd2'],
    ['the same, qmigd --page-thread on at both ends', 'qmigd-random-paused-multifd2-thread', undefined],
    ['all-zero RAM, paused, single channel', 'qmigd-zero-paused', 'qemu-zero-paused'],
    ['random RAM, running, single channel', 'qmigd-random-running', undefined],
  ] as const) {
    const q = qi ? by(qi) : undefined;
    const e = ei ? by(ei) : undefined;
    rssRows.push([label, q ? release(q) : '-', rss(q?.srcPeakRss, true), rss(q?.dstPeakRss, true), rss(e?.srcPeakRss, false), rss(e?.dstPeakRss, false)]);
  }
  if (pump) {
    rssRows.push(['raw pump (sender / receiver)', '-', '-', '-', '-', `${fmt(median(pump.runs.map((r) => (r.senderPeakRss ?? NaN) / MiB)), 0)} / ${fmt(median(pump.runs.map((r) => (r.receiverPeakRss ?? NaN) / MiB)), 0)}`]);
  }
  table(['migration', 'qmigd as', 'qmigd source', 'qmigd destination', 'QEMU source', 'QEMU destination'], rssRows);

  console.log('');
  console.log('QMP round trips (ms)');
  console.log('');
  const qrows: string[][] = [];
  const qrow = (label: string, q: Quantiles | undefined): void => {
    qrows.push([label, fmt(q?.p50, 3), fmt(q?.p99, 3), fmt(q?.max, 3), String(q?.samples ?? 0)]);
  };
  qrow(`query-status, idle qmigd (${IDLE_SAMPLES.toLocaleString('en')}, back to back)`, idle);
  qrow(`query-migrate on the qmigd source during random paused migrations (one every ${SAMPLE_EVERY_MS} ms, all runs)`, by('qmigd-random-paused')?.qmp);
  qrow(`query-migrate on the qmigd source during random paused migrations with --page-thread on at both ends (same)`, by('qmigd-random-paused-thread')?.qmp);
  qrow(`query-migrate on the qmigd source during random running migrations (same)`, by('qmigd-random-running')?.qmp);
  qrow(`query-migrate on the QEMU ${COMPARED_RELEASE} source during random paused single-channel migrations (same)`, by('qemu-random-paused')?.qmp);
  qrow(`query-migrate on the qmigd source during random paused multifd migrations (same)`, by('qmigd-random-paused-multifd2')?.qmp);
  qrow(`query-migrate on the qmigd source during random paused multifd migrations with --page-thread on at both ends (same)`, by('qmigd-random-paused-multifd2-thread')?.qmp);
  qrow(`query-migrate on the qmigd destination during random paused migrations (same pace)`, by('qmigd-random-paused')?.dstQmp);
  qrow(`query-migrate on the qmigd destination, --page-thread on at both ends (same)`, by('qmigd-random-paused-thread')?.dstQmp);
  qrow(`query-migrate on the QEMU ${COMPARED_RELEASE} destination during random paused single-channel migrations (same)`, by('qemu-random-paused')?.dstQmp);
  table(['QMP', 'p50', 'p99', 'max', 'samples'], qrows);

  {
    // The same migration with faults armed that never fire, alternating with the default (issue 15).
    const plain = by('qmigd-random-paused');
    const armed = by('qmigd-random-paused-faults');
    console.log('');
    console.log('Fault layer armed but idle (source: a close after 1 TiB and a command-error on query-uuid; destination: a stall after 1 TiB received)');
    console.log('');
    table(['migration', 'MiB/s (median)', 'runs', 'vs no faults'], [
      ['random RAM, paused, single channel, no faults', fmt(plain?.mibPerSec), plain ? plain.runs.map((r) => fmt(r.mibPerSec, 0)).join(' ') : '-', '1.00×'],
      ['the same, faults armed', fmt(armed?.mibPerSec), armed ? armed.runs.map((r) => fmt(r.mibPerSec, 0)).join(' ') : '-', times(ratio(armed?.mibPerSec, plain?.mibPerSec))],
    ]);
  }

  // Issue 14's table.
  const targets: TargetRow[] = [];
  const mibs = (v: number | undefined): string => (v === undefined ? '-' : `${fmt(v)} MiB/s`);
  const throughputRow = (measure: string, qi: string, ei: string, vsQemu: number, vsPump?: number): void => {
    const q = by(qi);
    const e = by(ei);
    const rq = ratio(q?.mibPerSec, e?.mibPerSec);
    const rp = ratio(q?.mibPerSec, p);
    const checks = [{ what: `${times(rq)} QEMU, needs ≥ ${vsQemu.toFixed(1)}×`, ok: rq === undefined ? undefined : rq >= vsQemu }];
    if (vsPump !== undefined) checks.push({ what: `${times(rp)} pump, needs ≥ ${vsPump.toFixed(1)}×`, ok: rp === undefined ? undefined : rp >= vsPump });
    const target = `≥ ${vsQemu.toFixed(1)}× QEMU${vsPump !== undefined ? ` and ≥ ${vsPump.toFixed(1)}× pump` : ''}`;
    targets.push({
      measure,
      qmigdRelease: release(q),
      qmigd: q?.mibPerSec !== undefined ? mibs(q.mibPerSec) : speed(q),
      qemu: e?.mibPerSec !== undefined ? mibs(e.mibPerSec) : speed(e, noQemu),
      node: vsPump !== undefined ? (p !== undefined ? `pump ${mibs(p)}` : 'pump could not run') : '-',
      ratio: `${times(rq)} QEMU${vsPump !== undefined ? `, ${times(rp)} pump` : ''}`,
      target,
      ...judge(checks),
      values: { qmigdMiBps: num(q?.mibPerSec), qemuMiBps: num(e?.mibPerSec), pumpMiBps: vsPump !== undefined ? num(p) : null, qmigdVsQemu: num(rq), qmigdVsPump: vsPump !== undefined ? num(rp) : null },
    });
  };
  throughputRow('single channel, random RAM, guest paused', 'qmigd-random-paused', 'qemu-random-paused', TARGET.singleVsQemu, TARGET.singleVsPump);
  throughputRow('single channel, destination pre-allocated on both (qmigd --mem-prealloc, QEMU prealloc=on)', 'qmigd-random-paused-prealloc', 'qemu-random-paused-prealloc', TARGET.preallocVsQemu);
  throughputRow('multifd, 2 channels', 'qmigd-random-paused-multifd2', 'qemu-random-paused-multifd2', TARGET.multifdVsQemu);
  throughputRow('all-zero guest', 'qmigd-zero-paused', 'qemu-zero-paused', TARGET.zeroVsQemu);

  {
    const q = by('qmigd-random-paused');
    const e = by('qemu-random-paused');
    const ms = (x: Quantiles | undefined, why?: string): string => (x ? `p99 ${fmt(x.p99, 2)} ms, max ${fmt(x.max, 1)} ms (p50 ${fmt(x.p50, 2)}, ${x.samples} samples)` : why ?? 'not measured');
    targets.push({
      measure: `QMP query-migrate during a full-speed migration (single channel, random RAM, paused; one every ${SAMPLE_EVERY_MS} ms)`,
      qmigdRelease: release(q),
      qmigd: ms(q?.qmp),
      // QEMU by the same target: how much of it this machine allows a QMP thread at all.
      qemu: e?.qmp ? `${ms(e.qmp)}; by the same target QEMU ${e.qmp.p99 <= TARGET.qmpP99Ms && e.qmp.max <= TARGET.qmpMaxMs ? 'meets' : 'misses'} it` : ms(undefined, noQemu),
      node: '-',
      ratio: `p99 ${times(ratio(q?.qmp?.p99, e?.qmp?.p99))} QEMU's`,
      target: `p99 ≤ ${TARGET.qmpP99Ms} ms, max ≤ ${TARGET.qmpMaxMs} ms`,
      ...judge([
        { what: `p99 ${fmt(q?.qmp?.p99, 2)} ms`, ok: q?.qmp ? q.qmp.p99 <= TARGET.qmpP99Ms : undefined },
        { what: `max ${fmt(q?.qmp?.max, 1)} ms`, ok: q?.qmp ? q.qmp.max <= TARGET.qmpMaxMs : undefined },
      ]),
      values: { qmigdP99Ms: num(q?.qmp?.p99), qmigdMaxMs: num(q?.qmp?.max), qemuP99Ms: num(e?.qmp?.p99), qemuMaxMs: num(e?.qmp?.max) },
    });
  }

  {
    const share = downRuns.length ? within.length / downRuns.length : undefined;
    const perRun = (runs: MigrationRun[]): string => runs.map((run) => (run.downtimeMs !== undefined ? String(run.downtimeMs) : run.status)).join(' / ');
    // QEMU has no dirtying guest here, but its switchover rule is the same with a paused one
    // (switch once what is left would go within the limit at the last window's bandwidth): its
    // downtime in the single-channel paused row shows what the rule itself gives, beside qmigd's.
    const paused = (id: string): { within: number; runs: number; text?: string } => {
      const runs = by(id)?.runs ?? [];
      const n = runs.filter(isWithin).length;
      return { within: n, runs: runs.length, text: runs.length ? `${n} of ${runs.length} within (${perRun(runs)} ms)` : undefined };
    };
    const qemuPaused = paused('qemu-random-paused');
    const qmigdPaused = paused('qmigd-random-paused');
    targets.push({
      measure: `downtime with a dirtying guest (${WORKLOAD.rate}/s ${WORKLOAD.pattern}), default downtime-limit ${limits.join(' / ') || '300'} ms`,
      qmigdRelease: release(running),
      qmigd: downRuns.length ? `${within.length} of ${downRuns.length} runs within the limit; per run: ${perRun(downRuns)} ms${qmigdPaused.text ? `; paused guest, single channel (as ${release(by('qmigd-random-paused'))}): ${qmigdPaused.text}` : ''}` : speed(running),
      qemu: qemuPaused.text ? `${noCpu}; paused guest, single channel, the same switchover rule: ${qemuPaused.text}` : noCpu,
      node: '-',
      ratio: share === undefined ? '-' : `${(share * 100).toFixed(0)} % of runs within`,
      target: `≤ the limit in ≥ ${(TARGET.downtimeWithinShare * 100).toFixed(0)} % of runs`,
      ...judge([{ what: `${within.length} of ${downRuns.length} runs within`, ok: share === undefined ? undefined : share >= TARGET.downtimeWithinShare }]),
      values: {
        runs: downRuns.length, withinLimit: within.length, share: num(share), medianDowntimeMs: num(running?.downtimeMs),
        pausedQmigdRuns: qmigdPaused.runs, pausedQmigdWithin: qmigdPaused.within, pausedQemuRuns: qemuPaused.runs, pausedQemuWithin: qemuPaused.within,
      },
    });
  }

  {
    // The worst end of the worst row, per implementation.
    const worst = (impl: 'qmigd' | 'qemu'): { over: number; where: string } | undefined => {
      let w: { over: number; where: string } | undefined;
      for (const r of migrations.filter((m) => m.scenario.impl === impl)) {
        for (const [end, v] of [['source', r.srcPeakRss], ['destination', r.dstPeakRss]] as const) {
          if (v === undefined) continue;
          const over = v / MiB - ramMiB;
          if (!w || over > w.over) w = { over, where: `${end}, ${r.label}${impl === 'qmigd' ? ` (as ${release(r)})` : ''}` };
        }
      }
      return w;
    };
    const cell = (w: { over: number; where: string } | undefined, why?: string): string =>
      w ? `RAM ${w.over >= 0 ? '+' : '−'} ${Math.abs(w.over).toFixed(0)} MiB (${w.where})` : why ?? 'not measured';
    const q = worst('qmigd');
    const e = worst('qemu');
    targets.push({
      measure: 'peak RSS, source and destination, any row (the largest)',
      qmigdRelease: 'as each row',
      qmigd: cell(q),
      qemu: cell(e, noQemu),
      node: '-',
      ratio: '-',
      target: `≤ RAM + ${TARGET.rssOverRamMiB} MiB`,
      ...judge([{ what: `RAM + ${fmt(q?.over, 0)} MiB`, ok: q ? q.over <= TARGET.rssOverRamMiB : undefined }]),
      values: { ramMiB, qmigdOverRamMiB: num(q?.over), qemuOverRamMiB: num(e?.over) },
    });
  }

  {
    const role = (r: StartupRow['role']): StartupRow | undefined => startup?.find((s) => s.role === r);
    const q = role('qmigd')?.firstReply;
    const e = role('qemu')?.firstReply;
    const floor = role('floor')?.firstReply;
    const r = ratio(q?.p50, e?.p50);
    const ms = (x: Quantiles | undefined, why?: string): string => (x ? `${fmt(x.p50, 0)} ms (median of ${x.samples})` : why ?? 'not measured');
    targets.push({
      measure: 'start-up: exec to the first qmp_capabilities reply (qmigd-qemu and qemu-system-x86_64, -S -M none)',
      qmigdRelease: COMPARED_RELEASE,
      qmigd: ms(q),
      qemu: ms(e, noQemu),
      node: floor ? `bare Node process ${ms(floor)}` : '-',
      ratio: `${times(r)} QEMU's`,
      target: `≤ ${TARGET.startupVsQemu.toFixed(1)}× QEMU's`,
      ...judge([{ what: `${times(r)} QEMU's`, ok: r === undefined ? undefined : r <= TARGET.startupVsQemu }]),
      values: { qmigdMs: num(q?.p50), qemuMs: num(e?.p50), nodeFloorMs: num(floor?.p50), qmigdVsQemu: num(r) },
    });
  }

  console.log('');
  console.log(`## Targets (issue 14), from this run; qmigd as ${COMPARED_RELEASE} beside QEMU ${COMPARED_RELEASE} unless the row says otherwise`);
  console.log('');
  table(
    ['measure', 'qmigd as', 'qmigd', `QEMU ${COMPARED_RELEASE}`, 'raw Node (pump / bare process)', 'ratio', 'target', 'result'],
    targets.map((t) => [t.measure, t.qmigdRelease, t.qmigd, t.qemu, t.node, t.ratio, t.target, t.result]),
  );
  const met = targets.filter((t) => t.met === true).length;
  console.log('');
  console.log(`${met} of ${targets.length} targets met${targets.some((t) => t.met === null) ? `, ${targets.filter((t) => t.met === null).length} not measured` : ''}.`);
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
    const t0 = performance.now();
    const ctx = await makeContext(dir, SIZE);
    randomFileMs = performance.now() - t0;

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
      colo = await coloBench(SIZE, SIZE, ctx.randomFile);
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

  const { targets, throughput } = summary(SIZE, pump, migrations, idle, startup, m.qemu);
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
    const idle = (v?: number): string => (v === undefined ? '—' : `${(v * 100).toFixed(2)} %`);
    table(
      ['program', 'exec → qmp_capabilities answered', `libvirt's probe: exec → -daemonize returns → ${'last answer'}`, `idle: CPU in ${IDLE_MS / 1000} s after it answered (share of a core)`],
      startup.map((r) => [r.program, cell(r.firstReply), cell(r.probe), idle(r.idleCpu)]),
    );
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
      qmigdRelease: { comparedWithQemu: COMPARED_RELEASE, qmigdOnlyRows: DEFAULT_RELEASE },
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
