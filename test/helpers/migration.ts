/**
 * Two real qmigd processes, a source and a destination waiting on a loopback port, each with a
 * negotiated QMP client, plus waits on migration events (the tests turn the events capability on).
 */
import { join } from 'node:path';
import type { Test } from 'tap';
import { writeRandomFile } from '../../src/cli/migration-pair.js';
import { freePort, startDaemon, tempDir, type RunningDaemon } from './daemon.js';
import { QmpClient, type Msg } from './qmp-client.js';

export interface Side {
  daemon: RunningDaemon;
  qmp: QmpClient;
}

export interface Pair {
  src: Side;
  dst: Side;
  uri: string;
  stop: () => Promise<void>;
}

/** A file of `bytes` random bytes, for --memory-file. */
export async function randomRamFile(bytes: number): Promise<string> {
  const path = join(tempDir(), 'ram.bin');
  await writeRandomFile(path, bytes);
  return path;
}

export async function side(args: string[]): Promise<Side> {
  const daemon = await startDaemon(args);
  const qmp = await QmpClient.at(daemon.listening[0]!);
  await qmp.negotiate();
  return { daemon, qmp };
}

export async function startPair(opts: { memory: string; srcArgs?: string[]; dstArgs?: string[]; events?: boolean }): Promise<Pair> {
  const port = await freePort();
  const uri = `tcp:127.0.0.1:${port}`;
  const dst = await side(['-m', opts.memory, '--incoming', uri, ...(opts.dstArgs ?? [])]);
  const src = await side(['-m', opts.memory, ...(opts.srcArgs ?? [])]);
  if (opts.events !== false) {
    for (const s of [src, dst]) await s.qmp.ok('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
  }
  return {
    src, dst, uri,
    async stop() {
      src.qmp.close();
      dst.qmp.close();
      await Promise.all([src.daemon.stop(), dst.daemon.stop()]);
    },
  };
}

export async function setCaps(s: Side, caps: Record<string, boolean>): Promise<void> {
  await s.qmp.ok('migrate-set-capabilities', { capabilities: Object.entries(caps).map(([capability, state]) => ({ capability, state })) });
}

/** Waits for MIGRATION {status} (events capability on). */
export function migrationStatus(s: Side, status: string, from = 0): Promise<Msg> {
  return s.qmp.waitEvent('MIGRATION', (d) => d.status === status, from);
}

/** The statuses announced so far, in order. */
export function statuses(s: Side): string[] {
  return s.qmp.events.filter((e) => e.event === 'MIGRATION').map((e) => (e.data as Msg).status as string);
}

export async function digest(s: Side): Promise<string> {
  // SHA-256 of a multi-GiB guest on a busy 2-core machine can take longer than a command's 10 s.
  return ((await s.qmp.ok('__org.qmigd_query-ram-digest', undefined, 120000)) as { sha256: string }).sha256;
}

export async function runState(s: Side): Promise<string> {
  return ((await s.qmp.ok('query-status')) as { status: string }).status;
}

/** Polls `probe` until `done(value)`: for conditions no event announces. */
export async function until<T>(probe: () => Promise<T>, done: (v: T) => boolean, what: string, timeoutMs = 60000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (done(v)) return v;
    if (Date.now() > deadline) throw new Error(`${what} never came: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Polls query-migrate until `done(info)`. */
export function untilInfo(s: Side, done: (info: Msg) => boolean, timeoutMs = 60000): Promise<Msg> {
  return until(async () => (await s.qmp.ok('query-migrate')) as Msg, done, 'the query-migrate condition', timeoutMs);
}

/** A healthy destination for a migration after a fault (tests of src/faults): it must end with `ram`. */
export async function migratesAfter(t: Test, src: Side, memory: string, ram: string, dstArgs: string[] = []): Promise<void> {
  const uri = `tcp:127.0.0.1:${await freePort()}`;
  const dst = await side(['-m', memory, '--incoming', uri, ...dstArgs]);
  t.teardown(() => dst.daemon.stop());
  await setCaps(dst, { events: true });
  await src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
  const from = src.qmp.events.length;
  await src.qmp.ok('migrate', { uri });
  await migrationStatus(src, 'completed', from);
  await migrationStatus(dst, 'completed');
  t.equal(await digest(dst), ram, 'a later migration to a healthy destination brings the RAM whole');
}

/**
 * Two daemons with random RAM, return-path on both and pause-before-switchover on the source,
 * migrating until the source waits in pre-switchover; and the source RAM's digest.
 */
export async function pairInPreSwitchover(t: Test, memory: string, srcArgs: string[] = [], dstArgs: string[] = []): Promise<{ p: Pair; ram: string }> {
  const ramFile = await randomRamFile(parseInt(memory, 10) << 20);
  const p = await startPair({ memory, srcArgs: ['--memory-file', ramFile, ...srcArgs], dstArgs });
  t.teardown(p.stop);
  const ram = await digest(p.src);
  await setCaps(p.dst, { 'return-path': true });
  await setCaps(p.src, { 'return-path': true, 'pause-before-switchover': true });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  await migrationStatus(p.src, 'pre-switchover');
  return { p, ram };
}
