/**
 * Multifd as QEMU 10.0 does it, against a real QEMU 10.0 (`-M none`) in both directions, with
 * each value of `zero-page-detection`: `multifd` (zero pages inside the channels' packets),
 * `legacy` (ZERO records on the main stream, as 7.2) and `none` (zero pages sent whole). Two
 * channels, 64 MiB guests of mixed zero and non-zero RAM; where qmigd is the source its guest
 * dirties RAM all along, so the channels sync over several passes (MULTIFD_FLUSH records);
 * where QEMU is the source its connections come in any order and carry SWITCHOVER_START. RAM
 * is compared at the end (pmemsave on QEMU's side, pmemsave and the digest on qmigd's).
 *
 * A paused qmigd source and a QEMU 10.0 source sending the same RAM to QEMU 10.0 must count the
 * same pages and the same multifd bytes: the same packets, zero pages and SYNCs; so must qmigd
 * with --page-thread on, whose page thread fills and posts the packets.
 */
import { createHash, randomFillSync } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { freePort, loadThreadPages, startDaemon, tempDir } from '../helpers/daemon.js';
import { loadThreadReady, outline, recordingProxy, type Recording } from '../helpers/interop.js';
import { qemuSkip, startQemu } from '../helpers/qemu.js';
import { QmpClient, type Msg } from '../helpers/qmp-client.js';
import { below, rng } from '../helpers/rng.js';
import { HEADER_BYTES, INIT_BYTES, MULTIFD_MAGIC } from '../../src/migration/multifd/format.js';

type Test = Parameters<Parameters<typeof t.test>[0]>[0];
type Kind = 'qemu' | 'qmigd';
const MODES = ['multifd', 'legacy', 'none'] as const;

const skip = qemuSkip('10.0');
const MiB = 1 << 20;
const PAGE = 4096;
const SIZE = 64 * MiB;
// The QEMU 10.0 chroot sees this machine's /tmp: every path it is given lives there.
const work = tempDir();
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface End {
  kind: Kind;
  qmp: QmpClient;
  dir: string;
  log: () => string;
}

/** Half zero pages; the rest random, text-like, or zero with one word set. */
function mixedRam(): { path: string; sha: string } {
  const buf = Buffer.alloc(SIZE);
  const r = rng(0x10d0f00d);
  for (let p = 0; p < SIZE / PAGE; p++) {
    const kind = below(r, 100);
    const at = p * PAGE;
    if (kind < 50) continue;
    if (kind < 70) randomFillSync(buf, at, PAGE);
    else if (kind < 90) buf.fill(`page ${p} `, at, at + PAGE);
    else buf.writeUInt32LE(p | 1, at + below(r, PAGE / 4) * 4);
  }
  const path = join(work, 'mixed.ram');
  writeFileSync(path, buf);
  return { path, sha: sha256(buf) };
}
const image = mixedRam();

async function start(t: Test, kind: Kind, o: { ramFile?: string; incoming?: boolean; qmigdArgs?: string[] }): Promise<End> {
  if (kind === 'qemu') {
    const backend = o.ramFile ? `memory-backend-file,id=m,size=${SIZE},mem-path=${o.ramFile}` : `memory-backend-ram,id=m,size=${SIZE}`;
    const q = await startQemu(['-M', 'none,memory-backend=m', '-object', backend, '-m', `${SIZE / MiB}M`, ...(o.incoming ? ['-incoming', 'defer'] : [])], {
      release: '10.0',
    });
    let log = '';
    q.proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    t.teardown(() => q.stop());
    const qmp = await QmpClient.unix(q.socket);
    t.teardown(() => qmp.close());
    await qmp.negotiate();
    const dir = tempDir();
    return { kind, qmp, dir, log: () => log };
  }
  const d = await startDaemon([
    '--qemu-version', '10.0', '-m', String(SIZE), '--ram-id', 'm', ...(o.ramFile ? ['--memory-file', o.ramFile] : []),
    ...(o.incoming ? ['--incoming', 'defer'] : []), ...(o.qmigdArgs ?? []),
  ]);
  t.teardown(() => d.stop());
  const qmp = await QmpClient.at(d.listening[0]!);
  t.teardown(() => qmp.close());
  await qmp.negotiate();
  return { kind, qmp, dir: d.dir, log: d.stderr };
}

async function until(e: End, done: (i: Msg) => boolean, what: string, timeoutMs = 90000): Promise<Msg> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const i = (await e.qmp.ok('query-migrate')) as Msg;
    if (done(i)) return i;
    if (Date.now() > deadline) throw new Error(`${e.kind}: timed out waiting for ${what}: ${JSON.stringify(i)}\n${e.log().slice(-2000)}`);
    await delay(20);
  }
}
const finished = (e: End): Promise<Msg> => until(e, (i) => i.status === 'completed' || i.status === 'failed', 'the end of the migration');
const ram = (i: Msg): Record<string, number> => (i.ram ?? {}) as Record<string, number>;

const THREAD_LINE = 'pages go from the page thread from here on';

/** The paused sources compared: QEMU 10.0, qmigd, and qmigd whose page thread scans and fills the packets. */
const PAUSED_SOURCES: { name: string; kind: Kind; qmigdArgs: string[] }[] = [
  { name: 'qemu', kind: 'qemu', qmigdArgs: [] },
  { name: 'qmigd', kind: 'qmigd', qmigdArgs: ['-S'] },
  { name: 'qmigd --page-thread on', kind: 'qmigd', qmigdArgs: ['-S', '--page-thread', 'on'] },
];

async function ramSha(t: Test, e: End): Promise<string> {
  const file = join(e.dir, `ram-${Date.now()}.dump`);
  await e.qmp.ok('pmemsave', { val: 0, size: SIZE, filename: file });
  const dumped = sha256(readFileSync(file));
  rmSync(file, { force: true });
  if (e.kind === 'qmigd') t.equal(((await e.qmp.ok('__org.qmigd_query-ram-digest')) as { sha256: string }).sha256, dumped, 'qmigd digest = its dump');
  return dumped;
}

/** Both ends multifd with 2 channels and the mode; the destination listens; the source goes. */
async function migrate(src: End, dst: End, mode: string, srcParams: Msg = {}, via?: (port: number) => Promise<number>, dstLoadThread = false): Promise<{ src: Msg; dst: Msg }> {
  for (const e of [src, dst]) {
    await e.qmp.ok('migrate-set-capabilities', { capabilities: [{ capability: 'multifd', state: true }] });
    await e.qmp.ok('migrate-set-parameters', { 'multifd-channels': 2, 'zero-page-detection': mode });
  }
  await src.qmp.ok('migrate-set-parameters', srcParams);
  const port = await freePort();
  await dst.qmp.ok('migrate-incoming', { uri: `tcp:127.0.0.1:${port}` });
  await until(dst, (i) => 'socket-address' in i, 'the incoming socket');
  if (dstLoadThread) await loadThreadReady(dst);
  await src.qmp.ok('migrate', { uri: `tcp:127.0.0.1:${via ? await via(port) : port}` });
  const s = await finished(src);
  const d = await finished(dst);
  return { src: s, dst: d };
}

for (const mode of MODES) {
  // With --page-thread on the destination's load thread takes the main channel's sections (the
  // ZERO records of `legacy`), asking the main thread for the channels' sync at each MULTIFD_FLUSH.
  for (const qmigdArgs of [[], ['--page-thread', 'on']]) {
    t.test(`multifd, zero-page-detection=${mode}: QEMU 10.0 → ${['qmigd', ...qmigdArgs].join(' ')}`, { skip }, async (t) => {
      const dst = await start(t, 'qmigd', { incoming: true, qmigdArgs });
      const src = await start(t, 'qemu', { ramFile: image.path });
      const r = await migrate(src, dst, mode, {}, undefined, qmigdArgs.length > 0);
      t.equal(r.src.status, 'completed', `QEMU source completed ${JSON.stringify(r.src)}`);
      t.equal(r.dst.status, 'completed', 'qmigd destination completed');
      t.ok(ram(r.src)['multifd-bytes']! > 0, 'pages went over the channels');
      t.equal(await ramSha(t, dst), image.sha, 'qmigd holds the image QEMU sent');
      const onThread = loadThreadPages(dst.log());
      if (!qmigdArgs.length) t.equal(onThread, undefined, 'no load thread');
      else if (mode === 'legacy') t.ok(onThread! > 0, `the load thread loaded the ZERO records' pages (${onThread})`);
      else t.equal(onThread, 0, 'the load thread took the sections, with no page in them');
    });
  }

  t.test(`multifd, zero-page-detection=${mode}: qmigd (dirtying its RAM) → QEMU 10.0`, { skip }, async (t) => {
    const dst = await start(t, 'qemu', { incoming: true });
    const src = await start(t, 'qmigd', { ramFile: image.path, qmigdArgs: ['--dirty-rate', '8M', '--dirty-pattern', 'hot:10'] });
    const r = await migrate(src, dst, mode, { 'max-bandwidth': 96 * MiB });
    t.equal(r.src.status, 'completed', `qmigd source completed ${JSON.stringify(r.src)}`);
    t.equal(r.dst.status, 'completed', 'QEMU destination completed');
    t.ok(ram(r.src)['dirty-sync-count']! > 2, `several passes (dirty-sync-count ${ram(r.src)['dirty-sync-count']})`);
    const a = await ramSha(t, src);
    t.not(a, image.sha, 'the guest changed its RAM meanwhile');
    t.equal(await ramSha(t, dst), a, 'QEMU holds the RAM qmigd ended with');
  });

  // How many times the channels sync follows timing, in QEMU as in qmigd (qemu100-stats.test.ts
  // says why): each sync's MULTIFD_FLUSH record, counted in the recorded main stream, and its
  // SYNC packets are taken out of multifd-bytes.
  t.test(`multifd, zero-page-detection=${mode}: a paused qmigd counts what QEMU 10.0 counts for the same RAM`, { skip }, async (t) => {
    const seen: Record<string, Record<string, number>> = {};
    for (const { name, kind, qmigdArgs } of PAUSED_SOURCES) {
      await t.test(`${name} → QEMU 10.0`, async (t) => {
        const dst = await start(t, 'qemu', { incoming: true });
        const src = await start(t, kind, { ramFile: image.path, qmigdArgs });
        let proxy: Recording | undefined;
        const r = await migrate(src, dst, mode, {}, async (port) => (proxy = await recordingProxy(t, port)).port);
        t.equal(r.src.status, 'completed');
        t.equal(r.dst.status, 'completed');
        t.equal(await ramSha(t, dst), image.sha, 'the destination holds the image');
        if (qmigdArgs.includes('--page-thread')) t.ok(src.log().includes(THREAD_LINE), 'the page thread sent pages');
        const { flushes } = outline(proxy!.mainToDst(), '10.0');
        t.ok(flushes > 0, `the main stream decodes, with the channels' syncs (${flushes})`);
        const counted = ram(r.src);
        seen[name] = { ...counted, 'multifd-bytes': counted['multifd-bytes']! - flushes * 2 * HEADER_BYTES };
      });
    }
    for (const { name } of PAUSED_SOURCES.slice(1)) {
      for (const k of ['duplicate', 'normal', 'multifd-bytes', 'dirty-sync-count']) t.equal(seen[name]![k], seen.qemu![k], `${name}: ${k}${k === 'multifd-bytes' ? ', without the syncs\' packets' : ''}`);
    }
  });
}

/**
 * The pages of each packet a multifd channel carried, as `normal offsets | zero offsets` (in
 * pages): from a recorded connection that opens with the channel greeting; none otherwise.
 */
function packetPages(channel: Buffer): string[] {
  if (channel.length < INIT_BYTES || channel.readUInt32BE(0) !== MULTIFD_MAGIC) return [];
  const out: string[] = [];
  for (let at = INIT_BYTES; at + HEADER_BYTES <= channel.length; ) {
    const normal = channel.readUInt32BE(at + 16);
    const zero = channel.readUInt32BE(at + 32);
    const pages = Array.from({ length: normal + zero }, (_, i) => Number(channel.readBigUInt64BE(at + 320 + 8 * i)) / PAGE);
    if (pages.length) out.push(`${pages.slice(0, normal).join(',')} | ${pages.slice(normal).join(',')}`);
    at += HEADER_BYTES + normal * PAGE;
  }
  return out;
}

// multifd_send_zero_page_detect() runs in the channel's thread and moves each zero page to the
// end of the packet, swapping it with the last page not yet looked at: qmigd's channel threads
// must fill the packets the same way, page for page.
t.test('multifd, zero-page-detection=multifd: a paused qmigd\'s channels list each packet\'s pages as QEMU 10.0\'s do', { skip }, async (t) => {
  const seen: Record<string, string[]> = {};
  for (const { name, kind, qmigdArgs } of PAUSED_SOURCES) {
    await t.test(`${name} → QEMU 10.0 through a recording proxy`, async (t) => {
      const dst = await start(t, 'qemu', { incoming: true });
      const src = await start(t, kind, { ramFile: image.path, qmigdArgs });
      let proxy: Recording | undefined;
      const r = await migrate(src, dst, 'multifd', {}, async (port) => (proxy = await recordingProxy(t, port)).port);
      t.equal(r.src.status, 'completed');
      t.equal(r.dst.status, 'completed');
      if (qmigdArgs.includes('--page-thread')) t.ok(src.log().includes(THREAD_LINE), 'the page thread sent pages');
      seen[name] = proxy!.allToDst().flatMap(packetPages).sort();
    });
  }
  const { qemu } = seen;
  t.ok(qemu!.some((p) => /\d \| \d/.test(p)), `QEMU's packets mix normal and zero pages (${qemu!.length} packets)`);
  for (const { name } of PAUSED_SOURCES.slice(1)) t.same(seen[name], qemu, `${name}: the same packets, their pages in the same order`);
});
