/**
 * COLO between two real daemons: entering it from a migration, checkpoints with a dirtying
 * primary, the primary killed at each step of a checkpoint transaction (the secondary takes
 * over with the RAM of the last checkpoint it completed), the secondary killed (the primary runs
 * alone and takes a new secondary), and QEMU's failover errors.
 */
import t from 'tap';
import { findProfile } from '../../src/profiles/index.js';
import { digest, migrationStatus, randomRamFile, runState, setCaps, side, startPair, until, type Pair, type Side } from '../helpers/migration.js';
import type { Msg } from '../helpers/qmp-client.js';

/**
 * x-colo-lost-heartbeat outside COLO, as each release words it (checked against both QEMUs by
 * the transcripts); colo-10.0.test.ts runs this file's daemons as 10.0.
 */
const NOT_IN_COLO = process.env.QMIGD_TEST_QEMU_VERSION === '10.0' ? 'VM is not in COLO mode' : "The feature 'colo' is not enabled";

/**
 * The secondary asks for x-colo itself: 10.0 refuses ENABLE_COLO otherwise (8.1 on, checked
 * against QEMU 10.0 by stream-releases.test.ts); 7.2 learns COLO from the stream alone, which
 * these tests then show.
 */
async function secondaryAsksForColo(dst: Side): Promise<void> {
  if (process.env.QMIGD_TEST_QEMU_VERSION === '10.0') await setCaps(dst, { 'x-colo': true });
}
import { freePort, logLine, rssKiB } from '../helpers/daemon.js';

const MiB = 1 << 20;

async function stats(s: Side): Promise<Msg> {
  return (await s.qmp.ok('__org.qmigd_query-colo-stats')) as Msg;
}

/** Waits until this side has completed at least n checkpoints. */
function checkpoints(s: Side, n: number): Promise<Msg> {
  return until(() => stats(s), (st) => (st.checkpoints as number) >= n, `${n} checkpoints`);
}

/** A primary with a dirtying workload in COLO with an idle secondary, both hashing RAM at checkpoints; `args` for both. */
async function coloPair(delayMs = 200, args: string[] = []): Promise<Pair> {
  const p = await startPair({
    memory: '32M',
    srcArgs: ['--memory-file', await randomRamFile(32 * MiB), '--dirty-rate', '2M', '--colo-checkpoint-digest', '--test-hooks', ...args],
    dstArgs: ['--colo-checkpoint-digest', '--test-hooks', ...args],
  });
  await setCaps(p.src, { 'x-colo': true });
  await secondaryAsksForColo(p.dst);
  await p.src.qmp.ok('migrate-set-parameters', { 'x-checkpoint-delay': delayMs, 'max-bandwidth': 0 });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  await migrationStatus(p.src, 'colo');
  await migrationStatus(p.dst, 'colo');
  return p;
}

/** The RAM digests the primary logged at its checkpoints, in order. */
function loggedDigests(s: Side): string[] {
  return [...s.daemon.stderr().matchAll(/"checkpoint":\d+,"sha256":"([0-9a-f]{64})","msg":"COLO checkpoint RAM"/g)].map((m) => m[1]!);
}

t.test('entering COLO, and checkpoints that keep the secondary equal to the primary', async (t) => {
  const p = await coloPair();
  t.teardown(p.stop);
  t.same(await p.src.qmp.ok('query-migrate'), { status: 'colo' });
  t.match(await p.dst.qmp.ok('query-migrate'), { status: 'colo' });
  t.same(await p.src.qmp.ok('query-colo-status'), { mode: 'primary', 'last-mode': 'none', reason: 'none' });
  t.same(await p.dst.qmp.ok('query-colo-status'), { mode: 'secondary', 'last-mode': 'none', reason: 'none' });
  const s = await checkpoints(p.dst, 3);
  const ps = await checkpoints(p.src, s.checkpoints as number);
  t.ok((ps['pause-max-us'] as number) >= (ps['pause-mean-us'] as number) && (ps['pause-mean-us'] as number) > 0);
  t.ok((s['bytes-total'] as number) > 0 && (s['bytes-mean'] as number) > 0);
  // Every checkpoint the secondary completed left its RAM equal to the primary's at that checkpoint.
  t.ok(loggedDigests(p.src).includes(s['last-checkpoint-sha256'] as string), 'secondary RAM = primary RAM at the checkpoint');
  t.ok(p.src.qmp.events.some((e) => e.event === 'MIGRATION_PASS'), 'one sync per checkpoint');
  // Changing x-checkpoint-delay forces a checkpoint at once, even with a long new delay.
  const before = (await stats(p.src)).checkpoints as number;
  await p.src.qmp.ok('migrate-set-parameters', { 'x-checkpoint-delay': 3_600_000 });
  await checkpoints(p.src, before + 1);
  t.pass('a delay change forced a checkpoint');
});

const STEPS: Array<[string, 'previous' | 'this']> = [
  ['before-request', 'previous'],
  ['after-reply', 'previous'],
  ['mid-ram', 'previous'],
  ['after-vmstate-received', 'this'],
  ['before-vmstate-loaded', 'this'],
];

// mid-ram once more with the checkpoint's pages from the page thread, which stops halfway too.
for (const [i, [point, which, thread]] of [...STEPS, ['mid-ram', 'previous', 'on'] as const].entries()) {
  // Both ways in: the older hook, and a crash fault at the checkpoint's point (src/faults).
  const viaFault = i % 2 === 0;
  const threadArgs = thread ? ['--page-thread', thread] : [];
  t.test(`primary killed ${point} (${viaFault ? 'fault-add' : 'colo-crash-at'}${thread ? `, --page-thread ${thread}` : ''}): the secondary takes over with the RAM of its last checkpoint`, async (t) => {
    const p = await coloPair(3_600_000, threadArgs);
    t.teardown(p.stop);
    // Checkpoints on demand only: a delay change forces one.
    await p.src.qmp.ok('migrate-set-parameters', { 'x-checkpoint-delay': 3_600_000 });
    const done = (await checkpoints(p.dst, 1)).checkpoints as number;
    await checkpoints(p.src, done);
    // Some pages dirty since that checkpoint, so there is RAM to cut in half.
    const workload = async (): Promise<number> => ((await p.src.qmp.ok('__org.qmigd_query-workload')) as Msg)['pages-dirtied'] as number;
    const dirtied = await workload();
    await until(workload, (n) => n >= dirtied + 64, '64 more dirty pages');
    if (viaFault) await p.src.qmp.ok('__org.qmigd_fault-add', { kind: 'crash', point: `colo:${point}` });
    else await p.src.qmp.ok('__org.qmigd_colo-crash-at', { point });
    // Not awaited: the checkpoint this forces may kill the primary before it answers.
    p.src.qmp.send('{"execute":"migrate-set-parameters","arguments":{"x-checkpoint-delay":3600000}}');
    const { signal } = await p.src.daemon.exited;
    t.equal(signal, 'SIGKILL', 'the primary died mid-transaction');
    if (viaFault) t.match(p.src.daemon.stderr(), `fault fault0: crash (at colo:${point})`);
    const exit = await p.dst.qmp.waitEvent('COLO_EXIT');
    t.same(exit.data, { mode: 'secondary', reason: 'error' });
    t.same(await p.dst.qmp.ok('query-colo-status'), { mode: 'secondary', 'last-mode': 'none', reason: 'none' }, 'waits for the heartbeat');
    await p.dst.qmp.ok('x-colo-lost-heartbeat');
    await migrationStatus(p.dst, 'completed');
    t.equal(await runState(p.dst), 'running');
    t.same(await p.dst.qmp.ok('query-colo-status'), { mode: 'none', 'last-mode': 'secondary', reason: 'request' });
    const logged = loggedDigests(p.src);
    const expected = which === 'this' ? logged.at(-1) : logged.at(-1 - (point === 'mid-ram' ? 1 : 0));
    t.equal(await digest(p.dst), expected, `RAM = the primary's at the ${which} checkpoint`);
    t.match(await p.dst.qmp.cmd('x-colo-lost-heartbeat'), { error: { desc: NOT_IN_COLO } });
  });
}

// With --page-thread on, the second COLO's pages go from a thread of their own too.
for (const thread of ['off', 'on']) t.test(`secondary killed: the primary runs alone, then takes a new secondary (--page-thread ${thread})`, async (t) => {
  const p = await coloPair(200, ['--page-thread', thread]);
  t.teardown(p.stop);
  await checkpoints(p.src, 2);
  // A still guest, so that its RAM can be shown untouched by the failover.
  await p.src.qmp.ok('__org.qmigd_set-workload', { rate: 0 });
  const before = await digest(p.src);
  p.dst.daemon.proc.kill('SIGKILL');
  const exit = await p.src.qmp.waitEvent('COLO_EXIT');
  t.same(exit.data, { mode: 'primary', reason: 'error' });
  t.same(await p.src.qmp.ok('query-migrate'), { status: 'colo' }, 'still colo until the heartbeat');
  // Two heartbeats in one write: the second finds the failover already requested.
  const from = p.src.qmp.lines.length;
  p.src.qmp.send('{"execute":"x-colo-lost-heartbeat"}{"execute":"x-colo-lost-heartbeat"}');
  const first = await p.src.qmp.nextReply(from);
  t.equal(first, '{"return": {}}');
  const second = await p.src.qmp.nextReply(p.src.qmp.lines.indexOf(first, from) + 1);
  // The failover runs apart from the monitor (QEMU's COLO thread; qmigd's next turns), so the
  // second finds it under way or, on a slow machine, already over (COLO mode none, in the
  // release's words): refused either way.
  const outside = findProfile(process.env.QMIGD_TEST_QEMU_VERSION ?? '7.2')!.errors.coloNotEnabled;
  const refused = (JSON.parse(second) as { error?: { class?: string; desc?: string } }).error;
  t.equal(refused?.class, 'GenericError');
  t.ok(refused?.desc === 'COLO failover is already activated' || refused?.desc === outside, `second heartbeat refused: ${refused?.desc}`);
  await migrationStatus(p.src, 'completed');
  t.equal(await runState(p.src), 'running');
  t.same(await p.src.qmp.ok('query-colo-status'), { mode: 'none', 'last-mode': 'primary', reason: 'request' });
  t.equal(await digest(p.src), before, 'RAM intact');
  await p.src.qmp.ok('__org.qmigd_set-workload', { rate: 2 * MiB });
  const w = (await p.src.qmp.ok('__org.qmigd_query-workload')) as Msg;
  t.equal(w.running, true, 'the guest workload goes on');

  // A fresh secondary, and a fresh migrate: COLO again.
  const port = await freePort();
  const dst2 = await side(['-m', '32M', '--incoming', `tcp:127.0.0.1:${port}`, '--colo-checkpoint-digest']);
  t.teardown(() => dst2.daemon.stop());
  await secondaryAsksForColo(dst2);
  await p.src.qmp.ok('migrate', { uri: `tcp:127.0.0.1:${port}` });
  const st = await checkpoints(dst2, 2);
  t.same(await dst2.qmp.ok('query-colo-status'), { mode: 'secondary', 'last-mode': 'none', reason: 'none' });
  t.ok(loggedDigests(p.src).includes(st['last-checkpoint-sha256'] as string), 'the new secondary follows the primary');
  const threadLines = p.src.daemon.stderr().split('pages go from the page thread from here on').length - 1;
  t.equal(threadLines, thread === 'on' ? 2 : 0, `both migrations' pages ${thread === 'on' ? 'went' : 'did not go'} from a page thread`);
});

// With --page-thread on the first migration and COLO's checkpoints go from the page thread and
// load on the load thread (into the cache, which it also flushes into RAM); both are closed as
// the checkpoints end: a duplicate of the channel's descriptor left open would keep the other
// side from seeing the cancel's close.
for (const thread of ['off', 'on']) {
  t.test(`migrate_cancel during COLO breaks the channel: COLO_EXIT error on both sides (--page-thread ${thread})`, async (t) => {
    const p = await coloPair(200, ['--page-thread', thread]);
    t.teardown(p.stop);
    t.equal(p.src.daemon.stderr().includes('pages go from the page thread from here on'), thread === 'on', `the first migration's pages ${thread === 'on' ? 'went' : 'did not go'} from the page thread`);
    t.equal(p.dst.daemon.stderr().includes('RAM sections load on the load thread from here on'), thread === 'on', `its sections ${thread === 'on' ? 'loaded' : 'did not load'} on the load thread`);
    const s = await checkpoints(p.dst, 2);
    t.ok(loggedDigests(p.src).includes(s['last-checkpoint-sha256'] as string), 'secondary RAM = primary RAM at a checkpoint');
    await p.src.qmp.ok('migrate_cancel');
    t.same((await p.src.qmp.waitEvent('COLO_EXIT')).data, { mode: 'primary', reason: 'error' });
    t.same((await p.dst.qmp.waitEvent('COLO_EXIT')).data, { mode: 'secondary', reason: 'error' });
    t.same(await p.src.qmp.ok('query-migrate'), { status: 'colo' }, 'no cancelling: colo is not a running state');
    const over = logLine(p.src.daemon.stderr(), 'COLO checkpoints over');
    t.ok(over && (over.checkpoints as number) >= 1, `the primary's checkpoints ended (${JSON.stringify(over)})`);
    t.equal((over?.pagesFromPageThread as number) > 0, thread === 'on', `their pages ${thread === 'on' ? 'went' : 'did not go'} from the page thread`);
    // The secondary's: each checkpoint's pages loaded into the cache and flushed into RAM there.
    const loaded = logLine(p.dst.daemon.stderr(), 'COLO checkpoints over');
    t.ok(loaded, `the secondary's checkpoints ended (${JSON.stringify(loaded)})`);
    t.equal((loaded?.pagesOnLoadThread as number) > 0, thread === 'on', `their pages ${thread === 'on' ? 'loaded' : 'did not load'} on the load thread`);
  });
}

t.test('failover errors and the Xen replication commands', async (t) => {
  const s = await side(['-m', '4M']);
  t.teardown(() => s.daemon.stop());
  t.match(await s.qmp.cmd('x-colo-lost-heartbeat'), { error: { class: 'GenericError', desc: NOT_IN_COLO } });
  t.same(await s.qmp.ok('query-colo-status'), { mode: 'none', 'last-mode': 'none', reason: 'none' });
  t.match(await s.qmp.cmd('xen-set-replication', { enable: true, primary: true, failover: true }), {
    error: { desc: "Parameter 'failover' is only for stopping replication" },
  });
  t.same(await s.qmp.ok('xen-set-replication', { enable: false, primary: false, failover: true }), {});
  t.same(await s.qmp.ok('query-xen-replication-status'), { error: false });
  t.same(await s.qmp.ok('xen-colo-do-checkpoint'), {});
});

t.test('diverging output: colo-compare checkpoints at once; 200 of them with a dirtying guest keep memory flat', async (t) => {
  const p = await coloPair(3_600_000);
  t.teardown(p.stop);
  await p.src.qmp.ok('migrate-set-parameters', { 'x-checkpoint-delay': 3_600_000 });
  const start = (await checkpoints(p.src, 1)).checkpoints as number;
  // In step, the outputs match: no miscompare.
  t.equal((await stats(p.src)).miscompares, 0);
  await p.dst.qmp.ok('__org.qmigd_set-guest-output', { diverge: true });
  const early = await checkpoints(p.src, start + 50);
  const rss = [rssKiB(p.src.daemon.proc.pid!), rssKiB(p.dst.daemon.proc.pid!)];
  const late = await checkpoints(p.src, start + 200);
  await p.dst.qmp.ok('__org.qmigd_set-guest-output', { diverge: false });
  const grown = [rssKiB(p.src.daemon.proc.pid!) - rss[0]!, rssKiB(p.dst.daemon.proc.pid!) - rss[1]!];
  t.ok(grown.every((kib) => kib < 16 * 1024), `RSS growth over 150 checkpoints: primary ${grown[0]} KiB, secondary ${grown[1]} KiB`);
  t.ok((late.miscompares as number) >= 200 - (start - 1), `miscompares ${late.miscompares} drove the checkpoints`);
  const sec = await checkpoints(p.dst, (late.checkpoints as number) - 1);
  t.ok(Math.abs((sec.checkpoints as number) - (late.checkpoints as number)) <= 1, 'both sides count the same checkpoints');
  const n = late.checkpoints as number;
  t.ok(Math.abs((late['bytes-mean'] as number) * n - (late['bytes-total'] as number)) <= n, 'bytes-mean × checkpoints = bytes-total');
  t.ok((late['pause-max-us'] as number) >= (late['pause-mean-us'] as number));
  t.ok((late['bytes-total'] as number) > (early['bytes-total'] as number));
  t.ok(loggedDigests(p.src).includes((await stats(p.dst))['last-checkpoint-sha256'] as string), 'still in step');
});

t.test('--colo-heartbeat-timeout: a primary that lost its secondary fails over by itself', async (t) => {
  const port = await freePort();
  const dst = await side(['-m', '16M', '--incoming', `tcp:127.0.0.1:${port}`]);
  const src = await side(['-m', '16M', '--colo-heartbeat-timeout', '200']);
  t.teardown(async () => Promise.all([src.daemon.stop(), dst.daemon.stop()]));
  await setCaps(src, { 'x-colo': true, events: true });
  await secondaryAsksForColo(dst);
  await src.qmp.ok('migrate-set-parameters', { 'x-checkpoint-delay': 100 });
  await src.qmp.ok('migrate', { uri: `tcp:127.0.0.1:${port}` });
  await migrationStatus(src, 'colo');
  await checkpoints(src, 1);
  dst.daemon.proc.kill('SIGKILL');
  t.same((await src.qmp.waitEvent('COLO_EXIT')).data, { mode: 'primary', reason: 'error' });
  await migrationStatus(src, 'completed');
  t.same(await src.qmp.ok('query-colo-status'), { mode: 'none', 'last-mode': 'primary', reason: 'request' });
  t.equal(await runState(src), 'running');
});

t.test('faults on the compare connection: stalled, colo-compare checkpoints by its timeout; closed, COLO goes on by timer', async (t) => {
  const p = await coloPair(3_600_000);
  t.teardown(p.stop);
  await p.src.qmp.ok('migrate-set-parameters', { 'x-checkpoint-delay': 3_600_000 });
  const start = (await checkpoints(p.src, 1)).checkpoints as number;
  // The secondary's packets stop reaching the primary: its own wait unmatched past the
  // compare timeout (3 s), and colo_old_packet_check() asks for a checkpoint.
  await p.dst.qmp.ok('__org.qmigd_fault-add', { id: 'mute', kind: 'stall', channel: 'colo-compare' });
  const stalled = Date.now();
  await checkpoints(p.src, start + 1);
  t.ok(Date.now() - stalled >= 2500, `a checkpoint ${Date.now() - stalled} ms into the stall, by the compare timeout`);
  t.ok(((await stats(p.src)).miscompares as number) >= 1, 'colo-compare asked for it (the unmatched packets count as apart)');
  await p.dst.qmp.ok('__org.qmigd_fault-clear');
  // The primary cuts the connection: colo-compare loses the secondary's side; COLO goes on.
  await p.src.qmp.ok('__org.qmigd_fault-add', { kind: 'close', channel: 'colo-compare', side: 'receive' });
  await p.src.qmp.ok('migrate-set-parameters', { 'x-checkpoint-delay': 200 });
  const after = (await checkpoints(p.src, start + 5)).checkpoints as number;
  t.ok(after >= start + 5, 'checkpoints go on by timer');
  t.same(await p.src.qmp.ok('query-colo-status'), { mode: 'primary', 'last-mode': 'none', reason: 'none' });
  t.ok(loggedDigests(p.src).includes((await stats(p.dst))['last-checkpoint-sha256'] as string), 'the secondary still in step');
});
