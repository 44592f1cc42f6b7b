/**
 * Postcopy from a real QEMU source into a qmigd destination (issue 16, first part: the
 * destination's side of the stream, without page requests): the source advises postcopy,
 * switches with migrate-start-postcopy while pages are still to go, discards, sends the device
 * state in a package (LISTEN … RUN); the destination runs the guest from RUN and takes the rest
 * of RAM as it comes. The same run into a QEMU destination gives the statuses and run states
 * qmigd must show. Per release, skipped where that QEMU is not installed.
 */
import t from 'tap';
import { freePort } from '../helpers/daemon.js';
import { qemuSkip } from '../helpers/qemu.js';
import { caps, finished, isEvent, listening, MiB, mixedRam, nextEvent, runState, sameRam, startEnd, statuses, until, type Kind, type Test } from '../helpers/interop.js';
import type { ProfileId } from '../../src/profiles/index.js';

const SIZE = 64 * MiB;

interface Run {
  src: string[];
  dst: string[];
  dstRunState: string;
}

async function postcopyInto(t: Test, dstKind: Kind, release: ProfileId): Promise<Run> {
  const image = mixedRam(SIZE);
  const uri = `tcp:127.0.0.1:${await freePort()}`;
  const dst = await startEnd(t, dstKind, release, { size: SIZE, incoming: 'defer' });
  const src = await startEnd(t, 'qemu', release, { size: SIZE, ramFile: image.path });
  for (const end of [src, dst]) await caps(end, ['events', 'postcopy-ram']);
  await dst.qmp.ok('migrate-incoming', { uri });
  await listening(dst);
  // Slow enough that the switch comes with most of RAM still on the source.
  await src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 16 * MiB });
  await src.qmp.ok('migrate', { uri });
  await until(src, (i) => ((i.ram as Record<string, number> | undefined)?.transferred ?? 0) > 4 * MiB, 'some pages gone');
  await src.qmp.ok('migrate-start-postcopy');
  await src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
  t.equal((await finished(src)).status, 'completed', `${dstKind}: the source completes`);
  t.equal((await finished(dst)).status, 'completed', `${dstKind}: the destination completes`);
  // The MIGRATION events may come a moment after query-migrate says so.
  for (const end of [src, dst]) await nextEvent(end, isEvent('MIGRATION', { status: 'completed' }));
  await sameRam(t, src, dst, SIZE, image.sha);
  return { src: statuses(src), dst: statuses(dst), dstRunState: await runState(dst) };
}

for (const release of ['7.2', '10.0'] as const) {
  t.test(`postcopy from QEMU ${release} into qmigd as ${release}: RAM whole, the statuses QEMU's destination shows`, { skip: qemuSkip(release) }, async (t) => {
    const qemu = await postcopyInto(t, 'qemu', release);
    const qmigd = await postcopyInto(t, 'qmigd', release);
    t.ok(qemu.src.includes('postcopy-active'), `the QEMU source went to postcopy: ${qemu.src.join(' → ')}`);
    t.same(qmigd.src, qemu.src, 'the source goes the same way with either destination');
    t.same(qmigd.dst, qemu.dst, `qmigd's destination statuses are QEMU's: ${qemu.dst.join(' → ')}`);
    t.equal(qmigd.dstRunState, qemu.dstRunState, 'and so is its run state after');
  });
}
