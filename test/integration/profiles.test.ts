/**
 * Version profiles (src/profiles): a daemon is the QEMU release it is told to be, in its greeting,
 * its schema and its answers, and each profile's answers are its real QEMU's. What each profile
 * changes in detail is tested where the behaviour is (qemu-compare, the interop tests); this file
 * holds the choice of a profile and the answers that show it.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import t from 'tap';
import { PROFILES } from '../../src/profiles/index.js';
import { BIN, REPO, startDaemon } from '../helpers/daemon.js';
import { qemuSkip, startQemu } from '../helpers/qemu.js';
import { QmpClient } from '../helpers/qmp-client.js';

/** What a fresh daemon or QEMU of `release` answers to `requests`, greeting first. */
async function answers(where: string, requests: string[]): Promise<unknown[]> {
  const c = await QmpClient.at(where);
  try {
    const out: unknown[] = [JSON.parse(c.lines[0]!)];
    for (const r of requests) out.push(JSON.parse(await c.raw(r)));
    return out;
  } finally {
    c.close();
  }
}

const REQUESTS = ['{"execute":"qmp_capabilities"}', '{"execute":"query-status"}', '{"execute":"query-version"}'];

/** Versions and package strings differ by design; the rest must not. */
const comparable = (v: unknown): unknown =>
  JSON.parse(JSON.stringify(v).replace(/"micro":\d+/g, '"micro":0').replace(/"package":"[^"]*"/g, '"package":""'));

for (const profile of PROFILES) {
  t.test(`--qemu-version ${profile.id}: greeting and answers as QEMU ${profile.id}'s`, { skip: qemuSkip(profile.id) }, async (t) => {
    const d = await startDaemon(['-S', '--qemu-version', profile.id]);
    const q = await startQemu(['-S'], { release: profile.id });
    t.teardown(async () => {
      await d.stop();
      await q.stop();
    });
    const ours = await answers(d.listening[0]!, REQUESTS);
    const theirs = await answers(`unix:${q.socket}`, REQUESTS);
    t.match(ours[0], { QMP: { version: { qemu: profile.version } } }, 'the greeting says the release');
    t.same(comparable(ours), comparable(theirs));
  });
}

t.test('an unknown --qemu-version is one line and exit 1', async (t) => {
  const r = spawnSync(process.execPath, [BIN, '--qemu-version', '9.1'], { encoding: 'utf8' });
  t.equal(r.status, 1);
  t.match(r.stderr, /--qemu-version: '9\.1' is not one of 7\.2, 10\.0/);
});

t.test('qmigd-qemu is the release its name says, or QMIGD_QEMU_VERSION', async (t) => {
  const version = (prog: string, env: NodeJS.ProcessEnv = {}): string =>
    spawnSync(join(REPO, 'bin', prog), ['-version'], { encoding: 'utf8', env: { ...process.env, ...env } }).stdout.split('\n')[0]!;
  t.match(version('qmigd-qemu-10.0'), /^QEMU emulator version 10\.0\.0 \(qmigd /);
  t.match(version('qmigd-qemu-7.2'), /^QEMU emulator version 7\.2\.0 \(qmigd /);
  t.match(version('qmigd-qemu', { QMIGD_QEMU_VERSION: '7.2' }), /^QEMU emulator version 7\.2\.0/);
  t.match(version('qmigd-qemu', { QMIGD_QEMU_VERSION: '' }), /^QEMU emulator version 10\.0\.0/, 'the default release');
  const bad = spawnSync(join(REPO, 'bin', 'qmigd-qemu'), ['-version'], { encoding: 'utf8', env: { ...process.env, QMIGD_QEMU_VERSION: '6.2' } });
  t.equal(bad.status, 1);
  t.match(bad.stderr, /qmigd cannot be QEMU 6\.2; it can be 7\.2, 10\.0/);
});
