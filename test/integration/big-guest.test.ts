/**
 * Guests beyond the 4 GiB a typed array holds in Node 20: a 64 GiB guest starts and costs only
 * the pages it writes, a 6 GiB guest with a dirtying workload migrates whole, and `qmigd inspect`
 * reads a stream that declares more than 4 GiB.
 */
import { spawn } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { BIN, rssKiB, tempDir } from '../helpers/daemon.js';
import { digest, migrationStatus, side, startPair } from '../helpers/migration.js';
import type { Msg } from '../helpers/qmp-client.js';

const GiB = 2 ** 30;

t.test('a 64 GiB guest starts, is written anywhere, and costs only what it touched', async (t) => {
  const g = await side(['-m', '64G', '-S']);
  t.teardown(() => g.daemon.stop());
  t.ok(rssKiB(g.daemon.proc.pid!) < 256 * 1024, `RSS ${Math.round(rssKiB(g.daemon.proc.pid!) / 1024)} MiB for 64 GiB of RAM`);
  await g.qmp.ok('__org.qmigd_set-workload', { rate: 64 << 20, pattern: 'uniform' });
  await g.qmp.ok('cont');
  await new Promise((r) => setTimeout(r, 300));
  await g.qmp.ok('stop');
  const dirtied = ((await g.qmp.ok('__org.qmigd_query-workload')) as Msg)['pages-dirtied'] as number;
  t.ok(dirtied > 1000, `${dirtied} pages written`);
  // The top 16 MiB of RAM, past 60 GiB: a uniform workload has written some of it.
  const file = join(g.daemon.dir, 'top.bin');
  await g.qmp.ok('pmemsave', { val: 64 * GiB - (16 << 20), size: 16 << 20, filename: file });
  t.equal(statSync(file).size, 16 << 20);
  t.ok(readFileSync(file).some((b) => b !== 0), 'pages beyond 4 GiB hold what the guest wrote');
  const rss = rssKiB(g.daemon.proc.pid!);
  t.ok(rss < 256 * 1024 + dirtied * 4, `RSS ${Math.round(rss / 1024)} MiB after ${dirtied} pages were written`);
});

t.test('a 6 GiB guest with a dirtying workload migrates whole', async (t) => {
  const p = await startPair({ memory: '6G', srcArgs: ['--dirty-rate', '16M'] });
  t.teardown(p.stop);
  await new Promise((r) => setTimeout(r, 500)); // pages written all over the 6 GiB first
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  await migrationStatus(p.src, 'completed');
  await migrationStatus(p.dst, 'completed');
  const [a, b] = await Promise.all([digest(p.src), digest(p.dst)]);
  t.equal(b, a, 'the destination RAM equals the source RAM');
  t.equal(((await p.dst.qmp.ok('query-migrate')) as Msg).status, 'completed');
});

t.test('qmigd inspect reads a stream of a 5 GiB guest', async (t) => {
  const file = join(tempDir(), 'guest.stream');
  const g = await side(['-m', '5G', '-S']);
  t.teardown(() => g.daemon.stop());
  await g.qmp.ok('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
  await g.qmp.ok('migrate', { uri: `exec:cat > ${file}` });
  await migrationStatus(g, 'completed');
  const want = await digest(g);
  const out = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
    const p = spawn(process.execPath, [BIN, 'inspect', '--qemu-version', '7.2', file], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.on('exit', (code) => resolve({ code, stdout }));
  });
  t.equal(out.code, 0);
  t.match(out.stdout, `RAM block "ram": ${5 * GiB} bytes, sha256 ${want}`);
});
