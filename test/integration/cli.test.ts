/** Command-line errors print one clear line and exit 1; defaults serve ./qmigd.sock. */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
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
  [['--qmp', 'unix:/nonexistent-dir/x.sock,server=on'], /^qmigd: --qmp unix:\/nonexistent-dir\/x\.sock,server=on: Failed to bind socket to \/nonexistent-dir\/x\.sock: No such file or directory\n$/],
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
  // The default release is QEMU 10.0, whose query-status has no singlestep.
  t.match(await c.cmd('query-version'), { return: { qemu: { major: 10, minor: 0 } } });
  t.same(await c.cmd('query-status'), { return: { status: 'running', running: true } });
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

t.test('qmigd inspect: a QEMU 7.2 stream decoded, its RAM written out; a broken one located', async (t) => {
  const vectors = join(import.meta.dirname, '..', '..', '..', 'test', 'fixtures', 'vectors');
  const expected = JSON.parse(readFileSync(join(vectors, 'expected.json'), 'utf8')) as Record<string, { ram_sha256: string }>;
  const out = join(tempDir(), 'ram.bin');
  const run = (args: string[], input?: Buffer): Promise<{ code: number | null; stdout: string }> =>
    new Promise((res) => {
      const p = spawn(process.execPath, [BIN, 'inspect', ...args], { stdio: ['pipe', 'pipe', 'ignore'] });
      let stdout = '';
      p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      p.on('exit', (code) => res({ code, stdout }));
      p.stdin.end(input);
    });
  const ok = await run(['--qemu-version', '7.2', join(vectors, 'qemu72-none-xbzrle-64M.stream'), '--ram', out]);
  t.equal(ok.code, 0);
  t.match(ok.stdout, /0x00000008  configuration  machine "none"/);
  t.match(ok.stdout, /START\s+ram \(section 2, instance 0, version 4\)/);
  t.match(ok.stdout, /\d+ XBZRLE/);
  t.match(ok.stdout, /runstate="running"/);
  t.match(ok.stdout, /VMDESCRIPTION\s+\d+ bytes of JSON: timer v2, globalstate v1/);
  t.equal(createHash('sha256').update(readFileSync(out)).digest('hex'), expected['qemu72-none-xbzrle-64M']!.ram_sha256);
  // The same stream after 12288 other bytes, as file:FILE,offset=12288 writes it.
  const at = join(tempDir(), 'at-offset.mig');
  writeFileSync(at, Buffer.concat([Buffer.alloc(12288, 0xa5), readFileSync(join(vectors, 'qemu72-none-xbzrle-64M.stream'))]));
  const offset = await run(['--qemu-version', '7.2', at, '--offset', '12288', '--ram', out]);
  t.equal(offset.code, 0, '--offset: the stream read from there');
  t.equal(offset.stdout.replace(/^0x[0-9a-f]{8}/gm, ''), ok.stdout.replace(/^0x[0-9a-f]{8}/gm, ''), 'decoded as from the start of its own file');
  t.equal(createHash('sha256').update(readFileSync(out)).digest('hex'), expected['qemu72-none-xbzrle-64M']!.ram_sha256, 'into the same RAM');
  t.equal((await run(['--qemu-version', '7.2', at, '--ram', out])).code, 1, 'without --offset the bytes before it are no stream');
  t.equal((await run(['--offset', '12288'], Buffer.alloc(0))).code, 1, '--offset is refused for standard input');
  const cut = await run(['--qemu-version', '7.2'], readFileSync(join(vectors, 'qemu72-none-plain-64M.stream')).subarray(0, 3000));
  t.equal(cut.code, 1);
  t.match(cut.stdout, /error: invalid migration stream: it ends early, at byte offset 3000 \(0xbb8\)/);
  t.match(cut.stdout, /a QEMU 7\.2 destination would report: load of migration failed: Input\/output error/);
});
