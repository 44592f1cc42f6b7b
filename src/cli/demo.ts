/**
 * `qmigd demo`: a live migration between two local qmigd daemons, end to end. The source's
 * RAM is a temporary file of random bytes; the guest dirties it at --dirty-rate while a
 * progress line follows query-migrate; then the final statistics, and the RAM digests of both
 * sides compared. Exit 0 when the migration completed and the digests match, 1 otherwise;
 * both daemons are stopped and the temporary directory removed in every case (Ctrl-C too).
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { FINAL, makeTempDir, MigrationPair, waitIncomingDone, writeRandomFile, type MigrateInfo, type QmpClient } from './migration-pair.js';
import { parseSize } from './size.js';

export interface DemoOptions {
  memory: string;
  dirtyRate: string;
  maxBandwidth: string;
  xbzrle: boolean;
  autoConverge: boolean;
}


const MiB = 1 << 20;

const mib = (bytes: number): string => (bytes / MiB).toFixed(1);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function size(name: string, text: string): number {
  try {
    return parseSize(text);
  } catch (err) {
    throw new Error(`--${name}: ${(err as Error).message}`);
  }
}

/** Runs the demo; resolves with the exit status. */
export async function runDemo(opts: DemoOptions): Promise<number> {
  const memory = size('memory', opts.memory);
  if (memory <= 0 || memory % 4096 !== 0) throw new Error(`--memory: ${opts.memory} must be a positive multiple of 4096 bytes`);
  const dirtyRate = size('dirty-rate', opts.dirtyRate);
  const maxBandwidth = size('max-bandwidth', opts.maxBandwidth);

  const out = (line = ''): void => void process.stdout.write(`${line}\n`);
  const tty = process.stderr.isTTY === true;
  const dir = makeTempDir('qmigd-demo-');
  let starting: Promise<MigrationPair> | undefined;
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaning ??= (async () => {
      const pair = await starting?.catch(() => undefined);
      if (pair) await pair.stop();
      else rmSync(dir, { recursive: true, force: true });
    })());

  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    if (tty) process.stderr.write('\n');
    process.stderr.write(`qmigd demo: ${signal}, stopping both daemons\n`);
    void cleanup().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    const memoryFile = join(dir, 'source-ram.bin');
    out(`qmigd demo: ${mib(memory)} MiB guest, dirty rate ${mib(dirtyRate)} MiB/s, max-bandwidth ${maxBandwidth ? `${mib(maxBandwidth)} MiB/s` : 'unlimited'}` +
      `${opts.xbzrle ? ', xbzrle' : ''}${opts.autoConverge ? ', auto-converge' : ''}`);
    const t0 = Date.now();
    await writeRandomFile(memoryFile, memory);
    out(`random source RAM: ${memoryFile} (${Date.now() - t0} ms)`);

    starting = MigrationPair.start({ dir, memory, memoryFile, dirtyRate });
    const pair = await starting;
    const src = pair.source.qmp;
    const dst = pair.destination.qmp;
    out(`destination pid ${pair.destination.proc.pid} waiting on ${pair.uri}; source pid ${pair.source.proc.pid}`);

    const caps = [{ capability: 'events', state: true }];
    if (opts.xbzrle) caps.push({ capability: 'xbzrle', state: true });
    if (opts.autoConverge) caps.push({ capability: 'auto-converge', state: true });
    await src.execute('migrate-set-capabilities', { capabilities: caps });
    await dst.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    await src.execute('migrate-set-parameters', { 'max-bandwidth': maxBandwidth });

    let passes = 0;
    let finalStatus: string | undefined;
    src.onEvent((e) => {
      if (e.event === 'MIGRATION_PASS') passes = Math.max(passes, Number(e.data?.pass ?? 0));
      if (e.event === 'MIGRATION' && FINAL.has(String(e.data?.status))) finalStatus = String(e.data?.status);
    });

    await src.execute('migrate', { uri: pair.uri });
    const info = await followProgress(src, tty, () => finalStatus, () => passes);

    out();
    out(`status:             ${info.status}`);
    if (info['error-desc']) out(`error:              ${info['error-desc']}`);
    if (info['total-time'] !== undefined) out(`total-time:         ${info['total-time']} ms`);
    if (info.downtime !== undefined) out(`downtime:           ${info.downtime} ms`);
    if (info['setup-time'] !== undefined) out(`setup-time:         ${info['setup-time']} ms`);
    const ram = info.ram;
    if (ram) {
      const seconds = (info['total-time'] ?? 0) / 1000;
      out(`transferred:        ${mib(ram.transferred)} MiB (${ram.transferred} bytes)`);
      if (seconds > 0) out(`throughput:         ${(ram.total / MiB / seconds).toFixed(1)} MiB/s of guest RAM (total / total-time)`);
      out(`mbps:               ${ram.mbps.toFixed(2)}`);
      out(`dirty-sync-count:   ${ram['dirty-sync-count']}`);
      out(`normal pages:       ${ram.normal} (${mib(ram['normal-bytes'])} MiB)`);
      out(`duplicate pages:    ${ram.duplicate}`);
      out(`precopy-bytes:      ${mib(ram['precopy-bytes'])} MiB; downtime-bytes ${mib(ram['downtime-bytes'])} MiB`);
    }
    const x = info['xbzrle-cache'];
    if (x) {
      out(`xbzrle cache-size:  ${mib(x['cache-size'])} MiB`);
      out(`xbzrle pages:       ${x.pages} (${x.bytes} bytes encoded)`);
      out(`xbzrle cache-miss:  ${x['cache-miss']} (rate ${fmtRate(x['cache-miss-rate'])})`);
      out(`xbzrle encoding:    rate ${fmtRate(x['encoding-rate'])}, overflow ${x.overflow}`);
    }
    if (info['cpu-throttle-percentage'] !== undefined) out(`cpu throttle:       ${info['cpu-throttle-percentage']}%`);

    if (info.status !== 'completed') {
      out();
      out(`migration ${info.status}: no digest check`);
      return 1;
    }

    // The source may call it done before the destination has loaded the last bytes.
    const dstStatus = await waitIncomingDone(dst);
    if (dstStatus !== 'completed') {
      out(`destination incoming migration: ${dstStatus}`);
      return 1;
    }
    const [a, b] = await Promise.all([
      src.execute<{ sha256: string; size: number }>('__org.qmigd_query-ram-digest'),
      dst.execute<{ sha256: string; size: number }>('__org.qmigd_query-ram-digest'),
    ]);
    out();
    out(`source digest:      ${a.sha256} (${a.size} bytes)`);
    out(`destination digest: ${b.sha256} (${b.size} bytes)`);
    if (a.sha256 === b.sha256 && a.size === b.size) {
      out('digests match');
      return 0;
    }
    out('DIGESTS DIFFER: the destination RAM is not the source RAM');
    return 1;
  } catch (err) {
    if (interrupted) return new Promise<number>(() => undefined); // the signal handler exits
    const pair = await starting?.catch(() => undefined);
    process.stderr.write(`${tty ? '\n' : ''}qmigd demo: ${(err as Error).message}\n`);
    for (const side of pair ? [pair.source, pair.destination] : []) {
      const tail = side.stderrTail(5);
      if (tail) process.stderr.write(`--- ${side.name} log (last lines) ---\n${tail}\n`);
    }
    return 1;
  } finally {
    if (!interrupted) {
      await cleanup();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
}

/**
 * Polls query-migrate every 100 ms until a final status, drawing one progress line (\r) on a
 * TTY, or printing a line every second otherwise. Returns the final query-migrate.
 */
async function followProgress(src: QmpClient, tty: boolean, finalStatus: () => string | undefined, passes: () => number): Promise<MigrateInfo> {
  let lastPrint = 0;
  for (;;) {
    const info = await src.execute<MigrateInfo>('query-migrate');
    const status = info.status ?? 'none';
    const done = FINAL.has(status);
    const now = Date.now();
    if (tty) {
      const cols = process.stderr.columns || 100;
      process.stderr.write(`\r${progressLine(info, passes(), Math.max(10, Math.min(30, cols - 75))).slice(0, cols - 1)}\x1b[K`);
      if (done) process.stderr.write('\n');
    } else if (done || now - lastPrint >= 1000) {
      lastPrint = now;
      process.stderr.write(`${progressLine(info, passes(), 20)}\n`);
    }
    if (done) return info;
    // The MIGRATION event may say it is over before the next poll would.
    const waitUntil = Date.now() + 100;
    while (Date.now() < waitUntil && finalStatus() === undefined) await sleep(Math.min(20, waitUntil - Date.now()));
  }
}

function progressLine(info: MigrateInfo, passes: number, width: number): string {
  const ram = info.ram;
  const status = info.status ?? 'none';
  if (!ram) return `[${' '.repeat(width)}]   0.0%  ${status}`;
  const frac = ram.total > 0 ? Math.min(1, Math.max(0, (ram.total - ram.remaining) / ram.total)) : 0;
  const filled = Math.round(frac * width);
  const bar = `${'#'.repeat(filled)}${'-'.repeat(width - filled)}`;
  const pass = Math.max(passes, ram['dirty-sync-count']);
  return `[${bar}] ${(frac * 100).toFixed(1).padStart(5)}%  ${mib(ram.transferred).padStart(8)} MiB sent  ` +
    `${ram.mbps.toFixed(1).padStart(8)} mbps  pass ${pass}  ${status}`;
}


function fmtRate(v: number | string): string {
  return typeof v === 'number' ? v.toFixed(3) : v;
}
