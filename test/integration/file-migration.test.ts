/**
 * `file:PATH[,offset=N]` migration (QEMU 8.2+) with a real QEMU 10.0 at the other end: qmigd 10.0
 * (its guest writing) saves into a file behind a header that is not its own and QEMU 10.0 loads
 * it; QEMU 10.0 saves and qmigd 10.0 loads. qmigd's file is laid out as QEMU 10.0 lays out its
 * own in the same test (the bytes before the offset kept, the stream from the offset with the same
 * outline, nothing after it, a new file's mode), and the RAM compared at the end. The errors for
 * a file that cannot be created or opened are QEMU 10.0's, and the 7.2 profile refuses `file:`
 * as QEMU 7.2 does.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import type { ProfileId } from '../../src/profiles/index.js';
import { tempDir } from '../helpers/daemon.js';
import { caps, finished, info, MiB, mixedRam, outline, sameRam, startEnd, statuses, type End, type Test } from '../helpers/interop.js';
import type { Msg } from '../helpers/qmp-client.js';
import { qemuSkip } from '../helpers/qemu.js';

const R = '10.0';
const work = tempDir();
const OFFSET = 12288;
const size = 64 * MiB;

/** A file that already holds OFFSET bytes of someone's header and stale bytes after them. */
function preparedFile(name: string): { path: string; header: Buffer } {
  const path = join(work, name);
  const header = randomBytes(OFFSET);
  writeFileSync(path, Buffer.concat([header, randomBytes(1 << 20)]));
  return { path, header };
}

interface Saved {
  path: string;
  bytes: Buffer;
  header: Buffer;
  statuses: string[];
}

/** Saves `src`'s guest into a prepared file at OFFSET (written as 12k, a size with a suffix). */
async function save(t: Test, src: End, name: string): Promise<Saved> {
  const { path, header } = preparedFile(name);
  await caps(src, ['events']);
  await src.qmp.ok('migrate', { uri: `file:${path},offset=${OFFSET / 1024}k` });
  const end = await finished(src);
  t.equal(end.status, 'completed', `${src.kind} saved into the file ${end.status === 'failed' ? JSON.stringify(end) : ''}`);
  return { path, bytes: readFileSync(path), header, statuses: statuses(src) };
}

/** What both kinds of file must be: the header kept, then one whole stream and nothing more. */
function layout(s: Saved): { headerKept: boolean; outline: string[]; trailing: number } {
  const o = outline(s.bytes.subarray(OFFSET), R);
  return { headerKept: s.bytes.subarray(0, OFFSET).equals(s.header), outline: o.items, trailing: s.bytes.length - OFFSET - o.bytes };
}

t.test('file: with an offset, qmigd 10.0 (guest writing) → QEMU 10.0, laid out as QEMU 10.0 lays out its own', { skip: qemuSkip(R) }, async (t) => {
  const image = mixedRam(size);
  const ref = await save(t, await startEnd(t, 'qemu', R, { size, ramFile: image.path }), 'qemu.mig');
  const src = await startEnd(t, 'qmigd', R, { size, ramFile: image.path, qmigdArgs: ['--dirty-rate', '8M'] });
  const ours = await save(t, src, 'qmigd.mig');
  const theirs = layout(ref);
  t.comment(`QEMU 10.0's file: ${JSON.stringify(theirs)}`);
  t.same(layout(ours), theirs, 'the same layout: header kept, the same outline, the same bytes after the stream');
  t.same(ours.statuses, ref.statuses, 'the source\'s MIGRATION statuses');
  const dst = await startEnd(t, 'qemu', R, { size, incoming: 'defer' });
  await dst.qmp.ok('migrate-incoming', { uri: `file:${ours.path},offset=${OFFSET}` });
  t.equal((await finished(dst)).status, 'completed', 'QEMU 10.0 loaded qmigd\'s file');
  await sameRam(t, src, dst, size);
});

t.test('file: with an offset, QEMU 10.0 → qmigd 10.0', { skip: qemuSkip(R) }, async (t) => {
  const image = mixedRam(size);
  const src = await startEnd(t, 'qemu', R, { size, ramFile: image.path });
  const saved = await save(t, src, 'for-qmigd.mig');
  const runs: Record<string, string[]> = {};
  for (const kind of ['qemu', 'qmigd'] as const) {
    const dst = await startEnd(t, kind, R, { size, incoming: 'defer' });
    await caps(dst, ['events']);
    await dst.qmp.ok('migrate-incoming', { uri: `file:${saved.path},offset=${OFFSET}` });
    t.equal((await finished(dst)).status, 'completed', `${kind} loaded QEMU's file`);
    runs[kind] = statuses(dst);
    await sameRam(t, src, dst, size, image.sha);
  }
  t.same(runs.qmigd, runs.qemu, 'the destination\'s MIGRATION statuses');
});

/** What an end answers and shows for a file: it cannot use, and the mode of a file it creates. */
async function errors(t: Test, kind: 'qemu' | 'qmigd', release: ProfileId): Promise<Msg> {
  const dir = tempDir();
  const src = await startEnd(t, kind, release, { size: 4 * MiB });
  const dst = await startEnd(t, kind, release, { size: 4 * MiB, incoming: 'defer' });
  const out: Msg = {};
  // A bad offset is refused before the migration begins: a fresh source stays without a state.
  out.migrateBadOffset = await src.qmp.cmd('migrate', { uri: `file:${join(dir, 'x')},offset=12q` });
  out.afterBadOffset = await info(src);
  out.migrateNoDir = await src.qmp.cmd('migrate', { uri: `file:${join(dir, 'no', 'such', 'dir')}` });
  out.afterNoDir = await info(src);
  out.incomingMissing = await dst.qmp.cmd('migrate-incoming', { uri: `file:${join(dir, 'missing')}` });
  if (release === '10.0') {
    // A file has no way back: return-path makes the migration fail.
    await caps(src, ['return-path']);
    await src.qmp.ok('migrate', { uri: `file:${join(dir, 'rp.mig')}` });
    const rp = await finished(src);
    out.returnPath = { status: rp.status, 'error-desc': rp['error-desc'] };
    await caps(src, ['return-path'], false);
    const fresh = join(dir, 'fresh.mig');
    await src.qmp.ok('migrate', { uri: `file:${fresh}` });
    out.fresh = (await finished(src)).status;
    out.freshMode = (statSync(fresh).mode & 0o777).toString(8);
  }
  return JSON.parse(JSON.stringify(out).replaceAll(dir, 'DIR')) as Msg;
}

for (const release of ['10.0', '7.2'] as ProfileId[]) {
  t.test(`file: errors and a new file's mode as QEMU ${release}'s`, { skip: qemuSkip(release) }, async (t) => {
    const theirs = await errors(t, 'qemu', release);
    const ours = await errors(t, 'qmigd', release);
    t.comment(`QEMU ${release}: ${JSON.stringify(theirs)}`);
    t.same(ours, theirs);
  });
}
