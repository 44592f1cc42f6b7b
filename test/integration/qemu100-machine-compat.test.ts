/**
 * QEMU 10.0's machine types of older releases, and -global migration.X, where they change the
 * migration stream: send-switchover-start (off up to 9.2: no SWITCHOVER_START, which 7.2 refuses
 * as an unknown command), zero-page-detection (legacy up to 8.2) and
 * multifd-flush-after-each-section (on up to 8.0: the channels sync at every RAM EOS, with no
 * MULTIFD_FLUSH record, which 7.2 refuses). Compared with the real QEMU 10.0 (its compat-props,
 * its HMP and parameters), and migrated between real QEMUs and qmigd of both releases.
 */
import { join } from 'node:path';
import t from 'tap';
import { machineGlobals, type MigrationGlobals } from '../../src/migration/globals.js';
import { QEMU_10_0 } from '../../src/profiles/qemu-10.0.js';
import { freePort, REPO, startDaemon } from '../helpers/daemon.js';
import { caps, finished, listening, MiB, mixedRam, ramSha, sameRam, startEnd, type End, type Kind, type Test } from '../helpers/interop.js';
import { QEMU_OF, qemuSkip, startEmulator, startQemu } from '../helpers/qemu.js';
import { QmpClient, type Msg } from '../helpers/qmp-client.js';
import type { ProfileId } from '../../src/profiles/index.js';

const skip10 = qemuSkip('10.0');
const skipBoth = qemuSkip('10.0') || qemuSkip('7.2');
const SIZE = 32 * MiB;
const image = mixedRam(SIZE);
const NO_SWITCHOVER_START = ['-global', 'migration.send-switchover-start=off'];
const FLUSH_EACH_SECTION = ['-global', 'migration.multifd-flush-after-each-section=on'];
/** qmigd takes QEMU's -global as --global. */
const asQmigd = (args: string[]): string[] => args.map((a) => (a === '-global' ? '--global' : a));

t.test('every PC machine type of 10.0 is there, each with the migration properties its compat-props set', { skip: skip10 }, async (t) => {
  const q = await startQemu(['-S'], { release: '10.0' });
  t.teardown(() => q.stop());
  const c = await QmpClient.unix(q.socket);
  t.teardown(() => c.close());
  await c.negotiate();
  const machines = (await c.ok('query-machines', { 'compat-props': true })) as Msg[];
  const pcs = machines.map((m) => m.name as string).filter((n) => n.startsWith('pc-'));
  t.same(QEMU_10_0.machines.map((m) => m.name).filter((n) => n.startsWith('pc-')).sort(), pcs.sort(), 'the same PC types');
  for (const m of machines) {
    const ours = QEMU_10_0.machines.find((o) => o.name === m.name);
    if (!ours) continue;
    // The values QEMU's compat gives the properties qmigd models, over the release's defaults.
    const want: Record<string, unknown> = { ...QEMU_10_0.migrationGlobals.defaults };
    for (const p of (m['compat-props'] ?? []) as Array<{ 'qom-type': string; property: string; value: string }>) {
      if (p['qom-type'] !== 'migration' || !(p.property in want)) continue;
      want[p.property] = p.property === 'zero-page-detection' ? p.value : ['on', 'true'].includes(p.value);
    }
    t.same(machineGlobals(QEMU_10_0, ours), want, String(m.name));
  }
});

t.test("-M and -global: HMP's migration globals, zero-page-detection and -global's refusals as QEMU 10.0's", { skip: skip10 }, async (t) => {
  const lines = [
    ['-M', 'pc-i440fx-9.2', '-m', '64'],
    ['-M', 'pc-q35-8.2', '-m', '64', '-global', 'migration.send-switchover-start=on'],
    ['-M', 'pc-i440fx-7.2', '-m', '64', '-global', 'migration.zero-page-detection=multifd'],
    ['-M', 'none', '-global', 'migration.send-switchover-start=no', '-global', 'migration.zero-page-detection=none'],
    ['-M', 'none', '-global', 'driver=migration,property=send-switchover-start,value=off'],
  ];
  const ask = async (program: string, args: string[]): Promise<unknown> => {
    const e = await startEmulator(program, (socket) => ['-display', 'none', '-nodefaults', '-S', '-qmp', `unix:${socket},server=on,wait=off`, ...args]);
    const c = await QmpClient.unix(e.socket);
    try {
      await c.negotiate();
      const hmp = (await c.ok('human-monitor-command', { 'command-line': 'info migrate' })) as string;
      const params = (await c.ok('query-migrate-parameters')) as Msg;
      return { globals: hmp, zeroPageDetection: params['zero-page-detection'] };
    } finally {
      c.close();
      await e.stop();
    }
  };
  for (const args of lines) t.same(await ask(join(REPO, 'bin', 'qmigd-qemu-10.0'), args), await ask(QEMU_OF['10.0'], args), args.join(' '));

  const { spawnSync } = await import('node:child_process');
  const refusal = (program: string, args: string[]): { status: number | null; message: string } => {
    const r = spawnSync(program, ['-display', 'none', '-nodefaults', '-M', 'none', ...args], { encoding: 'utf8', timeout: 10000 });
    return { status: r.status, message: r.stderr.replace(/^[^:]*: /gm, '') };
  };
  // 10.0 checks the values; 7.2 has none of these properties.
  const bad: Record<ProfileId, string[]> = {
    '10.0': ['send-switchover-start=maybe', 'multifd-flush-after-each-section=2', 'zero-page-detection=bogus'],
    '7.2': ['send-switchover-start=off', 'multifd-flush-after-each-section=on', 'zero-page-detection=legacy'],
  };
  for (const release of ['10.0', '7.2'] as ProfileId[]) {
    if (qemuSkip(release)) continue;
    for (const setting of bad[release]) {
      const args = ['-global', `migration.${setting}`];
      const fromQemu = refusal(QEMU_OF[release], args);
      t.equal(fromQemu.status, 1, `QEMU ${release} refuses -global migration.${setting}`);
      t.same(refusal(join(REPO, 'bin', `qmigd-qemu-${release}`), args), fromQemu, `${release}: -global migration.${setting}`);
    }
  }
});

/** A source of `release` (its RAM the mixed image) and a destination listening; the source migrates. */
async function migrate(t: Test, src: End, dst: End, o: { multifd?: boolean; srcParams?: Msg } = {}): Promise<{ src: Msg; dst: Msg }> {
  if (o.multifd) {
    for (const e of [src, dst]) {
      await caps(e, ['multifd']);
      await e.qmp.ok('migrate-set-parameters', { 'multifd-channels': 2 });
    }
  }
  if (o.srcParams) await src.qmp.ok('migrate-set-parameters', o.srcParams);
  const uri = `tcp:127.0.0.1:${await freePort()}`;
  await dst.qmp.ok('migrate-incoming', { uri });
  await listening(dst);
  await src.qmp.ok('migrate', { uri });
  const s = await finished(src);
  const d = await finished(dst);
  t.equal(s.status, 'completed', `${src.kind} ${src.release} source completed ${JSON.stringify(s)}`);
  t.equal(d.status, 'completed', `${dst.kind} ${dst.release} destination completed`);
  return { src: s, dst: d };
}

/** The source end: QEMU's arguments given as qmigd's where qmigd is the source. */
const source = (t: Test, kind: Kind, release: ProfileId, args: string[], dirty = false): Promise<End> =>
  startEnd(t, kind, release, {
    size: SIZE, ramFile: image.path, qemuArgs: args,
    qmigdArgs: [...asQmigd(args), ...(dirty ? ['--dirty-rate', '4M', '--dirty-pattern', 'hot:10'] : [])],
  });
const destination = (t: Test, kind: Kind, release: ProfileId, args: string[] = []): Promise<End> =>
  startEnd(t, kind, release, { size: SIZE, incoming: 'defer', qemuArgs: args, qmigdArgs: asQmigd(args) });

for (const dst of ['qmigd', 'qemu'] as Kind[]) {
  t.test(`QEMU 10.0 -M none with send-switchover-start=off → ${dst} 7.2 loads it`, { skip: skipBoth }, async (t) => {
    const d = await destination(t, dst, '7.2');
    const s = await source(t, 'qemu', '10.0', NO_SWITCHOVER_START);
    await migrate(t, s, d);
    await sameRam(t, s, d, SIZE, image.sha);
  });
}

t.test('qmigd 10.0 as an older machine type (pc-i440fx-9.2) → qmigd 7.2 loads it; as pc-i440fx-10.0 it is refused', { skip: false }, async (t) => {
  const s = await source(t, 'qmigd', '10.0', ['--machine', 'pc-i440fx-9.2']);
  const d = await destination(t, 'qmigd', '7.2', ['--machine', 'pc-i440fx-9.2']);
  await migrate(t, s, d);
  await sameRam(t, s, d, SIZE, image.sha);

  // QEMU 7.2 refuses the command it does not know (MIG_CMD 0xb) and exits: so does qmigd 7.2.
  const src = await source(t, 'qmigd', '10.0', ['--machine', 'pc-i440fx-10.0']);
  const dst = await startDaemon(['--qemu-version', '7.2', '-m', String(SIZE), '--ram-id', 'm', '--machine', 'pc-i440fx-10.0', '--incoming', 'defer']);
  t.teardown(() => dst.stop());
  const qmp = await QmpClient.at(dst.listening[0]!);
  await qmp.negotiate();
  const uri = `tcp:127.0.0.1:${await freePort()}`;
  await qmp.ok('migrate-incoming', { uri });
  await src.qmp.ok('migrate', { uri });
  t.equal((await dst.exited).code, 1, 'the 7.2 destination gives up');
  t.match(dst.stderr(), /MIG_CMD 0xb unknown \(len 0x0\)/, 'on SWITCHOVER_START');
});

t.test('qmigd-qemu-10.0 -M pc-i440fx-7.2 → qmigd-qemu-7.2 -M pc-i440fx-7.2, with multifd', async (t) => {
  const ends: QmpClient[] = [];
  for (const release of ['10.0', '7.2']) {
    const incoming = release === '7.2' ? ['-incoming', 'defer'] : [];
    const e = await startEmulator(join(REPO, 'bin', `qmigd-qemu-${release}`), (socket) => [
      '-M', 'pc-i440fx-7.2', '-m', '32', '-display', 'none', '-nodefaults', '-qmp', `unix:${socket},server=on,wait=off`, ...incoming,
    ]);
    t.teardown(() => e.stop());
    const c = await QmpClient.unix(e.socket);
    t.teardown(() => c.close());
    await c.negotiate();
    await c.ok('migrate-set-capabilities', { capabilities: [{ capability: 'multifd', state: true }] });
    ends.push(c);
  }
  const [src, dst] = ends as [QmpClient, QmpClient];
  const uri = `tcp:127.0.0.1:${await freePort()}`;
  await dst.ok('migrate-incoming', { uri });
  await src.ok('migrate', { uri });
  for (const [name, c] of [['source', src], ['destination', dst]] as const) {
    let i: Msg;
    do i = (await c.ok('query-migrate')) as Msg;
    while (i.status !== 'completed' && i.status !== 'failed');
    t.equal(i.status, 'completed', `the ${name} completed`);
  }
  const digest = async (c: QmpClient): Promise<string> => ((await c.ok('__org.qmigd_query-ram-digest')) as { sha256: string }).sha256;
  t.equal(await digest(dst), await digest(src), 'the same RAM');
});

// multifd with the channels synced at every section: 10.0 both ways, and 10.0 → 7.2.
const pairs: Array<[Kind, ProfileId, Kind, ProfileId]> = [
  ['qemu', '10.0', 'qmigd', '10.0'],
  ['qemu', '10.0', 'qemu', '7.2'],
  ['qmigd', '10.0', 'qemu', '10.0'],
  ['qemu', '10.0', 'qmigd', '7.2'],
  ['qmigd', '10.0', 'qemu', '7.2'],
  ['qmigd', '10.0', 'qmigd', '7.2'],
];
for (const [sk, sr, dk, dr] of pairs) {
  const needs = [sk === 'qemu' && sr, dk === 'qemu' && dr].filter(Boolean) as ProfileId[];
  const skip = needs.map((r) => qemuSkip(r)).find(Boolean) ?? false;
  t.test(`multifd, multifd-flush-after-each-section=on: ${sk} ${sr} → ${dk} ${dr}`, { skip }, async (t) => {
    // A 7.2 destination knows neither SWITCHOVER_START nor zero pages in packets.
    const to72 = dr === '7.2' ? [...NO_SWITCHOVER_START, '-global', 'migration.zero-page-detection=legacy'] : [];
    const d = await destination(t, dk, dr, dr === '10.0' ? FLUSH_EACH_SECTION : []);
    const s = await source(t, sk, sr, [...FLUSH_EACH_SECTION, ...to72], true);
    const r = await migrate(t, s, d, { multifd: true, srcParams: sk === 'qmigd' ? { 'max-bandwidth': 64 * MiB } : {} });
    t.ok((r.src.ram as Msg)['multifd-bytes']! as number > 0, 'pages went over the channels');
    if (sk === 'qemu') t.equal(await ramSha(t, d, SIZE), image.sha, 'the destination holds the image');
    else await sameRam(t, s, d, SIZE);
  });
}
