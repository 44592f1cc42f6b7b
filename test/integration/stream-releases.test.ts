/**
 * Each profile loads and refuses streams as its own QEMU does: the QEMU 7.2 and 10.0 vectors, and
 * streams made from the 10.0 vector with what 10.0 added or checks differently (SWITCHOVER_START
 * with a bad length, a command past 10.0's last, globalstate's shorter run-state field), go to a
 * real QEMU destination of each release and to a qmigd destination with that release's profile,
 * both with `-incoming exec:cat FILE`. The outcome must be the same: loaded into the same RAM
 * (and the RAM of expected.json), or refused with the same lines. Nothing here is written down in
 * advance but the vectors' digests; a release whose QEMU is missing is skipped.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import type { ProfileId } from '../../src/profiles/index.js';
import { REPO, startDaemon, tempDir } from '../helpers/daemon.js';
import { QEMU_OF, qemuSkip } from '../helpers/qemu.js';
import { QmpClient, type Msg } from '../helpers/qmp-client.js';

const SHARED = join(REPO, 'test', 'fixtures', 'vectors');
const vectorsSkip = existsSync(join(SHARED, 'qemu100-none-plain-64M.stream')) ? false : `no QEMU 10.0 vectors in ${SHARED}`;
const expected = vectorsSkip ? {} : (JSON.parse(readFileSync(join(SHARED, 'expected.json'), 'utf8')) as Record<string, { ram_size: number; ram_sha256: string }>);
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const work = tempDir();

interface Outcome {
  /** `loaded` with the RAM's digest, or the lines the destination reported before it exited. */
  kind: 'loaded' | 'refused';
  sha?: string;
  lines: string[];
  /** A loaded guest's run state, then after `cont` (a guest suspended at its source resumes suspended). */
  states?: string[];
}

async function runStates(qmp: QmpClient): Promise<string[]> {
  const status = async (): Promise<string> => {
    const s = (await qmp.ok('query-status')) as { status: string; running: boolean };
    return `${s.status}${s.running ? '' : ' (not running)'}`;
  };
  const before = await status();
  const from = qmp.events.length;
  await qmp.cmd('cont');
  const after = await status();
  await delay(50); // an event that follows the reply
  return [before, after, ...qmp.events.slice(from).map((e) => `${String(e.event)} ${JSON.stringify(e.data ?? {})}`)];
}

/** Polls query-migrate until the incoming migration ends, or the process exits. */
async function settle(qmp: QmpClient, exited: () => boolean): Promise<'completed' | 'exited'> {
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    if (exited() || qmp.closed) return 'exited';
    const r = await qmp.cmd('query-migrate').catch(() => undefined);
    if ((r?.return as Msg | undefined)?.status === 'completed') return 'completed';
    await delay(20);
  }
  throw new Error('the destination neither completed nor exited');
}

/** QEMU may refuse the stream and exit before its monitor is reached: both are outcomes here. */
async function intoQemu(release: ProfileId, file: string, size: number): Promise<Outcome> {
  const dir = tempDir();
  const socket = join(dir, 'qmp.sock');
  const proc = spawn(QEMU_OF[release], [
    '-M', 'none,memory-backend=m', '-object', `memory-backend-ram,id=m,size=${size}`, '-display', 'none', '-nodefaults',
    '-S', '-qmp', `unix:${socket},server=on,wait=off`, '-incoming', `exec:cat ${file}`,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const gone = new Promise<void>((r) => proc.on('exit', () => r()));
  const exited = (): boolean => proc.exitCode !== null || proc.signalCode !== null;
  try {
    let qmp: QmpClient | undefined;
    const deadline = Date.now() + 10000;
    while (!qmp && !exited() && Date.now() < deadline) {
      qmp = await QmpClient.unix(socket).catch(() => undefined);
      if (!qmp) await delay(10);
    }
    if (qmp) await qmp.negotiate().catch(() => undefined);
    const how = qmp ? await settle(qmp, exited) : 'exited';
    if (how === 'exited') {
      await gone;
      return { kind: 'refused', lines: log.split('\n').filter(Boolean).map((l) => l.replace(/^[^:]*qemu-system-x86_64: /, '')) };
    }
    const dump = join(dir, 'ram.dump');
    await qmp!.ok('pmemsave', { val: 0, size, filename: dump });
    const sha = sha256(readFileSync(dump));
    const states = await runStates(qmp!);
    qmp!.close();
    return { kind: 'loaded', sha, lines: log.split('\n').filter(Boolean), states };
  } finally {
    proc.kill('SIGKILL');
    await gone;
    rmSync(dir, { recursive: true, force: true });
  }
}

async function intoQmigd(release: ProfileId, file: string, size: number): Promise<Outcome> {
  const d = await startDaemon(['--qemu-version', release, '-S', '-m', String(size), '--ram-id', 'm', '--incoming', `exec:cat ${file}`]);
  let exited = false;
  void d.exited.then(() => (exited = true));
  try {
    const qmp = await QmpClient.at(d.listening[0]!).catch(() => undefined);
    if (qmp) await qmp.negotiate().catch(() => undefined);
    const how = qmp ? await settle(qmp, () => exited) : 'exited';
    // QEMU's lines are the error lines; the last one, with the byte offset, is qmigd's own.
    const errors = (): string[] =>
      d.stderr().split('\n').filter((l) => l.includes('"level":50')).map((l) => (JSON.parse(l) as { msg: string }).msg).filter((m) => !m.startsWith('invalid migration stream'));
    if (how === 'exited') {
      await d.exited;
      return { kind: 'refused', lines: errors() };
    }
    const sha = ((await qmp!.ok('__org.qmigd_query-ram-digest')) as { sha256: string }).sha256;
    const states = await runStates(qmp!);
    qmp!.close();
    return { kind: 'loaded', sha, lines: errors(), states };
  } finally {
    await d.stop();
  }
}

interface Case {
  name: string;
  stream: Buffer;
  size: number;
  /** The RAM a destination that loads it must hold. */
  sha?: string;
}

function cases(): Case[] {
  const read = (name: string): Buffer => readFileSync(join(SHARED, `${name}.stream`));
  const plain = read('qemu100-none-plain-64M');
  const size = expected['qemu100-none-plain-64M']!.ram_size;
  // Found by decoding the vector, not assumed: its one command, and globalstate's run state.
  const sw = plain.indexOf(Buffer.from('08000b0000', 'hex'));
  const gsName = plain.indexOf(Buffer.from('\x0bglobalstate', 'latin1'));
  const runstate = gsName + 12 + 8 + 4; // counted name, instance, version, size
  const replace = (at: number, len: number, bytes: Buffer): Buffer => Buffer.concat([plain.subarray(0, at), bytes, plain.subarray(at + len)]);
  // Without the command, a 7.2 destination reaches globalstate too; everything after moves by 5.
  const noSw = replace(sw, 5, Buffer.alloc(0));
  return [
    ...['qemu72-none-plain-64M', 'qemu100-none-plain-64M', 'qemu100-none-mixed-2M'].map((name) => ({
      name, stream: read(name), size: expected[name]!.ram_size, sha: expected[name]!.ram_sha256,
    })),
    { name: 'SWITCHOVER_START with one byte of payload', stream: replace(sw, 5, Buffer.from('08000b000100', 'hex')), size },
    { name: 'MIG_CMD 0xc', stream: replace(sw, 5, Buffer.from('08000c0000', 'hex')), size },
    // After the configuration section (header 8 bytes, `none` 9): to a destination without x-colo.
    { name: 'ENABLE_COLO', stream: replace(17, 0, Buffer.from('0800080000', 'hex')), size },
    { name: 'SWITCHOVER_START twice', stream: replace(sw, 0, Buffer.from('08000b0000', 'hex')), size, sha: expected['qemu100-none-plain-64M']!.ram_sha256 },
    { name: 'no SWITCHOVER_START', stream: noSw, size, sha: expected['qemu100-none-plain-64M']!.ram_sha256 },
    { name: 'an unknown run state', stream: patchAt(plain, runstate, Buffer.from('bogus\0\0\0\0\0', 'latin1')), size },
    { name: 'an unknown run state, no SWITCHOVER_START', stream: patchAt(noSw, runstate - 5, Buffer.from('bogus\0\0\0\0\0', 'latin1')), size },
    { name: '32 bytes of run state without a NUL, no SWITCHOVER_START', stream: patchAt(noSw, runstate - 5, Buffer.alloc(32, 'A')), size },
    { name: 'a run state with the suspend flags set, no SWITCHOVER_START', stream: patchAt(noSw, runstate - 5, Buffer.concat([Buffer.from('paused', 'latin1'), Buffer.alloc(26), Buffer.from([1, 1])])), size },
    { name: 'a suspended run state without the flags', stream: patchAt(plain, runstate, Buffer.from('suspended\0', 'latin1')), size },
    { name: 'a suspended run state without the flags, no SWITCHOVER_START', stream: patchAt(noSw, runstate - 5, Buffer.from('suspended\0', 'latin1')), size },
  ];
}

function patchAt(stream: Buffer, at: number, bytes: Buffer): Buffer {
  const b = Buffer.from(stream);
  bytes.copy(b, at);
  return b;
}

for (const release of ['7.2', '10.0'] as ProfileId[]) {
  t.test(`a qmigd ${release} destination loads and refuses what QEMU ${release} does`, { skip: vectorsSkip || qemuSkip(release) }, async (t) => {
    for (const c of cases()) {
      const file = join(work, `case-${sha256(c.stream).slice(0, 12)}.stream`);
      writeFileSync(file, c.stream);
      const [qemu, ours] = await Promise.all([intoQemu(release, file, c.size), intoQmigd(release, file, c.size)]);
      t.comment(`${c.name}: QEMU ${release} ${qemu.kind}${qemu.lines.length ? `: ${qemu.lines.join(' / ')}` : ''}`);
      t.equal(ours.kind, qemu.kind, `${c.name}: ${qemu.kind} by both`);
      if (qemu.kind === 'loaded') {
        t.equal(ours.sha, qemu.sha, `${c.name}: the same RAM`);
        t.comment(`${c.name}: run states ${qemu.states!.join(' → ')}`);
        t.same(ours.states, qemu.states, `${c.name}: the same run state, before and after cont`);
        if (c.sha) t.equal(qemu.sha, c.sha, `${c.name}: the RAM of expected.json`);
      } else t.same(ours.lines, qemu.lines, `${c.name}: the same lines`);
    }
  });
}
