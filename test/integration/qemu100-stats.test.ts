/**
 * query-migrate's RAM statistics under the 10.0 profile, held to a real QEMU 10.0's for the same
 * 64 MiB of mixed RAM: a paused `-M none` QEMU 10.0 source and a paused qmigd 10.0 source (with
 * --page-thread off, then on) each migrate it into a QEMU 10.0 destination, single channel and multifd with each
 * zero-page-detection, stopping in pre-switchover. Nothing QEMU should answer is written here:
 * qmigd's numbers are compared with QEMU's from the same run.
 *
 * How many PART sections (iterations) a migration takes follows timing (the 50 ms and 100 ms
 * windows), and each costs 18 bytes: 8 of EOS, counted in downtime-bytes (or precopy-bytes), and
 * 10 of section framing, counted in transferred. So those two are compared once each side's
 * iterations, counted in its recorded main stream, are taken out; and transferred is also held,
 * on each side, to what its main connection carried plus multifd-bytes. With multifd, how many
 * times the channels sync follows timing too, in QEMU as in qmigd (a search of a clean bitmap
 * that wraps round syncs them, and whether the last iteration makes one depends on where the
 * clock or the rate limit cut it: at max-bandwidth 1G either program sent one sync more than the
 * other, in turn): each sync is a MULTIFD_FLUSH record (8 bytes) on the main stream and a SYNC
 * packet on every channel, taken out the same way. A QEMU 10.0 source into qmigd and into QEMU
 * shows what each destination reports. About 35 s.
 */
import t from 'tap';
import { freePort } from '../helpers/daemon.js';
import { caps, delay, finished, info, listening, MiB, mixedRam, outline, ramInfo, recordingProxy, startEnd, until, type End, type Kind, type Test } from '../helpers/interop.js';
import type { Msg } from '../helpers/qmp-client.js';
import { qemuSkip } from '../helpers/qemu.js';
import { HEADER_BYTES } from '../../src/migration/multifd/format.js';

const R = '10.0';
const skip = qemuSkip(R);
const SIZE = 64 * MiB;
const image = mixedRam(SIZE);
/** RAM_SAVE_FLAG_EOS as the stream carries it. */
const EOS = '0000000000000010';

interface Seen {
  paused: Record<string, number>;
  end: Record<string, number>;
  /** Bytes on the main connection when paused, and at the end. */
  mainPaused: number;
  mainEnd: number;
  /** The last 8 bytes on the main connection when paused. */
  tailPaused: string;
  parts: number;
  /** MULTIFD_FLUSH records in the main stream: the channels' syncs. */
  flushes: number;
  dst: { paused: Msg; end: Msg };
}

/** A sync's SYNC packets, one per channel (the tests' 2), each a packet header. */
const SYNC_BYTES = 2 * HEADER_BYTES;

const SCENARIOS = [
  { name: 'single channel' },
  { name: 'multifd, zero-page-detection=multifd', zpd: 'multifd' },
  { name: 'multifd, zero-page-detection=legacy', zpd: 'legacy' },
  { name: 'multifd, zero-page-detection=none', zpd: 'none' },
] as const;

/** The destination's query-migrate without the port it happened to get. */
const dstShape = (i: Msg): Msg => JSON.parse(JSON.stringify(i, (k, v: unknown) => (k === 'port' ? 'PORT' : v))) as Msg;

async function migrate(t: Test, srcKind: Kind, dstKind: Kind, zpd?: string, qmigdArgs: string[] = []): Promise<Seen> {
  const dst = await startEnd(t, dstKind, R, { size: SIZE, incoming: 'defer' });
  const src = await startEnd(t, srcKind, R, { size: SIZE, ramFile: image.path, qemuArgs: ['-S'], qmigdArgs: ['-S', ...qmigdArgs] });
  if (zpd) {
    for (const e of [src, dst] as End[]) {
      await caps(e, ['multifd']);
      await e.qmp.ok('migrate-set-parameters', { 'multifd-channels': 2, 'zero-page-detection': zpd });
    }
  }
  await caps(src, ['pause-before-switchover']);
  const port = await freePort();
  await dst.qmp.ok('migrate-incoming', { uri: `tcp:127.0.0.1:${port}` });
  await listening(dst);
  const proxy = await recordingProxy(t, port);
  await src.qmp.ok('migrate', { uri: `tcp:127.0.0.1:${proxy.port}` });
  const paused = ramInfo(await until(src, (i) => i.status === 'pre-switchover', 'pre-switchover'));
  await delay(200); // what was flushed reaches the proxy
  const mainPaused = proxy.mainToDst();
  const dstPaused = await info(dst);
  await src.qmp.ok('migrate-continue', { state: 'pre-switchover' });
  const end = await finished(src);
  t.equal(end.status, 'completed', `${srcKind} → ${dstKind}: source completed`);
  const dstEnd = await finished(dst);
  t.equal(dstEnd.status, 'completed', `${srcKind} → ${dstKind}: destination completed`);
  await delay(100);
  const stream = proxy.mainToDst();
  const { parts, flushes } = outline(stream, R);
  return {
    paused, end: ramInfo(end), mainPaused: mainPaused.length, mainEnd: stream.length, tailPaused: mainPaused.subarray(-8).toString('hex'), parts, flushes,
    dst: { paused: dstShape(dstPaused), end: dstShape(dstEnd) },
  };
}

/** A qmigd source's statistics (`m`) against QEMU's (`q`) from the same run. */
function sameAsQemu(t: Test, m: Seen, q: Seen, who: string): void {
  t.comment(`QEMU: ${JSON.stringify(q.end)} (${q.parts} iterations, ${q.flushes} syncs); ${who}: ${JSON.stringify(m.end)} (${m.parts} iterations, ${m.flushes} syncs)`);
  t.ok(q.parts > 0 && m.parts > 0, `${who}: both main streams decode`);
  for (const k of ['normal', 'normal-bytes', 'duplicate', 'precopy-bytes', 'dirty-sync-count', 'remaining', 'total', 'page-size']) {
    t.equal(m.end[k], q.end[k], `${who}: ${k} at the end`);
  }
  t.equal(m.end['multifd-bytes']! - SYNC_BYTES * m.flushes, q.end['multifd-bytes']! - SYNC_BYTES * q.flushes, `${who}: multifd-bytes at the end, without the syncs' packets`);
  t.same(Object.keys(m.end).sort(), Object.keys(q.end).sort(), `${who}: the same members`);
  t.equal(m.end['downtime-bytes']! - 8 * m.parts, q.end['downtime-bytes']! - 8 * q.parts, `${who}: downtime-bytes at the end, without the iterations' EOS`);
  const timed = (x: Seen): number => 18 * x.parts + (8 + SYNC_BYTES) * x.flushes;
  t.equal(m.end.transferred! - timed(m), q.end.transferred! - timed(q), `${who}: transferred at the end, without the iterations' EOS and framing, nor the syncs`);
  const onWire = (x: Seen, ram: Record<string, number>, main: number): number => ram.transferred! - ram['multifd-bytes']! - main;
  t.equal(onWire(m, m.end, m.mainEnd), onWire(q, q.end, q.mainEnd), `${who}: transferred at the end against the main connection's bytes and multifd-bytes`);
  t.equal(onWire(m, m.paused, m.mainPaused), onWire(q, q.paused, q.mainPaused), `${who}: transferred in pre-switchover against the main connection's bytes so far`);
  t.equal(m.tailPaused, q.tailPaused, `${who}: in pre-switchover the main stream so far ends at the same place (EOS, its footer still buffered)`);
  for (const k of ['dirty-sync-count', 'precopy-bytes', 'total', 'page-size']) t.equal(m.paused[k], q.paused[k], `${who}: ${k} in pre-switchover`);
  t.same(Object.keys(m.paused).sort(), Object.keys(q.paused).sort(), `${who}: the same members in pre-switchover`);
}

for (const sc of SCENARIOS) {
  t.test(`${sc.name}: a paused qmigd 10.0 source counts what a QEMU 10.0 source counts, with --page-thread off and on`, { skip }, async (t) => {
    const zpd = 'zpd' in sc ? sc.zpd : undefined;
    const seen: Partial<Record<string, Seen>> = {};
    for (const [name, s, d, args] of [
      ['qemu→qemu', 'qemu', 'qemu', []],
      ['qmigd→qemu', 'qmigd', 'qemu', []],
      ['qmigd (page thread)→qemu', 'qmigd', 'qemu', ['--page-thread', 'on']],
      ['qemu→qmigd', 'qemu', 'qmigd', []],
    ] as Array<[string, Kind, Kind, string[]]>) {
      await t.test(name, async (t) => void (seen[name] = await migrate(t, s, d, zpd, args)));
    }
    const q = seen['qemu→qemu']!;
    sameAsQemu(t, seen['qmigd→qemu']!, q, 'qmigd');
    sameAsQemu(t, seen['qmigd (page thread)→qemu']!, q, 'qmigd --page-thread on');
    t.equal(q.tailPaused, EOS, 'QEMU\'s main stream ends at an EOS in pre-switchover');
    t.same(seen['qemu→qmigd']!.dst, q.dst, 'the destination reports what QEMU 10.0\'s reports, while loading and at the end');
  });
}
