/**
 * A fault against a real QEMU: the same failure (a destination that resets the connection after
 * 4 MiB, or dies as the device state arrives, armed with --fault on a qmigd destination) met once
 * by a real QEMU source and once by a qmigd source of the same release. Both must react alike: the status sequence, the error-desc,
 * the run state after. And a source that closes after 4 MiB, met by either destination. Per
 * release, skipped where that QEMU is not installed.
 */
import t from 'tap';
import { freePort, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { randomRamFile } from '../helpers/migration.js';
import { qemuSkip, startQemu } from '../helpers/qemu.js';
import { caps, delay, finished, isEvent, MiB, nextEvent, runState, startEnd, statuses, until, type End, type Kind, type Test } from '../helpers/interop.js';
import type { Msg } from '../helpers/qmp-client.js';
import type { ProfileId } from '../../src/profiles/index.js';

const SIZE = 64 * MiB;

interface Reaction {
  statuses: string[];
  errorDesc: unknown;
  runState: string;
}

/** The migration's end, once its MIGRATION event is in too (QEMU may answer query-migrate first). */
async function ended(e: End): Promise<Msg> {
  const end = await finished(e);
  await nextEvent(e, isEvent('MIGRATION', { status: end.status as string }));
  return end;
}

/** The run state once a failed migration's cleanup has run (QEMU resumes the guest a moment after `failed`). */
async function settledRunState(e: End): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const state = await runState(e);
    if (state !== 'finish-migrate') return state;
    await delay(20);
  }
  return runState(e);
}

/** A source of `kind` meets a qmigd destination armed with `fault`, the source's capabilities on. */
async function meet(t: Test, kind: Kind, release: ProfileId, ramFile: string, fault: string, capabilities: string[]): Promise<Reaction & { dst: RunningDaemon }> {
  const port = await freePort();
  const dst = await startDaemon(['--qemu-version', release, '-m', String(SIZE), '--ram-id', 'm', '--incoming', `tcp:127.0.0.1:${port}`, '--fault', fault]);
  t.teardown(() => dst.stop());
  const src = await startEnd(t, kind, release, { size: SIZE, ramFile });
  await caps(src, ['events', ...capabilities]);
  await src.qmp.ok('migrate', { uri: `tcp:127.0.0.1:${port}` });
  const end = await ended(src);
  return { statuses: statuses(src), errorDesc: end['error-desc'], runState: await settledRunState(src), dst };
}

async function meetReset(t: Test, kind: Kind, release: ProfileId, ramFile: string): Promise<Reaction> {
  const r = await meet(t, kind, release, ramFile, 'kind=reset,side=receive,after-bytes=4M', []);
  t.equal((await r.dst.exited).code, 1, `${kind}: the destination that reset exits 1`);
  t.match(r.dst.stderr(), /fault fault0: reset \(after 4194304 bytes\)/);
  return r;
}

for (const release of ['7.2', '10.0'] as const) {
  t.test(`QEMU ${release} and qmigd as ${release} meet a destination that resets the connection alike`, { skip: qemuSkip(release) }, async (t) => {
    const ramFile = await randomRamFile(SIZE);
    const qemu = await meetReset(t, 'qemu', release, ramFile);
    const qmigd = await meetReset(t, 'qmigd', release, ramFile);
    t.equal(qemu.statuses.at(-1), 'failed', 'QEMU fails');
    t.match(qemu.errorDesc, /^Unable to write to socket: (Connection reset by peer|Broken pipe)$/);
    t.same(qmigd.statuses, qemu.statuses, 'the same statuses');
    t.equal(qmigd.errorDesc, qemu.errorDesc, 'the same error-desc');
    t.equal(qmigd.runState, qemu.runState, 'the same run state after');
  });
}

/** Faults on a qmigd destination that a source with return-path meets at its end. */
const RETURN_PATH_FAULTS = [
  { what: 'dies as the device state arrives', fault: 'kind=crash,point=switchover', died: 'SIGKILL' },
  { what: 'corrupts its first return-path message', fault: 'kind=corrupt,channel=return-path,after-bytes=0', died: null },
];

for (const release of ['7.2', '10.0'] as const) {
  for (const { what, fault, died } of RETURN_PATH_FAULTS) {
    t.test(`QEMU ${release} and qmigd as ${release} meet a destination that ${what} alike (return-path on)`, { skip: qemuSkip(release) }, async (t) => {
      const ramFile = await randomRamFile(SIZE);
      const reactions: Reaction[] = [];
      for (const kind of ['qemu', 'qmigd'] as const) {
        const r = await meet(t, kind, release, ramFile, fault, ['return-path']);
        if (died) t.equal((await r.dst.exited).signal, died, `${kind}: the destination died`);
        reactions.push({ statuses: r.statuses, errorDesc: r.errorDesc, runState: r.runState });
      }
      const [qemu, qmigd] = reactions as [Reaction, Reaction];
      t.equal(qemu.statuses.at(-1), 'failed', `QEMU fails at its end (${qemu.errorDesc ?? 'no error-desc'})`);
      t.equal(qemu.runState, 'running', 'and runs its guest again');
      t.same(qmigd, qemu, 'qmigd: the same statuses, error-desc and run state');
    });
  }
}

/** The destination dies while the source waits in pre-switchover; then migrate-continue. */
async function meetDeathInPreSwitchover(t: Test, kind: Kind, release: ProfileId, ramFile: string): Promise<Reaction> {
  const port = await freePort();
  const dst = await startDaemon(['--qemu-version', release, '-m', String(SIZE), '--ram-id', 'm', '--incoming', `tcp:127.0.0.1:${port}`]);
  t.teardown(() => dst.stop());
  const src = await startEnd(t, kind, release, { size: SIZE, ramFile });
  await caps(src, ['events', 'return-path', 'pause-before-switchover']);
  await src.qmp.ok('migrate', { uri: `tcp:127.0.0.1:${port}` });
  await until(src, (i) => i.status === 'pre-switchover', 'pre-switchover');
  dst.proc.kill('SIGKILL');
  await dst.exited;
  await delay(300); // the source's return path meets the end meanwhile
  await src.qmp.ok('migrate-continue', { state: 'pre-switchover' });
  const end = await ended(src);
  // The connection's end reaches the return path as EOF or, when the dead destination left bytes
  // unread, as a reset: QEMU words them "Channel error: Input/output error" and "Unable to read
  // from socket: Connection reset by peer", whichever the kernel gives that run.
  const errorDesc = String(end['error-desc']).replace(/^(Channel error: Input\/output error|Unable to read from socket: Connection reset by peer)$/, 'EOF or reset');
  return { statuses: statuses(src), errorDesc: end['error-desc'] === undefined ? undefined : errorDesc, runState: await settledRunState(src) };
}

for (const release of ['7.2', '10.0'] as const) {
  t.test(`QEMU ${release} and qmigd as ${release} meet a destination that dies while they wait in pre-switchover alike`, { skip: qemuSkip(release) }, async (t) => {
    const ramFile = await randomRamFile(SIZE);
    const qemu = await meetDeathInPreSwitchover(t, 'qemu', release, ramFile);
    const qmigd = await meetDeathInPreSwitchover(t, 'qmigd', release, ramFile);
    t.equal(qemu.statuses.at(-1), 'failed', `QEMU fails (${qemu.errorDesc ?? 'no error-desc'})`);
    t.same(qmigd, qemu, 'qmigd: the same statuses, error-desc and run state');
  });
}

/** A qmigd source closes the connection after 4 MiB: what the destination says as it exits. */
async function meetClose(t: Test, kind: Kind, release: ProfileId, ramFile: string): Promise<string> {
  const port = await freePort();
  const incoming = ['-incoming', `tcp:127.0.0.1:${port}`];
  const dst = kind === 'qemu'
    ? await startQemu(['-M', 'none,memory-backend=m', '-object', `memory-backend-ram,id=m,size=${SIZE}`, '-m', `${SIZE / MiB}M`, ...incoming], { release })
    : await startDaemon(['--qemu-version', release, '-m', String(SIZE), '--ram-id', 'm', '--incoming', `tcp:127.0.0.1:${port}`]);
  t.teardown(() => dst.stop());
  let stderr = '';
  dst.proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => (dst.proc.exitCode !== null ? r(dst.proc.exitCode) : dst.proc.once('exit', (code) => r(code))));
  const src = await startEnd(t, 'qmigd', release, { size: SIZE, ramFile, qmigdArgs: ['--fault', 'kind=close,after-bytes=4M'] });
  await src.qmp.ok('migrate', { uri: `tcp:127.0.0.1:${port}` });
  t.equal(await exited, 1, `${kind} destination exits 1`);
  return /load of migration failed: [^\n"]*/.exec(stderr)?.[0] ?? stderr;
}

for (const release of ['7.2', '10.0'] as const) {
  t.test(`a QEMU ${release} destination and a qmigd one say the same of a source that closed mid-stream`, { skip: qemuSkip(release) }, async (t) => {
    const ramFile = await randomRamFile(SIZE);
    const qemu = await meetClose(t, 'qemu', release, ramFile);
    const qmigd = await meetClose(t, 'qmigd', release, ramFile);
    // The stream ends exactly at 4 MiB, but which record that byte falls in differs from run
    // to run (where sections end depends on time), and with it the errno QEMU reports (EIO inside a page, EINVAL at a record's header in 7.2, and
    // in 10.0 at cuts not yet pinned down): both fail the load as QEMU does, with one of the two.
    for (const [who, said] of [['QEMU', qemu], ['qmigd', qmigd]]) {
      t.match(said, /^load of migration failed: (Input\/output error|Invalid argument)$/, `${who} ${release}: ${said}`);
    }
  });
}
