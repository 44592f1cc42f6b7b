/**
 * migrate-incoming's events in QEMU's order: setup before the reply (whatever the events
 * capability says, and whether or not the URI is good), then active, RESUME and completed once
 * the stream comes, over exec: and over an inherited fd:. Where QEMU 7.2 is installed, it is
 * driven the same way and must produce the same sequence.
 */
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { startDaemon, tempDir } from '../helpers/daemon.js';
import { side } from '../helpers/migration.js';
import { qemuInstalled, qemuSkip, startQemu } from '../helpers/qemu.js';
import { QmpClient, type Msg } from '../helpers/qmp-client.js';

const HAVE_QEMU = qemuInstalled();

/** A 64 MiB guest's stream, saved by qmigd with migrate exec:cat. */
async function savedStream(): Promise<string> {
  const file = join(tempDir(), 'guest.stream');
  const src = await side(['-m', '64M']);
  await src.qmp.ok('migrate', { uri: `exec:cat > ${file}` });
  for (;;) {
    const info = (await src.qmp.ok('query-migrate')) as Msg;
    if (info.status === 'completed') break;
    if (info.status === 'failed') throw new Error(`saving failed: ${JSON.stringify(info)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  await src.daemon.stop();
  return file;
}

/** What a client sees after migrate-incoming: MIGRATION statuses, other events, `return`. */
async function sequence(where: string, uri: string, events: boolean): Promise<string[]> {
  const c = await QmpClient.at(where);
  await c.negotiate();
  if (events) await c.ok('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
  const from = c.lines.length;
  c.send(JSON.stringify({ execute: 'migrate-incoming', arguments: { uri } }));
  const done = (): boolean => c.lines.slice(from).some((l) => (events ? l.includes('"completed"') : l.includes('"RESUME"')));
  while (!done()) await c.waitLines(c.lines.length + 1, 30_000);
  c.close();
  return c.lines.slice(from).map((l) => {
    const m = JSON.parse(l) as Msg;
    if (m.event === 'MIGRATION') return (m.data as Msg).status as string;
    return (m.event as string | undefined) ?? Object.keys(m)[0]!;
  });
}

t.test('migrate-incoming over exec: and fd:, with and without the events capability', async (t) => {
  const stream = await savedStream();
  const cases: Array<[string, boolean, string[]]> = [
    ['exec', true, ['setup', 'return', 'active', 'RESUME', 'completed']],
    ['exec', false, ['setup', 'return', 'RESUME']],
    ['fd', true, ['setup', 'return', 'active', 'RESUME', 'completed']],
  ];
  for (const [kind, events, want] of cases) {
    const uri = kind === 'exec' ? `exec:cat ${stream}` : 'fd:3';
    // Each process gets the file opened afresh: an inherited descriptor shares its offset.
    const open = (): number | undefined => (kind === 'fd' ? openSync(stream, 'r') : undefined);
    let fd = open();
    const d = await startDaemon(['-m', '64M', '--incoming', 'defer'], { fd3: fd });
    try {
      t.same(await sequence(d.listening[0]!, uri, events), want, `qmigd: ${uri}, events ${events ? 'on' : 'off'}`);
    } finally {
      await d.stop();
      if (fd !== undefined) closeSync(fd);
    }
    if (!HAVE_QEMU) continue;
    fd = open();
    const q = await startQemu(['-m', '64M', '-incoming', 'defer'], { fd3: fd });
    try {
      t.same(await sequence(`unix:${q.socket}`, uri, events), want, `QEMU 7.2: ${uri}, events ${events ? 'on' : 'off'}`);
    } finally {
      await q.stop();
      if (fd !== undefined) closeSync(fd);
    }
  }
});

t.test('a migrate-incoming that fails announces setup too, and may be tried again', async (t) => {
  const d = await startDaemon(['-m', '4M', '--incoming', 'defer']);
  t.teardown(() => d.stop());
  const c = await QmpClient.at(d.listening[0]!);
  await c.negotiate();
  const from = c.lines.length;
  t.match(await c.cmd('migrate-incoming', { uri: 'foo:bar' }), { error: { desc: 'unknown migration protocol: foo:bar' } });
  t.match(await c.cmd('migrate-incoming', { uri: 'tcp:127.0.0.1:' }), { error: { desc: "error parsing address '127.0.0.1:'" } });
  t.same(await c.cmd('migrate-incoming', { uri: 'tcp:127.0.0.1:0' }), { return: {} });
  t.same(c.events.slice(0).map((e) => (e.data as Msg).status), ['setup', 'setup', 'setup'], 'one setup before each answer');
  t.ok(c.lines.slice(from).findIndex((l) => l.includes('"setup"')) < c.lines.slice(from).findIndex((l) => l.includes('unknown migration protocol')));
  c.close();
});

t.test('migrate-incoming on a unix socket in a missing directory: QEMU 7.2\'s and 10.0\'s refusal', async (t) => {
  const path = join(tempDir(), 'missing', 'in.sock');
  const answers: Msg[] = [];
  for (const release of ['7.2', '10.0'] as const) {
    const d = await startDaemon(['--qemu-version', release, '--incoming', 'defer']);
    t.teardown(() => d.stop());
    const c = await QmpClient.at(d.listening[0]!);
    t.teardown(() => c.close());
    await c.negotiate();
    answers.push(await c.cmd('migrate-incoming', { uri: `unix:${path}` }));
  }
  // bind() says ENOENT; Node's libuv says EACCES for it, which QEMU never does.
  const want = { error: { class: 'GenericError', desc: `Failed to bind socket to ${path}: No such file or directory` } };
  t.same(answers, [want, want], 'qmigd as 7.2 and as 10.0');
  for (const release of ['7.2', '10.0'] as const) {
    if (qemuSkip(release)) continue;
    const q = await startQemu(['-incoming', 'defer'], { release });
    t.teardown(() => q.stop());
    const c = await QmpClient.unix(q.socket);
    t.teardown(() => c.close());
    await c.negotiate();
    t.same(await c.cmd('migrate-incoming', { uri: `unix:${path}` }), want, `QEMU ${release} says the same`);
  }
});
