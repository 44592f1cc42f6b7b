/**
 * QEMU's in-band queue: without OOB one request at a time, in order; with OOB, exec-oob
 * commands overtake a slow in-band command, and the queue holds at most 8 requests before
 * input stops being read.
 */
import t from 'tap';
import { startDaemon } from '../helpers/daemon.js';
import { QmpClient } from '../helpers/qmp-client.js';

t.test('exec-oob overtakes a slow in-band command', async (t) => {
  const d = await startDaemon(['--test-hooks']);
  t.teardown(() => d.stop());
  const c = await QmpClient.at(d.listening[0]!);
  await c.negotiate(['oob']);
  const from = c.lines.length;
  c.send('{"execute":"__org.qmigd_sleep","arguments":{"milliseconds":400},"id":"slow"}{"exec-oob":"query-yank","id":"fast"}');
  await c.waitLines(from + 2);
  t.same(c.lines.slice(from).map((l) => (JSON.parse(l) as { id: string }).id), ['fast', 'slow']);
  c.close();
});

t.test('without OOB, pipelined requests are answered strictly in order', async (t) => {
  const d = await startDaemon(['--test-hooks']);
  t.teardown(() => d.stop());
  const c = await QmpClient.at(d.listening[0]!);
  await c.negotiate();
  const from = c.lines.length;
  c.send('{"execute":"__org.qmigd_sleep","arguments":{"milliseconds":200},"id":1}{"execute":"query-name","id":2}{"execute":"bad","id":3}{"exec-oob":"query-yank","id":4}');
  await c.waitLines(from + 4);
  // exec-oob without negotiated OOB is rejected at once, yet only when it is read, after #1.
  t.same(c.lines.slice(from).map((l) => (JSON.parse(l) as { id: number }).id), [1, 2, 3, 4]);
  t.match(c.lines[from + 3], /QMP input member 'exec-oob' is unexpected/);
  c.close();
});

t.test('with OOB, a 9th queued request is not read until the queue drains', async (t) => {
  const d = await startDaemon(['--test-hooks']);
  t.teardown(() => d.stop());
  const c = await QmpClient.at(d.listening[0]!);
  await c.negotiate(['oob']);
  const from = c.lines.length;
  const inBand = Array.from({ length: 8 }, (_, i) => `{"execute":"__org.qmigd_sleep","arguments":{"milliseconds":50},"id":${i}}`).join('');
  // The queue is full after 8 in-band requests, so this OOB request waits to be read.
  c.send(`${inBand}{"exec-oob":"query-yank","id":"oob"}`);
  await c.waitLines(from + 9);
  const ids = c.lines.slice(from).map((l) => (JSON.parse(l) as { id: unknown }).id);
  t.equal(ids.indexOf('oob') >= 1, true, `OOB answered only after the queue moved (order ${JSON.stringify(ids)})`);
  t.same(ids.filter((x) => x !== 'oob'), [0, 1, 2, 3, 4, 5, 6, 7], 'in-band order kept');
  c.close();
});
