/**
 * HMP's migration commands in the states a transcript cannot pin down: `info migrate` during a
 * migration, after it completed, failed or was cancelled, with xbzrle, under auto-converge, and
 * on the destination; HMP `migrate` and `migrate_cancel` driving real migrations between two
 * daemons. Every number `info migrate` prints must be the query-migrate field (in QEMU's units)
 * read at the same moment: exactly once the migration is over, and between two query-migrate
 * reads taken just before and just after while it runs. Where QEMU 7.2 is installed, the same
 * sequence on two real QEMUs prints the same lines in the same order.
 */
import t from 'tap';
import { freePort } from '../helpers/daemon.js';
import { digest, migrationStatus, randomRamFile, runState, setCaps, startPair, statuses, untilInfo, type Side } from '../helpers/migration.js';
import { qemuInstalled, startQemu } from '../helpers/qemu.js';
import { QmpClient, type Msg } from '../helpers/qmp-client.js';

type Test = Parameters<Parameters<typeof t.test>[0]>[0];

const MiB = 1 << 20;

/** One HMP command; the text must be CRLF lines (QEMU's monitor), returned split, CRs gone. */
async function hmp(t: Test, qmp: QmpClient, line: string): Promise<string[]> {
  const out = (await qmp.ok('human-monitor-command', { 'command-line': line })) as string;
  if (out === '') return [];
  t.ok(out.endsWith('\r\n') && !/[^\r]\n/.test(out), `${line}: CRLF lines`);
  return out.slice(0, -2).split('\r\n');
}

const GLOBALS = [
  'globals:', 'store-global-state: on', 'only-migratable: off', 'send-configuration: on', 'send-section-footer: on',
  'decompress-error-check: on', 'clear-bitmap-shift: 18',
];

type Ram = Record<string, number>;
const kb = (n: number): number => Math.floor(n / 1024);

/**
 * hmp_info_migrate()'s statistics lines, from QEMU 7.2's format strings, as [label, the value
 * printed from a query-migrate reply]. `undefined`: the line is not printed.
 */
const STAT_LINES: Array<[string, (i: Msg) => string | undefined]> = [
  ['expected downtime', (i) => (i['expected-downtime'] === undefined ? undefined : `${i['expected-downtime'] as number} ms`)],
  ['downtime', (i) => (i.downtime === undefined ? undefined : `${i.downtime as number} ms`)],
  ['setup', (i) => (i['setup-time'] === undefined ? undefined : `${i['setup-time'] as number} ms`)],
  ['transferred ram', (i) => `${kb(ram(i).transferred!)} kbytes`],
  ['throughput', (i) => `${ram(i).mbps!.toFixed(2)} mbps`],
  ['remaining ram', (i) => `${kb(ram(i).remaining!)} kbytes`],
  ['total ram', (i) => `${kb(ram(i).total!)} kbytes`],
  ['duplicate', (i) => `${ram(i).duplicate!} pages`],
  ['skipped', (i) => `${ram(i).skipped!} pages`],
  ['normal', (i) => `${ram(i).normal!} pages`],
  ['normal bytes', (i) => `${kb(ram(i)['normal-bytes']!)} kbytes`],
  ['dirty sync count', (i) => `${ram(i)['dirty-sync-count']!}`],
  ['page size', (i) => `${kb(ram(i)['page-size']!)} kbytes`],
  ['multifd bytes', (i) => `${kb(ram(i)['multifd-bytes']!)} kbytes`],
  ['pages-per-second', (i) => `${ram(i)['pages-per-second']!}`],
  ['dirty pages rate', (i) => (ram(i)['dirty-pages-rate'] ? `${ram(i)['dirty-pages-rate']!} pages` : undefined)],
  ['precopy ram', (i) => (ram(i)['precopy-bytes'] ? `${kb(ram(i)['precopy-bytes']!)} kbytes` : undefined)],
  ['downtime ram', (i) => (ram(i)['downtime-bytes'] ? `${kb(ram(i)['downtime-bytes']!)} kbytes` : undefined)],
  ['cache size', (i) => xbzrle(i, (x) => `${x['cache-size']!} bytes`)],
  ['xbzrle transferred', (i) => xbzrle(i, (x) => `${kb(x.bytes!)} kbytes`)],
  ['xbzrle pages', (i) => xbzrle(i, (x) => `${x.pages!} pages`)],
  ['xbzrle cache miss', (i) => xbzrle(i, (x) => `${x['cache-miss']!} pages`)],
  ['xbzrle cache miss rate', (i) => xbzrle(i, (x) => x['cache-miss-rate']!.toFixed(2))],
  ['xbzrle encoding rate', (i) => xbzrle(i, (x) => x['encoding-rate']!.toFixed(2))],
  ['xbzrle overflow', (i) => xbzrle(i, (x) => `${x.overflow!}`)],
  ['cpu throttle percentage', (i) => (i['cpu-throttle-percentage'] === undefined ? undefined : `${i['cpu-throttle-percentage'] as number}`)],
];
const ram = (i: Msg): Ram => (i.ram ?? {}) as Ram;
const xbzrle = (i: Msg, f: (x: Ram) => string): string | undefined => (i['xbzrle-cache'] ? f(i['xbzrle-cache'] as Ram) : undefined);

/** What `info migrate` must print for a query-migrate reply of a source (no socket address). */
function expectedInfo(i: Msg): string[] {
  const failed = i.status === 'failed' && i['error-desc'] !== undefined ? ` (${i['error-desc'] as string})` : '';
  const head = i.status === undefined ? [] : [`Migration status: ${i.status as string}${failed}`, `total time: ${(i['total-time'] as number | undefined) ?? 0} ms`];
  const stats = STAT_LINES.flatMap(([label, value]) => {
    if (!i.ram && !['expected downtime', 'downtime', 'setup', 'cpu throttle percentage'].includes(label)) return [];
    const v = value(i);
    return v === undefined ? [] : [`${label}: ${v}`];
  });
  return [...GLOBALS, ...head, ...stats];
}

/**
 * `info migrate` taken between two query-migrate reads while the migration runs: each line is
 * what one of the two reads gives, or lies between them (the counters only grow, and a rate
 * changes at most once per 100 ms window). "remaining ram" is the exception: when passes are
 * short, it drops to 0 and a sync fills it again many times a millisecond, so it is only held
 * to its format and to total ram.
 */
async function infoBetweenReads(t: Test, s: Side): Promise<{ lines: string[]; before: Msg; after: Msg }> {
  const before = (await s.qmp.ok('query-migrate')) as Msg;
  const lines = await hmp(t, s.qmp, 'info migrate');
  const after = (await s.qmp.ok('query-migrate')) as Msg;
  const a = expectedInfo(before);
  const b = expectedInfo(after);
  const label = (l: string): string => l.slice(0, l.indexOf(':'));
  const num = (l: string | undefined): number => Number(/: (-?[\d.]+)/.exec(l ?? '')?.[1] ?? NaN);
  t.same(lines.slice(0, GLOBALS.length + 1), a.slice(0, GLOBALS.length + 1), 'globals and status');
  for (const line of lines.slice(GLOBALS.length + 1)) {
    const l = label(line);
    if (l === 'remaining ram') {
      t.ok(/^remaining ram: \d+ kbytes$/.test(line) && num(line) <= kb(ram(before).total!), line);
      continue;
    }
    const fromA = a.find((x) => label(x) === l);
    const fromB = b.find((x) => label(x) === l);
    const lo = Math.min(num(fromA), num(fromB));
    const hi = Math.max(num(fromA), num(fromB));
    const ok = line === fromA || line === fromB || (num(line) >= lo && num(line) <= hi);
    t.ok(ok, `"${line}" is between the reads ("${fromA}", "${fromB}")`);
  }
  // hmp_info_migrate()'s order; a line printed only when its value is not 0 may be missing
  // only if one of the reads had it at 0.
  const canonical = ['Migration status', 'total time', ...STAT_LINES.map(([l]) => l)];
  const at = lines.slice(GLOBALS.length).map((l) => canonical.indexOf(label(l)));
  t.ok(at.every((x, k) => x >= 0 && (k === 0 || x > at[k - 1]!)), 'lines in QEMU\'s order');
  const shown = new Set(lines.map(label));
  for (const l of a.map(label)) if (b.map(label).includes(l)) t.ok(shown.has(l), `${l} printed`);
  return { lines, before, after };
}

const labelsOf = (lines: string[]): string[] => lines.map((l) => l.slice(0, l.indexOf(':')));

t.test('HMP migrate between two daemons: active, then completed; numbers are query-migrate\'s', async (t) => {
  const p = await startPair({ memory: '64M', srcArgs: ['--memory-file', await randomRamFile(64 * MiB)] });
  t.teardown(p.stop);
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 8 * MiB });
  const before = await digest(p.src);
  t.same(await hmp(t, p.src.qmp, `migrate -d ${p.uri}`), [], 'migrate -d prints nothing');
  await migrationStatus(p.src, 'active');
  await untilInfo(p.src, (i) => (ram(i).transferred ?? 0) > 2 * MiB);

  const { lines } = await infoBetweenReads(t, p.src);
  t.same(labelsOf(lines.slice(GLOBALS.length)), [
    'Migration status', 'total time', 'expected downtime', 'setup', 'transferred ram', 'throughput', 'remaining ram', 'total ram',
    'duplicate', 'skipped', 'normal', 'normal bytes', 'dirty sync count', 'page size', 'multifd bytes', 'pages-per-second', 'precopy ram',
  ], 'the lines of an active migration (no dirtying guest, no xbzrle)');
  t.ok(lines.includes('total ram: 65536 kbytes') && lines.includes('page size: 4 kbytes'));

  t.same(await hmp(t, p.src.qmp, `migrate ${p.uri}`), ["Error: There's a migration process in progress"]);
  t.same(await hmp(t, p.src.qmp, `migrate -d ${p.uri}`), ["Error: There's a migration process in progress"]);

  // The destination: its status and the address it listens on, nothing else.
  const port = p.uri.split(':')[2];
  t.same(await hmp(t, p.dst.qmp, 'info migrate'), [...GLOBALS, 'Migration status: active', 'total time: 0 ms', 'socket address: [', `\ttcp:127.0.0.1:${port}`, ']']);
  t.same(await p.dst.qmp.ok('query-migrate'), { status: 'active', 'socket-address': [{ port, ipv4: true, host: '127.0.0.1', type: 'inet' }] });

  // Much RAM left at the switchover, so that "downtime ram" is printed: the guest stops at the
  // next check of a far larger downtime-limit, and only then does the rest go fast.
  await p.src.qmp.ok('migrate-set-parameters', { 'downtime-limit': 1000000 });
  await p.src.qmp.waitEvent('STOP');
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
  await migrationStatus(p.src, 'completed');
  await migrationStatus(p.dst, 'completed');
  t.equal(await digest(p.dst), before, 'the destination has the source\'s RAM');

  const info = (await p.src.qmp.ok('query-migrate')) as Msg;
  const done = await hmp(t, p.src.qmp, 'info migrate');
  t.same(done, expectedInfo(info), 'completed: every line is query-migrate\'s value');
  t.same(labelsOf(done.slice(GLOBALS.length)), [
    'Migration status', 'total time', 'downtime', 'setup', 'transferred ram', 'throughput', 'remaining ram', 'total ram', 'duplicate',
    'skipped', 'normal', 'normal bytes', 'dirty sync count', 'page size', 'multifd bytes', 'pages-per-second', 'precopy ram', 'downtime ram',
  ]);
  t.same(await hmp(t, p.dst.qmp, 'info migrate'), [...GLOBALS, 'Migration status: completed', 'total time: 0 ms'], 'destination once completed');
  t.same(await hmp(t, p.src.qmp, `migrate ${p.uri}`), ["Error: Can't migrate the vm that was paused due to previous migration"]);
  t.same(await hmp(t, p.src.qmp, 'migrate_cancel'), [], 'migrate_cancel after completion prints nothing');
  t.same(await hmp(t, p.src.qmp, 'info migrate'), done, 'and changes nothing');
});

t.test('HMP migrate without -d: QEMU cannot wait on this monitor, so it goes on detached, to completion', async (t) => {
  const p = await startPair({ memory: '32M', srcArgs: ['--memory-file', await randomRamFile(32 * MiB), '--dirty-rate', '1M'] });
  t.teardown(p.stop);
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
  t.same(await hmp(t, p.src.qmp, `migrate ${p.uri}`), ['terminal does not allow synchronous migration, continuing detached']);
  await migrationStatus(p.src, 'completed');
  await migrationStatus(p.dst, 'completed');
  t.same(statuses(p.src), ['setup', 'active', 'completed']);
  t.equal(await digest(p.dst), await digest(p.src), 'RAM digests equal');
  t.equal(await runState(p.src), 'postmigrate');
  t.equal(await runState(p.dst), 'running');
  t.same(await hmp(t, p.src.qmp, 'info migrate'), expectedInfo((await p.src.qmp.ok('query-migrate')) as Msg));
});

t.test('HMP migrate_cancel cancels a running migration; the guest runs on', async (t) => {
  const p = await startPair({ memory: '64M', srcArgs: ['--memory-file', await randomRamFile(64 * MiB)] });
  t.teardown(p.stop);
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 4 * MiB });
  const before = await digest(p.src);
  t.same(await hmp(t, p.src.qmp, `migrate -d ${p.uri}`), []);
  await migrationStatus(p.src, 'active');
  t.same(await hmp(t, p.src.qmp, 'migrate_cancel'), []);
  await migrationStatus(p.src, 'cancelled');
  t.same(statuses(p.src), ['setup', 'active', 'cancelling', 'cancelled']);
  t.same(await hmp(t, p.src.qmp, 'info migrate'), [...GLOBALS, 'Migration status: cancelled', 'total time: 0 ms']);
  t.same(await p.src.qmp.ok('query-migrate'), { status: 'cancelled' });
  t.equal(await runState(p.src), 'running');
  t.equal(await digest(p.src), before, 'source RAM untouched');
  t.same(await hmp(t, p.src.qmp, 'migrate_cancel'), [], 'again: nothing to cancel, nothing printed');
  t.equal((await p.dst.daemon.exited).code, 1, 'the destination gives up');
});

t.test('info migrate after a failure: the error, no statistics', async (t) => {
  const p = await startPair({ memory: '64M', srcArgs: ['--memory-file', await randomRamFile(64 * MiB)] });
  t.teardown(p.stop);
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 4 * MiB });
  t.same(await hmp(t, p.src.qmp, `migrate -d ${p.uri}`), []);
  await migrationStatus(p.src, 'active');
  p.dst.daemon.proc.kill('SIGKILL');
  await migrationStatus(p.src, 'failed');
  const info = (await p.src.qmp.ok('query-migrate')) as Msg;
  t.match(info['error-desc'], /^Unable to write to socket: (Broken pipe|Connection reset by peer)$/);
  t.same(await hmp(t, p.src.qmp, 'info migrate'), [...GLOBALS, `Migration status: failed (${info['error-desc'] as string})`, 'total time: 0 ms']);
  t.same(await hmp(t, p.src.qmp, 'migrate_cancel'), []);
  t.equal(await runState(p.src), 'running');

  // A refused connection fails after the command returned, as QEMU's asynchronous connect does.
  const closed = await freePort();
  t.same(await hmp(t, p.src.qmp, `migrate tcp:127.0.0.1:${closed}`), ['terminal does not allow synchronous migration, continuing detached']);
  await untilInfo(p.src, (i) => i.status === 'failed');
  t.same(await hmp(t, p.src.qmp, 'info migrate'), [
    ...GLOBALS, `Migration status: failed (Failed to connect to '127.0.0.1:${closed}': Connection refused)`, 'total time: 0 ms',
  ]);
});

t.test('xbzrle on: its lines follow the RAM lines, while active and once completed', async (t) => {
  const p = await startPair({ memory: '32M', srcArgs: ['--memory-file', await randomRamFile(32 * MiB), '--dirty-rate', '1G', '--dirty-pattern', 'hot:5'] });
  t.teardown(p.stop);
  await setCaps(p.src, { xbzrle: true });
  // 1 ms of downtime at 32 MiB/s is 8 pages, while the guest keeps 410 hot pages dirty: passes
  // go on, re-sending the hot pages as deltas, until the limit is raised. (A limit of 0 would
  // not do: as in QEMU, it never syncs again, so it completes after the first pass.)
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 32 * MiB, 'downtime-limit': 1, 'xbzrle-cache-size': 8 * MiB });
  t.same(await hmp(t, p.src.qmp, 'info migrate'), GLOBALS, 'no migration yet: no statistics, xbzrle or not');
  t.same(await hmp(t, p.src.qmp, `migrate -d ${p.uri}`), []);
  // Re-sent pages move the xbzrle counters; the dirty rate is measured over periods of a second.
  await untilInfo(p.src, (i) => ((i['xbzrle-cache'] as Ram | undefined)?.pages ?? 0) > 100 && ram(i)['dirty-pages-rate']! > 0);
  const { lines } = await infoBetweenReads(t, p.src);
  const labels = labelsOf(lines);
  t.same(labels.slice(-7), ['cache size', 'xbzrle transferred', 'xbzrle pages', 'xbzrle cache miss', 'xbzrle cache miss rate', 'xbzrle encoding rate', 'xbzrle overflow']);
  t.ok(lines.includes('cache size: 8388608 bytes'));
  t.ok(labels.includes('dirty pages rate'), 'a dirtying guest: the dirty pages rate is printed');
  await p.src.qmp.ok('migrate-set-parameters', { 'downtime-limit': 300, 'max-bandwidth': 0 });
  await migrationStatus(p.src, 'completed');
  await migrationStatus(p.dst, 'completed');
  t.equal(await digest(p.dst), await digest(p.src));
  const info = (await p.src.qmp.ok('query-migrate')) as Msg;
  t.ok((info['xbzrle-cache'] as Ram).pages > 100);
  t.same(await hmp(t, p.src.qmp, 'info migrate'), expectedInfo(info), 'completed with xbzrle: exactly query-migrate\'s numbers');
});

t.test('auto-converge: the throttle percentage is printed while it throttles', async (t) => {
  const p = await startPair({ memory: '16M', srcArgs: ['--memory-file', await randomRamFile(16 * MiB), '--dirty-rate', '64M', '--dirty-pattern', 'hot:25'] });
  t.teardown(p.stop);
  await setCaps(p.src, { 'auto-converge': true });
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 16 * MiB, 'downtime-limit': 100, 'cpu-throttle-initial': 60, 'cpu-throttle-increment': 20 });
  t.same(await hmp(t, p.src.qmp, `migrate -d ${p.uri}`), []);
  await untilInfo(p.src, (i) => typeof i['cpu-throttle-percentage'] === 'number');
  const { lines, before, after } = await infoBetweenReads(t, p.src);
  if (before['cpu-throttle-percentage'] !== undefined && after['cpu-throttle-percentage'] !== undefined) {
    t.match(lines.at(-1), /^cpu throttle percentage: (60|80|99)$/, 'the last line');
  }
  await migrationStatus(p.src, 'completed');
  t.notOk((await hmp(t, p.src.qmp, 'info migrate')).some((l) => l.startsWith('cpu throttle')), 'gone once completed');
});

t.test('HMP and QMP agree on capabilities and parameters', async (t) => {
  const p = await startPair({ memory: '16M', events: false });
  t.teardown(p.stop);
  await setCaps(p.src, { xbzrle: true, multifd: true });
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': -1, 'xbzrle-cache-size': 2 ** 53, 'tls-creds': 'c', 'multifd-channels': 7 });
  const caps = (await p.src.qmp.ok('query-migrate-capabilities')) as Array<{ capability: string; state: boolean }>;
  t.same(await hmp(t, p.src.qmp, 'info migrate_capabilities'), caps.map((c) => `${c.capability}: ${c.state ? 'on' : 'off'}`));
  const shown = await hmp(t, p.src.qmp, 'info migrate_parameters');
  t.equal(shown.length, 24);
  for (const line of ['max-bandwidth: 18446744073709551615 bytes/second', 'xbzrle-cache-size: 9007199254740992 bytes', "tls-creds: 'c'", 'multifd-channels: 7']) {
    t.ok(shown.includes(line), line);
  }
});

/**
 * The same steps on a pair of real QEMU 7.2 (-M none, 64 MiB of the same random RAM) and on a
 * pair of daemons: the source's lines name the same fields in the same order while active and
 * once completed, and the destination prints the same text.
 */
t.test('the same lines as QEMU 7.2', { skip: !qemuInstalled() && 'qemu-system-x86_64 is not installed' }, async (t) => {
  const ramFile = await randomRamFile(64 * MiB);
  const steps = async (src: QmpClient, dst: QmpClient, uri: string): Promise<Record<string, string[]>> => {
    const out: Record<string, string[]> = {};
    await src.ok('migrate-set-capabilities', { capabilities: [{ capability: 'xbzrle', state: true }] });
    await src.ok('migrate-set-parameters', { 'max-bandwidth': 4 * MiB });
    out.migrate = await hmp(t, src, `migrate -d ${uri}`);
    // Conditional lines need settled conditions: some RAM sent while the guest ran ("precopy
    // ram"), and much left when it stops ("downtime ram": a downtime-limit far beyond what is
    // left makes the switchover come at the next check, and only then may the rest go fast).
    await until(async () => {
      const i = (await src.ok('query-migrate')) as Msg;
      return i.status === 'active' && ram(i).transferred! > MiB;
    }, 'source active');
    out.active = labelsOf(await hmp(t, src, 'info migrate'));
    out.dstActive = (await hmp(t, dst, 'info migrate')).map((l) => l.replace(/:\d+$/, ':PORT'));
    out.again = await hmp(t, src, `migrate -d ${uri}`);
    await src.ok('migrate-set-parameters', { 'downtime-limit': 1000000 });
    await until(async () => ((await src.ok('query-status')) as Msg).status !== 'running', 'source guest stopped for the switchover');
    await src.ok('migrate-set-parameters', { 'max-bandwidth': 1 << 30 });
    await until(async () => ((await src.ok('query-migrate')) as Msg).status === 'completed', 'source completed');
    await until(async () => ((await dst.ok('query-migrate')) as Msg).status === 'completed', 'destination completed');
    out.completed = labelsOf(await hmp(t, src, 'info migrate'));
    out.dstCompleted = await hmp(t, dst, 'info migrate');
    out.after = await hmp(t, src, `migrate ${uri}`);
    return out;
  };

  const qemuPort = await freePort();
  // The RAM block is named after its backend: "m" on both sides.
  const qdst = await startQemu(['-object', 'memory-backend-ram,id=m,size=64M', '-machine', 'memory-backend=m', '-m', '64M', '-incoming', `tcp:127.0.0.1:${qemuPort}`]);
  const qsrc = await startQemu(['-object', `memory-backend-file,id=m,size=64M,mem-path=${ramFile},share=off`, '-machine', 'memory-backend=m', '-m', '64M']);
  let stderr = '';
  for (const q of [qsrc, qdst]) q.proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  t.teardown(async () => {
    await Promise.all([qsrc.stop(), qdst.stop()]);
    if (stderr) t.comment(`QEMU said: ${stderr}`);
  });
  const [qs, qd] = [await QmpClient.at(`unix:${qsrc.socket}`), await QmpClient.at(`unix:${qdst.socket}`)];
  await qs.negotiate();
  await qd.negotiate();
  const fromQemu = await steps(qs, qd, `tcp:127.0.0.1:${qemuPort}`);
  qs.close();
  qd.close();

  const p = await startPair({ memory: '64M', srcArgs: ['--memory-file', ramFile], events: false });
  t.teardown(p.stop);
  const fromQmigd = await steps(p.src.qmp, p.dst.qmp, p.uri);
  for (const k of Object.keys(fromQemu)) t.same(fromQmigd[k], fromQemu[k], k);
  t.ok(fromQemu.completed!.includes('downtime ram') && fromQemu.completed!.includes('xbzrle overflow'), 'the comparison saw the conditional lines');
});

/**
 * qmigd's `help` and `info` list a subset of QEMU's commands; each entry must be QEMU's, in
 * QEMU's order.
 */
t.test('help and info list QEMU\'s entries in QEMU\'s order', { skip: !qemuInstalled() && 'qemu-system-x86_64 is not installed' }, async (t) => {
  const qemu = await startQemu(['-S']);
  t.teardown(qemu.stop);
  const q = await QmpClient.at(`unix:${qemu.socket}`);
  await q.negotiate();
  const p = await startPair({ memory: '16M', events: false });
  t.teardown(p.stop);
  // An entry is a line and its tab-indented continuation lines.
  const entries = (lines: string[]): string[] =>
    lines.reduce<string[]>((acc, l) => (l.startsWith('\t') ? [...acc.slice(0, -1), `${acc.at(-1)!}\n${l}`] : [...acc, l]), []);
  for (const cmd of ['help', 'info']) {
    const mine = entries(await hmp(t, p.src.qmp, cmd));
    const theirs = entries(await hmp(t, q, cmd));
    const names = new Set(mine.map((e) => e.split(' -- ')[0]));
    t.same(mine, theirs.filter((e) => names.has(e.split(' -- ')[0])), `${cmd}: ${mine.length} of QEMU's ${theirs.length} entries`);
    t.ok(mine.length >= 6);
  }
  q.close();
});

async function until(probe: () => Promise<boolean>, what: string, timeoutMs = 60000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`${what}: never came`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
