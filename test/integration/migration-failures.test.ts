/**
 * Migrations that do not complete: cancelled in each state, or cut off by a peer that dies.
 * The source must end in a final state with the guest running and its RAM untouched; a
 * destination whose source vanished exits 1 and says why, as QEMU 7.2 does.
 */
import t from 'tap';
import { digest, migrationStatus, randomRamFile, runState, setCaps, startPair, statuses, untilInfo } from '../helpers/migration.js';
import type { Msg } from '../helpers/qmp-client.js';

const MiB = 1 << 20;

t.test('cancel in setup: the migration never becomes active', async (t) => {
  const p = await startPair({ memory: '16M' });
  t.teardown(p.stop);
  // Both commands in one write: the cancel runs before the connection can complete.
  const from = p.src.qmp.lines.length;
  p.src.qmp.send(`{"execute":"migrate","arguments":{"uri":"${p.uri}"}}{"execute":"migrate_cancel"}`);
  await p.src.qmp.nextReply(from);
  await migrationStatus(p.src, 'cancelled');
  t.same(statuses(p.src), ['setup', 'cancelling', 'cancelled']);
  t.same(await p.src.qmp.ok('query-migrate'), { status: 'cancelled' });
  t.equal(await runState(p.src), 'running');
});

t.test('cancel in active: the guest keeps running with its RAM, the destination gives up', async (t) => {
  const p = await startPair({ memory: '64M', srcArgs: ['--memory-file', await randomRamFile(64 * MiB)] });
  t.teardown(p.stop);
  const before = await digest(p.src);
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 4 * MiB });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  await migrationStatus(p.src, 'active');
  const active = (await p.src.qmp.ok('query-migrate')) as Msg;
  t.equal(active.status, 'active');
  t.ok((active.ram as Msg).remaining as number > 0);
  await p.src.qmp.ok('migrate_cancel');
  await migrationStatus(p.src, 'cancelled');
  t.same(statuses(p.src), ['setup', 'active', 'cancelling', 'cancelled']);
  t.equal(await runState(p.src), 'running');
  t.equal(await digest(p.src), before, 'source RAM untouched');
  const { code } = await p.dst.daemon.exited;
  t.equal(code, 1, 'the destination exits 1');
  t.match(p.dst.daemon.stderr(), /load of migration failed: Input\/output error/);
  // A new migration may start after a cancel.
  t.match(await p.src.qmp.cmd('migrate', { uri: 'tcp:127.0.0.1:1' }), { return: {} });
  await migrationStatus(p.src, 'failed');
  t.match(await p.src.qmp.ok('query-migrate'), { status: 'failed', 'error-desc': "Failed to connect to '127.0.0.1:1': Connection refused" });
});

t.test('cancel in pre-switchover: the stopped guest runs again', async (t) => {
  const p = await startPair({ memory: '16M', srcArgs: ['--memory-file', await randomRamFile(16 * MiB)] });
  t.teardown(p.stop);
  await setCaps(p.src, { 'pause-before-switchover': true });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  await migrationStatus(p.src, 'pre-switchover');
  t.equal(await runState(p.src), 'finish-migrate');
  const from = p.src.qmp.events.length;
  await p.src.qmp.ok('migrate_cancel');
  await migrationStatus(p.src, 'cancelled');
  await p.src.qmp.waitEvent('RESUME', undefined, from);
  t.same(statuses(p.src), ['setup', 'active', 'pre-switchover', 'cancelling', 'cancelled']);
  t.equal(await runState(p.src), 'running');
  t.match(await p.src.qmp.cmd('migrate-continue', { state: 'pre-switchover' }), { error: { desc: 'Migration not in expected state: cancelled' } });
});

t.test('cancel racing with completion never leaves a migration stuck', async (t) => {
  const p = await startPair({ memory: '4M' });
  t.teardown(p.stop);
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  // Cancels sent while the (tiny) migration is finishing: whichever wins, it ends.
  for (let i = 0; i < 20; i++) await p.src.qmp.ok('migrate_cancel');
  const end = await p.src.qmp.waitEvent('MIGRATION', (d) => d.status === 'completed' || d.status === 'cancelled');
  const final = (await p.src.qmp.ok('query-migrate')) as Msg;
  t.equal(final.status, (end.data as Msg).status, `ended ${final.status}`);
  t.equal(await runState(p.src), final.status === 'completed' ? 'postmigrate' : 'running');
});

t.test('destination killed mid-way: source fails with error-desc, guest running, RAM intact', async (t) => {
  const p = await startPair({ memory: '64M', srcArgs: ['--memory-file', await randomRamFile(64 * MiB)] });
  t.teardown(p.stop);
  const before = await digest(p.src);
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 8 * MiB });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  await migrationStatus(p.dst, 'active');
  p.dst.daemon.proc.kill('SIGKILL');
  await migrationStatus(p.src, 'failed');
  const info = (await p.src.qmp.ok('query-migrate')) as Msg;
  t.equal(info.status, 'failed');
  t.match(info['error-desc'], /^Unable to write to socket: (Broken pipe|Connection reset by peer)$/);
  t.equal(await runState(p.src), 'running');
  t.equal(await digest(p.src), before);
});

t.test('multifd: destination killed mid-way: the source fails without hanging, and migrates again after', async (t) => {
  const ram = await randomRamFile(64 * MiB);
  const p = await startPair({ memory: '64M', srcArgs: ['--memory-file', ram] });
  t.teardown(p.stop);
  const before = await digest(p.src);
  for (const s of [p.src, p.dst]) await setCaps(s, { multifd: true });
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 8 * MiB });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  await untilInfo(p.src, (i) => ((i.ram as Msg | undefined)?.['multifd-bytes'] as number) > 0);
  p.dst.daemon.proc.kill('SIGKILL');
  await migrationStatus(p.src, 'failed');
  const info = (await p.src.qmp.ok('query-migrate')) as Msg;
  t.match(info['error-desc'], /^Unable to write to socket: (Broken pipe|Connection reset by peer)$/);
  t.equal(await runState(p.src), 'running');
  t.equal(await digest(p.src), before, 'source RAM intact');

  const again = await startPair({ memory: '64M' });
  t.teardown(again.stop);
  await setCaps(again.dst, { multifd: true });
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
  const from = p.src.qmp.events.length;
  await p.src.qmp.ok('migrate', { uri: again.uri });
  await migrationStatus(p.src, 'completed', from);
  await migrationStatus(again.dst, 'completed');
  t.equal(await digest(again.dst), before, 'the second destination has the RAM');
});

t.test('source killed mid-way: the destination exits 1 with a clear log line', async (t) => {
  const p = await startPair({ memory: '64M', srcArgs: ['--memory-file', await randomRamFile(64 * MiB)] });
  t.teardown(p.stop);
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 8 * MiB });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  await migrationStatus(p.dst, 'active');
  await untilInfo(p.src, (i) => ((i.ram as Msg | undefined)?.transferred as number) > MiB);
  p.src.daemon.proc.kill('SIGKILL');
  const { code } = await p.dst.daemon.exited;
  t.equal(code, 1);
  // QEMU's last line; a cut inside a section is also named ("error while loading state section id 2(ram)").
  // Where the stream stops decides the errno, as in QEMU 7.2: inside a record the read past the
  // end fails (EIO); between two of a RAM section's records the next header reads as 0, as
  // qemu_get_be64() gives at the end, and ram_load fails on those flags (EINVAL). A source killed
  // between two of its writes leaves the second.
  const log = p.dst.daemon.stderr();
  const said = /"level":50,.*"msg":"load of migration failed: (Input\/output error|Invalid argument)"/.exec(log);
  t.ok(said, 'the load fails with QEMU\'s last line');
  if (said?.[1] === 'Invalid argument') t.match(log, /"msg":"Unknown combination of migration flags: 0x0"/, 'at a record\'s header');
});

t.test('migrate is refused during a migration and on a waiting destination', async (t) => {
  const p = await startPair({ memory: '16M', srcArgs: ['--memory-file', await randomRamFile(16 * MiB)] });
  t.teardown(p.stop);
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 1 * MiB });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  t.match(await p.src.qmp.cmd('migrate', { uri: p.uri }), { error: { desc: "There's a migration process in progress" } });
  t.match(await p.src.qmp.cmd('migrate-set-capabilities', { capabilities: [{ capability: 'xbzrle', state: true }] }), {
    error: { desc: "There's a migration process in progress" },
  });
  t.match(await p.dst.qmp.cmd('migrate', { uri: 'tcp:127.0.0.1:1' }), { error: { desc: 'Guest is waiting for an incoming migration' } });
  t.match(await p.dst.qmp.cmd('migrate-incoming', { uri: 'tcp:127.0.0.1:1' }), { error: { desc: 'The incoming migration has already been started' } });
  const waiting = (await p.dst.qmp.ok('query-migrate')) as Msg;
  t.match(waiting['socket-address'], [{ type: 'inet', host: '127.0.0.1', ipv4: true }]);
  // max-bandwidth applies to the running migration at once: lifted, it finishes.
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
  await migrationStatus(p.src, 'completed');
  await migrationStatus(p.dst, 'completed'); // the source may finish writing before the destination finishes reading
  t.equal(await digest(p.dst), await digest(p.src));
});

t.test('a running migration is a yank instance; yanking it fails the migration', async (t) => {
  const p = await startPair({ memory: '16M', srcArgs: ['--memory-file', await randomRamFile(16 * MiB)] });
  t.teardown(p.stop);
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 1 * MiB });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  await migrationStatus(p.src, 'active');
  t.match(await p.src.qmp.ok('query-yank'), [{ type: 'chardev' }, { type: 'migration' }]);
  await p.src.qmp.ok('yank', { instances: [{ type: 'migration' }] });
  await migrationStatus(p.src, 'failed');
  t.match(await p.src.qmp.ok('query-migrate'), { status: 'failed', 'error-desc': 'Unable to write to socket: Broken pipe' });
  t.equal(await runState(p.src), 'running');
  t.same(await p.src.qmp.ok('query-yank'), [{ type: 'chardev', id: 'compat_monitor0' }], 'unregistered once the migration ended');
});

t.test('an XBZRLE cache too large to allocate: active, then failed without error-desc, as 7.2', async (t) => {
  const p = await startPair({ memory: '16M' });
  t.teardown(p.stop);
  await setCaps(p.src, { xbzrle: true });
  await p.src.qmp.ok('migrate-set-parameters', { 'xbzrle-cache-size': 2 ** 53 });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  await migrationStatus(p.src, 'failed');
  t.same(statuses(p.src), ['setup', 'active', 'failed']);
  t.same(await p.src.qmp.ok('query-migrate'), { status: 'failed' });
  t.match(p.src.daemon.stderr(), /"msg":"Failed to allocate page cache"/);
  t.equal(await runState(p.src), 'running');
});
