/**
 * The two ends of a migration between qmigd and a real QEMU of one release: each a process with a
 * negotiated QMP client, stopped when the test ends; RAM compared by pmemsave dumps (and qmigd's
 * digest); a proxy that records both directions of a migration connection. The QEMU end is that
 * release's binary (QEMU_OF), the qmigd end runs with that release's profile (--qemu-version).
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { closeSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import type t from 'tap';
import type { ProfileId } from '../../src/profiles/index.js';
import { BIN, freePort, startDaemon, tempDir } from './daemon.js';
import { startQemu } from './qemu.js';
import { QmpClient, type Msg } from './qmp-client.js';
import { below, rng } from './rng.js';

/** A test object as tap passes it to a subtest callback. */
export type Test = Parameters<Parameters<typeof t.test>[0]>[0];
export type Kind = 'qemu' | 'qmigd';

export const MiB = 1 << 20;
const PAGE = 4096;
export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
export const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface End {
  kind: Kind;
  release: ProfileId;
  qmp: QmpClient;
  dir: string;
  log: () => string;
  /** Kills the process (SIGKILL) on purpose: the test is not failed for its exit. */
  kill: () => void;
  /** The process (QEMU's, or qmigd's), for what /proc says of it. */
  pid: number;
}

export interface EndOptions {
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
 * A QMP client of the monitor at `socket`, retried until it is taken (a QEMU binds its socket a
 * moment before it listens) while `alive()`, for `timeoutMs`.
 */
export async function connectQmp(socket: string, alive: () => boolean, log: () => string, timeoutMs = 10000): Promise<QmpClient> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await QmpClient.unix(socket);
    } catch (err) {
      if (!alive() || Date.now() > deadline) throw new Error(`no QMP greeting from QEMU (${(err as Error).message}): ${log()}`);
      await delay(20);
    }
  }
}

/** Starts an end of `release`; it is stopped when `t` ends. Its RAM block is `m` on both kinds. */
export async function startEnd(t: Test, kind: Kind, release: ProfileId, o: EndOptions): Promise<End> {
  if (kind === 'qemu') {
    const backend = o.ramFile
      ? `memory-backend-file,id=m,size=${o.size},mem-path=${o.ramFile}${o.share ? ',share=on' : ''}`
      : `memory-backend-ram,id=m,size=${o.size}`;
    const q = await startQemu([
      '-M', 'none,memory-backend=m', '-object', backend, '-m', `${o.size / MiB}M`,
      ...(o.incoming ? ['-incoming', o.incoming] : []), ...(o.qemuArgs ?? []),
    ], { release });
    let log = '';
    q.proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    let stopping = false;
    q.proc.on('exit', (code, signal) => {
      if (!stopping) t.fail(`QEMU ${release} exited unexpectedly (code ${code}, signal ${signal})`, { log });
    });
    t.teardown(() => {
      stopping = true;
      return q.stop();
    });
    const qmp = await connectQmp(q.socket, () => q.proc.exitCode === null && q.proc.signalCode === null, () => log);
    t.teardown(() => qmp.close());
    await qmp.negotiate();
    const dir = tempDir();
    const kill = (): void => {
      stopping = true;
      q.proc.kill('SIGKILL');
    };
    return { kind, release, qmp, dir, log: () => log, kill, pid: q.proc.pid! };
  }
  const d = await startDaemon([
    '--qemu-version', release, '-m', String(o.size), '--ram-id', 'm', ...(o.ramFile ? ['--memory-file', o.ramFile] : []),
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
  const kill = (): void => {
    stopping = true;
    d.proc.kill('SIGKILL');
  };
  return { kind, release, qmp, dir: d.dir, log: d.stderr, kill, pid: d.proc.pid! };
}

export const caps = (e: End, names: string[], state = true): Promise<unknown> =>
  e.qmp.ok('migrate-set-capabilities', { capabilities: names.map((capability) => ({ capability, state })) });
export const info = async (e: End): Promise<Msg> => (await e.qmp.ok('query-migrate')) as Msg;
export const runState = async (e: End): Promise<string> => ((await e.qmp.ok('query-status')) as { status: string }).status;
export const ramInfo = (i: Msg): Record<string, number> => (i.ram ?? {}) as Record<string, number>;
export const xbzrleInfo = (i: Msg): Record<string, number> => (i['xbzrle-cache'] ?? {}) as Record<string, number>;

/** Polls query-migrate every 20 ms until `done(info)`. */
export async function until(e: End, done: (i: Msg) => boolean, what: string, timeoutMs = 60000): Promise<Msg> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const i = await info(e);
    if (done(i)) return i;
    if (Date.now() > deadline) throw new Error(`${e.kind}: timed out waiting for ${what}: ${JSON.stringify(i)}\n${e.log().slice(-2000)}`);
    await delay(20);
  }
}

/**
 * Until a qmigd destination with --page-thread on says its load thread is up: one that is not yet
 * up when the sections come loads them on the main thread (a QEMU source may start at once).
 */
export async function loadThreadReady(e: Pick<End, 'kind' | 'log'>, timeoutMs = 30000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!e.log().includes('load thread ready for the incoming migration')) {
    if (Date.now() > deadline) throw new Error(`${e.kind}: no load thread came up: ${e.log().slice(-2000)}`);
    await delay(20);
  }
}

export const finished = (e: End): Promise<Msg> => until(e, (i) => i.status === 'completed' || i.status === 'failed', 'the end of the migration');
/** A destination listens once query-migrate shows its socket-address. */
export const listening = (e: End): Promise<Msg> => until(e, (i) => 'socket-address' in i, 'the incoming socket');

/** The first event at or after `from` that satisfies `match`, polling the client's list. */
export async function nextEvent(e: End, match: (ev: Msg) => boolean, from = 0, timeoutMs = 60000): Promise<Msg> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = e.qmp.events.slice(from).find(match);
    if (hit) return hit;
    if (e.qmp.closed || Date.now() > deadline) throw new Error(`${e.kind}: no matching event; last: ${JSON.stringify(e.qmp.events.slice(-5))}`);
    await delay(5);
  }
}
export const isEvent = (name: string, data: Msg = {}) => (ev: Msg): boolean =>
  ev.event === name && Object.entries(data).every(([k, v]) => (ev.data as Msg | undefined)?.[k] === v);
export const statuses = (e: End): string[] => e.qmp.events.filter((ev) => ev.event === 'MIGRATION').map((ev) => (ev.data as Msg).status as string);
/** Event names with the MIGRATION status, without MIGRATION_PASS (its count follows timing). */
export const eventTrail = (e: End): string[] =>
  e.qmp.events.filter((ev) => ev.event !== 'MIGRATION_PASS').map((ev) => (ev.event === 'MIGRATION' ? `MIGRATION ${(ev.data as Msg).status as string}` : (ev.event as string)));

/** The RAM's SHA-256: a pmemsave dump's, and on qmigd also its digest (which must agree). */
export async function ramSha(t: Test, e: End, size: number): Promise<string> {
  const file = join(e.dir, `ram-${Date.now()}-${Math.random().toString(36).slice(2)}.dump`);
  await e.qmp.ok('pmemsave', { val: 0, size, filename: file });
  const dumped = sha256(readFileSync(file));
  rmSync(file, { force: true });
  if (e.kind === 'qmigd') {
    const digest = (await e.qmp.ok('__org.qmigd_query-ram-digest')) as { sha256: string; size: number };
    t.equal(digest.size, size, 'qmigd RAM size');
    t.equal(dumped, digest.sha256, 'qmigd pmemsave dump = its digest');
  }
  return dumped;
}

/** Both ends hold the same RAM (and `want`, the source's known content, when given). */
export async function sameRam(t: Test, src: End, dst: End, size: number, want?: string): Promise<void> {
  const a = await ramSha(t, src, size);
  const b = await ramSha(t, dst, size);
  t.equal(b, a, `${dst.kind} destination RAM = ${src.kind} source RAM`);
  if (want) t.equal(a, want, 'equal to the source RAM image');
}

/**
 * A RAM image that mixes zero pages (`zeroPercent`, about), random pages, copies of one text-like
 * page with a few bytes changed, and zero pages with a few bytes set; written once per size.
 */
const images = new Map<string, { path: string; sha: string }>();
export function mixedRam(size: number, zeroPercent = 50): { path: string; sha: string } {
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
  const path = join(tempDir(), `mixed-${key}.ram`);
  writeFileSync(path, buf);
  const image = { path, sha: sha256(buf) };
  images.set(key, image);
  return image;
}

export interface Recording {
  port: number;
  /** What the first connection carried towards the destination, and back. */
  toDst: () => Buffer;
  toSrc: () => Buffer;
  /** Towards the destination on the connection that opens with QEMU_VM_FILE_MAGIC ("QEVM"): the main channel, whichever connection it is (multifd channels open with their own magic). */
  mainToDst: () => Buffer;
  /** Towards the destination on each connection, in the order they came. */
  allToDst: () => Buffer[];
  /** Both sides of the first proxied connection have closed. */
  closed: Promise<void>;
  /** The network fails: every proxied connection is reset, both ways. */
  cut: () => void;
}

/** A TCP proxy to 127.0.0.1:`target` that records both directions of each connection. */
export async function recordingProxy(t: Test, target: number): Promise<Recording> {
  const conns: Array<{ toDst: Buffer[]; toSrc: Buffer[] }> = [];
  let closedNow!: () => void;
  const closed = new Promise<void>((r) => (closedNow = r));
  const sockets: net.Socket[] = [];
  const server = net.createServer((a) => {
    const first = conns.length === 0;
    const rec = { toDst: [] as Buffer[], toSrc: [] as Buffer[] };
    conns.push(rec);
    const b = net.connect({ host: '127.0.0.1', port: target });
    sockets.push(a, b);
    a.on('data', (d: Buffer) => rec.toDst.push(d));
    b.on('data', (d: Buffer) => rec.toSrc.push(d));
    a.pipe(b);
    b.pipe(a);
    let open = 2;
    const gone = (): void => void (--open === 0 && first && closedNow());
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
  const joined = (i: number, way: 'toDst' | 'toSrc'): Buffer => Buffer.concat(conns[i]?.[way] ?? []);
  return {
    port: (server.address() as net.AddressInfo).port,
    toDst: () => joined(0, 'toDst'),
    toSrc: () => joined(0, 'toSrc'),
    mainToDst: () => conns.map((_, i) => joined(i, 'toDst')).find((b) => b.subarray(0, 4).toString('latin1') === 'QEVM') ?? Buffer.alloc(0),
    allToDst: () => conns.map((_, i) => joined(i, 'toDst')),
    closed,
    cut: () => sockets.forEach((s) => s.resetAndDestroy()),
  };
}

export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer!: NodeJS.Timeout;
  const timeout = new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`timed out: ${what}`)), ms)));
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The commands of a recorded stream in order (name by number), found by walking its framing up to
 * the first RAM section: what a source sends before RAM (OPEN_RETURN_PATH, PING, ...).
 */
export function commandsBeforeRam(stream: Buffer): string[] {
  const out: string[] = [];
  let at = 8 + 1 + 4 + stream.readUInt32BE(9);
  while (at + 5 <= stream.length && stream[at] === 0x08) {
    const len = stream.readUInt16BE(at + 3);
    out.push(`${stream.readUInt16BE(at + 1)}:${stream.subarray(at + 5, at + 5 + len).toString('hex')}`);
    at += 5 + len;
  }
  return out;
}

/**
 * A stream's outline as `qmigd inspect --qemu-version RELEASE` decodes it: section kinds with their
 * device, and commands, in order, runs of PART sections (their number follows timing) once; how
 * many PART sections and MULTIFD_FLUSH records (the multifd channels' syncs, 8.1+) there are,
 * both of which follow timing; and how many bytes the stream took, up to the end of its VM
 * description. `stream` is the stream's bytes, or a file's path (mapped-ram's files need it) and
 * where in the file it starts.
 */
export function outline(stream: Buffer | { path: string; offset: number }, release: ProfileId): { items: string[]; parts: number; flushes: number; bytes: number } {
  const [file, input] = Buffer.isBuffer(stream) ? [['-'], stream] : [[stream.path, '--offset', String(stream.offset)], undefined];
  const r = spawnSync(process.execPath, [BIN, 'inspect', '--qemu-version', release, ...file], { input, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) return { items: [`inspect failed: ${r.stdout.split('\n').filter((l) => /^(error|\s)/.test(l)).join(' ')}`], parts: -1, flushes: -1, bytes: -1 };
  const items: string[] = [];
  let parts = 0;
  for (const line of r.stdout.split('\n')) {
    const m = /^0x[0-9a-f]{8} {2}(\S+)\s+(.*)$/.exec(line);
    if (!m) continue;
    if (m[1] === 'PART') parts++;
    const item = `${m[1]} ${m[2]!.replace(/\(section \d+.*\)$/, '').trim()}`;
    if (item !== items[items.length - 1] || !item.startsWith('PART')) items.push(item);
  }
  const flushes = Number(/^\d+ bytes: .*RAM records: .*?(\d+) MULTIFD_FLUSH/m.exec(r.stdout)?.[1] ?? 0);
  return { items, parts, flushes, bytes: Number(/^(\d+) bytes: /m.exec(r.stdout)?.[1] ?? -1) };
}

/**
 * A CPU-less QEMU source whose RAM changes between passes sends XBZRLE pages to a qmigd of its
 * release: the RAM is a share=on file the test writes into (unseen by dirty logging), and a
 * `-device loader` blob that system_reset rewrites marks its pages dirty; the last change is made
 * in pre-switchover, so the final pass carries it. `work`: a directory for the images.
 */
export async function xbzrleFromQemu(t: Test, release: ProfileId, work: string): Promise<void> {
  const PAGE = 4096;
  const size = 4 * MiB;
  const BLOB_AT = 0x100000;
  const BLOB_PAGES = 4;
  const ramFile = join(work, `xbzrle-src-${release}.ram`);
  // Zero pages but two (each full page costs 1/4 s at this bandwidth), and the blob.
  const buf = Buffer.alloc(size);
  for (const p of [3, 700]) buf.writeUInt32LE(0xc0de0000 + p, p * PAGE + 64);
  writeFileSync(ramFile, buf);
  const blob = join(work, `xbzrle-${release}.blob`);
  writeFileSync(blob, randomBytes(BLOB_PAGES * PAGE));

  const uri = `tcp:127.0.0.1:${await freePort()}`;
  const dst = await startEnd(t, 'qmigd', release, { size, incoming: 'defer' });
  const src = await startEnd(t, 'qemu', release, {
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
  t.comment(`before switchover: ${rounds} rewrites, ${JSON.stringify({ passes: ramInfo(before)['dirty-sync-count'], xbzrle: before['xbzrle-cache'] })}`);
  t.ok(ramInfo(before)['dirty-sync-count']! >= 4, 'several passes before switchover');
  t.ok(xbzrleInfo(before).pages! > 0 && xbzrleInfo(before).bytes! > 0, 'XBZRLE pages in the passes before switchover');
  t.equal((await info(dst)).status, 'active', 'destination still loading');

  // The last change: reset (marks the blob dirty), then new bytes; the final pass must carry them.
  await rewrite();
  await src.qmp.ok('migrate-continue', { state: 'pre-switchover' });
  const end = await finished(src);
  t.equal(end.status, 'completed', 'source completed');
  t.equal((await finished(dst)).status, 'completed', 'destination completed');
  t.comment(`at the end: ${JSON.stringify({ passes: ramInfo(end)['dirty-sync-count'], xbzrle: end['xbzrle-cache'] })}`);
  t.ok(xbzrleInfo(end).pages! > 0 && xbzrleInfo(end).bytes! > 0, 'xbzrle-cache.pages and .bytes > 0');
  t.ok(xbzrleInfo(end).bytes! > xbzrleInfo(before).bytes!, 'the final pass sent XBZRLE pages too');
  t.ok(xbzrleInfo(end)['cache-miss']! > 0, 'pages went into the cache first');
  t.same(statuses(dst), ['setup', 'active', 'completed'], 'destination statuses');
  await sameRam(t, src, dst, size, sha256(readFileSync(ramFile)));
}
