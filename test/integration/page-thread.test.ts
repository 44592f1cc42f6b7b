/**
 * The page thread (src/migration/ram/page-thread.ts, --page-thread on): a plain migration over a
 * socket or a pipe moves its pages on a thread of its own, writing the main channel through a
 * duplicate of its descriptor. Its stream carries the records the main thread's does (off);
 * a cancel ends a slice that waits on a destination that has stopped reading; a
 * destination that goes away fails the migration with QEMU's words; the source runs on.
 */
import { closeSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { BIN, freePort, loadThreadPages, logLine, startDaemon, tempDir, threads, threadsSettled, unixPath } from '../helpers/daemon.js';
import { FdClient } from '../helpers/fd-client.js';
import { digest, migrationStatus, randomRamFile, runState, setCaps, side, startPair, statuses, until, untilInfo, type Side } from '../helpers/migration.js';
import { QmpClient, type Msg } from '../helpers/qmp-client.js';

const MiB = 1 << 20;
const run = promisify(execFile);

t.test('the page thread writes the records the main thread writes, and the same RAM arrives', async (t) => {
  const dir = tempDir();
  // 32 MiB of random pages, then 32 MiB of zero pages: both kinds of record.
  const ram = join(dir, 'ram-64.bin');
  writeFileSync(ram, Buffer.concat([readFileSync(await randomRamFile(32 * MiB)), Buffer.alloc(32 * MiB)]));
  const reports: string[][] = [];
  for (const thread of ['on', 'off']) {
    const src = await side(['-m', '64M', '--memory-file', ram, '-S', '--page-thread', thread]);
    t.teardown(() => src.daemon.stop());
    await setCaps(src, { events: true });
    const out = join(dir, `stream-${thread}`);
    await src.qmp.ok('migrate', { uri: `exec:cat > ${out}` });
    await migrationStatus(src, 'completed');
    const r = ((await src.qmp.ok('query-migrate')) as Msg).ram as Record<string, number>;
    t.equal(r.normal, 8192, `thread ${thread}: every random page went as a page`);
    t.equal(r.duplicate, 8192, `thread ${thread}: every zero page as a zero page`);
    // Where the sections end depends on time; what they carry does not.
    const { stdout } = await run(process.execPath, [BIN, 'inspect', '--qemu-version', '7.2', out]);
    reports.push(stdout.split('\n').filter((l) => /^\d+ bytes: |^RAM block |^\s+(cpu_ticks|runstate)/.test(l)));
  }
  t.equal(reports[0]!.length, 4, 'the streams load');
  t.match(reports[0]![2], /RAM records: 1 MEM_SIZE, 8192 PAGE, 8192 ZERO$/);
  t.same(reports[0]!.map(withoutSize), reports[1]!.map(withoutSize), 'the same records, devices and RAM');
});

const withoutSize = (l: string): string => l.replace(/^\d+ bytes: \d+ sections/, 'N bytes: N sections');

t.test('the page thread writes a file too (file:, and an fd: file after its writer\'s header): every page from it, over passes of a running guest, and the stream loads whole', async (t) => {
  const dir = tempDir();
  const release = ['--qemu-version', '10.0']; // file: is 10.0's
  const ram = await randomRamFile(32 * MiB);
  for (const kind of ['file', 'fd']) {
    const stream = join(dir, `stream-${kind}`);
    const s = await side([...release, '-m', '32M', '--memory-file', ram, '--dirty-rate', '8M', '--page-thread', 'on']);
    t.teardown(() => (s.qmp.close(), s.daemon.stop()));
    await setCaps(s, { events: true });
    if (kind === 'fd') {
      // The writer's header first (as libvirt's save image has): the stream goes after it.
      writeFileSync(stream, Buffer.alloc(4096, 0xaa));
      const fdc = await FdClient.connect(unixPath(s.daemon));
      await fdc.open('out', stream, 4096);
      await fdc.ok('getfd', { fdname: 'out' }, ['out']);
      await fdc.quit();
    }
    // Several passes: the main thread's section records go between the thread's slices.
    await s.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 64 * MiB, 'downtime-limit': 20 });
    await s.qmp.ok('migrate', { uri: kind === 'file' ? `file:${stream}` : 'fd:out' });
    await untilInfo(s, (i) => ((i.ram as Record<string, number> | undefined)?.['dirty-sync-count'] ?? 0) > 2 || i.status === 'completed');
    await s.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
    await migrationStatus(s, 'completed');
    const passes = (((await s.qmp.ok('query-migrate')) as Msg).ram as Record<string, number>)['dirty-sync-count']!;
    t.ok(passes > 2, `${kind}: ${passes} passes`);
    const finished = logLine(s.daemon.stderr(), 'migration finished')!;
    t.equal(finished.pagesFromQmpThread, 0, `${kind}: no page from the QMP thread (${String(finished.pagesFromPageThread)} from the page thread)`);
    // A destination reads it back: the RAM the source had at its stop.
    let in3: number | undefined;
    if (kind === 'fd') {
      in3 = openSync(stream, 'r');
      readSync(in3, Buffer.alloc(4096), 0, 4096, null);
    }
    const dst = await startDaemon([...release, '-m', '32M', '--incoming', kind === 'file' ? `file:${stream}` : 'fd:3'], { fd3: in3 });
    if (in3 !== undefined) closeSync(in3);
    const d: Side = { daemon: dst, qmp: await QmpClient.at(dst.listening[0]!) };
    t.teardown(() => (d.qmp.close(), dst.stop()));
    await d.qmp.negotiate();
    await until(() => d.qmp.ok('query-migrate') as Promise<Msg>, (i) => i.status === 'completed' || i.status === 'failed', 'the load ends');
    t.equal(await digest(d), await digest(s), `${kind}: the stream loads to the source's RAM`);
  }
});

t.test('with --page-thread on the source has its page thread before it migrates (booted with the daemon, and again after each migration), the destination its load thread from its start and no page thread; with off neither', async (t) => {
  const ram = await randomRamFile(128 * MiB);
  const sourceThreads: Record<string, { before: number; during: number; after: number }> = {};
  for (const thread of ['on', 'off']) {
    const p = await startPair({ memory: '128M', srcArgs: ['--memory-file', ram, '--page-thread', thread], dstArgs: ['--page-thread', thread] });
    t.teardown(p.stop);
    const [src, dst] = [p.src.daemon.proc.pid!, p.dst.daemon.proc.pid!];
    const before = [await threadsSettled(src), await threadsSettled(dst)];
    const ready = (s: Side): number => s.daemon.stderr().split('page thread ready for the next outgoing migration').length - 1;
    await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 16 * MiB });
    await p.src.qmp.ok('migrate', { uri: p.uri });
    await untilInfo(p.src, (i) => ((i.ram as Msg | undefined)?.transferred as number) > 4 * MiB);
    const during = [threads(src), threads(dst)];
    if (thread === 'off') t.same(during, before, `no thread more at either end (${before} → ${during})`);
    await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
    await migrationStatus(p.src, 'completed');
    await migrationStatus(p.dst, 'completed');
    t.equal(await digest(p.dst), await digest(p.src), `thread ${thread}: destination RAM equals source RAM`);
    t.equal(p.src.daemon.stderr().includes('pages go from the page thread from here on'), thread === 'on', `thread ${thread}: the source's pages ${thread === 'on' ? 'went' : 'did not go'} from the page thread`);
    t.equal(p.dst.daemon.stderr().includes('RAM sections load on the load thread'), thread === 'on', `thread ${thread}: the destination's sections ${thread === 'on' ? 'went' : 'did not go'} to the load thread`);
    sourceThreads[thread] = { before: before[0]!, during: during[0]!, after: await threadsSettled(src) };
    if (thread === 'on') {
      // Booted as the destination began to listen, so counted before the migration: it ends with it.
      for (const deadline = Date.now() + 10_000; threads(dst) >= before[1]! && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 50));
      t.ok(threads(dst) < before[1]!, `destination: its load thread was there while it waited, and ends with the migration (${before[1]} → ${threads(dst)})`);
      t.equal(ready(p.dst), 0, 'destination: no page thread (its first migration out would boot one)');
      for (const deadline = Date.now() + 10_000; ready(p.src) < 2 && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 50));
      t.equal(ready(p.src), 2, 'source: a page thread booted with the daemon, and another after the migration');
    } else t.equal(ready(p.src) + ready(p.dst), 0, 'no page thread at either end');
  }
  const { on, off } = sourceThreads;
  t.ok(on!.before > off!.before, `source: before migrating, more threads with on than with off (${on!.before} against ${off!.before}): its page thread's`);
  t.equal(on!.during, on!.before, 'source: no thread starts for the migration');
  t.equal(on!.after, on!.before, 'source: after it, the thread it used has ended and the next one is up');
});

t.test('a destination started with --incoming defer boots its load thread with the daemon: up before migrate-incoming, which takes it', async (t) => {
  const dst = await side(['-m', '32M', '--page-thread', 'on', '--incoming', 'defer']);
  t.teardown(() => (dst.qmp.close(), dst.daemon.stop()));
  const src = await side(['-m', '32M', '--memory-file', await randomRamFile(32 * MiB), '-S']);
  t.teardown(() => (src.qmp.close(), src.daemon.stop()));
  const pid = dst.daemon.proc.pid!;
  await until(async () => dst.daemon.stderr(), (log) => log.includes('load thread ready for the incoming migration'), 'the load thread, before migrate-incoming');
  const up = await threadsSettled(pid);
  for (const s of [src, dst]) await setCaps(s, { events: true });
  const port = await freePort();
  await dst.qmp.ok('migrate-incoming', { uri: `tcp:127.0.0.1:${port}` });
  t.equal(threads(pid), up, `migrate-incoming starts no thread (${up})`);
  await src.qmp.ok('migrate', { uri: `tcp:127.0.0.1:${port}` });
  await migrationStatus(dst, 'completed');
  await migrationStatus(src, 'completed');
  const sent = ((await src.qmp.ok('query-migrate')) as Msg).ram as Record<string, number>;
  t.equal(dst.daemon.stderr().split('load thread ready').length - 1, 1, 'one load thread booted');
  t.equal(loadThreadPages(dst.daemon.stderr()), sent.normal, 'and it loaded every page that came as a page');
  t.equal(await digest(dst), await digest(src), 'the RAM arrived whole');
});

t.test('a fault added during a migration whose pages are on the threads takes effect on the main channel, at the source and at the destination', async (t) => {
  const ram = await randomRamFile(64 * MiB);
  for (const side of ['send', 'receive'] as const) {
    const p = await startPair({ memory: '64M', srcArgs: ['--memory-file', ram, '--page-thread', 'on', '--test-hooks'], dstArgs: ['--page-thread', 'on', '--test-hooks'] });
    t.teardown(p.stop);
    await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 8 * MiB });
    await p.src.qmp.ok('migrate', { uri: p.uri });
    const at = side === 'send' ? p.src : p.dst;
    const onThread = side === 'send' ? 'pages go from the page thread from here on' : 'RAM sections load on the load thread from here on';
    await until(async () => at.daemon.stderr(), (log) => log.includes(onThread), `the ${side} side's thread at work`);
    await untilInfo(p.src, (i) => ((i.ram as Msg | undefined)?.transferred as number) > 4 * MiB);
    await at.qmp.ok('__org.qmigd_fault-add', { id: 'late', kind: 'close', channel: 'main', side });
    const fired = (await at.qmp.waitEvent('__org.qmigd_FAULT')).data as Msg;
    t.match(fired, { id: 'late', kind: 'close' }, `${side}: the fault fired`);
    await migrationStatus(p.src, 'failed');
    t.equal(((await p.src.qmp.ok('query-migrate')) as Msg).status, 'failed', `${side}: the migration failed where the channel closed`);
  }
});

t.test('cancel while the destination has stopped reading: the slice ends, the source runs on and migrates again', async (t) => {
  // A "destination" that accepts and never reads: the socket fills and the page thread waits.
  const port = await freePort();
  const held: net.Socket[] = [];
  const server = net.createServer((s) => {
    s.pause();
    held.push(s);
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of held) s.destroy();
    server.close();
  });
  const p = await startPair({ memory: '128M', srcArgs: ['--memory-file', await randomRamFile(128 * MiB), '--page-thread', 'on'] });
  t.teardown(p.stop);
  const before = await digest(p.src);
  // Slices within a rate limit end, and count what they sent, until the socket's buffers are full.
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 16 * MiB });
  await p.src.qmp.ok('migrate', { uri: `tcp:127.0.0.1:${port}` });
  await migrationStatus(p.src, 'active');
  // Stuck: what was sent stops growing once the socket's buffers are full.
  let last = -1;
  await untilInfo(p.src, (i) => {
    const now = (i.ram as Msg | undefined)?.transferred as number;
    const stuck = now > 0 && now === last;
    last = now;
    return stuck;
  });
  t.ok(last < 128 * MiB, `the pages stopped at ${last} bytes`);
  await p.src.qmp.ok('migrate_cancel');
  await migrationStatus(p.src, 'cancelled');
  t.same(statuses(p.src), ['setup', 'active', 'cancelling', 'cancelled']);
  t.equal(await runState(p.src), 'running');
  t.equal(await digest(p.src), before, 'source RAM untouched');
  // The held connection sees its end once both descriptors are closed.
  await new Promise<void>((r) => (held[0]!.destroyed ? r() : held[0]!.resume().once('close', () => r())));
  t.pass('the destination saw the connection close');
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  await migrationStatus(p.src, 'completed');
  await migrationStatus(p.dst, 'completed'); // the destination may still be loading the last pages
  t.equal(await digest(p.dst), before, 'a later migration to a healthy destination brings the RAM whole');
});

t.test('the destination goes away under the page thread: failed with QEMU\'s words, the guest runs on', async (t) => {
  const port = await freePort();
  const server = net.createServer((s) => {
    // Read a little, then reset the connection.
    s.once('data', () => setTimeout(() => s.resetAndDestroy(), 50));
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  t.teardown(() => server.close());
  const p = await startPair({ memory: '128M', srcArgs: ['--memory-file', await randomRamFile(128 * MiB), '--page-thread', 'on'] });
  t.teardown(p.stop);
  const before = await digest(p.src);
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 32 * MiB });
  await p.src.qmp.ok('migrate', { uri: `tcp:127.0.0.1:${port}` });
  const failed = await migrationStatus(p.src, 'failed');
  t.ok(failed);
  const info = (await p.src.qmp.ok('query-migrate')) as Msg;
  t.match(info['error-desc'], /^Unable to write to socket: (Connection reset by peer|Broken pipe)$/);
  t.equal(await runState(p.src), 'running');
  t.equal(await digest(p.src), before, 'source RAM untouched');
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  await migrationStatus(p.src, 'completed');
  await migrationStatus(p.dst, 'completed');
  t.equal(await digest(p.dst), before, 'then a healthy destination gets the RAM whole');
});

t.test('the load thread: a running guest\'s passes arrive whole, plain and with XBZRLE', async (t) => {
  const ram = await randomRamFile(64 * MiB);
  for (const xbzrle of [false, true]) {
    const p = await startPair({ memory: '64M', srcArgs: ['--memory-file', ram, '--dirty-rate', '16M'], dstArgs: ['--page-thread', 'on'] });
    t.teardown(p.stop);
    if (xbzrle) for (const s of [p.src, p.dst]) await setCaps(s, { xbzrle: true });
    await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 32 * MiB, 'downtime-limit': 50 });
    await p.src.qmp.ok('migrate', { uri: p.uri });
    // Passes go on until XBZRLE pages have gone (with it), or a few passes (without); then it ends.
    const enough = (i: Msg): boolean =>
      xbzrle ? ((i['xbzrle-cache'] as Record<string, number> | undefined)?.pages ?? 0) > 100 : ((i.ram as Record<string, number> | undefined)?.['dirty-sync-count'] ?? 0) > 3;
    await untilInfo(p.src, (i) => enough(i) || i.status === 'completed');
    await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
    await migrationStatus(p.src, 'completed');
    await migrationStatus(p.dst, 'completed');
    const info = (await p.src.qmp.ok('query-migrate')) as Msg;
    t.ok(enough(info), `${xbzrle ? 'XBZRLE pages went' : 'more passes went'} (${JSON.stringify(xbzrle ? info['xbzrle-cache'] : (info.ram as Msg)['dirty-sync-count'])})`);
    t.equal(await digest(p.dst), await digest(p.src), `${xbzrle ? 'XBZRLE' : 'plain'}: destination RAM equals the source's at its stop`);
    const onThread = loadThreadPages(p.dst.daemon.stderr()) ?? 0;
    t.ok(onThread > 0, `the load thread loaded ${onThread} of its pages`);
  }
});

t.test('the load thread reads every kind of channel: exec:, an fd: pipe, file:, an fd: file (from its offset); the RAM arrives whole', async (t) => {
  const dir = tempDir();
  // As 10.0, which has file: (7.2 does not).
  const release = ['--qemu-version', '10.0'];
  const src = await side([...release, '-m', '64M', '--memory-file', await randomRamFile(64 * MiB), '-S']);
  t.teardown(() => src.daemon.stop());
  await setCaps(src, { events: true });
  const stream = join(dir, 'stream');
  await src.qmp.ok('migrate', { uri: `exec:cat > ${stream}` });
  await migrationStatus(src, 'completed');
  const sent = ((await src.qmp.ok('query-migrate')) as Msg).ram as Record<string, number>;
  const want = await digest(src);
  // A saved guest behind a header of its writer's: fd: reads on from the descriptor's offset.
  const saved = join(dir, 'saved');
  writeFileSync(saved, Buffer.concat([Buffer.alloc(4096, 0xaa), readFileSync(stream)]));
  // A pipe waits at a gate (a FIFO) until the destination's load thread is up, so that every
  // section can load on it however slowly the thread boots; a file waits for the thread itself.
  const gate = join(dir, 'gate');
  await run('mkfifo', [gate]);
  for (const kind of ['exec', 'fd-pipe', 'file', 'fd-file']) {
    let fd3: number | undefined;
    if (kind === 'fd-pipe') {
      // The pipe's writer opens it first (open blocks until both ends are there), then waits.
      const pipe = join(dir, 'pipe');
      await run('mkfifo', [pipe]);
      spawn('/bin/sh', ['-c', `exec 3>${pipe}; read go <${gate}; cat ${stream} >&3`], { stdio: 'ignore' });
      fd3 = openSync(pipe, 'r');
    } else if (kind === 'fd-file') {
      fd3 = openSync(saved, 'r');
      readSync(fd3, Buffer.alloc(4096), 0, 4096, null); // past the header
    }
    const dst = await startDaemon([...release, '-m', '64M', '--page-thread', 'on', '--incoming', 'defer'], { fd3 });
    if (fd3 !== undefined) closeSync(fd3);
    const qmp = await QmpClient.at(dst.listening[0]!);
    t.teardown(() => (qmp.close(), dst.stop()));
    await qmp.negotiate();
    await setCaps({ daemon: dst, qmp }, { events: true });
    const uri = { exec: `exec:read go <${gate}; cat ${stream}`, file: `file:${stream}` }[kind] ?? 'fd:3';
    await qmp.ok('migrate-incoming', { uri });
    if (kind === 'exec' || kind === 'fd-pipe') {
      await until(async () => dst.stderr(), (log) => log.includes('load thread ready'), 'the load thread is up');
      writeFileSync(gate, 'go\n');
    }
    await migrationStatus({ daemon: dst, qmp }, 'completed');
    t.equal(await digest({ daemon: dst, qmp }), want, `${kind}: the RAM arrived whole`);
    t.equal(loadThreadPages(dst.stderr()), sent.normal, `${kind}: the load thread loaded every page that came as a page`);
  }
});

t.test('the load thread: a source that stops mid-section fails the destination with the same report as without it', async (t) => {
  const ram = await randomRamFile(32 * MiB);
  const reports: string[] = [];
  for (const thread of ['on', 'off']) {
    const p = await startPair({ memory: '32M', srcArgs: ['--memory-file', ram, '--fault', 'kind=close,after-bytes=12M'], dstArgs: ['--page-thread', thread] });
    t.teardown(p.stop);
    // Slowly until the thread is up (on a loaded machine that can take a while), then on to the cut.
    await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 2 * MiB });
    await p.src.qmp.ok('migrate', { uri: p.uri });
    for (const deadline = Date.now() + 30_000; thread === 'on' && !p.dst.daemon.stderr().includes('RAM sections load on the load thread') && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 50));
    }
    await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 16 * MiB });
    await migrationStatus(p.src, 'failed');
    const { code } = await p.dst.daemon.exited;
    t.equal(code, 1, `thread ${thread}: the destination exits 1`);
    t.equal(p.dst.daemon.stderr().includes('RAM sections load on the load thread'), thread === 'on', `thread ${thread}: the load thread ${thread === 'on' ? 'took' : 'took no'} sections`);
    const lines = p.dst.daemon.stderr().split('\n').filter((l) => /load of migration failed|invalid migration stream/.test(l));
    // Where the cut section began depends on when the source cut its sections, not on the thread.
    reports.push(lines.map((l) => (JSON.parse(l) as { msg: string }).msg.replace(/that began at byte offset \d+ \(0x[0-9a-f]+\)/, 'that began at byte offset N')).join('\n'));
  }
  t.match(reports[0], /load of migration failed: Input\/output error/, `the report: ${reports[0]}`);
  t.equal(reports[0], reports[1], 'the same lines, offsets included, with the thread and without');
});

// With multifd the page thread scans and posts the packets to the channel threads itself: 7.2
// syncs the channels at every RAM EOS (posted by the main thread between slices) and sends zero
// pages as ZERO records on the main channel; 10.0 syncs at each wrap of the scan (posted by the
// page thread) and has the channels find the zero pages. The destination's load thread takes
// the main channel's sections (7.2's ZERO records), asking the main thread for each sync.
for (const release of ['7.2', '10.0']) {
  t.test(`multifd (${release}) from the page thread: a running guest's passes arrive whole; a paused one's are counted as without it`, async (t) => {
    const ram = join(tempDir(), 'ram-64.bin');
    writeFileSync(ram, Buffer.concat([readFileSync(await randomRamFile(48 * MiB)), Buffer.alloc(16 * MiB)]));
    const counted: Record<string, Record<string, number>> = {};
    for (const thread of ['on', 'off']) {
      for (const running of [true, false]) {
        const version = ['--qemu-version', release];
        const guest = running ? ['--dirty-rate', '8M'] : ['-S'];
        const p = await startPair({ memory: '64M', srcArgs: ['--memory-file', ram, ...guest, '--page-thread', thread, ...version], dstArgs: ['--page-thread', thread, ...version] });
        t.teardown(p.stop);
        for (const s of [p.src, p.dst]) {
          await setCaps(s, { multifd: true });
          await s.qmp.ok('migrate-set-parameters', { 'multifd-channels': 2 });
        }
        if (running) await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 32 * MiB, 'downtime-limit': 50 });
        await p.src.qmp.ok('migrate', { uri: p.uri });
        if (running) {
          // Slowly for a few passes, then to the end.
          await untilInfo(p.src, (i) => ((i.ram as Record<string, number> | undefined)?.['dirty-sync-count'] ?? 0) > 3 || i.status === 'completed');
          await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
        }
        await migrationStatus(p.src, 'completed');
        await migrationStatus(p.dst, 'completed');
        const r = ((await p.src.qmp.ok('query-migrate')) as Msg).ram as Record<string, number>;
        const name = `thread ${thread}, ${running ? 'running' : 'paused'}`;
        t.equal(await digest(p.dst), await digest(p.src), `${name}: destination RAM equals the source's at its stop`);
        t.equal(p.src.daemon.stderr().includes('pages go from the page thread from here on'), thread === 'on', `${name}: the pages ${thread === 'on' ? 'went' : 'did not go'} from the page thread`);
        t.ok(r['multifd-bytes'] >= 48 * MiB, `${name}: the random pages went over the channels (${r['multifd-bytes']})`);
        const onThread = loadThreadPages(p.dst.daemon.stderr());
        if (thread === 'off') t.equal(onThread, undefined, `${name}: no load thread`);
        // 10.0's zero pages travel in the packets: its main channel carries none.
        else if (release === '7.2') t.ok(onThread! > 0 && onThread! <= r.duplicate!, `${name}: the load thread loaded the zero pages (${onThread} of ${r.duplicate})`);
        else t.equal(onThread, 0, `${name}: the load thread took the sections, with no page in them`);
        // Setup's sync, the first pass's, and at least one pass of pages the guest wrote again.
        if (running) t.ok(r['dirty-sync-count'] >= 3, `${name}: several passes (${r['dirty-sync-count']})`);
        else counted[thread] = r;
      }
    }
    const { on, off } = counted;
    t.equal(on!.duplicate, 4096, 'the zero pages counted as duplicate');
    // 7.2 flushes a partial packet at every section's end, which comes with time: its bytes vary
    // (and the main channel's do in both, a section's framing each).
    const same = release === '7.2' ? ['duplicate', 'normal'] : ['duplicate', 'normal', 'multifd-bytes'];
    for (const k of same) t.equal(on![k], off![k], `paused: ${k} as without the thread`);
  });
}
