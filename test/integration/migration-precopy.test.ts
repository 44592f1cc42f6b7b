/**
 * Pre-copy between two real daemons: 256 MiB of random RAM under a dirtying workload arrives
 * byte for byte (SHA-256 of the whole RAM on both sides), plain, with XBZRLE, with auto-converge
 * throttling a workload that outruns the bandwidth, and paused before switchover.
 */
import t from 'tap';
import { threads } from '../helpers/daemon.js';
import { digest, migrationStatus, randomRamFile, runState, setCaps, startPair, statuses, untilInfo } from '../helpers/migration.js';
import type { Msg } from '../helpers/qmp-client.js';

const MiB = 1 << 20;

t.test('256 MiB of random RAM with a converging workload', async (t) => {
  const ram = await randomRamFile(256 * MiB);
  const p = await startPair({ memory: '256M', srcArgs: ['--memory-file', ram, '--dirty-rate', '4M'] });
  t.teardown(p.stop);
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
  t.same(await p.src.qmp.ok('migrate', { uri: p.uri }), {});
  await migrationStatus(p.src, 'completed');
  await migrationStatus(p.dst, 'completed');

  t.same(statuses(p.src), ['setup', 'active', 'completed'], 'source states, as 7.2 announces them');
  // The destination announced setup at start-up (-incoming), before any client could listen.
  t.same(statuses(p.dst), ['active', 'completed'], 'destination states');
  t.equal(await digest(p.dst), await digest(p.src), 'destination RAM equals source RAM after switchover');
  t.equal(await runState(p.src), 'postmigrate');
  t.equal(await runState(p.dst), 'running');

  const info = (await p.src.qmp.ok('query-migrate')) as Msg;
  const r = info.ram as Record<string, number>;
  t.equal(info.status, 'completed');
  t.notOk('expected-downtime' in info, 'no expected-downtime once completed');
  t.ok((info.downtime as number) >= 0 && (info['total-time'] as number) >= (info.downtime as number));
  t.equal(r.total, 256 * MiB);
  t.equal(r.remaining, 0);
  t.ok(r.normal >= 65536, 'every random page was sent whole at least once');
  t.equal(r['normal-bytes'], r.normal * 4096);
  t.ok(r.transferred > 256 * MiB && r.transferred === r['precopy-bytes'] + r['downtime-bytes']);
  const passes = p.src.qmp.events.filter((e) => e.event === 'MIGRATION_PASS').map((e) => (e.data as Msg).pass);
  t.same(passes, Array.from({ length: r['dirty-sync-count'] }, (_, i) => i + 1), 'one MIGRATION_PASS per sync, numbered from 1');
  t.ok(r['dirty-sync-count'] >= 2, 'the setup sync and the final sync at least');
  t.match(await p.src.qmp.cmd('migrate', { uri: p.uri }), { error: { desc: "Can't migrate the vm that was paused due to previous migration" } });
});

// With --page-thread on, the page thread keeps the cache and sends the deltas.
for (const thread of ['off', 'on']) {
  t.test(`xbzrle, --page-thread ${thread}: re-sent pages travel as deltas, and a live downtime-limit change lets it finish`, async (t) => {
    const ram = await randomRamFile(256 * MiB);
    const p = await startPair({ memory: '256M', srcArgs: ['--memory-file', ram, '--dirty-rate', '1G', '--dirty-pattern', 'hot:1', '--page-thread', thread] });
    t.teardown(p.stop);
    await setCaps(p.src, { xbzrle: true });
    // A 1 ms downtime cannot be met while the hot pages keep changing this fast: the passes go
    // on, each re-sending the hot pages as deltas.
    await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0, 'downtime-limit': 1, 'xbzrle-cache-size': 16 * MiB });
    await p.src.qmp.ok('migrate', { uri: p.uri });
    const during = await untilInfo(p.src, (i) => ((i['xbzrle-cache'] as Record<string, number> | undefined)?.pages ?? 0) > 1000);
    t.equal(during.status, 'active');
    t.equal((during['xbzrle-cache'] as Msg)['cache-size'], 16 * MiB);
    await p.src.qmp.ok('migrate-set-parameters', { 'downtime-limit': 300 });
    await migrationStatus(p.src, 'completed');
    await migrationStatus(p.dst, 'completed');
    t.equal(await digest(p.dst), await digest(p.src), 'RAM identical after XBZRLE deltas');
    const info = (await p.src.qmp.ok('query-migrate')) as Msg;
    const x = info['xbzrle-cache'] as Record<string, number>;
    t.ok(x.pages > 1000 && x['cache-miss'] > 0, `cache hits ${x.pages}, misses ${x['cache-miss']}`);
    t.ok(x.bytes > 0 && x.bytes < x.pages * 4096, 'deltas are smaller than the pages they replace');
    const r = info.ram as Record<string, number>;
    t.equal(r.remaining, 0);
    t.ok(r.normal >= 65536, 'every random page was sent whole at least once');
    t.equal(p.src.daemon.stderr().includes('pages go from the page thread'), thread === 'on', `the page thread ${thread === 'on' ? 'sent' : 'did not send'} the pages`);
  });
}

t.test('auto-converge throttles a workload that outruns max-bandwidth until it converges', async (t) => {
  const p = await startPair({ memory: '16M', srcArgs: ['--memory-file', await randomRamFile(16 * MiB), '--dirty-rate', '64M', '--dirty-pattern', 'hot:25'] });
  t.teardown(p.stop);
  await setCaps(p.src, { 'auto-converge': true });
  await p.src.qmp.ok('migrate-set-parameters', {
    'max-bandwidth': 16 * MiB, 'downtime-limit': 100, 'cpu-throttle-initial': 60, 'cpu-throttle-increment': 20,
  });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  const throttled = await untilInfo(p.src, (i) => typeof i['cpu-throttle-percentage'] === 'number');
  t.equal(throttled['cpu-throttle-percentage'], 60, 'the first step is cpu-throttle-initial');
  t.ok(((throttled.ram as Msg)['dirty-pages-rate'] as number) > 0, 'the dirty rate of the last period is reported');
  const workload = (await p.src.qmp.ok('__org.qmigd_query-workload')) as Msg;
  t.ok((workload['throttle-percentage'] as number) >= 60, 'the guest workload runs throttled');
  await migrationStatus(p.src, 'completed');
  // The source completes once it has sent everything; the destination may still be loading.
  await migrationStatus(p.dst, 'completed');
  t.equal(await digest(p.dst), await digest(p.src));
  const after = (await p.src.qmp.ok('query-migrate')) as Msg;
  t.notOk('cpu-throttle-percentage' in after, 'the throttle stops with the migration');
  t.equal(((await p.src.qmp.ok('__org.qmigd_query-workload')) as Msg)['throttle-percentage'], 0);
});

t.test('pause-before-switchover waits in pre-switchover for migrate-continue', async (t) => {
  const p = await startPair({ memory: '64M', srcArgs: ['--memory-file', await randomRamFile(64 * MiB), '--dirty-rate', '1M'] });
  t.teardown(p.stop);
  await setCaps(p.src, { 'pause-before-switchover': true, 'return-path': true });
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  await migrationStatus(p.src, 'pre-switchover');
  t.equal(await runState(p.src), 'finish-migrate', 'the guest is stopped while paused');
  t.ok(p.src.qmp.events.some((e) => e.event === 'STOP'), 'STOP announced');
  const info = (await p.src.qmp.ok('query-migrate')) as Msg;
  t.equal(info.status, 'pre-switchover');
  t.ok('expected-downtime' in info && 'ram' in info);
  t.match(await p.src.qmp.cmd('migrate-continue', { state: 'active' }), { error: { desc: 'Migration not in expected state: pre-switchover' } });
  t.equal(await runState(p.dst), 'inmigrate', 'the destination has not switched over');
  await p.src.qmp.ok('migrate-continue', { state: 'pre-switchover' });
  await migrationStatus(p.src, 'completed');
  await migrationStatus(p.dst, 'completed');
  t.same(statuses(p.src), ['setup', 'active', 'pre-switchover', 'device', 'completed']);
  t.equal(await digest(p.dst), await digest(p.src));
  t.equal(await runState(p.dst), 'running');
});

t.test('multifd, 3 channels: each channel on a thread of its own at both ends, RAM arrives whole', async (t) => {
  const ram = await randomRamFile(128 * MiB);
  const p = await startPair({ memory: '128M', srcArgs: ['--memory-file', ram, '--dirty-rate', '4M'] });
  t.teardown(p.stop);
  for (const s of [p.src, p.dst]) {
    await setCaps(s, { multifd: true });
    await s.qmp.ok('migrate-set-parameters', { 'multifd-channels': 3 });
  }
  const before = [threads(p.src.daemon.proc.pid!), threads(p.dst.daemon.proc.pid!)];
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 32 * MiB });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  await untilInfo(p.src, (i) => ((i.ram as Msg | undefined)?.['multifd-bytes'] as number) > 0);
  t.ok(threads(p.src.daemon.proc.pid!) >= before[0]! + 3, 'the source runs a thread per channel');
  t.ok(threads(p.dst.daemon.proc.pid!) >= before[1]! + 3, 'the destination runs a thread per channel');
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
  await migrationStatus(p.src, 'completed');
  await migrationStatus(p.dst, 'completed');
  t.equal(await digest(p.dst), await digest(p.src), 'destination RAM equals source RAM');
  const r = ((await p.src.qmp.ok('query-migrate')) as Msg).ram as Record<string, number>;
  t.ok(r['multifd-bytes'] >= 128 * MiB, 'the pages went over the channels');
});

// 9.0+ counts a multifd packet once it is on the socket; each channel holds megabytes in flight
// where QEMU's holds one packet, so the rate limit counts what is handed over and not yet counted.
// (Without that, a 128 MiB guest limited to 8 MiB/s went out whole within about a second.)
t.test('multifd (10.0): max-bandwidth holds while packets are in flight, from the main thread and from the page thread', async (t) => {
  const ram = await randomRamFile(128 * MiB);
  for (const thread of ['off', 'on']) {
    const v = ['--qemu-version', '10.0'];
    const p = await startPair({ memory: '128M', srcArgs: ['--memory-file', ram, '-S', '--page-thread', thread, ...v], dstArgs: v });
    t.teardown(p.stop);
    for (const s of [p.src, p.dst]) {
      await setCaps(s, { multifd: true });
      await s.qmp.ok('migrate-set-parameters', { 'multifd-channels': 2 });
    }
    await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 8 * MiB });
    await p.src.qmp.ok('migrate', { uri: p.uri });
    await migrationStatus(p.src, 'active');
    const start = Date.now();
    await new Promise((r) => setTimeout(r, 2000));
    const info = (await p.src.qmp.ok('query-migrate')) as Msg;
    const sent = ((info.ram as Msg)['multifd-bytes'] as number) / MiB;
    const seconds = (Date.now() - start) / 1000;
    // 8 MiB/s, and per 100 ms window at most about a packet per channel more (QEMU's slack too).
    t.ok(sent > 0 && sent <= (8 + 2 * 10 * 0.5) * (seconds + 0.5), `thread ${thread}: ${sent.toFixed(1)} MiB on the channels after ${seconds.toFixed(1)} s at 8 MiB/s`);
    await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
    await migrationStatus(p.src, 'completed');
    await migrationStatus(p.dst, 'completed');
    t.equal(await digest(p.dst), await digest(p.src), `thread ${thread}: then the RAM arrives whole`);
  }
});
