/**
 * Faults on demand, part two: exact byte and stream-point placement, the return path and the
 * multifd channels, slow-start, YAML scenario files, and the three scenarios of the README's
 * "Breaking migrations on purpose" (destination dies at switchover; link degrades until
 * auto-converge is at its limit and the orchestrator cancels; return path lost with
 * pause-before-switchover). Two real daemons over real sockets each time; after each fault the
 * source guest runs on with its RAM intact and a later migration to a healthy destination works.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { startDaemon, tempDir } from '../helpers/daemon.js';
import { digest, migratesAfter, migrationStatus, pairInPreSwitchover, randomRamFile, runState, setCaps, side, startPair, statuses, untilInfo, type Side } from '../helpers/migration.js';
import type { Msg } from '../helpers/qmp-client.js';

const MiB = 1 << 20;
const HOOKS = '--test-hooks';

/** The source's end after a fault: failed, the guest running again with its RAM. */
async function failedAndRunning(t: Test, src: Side, ram: string): Promise<Msg> {
  const info = await untilInfo(src, (i) => ['failed', 'completed', 'cancelled'].includes(i.status as string));
  t.equal(info.status, 'failed', 'the source fails');
  t.equal(await runState(src), 'running', 'its guest runs');
  t.equal(await digest(src), ram, 'its RAM intact');
  return info;
}

t.test('close is exact: after-bytes ends the stream at that byte; point=switchover right before the devices', async (t) => {
  const dir = tempDir();
  const ramFile = await randomRamFile(8 * MiB);
  for (const [fault, check] of [
    ['kind=close,after-bytes=1000003', (b: Buffer) => t.equal(b.length, 1000003, 'the stream is 1000003 bytes long')],
    // Right before the first device section: the RAM section's END, its EOS flag and footer last.
    ['kind=close,point=switchover', (b: Buffer) => t.same([...b.subarray(-13)], [0, 0, 0, 0, 0, 0, 0, 0x10, 0x7e, 0, 0, 0, 2], 'the stream ends with the RAM END section\'s EOS and footer')],
  ] as const) {
    const src = await side(['-m', '8M', '--memory-file', ramFile, '--qemu-version', '7.2', '--fault', fault]);
    t.teardown(() => src.daemon.stop());
    await setCaps(src, { events: true });
    const ram = await digest(src);
    const out = join(dir, 'stream');
    await src.qmp.ok('migrate', { uri: `exec:cat > ${out}` });
    await failedAndRunning(t, src, ram);
    check(readFileSync(out));
    t.notOk(readFileSync(out).includes(Buffer.from('\x05timer')), 'no device state in it');
  }
});

t.test('a multifd channel closes after 1 MiB: the source fails as QEMU does when a channel goes; then migrates again', async (t) => {
  const ramFile = await randomRamFile(32 * MiB);
  const p = await startPair({ memory: '32M', srcArgs: ['--memory-file', ramFile, HOOKS] });
  t.teardown(p.stop);
  const ram = await digest(p.src);
  for (const s of [p.src, p.dst]) await setCaps(s, { multifd: true });
  await p.src.qmp.ok('migrate-set-parameters', { 'multifd-channels': 2, 'max-bandwidth': 16 * MiB });
  await p.src.qmp.ok('__org.qmigd_fault-add', { id: 'mfd', kind: 'close', channel: 'multifd', index: 1, 'after-bytes': MiB });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  const fired = (await p.src.qmp.waitEvent('__org.qmigd_FAULT')).data as Msg;
  t.same(fired, { id: 'mfd', kind: 'close', action: 'close (after 1048576 bytes)' }, 'fired in the channel\'s thread, announced by the daemon');
  const info = await failedAndRunning(t, p.src, ram);
  t.match(info['error-desc'], /^(Unable to write to socket: (Broken pipe|Connection reset by peer)|Channel was shut down)$/);
  t.same(((await p.src.qmp.ok('__org.qmigd_fault-list')) as Msg[]).map((f) => `${f.id}:${f.state}:${f.fired}`), ['mfd:done:1']);
  await setCaps(p.src, { multifd: false });
  await migratesAfter(t, p.src, '32M', ram);
});

t.test('a multifd channel stalls on the destination until cleared: the migration waits, then completes', async (t) => {
  const ramFile = await randomRamFile(32 * MiB);
  const p = await startPair({ memory: '32M', srcArgs: ['--memory-file', ramFile], dstArgs: ['--fault', 'kind=stall,channel=multifd,index=0,side=receive,after-bytes=2M', HOOKS] });
  t.teardown(p.stop);
  for (const s of [p.src, p.dst]) await setCaps(s, { multifd: true });
  await p.src.qmp.ok('migrate-set-parameters', { 'multifd-channels': 2, 'max-bandwidth': 0 });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  await p.dst.qmp.waitEvent('__org.qmigd_FAULT');
  // The other channel may go on until the next sync waits for the stalled one (at most a
  // pass's pages in 10.0, and the sockets' buffers); from then on nothing moves. Wait for that
  // (it takes longer on a loaded machine, and the statistics move in bursts there): three
  // quiet quarter-seconds in a row, within 20 s; a stall that holds nothing never gets there.
  const transferred = async (): Promise<number> => (((await p.src.qmp.ok('query-migrate')) as Msg).ram as Msg).transferred as number;
  let held = await transferred();
  for (let quiet = 0, deadline = Date.now() + 20_000; quiet < 3 && Date.now() < deadline; ) {
    await new Promise((r) => setTimeout(r, 250));
    const now = await transferred();
    quiet = now - held < 64 * 1024 ? quiet + 1 : 0;
    held = now;
  }
  await new Promise((r) => setTimeout(r, 700));
  const info = (await p.src.qmp.ok('query-migrate')) as Msg;
  // The source may be done: its channel's last packets (the sync too) can all fit in the
  // sockets' buffers, as a QEMU 10.0 source's would. The destination cannot be.
  t.equal(((await p.dst.qmp.ok('query-migrate')) as Msg).status, 'active', 'the destination waits for the stalled channel');
  const moved = ((info.ram as Msg).transferred as number) - held;
  t.ok(moved < 4 * MiB, `the migration is held up by the stalled channel (${moved} bytes in 700 ms)`);
  await p.dst.qmp.ok('__org.qmigd_fault-clear');
  await migrationStatus(p.src, 'completed');
  await migrationStatus(p.dst, 'completed');
  t.equal(await digest(p.dst), await digest(p.src));
});

t.test('the return path corrupts its first message: a 10.0 source fails with the return path\'s error (7.2: qemu-faults-interop)', async (t) => {
  const ramFile = await randomRamFile(16 * MiB);
  const v10 = ['--qemu-version', '10.0'];
  const p = await startPair({ memory: '16M', srcArgs: ['--memory-file', ramFile, ...v10], dstArgs: ['--fault', 'kind=corrupt,channel=return-path,after-bytes=0', ...v10] });
  t.teardown(p.stop);
  const ram = await digest(p.src);
  for (const s of [p.src, p.dst]) await setCaps(s, { 'return-path': true });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  const info = await failedAndRunning(t, p.src, ram);
  t.same(statuses(p.src), ['setup', 'active', 'device', 'failed']);
  // The first message is the PONG (0x0002): its first byte flipped.
  t.match(p.src.daemon.stderr(), /RP: Received invalid message 0xff02 length 0x0004/);
  t.equal(info['error-desc'], 'Received invalid message 0xff02 length 0x0004');
  await migratesAfter(t, p.src, '16M', ram, v10);
});

t.test('throttle and latency on the receiving side: the destination reads slowly, the RAM arrives whole', async (t) => {
  const ramFile = await randomRamFile(8 * MiB);
  const p = await startPair({ memory: '8M', srcArgs: ['--memory-file', ramFile], dstArgs: ['--fault', 'kind=throttle,side=receive,bytes-per-second=4M', '--fault', 'kind=latency,side=receive,delay-ms=2'] });
  t.teardown(p.stop);
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
  const start = Date.now();
  await p.src.qmp.ok('migrate', { uri: p.uri });
  await migrationStatus(p.dst, 'completed');
  t.ok(Date.now() - start >= 1500, `8 MiB at 4 MiB/s took ${Date.now() - start} ms`);
  t.equal(await digest(p.dst), await digest(p.src));
});

t.test('slow-start: the monitors listen only after the delay; over QMP it is refused, the daemon being up', async (t) => {
  const start = Date.now();
  const d = await startDaemon(['-m', '16M', HOOKS, '--fault', 'kind=slow-start,delay-ms=1200']);
  t.teardown(() => d.stop());
  t.ok(Date.now() - start >= 1200, `listening after ${Date.now() - start} ms`);
  t.match(d.stderr(), /fault fault0: slow-start \(the monitors listen 1200 ms late\)/);
  const s = await side(['-m', '16M', HOOKS]);
  t.teardown(() => s.daemon.stop());
  t.match(await s.qmp.cmd('__org.qmigd_fault-add', { kind: 'slow-start', 'delay-ms': 10 }), { error: { class: 'GenericError', desc: 'A slow-start fault acts as the daemon starts: arm it with --fault or --faults' } });
  t.match(await s.qmp.cmd('__org.qmigd_fault-add', { kind: 'close', point: 'section-full', 'after-bytes': 1 }), { error: { desc: "Only one trigger may be given, not 'after-bytes' and 'point'" } });
  t.match(await s.qmp.cmd('__org.qmigd_fault-add', { kind: 'stall', channel: 'multifd', point: 'eof' }), { error: { desc: /^A point is a record of the main stream/ } });
  t.match(await s.qmp.cmd('__org.qmigd_fault-add', { kind: 'crash', point: 'section-middle' }), { error: { class: 'GenericError' } });
  t.match(await s.qmp.cmd('__org.qmigd_fault-add', { kind: 'stall', index: 1 }), { error: { desc: "Parameter 'index' is only for multifd channels" } });
});

/** A YAML scenario: the destination's host dies as the device state arrives. */
const DIES_AT_SWITCHOVER = `# the destination host dies at switchover
faults:
  - id: host-dies
    kind: crash
    point: switchover   # the first device section
`;

t.test('scenario (YAML): the destination dies at switchover; with return-path the source fails and its guest runs on', async (t) => {
  const file = join(tempDir(), 'dies.yaml');
  writeFileSync(file, DIES_AT_SWITCHOVER);
  const ramFile = await randomRamFile(16 * MiB);
  const p = await startPair({ memory: '16M', srcArgs: ['--memory-file', ramFile], dstArgs: ['--faults', file] });
  t.teardown(p.stop);
  const ram = await digest(p.src);
  for (const s of [p.src, p.dst]) await setCaps(s, { 'return-path': true });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  t.equal((await p.dst.daemon.exited).signal, 'SIGKILL', 'the destination died');
  t.match(p.dst.daemon.stderr(), /fault host-dies: crash \(at switchover\)/);
  await failedAndRunning(t, p.src, ram);
  t.same(statuses(p.src), ['setup', 'active', 'failed']);
  await migratesAfter(t, p.src, '16M', ram);
});

t.test('scenario: the destination dies at switchover without a return path; the source completes, as QEMU\'s does; cont, and it migrates again', async (t) => {
  const ramFile = await randomRamFile(16 * MiB);
  const p = await startPair({ memory: '16M', srcArgs: ['--memory-file', ramFile], dstArgs: ['--fault', 'kind=crash,point=switchover'] });
  t.teardown(p.stop);
  await p.src.qmp.ok('migrate', { uri: p.uri });
  t.equal((await p.dst.daemon.exited).signal, 'SIGKILL');
  await migrationStatus(p.src, 'completed');
  t.equal(await runState(p.src), 'postmigrate', 'the source believes it is done: only the orchestrator can tell');
  // What an orchestrator does when it learns the destination is gone: the guest runs on here,
  // nothing lost, and goes elsewhere.
  const ram = await digest(p.src);
  await p.src.qmp.ok('cont');
  t.equal(await runState(p.src), 'running');
  await migratesAfter(t, p.src, '16M', ram);
});

t.test('scenario: the link degrades, auto-converge reaches max-cpu-throttle without converging, the orchestrator cancels', async (t) => {
  const ramFile = await randomRamFile(16 * MiB);
  const p = await startPair({ memory: '16M', srcArgs: ['--memory-file', ramFile, '--dirty-rate', '256M', '--dirty-pattern', 'hot:25', HOOKS] });
  t.teardown(p.stop);
  await setCaps(p.src, { 'auto-converge': true });
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0, 'downtime-limit': 300, 'cpu-throttle-initial': 20, 'cpu-throttle-increment': 40, 'max-cpu-throttle': 99 });
  await p.src.qmp.ok('__org.qmigd_fault-add', { id: 'degraded', kind: 'throttle', 'bytes-per-second': 4 * MiB, 'after-bytes': 4 * MiB });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  const limit = await untilInfo(p.src, (i) => i['cpu-throttle-percentage'] === 99);
  const passes = (limit.ram as Msg)['dirty-sync-count'] as number;
  await untilInfo(p.src, (i) => ((i.ram as Msg)['dirty-sync-count'] as number) >= passes + 2);
  const info = (await p.src.qmp.ok('query-migrate')) as Msg;
  t.equal(info.status, 'active', 'two passes more at the limit, still not converged');
  await p.src.qmp.ok('migrate_cancel');
  await migrationStatus(p.src, 'cancelled');
  t.equal(await runState(p.src), 'running');
  t.notOk('cpu-throttle-percentage' in ((await p.src.qmp.ok('query-migrate')) as Msg), 'the CPU throttle is lifted');
  t.equal(((await p.src.qmp.ok('__org.qmigd_query-workload')) as Msg)['throttle-percentage'], 0);
  await p.src.qmp.ok('__org.qmigd_fault-clear');
  await p.src.qmp.ok('__org.qmigd_set-workload', { rate: 0 });
  await setCaps(p.src, { 'auto-converge': false });
  await migratesAfter(t, p.src, '16M', await digest(p.src));
});

t.test('scenario: the return path is lost in pre-switchover; the source waits in device until the orchestrator cancels', async (t) => {
  const { p, ram } = await pairInPreSwitchover(t, '16M', [], [HOOKS]);
  await p.dst.qmp.ok('__org.qmigd_fault-add', { id: 'rp-lost', kind: 'stall', channel: 'return-path' });
  await p.src.qmp.ok('migrate-continue', { state: 'pre-switchover' });
  await migrationStatus(p.src, 'device');
  await migrationStatus(p.dst, 'completed');
  await new Promise((r) => setTimeout(r, 500));
  t.equal(((await p.src.qmp.ok('query-migrate')) as Msg).status, 'device', 'the source still waits for the destination\'s word');
  t.equal(await runState(p.src), 'finish-migrate', 'its guest stopped meanwhile');
  await p.src.qmp.ok('migrate_cancel');
  await migrationStatus(p.src, 'cancelled');
  t.same(statuses(p.src), ['setup', 'active', 'pre-switchover', 'device', 'cancelling', 'cancelled']);
  t.equal(await runState(p.src), 'running', 'the source guest runs again: and so does the destination\'s, which has completed');
  t.equal(await runState(p.dst), 'running');
  t.equal(await digest(p.src), ram);
  await setCaps(p.src, { 'pause-before-switchover': false });
  await migratesAfter(t, p.src, '16M', ram);
});

t.test('a stall by stream point on the sending side holds the stream right before the record', async (t) => {
  const ramFile = await randomRamFile(8 * MiB);
  const p = await startPair({ memory: '8M', srcArgs: ['--memory-file', ramFile, '--fault', 'id=hold,kind=stall,point=section-end:ram', HOOKS] });
  t.teardown(p.stop);
  await p.src.qmp.ok('migrate', { uri: p.uri });
  const fired = (await p.src.qmp.waitEvent('__org.qmigd_FAULT')).data as Msg;
  t.match(fired.action, /^stall \(at section-end:ram, byte \d+\)$/);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(((await p.dst.qmp.ok('query-migrate')) as Msg).status, 'active', 'the destination waits for the rest');
  t.equal(((await p.src.qmp.ok('query-migrate')) as Msg).status, 'active', 'so does the source');
  await p.src.qmp.ok('__org.qmigd_fault-clear', { id: 'hold' });
  await migrationStatus(p.dst, 'completed');
  t.equal(await digest(p.dst), await digest(p.src));
});
