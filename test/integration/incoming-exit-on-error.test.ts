/**
 * migrate-incoming's exit-on-error (8.2 on): a destination whose load fails exits 1 by default,
 * and with exit-on-error false stays up in `failed` with the error in query-migrate. The same
 * scenario runs on QEMU 10.0 and on qmigd-qemu-10.0 (the same command line), and every QMP
 * answer, the exit status and the error lines must be the same.
 */
import { join } from 'node:path';
import net from 'node:net';
import t from 'tap';
import { freePort, REPO } from '../helpers/daemon.js';
import { QEMU_OF, qemuSkip, startEmulator } from '../helpers/qemu.js';
import { connectQmp, delay } from '../helpers/interop.js';

interface Outcome {
  /** QMP replies and events after the greeting, timestamps dropped. */
  transcript: string[];
  exitCode: number | null;
  /** What the program reported, without its name: QEMU's stderr, qmigd's log messages. */
  reports: string[];
}

/** A stream QEMU refuses at once: the header, then no configuration section. */
const GARBAGE = Buffer.concat([Buffer.from('QEVM\0\0\0\x03', 'latin1'), Buffer.from('garbage')]);

async function scenario(program: string, exitOnError: boolean | undefined): Promise<Outcome> {
  const q = await startEmulator(program, (socket) => [
    '-M', 'none', '-m', '64M', '-display', 'none', '-nodefaults', '-qmp', `unix:${socket},server=on,wait=off`, '-incoming', 'defer',
  ]);
  let stderr = '';
  q.proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((res) => q.proc.on('exit', (code) => res(code)));
  try {
    const qmp = await connectQmp(q.socket, () => q.proc.exitCode === null, () => stderr);
    await qmp.negotiate();
    await qmp.ok('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    const port = await freePort();
    const args = { uri: `tcp:127.0.0.1:${port}`, ...(exitOnError === undefined ? {} : { 'exit-on-error': exitOnError }) };
    await qmp.ok('migrate-incoming', args);
    const sender = net.connect({ host: '127.0.0.1', port });
    sender.on('error', () => {});
    sender.end(GARBAGE);
    const ended = await Promise.race([qmp.waitEvent('MIGRATION', (d) => d.status === 'failed', 0, 10000).then(() => 'failed'), exited.then(() => 'exited')]);
    if (ended === 'failed') {
      // Whatever follows the failure (an exit) has its moment; a loaded machine may take a while.
      await Promise.race([exited, delay(2000)]);
      if (q.proc.exitCode === null) {
        for (const cmd of ['query-migrate', 'query-status']) await qmp.cmd(cmd);
        await qmp.cmd('migrate-incoming', { uri: `tcp:127.0.0.1:${port}` });
        await qmp.cmd('quit');
      }
    }
    const exitCode = await exited;
    const transcript = qmp.lines.slice(1).map((l) => l.replace(/"timestamp": \{[^}]*\}, /, ''));
    const reports = program.includes('qmigd')
      ? stderr.split('\n').filter((l) => l.startsWith('{') && /"level":50/.test(l)).map((l) => (JSON.parse(l) as { msg: string }).msg)
      : stderr.split('\n').filter(Boolean).map((l) => l.replace(/^[^:]*: /, ''));
    return { transcript, exitCode, reports };
  } finally {
    await q.stop();
  }
}

const QMIGD_QEMU = join(REPO, 'bin', 'qmigd-qemu-10.0');

for (const exitOnError of [undefined, true, false]) {
  t.test(`QEMU 10.0: a failed load with exit-on-error ${exitOnError ?? 'left out'}`, { skip: qemuSkip('10.0') }, async (t) => {
    const qemu = await scenario(QEMU_OF['10.0'], exitOnError);
    const ours = await scenario(QMIGD_QEMU, exitOnError);
    t.comment(`QEMU 10.0: exit ${qemu.exitCode}; ${qemu.reports.join(' / ')}`);
    t.equal(qemu.exitCode, exitOnError === false ? 0 : 1, 'QEMU exits 1 only when it exits on the error');
    t.same(ours.transcript, qemu.transcript, 'every QMP line the same');
    t.equal(ours.exitCode, qemu.exitCode, 'the same exit status');
    // qmigd adds one line of its own (where in the stream), after QEMU's.
    t.same(ours.reports.filter((l) => !l.startsWith('invalid migration stream')), qemu.reports, 'the same error lines, in order');
  });
}
