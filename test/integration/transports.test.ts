/**
 * Each transport serves the same protocol; Unix sockets are 0600 and removed on exit; SIGTERM
 * and SIGINT announce SHUTDOWN (host-signal) and exit 0; quit announces host-qmp-quit.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { freePort, startDaemon, tempDir } from '../helpers/daemon.js';
import { QmpClient } from '../helpers/qmp-client.js';

t.test('unix, tcp and websocket monitors at once', async (t) => {
  const dir = tempDir();
  const [tcpPort, wsPort] = [await freePort(), await freePort()];
  const d = await startDaemon([], { qmp: [`unix:${join(dir, 'a.sock')},server=on,wait=off`, `tcp:127.0.0.1:${tcpPort},server=on,wait=off`, `ws:127.0.0.1:${wsPort}`] });
  t.teardown(() => d.stop());
  t.same(d.listening, [`unix:${join(dir, 'a.sock')}`, `tcp:127.0.0.1:${tcpPort}`, `ws:127.0.0.1:${wsPort}`]);
  t.equal(statSync(join(dir, 'a.sock')).mode & 0o777, 0o600, 'unix socket is 0600');
  const clients = await Promise.all(d.listening.map((w) => QmpClient.at(w)));
  for (const [i, c] of clients.entries()) {
    t.match(c.lines[0], /^\{"QMP": \{"version": \{"qemu": \{"micro": 0, "minor": 2, "major": 7\}, "package": "qmigd [^"]+"\}, "capabilities": \["oob"\]\}\}$/, `greeting on ${d.listening[i]}`);
    await c.negotiate();
  }
  // An event reaches every negotiated monitor on every transport.
  const r = await clients[0]!.cmd('stop', undefined, 'x');
  t.same(r, { return: {}, id: 'x' });
  for (const c of clients) {
    await c.waitLines(3);
    t.equal(c.events.at(-1)?.event, 'STOP', 'STOP seen');
    t.same(Object.keys(c.events.at(-1)!.timestamp as object), ['seconds', 'microseconds']);
  }
  // Split messages work over WebSocket too: one frame may carry half a message.
  const ws = clients[2]!;
  const from = ws.lines.length;
  ws.send('{"execute":"query-');
  ws.send('status"}');
  t.equal(await ws.nextReply(from), '{"return": {"status": "paused", "singlestep": false, "running": false}}');
  clients.forEach((c) => c.close());
});

t.test('no events before negotiation', async (t) => {
  const d = await startDaemon();
  t.teardown(() => d.stop());
  const quiet = await QmpClient.at(d.listening[0]!);
  const active = await QmpClient.at(d.listening[0]!);
  await active.negotiate();
  await active.cmd('stop');
  await active.cmd('cont');
  t.equal(active.events.length, 2);
  const r = await quiet.cmd('qmp_capabilities');
  t.same(r, { return: {} });
  t.equal(quiet.events.length, 0, 'un-negotiated monitor saw no events');
  quiet.close();
  active.close();
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  t.test(`${signal}: SHUTDOWN host-signal, socket removed, exit 0`, async (t) => {
    const pidDir = tempDir();
    const d = await startDaemon(['--pidfile', join(pidDir, 'pid')]);
    const path = d.listening[0]!.slice(5);
    t.ok(existsSync(join(pidDir, 'pid')), 'pidfile written');
    const c = await QmpClient.at(d.listening[0]!);
    await c.negotiate();
    d.proc.kill(signal);
    const { code } = await d.exited;
    t.equal(code, 0);
    t.same(c.events.map((e) => [e.event, e.data]), [['SHUTDOWN', { guest: false, reason: 'host-signal' }]]);
    t.notOk(existsSync(path), 'socket file removed');
    t.notOk(existsSync(join(pidDir, 'pid')), 'pidfile removed');
    await d.stop();
  });
}

t.test('quit: SHUTDOWN host-qmp-quit, then the reply, then exit 0', async (t) => {
  const d = await startDaemon();
  const c = await QmpClient.at(d.listening[0]!);
  await c.negotiate();
  const from = c.lines.length;
  c.send('{"execute":"quit","id":9}');
  const { code } = await d.exited;
  await c.waitLines(from + 2);
  t.match(c.lines[from], /^\{"timestamp": \{"seconds": \d+, "microseconds": \d+\}, "event": "SHUTDOWN", "data": \{"guest": false, "reason": "host-qmp-quit"\}\}$/);
  t.equal(c.lines[from + 1], '{"return": {}, "id": 9}');
  t.equal(code, 0);
  await d.stop();
});

t.test('yank a chardev drops its clients; the monitor keeps listening', async (t) => {
  const d = await startDaemon();
  t.teardown(() => d.stop());
  const a = await QmpClient.at(d.listening[0]!);
  const b = await QmpClient.at(d.listening[0]!);
  await a.negotiate(['oob']);
  t.same(await a.cmd('query-yank'), { return: [{ type: 'chardev', id: 'compat_monitor0' }] });
  a.send('{"exec-oob":"yank","arguments":{"instances":[{"type":"chardev","id":"compat_monitor0"}]}}');
  await b.waitLines(2).catch(() => undefined);
  t.ok(b.closed, 'other client dropped');
  const c = await QmpClient.at(d.listening[0]!);
  await c.negotiate();
  t.same(await c.cmd('query-name'), { return: {} });
  c.close();
});
