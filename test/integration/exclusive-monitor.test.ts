/**
 * exclusive=on: one client at a time, as QEMU serves a monitor. While A is connected, B's
 * connection succeeds and B gets nothing (no greeting, no replies); the moment A leaves, B is
 * greeted and answered what it had sent. Two may wait; a third is closed at once (QEMU's kernel
 * refuses it). The same A/B sequence runs against a real QEMU 7.2 where one is installed.
 */
import { join } from 'node:path';
import t from 'tap';
import { parseQmpSpec } from '../../src/qmp/transports/spec.js';
import { freePort, startDaemon, tempDir, type RunningDaemon } from '../helpers/daemon.js';
import { LineClient } from '../helpers/line-client.js';
import { qemuInstalled, startQemu } from '../helpers/qemu.js';

type Test = Parameters<Parameters<typeof t.test>[0]>[0];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const GREETING = /^\{"QMP": \{"version": \{"qemu": \{"micro": \d+, "minor": 2, "major": 7\}, "package": "[^"]*"\}, "capabilities": \["oob"\]\}\}$/;
const B_SENDS = '{"execute":"qmp_capabilities"}\r\n{"execute":"query-status","id":"b"}\r\n';
const B_GETS = ['{"return": {}}', '{"return": {"status": "prelaunch", "singlestep": false, "running": false}, "id": "b"}'];

/** The daemon's log reaches the test a moment after its effects do: wait for the line. */
async function logged(d: RunningDaemon, line: RegExp, timeoutMs = 2000): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!line.test(d.stderr()) && performance.now() < deadline) await sleep(20);
  return line.test(d.stderr());
}

/** The greeting's version strings differ between QEMU builds and qmigd (as in qemu-compare). */
const normalise = (line: string): string => line.replace(/"micro": \d+/g, '"micro": M').replace(/"package": "[^"]*"/g, '"package": P');

/** A connects and negotiates; B connects and sends; 300 ms of silence for B; A leaves; what B gets. */
async function abSequence(where: string): Promise<{ before: string[]; after: string[]; greetingMs: number; closed: boolean }> {
  const a = new LineClient(where);
  await a.connected;
  await a.waitLines(1);
  a.send('{"execute":"qmp_capabilities"}\r\n');
  await a.waitLines(2);
  const b = new LineClient(where);
  await b.connected;
  b.send(B_SENDS);
  await sleep(300);
  const before = [...b.lines];
  const leftAt = performance.now();
  a.close();
  await b.waitLines(3);
  const result = { before, after: [...b.lines], greetingMs: b.times[0]! - leftAt, closed: b.closed };
  b.close();
  return result;
}

async function exclusiveDaemon(t: Test, kind: 'unix' | 'tcp' | 'ws'): Promise<RunningDaemon> {
  const spec = kind === 'unix' ? `unix:${join(tempDir(), 'x.sock')},server=on,wait=off,exclusive=on` : kind === 'tcp' ? `tcp:127.0.0.1:${await freePort()},server=on,wait=off,exclusive=on` : `ws:127.0.0.1:${await freePort()},exclusive=on`;
  const d = await startDaemon(['-S'], { qmp: [spec] });
  t.teardown(() => d.stop());
  return d;
}

t.test('--qmp exclusive= is parsed on unix:, tcp: and ws:', async (t) => {
  t.equal(parseQmpSpec('unix:/tmp/q.sock,server=on,wait=off,exclusive=on').exclusive, true);
  t.equal(parseQmpSpec('unix:/tmp/q.sock,server=on,wait=off').exclusive, false, 'off by default: several clients share a monitor');
  t.equal(parseQmpSpec('tcp:127.0.0.1:4000,server=on,exclusive=on').exclusive, true);
  t.equal(parseQmpSpec('ws:127.0.0.1:4000,exclusive=on').exclusive, true);
  t.equal(parseQmpSpec('ws:127.0.0.1:4000,exclusive=off').exclusive, false);
  t.throws(() => parseQmpSpec('unix:/tmp/q.sock,server=on,exclusive=maybe'), { message: "Parameter 'exclusive' expects 'on' or 'off' in --qmp unix:/tmp/q.sock,server=on,exclusive=maybe" });
});

for (const kind of ['unix', 'tcp', 'ws'] as const) {
  t.test(`${kind}: B waits un-greeted and unanswered while A is connected, then gets its turn`, async (t) => {
    const d = await exclusiveDaemon(t, kind);
    const r = await abSequence(d.listening[0]!);
    t.same(r.before, [], 'nothing for B within 300 ms while A is connected');
    t.match(r.after[0], GREETING, 'B is greeted once A has gone');
    t.same(r.after.slice(1), B_GETS, 'and answered what it had sent meanwhile, in order');
    t.ok(r.greetingMs < 250, `B's greeting came ${r.greetingMs.toFixed(1)} ms after A left`);
    t.comment(`${kind}: greeting ${r.greetingMs.toFixed(1)} ms after A closed`);
    t.ok(await logged(d, /"msg":"client waits: the exclusive monitor is in use"/), 'the daemon logs that B waits');
  });
}

t.test('without exclusive=on, B is greeted at once while A is connected (qmigd\'s default)', async (t) => {
  const d = await startDaemon(['-S']);
  t.teardown(() => d.stop());
  const a = new LineClient(d.listening[0]!);
  await a.waitLines(1);
  const b = new LineClient(d.listening[0]!);
  b.send(B_SENDS);
  await b.waitLines(3);
  t.same(b.lines.slice(1), B_GETS);
  a.close();
  b.close();
});

for (const kind of ['unix', 'ws'] as const) t.test(`${kind}: two may wait; a third is closed at once; a waiting client that leaves gives up its place`, async (t) => {
  const d = await exclusiveDaemon(t, kind);
  const where = d.listening[0]!;
  const a = new LineClient(where);
  await a.waitLines(1);
  const b = new LineClient(where);
  const c = new LineClient(where);
  await Promise.all([b.connected, c.connected]);
  await sleep(50); // the daemon has queued them
  const refused = new LineClient(where);
  await refused.waitClosed(2000);
  t.same(refused.lines, [], 'the third waiting client got nothing');
  t.ok(refused.closed, 'and was closed at once');
  t.ok(await logged(d, /"level":40,[^\n]*"msg":"client refused: the exclusive monitor is in use and its queue is full"/), 'and logs a warning');

  // C gives up: its place is free, so E waits instead of being closed.
  c.close();
  await sleep(50);
  const e = new LineClient(where);
  await e.connected;
  e.send('{"execute":"qmp_capabilities","id":"e"}\r\n');
  await sleep(300);
  t.notOk(e.closed, 'E waits: C left the queue');
  t.same(e.lines, [], 'E gets nothing while A is connected');

  // Turns go in order of arrival: B (C is gone), then E.
  a.close();
  await b.waitLines(1);
  t.match(b.lines[0], GREETING, 'B is next');
  await sleep(100);
  t.same(e.lines, [], 'E still waits while B is connected');
  b.close();
  await e.waitLines(2);
  t.match(e.lines[0], GREETING, 'E after B');
  t.equal(e.lines[1], '{"return": {}, "id": "e"}', 'and its request is answered');
  e.close();
});

t.test('a waiting client that shut its sending side after its requests is answered in its turn, then closed', async (t) => {
  const d = await exclusiveDaemon(t, 'unix');
  const a = new LineClient(d.listening[0]!);
  await a.waitLines(1);
  const b = new LineClient(d.listening[0]!);
  b.send(B_SENDS);
  b.end(); // as `printf ... | socat - UNIX-CONNECT:...` does
  await sleep(200);
  t.same(b.lines, []);
  t.notOk(b.closed, 'still waiting');
  a.close();
  await b.waitLines(3);
  t.same(b.lines.slice(1), B_GETS);
  await b.waitClosed();
  t.ok(b.closed, 'closed once answered, as QEMU does');
});

t.test('a yank drops the connected client only; the waiting one then gets its turn', async (t) => {
  const d = await exclusiveDaemon(t, 'unix');
  const a = new LineClient(d.listening[0]!);
  await a.waitLines(1);
  a.send('{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}\r\n');
  await a.waitLines(2);
  const b = new LineClient(d.listening[0]!);
  b.send(B_SENDS);
  await sleep(100);
  a.send('{"exec-oob":"yank","arguments":{"instances":[{"type":"chardev","id":"compat_monitor0"}]}}\r\n');
  await a.waitClosed();
  await b.waitLines(3);
  t.match(b.lines[0], GREETING);
  t.same(b.lines.slice(1), B_GETS);
  b.close();
});

t.test('QEMU 7.2 and an exclusive qmigd monitor treat B the same', { skip: !qemuInstalled() && 'qemu-system-x86_64 is not installed' }, async (t) => {
  const qemu = await startQemu(['-S']);
  t.teardown(() => qemu.stop());
  const d = await exclusiveDaemon(t, 'unix');
  const fromQemu = await abSequence(`unix:${qemu.socket}`);
  const fromQmigd = await abSequence(d.listening[0]!);
  t.same(fromQemu.before, [], 'QEMU: nothing for B while A is connected');
  t.same(fromQmigd.before, fromQemu.before);
  t.same(fromQmigd.after.map(normalise), fromQemu.after.map(normalise), 'B gets the same lines from both');
  t.same(fromQemu.after.slice(1), B_GETS, 'and they are what this test expects');
  t.comment(`B's greeting after A closed: QEMU ${fromQemu.greetingMs.toFixed(1)} ms, qmigd ${fromQmigd.greetingMs.toFixed(1)} ms`);

  // A third waiting client: QEMU's kernel refuses it (EAGAIN on a unix socket); qmigd, which has
  // accepted it already, closes it. Neither says anything to it.
  const fates = [];
  for (const where of [`unix:${qemu.socket}`, d.listening[0]!]) {
    const a = new LineClient(where);
    await a.waitLines(1); // served: the clients of the sequence above are gone
    const [b, c] = [new LineClient(where), new LineClient(where)];
    await Promise.all([b.connected, c.connected]);
    await sleep(50);
    const fourth = new LineClient(where);
    await fourth.waitClosed(2000);
    fates.push({ lines: fourth.lines, error: fourth.error });
    [a, b, c].forEach((x) => x.close());
  }
  t.same(fates, [{ lines: [], error: 'EAGAIN' }, { lines: [], error: undefined }]);
});
