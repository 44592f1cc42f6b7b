/**
 * COLO benchmarks, two qmigd daemons on loopback (a primary with random RAM, a secondary that
 * entered COLO from a migration with max-bandwidth 0):
 *
 *  1. Guest pause per checkpoint against the pages dirtied since the previous one. Checkpoints
 *     run on demand only (x-checkpoint-delay 3600000; each further change of it forces one). For
 *     each target, a sequential workload (distinct pages) dirties about that many pages and is
 *     stopped (rate 0), then a checkpoint is forced and the primary's pause-last-us and
 *     bytes-last read once its checkpoint count moves. Median of REPEATS.
 *  2. Failover: the primary SIGKILLed mid-COLO, COLO_EXIT on the secondary, then the time from
 *     sending x-colo-lost-heartbeat to the secondary's guest running again: its STOP, MIGRATION
 *     completed and RESUME events, and query-migrate/query-status polled every 1 ms (the
 *     secondary's guest already runs before the heartbeat, so "running" alone proves nothing).
 *     Median of REPEATS.
 *
 * Prints numbers; never fails on time.
 * Run by bench/run.ts (`npm run bench`), or alone: node dist/bench/colo.js [SIZE] [FAILOVER_SIZE]
 */
import { rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTempDir, MigrationPair, writeRandomFile, type MigrateInfo, type QmpClient, type QmpEvent } from '../src/cli/migration-pair.js';
import { parseSize } from '../src/cli/size.js';
import { attempt, median, sleep, until } from './common.js';

const MiB = 1 << 20;
const PAGE = 4096;
/** Dirty pages since the previous checkpoint, for table 1. */
const TARGETS = [0, 256, 1024, 4096, 16384, 65536];
const REPEATS = 3;
/** The workload dirties a target in about this long (then it is stopped). */
const DIRTY_MS = 150;
/** "Never" for the checkpoint timer: checkpoints happen only when forced. */
const ON_DEMAND_DELAY = 3_600_000;
/** Checkpoint period and workload of the COLO runs that end in a failover. */
const FAILOVER_DELAY = 100;
const FAILOVER_RATE = 8 * MiB;
/** Longest wait for any one step (entering COLO, a checkpoint, a failover). */
const STEP_TIMEOUT_MS = 120_000;

interface ColoStats {
  checkpoints: number;
  'pause-last-us': number;
  'pause-mean-us': number;
  'pause-max-us': number;
  'bytes-last': number;
  'bytes-mean': number;
  'bytes-total': number;
}

interface Workload {
  rate: number;
  pattern: string;
  running: boolean;
  'pages-dirtied': number;
}

const stats = (q: QmpClient): Promise<ColoStats> => q.execute<ColoStats>('__org.qmigd_query-colo-stats');
const workload = (q: QmpClient): Promise<Workload> => q.execute<Workload>('__org.qmigd_query-workload');

/** Starts a pair and takes it into COLO; the primary's workload starts at `rate`. */
async function coloPair(memory: number, memoryFile: string, delayMs: number, rate: number, pattern: string): Promise<{ pair: MigrationPair; startMs: number; migrateMs: number }> {
  const t0 = performance.now();
  const pair = await MigrationPair.start({ memory, memoryFile, dirtyRate: rate, dirtyPattern: pattern, logLevel: 'info' });
  const started = performance.now();
  try {
    const pri = pair.source.qmp;
    const sec = pair.destination.qmp;
    // The secondary asks for x-colo itself (QEMU 10.0, the default release, requires it; 7.2 takes it).
    await sec.execute('migrate-set-capabilities', {
      capabilities: [
        { capability: 'x-colo', state: true },
        { capability: 'events', state: true },
      ],
    });
    await pri.execute('migrate-set-capabilities', {
      capabilities: [
        { capability: 'x-colo', state: true },
        { capability: 'events', state: true },
      ],
    });
    await pri.execute('migrate-set-parameters', { 'x-checkpoint-delay': delayMs, 'max-bandwidth': 0 });
    await pri.execute('migrate', { uri: pair.uri });
    for (const [name, q] of [['primary', pri], ['secondary', sec]] as const) {
      const info = await until(`${name} entering colo`, () => q.execute<MigrateInfo>('query-migrate'), (i) => i.status === 'colo' || i.status === 'failed' || i.status === 'cancelled', { everyMs: 20, timeoutMs: STEP_TIMEOUT_MS });
      if (info.status !== 'colo') throw new Error(`${name}: migration ${info.status}${info['error-desc'] ? `: ${info['error-desc']}` : ''}`);
    }
    return { pair, startMs: started - t0, migrateMs: performance.now() - started };
  } catch (err) {
    logTails(pair);
    await pair.stop();
    throw err;
  }
}

function logTails(pair: MigrationPair): void {
  for (const [label, side] of [['primary', pair.source], ['secondary', pair.destination]] as const) {
    const tail = side.stderrTail(5);
    if (tail) console.log(`--- ${label} log (last lines) ---\n${tail}`);
  }
}

/** Forces one checkpoint on the primary; resolves to its stats once its count has moved. */
async function forceCheckpoint(pri: QmpClient): Promise<{ st: ColoStats; wallMs: number }> {
  const before = (await stats(pri)).checkpoints;
  const t0 = performance.now();
  await pri.execute('migrate-set-parameters', { 'x-checkpoint-delay': ON_DEMAND_DELAY });
  const st = await until('forced checkpoint', () => stats(pri), (s) => s.checkpoints > before, { everyMs: 1, timeoutMs: STEP_TIMEOUT_MS });
  const wallMs = performance.now() - t0;
  if (st.checkpoints !== before + 1) console.log(`note: ${st.checkpoints - before} checkpoints where one was forced`);
  return { st, wallMs };
}

/**
 * Dirties about `pages` distinct pages (sequential pattern), then stops the workload; returns the
 * pages written. The workload writes in 10 ms ticks, so it overshoots by up to a tick's worth:
 * 90% goes at full rate, the rest at a tenth of it.
 */
async function dirty(pri: QmpClient, pages: number): Promise<number> {
  const base = (await workload(pri))['pages-dirtied'];
  if (pages === 0) return 0;
  const rate = Math.ceil((pages * PAGE * 1000) / DIRTY_MS);
  const goal = pages > 1000 ? [Math.floor(pages * 0.9), pages] : [pages];
  for (const [i, n] of goal.entries()) {
    await pri.execute('__org.qmigd_set-workload', { rate: i === 0 ? rate : Math.ceil(rate / 10), pattern: 'sequential' });
    await until('workload', () => workload(pri), (w) => w['pages-dirtied'] - base >= n, { everyMs: 0, timeoutMs: STEP_TIMEOUT_MS });
  }
  await pri.execute('__org.qmigd_set-workload', { rate: 0 });
  return (await workload(pri))['pages-dirtied'] - base;
}

interface Point {
  dirtied: number;
  sentPages: number;
  pauseMs: number;
  mib: number;
  wallMs: number;
}

export interface ColoPauseRow {
  targetPages: number;
  pagesDirtied: number;
  pagesSent: number;
  primaryPauseMs: number;
  pauseMsEachRun: number[];
  checkpointMiB: number;
  forceToStatsMs: number;
}

export interface ColoResult {
  memory: number;
  repeats: number;
  pause?: { rows: ColoPauseRow[]; enterColoMs: number } | { error: string };
  failover?: { memory: number; medianMs: Record<string, number | null>; runs: Failover[] } | { error: string };
}

async function pauseTable(memory: number, memoryFile: string): Promise<{ rows: ColoPauseRow[]; enterColoMs: number }> {
  const { pair, startMs, migrateMs } = await coloPair(memory, memoryFile, ON_DEMAND_DELAY, 0, 'sequential');
  const rows: string[] = [];
  const data: ColoPauseRow[] = [];
  try {
    const pri = pair.source.qmp;
    const sec = pair.destination.qmp;
    // One checkpoint first, so the series starts from a clean dirty log.
    await forceCheckpoint(pri);
    for (const target of TARGETS) {
      const points: Point[] = [];
      for (let i = 0; i < REPEATS; i++) {
        const dirtied = await dirty(pri, target);
        const { st, wallMs } = await forceCheckpoint(pri);
        points.push({ dirtied, sentPages: st['bytes-last'] / PAGE, pauseMs: st['pause-last-us'] / 1000, mib: st['bytes-last'] / MiB, wallMs });
      }
      const m = (f: (p: Point) => number): number => median(points.map(f));
      data.push({
        targetPages: target,
        pagesDirtied: m((p) => p.dirtied),
        pagesSent: m((p) => p.sentPages),
        primaryPauseMs: m((p) => p.pauseMs),
        pauseMsEachRun: points.map((p) => p.pauseMs),
        checkpointMiB: m((p) => p.mib),
        forceToStatsMs: m((p) => p.wallMs),
      });
      rows.push(
        `| ${target} | ${m((p) => p.dirtied)} | ${m((p) => p.sentPages).toFixed(1)} | ${m((p) => p.pauseMs).toFixed(2)} | ${points.map((p) => p.pauseMs.toFixed(1)).join(' / ')} | ${m((p) => p.mib).toFixed(2)} | ${m((p) => p.wallMs).toFixed(1)} |`,
      );
    }
    const [ps, ss] = await Promise.all([stats(pri), stats(sec)]);
    console.log('');
    console.log(`COLO checkpoints: ${memory / MiB} MiB random RAM, loopback, max-bandwidth 0, checkpoints forced on demand (sequential workload stopped before each), median of ${REPEATS}`);
    console.log('');
    console.log('| dirty pages (target) | pages dirtied (workload) | pages sent (bytes-last / 4096) | primary pause ms | pause ms, each run | checkpoint MiB | force → stats moved ms |');
    console.log('|---|---|---|---|---|---|---|');
    for (const r of rows) console.log(r);
    console.log('');
    console.log(`entering COLO: daemons started in ${startMs.toFixed(0)} ms, migrate → both sides colo ${migrateMs.toFixed(0)} ms; checkpoints primary ${ps.checkpoints}, secondary ${ss.checkpoints}; primary pause mean/max ${(ps['pause-mean-us'] / 1000).toFixed(2)}/${(ps['pause-max-us'] / 1000).toFixed(2)} ms, secondary pause mean/max ${(ss['pause-mean-us'] / 1000).toFixed(2)}/${(ss['pause-max-us'] / 1000).toFixed(2)} ms; bytes-total primary ${ps['bytes-total']}, secondary ${ss['bytes-total']}`);
    return { rows: data, enterColoMs: migrateMs };
  } finally {
    await pair.stop();
  }
}

export interface Failover {
  /** Run state of the secondary between COLO_EXIT and the heartbeat. */
  before: string;
  /** Until query-migrate said completed and then query-status running (polled every 1 ms). */
  polledMs: number;
  replyMs: number;
  stopMs?: number;
  completedMs?: number;
  resumeMs?: number;
  status: string;
  checkpoints: number;
}

/**
 * One failover. The secondary's guest runs between checkpoints, and goes on running after the
 * primary dies (as in QEMU), so "running" alone says nothing: the failover stops it (STOP), the
 * migration completes, and the guest starts again (RESUME). Times are from sending the heartbeat
 * to the arrival of each reply or event.
 */
async function failoverRun(memory: number, memoryFile: string): Promise<Failover> {
  const { pair } = await coloPair(memory, memoryFile, FAILOVER_DELAY, FAILOVER_RATE, 'uniform');
  try {
    const sec = pair.destination.qmp;
    // A few checkpoints of a dirtying guest first.
    const { checkpoints } = await until('secondary checkpoints', () => stats(sec), (s) => s.checkpoints >= 3, { everyMs: 20, timeoutMs: STEP_TIMEOUT_MS });
    const exited = sec.waitEvent((e) => e.event === 'COLO_EXIT', STEP_TIMEOUT_MS);
    pair.source.proc.kill('SIGKILL');
    const exit = await exited;
    if (exit.data?.mode !== 'secondary' || exit.data?.reason !== 'error') console.log(`note: COLO_EXIT ${JSON.stringify(exit.data)} (expected secondary/error)`);
    const before = (await sec.execute<{ status: string }>('query-status')).status;

    const at: Partial<Record<'stop' | 'completed' | 'resume', number>> = {};
    const off = sec.onEvent((e: QmpEvent) => {
      const now = performance.now();
      if (e.event === 'STOP') at.stop ??= now;
      if (e.event === 'RESUME') at.resume ??= now;
      if (e.event === 'MIGRATION' && e.data?.status === 'completed') at.completed ??= now;
    });
    const t0 = performance.now();
    const reply = sec.execute('x-colo-lost-heartbeat').then(() => performance.now());
    let status = '';
    await until(
      'secondary completed and running',
      async () => {
        status = (await sec.execute<MigrateInfo>('query-migrate')).status ?? 'none';
        return status === 'completed' && (await sec.execute<{ status: string }>('query-status')).status === 'running';
      },
      (done) => done,
      { everyMs: 1, timeoutMs: STEP_TIMEOUT_MS },
    );
    const polledAt = performance.now();
    const replyAt = await reply;
    // The RESUME event, if it trails the state.
    await until('RESUME', async () => at.resume !== undefined || performance.now() - polledAt > 1000, (v) => v, { everyMs: 1, timeoutMs: STEP_TIMEOUT_MS });
    off();
    const rel = (v: number | undefined): number | undefined => (v === undefined ? undefined : v - t0);
    return {
      before,
      polledMs: polledAt - t0,
      replyMs: replyAt - t0,
      stopMs: rel(at.stop),
      completedMs: rel(at.completed),
      resumeMs: rel(at.resume),
      status,
      checkpoints,
    };
  } catch (err) {
    logTails(pair);
    throw err;
  } finally {
    await pair.stop();
  }
}

async function failoverTable(memory: number, memoryFile: string): Promise<{ memory: number; medianMs: Record<string, number | null>; runs: Failover[] }> {
  const runs: Failover[] = [];
  for (let i = 0; i < REPEATS; i++) runs.push(await failoverRun(memory, memoryFile));
  const fmt = (v: number | undefined): string => (v === undefined ? '-' : v.toFixed(2));
  const medianMs: Record<string, number | null> = {};
  const row = (label: string, f: (r: Failover) => number | undefined): void => {
    const v = runs.map(f).filter((x): x is number => x !== undefined);
    medianMs[label] = v.length ? median(v) : null;
    const med = v.length ? median(v).toFixed(2) : '-';
    const missing = v.length < runs.length ? ` (${runs.length - v.length} runs without it)` : '';
    console.log(`| ${label} | ${med}${missing} | ${runs.map((r) => fmt(f(r))).join(' / ')} |`);
  };
  console.log('');
  console.log(`COLO failover: ${memory / MiB} MiB random RAM, x-checkpoint-delay ${FAILOVER_DELAY} ms, workload ${FAILOVER_RATE / MiB} MiB/s uniform; primary SIGKILLed after >= 3 checkpoints, COLO_EXIT on the secondary, then x-colo-lost-heartbeat on it; median of ${REPEATS}`);
  console.log('');
  console.log('| from sending x-colo-lost-heartbeat to | median ms | each run ms |');
  console.log('|---|---|---|');
  row('its reply', (r) => r.replyMs);
  row('STOP event', (r) => r.stopMs);
  row('MIGRATION completed event', (r) => r.completedMs);
  row('RESUME event (guest running again)', (r) => r.resumeMs);
  row('query-migrate completed, then query-status running (polled every 1 ms)', (r) => r.polledMs);
  console.log('');
  console.log(`secondary run state between COLO_EXIT and the heartbeat: ${runs.map((r) => r.before).join(' / ')}; query-migrate after: ${runs.map((r) => r.status).join(' / ')}; secondary checkpoints before the kill: ${runs.map((r) => r.checkpoints).join(' / ')}`);
  return { memory, medianMs, runs };
}

/**
 * Both COLO tables. `ramFile`, when given, is a random RAM image of `memory` bytes to reuse (it
 * is not removed); otherwise one is generated. Returns the numbers it printed.
 */
export async function coloBench(memory = 1 << 30, failoverMemory = memory, ramFile?: string): Promise<ColoResult> {
  const dir = makeTempDir('qmigd-bench-colo-');
  const result: ColoResult = { memory, repeats: REPEATS };
  try {
    const primaryFile = ramFile ?? join(dir, 'primary-ram.bin');
    if (!ramFile) await writeRandomFile(primaryFile, memory);
    const pause = await attempt('COLO checkpoint benchmark', () => pauseTable(memory, primaryFile));
    result.pause = 'value' in pause ? pause.value : pause;
    let failFile = primaryFile;
    if (failoverMemory !== memory) {
      failFile = join(dir, 'failover-ram.bin');
      await writeRandomFile(failFile, failoverMemory);
    }
    const failover = await attempt('COLO failover benchmark', () => failoverTable(failoverMemory, failFile));
    result.failover = 'value' in failover ? failover.value : failover;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return result;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const memory = process.argv[2] ? parseSize(process.argv[2]) : undefined;
  await coloBench(memory, process.argv[3] ? parseSize(process.argv[3]) : memory);
}
