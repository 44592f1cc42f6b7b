/**
 * Migration benchmarks: a guest migrated over TCP on 127.0.0.1, qmigd → qmigd and QEMU 7.2 →
 * QEMU 7.2, with
 *  - the guest's RAM: random or all zero, from a file generated once and shared (the zero one
 *    is sparse): QEMU maps it with memory-backend-file share=off, qmigd reads it with
 *    --memory-file. Either way every guest page is a page of its own (not the kernel's shared
 *    zero page, which fresh anonymous RAM would read as, and which stays in the L1 cache);
 *  - the source paused (-S, run state prelaunch) or, qmigd only, running a converging workload
 *    (QEMU -M none has no CPU, so it has no workload);
 *  - one channel, or multifd with 2 channels (both ends: capability multifd, multifd-channels 2);
 *  - the qmigd release: every qmigd scenario that has a QEMU 7.2 counterpart runs qmigd as QEMU
 *    7.2 (--qemu-version 7.2), so that like is compared with like (same stream format, same
 *    defaults); the qmigd-only running scenario runs qmigd's default release, what a user gets.
 * The scenarios of one comparison run back to back, qmigd and QEMU alternating which goes first
 * from round to round: the cost of first-touching fresh memory on this kind of VM swings from
 * minute to minute, so only runs taken in one go, alternately, compare (issue 14).
 * Every run: destination started with `-incoming defer`, capabilities and parameters set on both
 * ends, migrate-incoming on the destination (waiting for its socket-address), max-bandwidth
 * MAX_BANDWIDTH on the source, then `migrate`. query-migrate is sampled on the source every 5 ms
 * (one request in flight; its round trips are the "QMP during migration" latency) until a final
 * state. Throughput is ram.total / total-time, both from query-migrate. Peak RSS is VmHWM of each
 * process, and CPU time what each used from `migrate` on, when the destination has completed. In
 * the first run of each scenario the destination's RAM is checked against the source's (qmigd:
 * __org.qmigd_query-ram-digest of both ends; QEMU: a pmemsave dump of the destination) before
 * the processes are stopped; later runs only time.
 *
 * Prints numbers; never fails on time. Run by bench/run.ts, or alone:
 *   node dist/bench/migration.js [SIZE] [REPEATS]
 */
import { closeSync, ftruncateSync, openSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FINAL, freePort, makeTempDir, waitIncomingDone, writeRandomFile, type MigrateInfo, type QmpClient } from '../src/cli/migration-pair.js';
import { parseSize } from '../src/cli/size.js';
import { cpuMs, fmt, median, within, mib, MiB, peakRss, progress, qemuVersion, quantiles, ramDir, sha256File, sha256Zeros, sleep, table, until, type Quantiles } from './common.js';
import { DEFAULT_PROFILE } from '../src/profiles/index.js';
import { startEnd, thpOffAvailable, type End, type Kind } from './ends.js';

/** Interval between the starts of two query-migrate samples. */
export const SAMPLE_EVERY_MS = 5;
/** max-bandwidth on every source: 100 GiB/s, i.e. no limit in practice (QEMU's default is 128 MiB/s). */
export const MAX_BANDWIDTH = 100 * 1024 * MiB;
/** A migration still running after this long is cancelled (a workload that does not converge). */
const MIGRATION_TIMEOUT_MS = 120_000;
/** Longest wait for one QMP reply (or a digest, a dump) before the run is given up. */
const QMP_TIMEOUT_MS = 60_000;
/** The converging workload of the running-guest scenario. */
export const WORKLOAD = { rate: '16M', pattern: 'hot:10' };
/** The release of the real QEMU the bench compares with (Debian's qemu-system-x86_64). */
export const COMPARED_RELEASE = '7.2';
/** qmigd's default release (what it is without --qemu-version). */
export const DEFAULT_RELEASE = DEFAULT_PROFILE.id;

export interface Scenario {
  id: string;
  impl: Kind;
  /** The comparison it belongs to: its scenarios run back to back, alternating (see scenarios()). */
  group: string;
  /** qmigd only: --qemu-version; undefined: qmigd's default release. */
  release?: string;
  content: 'random' | 'zero';
  paused: boolean;
  workload?: { rate: string; pattern: string };
  /** 1: a single channel; more: multifd with that many channels. */
  channels: number;
  /** QEMU only: transparent huge pages off for both processes (a control, see run.ts). */
  thpOff?: boolean;
  /** The destination's RAM is faulted in at start-up (qmigd --mem-prealloc, QEMU prealloc=on). */
  prealloc?: boolean;
  /** qmigd only: further arguments for each end (bench/ram-mapping.ts: --ram-hugepages). */
  srcArgs?: string[];
  dstArgs?: string[];
  /** qmigd only: arguments for node itself at each end (bench/profile.ts: --cpu-prof). */
  srcNodeArgs?: string[];
  dstNodeArgs?: string[];
}

/** Told the processes just before `migrate`; what it returns is awaited once the destination is done (bench/profile.ts: perf). */
export type AroundMigration = (src: End, dst: End) => Promise<() => Promise<void>>;

/** Which program and release a scenario runs, e.g. "qmigd as 7.2" or "QEMU 7.2". */
export function implName(s: Scenario): string {
  if (s.impl === 'qemu') return `QEMU ${COMPARED_RELEASE}`;
  return s.release ? `qmigd as ${s.release}` : `qmigd as ${DEFAULT_RELEASE} (default)`;
}

export function describe(s: Scenario): string {
  const content = s.content === 'random' ? 'random RAM' : 'all-zero RAM';
  const state = s.paused ? 'paused (-S)' : `running, workload ${s.workload!.rate}/s ${s.workload!.pattern}`;
  const ch = s.channels > 1 ? `multifd ${s.channels} channels` : 'single channel';
  const extra = `${s.thpOff ? ', THP off (control)' : ''}${s.prealloc ? ', destination RAM pre-allocated' : ''}${s.srcArgs?.length ? `, source ${s.srcArgs.join(' ')}` : ''}${s.dstArgs?.length ? `, destination ${s.dstArgs.join(' ')}` : ''}`;
  return `${content}, ${state}, ${ch}${extra}`;
}

export interface MigrationRun {
  status: string;
  errorDesc?: string;
  totalTimeMs?: number;
  downtimeMs?: number;
  /** The source's downtime-limit (query-migrate-parameters) when it migrated. */
  downtimeLimitMs?: number;
  setupTimeMs?: number;
  ramTotal?: number;
  transferred?: number;
  dirtySyncCount?: number;
  /** query-migrate's mbps (the last window's). */
  mbps?: number;
  /** ram.total / total-time. */
  mibPerSec?: number;
  /** From sending migrate to the final query-migrate. */
  wallMs: number;
  incoming: string;
  srcPeakRss?: number;
  dstPeakRss?: number;
  /** CPU time (all threads) each process used from `migrate` until the destination completed. */
  srcCpuMs?: number;
  dstCpuMs?: number;
  /** 'yes', 'no (...)' or 'not checked'. */
  verified: string;
  qmp?: Quantiles;
}

/** query-migrate round trips during a run: on the source, and on the destination meanwhile. */
interface RunSamples {
  src: number[];
  dst: number[];
}

export interface ScenarioResult {
  scenario: Scenario;
  label: string;
  /** Why it did not run (not installed, capability refused). */
  notRun?: string;
  runs: MigrationRun[];
  /** Medians over the completed runs. */
  mibPerSec?: number;
  totalTimeMs?: number;
  downtimeMs?: number;
  /** Largest over the runs. */
  srcPeakRss?: number;
  dstPeakRss?: number;
  /** query-migrate round trips on the source, all runs pooled. */
  qmp?: Quantiles;
  /** The same on the destination. */
  dstQmp?: Quantiles;
}

export interface MigrationContext {
  size: number;
  randomFile: string;
  /** `size` zero bytes (sparse). */
  zeroFile: string;
  /** SHA-256 of the random file and of `size` zero bytes. */
  randomSha: string;
  zeroSha: string;
}

/** The guest RAM images of a run (random and zero), written into `dir`, with their digests. */
export async function makeContext(dir: string, size: number): Promise<MigrationContext> {
  const randomFile = join(dir, 'random-ram.bin');
  await writeRandomFile(randomFile, size);
  const zeroFile = join(dir, 'zero-ram.bin');
  writeZeroFile(zeroFile, size);
  return { size, randomFile, zeroFile, randomSha: await sha256File(randomFile), zeroSha: sha256Zeros(size) };
}

/** A sparse file of `size` zero bytes. */
export function writeZeroFile(path: string, size: number): void {
  const fd = openSync(path, 'w', 0o600);
  try {
    ftruncateSync(fd, size);
  } finally {
    closeSync(fd);
  }
}

/** The capability or parameter was refused: the scenario is not available on this side. */
class Unsupported extends Error {}

/**
 * Every scenario, in the order one round runs them: each group (a row of the summary) back to
 * back, so that qmigd and QEMU see the same state of the machine; migrationBench reverses each
 * group on every other round, so neither side always goes first.
 */
export function scenarios(): Scenario[] {
  const q = COMPARED_RELEASE;
  return [
    { id: 'qmigd-random-paused', impl: 'qmigd', group: 'random-paused', release: q, content: 'random', paused: true, channels: 1 },
    { id: 'qemu-random-paused', impl: 'qemu', group: 'random-paused', content: 'random', paused: true, channels: 1 },
    { id: 'qemu-random-paused-thpoff', impl: 'qemu', group: 'random-paused', content: 'random', paused: true, channels: 1, thpOff: true },
    // Faults armed but idle (issue 15): a channel fault that never fires and a QMP fault on a command never sent.
    { id: 'qmigd-random-paused-faults', impl: 'qmigd', group: 'random-paused', release: q, content: 'random', paused: true, channels: 1, srcArgs: ['--fault', 'kind=close,after-bytes=1T', '--fault', 'kind=command-error,command=query-uuid'], dstArgs: ['--fault', 'kind=stall,side=receive,after-bytes=1T'] },
    // The page and load loops on threads of their own (--page-thread on at both ends), beside the default (off).
    { id: 'qmigd-random-paused-thread', impl: 'qmigd', group: 'random-paused', release: q, content: 'random', paused: true, channels: 1, srcArgs: ['--page-thread', 'on'], dstArgs: ['--page-thread', 'on'] },
    { id: 'qmigd-random-paused-prealloc', impl: 'qmigd', group: 'prealloc', release: q, content: 'random', paused: true, channels: 1, prealloc: true },
    { id: 'qemu-random-paused-prealloc', impl: 'qemu', group: 'prealloc', content: 'random', paused: true, channels: 1, prealloc: true },
    { id: 'qmigd-random-paused-multifd2', impl: 'qmigd', group: 'multifd2', release: q, content: 'random', paused: true, channels: 2 },
    { id: 'qemu-random-paused-multifd2', impl: 'qemu', group: 'multifd2', content: 'random', paused: true, channels: 2 },
    { id: 'qmigd-random-paused-multifd2-thread', impl: 'qmigd', group: 'multifd2', release: q, content: 'random', paused: true, channels: 2, srcArgs: ['--page-thread', 'on'], dstArgs: ['--page-thread', 'on'] },
    { id: 'qmigd-zero-paused', impl: 'qmigd', group: 'zero', release: q, content: 'zero', paused: true, channels: 1 },
    { id: 'qemu-zero-paused', impl: 'qemu', group: 'zero', content: 'zero', paused: true, channels: 1 },
    // QEMU -M none has no CPU, so no workload: qmigd only, as its default release.
    { id: 'qmigd-random-running', impl: 'qmigd', group: 'running', content: 'random', paused: false, workload: WORKLOAD, channels: 1 },
  ];
}

/** Round `round`'s order: the groups in order, each reversed on odd rounds. */
export function roundOrder<T extends { scenario: Scenario }>(results: T[], round: number): T[] {
  const groups: T[][] = [];
  for (const r of results) {
    const last = groups.at(-1);
    if (last && last[0]!.scenario.group === r.scenario.group) last.push(r);
    else groups.push([r]);
  }
  return groups.flatMap((g) => (round % 2 ? [...g].reverse() : g));
}

/** Samples query-migrate on the destination at the same pace until `stop` says the source's sampling ended. */
async function sampleDestination(qmp: QmpClient, stopped: () => boolean): Promise<number[]> {
  const samples: number[] = [];
  while (!stopped()) {
    const start = performance.now();
    await within(qmp.execute('query-migrate'), QMP_TIMEOUT_MS, 'query-migrate on the destination');
    if (!stopped()) samples.push(performance.now() - start);
    const wait = start + SAMPLE_EVERY_MS - performance.now();
    if (wait > 0) await sleep(wait);
  }
  return samples;
}

/** Samples query-migrate until the migration reaches a final state; returns the round trips (ms). */
async function sampleQueryMigrate(qmp: QmpClient, onTimeout: () => void): Promise<{ samples: number[]; final: MigrateInfo }> {
  const samples: number[] = [];
  const deadline = performance.now() + MIGRATION_TIMEOUT_MS;
  let cancelled = false;
  for (;;) {
    const start = performance.now();
    const info = await within(qmp.execute<MigrateInfo>('query-migrate'), QMP_TIMEOUT_MS, 'query-migrate on the source');
    const rtt = performance.now() - start;
    // A reply that already says "completed" came after the migration: not "during" it.
    if (FINAL.has(info.status ?? '')) return { samples, final: info };
    samples.push(rtt);
    if (!cancelled && performance.now() > deadline) {
      cancelled = true;
      onTimeout();
    }
    if (performance.now() > deadline + QMP_TIMEOUT_MS) throw new Error(`migration still ${info.status} ${QMP_TIMEOUT_MS} ms after migrate_cancel`);
    const wait = start + SAMPLE_EVERY_MS - performance.now();
    if (wait > 0) await sleep(wait);
  }
}


/** Starts both ends; stops whichever started if the other did not. */
async function startPair(s: Scenario, ctx: MigrationContext, dir: string): Promise<{ src: End; dst: End }> {
  const started = await Promise.allSettled([
    startEnd({ kind: s.impl, name: 'destination', dir, size: ctx.size, deferIncoming: true, thpOff: s.thpOff, prealloc: s.prealloc, release: s.release, qmigdArgs: s.dstArgs, nodeArgs: s.dstNodeArgs }),
    startEnd({
      kind: s.impl,
      name: 'source',
      dir,
      size: ctx.size,
      ramFile: s.content === 'random' ? ctx.randomFile : ctx.zeroFile,
      paused: s.paused,
      thpOff: s.thpOff,
      release: s.release,
      qmigdArgs: [...(s.workload ? ['--dirty-rate', s.workload.rate, '--dirty-pattern', s.workload.pattern] : []), ...(s.srcArgs ?? [])],
      nodeArgs: s.srcNodeArgs,
    }),
  ]);
  const [d, r] = started;
  if (d.status === 'fulfilled' && r.status === 'fulfilled') return { dst: d.value, src: r.value };
  await Promise.all(started.map((x) => (x.status === 'fulfilled' ? x.value.stop() : undefined)));
  const err = (d.status === 'rejected' ? d.reason : (r as PromiseRejectedResult).reason) as Error;
  if (s.prealloc && /unknown option '--mem-prealloc'/.test(err.message)) throw new Unsupported('this qmigd has no --mem-prealloc');
  throw err;
}

async function verify(s: Scenario, ctx: MigrationContext, src: End, dst: End): Promise<string> {
  const want = s.workload ? undefined : s.content === 'random' ? ctx.randomSha : ctx.zeroSha;
  if (s.impl === 'qmigd') {
    const [a, b] = await Promise.all([
      src.qmp.execute<{ sha256: string; size: number }>('__org.qmigd_query-ram-digest'),
      dst.qmp.execute<{ sha256: string; size: number }>('__org.qmigd_query-ram-digest'),
    ]);
    if (a.sha256 !== b.sha256 || a.size !== b.size) return 'no (source and destination digests differ)';
    if (want && a.sha256 !== want) return 'no (source digest is not the initial RAM image)';
    return 'yes';
  }
  const file = join(ramDir() ?? dst.name, `qmigd-bench-dump-${process.pid}-${Date.now()}.bin`);
  try {
    await dst.qmp.execute('pmemsave', { val: 0, size: ctx.size, filename: file });
    const got = await sha256File(file);
    return got === want ? 'yes' : 'no (destination dump differs from the RAM image)';
  } finally {
    rmSync(file, { force: true });
  }
}

export async function migrateOnce(s: Scenario, ctx: MigrationContext, check: boolean, around?: AroundMigration): Promise<{ run: MigrationRun; samples: RunSamples }> {
  const dir = makeTempDir('qmigd-bench-mig-');
  let ends: { src: End; dst: End } | undefined;
  try {
    ends = await startPair(s, ctx, dir);
    const { src, dst } = ends;
    if (s.channels > 1) {
      for (const e of [dst, src]) {
        try {
          await e.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'multifd', state: true }] });
          await e.qmp.execute('migrate-set-parameters', { 'multifd-channels': s.channels });
        } catch (err) {
          throw new Unsupported((err as Error).message);
        }
      }
    }
    const uri = `tcp:127.0.0.1:${await freePort()}`;
    await dst.qmp.execute('migrate-incoming', { uri });
    await until('destination listening', () => dst.qmp.execute<Record<string, unknown>>('query-migrate'), (i) => 'socket-address' in i);
    await src.qmp.execute('migrate-set-parameters', { 'max-bandwidth': MAX_BANDWIDTH });
    const downtimeLimitMs = (await src.qmp.execute<{ 'downtime-limit'?: number }>('query-migrate-parameters'))['downtime-limit'];

    const after = await around?.(src, dst);
    const cpu0 = [cpuMs(src.pid), cpuMs(dst.pid)];
    const wallStart = performance.now();
    await src.qmp.execute('migrate', { uri });
    let srcDone = false;
    const dstSampling = sampleDestination(dst.qmp, () => srcDone);
    const { samples } = await sampleQueryMigrate(src.qmp, () => void src.qmp.execute('migrate_cancel').catch(() => undefined)).finally(() => (srcDone = true));
    const dstSamples = await dstSampling;
    const wallMs = performance.now() - wallStart;
    const info = await src.qmp.execute<MigrateInfo>('query-migrate'); // once more, after the end
    const incoming = info.status === 'completed' ? await waitIncomingDone(dst.qmp) : 'not checked';
    const cpu1 = [cpuMs(src.pid), cpuMs(dst.pid)];
    await after?.();
    const used = (i: number): number | undefined => (cpu0[i] === undefined || cpu1[i] === undefined ? undefined : cpu1[i]! - cpu0[i]!);
    const srcPeakRss = peakRss(src.pid);
    const dstPeakRss = peakRss(dst.pid);
    let verified = `no (migration ${info.status})`;
    if (info.status === 'completed') {
      if (incoming !== 'completed') verified = `no (destination ${incoming})`;
      else verified = check ? await within(verify(s, ctx, src, dst), QMP_TIMEOUT_MS, 'RAM check') : 'not checked';
    }
    const total = info.ram?.total;
    const tt = info['total-time'];
    const run: MigrationRun = {
      status: info.status ?? 'none',
      errorDesc: info['error-desc'],
      totalTimeMs: tt,
      downtimeMs: info.downtime,
      downtimeLimitMs,
      setupTimeMs: info['setup-time'],
      ramTotal: total,
      transferred: info.ram?.transferred,
      dirtySyncCount: info.ram?.['dirty-sync-count'],
      mbps: info.ram?.mbps,
      mibPerSec: info.status === 'completed' && tt && total ? total / MiB / (tt / 1000) : undefined,
      wallMs,
      incoming,
      srcPeakRss,
      dstPeakRss,
      srcCpuMs: used(0),
      dstCpuMs: used(1),
      verified,
      qmp: quantiles(samples),
    };
    return { run, samples: { src: samples, dst: dstSamples } };
  } catch (err) {
    if (!(err instanceof Unsupported) && ends) {
      for (const e of [ends.src, ends.dst]) {
        const tail = e.log();
        if (tail) progress(`${s.id} ${e.name} log (last lines):\n${tail}`);
      }
    }
    throw err;
  } finally {
    if (ends) await Promise.all([ends.src.stop(), ends.dst.stop()]);
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Runs every scenario `repeats` times, round robin (so a slow spell of the machine hits both
 * implementations), and prints the detail table.
 */
export async function migrationBench(
  ctx: MigrationContext,
  repeats: number,
  qemu = qemuVersion() !== undefined,
  budgetMs = Infinity,
  /** Runs at the start of each round (run.ts runs the raw pump there, so both see the same machine). */
  eachRound?: (round: number) => Promise<void>,
): Promise<ScenarioResult[]> {
  const started = performance.now();
  const results: ScenarioResult[] = scenarios().map((scenario) => ({ scenario, label: describe(scenario), runs: [] }));
  const pooled = new Map<string, RunSamples>();
  const thpOff = qemu && thpOffAvailable();
  for (const r of results) {
    if (r.scenario.impl === 'qemu' && !qemu) r.notRun = 'QEMU (qemu-system-x86_64) is not installed';
    else if (r.scenario.thpOff && !thpOff) r.notRun = 'cannot disable THP for QEMU here (needs python3 and prctl)';
  }
  let rounds = 0;
  for (let i = 0; i < repeats; i++) {
    if (i >= 3 && performance.now() - started > budgetMs) {
      progress(`migrations: stopping after ${i} rounds (time budget of ${(budgetMs / 1000).toFixed(0)} s spent)`);
      break;
    }
    rounds++;
    await eachRound?.(i);
    for (const r of roundOrder(results, i)) {
      if (r.notRun) continue;
      const s = r.scenario;
      progress(`migration ${s.id}, run ${i + 1}/${repeats}`);
      try {
        // The RAM is checked once per scenario, in its first completed run.
        const check = !r.runs.some((x) => x.status === 'completed');
        const { run, samples } = await migrateOnce(s, ctx, check);
        r.runs.push(run);
        const before = pooled.get(s.id) ?? { src: [], dst: [] };
        pooled.set(s.id, { src: [...before.src, ...samples.src], dst: [...before.dst, ...samples.dst] });
        progress(`  ${run.status}: total-time ${run.totalTimeMs} ms, ${fmt(run.mibPerSec)} MiB/s, verified ${run.verified}`);
      } catch (err) {
        if (err instanceof Unsupported) {
          r.notRun = `${/not implemented/.test(err.message) ? 'not implemented' : 'not available'} (${s.impl}: ${err.message})`;
          progress(`  ${r.notRun}`);
        } else {
          r.runs.push({ status: 'error', errorDesc: (err as Error).message, wallMs: 0, incoming: '-', verified: 'no' });
          progress(`  error: ${(err as Error).message}`);
          process.exitCode = 1;
        }
      }
    }
  }
  for (const r of results) {
    const ok = r.runs.filter((x) => x.status === 'completed' && x.mibPerSec !== undefined);
    if (ok.length) {
      r.mibPerSec = median(ok.map((x) => x.mibPerSec!));
      r.totalTimeMs = median(ok.map((x) => x.totalTimeMs!));
      r.downtimeMs = median(ok.map((x) => x.downtimeMs ?? NaN));
    }
    const peak = (f: (x: MigrationRun) => number | undefined): number | undefined => {
      const v = r.runs.map(f).filter((x): x is number => x !== undefined);
      return v.length ? Math.max(...v) : undefined;
    };
    r.srcPeakRss = peak((x) => x.srcPeakRss);
    r.dstPeakRss = peak((x) => x.dstPeakRss);
    r.qmp = quantiles(pooled.get(r.scenario.id)?.src ?? []);
    r.dstQmp = quantiles(pooled.get(r.scenario.id)?.dst ?? []);
  }
  printDetails(ctx.size, results, rounds);
  return results;
}

function printDetails(size: number, results: ScenarioResult[], repeats: number): void {
  console.log('');
  console.log(`Migrations, ${size / MiB} MiB guest, TCP 127.0.0.1, max-bandwidth ${MAX_BANDWIDTH / MiB / 1024} GiB/s, ${repeats} runs each, round robin, qmigd and QEMU of a comparison back to back and alternating which goes first (median; each run in brackets). MiB/s = ram.total / total-time.`);
  console.log('');
  const rows: string[][] = [];
  for (const r of results) {
    const name = `${implName(r.scenario)}: ${r.label}`;
    if (r.notRun && r.runs.length === 0) {
      rows.push([name, r.notRun, '-', '-', '-', '-', '-', '-', '-', '-', '-']);
      continue;
    }
    const each = (f: (x: MigrationRun) => string): string => r.runs.map(f).join(' / ');
    const statuses = [...new Set(r.runs.map((x) => (x.status === 'completed' ? x.status : `${x.status}${x.errorDesc ? `: ${x.errorDesc}` : ''}`)))].join('; ');
    rows.push([
      name,
      statuses,
      `${fmt(r.mibPerSec)} (${each((x) => fmt(x.mibPerSec, 0))})`,
      `${fmt(r.totalTimeMs, 0)} (${each((x) => String(x.totalTimeMs ?? '-'))})`,
      `${fmt(r.downtimeMs, 0)} (${each((x) => String(x.downtimeMs ?? '-'))})`,
      each((x) => String(x.setupTimeMs ?? '-')),
      each((x) => mib(x.transferred, 1)),
      each((x) => String(x.dirtySyncCount ?? '-')),
      each((x) => `${fmt(x.srcCpuMs, 0)}/${fmt(x.dstCpuMs, 0)}`),
      `${mib(r.srcPeakRss)} / ${mib(r.dstPeakRss)}`,
      [...new Set(r.runs.map((x) => x.verified).filter((v) => v !== 'not checked'))].join('; ') || '-',
    ]);
  }
  table(['scenario', 'status', 'MiB/s', 'total-time ms', 'downtime ms', 'setup-time ms', 'transferred MiB', 'dirty-sync-count', 'CPU ms src/dst', 'peak RSS MiB src / dst (max)', 'RAM verified (once)'], rows);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const size = process.argv[2] ? parseSize(process.argv[2]) : 1 << 30;
  const repeats = process.argv[3] ? Number(process.argv[3]) : 1;
  const dir = makeTempDir('qmigd-bench-ram-');
  try {
    await migrationBench(await makeContext(dir, size), repeats);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
