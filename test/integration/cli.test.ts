/** Command-line errors print one clear line and exit 1; defaults serve ./qmigd.sock. */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { BIN, tempDir } from '../helpers/daemon.js';
import { QmpClient } from '../helpers/qmp-client.js';

function run(args: string[], cwd = tempDir()): Promise<{ code: number | null; stderr: string }> {
  return new Promise((res) => {
    const p = spawn(process.execPath, [BIN, ...args], { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => res({ code, stderr }));
  });
}

const bad: Array<[string[], RegExp]> = [
  [['--bogus'], /^qmigd: unknown option '--bogus'\n$/],
  [['--memory', '12Q'], /^qmigd: --memory: '12Q' is not a size/],
  [['--memory', '1000'], /^qmigd: --memory: 1000 must be a positive multiple of 4096 bytes\n$/],
  [['--qmp', 'serial:/dev/x'], /^qmigd: --qmp serial:\/dev\/x: expected unix:PATH, tcp:HOST:PORT or ws:HOST:PORT\n$/],
  [['--qmp', 'tcp:127.0.0.1:99999,server=on'], /^qmigd: --qmp tcp:127\.0\.0\.1:99999,server=on: expected tcp:HOST:PORT with a port/],
  [['--qmp', 'unix:/x,server=maybe'], /^qmigd: Parameter 'server' expects 'on' or 'off'/],
  [['--log-level', 'loud'], /^qmigd: --log-level: 'loud' is not one of/],
  [['--qmp', 'unix:/nonexistent-dir/x.sock,server=on'], /^qmigd: listen EACCES|^qmigd: listen ENOENT/],
  [['--dirty-rate', 'fast'], /^qmigd: --dirty-rate: 'fast' is not a size/],
  [['--dirty-pattern', 'hot:0'], /^qmigd: --dirty-pattern: 'hot:0' is not a workload pattern/],
  [['-m', '8M', '--memory-file', join(import.meta.dirname, '..', '..', '..', 'test', 'fixtures', 'vectors', 'qemu72-none-mixed-2M.ram')],
    /^qmigd: --memory-file: '.*qemu72-none-mixed-2M\.ram' is 2097152 bytes, but --memory is 8388608 bytes; they must be equal\n$/],
  [['--incoming', 'bogus:x'], /^qmigd: unknown migration protocol: bogus:x\n$/],
];

for (const [args, want] of bad) {
  t.test(`bad command line: ${args.join(' ')}`, async (t) => {
    const { code, stderr } = await run(args);
    t.equal(code, 1);
    t.match(stderr, want);
    t.equal(stderr.trim().split('\n').length, 1, 'one line, no stack trace');
  });
}

t.test('no --qmp: serves ./qmigd.sock and says so on stderr', async (t) => {
  const cwd = tempDir();
  const p = spawn(process.execPath, [BIN, '-m', '64M', '--name', 'g1'], { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  while (!stderr.includes('qmigd: QMP on unix:./qmigd.sock')) await new Promise((r) => setTimeout(r, 20));
  const c = await QmpClient.unix(join(cwd, 'qmigd.sock'));
  await c.negotiate();
  t.same(await c.cmd('query-name'), { return: { name: 'g1' } });
  t.same(await c.cmd('query-status'), { return: { status: 'running', singlestep: false, running: true } });
  p.kill('SIGTERM');
  await new Promise((r) => p.on('exit', r));
  t.notOk(existsSync(join(cwd, 'qmigd.sock')));
});

t.test('qmigd demo migrates a guest between two daemons and checks the digests', async (t) => {
  const p = spawn(process.execPath, [BIN, 'demo', '--memory', '16M', '--dirty-rate', '1M'], { cwd: tempDir(), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise((r) => p.on('exit', r));
  t.equal(code, 0);
  t.match(out, /status:\s+completed/);
  t.match(out, /digests match/);
  const digests = [...out.matchAll(/digest:\s+([0-9a-f]{64})/g)].map((m) => m[1]);
  t.equal(digests.length, 2);
  t.equal(digests[0], digests[1]);
});
