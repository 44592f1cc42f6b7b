/**
 * What an operator can take away from QMP clients: with `--sandbox on,spawn=deny` (QEMU's
 * -sandbox) exec: migration URIs, which run shell commands, are refused with the error QEMU's
 * fork reports, and the daemon keeps running; the commands that break the daemon on purpose are
 * served only with --test-hooks.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { BIN, startDaemon, tempDir } from '../helpers/daemon.js';
import { QmpClient, type Msg } from '../helpers/qmp-client.js';

const FORK = 'cannot fork child process: Operation not permitted';

t.test('--sandbox on,spawn=deny: migrate and migrate-incoming refuse exec:', async (t) => {
  const dir = tempDir();
  const d = await startDaemon(['--sandbox', 'on,spawn=deny']);
  t.teardown(() => d.stop());
  const c = await QmpClient.at(d.listening[0]!);
  await c.negotiate();
  await c.ok('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
  t.same(await c.cmd('migrate', { uri: `exec:touch ${dir}/ran` }, 1), { id: 1, error: { class: 'GenericError', desc: FORK } });
  t.same(c.events.map((e) => (e.data as Msg).status), ['setup', 'failed']);
  t.same(await c.ok('query-migrate'), { status: 'failed', 'error-desc': FORK });
  t.same(await c.ok('query-status'), { status: 'running', singlestep: false, running: true }, 'the daemon and its guest go on');
  // The same daemon migrates over a socket as usual: only spawning is refused.
  t.match(await c.cmd('migrate', { uri: 'tcp:127.0.0.1:1' }), { return: {} });
  c.close();

  const dst = await startDaemon(['--sandbox', 'on,spawn=deny', '--incoming', 'defer']);
  t.teardown(() => dst.stop());
  const q = await QmpClient.at(dst.listening[0]!);
  await q.negotiate();
  t.same(await q.cmd('migrate-incoming', { uri: `exec:touch ${dir}/ran` }), { error: { class: 'GenericError', desc: FORK } });
  t.same(await q.cmd('migrate-incoming', { uri: 'tcp:127.0.0.1:0' }), { return: {} }, 'a refused attempt leaves the incoming side free');
  q.close();
  t.notOk(existsSync(join(dir, 'ran')), 'no command ran');
});

function run(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, ...args], { cwd: tempDir(), stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => resolve({ code, stderr }));
  });
}

t.test('--sandbox at start-up: an exec: incoming is refused, bad specs get QEMU\'s texts', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['--sandbox', 'on,spawn=deny', '--incoming', 'exec:cat /dev/null'], new RegExp(`^qmigd: ${FORK}\\n$`)],
    [['--sandbox', 'on,spawn=bogus'], /^qmigd: --sandbox on,spawn=bogus: invalid argument for spawn\n$/],
    [['--sandbox', 'on,bogus=1'], /^qmigd: --sandbox on,bogus=1: Invalid parameter 'bogus'\n$/],
  ];
  for (const [args, want] of cases) {
    const { code, stderr } = await run(args);
    t.equal(code, 1, args.join(' '));
    t.match(stderr, want);
  }
  // Without `on` the sandbox is off, as in QEMU: spawning stays allowed.
  const d = await startDaemon(['--sandbox', 'spawn=deny']);
  t.teardown(() => d.stop());
  const c = await QmpClient.at(d.listening[0]!);
  await c.negotiate();
  t.same(await c.cmd('migrate', { uri: 'exec:cat > /dev/null' }), { return: {} });
  c.close();
});

t.test('the commands that break the daemon on purpose exist only with --test-hooks', async (t) => {
  const hooks = ['__org.qmigd_colo-crash-at', '__org.qmigd_sleep'];
  for (const testHooks of [false, true]) {
    const d = await startDaemon(testHooks ? ['--test-hooks'] : []);
    const c = await QmpClient.at(d.listening[0]!);
    await c.negotiate();
    const commands = ((await c.ok('query-commands')) as Array<{ name: string }>).map((x) => x.name);
    const schema = JSON.stringify(await c.ok('query-qmp-schema'));
    for (const hook of hooks) {
      t.equal(commands.includes(hook), testHooks, `${hook} ${testHooks ? 'listed' : 'not listed'} in query-commands`);
      t.equal(schema.includes(`"${hook}"`), testHooks, `${hook} ${testHooks ? 'in' : 'not in'} query-qmp-schema`);
    }
    if (!testHooks) {
      t.same(await c.cmd('__org.qmigd_sleep', { milliseconds: 1 }), { error: { class: 'CommandNotFound', desc: 'The command __org.qmigd_sleep has not been found' } });
    } else {
      t.same(await c.cmd('__org.qmigd_sleep', { milliseconds: 1 }), { return: {} });
    }
    c.close();
    await d.stop();
  }
});
