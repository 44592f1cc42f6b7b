/**
 * mapped-ram (QEMU 9.0+, file: only) under the 10.0 profile, against QEMU 10.0 in the same run:
 * - a paused guest's file is byte for byte the file QEMU 10.0 writes for the same RAM (with and
 *   without multifd, with and without a file offset, the pages from the page thread or not);
 * - a guest that writes while it is saved gets a file QEMU 10.0 loads into the same RAM, laid out
 *   as QEMU's (the pages region does not grow: pages dirtied again are rewritten in place);
 * - QEMU 10.0's file loads into qmigd 10.0 (with and without multifd), RAM compared;
 * - the refusals (mapped-ram on a socket, with xbzrle) and the load failures (capability on one
 *   side only, a newer header version, a misaligned pages region, a bitmap past the end, a file
 *   cut in the header or in the pages region) are QEMU 10.0's.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { BIN, startDaemon, tempDir, unixPath } from '../helpers/daemon.js';
import { FdClient } from '../helpers/fd-client.js';
import { caps, connectQmp, delay, finished, info, MiB, mixedRam, outline, sameRam, sha256, startEnd, type End, type Kind, type Test } from '../helpers/interop.js';
import type { Msg } from '../helpers/qmp-client.js';
import { QEMU_OF, qemuSkip, startQemu } from '../helpers/qemu.js';

const R = '10.0';
const skip = qemuSkip(R);
const work = tempDir();
// Small, so that a whole pass takes one iteration (ram_save_iterate()'s 50 ms) on a busy machine
// too: the files are compared byte for byte, and another iteration adds records (16 MiB did, on
// two cores with the rest of the suite running). onePass() takes a save again where it did not.
const size = 4 * MiB;
let files = 0;
const hex = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;

/** The mapped-ram block header as a file holds it: after used_length of the one block `m`. */
function blockHeader(file: Buffer, offset: number): { at: number; version: number; pageSize: number; bitmapOffset: number; pagesOffset: number } {
  // MEM_SIZE record, then the counted id "m" and the be64 used_length.
  const record = Buffer.alloc(8);
  record.writeBigUInt64BE(BigInt(size) | 4n);
  const at = file.indexOf(Buffer.concat([record, Buffer.from([1]), Buffer.from('m')]), offset) + 8 + 2 + 8;
  return {
    at,
    version: file.readUInt32BE(at),
    pageSize: Number(file.readBigUInt64BE(at + 4)),
    bitmapOffset: Number(file.readBigUInt64BE(at + 12)),
    pagesOffset: Number(file.readBigUInt64BE(at + 20)),
  };
}

/** The RAM statistics a saved file fixes (not rates or times). */
const STATS = ['transferred', 'precopy-bytes', 'downtime-bytes', 'multifd-bytes', 'normal', 'normal-bytes', 'duplicate', 'total', 'remaining'];

/** Saves `src` with mapped-ram (and `extra` capabilities) into a new file at `offset`. */
async function save(t: Test, src: End, extra: string[] = [], offset = 0): Promise<{ path: string; bytes: Buffer; info: Msg }> {
  const path = join(work, `${src.kind}-${++files}.mig`);
  await caps(src, ['events', 'mapped-ram', ...extra]);
  await src.qmp.ok('migrate', { uri: offset ? `file:${path},offset=${offset}` : `file:${path}` });
  const end = await finished(src);
  t.equal(end.status, 'completed', `${src.kind} saved with mapped-ram ${end.status === 'failed' ? JSON.stringify(end) : ''}`);
  return { path, bytes: readFileSync(path), info: end };
}

/**
 * save() of a paused guest whose one pass went in one iteration: ram_save_iterate() ends its
 * section after 50 ms, and a pass the machine slowed that much wrote another PART section, which
 * no other save of the same RAM need have. Such a save is taken again (from a new `start()`), at
 * most three times; the files compared are then laid out by what was saved, not by timing.
 */
async function onePass(t: Test, start: () => Promise<End>, extra: string[], offset: number): Promise<{ end: End; saved: Awaited<ReturnType<typeof save>> }> {
  for (let attempt = 1; ; attempt++) {
    const end = await start();
    const saved = await save(t, end, extra, offset);
    const parts = outline({ path: saved.path, offset }, R).parts;
    if (parts === 1 || attempt === 3) {
      t.equal(parts, 1, `${end.kind}'s pass went in one iteration (attempt ${attempt})`);
      return { end, saved };
    }
    t.comment(`${end.kind}: ${parts} iterations (PART sections) in attempt ${attempt}: saved again`);
  }
}

/** Bytes the process has read so far (read(), pread(), recv(): /proc/PID/io's rchar). */
const bytesRead = (pid: number): number => Number(/^rchar: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'latin1'))![1]);

function firstDifference(a: Buffer, b: Buffer): string {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return `first difference at byte 0x${i.toString(16)}`;
  return a.length === b.length ? 'identical' : `lengths ${a.length} and ${b.length}`;
}

for (const variant of [{ multifd: false, offset: 0 }, { multifd: true, offset: 12288 }]) {
  const name = `${variant.multifd ? 'with multifd' : 'one channel'}${variant.offset ? `, at offset ${variant.offset}` : ''}`;
  t.test(`a paused guest, ${name}: qmigd 10.0 writes the file QEMU 10.0 writes, byte for byte`, { skip }, async (t) => {
    const image = mixedRam(size);
    const extra = variant.multifd ? ['multifd'] : [];
    const { saved: theirs } = await onePass(t, () => startEnd(t, 'qemu', R, { size, ramFile: image.path, qemuArgs: ['-S'] }), extra, variant.offset);
    const h = blockHeader(theirs.bytes, variant.offset);
    t.comment(`QEMU 10.0's block header: ${JSON.stringify(h)}, file ${theirs.bytes.length} bytes`);
    // The same file, so the same bytes to count: the bitmap is RAM bytes (downtime-bytes), and
    // with multifd the pages are the channels' (multifd-bytes).
    const counted = (i: Msg): Msg => Object.fromEntries(STATS.map((k) => [k, (i.ram as Msg)[k]]));
    const theirStats = counted(theirs.info);
    t.comment(`QEMU 10.0's RAM statistics: ${JSON.stringify(theirStats)}`);
    // qmigd's page loop on the QMP thread (the default), and on the page thread, which writes the pages through its own descriptor.
    for (const thread of ['off', 'on']) {
      const { end: qmigd, saved: ours } = await onePass(t, () => startEnd(t, 'qmigd', R, { size, ramFile: image.path, qmigdArgs: ['-S', '--page-thread', thread] }), extra, variant.offset);
      t.equal(qmigd.log().includes('pages go from the page thread from here on'), thread === 'on', `--page-thread ${thread}: the pages ${thread === 'on' ? 'went' : 'did not go'} from the page thread`);
      t.notMatch(qmigd.log(), /\(node:\d+\) Warning/, 'and Node warned of nothing on its stderr');
      t.ok(ours.bytes.equals(theirs.bytes), `--page-thread ${thread}: the same file (${firstDifference(ours.bytes, theirs.bytes)})`);
      t.same(blockHeader(ours.bytes, variant.offset), h, 'the same block header');
      t.same(counted(ours.info), theirStats, "query-migrate's RAM statistics as QEMU 10.0's");
    }
  });
}

t.test('a guest writing while saved: QEMU 10.0 (and qmigd) load the file into the same RAM, the pages region rewritten in place', { skip }, async (t) => {
  const image = mixedRam(size);
  const ref = await save(t, await startEnd(t, 'qemu', R, { size, ramFile: image.path, qemuArgs: ['-S'] }));
  const h = blockHeader(ref.bytes, 0);
  for (const thread of ['off', 'on']) {
    const src = await startEnd(t, 'qmigd', R, { size, ramFile: image.path, qmigdArgs: ['--dirty-rate', '8M', '--page-thread', thread] });
    await src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 8 * MiB });
    const ours = await save(t, src);
    const passes = ((await info(src)).ram as Msg)['dirty-sync-count'] as number;
    t.ok(passes > 2, `--page-thread ${thread}: the guest dirtied pages that were saved again (${passes} syncs)`);
    t.ok(ours.bytes.subarray(0, h.bitmapOffset).equals(ref.bytes.subarray(0, h.bitmapOffset)), 'the same stream up to the bitmap as QEMU 10.0 writes');
    // Every pass rewrote its pages in place: the file is the pages region plus a stream tail,
    // however many pages went out more than once.
    const tail = ours.bytes.length - (h.pagesOffset + size);
    t.ok(tail > 0 && tail < 64 * 1024, `after the pages region only the rest of the stream (${tail} bytes)`);
    for (const kind of ['qemu', 'qmigd'] as const) {
      const dst = await startEnd(t, kind, R, { size, incoming: 'defer' });
      await caps(dst, ['events', 'mapped-ram']);
      await dst.qmp.ok('migrate-incoming', { uri: `file:${ours.path}` });
      t.equal((await finished(dst)).status, 'completed', `${kind} 10.0 loaded qmigd's file`);
      await sameRam(t, src, dst, size);
    }
  }
});

t.test("QEMU 10.0's mapped-ram file loads into qmigd 10.0, with and without multifd, reading what QEMU 10.0 reads", { skip }, async (t) => {
  const image = mixedRam(size);
  const src = await startEnd(t, 'qemu', R, { size, ramFile: image.path });
  const saved = await save(t, src);
  const read: Record<string, number> = {};
  for (const [kind, extra] of [['qemu', []], ['qmigd', []], ['qmigd', ['multifd']]] as Array<[Kind, string[]]>) {
    const dst = await startEnd(t, kind, R, { size, incoming: 'defer' });
    await caps(dst, ['events', 'mapped-ram', ...extra]);
    const before = bytesRead(dst.pid);
    await dst.qmp.ok('migrate-incoming', { uri: `file:${saved.path}` });
    t.equal((await finished(dst)).status, 'completed', `${kind} ${extra.join(' ')} loaded QEMU's file`);
    read[`${kind} ${extra.join(' ')}`] = bytesRead(dst.pid) - before;
    await sameRam(t, src, dst, size, image.sha);
  }
  // QEMU reads the header and bitmap, preads the pages the bitmap marks and sets its stream's
  // offset past the pages region; reading through it would read `size` bytes more. qmigd reads
  // its stream 1 MiB at a time and one such read ahead (QEMU 32 KiB), so 2 MiB are allowed for.
  t.comment(`bytes read by each destination while loading: ${JSON.stringify(read)}; the file ${saved.bytes.length}`);
  const theirs = read['qemu ']!;
  t.ok(theirs < saved.bytes.length - size / 4, 'QEMU 10.0 does not read the whole file');
  for (const k of ['qmigd ', 'qmigd multifd']) t.ok(read[k]! <= theirs + 2 * MiB + 64 * 1024, `${k}: no more than QEMU 10.0 reads, but for read-ahead (${read[k]} vs ${theirs})`);
});

t.test('qmigd inspect --qemu-version 10.0 decodes a mapped-ram file QEMU 10.0 wrote: its header, bitmap and RAM', { skip }, async (t) => {
  const image = mixedRam(size);
  for (const extra of [[], ['multifd']]) {
    const saved = await save(t, await startEnd(t, 'qemu', R, { size, ramFile: image.path, qemuArgs: ['-S'] }), extra);
    const path = saved.path;
    const ramOut = join(work, `inspect-${files}.ram`);
    const run = spawnSync(process.execPath, [BIN, 'inspect', '--qemu-version', R, path, '--ram', ramOut], { encoding: 'utf8' });
    const name = extra.length ? 'with multifd' : 'one channel';
    t.equal(run.status, 0, `${name}: inspect reads the file: ${run.stdout.split('\n').slice(-4).join(' | ')} ${run.stderr}`);
    const out = run.stdout;
    const h = blockHeader(saved.bytes, 0);
    t.match(out, `${hex(h.at)}  mapped-ram     block "m": header version ${h.version}, page size ${h.pageSize}`, `${name}: the header, where it is`);
    t.match(out, `bitmap at ${hex(h.bitmapOffset)} (${size / 4096 / 8} bytes), pages at ${hex(h.pagesOffset)} (${size} bytes)`, `${name}: the offsets`);
    const normal = (saved.info.ram as Msg).normal as number;
    t.match(out, `${normal} of ${size / 4096} pages in the file, ${size / 4096 - normal} not (zero)`, `${name}: as many pages in the bitmap as QEMU 10.0 saved (${normal})`);
    t.equal(sha256(readFileSync(ramOut)), image.sha, `${name}: the RAM it loads is the RAM QEMU 10.0 saved`);
  }
  // A pipe has no offsets to read the pages at: said so, not misread.
  const saved = await save(t, await startEnd(t, 'qemu', R, { size, ramFile: image.path, qemuArgs: ['-S'] }));
  const piped = spawnSync(process.execPath, [BIN, 'inspect', '--qemu-version', R, '-'], { input: saved.bytes.subarray(0, 4096), encoding: 'utf8' });
  t.equal(piped.status, 1, 'from standard input: refused');
  t.match(piped.stdout, 'mapped-ram: the pages are at offsets of a file; read the file, not a pipe');
});

t.test('mapped-ram with fd: naming a regular file: refused as QEMU 10.0 refuses it, both ways', { skip }, async (t) => {
  const run = async (kind: Kind): Promise<unknown[]> => {
    const out: unknown[] = [];
    for (const incoming of [false, true]) {
      // Its only monitor is the client that passes descriptors (a QEMU monitor takes one client).
      const socket =
        kind === 'qemu'
          ? await startQemu(['-m', '4M', ...(incoming ? ['-incoming', 'defer'] : ['-S'])], { release: R }).then((q) => (t.teardown(() => q.stop()), q.socket))
          : await startDaemon(['--qemu-version', R, '-m', String(4 * MiB), ...(incoming ? ['--incoming', 'defer'] : ['-S'])]).then((d) => (t.teardown(() => d.stop()), unixPath(d)));
      const c = await FdClient.connect(socket);
      t.teardown(() => c.quit());
      const file = join(work, `fd-${kind}-${incoming}.mig`);
      if (incoming) writeFileSync(file, Buffer.alloc(4096));
      await c.open('f', file);
      out.push(((await c.cmd('migrate-set-capabilities', capsOn('mapped-ram'))).error as Msg | undefined)?.desc ?? 'ok');
      out.push(((await c.cmd('getfd', { fdname: 'mig' }, ['f'])).error as Msg | undefined)?.desc ?? 'ok');
      const r = incoming ? await c.cmd('migrate-incoming', { uri: 'fd:mig' }) : await c.cmd('migrate', { uri: 'fd:mig' });
      out.push((r.error as Msg | undefined)?.desc ?? 'ok');
      const i = (await c.cmd('query-migrate')).return as Msg;
      out.push(i.status ?? 'none', i['error-desc'] ?? '');
    }
    return out;
  };
  const theirs = await run('qemu');
  t.comment(`QEMU 10.0: ${JSON.stringify(theirs)}`);
  t.ok(theirs.includes('Migration requires seekable transport (e.g. file)'), 'QEMU 10.0 refuses fd: with mapped-ram');
  t.same(await run('qmigd'), theirs, 'the same answers and state');
});

const capsOn = (...names: string[]): Msg => ({ capabilities: names.map((capability) => ({ capability, state: true })) });
/** Commands sent to a fresh end, on a source or an incoming (defer) destination. */
const REFUSALS: Array<{ name: string; incoming?: boolean; steps: Array<[string, Msg]> }> = [
  { name: 'mapped-ram to unix:', steps: [['migrate-set-capabilities', capsOn('mapped-ram')], ['migrate', { uri: `unix:${join(work, 'nowhere.sock')}` }]] },
  { name: 'mapped-ram to tcp:', steps: [['migrate-set-capabilities', capsOn('mapped-ram')], ['migrate', { uri: 'tcp:127.0.0.1:1' }]] },
  {
    name: 'mapped-ram to an exec channel',
    steps: [['migrate-set-capabilities', capsOn('mapped-ram')], ['migrate', { channels: [{ 'channel-type': 'main', addr: { transport: 'exec', args: ['true'] } }] }]],
  },
  { name: 'mapped-ram with xbzrle', steps: [['migrate-set-capabilities', capsOn('mapped-ram')], ['migrate-set-capabilities', capsOn('xbzrle')]] },
  { name: 'mapped-ram with postcopy', steps: [['migrate-set-capabilities', capsOn('mapped-ram', 'postcopy-ram')]] },
  {
    name: 'mapped-ram with a compression method',
    steps: [['migrate-set-capabilities', capsOn('mapped-ram')], ['migrate-set-parameters', { 'multifd-compression': 'zlib' }], ['migrate', { uri: `file:${join(work, 'compressed.mig')}` }]],
  },
  {
    name: 'mapped-ram, multifd and a compression method to tcp:',
    steps: [['migrate-set-capabilities', capsOn('mapped-ram', 'multifd')], ['migrate-set-parameters', { 'multifd-compression': 'zlib' }], ['migrate', { uri: 'tcp:127.0.0.1:1' }]],
  },
  { name: 'multifd to file: without mapped-ram', steps: [['migrate-set-capabilities', capsOn('multifd')], ['migrate', { uri: `file:${join(work, 'multifd.mig')}` }]] },
  { name: 'multifd to exec:', steps: [['migrate-set-capabilities', capsOn('multifd')], ['migrate', { uri: 'exec:cat >/dev/null' }]] },
  { name: 'mapped-ram from unix:', incoming: true, steps: [['migrate-set-capabilities', capsOn('mapped-ram')], ['migrate-incoming', { uri: `unix:${join(work, 'in.sock')}` }]] },
  { name: 'multifd from file: without mapped-ram', incoming: true, steps: [['migrate-set-capabilities', capsOn('multifd')], ['migrate-incoming', { uri: `file:${join(work, 'absent.mig')}` }]] },
];

for (const r of REFUSALS) {
  t.test(`refused as QEMU 10.0 refuses it, the state left as it leaves it: ${r.name}`, { skip }, async (t) => {
    const run = async (kind: Kind): Promise<unknown[]> => {
      const e = await startEnd(t, kind, R, { size: 4 * MiB, ...(r.incoming ? { incoming: 'defer' } : {}) });
      const out: unknown[] = [];
      for (const [execute, args] of r.steps) out.push(((await e.qmp.cmd(execute, args)).error as Msg | undefined)?.desc ?? 'ok');
      const i = await info(e);
      out.push(i.status ?? 'none', i['error-desc'] ?? '');
      return out;
    };
    const theirs = await run('qemu');
    t.comment(`QEMU 10.0: ${JSON.stringify(theirs)}`);
    t.not(theirs.slice(0, -2).filter((x) => x !== 'ok').length, 0, 'QEMU 10.0 refuses something');
    t.same(await run('qmigd'), theirs, 'the same answers and state');
  });
}

/** A destination of `kind` with `capabilities` loading `file`: how it exits and what it reports. */
async function loadFails(kind: Kind, capabilities: string[], file: string): Promise<{ code: number | null; lines: string[] }> {
  const dir = tempDir();
  const qmpPath = join(dir, 'q.sock');
  const monitor = `unix:${qmpPath},server=on,wait=off`;
  const proc =
    kind === 'qemu'
      ? spawn(QEMU_OF[R], [
          '-M', 'none,memory-backend=m', '-object', `memory-backend-ram,id=m,size=${size}`, '-m', `${size / MiB}M`,
          '-display', 'none', '-nodefaults', '-incoming', 'defer', '-qmp', monitor,
        ])
      : spawn(process.execPath, [BIN, '--qemu-version', R, '-m', String(size), '--ram-id', 'm', '--incoming', 'defer', '--log-level', 'error', '--qmp', monitor]);
  let err = '';
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  try {
    const qmp = await connectQmp(qmpPath, () => proc.exitCode === null, () => err, 5000);
    await qmp.negotiate();
    if (capabilities.length) await qmp.ok('migrate-set-capabilities', { capabilities: capabilities.map((capability) => ({ capability, state: true })) });
    await qmp.ok('migrate-incoming', { uri: `file:${file}` });
    const code = await Promise.race([exited, delay(20000).then(() => 'hung' as const)]);
    qmp.close();
    const lines = err.split('\n').filter(Boolean).map((l) => (l.startsWith('{') ? (JSON.parse(l) as { msg: string }).msg : l.replace(/^qemu-system-x86_64: /, '')));
    return { code: code === 'hung' ? null : code, lines };
  } finally {
    proc.kill('SIGKILL');
  }
}

t.test('load failures are QEMU 10.0\'s: the capability on one side only, a newer header, bad offsets, a file cut short', { skip }, async (t) => {
  // Files QEMU 10.0 wrote, with mapped-ram and without, and the mapped one edited.
  const image = mixedRam(size);
  const qemuSrc = await startEnd(t, 'qemu', R, { size, ramFile: image.path, qemuArgs: ['-S'] });
  const mapped = await save(t, qemuSrc);
  const plainSrc = await startEnd(t, 'qemu', R, { size, ramFile: image.path, qemuArgs: ['-S'] });
  const plainPath = join(work, 'plain.mig');
  await plainSrc.qmp.ok('migrate', { uri: `file:${plainPath}` });
  t.equal((await finished(plainSrc)).status, 'completed', 'QEMU 10.0 saved without mapped-ram');
  const h = blockHeader(mapped.bytes, 0);
  const variant = (name: string, edit: (b: Buffer) => void): string => {
    const b = Buffer.from(mapped.bytes);
    edit(b);
    const path = join(work, `${name}.mig`);
    writeFileSync(path, b);
    return path;
  };
  const cut = (name: string, at: number): string => {
    const path = join(work, `${name}.mig`);
    writeFileSync(path, mapped.bytes.subarray(0, at));
    return path;
  };
  const cases: Array<[string, string[], string]> = [
    ['mapped-ram here, not in the file', ['mapped-ram'], plainPath],
    ['mapped-ram in the file, not here', [], mapped.path],
    ['header version 2', ['mapped-ram'], variant('v2', (b) => b.writeUInt32BE(2, h.at))],
    ['pages region not page-aligned', ['mapped-ram'], variant('misaligned', (b) => b.writeBigUInt64BE(BigInt(h.pagesOffset + 8), h.at + 20))],
    ['bitmap offset past the end of the file', ['mapped-ram'], variant('bitmap-far', (b) => b.writeBigUInt64BE(BigInt(mapped.bytes.length), h.at + 12))],
    ['cut inside the header', ['mapped-ram'], cut('cut-header', h.at + 10)],
    ['cut inside the pages region', ['mapped-ram'], cut('cut-pages', h.pagesOffset + size / 2 + 100)],
  ];
  for (const [name, capabilities, file] of cases) {
    const [qemu, qmigd] = await Promise.all([loadFails('qemu', capabilities, file), loadFails('qmigd', capabilities, file)]);
    t.comment(`${name}: QEMU 10.0 ${JSON.stringify(qemu)}`);
    t.equal(qemu.code, 1, `${name}: QEMU 10.0 exits 1`);
    t.equal(qmigd.code, qemu.code, `${name}: qmigd exits as QEMU does`);
    // qmigd's report is QEMU's, then its own line saying where in the stream (README, errors).
    t.same(qmigd.lines.slice(0, qemu.lines.length), qemu.lines, `${name}: the same report`);
    t.match(qmigd.lines.slice(qemu.lines.length), [/^invalid migration stream at byte offset \d+/], `${name}: then where: ${JSON.stringify(qmigd.lines.at(-1))}`);
  }
});
