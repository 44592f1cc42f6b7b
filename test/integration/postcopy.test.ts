/**
 * Postcopy between two qmigd daemons (issue 16): the switch, the destination's guest running
 * (reading and writing) while its pages still come, its page requests, pause by migrate-pause
 * and by a broken connection in each postcopy state, recovery, a failed recovery, and cancel.
 *
 * "Nothing lost" is checked exactly: the source's guest is stopped from the switch on, so its
 * RAM (pmemsave) is what the destination started from; the destination's guest journals every
 * write it makes; the source's RAM with the journal replayed must be the destination's RAM.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { freePort, loadThreadPages, logLine, tempDir } from '../helpers/daemon.js';
import { digest, migrationStatus, randomRamFile, runState, setCaps, side, startPair, statuses, until, untilInfo, type Pair, type Side } from '../helpers/migration.js';
import type { Msg } from '../helpers/qmp-client.js';

import type { Test } from '../helpers/interop.js';

const MEMORY_MB = 32;
/** Slow enough that the switch finds most of RAM still on the source. */
const BANDWIDTH = 16 << 20;
/** Sent before the switch where a test waits for it; and what a broken connection may lose (socket buffers). */
const PRECOPY_MB = 20;
const IN_FLIGHT = 8 << 20;
/** More faults than a vCPU waiting for the background pass would make (see the first test). */
const FAULTS_SERVED_AT_ONCE = 20;

/** A pair with random RAM, postcopy-ram on both ends, the source migrating slowly; `args` for both daemons. */
async function postcopyPair(t: Test, release: '7.2' | '10.0' = '7.2', caps: Record<string, boolean> = {}, args: string[] = []): Promise<Pair> {
  const ramFile = await randomRamFile(MEMORY_MB << 20);
  // QEMU 7.2's statuses unless a test says (test/integration/qemu-postcopy-interop.test.ts holds
  // both releases to real QEMU); --test-hooks: the fault API, to break the migration where a test says.
  const both = ['--qemu-version', release, '--test-hooks', ...args];
  const p = await startPair({ memory: `${MEMORY_MB}M`, srcArgs: ['--memory-file', ramFile, ...both], dstArgs: both });
  t.teardown(p.stop);
  await setCaps(p.dst, { 'postcopy-ram': true, 'postcopy-blocktime': true, ...caps });
  await setCaps(p.src, { 'postcopy-ram': true, ...caps });
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': BANDWIDTH, 'max-postcopy-bandwidth': BANDWIDTH });
  // The destination's guest writes (and reads) from the moment it runs; a journal keeps its writes.
  await p.dst.qmp.ok('__org.qmigd_set-workload', { rate: 8 << 20, journal: true });
  return p;
}

/**
 * Starts the migration and switches to postcopy once it is active (and has sent more than
 * `precopyBytes`); returns once the destination's guest runs.
 */
async function switchToPostcopy(p: Pair, precopyBytes = 0): Promise<void> {
  await p.src.qmp.ok('migrate', { uri: p.uri });
  await migrationStatus(p.src, 'active');
  if (precopyBytes) await untilInfo(p.src, (i) => ((i.ram as Msg | undefined)?.transferred as number) > precopyBytes);
  await p.src.qmp.ok('migrate-start-postcopy');
  await migrationStatus(p.src, 'postcopy-active');
  await migrationStatus(p.dst, 'postcopy-active');
  // postcopy-active comes at LISTEN; a break before RUN is fatal to the destination (QEMU's too).
  await p.dst.qmp.waitEvent('RESUME');
}

async function ram(s: Side): Promise<Buffer> {
  const path = join(tempDir(), 'ram.bin');
  await s.qmp.ok('pmemsave', { val: 0, size: MEMORY_MB << 20, filename: path }, 60000);
  return readFileSync(path);
}

/** The source's RAM, frozen since the switch, with the destination guest's writes replayed on it, is the destination's. */
async function nothingLost(t: Test, p: Pair): Promise<void> {
  await p.dst.qmp.ok('__org.qmigd_set-workload', { rate: 0 });
  const journal = (await p.dst.qmp.ok('__org.qmigd_query-workload-journal')) as { writes: Array<{ page: number; offset: number; data: string }>; overflow: boolean };
  t.notOk(journal.overflow, 'the journal kept every write');
  t.ok(journal.writes.length > 0, `the destination's guest wrote while pages came (${journal.writes.length} writes)`);
  const expected = await ram(p.src);
  for (const w of journal.writes) Buffer.from(w.data, 'hex').copy(expected, w.page * 4096 + w.offset);
  const actual = await ram(p.dst);
  let differing = 0;
  for (let page = 0; page < expected.length / 4096; page++) {
    if (expected.compare(actual, page * 4096, page * 4096 + 4096, page * 4096, page * 4096 + 4096) !== 0) differing++;
  }
  t.equal(differing, 0, 'every page is the source\'s, with the destination\'s writes on it: nothing lost, nothing overwritten');
}

/**
 * A count from a daemon's log line `msg` (which may come just after the status a test waited
 * for); 0 where the line has no such field (no thread took part).
 */
async function logged(s: Side, msg: string, field: string): Promise<number> {
  const line = await until(async () => logLine(s.daemon.stderr(), msg), (l) => l !== undefined, `the log line "${msg}"`);
  return (line![field] as number | undefined) ?? 0;
}

const workload = async (s: Side): Promise<Msg> => (await s.qmp.ok('__org.qmigd_query-workload')) as Msg;
const ramStats = async (s: Side): Promise<Record<string, number>> => ((await s.qmp.ok('query-migrate')) as { ram: Record<string, number> }).ram;

// With --page-thread on the source's page thread sends the background pass after the switch too,
// ending its slice as a request comes: the pages asked for still go first; the destination's load
// thread places them, and tells the main thread of those a vCPU waits for.
for (const thread of ['off', 'on']) t.test(`postcopy completes while the destination guest reads and writes; its faults are page requests the source serves first (--page-thread ${thread})`, async (t) => {
  const p = await postcopyPair(t, '7.2', {}, ['--page-thread', thread]);
  await switchToPostcopy(p);
  t.equal(await runState(p.dst), 'running', 'the destination runs the guest while its pages are still on the source');
  t.equal(await runState(p.src), 'finish-migrate', 'the source\'s guest is stopped for good');
  await migrationStatus(p.src, 'completed');
  await migrationStatus(p.dst, 'completed');
  t.same(statuses(p.src), ['setup', 'active', 'postcopy-active', 'completed']);
  t.same(statuses(p.dst), ['active', 'postcopy-active', 'completed']);
  const stats = await ramStats(p.src);
  const faults = (await workload(p.dst))['page-faults'] as number;
  // At 16 MiB/s the background pass takes seconds to reach a page: a vCPU that waited for it
  // would fault a handful of times; served first, it faults again and again (90 to 100 times on
  // a quiet machine, 50 with two other suites beside it).
  t.ok(faults > FAULTS_SERVED_AT_ONCE, `the destination's guest touched pages that were not there yet, and got them at once (${faults} faults)`);
  t.ok(stats['postcopy-requests']! > 0 && stats['postcopy-requests']! <= faults, `the source took the requests (${stats['postcopy-requests']})`);
  t.ok(stats['postcopy-bytes']! > (MEMORY_MB << 20) / 4, `most pages went in postcopy (${stats['postcopy-bytes']} postcopy-bytes)`);
  const afterSwitch = async (field: string): Promise<number> => (await logged(p.src, 'migration finished', field)) - (await logged(p.src, 'postcopy: the switch', field));
  const fromThread = await afterSwitch('pagesFromPageThread');
  t.equal(fromThread > (MEMORY_MB << 20) / 4 / 4096, thread === 'on', `the background pass ${thread === 'on' ? 'went' : 'did not go'} from the page thread (${fromThread} pages)`);
  const fromQmpThread = await afterSwitch('pagesFromQmpThread');
  t.equal(fromQmpThread === 0, thread === 'on', `${thread === 'on' ? 'no page, not even one asked for,' : 'the pages'} went from the QMP thread (${fromQmpThread} pages)`);
  // At the destination the load thread places them (each once, beside the guest that faults).
  const placedAfterRun = (await logged(p.dst, 'incoming migration completed', 'loadThreadPages')) - (await logged(p.dst, 'postcopy: the guest runs here', 'loadThreadPages'));
  t.equal(placedAfterRun > (MEMORY_MB << 20) / 4 / 4096, thread === 'on', `the destination's load thread ${thread === 'on' ? 'placed' : 'did not place'} them (${placedAfterRun} pages)`);
  t.equal(await runState(p.src), 'postmigrate');
  t.equal(await runState(p.dst), 'running');
  t.equal((await workload(p.dst)).stalled, false, 'no vCPU waits once every page is there');
  const dstInfo = (await p.dst.qmp.ok('query-migrate')) as { 'postcopy-blocktime': number; 'postcopy-vcpu-blocktime': number[] };
  t.ok(dstInfo['postcopy-blocktime'] > 0, `postcopy-blocktime: the vCPU waited ${dstInfo['postcopy-blocktime']} ms in all`);
  t.same(dstInfo['postcopy-vcpu-blocktime'], [dstInfo['postcopy-blocktime']], 'one vCPU, so its time is the total');
  await nothingLost(t, p);
});

/** Recovery: the destination listens anew, the source resumes to it; both are postcopy-active again. */
async function recover(p: Pair): Promise<void> {
  const uri = `tcp:127.0.0.1:${await freePort()}`;
  const [src, dst] = [p.src.qmp.events.length, p.dst.qmp.events.length];
  await p.dst.qmp.ok('migrate-recover', { uri });
  await p.src.qmp.ok('migrate', { uri, resume: true });
  await migrationStatus(p.src, 'postcopy-recover', src);
  await migrationStatus(p.dst, 'postcopy-recover', dst);
  await migrationStatus(p.src, 'postcopy-active', src);
  await migrationStatus(p.dst, 'postcopy-active', dst);
}

async function bothPaused(p: Pair, from: [number, number]): Promise<void> {
  await migrationStatus(p.src, 'postcopy-paused', from[0]);
  await migrationStatus(p.dst, 'postcopy-paused', from[1]);
}

// With --page-thread on too: the page and load threads carry the passes before the switch and
// after it, and end at the pause, as their duplicates of the channel's descriptor would hold the
// connection open past it; new ones, booted during the pause, carry the pages after the recovery.
for (const [where, args] of [['src', []], ['dst', []], ['src', ['--page-thread', 'on']], ['dst', ['--page-thread', 'on']]] as const) {
  t.test(`migrate-pause on the ${where === 'src' ? 'source' : 'destination'}${args.length ? `, ${args.join(' ')} at both ends` : ''}: both pause, the guest runs on, recovery finishes the migration`, async (t) => {
    const p = await postcopyPair(t, '7.2', {}, [...args]);
    await switchToPostcopy(p);
    if (args.length) {
      t.ok(p.src.daemon.stderr().includes('pages go from the page thread from here on'), 'the passes before the switch went from the source\'s page thread');
      t.ok(p.dst.daemon.stderr().includes('RAM sections load on the load thread from here on'), 'and loaded on the destination\'s load thread');
    }
    const from: [number, number] = [p.src.qmp.events.length, p.dst.qmp.events.length];
    await p[where].qmp.ok('migrate-pause');
    await bothPaused(p, from);
    t.equal(await runState(p.dst), 'running', 'the destination\'s guest runs on with the pages it has');
    const paused = await ramStats(p.src);
    t.ok(paused.remaining > 0, `pages are still on the source (${paused.remaining} bytes)`);
    t.match(await p.dst.qmp.cmd('migrate-pause'), { error: { class: 'GenericError' } }, 'a paused migration cannot be paused again');
    await recover(p);
    await migrationStatus(p.src, 'completed', from[0]);
    await migrationStatus(p.dst, 'completed', from[1]);
    t.same(statuses(p.src).slice(-4), ['postcopy-paused', 'postcopy-recover', 'postcopy-active', 'completed']);
    // 7.2's migrate-recover announces setup, as its migrate-incoming does.
    t.same(statuses(p.dst).slice(-5), ['postcopy-paused', 'setup', 'postcopy-recover', 'postcopy-active', 'completed']);
    const sent = (await logged(p.src, 'migration finished', 'pagesFromPageThread')) - (await logged(p.src, 'postcopy: recovered', 'pagesFromPageThread'));
    const sentHere = (await logged(p.src, 'migration finished', 'pagesFromQmpThread')) - (await logged(p.src, 'postcopy: recovered', 'pagesFromQmpThread'));
    const placed = (await logged(p.dst, 'incoming migration completed', 'loadThreadPages')) - (await logged(p.dst, 'postcopy: recovering', 'loadThreadPages'));
    const on = args.length > 0;
    t.equal(sent > 0, on, `after the recovery, the source's page thread sent ${sent} pages`);
    t.equal(sentHere === 0, on, `and its QMP thread ${sentHere}`);
    t.equal(placed > 0, on, `and the destination's load thread placed ${placed}`);
    await nothingLost(t, p);
  });
}

for (const thread of ['on', 'off']) {
  t.test(`--page-thread ${thread}: most pages go before the switch${thread === 'on' ? ' on the page and load threads' : ''}, marked received as they load: a recovery asks the source only for what the destination lacks`, async (t) => {
    const p = await postcopyPair(t, '7.2', {}, ['--page-thread', thread]);
    const before = PRECOPY_MB << 20;
    await switchToPostcopy(p, before);
    const from: [number, number] = [p.src.qmp.events.length, p.dst.qmp.events.length];
    await p.dst.qmp.ok('migrate-pause');
    await bothPaused(p, from);
    const paused = (await ramStats(p.src)).remaining!;
    await recover(p);
    // ram_dirty_bitmap_reload(): what the destination lacks is what its received bitmap lacks; had
    // the loader (here or on the load thread) not marked its pages, all would be asked for again.
    const recovered = (await ramStats(p.src)).remaining!;
    t.ok(recovered <= paused + IN_FLIGHT, `after recovery ${recovered} bytes remain to send, against ${paused} at the pause (at most ${IN_FLIGHT} more: what the broken connection lost)`);
    await migrationStatus(p.src, 'completed', from[0]);
    await migrationStatus(p.dst, 'completed', from[1]);
    const onThread = loadThreadPages(p.dst.daemon.stderr()) ?? 0;
    if (thread === 'on') t.ok(onThread * 4096 >= before - IN_FLIGHT, `the load thread loaded the passes before the switch (${onThread} pages)`);
    else t.equal(onThread, 0, 'no load thread');
    await nothingLost(t, p);
  });
}

t.test('QEMU 10.0: a killed connection in postcopy pauses both; a recovery to nowhere leaves the source paused; a break during recovery pauses again; the next recovery finishes', async (t) => {
  const p = await postcopyPair(t, '10.0');
  await switchToPostcopy(p);
  let from: [number, number] = [p.src.qmp.events.length, p.dst.qmp.events.length];
  await p.src.qmp.ok('__org.qmigd_fault-add', { id: 'kill', kind: 'reset', channel: 'main', 'after-ms': 200 });
  await bothPaused(p, from);
  t.equal(await runState(p.dst), 'running');

  // The destination listens; the source first tries an address where nobody does, and stays paused.
  const uri = `tcp:127.0.0.1:${await freePort()}`;
  await p.dst.qmp.ok('migrate-recover', { uri });
  await p.dst.qmp.ok('migrate-recover', { uri: `tcp:127.0.0.1:${await freePort()}` });
  await p.dst.qmp.ok('migrate-recover', { uri }); // given again while paused, it listens there instead
  await p.src.qmp.ok('migrate', { uri: `tcp:127.0.0.1:${await freePort()}`, resume: true });
  await new Promise((r) => setTimeout(r, 300));
  t.equal(((await p.src.qmp.ok('query-migrate')) as Msg).status, 'postcopy-paused', 'a connection that fails leaves the migration paused');

  // Then the right address, but the destination breaks the connection as the bitmap is asked for.
  await p.dst.qmp.ok('__org.qmigd_fault-add', { id: 'again', kind: 'reset', channel: 'main', side: 'receive', point: 'command:recv-bitmap' });
  from = [p.src.qmp.events.length, p.dst.qmp.events.length];
  await p.src.qmp.ok('migrate', { uri, resume: true });
  await migrationStatus(p.src, 'postcopy-recover', from[0]);
  await bothPaused(p, from);
  t.same(statuses(p.dst).slice(-2), ['postcopy-recover', 'postcopy-paused'], 'the destination went back to paused from recover');
  t.same(statuses(p.src).slice(-2), ['postcopy-recover', 'postcopy-paused'], 'and so did the source');

  await recover(p);
  await migrationStatus(p.src, 'completed', from[0]);
  await migrationStatus(p.dst, 'completed', from[1]);
  await nothingLost(t, p);
});

t.test('faults at postcopy points: a break at the last section pauses both and recovery resends what was lost; a break inside the package, before RUN, is fatal to the destination and pauses the source', async (t) => {
  await t.test('the destination breaks the connection as the last RAM section arrives', async (t) => {
    const p = await postcopyPair(t);
    await p.dst.qmp.ok('__org.qmigd_fault-add', { kind: 'reset', side: 'receive', point: 'section-end:ram' });
    await switchToPostcopy(p);
    await bothPaused(p, [0, 0]);
    t.equal(await runState(p.src), 'finish-migrate', 'the source sent everything, and waits paused');
    await recover(p);
    await migrationStatus(p.src, 'completed');
    await migrationStatus(p.dst, 'completed');
    await nothingLost(t, p);
  });
  await t.test('the source\'s connection is reset as it sends POSTCOPY_RUN', async (t) => {
    const p = await postcopyPair(t);
    await p.src.qmp.ok('__org.qmigd_fault-add', { kind: 'reset', point: 'command:postcopy-run' });
    await p.src.qmp.ok('migrate', { uri: p.uri });
    await migrationStatus(p.src, 'active');
    await p.src.qmp.ok('migrate-start-postcopy');
    await migrationStatus(p.src, 'postcopy-paused');
    const exit = await p.dst.daemon.exited;
    t.equal(exit.code, 1, 'the destination, which never ran the guest, fails and exits as QEMU does');
    t.equal(await runState(p.src), 'finish-migrate', 'the source keeps the guest stopped, paused: the orchestrator decides');
  });
});

t.test('QEMU 7.2: a break during the recovery handshake leaves the source in postcopy-recover for good, and crashes the destination, as 7.2 does', async (t) => {
  const p = await postcopyPair(t, '7.2');
  await switchToPostcopy(p);
  const from: [number, number] = [p.src.qmp.events.length, p.dst.qmp.events.length];
  await p.src.qmp.ok('migrate-pause');
  await bothPaused(p, from);
  await p.dst.qmp.ok('__org.qmigd_fault-add', { kind: 'reset', side: 'receive', point: 'command:recv-bitmap' });
  const uri = `tcp:127.0.0.1:${await freePort()}`;
  await p.dst.qmp.ok('migrate-recover', { uri });
  await p.src.qmp.ok('migrate', { uri, resume: true });
  t.same(await p.dst.daemon.exited, { code: null, signal: 'SIGSEGV' }, 'the destination dies of a segmentation fault');
  await new Promise((r) => setTimeout(r, 500));
  t.equal(((await p.src.qmp.ok('query-migrate')) as Msg).status, 'postcopy-recover', 'the source waits in postcopy-recover');
  t.same(await p.src.qmp.cmd('migrate', { uri, resume: true }), { error: { class: 'GenericError', desc: 'Cannot resume if there is no paused migration' } });
});

for (const release of ['7.2', '10.0'] as const) {
  // 10.0's with the background pass from the source's page thread.
  const args = release === '10.0' ? ['--page-thread', 'on'] : [];
  t.test(`postcopy-preempt, QEMU ${release}'s way: the asked-for pages take the second channel; paused and recovered, nothing lost${args.length ? ` (${args.join(' ')})` : ''}`, async (t) => {
    const p = await postcopyPair(t, release, { 'postcopy-preempt': true }, args);
    await switchToPostcopy(p);
    await new Promise((r) => setTimeout(r, 300));
    const from: [number, number] = [p.src.qmp.events.length, p.dst.qmp.events.length];
    await p.src.qmp.ok('migrate-pause');
    await bothPaused(p, from);
    await recover(p);
    await migrationStatus(p.src, 'completed', from[0]);
    await migrationStatus(p.dst, 'completed', from[1]);
    const faults = (await workload(p.dst))['page-faults'] as number;
    t.ok(faults > FAULTS_SERVED_AT_ONCE, `the guest's faults were served at once (${faults})`);
    if (args.length) {
      // The pages asked for went on the preempt channel from the page thread, before and after the recovery.
      const fromQmpThread = (await logged(p.src, 'migration finished', 'pagesFromQmpThread')) - (await logged(p.src, 'postcopy: the switch', 'pagesFromQmpThread'));
      t.equal(fromQmpThread, 0, 'no page went from the QMP thread after the switch');
      const preemptEnds = async (): Promise<Msg[]> => p.dst.daemon.stderr().split('\n').filter((l) => l.includes('"postcopy preempt channel ended"')).map((l) => JSON.parse(l) as Msg);
      const ends = await until(preemptEnds, (l) => l.length === 2, 'the ends of both preempt channels');
      t.same(ends.map((l) => l.onLoadThread), ends.map(() => true), `and the destination's load thread loaded the preempt channel, before the pause and after the recovery (${ends.length} channels)`);
    }
    await nothingLost(t, p);
  });

  t.test(`postcopy-preempt, QEMU ${release}'s way: the main channel's end waits for the asked-for pages still on the preempt channel`, async (t) => {
    const p = await postcopyPair(t, release, { 'postcopy-preempt': true });
    await switchToPostcopy(p);
    await until(() => workload(p.dst), (w) => (w['pages-dirtied'] as number) > 0, 'a write by the destination\'s guest');
    // From here the guest's faults are served on a channel that does not move, so the main
    // channel (which never carries a page sent on the other) runs out first.
    await p.dst.qmp.ok('__org.qmigd_fault-add', { id: 'held', kind: 'stall', channel: 'postcopy-preempt', side: 'receive' });
    await until(() => workload(p.dst), (w) => w.stalled === true, 'the guest waiting on a page');
    await until(() => ramStats(p.src), (ram) => ram.remaining === 0, 'the source with nothing left for the main channel');
    await new Promise((r) => setTimeout(r, 1000));
    t.equal(((await p.dst.qmp.ok('query-migrate')) as Msg).status, 'postcopy-active', 'the destination waits for the page its guest waits on');
    t.equal((await workload(p.dst)).stalled, true, 'its guest still waits');
    await p.dst.qmp.ok('__org.qmigd_fault-clear', { id: 'held' });
    await migrationStatus(p.dst, 'completed');
    await migrationStatus(p.src, 'completed');
    await nothingLost(t, p);
  });
}

t.test('migrate_cancel in postcopy, where each release allows it: 7.2 cancels (its guest stays stopped: it runs on the destination, paused there); 10.0 refuses', async (t) => {
  for (const release of ['7.2', '10.0'] as const) {
    const p = await postcopyPair(t, release);
    await switchToPostcopy(p);
    const from = p.dst.qmp.events.length;
    const answer = await p.src.qmp.cmd('migrate_cancel');
    if (release === '10.0') {
      t.same(answer, { error: { class: 'GenericError', desc: 'Postcopy migration in progress, cannot cancel.' } }, '10.0 refuses');
      await migrationStatus(p.src, 'completed');
      continue;
    }
    t.same(answer, { return: {} });
    await migrationStatus(p.src, 'cancelled');
    await migrationStatus(p.dst, 'postcopy-paused', from);
    t.equal(await runState(p.src), 'postmigrate', '7.2: the source\'s guest is not started again');
    t.equal(await runState(p.dst), 'running', 'the destination\'s runs on, paused, with what it has');
  }
});
