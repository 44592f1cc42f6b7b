/**
 * --memory-share on (QEMU's memory-backend-file share=on): the file is the guest's RAM, mapped
 * shared, so what the guest writes and what a migration brings in is in the file, multifd's
 * channel threads included; a missing file is made at the RAM's size.
 */
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { REPO, tempDir } from '../helpers/daemon.js';
import { digest, migrationStatus, randomRamFile, setCaps, side, startPair } from '../helpers/migration.js';

const MiB = 1 << 20;
const fileSha = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

t.test('the guest writes into the file', async (t) => {
  const ram = await randomRamFile(16 * MiB);
  const before = fileSha(ram);
  const s = await side(['-m', '16M', '--memory-file', ram, '--memory-share', 'on', '--dirty-rate', '64M']);
  t.teardown(() => s.daemon.stop());
  await new Promise((r) => setTimeout(r, 500));
  await s.qmp.ok('stop');
  const now = await digest(s);
  t.not(now, before, 'the workload changed RAM');
  t.equal(fileSha(ram), now, 'and the file is that RAM');
});

t.test('a migration into a shared file that did not exist: made at the RAM size, holding the RAM, multifd channels too', async (t) => {
  const image = await randomRamFile(64 * MiB);
  const target = join(tempDir(), 'incoming.ram');
  t.notOk(existsSync(target), 'no file yet');
  const p = await startPair({ memory: '64M', srcArgs: ['--memory-file', image], dstArgs: ['--memory-file', target, '--memory-share', 'on'] });
  t.teardown(p.stop);
  t.equal(statSync(target).size, 64 * MiB, 'made at the RAM size');
  for (const s of [p.src, p.dst]) await setCaps(s, { multifd: true });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  await migrationStatus(p.dst, 'completed');
  const info = (await p.src.qmp.ok('query-migrate')) as { ram: { 'multifd-bytes': number } };
  t.ok(info.ram['multifd-bytes'] > 32 * MiB, `the pages went over the channels (${info.ram['multifd-bytes']} bytes)`);
  t.equal(fileSha(target), fileSha(image), 'the destination\'s file holds the source\'s RAM');
  t.equal(await digest(p.dst), fileSha(image), 'as its RAM does');
});

t.test('--memory-share on needs --memory-file', async (t) => {
  const r = spawnSync(join(REPO, 'bin', 'qmigd'), ['--memory-share', 'on'], { encoding: 'utf8', timeout: 10000 });
  t.equal(r.status, 1, 'refused, exit 1');
  t.match(r.stderr, /--memory-share on: needs --memory-file/);
});
