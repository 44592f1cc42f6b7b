/**
 * The README's own words, checked: its socat session, replayed through Debian's socat against the
 * daemon it starts, prints what the README shows (timestamps aside); the socat invocations it
 * shows exist in Debian's socat; the daemons it puts in the background log only warnings, so
 * their lines do not mix into the transcript; --help shows the real default monitor.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { BIN, REPO, startDaemon } from '../helpers/daemon.js';
import { DEFAULT_PROFILE } from '../../src/profiles/index.js';
import { startEmulator } from '../helpers/qemu.js';

const README = readFileSync(join(REPO, 'README.md'), 'utf8');
const HAVE_SOCAT = spawnSync('socat', ['-V'], { stdio: 'ignore' }).status === 0;

/** The indented block that follows a heading. */
function block(heading: string): string[] {
  const start = README.indexOf(`\n${heading}\n`);
  const lines = README.slice(start + heading.length + 2).split('\n');
  const first = lines.findIndex((l) => l.startsWith('    '));
  const out: string[] = [];
  for (const l of lines.slice(first)) {
    if (!l.startsWith('    ')) break;
    out.push(l.slice(4));
  }
  return out;
}

type Test = Parameters<Parameters<typeof t.test>[0]>[0];

const noTimestamps = (l: string): string => l.replace(/"seconds": \d+, "microseconds": \d+/, '"seconds": S, "microseconds": U');

/** Replays a README session's requests through socat against `socket` and compares the replies. */
async function replay(t: Test, transcript: string[], socket: string): Promise<void> {
  const sent = transcript.filter((l) => l.startsWith('{"execute"'));
  const want = transcript.filter((l) => !l.startsWith('{"execute"'));
  // socat reads the commands from standard input, as a person typing them would send them.
  const got = await new Promise<string>((resolve) => {
    const p = spawn('socat', ['-', `UNIX-CONNECT:${socket}`], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.on('exit', () => resolve(out));
    p.stdin.end(`${sent.join('\n')}\n`);
  });
  t.same(got.split('\r\n').filter(Boolean).map(noTimestamps), want.map(noTimestamps).map((l) => l.replace(/"package": "qmigd [^"]*"/, `"package": "qmigd ${JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version}"`)));
}

t.test('the socat session prints what the README shows', { skip: !HAVE_SOCAT && 'socat is not installed' }, async (t) => {
  const lines = block('## A socat session');
  const [daemonLine, socatLine, ...transcript] = lines;
  t.match(daemonLine, /^\$ \.\/bin\/qmigd --qmp unix:\/tmp\/qmigd\.sock,server=on,wait=off -S --log-level warn &$/);
  t.equal(socatLine, '$ socat - UNIX-CONNECT:/tmp/qmigd.sock');
  // As the README's command line: the default release (the test helper would otherwise pick 7.2).
  const d = await startDaemon(['--qemu-version', DEFAULT_PROFILE.id, '-S']);
  t.teardown(() => d.stop());
  await replay(t, transcript, d.listening[0]!.slice(5));
});

t.test('the qmigd-qemu session prints what the README shows', { skip: !HAVE_SOCAT && 'socat is not installed' }, async (t) => {
  const [daemonLine, socatLine, ...transcript] = block('## Use as a QEMU binary');
  const m = /^\$ \.\/bin\/qmigd-qemu (.*) -qmp unix:(\S+),server=on,wait=off &$/.exec(daemonLine!);
  t.ok(m, daemonLine);
  t.equal(socatLine, `$ socat - UNIX-CONNECT:${m![2]}`);
  // The README's command line, with the monitor in a directory of the test's own.
  const q = await startEmulator(join(REPO, 'bin', 'qmigd-qemu'), (socket) => [...m![1]!.split(' '), '-qmp', `unix:${socket},server=on,wait=off`]);
  t.teardown(() => q.stop());
  const socket = q.socket;
  await replay(t, transcript, socket);
});

t.test('every socat and backgrounded qmigd in the README is spelled as it works', async (t) => {
  const socats = [...README.matchAll(/^ {4}\$ (socat .*)$/gm)].map((m) => m[1]!);
  t.ok(socats.length >= 3, `${socats.length} socat invocations`);
  for (const s of socats) t.match(s, /^socat - (UNIX|TCP)-CONNECT:/, `${s}: Debian's socat has no READLINE`);
  const background = [...README.matchAll(/^ {4}\$ (\.\/bin\/qmigd .*&)$/gm)].map((m) => m[1]!);
  t.ok(background.length >= 3, `${background.length} daemons put in the background`);
  for (const b of background) t.match(b, /--log-level warn/, `${b}: logs only warnings into the session`);
});

t.test('--help shows the default monitor, not []', async (t) => {
  const help = spawnSync(process.execPath, [BIN, '--help'], { encoding: 'utf8' }).stdout;
  t.match(help, /default:\s+unix:\.\/qmigd\.sock,server=on,wait=off/);
  t.notMatch(help, /default:\s+\[\]/);
});

t.test('the inspect example prints what the README shows', async (t) => {
  // The block has a blank line inside: it runs from the command to the next one.
  const m = /\n {4}\$ \.\/bin\/qmigd inspect (\S+)\n([\s\S]*?)\n {4}\$ /.exec(README);
  t.ok(m, 'the README runs inspect on a file');
  const shown = m![2]!.trimEnd().split('\n').map((l) => l.slice(4));
  const run = spawnSync(process.execPath, [BIN, 'inspect', join(REPO, m![1]!)], { encoding: 'utf8' });
  t.equal(run.status, 0);
  t.same(run.stdout.trimEnd().split('\n'), shown);
});
