/**
 * Migration benchmark: 1 GiB of random guest RAM migrated between two qmigd daemons on loopback
 * (max-bandwidth 0, no workload), with the QMP round-trip latency of query-migrate on the
 * SOURCE's monitor measured for the whole migration (one request in flight, a new one every
 * 5 ms, or at once if the previous reply took longer). Prints numbers; never fails on time.
 *
 * Run by bench/run.ts (`npm run bench`), or alone: node dist/bench/migration.js [SIZE]
 */
import { rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FINAL, makeTempDir, MigrationPair, waitIncomingDone, writeRandomFile, type MigrateInfo, type QmpClient } from '../src/cli/migration-pair.js';
import { parseSize } from '../src/cli/size.js';

const MiB = 1 << 20;
/** Interval between the starts of two query-migrate samples. */
const SAMPLE_EVERY_MS = 5;


interface Latency {
  samples: number[];
  final: MigrateInfo;
}

/** Samples query-migrate until the migration reaches a final state; returns the round trips (ms). */
async function sampleQueryMigrate(qmp: QmpClient): Promise<Latency> {
  const samples: number[] = [];
  for (;;) {
    const start = performance.now();
    const info = await qmp.execute<MigrateInfo>('query-migrate');
    const rtt = performance.now() - start;
    // A reply that already says "completed" came after the migration: not "during" it.
    if (FINAL.has(info.status ?? '')) return { samples, final: info };
    samples.push(rtt);
    const wait = start + SAMPLE_EVERY_MS - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
}


export async function migrationBench(memory = 1 << 30): Promise<void> {
  const dir = makeTempDir('qmigd-bench-migration-');
  const memoryFile = join(dir, 'source-ram.bin');
  let pair: MigrationPair | undefined;
  try {
    const t0 = Date.now();
    await writeRandomFile(memoryFile, memory);
    const fileMs = Date.now() - t0;
    pair = await MigrationPair.start({ dir, memory, memoryFile });
    const src = pair.source.qmp;
    const dst = pair.destination.qmp;
    await src.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    await dst.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    await src.execute('migrate-set-parameters', { 'max-bandwidth': 0 });

    const wallStart = performance.now();
    await src.execute('migrate', { uri: pair.uri });
    const { samples, final } = await sampleQueryMigrate(src);
    const wallMs = performance.now() - wallStart;
    const info = await src.execute<MigrateInfo>('query-migrate'); // once more, after finish()
    const incoming = info.status === 'completed' ? await waitIncomingDone(dst) : 'not checked';
    let digests = 'no';
    if (info.status === 'completed' && incoming === 'completed') {
      const [a, b] = await Promise.all([
        src.execute<{ sha256: string; size: number }>('__org.qmigd_query-ram-digest'),
        dst.execute<{ sha256: string; size: number }>('__org.qmigd_query-ram-digest'),
      ]);
      digests = a.sha256 === b.sha256 && a.size === b.size ? 'yes' : 'no (they differ)';
    } else if (info.status === 'completed') digests = `no (destination ${incoming})`;
    else digests = `no (migration ${info.status ?? final.status})`;

    const ms = (v: number | undefined): string => (v === undefined ? '-' : `${v} ms`);
    const total = info.ram?.total ?? memory;
    const totalTime = info['total-time'];
    console.log('');
    console.log(`| migration: ${memory / MiB} MiB random RAM, loopback, max-bandwidth 0, no workload | value |`);
    console.log('|---|---|');
    console.log(`| RAM size | ${total / MiB} MiB (${total} bytes) |`);
    console.log(`| status | ${info.status ?? 'none'}${info['error-desc'] ? `: ${info['error-desc']}` : ''} |`);
    console.log(`| total-time | ${ms(totalTime)} |`);
    console.log(`| downtime | ${ms(info.downtime)} |`);
    console.log(`| setup-time | ${ms(info['setup-time'])} |`);
    console.log(`| MiB/s (total / total-time) | ${totalTime ? (total / MiB / (totalTime / 1000)).toFixed(1) : '-'} |`);
    console.log(`| mbps (query-migrate) | ${info.ram ? info.ram.mbps.toFixed(2) : '-'} |`);
    console.log(`| transferred | ${info.ram ? `${(info.ram.transferred / MiB).toFixed(1)} MiB` : '-'} |`);
    console.log(`| dirty-sync-count | ${info.ram?.['dirty-sync-count'] ?? '-'} |`);
    console.log(`| digests match | ${digests} |`);
    console.log(`| wall clock, migrate to final query-migrate | ${wallMs.toFixed(0)} ms |`);
    console.log(`| random RAM file written in | ${fileMs} ms |`);
    console.log('');
    console.log('| benchmark | p50 ms | p99 ms | max ms | samples |');
    console.log('|---|---|---|---|---|');
    const label = `QMP query-migrate round trip on the source during the migration (one every ${SAMPLE_EVERY_MS} ms)`;
    if (samples.length === 0) console.log(`| ${label} | - | - | - | 0 |`);
    else {
      samples.sort((a, b) => a - b);
      const q = (p: number): string => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))]!.toFixed(3);
      console.log(`| ${label} | ${q(0.5)} | ${q(0.99)} | ${samples.at(-1)!.toFixed(3)} | ${samples.length} |`);
    }
  } catch (err) {
    console.log(`migration benchmark could not run: ${(err as Error).message}`);
    for (const side of pair ? [pair.source, pair.destination] : []) {
      const tail = side.stderrTail(5);
      if (tail) console.log(`--- ${side.name} log (last lines) ---\n${tail}`);
    }
    process.exitCode = 1;
  } finally {
    if (pair) await pair.stop();
    else rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await migrationBench(process.argv[2] ? parseSize(process.argv[2]) : undefined);
}
