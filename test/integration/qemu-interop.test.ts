/**
 * qmigd and a real QEMU 7.2 (`-M none`) migrating to each other over live sockets: mixed RAM over
 * tcp: and unix: in both directions (with `-incoming defer` + migrate-incoming and with a fixed
 * incoming URI), XBZRLE on the sending side over several passes while pages change, the return
 * path (OPEN_RETURN_PATH/PING one way, PONG/SHUT the other, recorded by a proxy), pause-before-
 * switchover + migrate-continue, and the MIGRATION status sequences of both ends compared with a
 * QEMU → QEMU run of the same scenario. RAM is compared with pmemsave dumps on QEMU's side and
 * qmigd's digest. The whole file is skipped where qemu-system-x86_64 is not installed.
 *
 * Making a CPU-less QEMU source change pages between passes (as the xbzrle vector was made): the
 * RAM is a memory-backend-file with share=on, so the test's writes into the file change guest RAM
 * without marking it dirty, and a `-device loader` blob that `system_reset` rewrites marks its
 * pages dirty (and puts the blob's bytes back). Every write into the file comes right after a
 * reset, and the last one is made while the source waits in pre-switchover, so the final pass
 * (after migrate-continue) carries the final content and both sides end with the same RAM.
 */
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { closeSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { freePort, startDaemon, tempDir } from '../helpers/daemon.js';
import { qemuInstalled, startQemu } from '../helpers/qemu.js';
import { QmpClient, type Msg } from '../helpers/qmp-client.js';
import { below, rng } from '../helpers/rng.js';

/** A test object as tap passes it to a subtest callback. */
type Test = Parameters<Parameters<typeof t.test>[0]>[0];
type Kind = 'qemu' | 'qmigd';

const skip = qemuInstalled() ? false : 'qemu-system-x86_64 is not installed';
const MiB = 1 << 20;
const PAGE = 4096;
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const work = tempDir();
t.teardown(() => rmSync(work, { recursive: true, force: true }));

/** One end of a migration: a QEMU or a qmigd process with a negotiated QMP client. */
interface End {
  kind: Kind;
  qmp: QmpClient;
  dir: string;
  log: () => string;
}

interface EndOptions {
  size: number;
  /** The initial RAM: QEMU maps it with memory-backend-file, qmigd reads it with --memory-file. */
  ramFile?: string;
  /** QEMU only: map the file share=on (writes to it change guest RAM). */
  share?: boolean;
  /** `defer` or a URI. */
  incoming?: string;
  qemuArgs?: string[];
  qmigdArgs?: string[];
}

/**
 * QEMU creates its QMP socket file (bind) a moment before it listens: a connection in between is
 * refused, so retry until the greeting comes (or QEMU has exited).
 */
async function connectQemu(socket: string, alive: () => boolean, log: () => string): Promise<QmpClient> {
  const deadline = Date.now() + 10000;
  for (;;) {
    try {
      return await QmpClient.unix(socket);
    } catch (err) {
      if (!alive() || Date.now() > deadline) throw new Error(`no QMP greeting from QEMU (${(err as Error).message}): ${log()}`);
      await delay(20);
    }
  }
}

/** Starts an end; it is stopped when `t` ends. Its RAM block is `m` on both kinds. */
async function start(t: Test, kind: Kind, o: EndOptions): Promise<End> {
  if (kind === 'qemu') {
    const backend = o.ramFile
      ? `memory-backend-file,id=m,size=${o.size},mem-path=${o.ramFile}${o.share ? ',share=on' : ''}`
      : `memory-backend-ram,id=m,size=${o.size}`;
    const q = await startQemu([
      '-M', 'none,memory-backend=m', '-object', backend, '-m', `${o.size / MiB}M`,
      ...(o.incoming ? ['-incoming', o.incoming] : []), ...(o.qemuArgs ?? []),
    ]);
    let log = '';
    q.proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    let stopping = false;
    q.proc.on('exit', (code, signal) => {
      if (!stopping) t.fail(`QEMU exited unexpectedly (code ${code}, signal ${signal})`, { log });
    });
    t.teardown(() => {
      stopping = true;
      return q.stop();
    });
    const qmp = await connectQemu(q.socket, () => q.proc.exitCode === null && q.proc.signalCode === null, () => log);
    t.teardown(() => qmp.close());
    await qmp.negotiate();
    const dir = tempDir();
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    return { kind, qmp, dir, log: () => log };
  }
  const d = await startDaemon([
    '-m', String(o.size), '--ram-id', 'm', ...(o.ramFile ? ['--memory-file', o.ramFile] : []),
    ...(o.incoming ? ['--incoming', o.incoming] : []), ...(o.qmigdArgs ?? []),
  ]);
  let stopping = false;
  void d.exited.then(({ code, signal }) => {
    if (!stopping) t.fail(`qmigd exited unexpectedly (code ${code}, signal ${signal})`, { log: d.stderr().slice(-4000) });
  });
  t.teardown(() => {
    stopping = true;
    return d.stop();
  });
  const qmp = await QmpClient.at(d.listening[0]!);
  t.teardown(() => qmp.close());
  await qmp.negotiate();
  return { kind, qmp, dir: d.dir, log: d.stderr };
}

const caps = (e: End, names: string[], state = true): Promise<unknown> =>
  e.qmp.ok('migrate-set-capabilities', { capabilities: names.map((capability) => ({ capability, state })) });
const info = async (e: End): Promise<Msg> => (await e.qmp.ok('query-migrate')) as Msg;
const runState = async (e: End): Promise<string> => ((await e.qmp.ok('query-status')) as { status: string }).status;
const ram = (i: Msg): Record<string, number> => (i.ram ?? {}) as Record<string, number>;
const xbzrle = (i: Msg): Record<string, number> => (i['xbzrle-cache'] ?? {}) as Record<string, number>;
const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls query-migrate every 20 ms until `done(info)`. */
async function until(e: End, done: (i: Msg) => boolean, what: string, timeoutMs = 60000): Promise<Msg> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const i = await info(e);
    if (done(i)) return i;
    if (Date.now() > deadline) throw new Error(`${e.kind}: timed out waiting for ${what}: ${JSON.stringify(i)}\n${e.log().slice(-2000)}`);
    await delay(20);
  }
}

const finished = (e: End): Promise<Msg> => until(e, (i) => i.status === 'completed' || i.status === 'failed', 'the end of the migration');
/** A destination listens once query-migrate shows its socket-address (QEMU 7.2 and qmigd alike). */
const listening = (e: End): Promise<Msg> => until(e, (i) => 'socket-address' in i, 'the incoming socket');

/** The first event at or after `from` that satisfies `match`, polling the client's list. */
async function nextEvent(e: End, match: (ev: Msg) => boolean, from = 0, timeoutMs = 60000): Promise<Msg> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = e.qmp.events.slice(from).find(match);
    if (hit) return hit;
    if (e.qmp.closed || Date.now() > deadline) throw new Error(`${e.kind}: no matching event; last: ${JSON.stringify(e.qmp.events.slice(-5))}`);
    await delay(5);
  }
}
const isEvent = (name: string, data: Msg = {}) => (ev: Msg): boolean =>
  ev.event === name && Object.entries(data).every(([k, v]) => (ev.data as Msg | undefined)?.[k] === v);

const statuses = (e: End): string[] => e.qmp.events.filter((ev) => ev.event === 'MIGRATION').map((ev) => (ev.data as Msg).status as string);
/** Event names with the MIGRATION status, without MIGRATION_PASS (its count follows timing). */
const eventTrail = (e: End): string[] =>
  e.qmp.events.filter((ev) => ev.event !== 'MIGRATION_PASS').map((ev) => (ev.event === 'MIGRATION' ? `MIGRATION ${(ev.data as Msg).status as string}` : (ev.event as string)));

/** SHA-256 of the guest's RAM as pmemsave writes it. */
async function dumpSha(e: End, size: number): Promise<string> {
  const file = join(e.dir, `ram-${Date.now()}-${Math.random().toString(36).slice(2)}.dump`);
  await e.qmp.ok('pmemsave', { val: 0, size, filename: file });
  const sha = sha256(readFileSync(file));
  rmSync(file, { force: true });
  return sha;
}

/** The RAM's SHA-256: a pmemsave dump's, and on qmigd also its digest (which must agree). */
async function ramSha(t: Test, e: End, size: number): Promise<string> {
  const dumped = await dumpSha(e, size);
  if (e.kind === 'qmigd') {
    const digest = (await e.qmp.ok('__org.qmigd_query-ram-digest')) as { sha256: string; size: number };
    t.equal(digest.size, size, 'qmigd RAM size');
    t.equal(dumped, digest.sha256, 'qmigd pmemsave dump = its digest');
  }
  return dumped;
}

/** Both ends hold the same RAM (and `want`, the source's known content, when given). */
async function sameRam(t: Test, src: End, dst: End, size: number, want?: string): Promise<void> {
  const a = await ramSha(t, src, size);
  const b = await ramSha(t, dst, size);
  t.equal(b, a, `${dst.kind} destination RAM = ${src.kind} source RAM`);
  if (want) t.equal(a, want, 'equal to the source RAM image');
}

/**
 * A RAM image that mixes zero pages (`zeroPercent`, about), random pages, copies of one text-like
 * page with a few bytes changed, and zero pages with a few bytes set (the rest split 4:4:2).
 */
const images = new Map<string, { path: string; sha: string }>();
function mixedRam(size: number, zeroPercent = 50): { path: string; sha: string } {
  const key = `${size}-${zeroPercent}`;
  const have = images.get(key);
  if (have) return have;
  const buf = Buffer.alloc(size);
  const base = Buffer.alloc(PAGE);
  for (let i = 0; i < PAGE; i++) base[i] = 0x20 + ((i * 7) % 0x5f);
  const r = rng(0x2545f491 ^ size);
  const next = (): number => below(r, 2 ** 32);
  for (let p = 0; p < size / PAGE; p++) {
    const at = p * PAGE;
    const kind = next() % 100;
    if (kind < zeroPercent) continue;
    const rest = ((kind - zeroPercent) * 10) / (100 - zeroPercent);
    if (rest < 4) randomFillSync(buf, at, PAGE);
    else if (rest < 8) {
      base.copy(buf, at);
      buf.writeUInt32LE(p, at + (next() % (PAGE / 4)) * 4);
    } else buf.writeUInt32LE((next() | 1) >>> 0, at + (next() % (PAGE / 4)) * 4);
  }
  const path = join(work, `mixed-${key}.ram`);
  writeFileSync(path, buf);
  const image = { path, sha: sha256(buf) };
  images.set(key, image);
  return image;
}

async function migrationUri(transport: 'tcp' | 'unix', dir: string): Promise<string> {
  return transport === 'tcp' ? `tcp:127.0.0.1:${await freePort()}` : `unix:${join(dir, `mig-${Date.now()}.sock`)}`;
}

// ---------------------------------------------------------------------------------------------
// 1. Mixed RAM in both directions, over tcp: and unix:, with both ways of waiting for it.

const transfers: Array<{ src: Kind; dst: Kind; transport: 'tcp' | 'unix'; defer: boolean }> = [
  { src: 'qemu', dst: 'qmigd', transport: 'tcp', defer: true },
  { src: 'qemu', dst: 'qmigd', transport: 'unix', defer: false },
  { src: 'qmigd', dst: 'qemu', transport: 'tcp', defer: false },
  { src: 'qmigd', dst: 'qemu', transport: 'unix', defer: true },
];
for (const c of transfers) {
  const how = c.defer ? 'incoming defer + migrate-incoming' : 'a fixed incoming URI';
  t.test(`64 MiB of mixed RAM, ${c.src} → ${c.dst} over ${c.transport}:, ${how}`, { skip }, async (t) => {
    const size = 64 * MiB;
    const image = mixedRam(size);
    const uri = await migrationUri(c.transport, work);
    const dst = await start(t, c.dst, { size, incoming: c.defer ? 'defer' : uri });
    const src = await start(t, c.src, { size, ramFile: image.path });
    if (c.defer) await dst.qmp.ok('migrate-incoming', { uri });
    await listening(dst);
    await src.qmp.ok('migrate', { uri });
    const srcInfo = await finished(src);
    t.equal(srcInfo.status, 'completed', `source completed ${JSON.stringify(srcInfo)}`);
    t.equal((await finished(dst)).status, 'completed', 'destination completed');
    t.ok(ram(srcInfo).duplicate! > 0 && ram(srcInfo).normal! > 0, 'zero and normal pages went out');
    t.equal(await runState(src), 'postmigrate', 'source run state');
    t.equal(await runState(dst), 'running', 'destination run state');
    await sameRam(t, src, dst, size, image.sha);
  });
}

// ---------------------------------------------------------------------------------------------
// 2. XBZRLE on the sending side, over several passes while pages change.

t.test('xbzrle: a QEMU 7.2 source sends XBZRLE pages to qmigd over several passes', { skip }, async (t) => {
  const size = 4 * MiB;
  const BLOB_AT = 0x100000;
  const BLOB_PAGES = 4;
  const ramFile = join(work, 'xbzrle-src.ram');
  // Zero pages but two (each full page costs 1/4 s at this bandwidth), and the blob.
  const buf = Buffer.alloc(size);
  for (const p of [3, 700]) buf.writeUInt32LE(0xc0de0000 + p, p * PAGE + 64);
  writeFileSync(ramFile, buf);
  const blob = join(work, 'xbzrle.blob');
  writeFileSync(blob, randomBytes(BLOB_PAGES * PAGE));

  const uri = `tcp:127.0.0.1:${await freePort()}`;
  const dst = await start(t, 'qmigd', { size, incoming: 'defer' });
  const src = await start(t, 'qemu', {
    size, ramFile, share: true,
    qemuArgs: ['-device', `loader,file=${blob},addr=0x${BLOB_AT.toString(16)},force-raw=on`],
  });
  await caps(dst, ['events']);
  await caps(src, ['events', 'xbzrle', 'pause-before-switchover']);
  // 16 KiB/s: one page per 100 ms window, so a pass over the blob lasts ~400 ms and a rewrite made
  // at the start of a pass lands before most of its pages go; downtime-limit 1 ms: another pass
  // whenever a sync finds a dirty page.
  await src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 16384, 'downtime-limit': 1 });
  await dst.qmp.ok('migrate-incoming', { uri });

  const fd = openSync(ramFile, 'r+');
  t.teardown(() => closeSync(fd));
  /** system_reset puts the blob back and marks its pages dirty; then 2 KiB of each page change. */
  const rewrite = async (): Promise<void> => {
    const from = src.qmp.events.length;
    await src.qmp.ok('system_reset');
    await nextEvent(src, isEvent('RESET'), from);
    for (let p = 0; p < BLOB_PAGES; p++) writeSync(fd, randomBytes(2048), 0, 2048, BLOB_AT + p * PAGE + 1024);
  };

  await src.qmp.ok('migrate', { uri });
  const ROUNDS = 4;
  let rounds = 0;
  for (let pass = 1; pass <= ROUNDS; pass++) {
    const ev = await nextEvent(src, (ev) => isEvent('MIGRATION_PASS', { pass })(ev) || isEvent('MIGRATION', { status: 'pre-switchover' })(ev));
    if (ev.event === 'MIGRATION') break;
    await rewrite();
    rounds++;
  }
  await nextEvent(src, isEvent('MIGRATION', { status: 'pre-switchover' }));
  const before = await info(src);
  t.comment(`before switchover: ${rounds} rewrites, ${JSON.stringify({ passes: ram(before)['dirty-sync-count'], xbzrle: before['xbzrle-cache'] })}`);
  t.ok(ram(before)['dirty-sync-count']! >= 4, 'several passes before switchover');
  t.ok(xbzrle(before).pages! > 0 && xbzrle(before).bytes! > 0, 'XBZRLE pages in the passes before switchover');
  t.equal((await info(dst)).status, 'active', 'destination still loading');

  // The last change: reset (marks the blob dirty), then new bytes; the final pass must carry them.
  await rewrite();
  await src.qmp.ok('migrate-continue', { state: 'pre-switchover' });
  const end = await finished(src);
  t.equal(end.status, 'completed', 'source completed');
  t.equal((await finished(dst)).status, 'completed', 'destination completed');
  t.comment(`at the end: ${JSON.stringify({ passes: ram(end)['dirty-sync-count'], xbzrle: end['xbzrle-cache'] })}`);
  t.ok(xbzrle(end).pages! > 0 && xbzrle(end).bytes! > 0, 'xbzrle-cache.pages and .bytes > 0');
  t.ok(xbzrle(end).bytes! > xbzrle(before).bytes!, 'the final pass sent XBZRLE pages too');
  t.ok(xbzrle(end)['cache-miss']! > 0, 'pages went into the cache first');
  t.same(statuses(dst), ['setup', 'active', 'completed'], 'destination statuses');
  await sameRam(t, src, dst, size, sha256(readFileSync(ramFile)));
});

t.test('xbzrle: qmigd sends XBZRLE pages to QEMU 7.2 over several passes while its guest writes', { skip }, async (t) => {
  const size = 4 * MiB;
  const image = mixedRam(size, 90);
  const uri = `tcp:127.0.0.1:${await freePort()}`;
  const dst = await start(t, 'qemu', { size, incoming: 'defer' });
  // The guest rewrites its hottest 5% (52 pages) all the time, 16 bytes per write.
  const src = await start(t, 'qmigd', { size, ramFile: image.path, qmigdArgs: ['--dirty-rate', '256M', '--dirty-pattern', 'hot:5'] });
  await caps(dst, ['events']);
  await caps(src, ['events', 'xbzrle']);
  // 512 KiB/s and a 1 ms downtime: pass 1 takes about a second, pass 2 sends the hot pages whole
  // (cache misses), and from pass 3 on their XBZRLE deltas fill each 100 ms window, so it never
  // converges by itself.
  await src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 512 * 1024, 'downtime-limit': 1 });
  await dst.qmp.ok('migrate-incoming', { uri });
  await src.qmp.ok('migrate', { uri });
  const mid = await until(src, (i) => (i.status !== 'setup' && i.status !== 'active') || (ram(i)['dirty-sync-count']! >= 6 && xbzrle(i).bytes! > 0), 'XBZRLE passes');
  t.comment(`after several passes: ${JSON.stringify({ status: mid.status, passes: ram(mid)['dirty-sync-count'], xbzrle: mid['xbzrle-cache'] })}`);
  t.equal(mid.status, 'active', 'still iterating with XBZRLE pages');
  t.ok(xbzrle(mid).pages! > 0 && xbzrle(mid)['cache-miss']! > 0, 'cache misses first, then cache hits');
  // 52 pages at ~512 KiB/s fit in 10 s of downtime: the next window ends it.
  await src.qmp.ok('migrate-set-parameters', { 'downtime-limit': 10000 });
  const end = await finished(src);
  t.equal(end.status, 'completed', 'source completed');
  t.equal((await finished(dst)).status, 'completed', 'destination completed');
  t.comment(`at the end: ${JSON.stringify({ passes: ram(end)['dirty-sync-count'], xbzrle: end['xbzrle-cache'] })}`);
  t.ok(ram(end)['dirty-sync-count']! > ram(mid)['dirty-sync-count']!, 'a last pass after the change');
  t.ok(xbzrle(end).pages! > 0 && xbzrle(end).bytes! > 0, 'xbzrle-cache.pages and .bytes > 0');
  t.equal(await runState(src), 'postmigrate', 'source run state');
  await sameRam(t, src, dst, size);
});

// ---------------------------------------------------------------------------------------------
// 3. The return path, recorded by a proxy between the ends.

interface Recording {
  port: number;
  toDst: () => Buffer;
  toSrc: () => Buffer;
  /** Both sides of the one proxied connection have closed. */
  closed: Promise<void>;
}

/** A TCP proxy to 127.0.0.1:`target` that records both directions of its one connection. */
async function recordingProxy(t: Test, target: number): Promise<Recording> {
  const toDst: Buffer[] = [];
  const toSrc: Buffer[] = [];
  let closedNow!: () => void;
  const closed = new Promise<void>((r) => (closedNow = r));
  const sockets: net.Socket[] = [];
  const server = net.createServer((a) => {
    const b = net.connect({ host: '127.0.0.1', port: target });
    sockets.push(a, b);
    a.on('data', (d: Buffer) => toDst.push(d));
    b.on('data', (d: Buffer) => toSrc.push(d));
    a.pipe(b);
    b.pipe(a);
    let open = 2;
    const gone = (): void => void (--open === 0 && closedNow());
    a.on('close', gone);
    b.on('close', gone);
    a.on('error', () => b.destroy());
    b.on('error', () => a.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    sockets.forEach((s) => s.destroy());
    server.close();
  });
  return { port: (server.address() as net.AddressInfo).port, toDst: () => Buffer.concat(toDst), toSrc: () => Buffer.concat(toSrc), closed };
}

async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer!: NodeJS.Timeout;
  const timeout = new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`timed out: ${what}`)), ms)));
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// Header (8 bytes) and the configuration section for `none` (9 bytes), then the commands.
const OPEN_RETURN_PATH_AND_PING = Buffer.from('08' + '0001' + '0000' + '08' + '0002' + '0004' + '00000001', 'hex');
const PONG_AND_SHUT = Buffer.from('0002' + '0004' + '00000001' + '0001' + '0004' + '00000000', 'hex');

for (const [srcKind, dstKind] of [['qemu', 'qmigd'], ['qmigd', 'qemu']] as Array<[Kind, Kind]>) {
  t.test(`return-path: ${srcKind} → ${dstKind}`, { skip }, async (t) => {
    const size = 16 * MiB;
    const image = mixedRam(size);
    const port = await freePort();
    const dst = await start(t, dstKind, { size, incoming: 'defer' });
    const src = await start(t, srcKind, { size, ramFile: image.path });
    for (const e of [src, dst]) await caps(e, ['events', 'return-path']);
    await dst.qmp.ok('migrate-incoming', { uri: `tcp:127.0.0.1:${port}` });
    await listening(dst);
    const proxy = await recordingProxy(t, port);
    await src.qmp.ok('migrate', { uri: `tcp:127.0.0.1:${proxy.port}` });
    t.equal((await finished(src)).status, 'completed', 'source completed');
    t.equal((await finished(dst)).status, 'completed', 'destination completed');
    await within(proxy.closed, 10000, 'both ends close the migration connection');
    const down = proxy.toDst();
    t.equal(down.subarray(0, 4).toString('latin1'), 'QEVM', 'a migration stream');
    t.same(down.subarray(0x11, 0x11 + OPEN_RETURN_PATH_AND_PING.length), OPEN_RETURN_PATH_AND_PING, `${srcKind} sends OPEN_RETURN_PATH and PING(1) after the configuration`);
    t.same(proxy.toSrc(), PONG_AND_SHUT, `${dstKind} answers PONG(1) and SHUT(0), nothing else`);
    await sameRam(t, src, dst, size, image.sha);
  });
}

// ---------------------------------------------------------------------------------------------
// 4. pause-before-switchover and migrate-continue on the sending side.

for (const [srcKind, dstKind] of [['qemu', 'qmigd'], ['qmigd', 'qemu']] as Array<[Kind, Kind]>) {
  t.test(`pause-before-switchover: ${srcKind} → ${dstKind} waits in pre-switchover for migrate-continue`, { skip }, async (t) => {
    const size = 16 * MiB;
    const image = mixedRam(size);
    const uri = `unix:${join(work, `pbs-${srcKind}.sock`)}`;
    const dst = await start(t, dstKind, { size, incoming: uri });
    // A qmigd guest keeps writing until it is stopped for the switchover.
    const src = await start(t, srcKind, { size, ramFile: image.path, qmigdArgs: ['--dirty-rate', '8M'] });
    await caps(src, ['events', 'pause-before-switchover']);
    await caps(dst, ['events']);
    await listening(dst);
    t.match(await src.qmp.cmd('migrate-continue', { state: 'pre-switchover' }), { error: { class: 'GenericError', desc: 'Migration not in expected state: none' } });
    await src.qmp.ok('migrate', { uri });
    await nextEvent(src, isEvent('MIGRATION', { status: 'pre-switchover' }));
    const paused = await info(src);
    t.equal(paused.status, 'pre-switchover');
    t.equal(await runState(src), 'finish-migrate', 'the source guest is stopped');
    t.ok(src.qmp.events.some(isEvent('STOP')), 'STOP announced');
    t.equal((await info(dst)).status, 'active', 'the destination is still loading');
    t.equal(await runState(dst), 'inmigrate', 'the destination guest waits');
    t.match(await src.qmp.cmd('migrate-continue', { state: 'active' }), { error: { class: 'GenericError', desc: 'Migration not in expected state: pre-switchover' } });
    t.equal((await info(src)).status, 'pre-switchover', 'a wrong state does not release it');
    await src.qmp.ok('migrate-continue', { state: 'pre-switchover' });
    t.equal((await finished(src)).status, 'completed', 'source completed');
    t.equal((await finished(dst)).status, 'completed', 'destination completed');
    t.same(statuses(src), ['setup', 'active', 'pre-switchover', 'device', 'completed'], 'source statuses');
    t.equal(await runState(src), 'postmigrate', 'source run state');
    t.equal(await runState(dst), 'running', 'destination run state');
    await sameRam(t, src, dst, size, srcKind === 'qemu' ? image.sha : undefined);
  });
}

// ---------------------------------------------------------------------------------------------
// 5. The events both ends announce, against a QEMU → QEMU run of the same scenario.

interface Scenario {
  name: string;
  srcCaps: string[];
  dstCaps: string[];
  pause?: boolean;
  /** The destination stays paused after the migration (-S). */
  dstPaused?: boolean;
}

const scenarios: Scenario[] = [
  { name: 'plain', srcCaps: ['events'], dstCaps: ['events'] },
  { name: 'pause-before-switchover', srcCaps: ['events', 'pause-before-switchover'], dstCaps: ['events'], pause: true },
  { name: 'return-path and xbzrle', srcCaps: ['events', 'return-path', 'xbzrle'], dstCaps: ['events', 'return-path'] },
  { name: 'events off on both ends', srcCaps: [], dstCaps: [] },
  { name: 'events on the source only, destination -S', srcCaps: ['events'], dstCaps: [], dstPaused: true },
];

/** Keys and value types of a query-migrate answer, recursively. */
function shape(v: unknown): unknown {
  if (v === null || typeof v !== 'object') return typeof v;
  if (Array.isArray(v)) return v.map(shape);
  return Object.fromEntries(Object.entries(v).sort(([a], [b]) => a.localeCompare(b)).map(([k, x]) => [k, shape(x)]));
}

interface Observed {
  src: { statuses: string[]; events: string[]; state: string; info: unknown; paused?: unknown };
  dst: { statuses: string[]; events: string[]; state: string; info: unknown; paused?: unknown };
}

async function observe(t: Test, s: Scenario, srcKind: Kind, dstKind: Kind): Promise<Observed> {
  const size = 16 * MiB;
  const image = mixedRam(size);
  const uri = `tcp:127.0.0.1:${await freePort()}`;
  const dst = await start(t, dstKind, { size, incoming: 'defer', qemuArgs: s.dstPaused ? ['-S'] : [], qmigdArgs: s.dstPaused ? ['-S'] : [] });
  const src = await start(t, srcKind, { size, ramFile: image.path });
  if (s.srcCaps.length) await caps(src, s.srcCaps);
  if (s.dstCaps.length) await caps(dst, s.dstCaps);
  await dst.qmp.ok('migrate-incoming', { uri });
  await listening(dst);
  await src.qmp.ok('migrate', { uri });
  let pausedSrc: unknown;
  let pausedDst: unknown;
  if (s.pause) {
    const i = await until(src, (i) => i.status === 'pre-switchover', 'pre-switchover');
    pausedSrc = shape(i);
    pausedDst = shape(await info(dst));
    await src.qmp.ok('migrate-continue', { state: 'pre-switchover' });
  }
  const srcInfo = await finished(src);
  const dstInfo = await finished(dst);
  t.equal(srcInfo.status, 'completed', `${srcKind} → ${dstKind}: source completed`);
  t.equal(dstInfo.status, 'completed', `${srcKind} → ${dstKind}: destination completed`);
  const srcState = await runState(src);
  const dstState = await runState(dst);
  await sameRam(t, src, dst, size, image.sha);
  return {
    src: { statuses: statuses(src), events: eventTrail(src), state: srcState, info: shape(srcInfo), paused: pausedSrc },
    dst: { statuses: statuses(dst), events: eventTrail(dst), state: dstState, info: shape(dstInfo), paused: pausedDst },
  };
}

for (const s of scenarios) {
  t.test(`events, ${s.name}: qmigd announces what QEMU 7.2 announces in its place`, { skip }, async (t) => {
    const runs = new Map<string, Observed>();
    for (const [src, dst] of [['qemu', 'qemu'], ['qmigd', 'qemu'], ['qemu', 'qmigd']] as Array<[Kind, Kind]>) {
      await t.test(`${src} → ${dst}`, async (t) => {
        runs.set(`${src} → ${dst}`, await observe(t, s, src, dst));
      });
    }
    const ref = runs.get('qemu → qemu');
    if (!ref || runs.size < 3) return void t.fail('a run did not complete; nothing to compare');
    t.comment(`QEMU → QEMU: source ${JSON.stringify(ref.src.events)}, destination ${JSON.stringify(ref.dst.events)}`);
    for (const [pair, side] of [['qmigd → qemu', 'src'], ['qemu → qmigd', 'dst']] as Array<[string, 'src' | 'dst']>) {
      const got = runs.get(pair)!;
      const who = side === 'src' ? 'qmigd as the source' : 'qmigd as the destination';
      t.same(got[side].statuses, ref[side].statuses, `${who}: MIGRATION statuses`);
      t.same(got[side].events, ref[side].events, `${who}: events (without MIGRATION_PASS) in order`);
      t.equal(got[side].state, ref[side].state, `${who}: run state afterwards`);
      t.same(got[side].info, ref[side].info, `${who}: query-migrate fields at the end`);
      if (s.pause) t.same(got[side].paused, ref[side].paused, `${who}: query-migrate fields in pre-switchover`);
      // The QEMU end facing qmigd behaves as it does facing QEMU.
      const other = side === 'src' ? 'dst' : 'src';
      t.same(got[other].statuses, ref[other].statuses, `${pair}: the QEMU end's MIGRATION statuses`);
      t.same(got[other].events, ref[other].events, `${pair}: the QEMU end's events`);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// 6. Counters that do not depend on timing: a zero RAM goes out as one START, one PART and one
// END section on both, so ram.transferred must be the same number of bytes.

// 7.2's ram_save_iterate() counts the 8-byte EOS that ends each PART section as transferred.
t.test('ram.transferred and precopy-bytes count what QEMU 7.2 counts for the same stream', { skip }, async (t) => {
  const size = 16 * MiB;
  const seen: Record<string, { paused: Record<string, number>; end: Record<string, number> }> = {};
  for (const kind of ['qemu', 'qmigd'] as Kind[]) {
    await t.test(`${kind} → qemu`, async (t) => {
      const uri = `tcp:127.0.0.1:${await freePort()}`;
      const dst = await start(t, 'qemu', { size, incoming: 'defer' });
      const src = await start(t, kind, { size });
      await caps(src, ['pause-before-switchover']);
      await dst.qmp.ok('migrate-incoming', { uri });
      await src.qmp.ok('migrate', { uri });
      const paused = ram(await until(src, (i) => i.status === 'pre-switchover', 'pre-switchover'));
      await src.qmp.ok('migrate-continue', { state: 'pre-switchover' });
      const end = await finished(src);
      t.equal(end.status, 'completed');
      t.equal((await finished(dst)).status, 'completed');
      seen[kind] = { paused, end: ram(end) };
    });
  }
  const { qemu, qmigd } = seen as Record<Kind, { paused: Record<string, number>; end: Record<string, number> }>;
  t.comment(`QEMU: transferred ${qemu.paused.transferred} in pre-switchover, ${qemu.end.transferred} at the end; qmigd: ${qmigd.paused.transferred}, ${qmigd.end.transferred}`);
  t.equal(qmigd.end.duplicate, qemu.end.duplicate, 'duplicate');
  t.equal(qmigd.end.normal, qemu.end.normal, 'normal');
  t.equal(qmigd.paused.transferred, qemu.paused.transferred, 'transferred in pre-switchover');
  t.equal(qmigd.end.transferred, qemu.end.transferred, 'transferred at the end');
  t.equal(qmigd.end['precopy-bytes'], qemu.end['precopy-bytes'], 'precopy-bytes at the end');
});

// ---------------------------------------------------------------------------------------------
// 7. multifd with 2 channels, both directions: QEMU's channel greeting, packets and SYNCs.

for (const [srcKind, dstKind] of [['qemu', 'qmigd'], ['qmigd', 'qemu'], ['qmigd', 'qmigd']] as Array<[Kind, Kind]>) {
  t.test(`multifd, 2 channels: ${srcKind} → ${dstKind}`, { skip }, async (t) => {
    const size = 64 * MiB;
    const image = mixedRam(size);
    const uri = await migrationUri('tcp', work);
    const dst = await start(t, dstKind, { size, incoming: 'defer' });
    const src = await start(t, srcKind, { size, ramFile: image.path });
    for (const e of [src, dst]) {
      await caps(e, ['multifd', 'events']);
      await e.qmp.ok('migrate-set-parameters', { 'multifd-channels': 2 });
    }
    await src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 1 << 30 });
    await dst.qmp.ok('migrate-incoming', { uri });
    await listening(dst);
    await src.qmp.ok('migrate', { uri });
    const srcInfo = await finished(src);
    t.equal(srcInfo.status, 'completed', `source completed ${JSON.stringify(srcInfo)}`);
    t.equal((await finished(dst)).status, 'completed', 'destination completed');
    t.ok(ram(srcInfo)['multifd-bytes']! > 0, 'pages went over the multifd channels');
    t.same(statuses(src), ['setup', 'active', 'completed']);
    await sameRam(t, src, dst, size, image.sha);
  });
}
