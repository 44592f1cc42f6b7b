/**
 * 100 concurrent clients over Unix, TCP and WebSocket, 100 commands each: every answer right,
 * and the daemon's memory back near its baseline once they are gone.
 */
import { join } from 'node:path';
import t from 'tap';
import { freePort, rssKiB, startDaemon, tempDir } from '../helpers/daemon.js';
import { INSPECT, liveMemory } from '../helpers/inspector.js';
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
  const qmp = [`unix:${join(dir, 'q.sock')},server=on,wait=off`, `tcp:127.0.0.1:${await freePort()},server=on,wait=off`, `ws:127.0.0.1:${await freePort()}`];
  const d = await startDaemon([], { qmp, nodeArgs: INSPECT });
  t.teardown(() => d.stop());
  await wave(d.listening, 100, 100, t); // warm up (JIT, buffers)
  // Memory is compared after a full collection at both ends: V8 collects when it likes, so RSS
  // alone grows by tens of MiB between collections whether or not anything is kept.
  const before = await liveMemory(d);
  const rssBefore = rssKiB(d.proc.pid!);
  t.equal(await wave(d.listening, 100, 100, t), 100 * 100, 'all 10,000 answered correctly');
  const after = await liveMemory(d);
  const rssAfter = rssKiB(d.proc.pid!);
  const kept = after.heapUsed + after.external - (before.heapUsed + before.external);
  // 1 MiB: 100 bytes a command or 10 KiB a connection kept would show.
  t.ok(kept < 1 << 20, `live memory after 10,000 commands and 100 connections: ${kept} bytes more`);
  t.ok(rssAfter <= rssBefore + 20 * 1024, `RSS back near baseline: ${rssBefore} KiB before, ${rssAfter} KiB after`);
  // And nothing is left attached: a new client is served at once.
  const c = await QmpClient.at(d.listening[0]!);
  await c.negotiate();
  t.same(await c.cmd('query-name'), { return: {} });
  c.close();
});
