/**
 * qmigd as QEMU 10.0 (--qemu-version 10.0) and a real QEMU 10.0 (`-M none`) migrating to each
 * other, beside the 7.2 tests of qemu-interop.test.ts: 64 MiB of mixed RAM both ways with qmigd's
 * guest writing while it is the source, the return path, pause-before-switchover and XBZRLE.
 * What qmigd must do is never written down here: each scenario also runs QEMU 10.0 → QEMU 10.0,
 * and qmigd's end must send and answer what a QEMU 10.0 end sends and answers there (the stream's
 * sections and commands as `qmigd inspect` decodes them, the return path's bytes, the MIGRATION
 * statuses of both ends). RAM is compared with pmemsave dumps and qmigd's digest. Skipped where
 * QEMU 10.0 is missing.
 */
import net from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { freePort, startDaemon, tempDir } from '../helpers/daemon.js';
import { QmpClient } from '../helpers/qmp-client.js';
import {
  caps,
  delay,
  commandsBeforeRam,
  finished,
  info,
  isEvent,
  listening,
  MiB,
  mixedRam,
  nextEvent,
  outline,
  ramInfo,
  recordingProxy,
  runState,
  sameRam,
  startEnd,
  statuses,
  until,
  within,
  xbzrleInfo,
  type Kind,
  type Test,
  xbzrleFromQemu,
} from '../helpers/interop.js';
import { qemuSkip } from '../helpers/qemu.js';

const R = '10.0';
const skip = qemuSkip(R);
const work = tempDir();
const DIRTY = ['--dirty-rate', '8M'];

interface Run {
  src: string[];
  dst: string[];
  outline: string[];
  before: string[];
  rp: string;
}

/** One migration through a recording proxy, with `srcCaps`/`dstCaps`; `pause` continues a pre-switchover. */
async function run(t: Test, srcKind: Kind, dstKind: Kind, o: { srcCaps: string[]; dstCaps: string[]; pause?: boolean; size?: number }): Promise<Run> {
  const size = o.size ?? 64 * MiB;
  const image = mixedRam(size);
  const port = await freePort();
  const dst = await startEnd(t, dstKind, R, { size, incoming: 'defer' });
  const src = await startEnd(t, srcKind, R, { size, ramFile: image.path, qmigdArgs: DIRTY });
  await caps(src, ['events', ...o.srcCaps]);
  await caps(dst, ['events', ...o.dstCaps]);
  await dst.qmp.ok('migrate-incoming', { uri: `tcp:127.0.0.1:${port}` });
  await listening(dst);
  const proxy = await recordingProxy(t, port);
  await src.qmp.ok('migrate', { uri: `tcp:127.0.0.1:${proxy.port}` });
  if (o.pause) {
    await nextEvent(src, isEvent('MIGRATION', { status: 'pre-switchover' }));
    t.equal(await runState(src), 'finish-migrate', `${srcKind} → ${dstKind}: the source guest is stopped in pre-switchover`);
    t.equal((await info(dst)).status, 'active', `${srcKind} → ${dstKind}: the destination still loads`);
    await src.qmp.ok('migrate-continue', { state: 'pre-switchover' });
  }
  const s = await finished(src);
  t.equal(s.status, 'completed', `${srcKind} → ${dstKind}: source completed ${s.status === 'failed' ? JSON.stringify(s) : ''}`);
  t.equal((await finished(dst)).status, 'completed', `${srcKind} → ${dstKind}: destination completed`);
  t.equal(await runState(src), 'postmigrate', `${srcKind} → ${dstKind}: source run state`);
  t.equal(await runState(dst), 'running', `${srcKind} → ${dstKind}: destination run state`);
  await within(proxy.closed, 10000, 'both ends close the migration connection');
  // A qmigd source's guest wrote all along: the destination must hold what it had when stopped.
  await sameRam(t, src, dst, size, srcKind === 'qemu' ? image.sha : undefined);
  const down = proxy.toDst();
  return { src: statuses(src), dst: statuses(dst), outline: outline(down, R).items, before: commandsBeforeRam(down), rp: proxy.toSrc().toString('hex') };
}

/** Runs QEMU → QEMU first, then each direction with qmigd, and compares qmigd's end with QEMU's. */
async function compareWithQemu(t: Test, o: { srcCaps: string[]; dstCaps: string[]; pause?: boolean; size?: number }): Promise<void> {
  const runs = new Map<string, Run>();
  for (const [s, d] of [['qemu', 'qemu'], ['qmigd', 'qemu'], ['qemu', 'qmigd']] as Array<[Kind, Kind]>) {
    await t.test(`${s} → ${d}`, async (t) => void runs.set(`${s} → ${d}`, await run(t, s, d, o)));
  }
  const ref = runs.get('qemu → qemu');
  if (!ref || runs.size < 3) return void t.fail('a run did not complete; nothing to compare');
  t.comment(`QEMU 10.0 → QEMU 10.0: ${JSON.stringify({ outline: ref.outline, before: ref.before, rp: ref.rp, src: ref.src, dst: ref.dst })}`);
  const asSrc = runs.get('qmigd → qemu')!;
  const asDst = runs.get('qemu → qmigd')!;
  t.same(asSrc.outline, ref.outline, 'qmigd as the source: the stream has the sections and commands of QEMU 10.0\'s');
  t.same(asSrc.before, ref.before, 'qmigd as the source: the same commands before RAM');
  t.same(asSrc.rp, ref.rp, 'qmigd as the source: the QEMU destination answers on the return path as it answers QEMU');
  t.same(asSrc.src, ref.src, 'qmigd as the source: MIGRATION statuses');
  t.same(asSrc.dst, ref.dst, 'qmigd as the source: the QEMU destination\'s MIGRATION statuses');
  t.same(asDst.rp, ref.rp, 'qmigd as the destination: the return path carries what QEMU 10.0 sends');
  t.same(asDst.dst, ref.dst, 'qmigd as the destination: MIGRATION statuses');
  t.same(asDst.src, ref.src, 'qmigd as the destination: the QEMU source\'s MIGRATION statuses');
}

t.test('plain: QEMU 10.0 and qmigd 10.0, both ways', { skip }, (t) => compareWithQemu(t, { srcCaps: [], dstCaps: [] }));

t.test('return-path: QEMU 10.0 and qmigd 10.0, both ways', { skip }, (t) =>
  compareWithQemu(t, { srcCaps: ['return-path'], dstCaps: ['return-path'], size: 16 * MiB }));

t.test('pause-before-switchover: QEMU 10.0 and qmigd 10.0, both ways', { skip }, (t) =>
  compareWithQemu(t, { srcCaps: ['pause-before-switchover'], dstCaps: [], pause: true, size: 16 * MiB }));

/**
 * switchover-ack needs the capability in qmigd's 10.0 QMP surface (its profile's list of
 * capabilities qmigd honours); where this build does not offer it yet, the test says so.
 */
async function switchoverAckSkip(): Promise<string | false> {
  if (skip) return skip;
  const d = await startDaemon(['--qemu-version', R, '-S']);
  try {
    const c = await QmpClient.at(d.listening[0]!);
    await c.negotiate();
    const r = await c.cmd('migrate-set-capabilities', { capabilities: [{ capability: 'return-path', state: true }, { capability: 'switchover-ack', state: true }] });
    c.close();
    return r.error ? `qmigd ${R} does not take switchover-ack here: ${JSON.stringify(r.error)}` : false;
  } finally {
    await d.stop();
  }
}

t.test('switchover-ack: QEMU 10.0 and qmigd 10.0, both ways', { skip: await switchoverAckSkip() }, (t) =>
  compareWithQemu(t, { srcCaps: ['return-path', 'switchover-ack'], dstCaps: ['return-path', 'switchover-ack'], size: 16 * MiB }));

/**
 * A destination that takes the stream and answers nothing until told: it holds a source with
 * switchover-ack in its passes until SWITCHOVER_ACK comes (then SHUT ends the return path).
 */
async function silentDestination(t: Test): Promise<{ port: number; ack: () => void; received: () => number }> {
  let socket: net.Socket | undefined;
  let received = 0;
  const server = net.createServer((s) => {
    socket = s;
    s.on('data', (d: Buffer) => (received += d.length));
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    socket?.destroy();
    server.close();
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    ack: () => socket?.write(Buffer.from('00070000' + '0001000400000000', 'hex')),
    received: () => received,
  };
}

t.test('switchover-ack: the source waits in its passes until the destination acks, as QEMU 10.0\'s does', { skip: await switchoverAckSkip() }, async (t) => {
  const seen: Record<string, unknown> = {};
  for (const kind of ['qemu', 'qmigd'] as Kind[]) {
    await t.test(kind, async (t) => {
      const size = 4 * MiB;
      const dst = await silentDestination(t);
      const src = await startEnd(t, kind, R, { size, ramFile: mixedRam(size).path });
      await caps(src, ['events', 'return-path', 'switchover-ack']);
      await src.qmp.ok('migrate', { uri: `tcp:127.0.0.1:${dst.port}` });
      // Everything is sent long before this: only the missing ack keeps the source going.
      await until(src, (i) => dst.received() > size / 4 && ramInfo(i)['dirty-sync-count']! >= 3, 'several passes with all of RAM sent');
      await delay(500);
      const waiting = await info(src);
      dst.ack();
      const end = await finished(src);
      seen[kind] = { waiting: waiting.status, passesWhileWaiting: ramInfo(waiting)['dirty-sync-count']! >= 3, end: end.status, statuses: statuses(src) };
    });
  }
  t.comment(`QEMU 10.0: ${JSON.stringify(seen.qemu)}`);
  t.same(seen.qmigd, seen.qemu, 'qmigd waits, then switches over, as QEMU 10.0');
});

t.test('xbzrle: qmigd 10.0 sends XBZRLE pages to QEMU 10.0 over several passes while its guest writes', { skip }, async (t) => {
  const size = 4 * MiB;
  const image = mixedRam(size, 90);
  const uri = `unix:${join(work, 'xbzrle.sock')}`;
  const dst = await startEnd(t, 'qemu', R, { size, incoming: 'defer' });
  // The guest rewrites its hottest 5% all the time, 16 bytes per write: small deltas.
  const src = await startEnd(t, 'qmigd', R, { size, ramFile: image.path, qmigdArgs: ['--dirty-rate', '256M', '--dirty-pattern', 'hot:5'] });
  await caps(dst, ['events']);
  await caps(src, ['events', 'xbzrle']);
  await src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 512 * 1024, 'downtime-limit': 1 });
  await dst.qmp.ok('migrate-incoming', { uri });
  await src.qmp.ok('migrate', { uri });
  const mid = await until(src, (i) => (i.status !== 'setup' && i.status !== 'active') || (ramInfo(i)['dirty-sync-count']! >= 4 && xbzrleInfo(i).pages! > 0), 'XBZRLE passes');
  t.equal(mid.status, 'active', 'still iterating, with XBZRLE pages');
  await src.qmp.ok('migrate-set-parameters', { 'downtime-limit': 10000 });
  const end = await finished(src);
  t.equal(end.status, 'completed', 'source completed');
  t.equal((await finished(dst)).status, 'completed', 'destination completed');
  t.ok(xbzrleInfo(end).pages! > 0 && xbzrleInfo(end).bytes! > 0, 'XBZRLE pages went out');
  await sameRam(t, src, dst, size);
});

t.test('xbzrle: a QEMU 10.0 source sends XBZRLE pages to qmigd 10.0 over several passes', { skip }, (t) => xbzrleFromQemu(t, R, work));
