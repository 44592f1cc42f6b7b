/**
 * 100 concurrent clients over Unix, TCP and WebSocket, 100 commands each: every answer right,
 * and the daemon's memory back near its baseline once they are gone.
 */
import { join } from 'node:path';
import t from 'tap';
import { freePort, rssKiB, startDaemon, tempDir } from '../helpers/daemon.js';
import { QmpClient } from '../helpers/qmp-client.js';


async function wave(listening: string[], clients: number, commands: number, t: { fail: (m: string) => void }): Promise<number> {
  let correct = 0;
  await Promise.all(
    Array.from({ length: clients }, async (_, i) => {
      const c = await QmpClient.at(listening[i % listening.length]!);
      await c.negotiate();
      for (let n = 0; n < commands; n++) {
        const id = `${i}-${n}`;
        const r = n % 2 ? await c.cmd('query-status', undefined, id) : await c.cmd('query-name', undefined, id);
        if (r.id === id && 'return' in r) correct++;
        else t.fail(`bad reply ${JSON.stringify(r)}`);
      }
      c.close();
    }),
  );
  return correct;
}

t.test('100 clients x 100 commands on every transport', async (t) => {
  const dir = tempDir();
  const d = await startDaemon([], { qmp: [`unix:${join(dir, 'q.sock')},server=on,wait=off`, `tcp:127.0.0.1:${await freePort()},server=on,wait=off`, `ws:127.0.0.1:${await freePort()}`] });
  t.teardown(() => d.stop());
  await wave(d.listening, 100, 10, t); // warm up (JIT, buffers)
  await new Promise((r) => setTimeout(r, 500));
  const baseline = rssKiB(d.proc.pid!);
  t.equal(await wave(d.listening, 100, 100, t), 100 * 100, 'all 10,000 answered correctly');
  let after = rssKiB(d.proc.pid!);
  for (let i = 0; i < 20 && after > baseline + 20 * 1024; i++) {
    await new Promise((r) => setTimeout(r, 250));
    after = rssKiB(d.proc.pid!);
  }
  t.ok(after <= baseline + 20 * 1024, `RSS back near baseline: ${baseline} KiB before, ${after} KiB after`);
  // And nothing is left attached: a new client is served at once.
  const c = await QmpClient.at(d.listening[0]!);
  await c.negotiate();
  t.same(await c.cmd('query-name'), { return: {} });
  c.close();
});
