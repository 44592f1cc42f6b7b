/**
 * Clients that would take the daemon down or over: large unfinished messages from many
 * connections before negotiation, one connection holding more than the memory limit, one client
 * pipelining thousands of requests while a migration runs, and clients that shut their sending
 * side before their replies came. The daemon lives, its memory stays bounded, the other clients
 * are served in turn, and every request received is answered.
 */
import net from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { freePort, rssKiB, startDaemon, tempDir } from '../helpers/daemon.js';
import { migrationStatus, randomRamFile, startPair, untilInfo } from '../helpers/migration.js';
import { QmpClient, type Msg } from '../helpers/qmp-client.js';
import { qemuInstalled, startQemu } from '../helpers/qemu.js';

const MiB = 1 << 20;

function connect(where: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const [, host, port] = /^tcp:(.*):(\d+)$/.exec(where) ?? [];
    const s = where.startsWith('unix:') ? net.connect(where.slice(5)) : net.connect(Number(port), host!);
    s.once('connect', () => resolve(s)).once('error', reject);
  });
}

/** Writes all of `pieces` (waiting for the socket to drain); resolves false if the daemon closed it. */
async function writeAll(s: net.Socket, pieces: Buffer[]): Promise<boolean> {
  for (const p of pieces) {
    if (s.destroyed) return false;
    if (!s.write(p)) await new Promise((r) => { s.once('drain', r); s.once('close', r); });
  }
  return !s.destroyed;
}

/** A client that asks query-status (or `command`) in a loop and keeps the slowest answer. */
async function prober(where: string, command = 'query-status'): Promise<{ stop: () => Promise<{ answers: number; slowestMs: number; replies: Msg[] }> }> {
  const c = await QmpClient.at(where);
  await c.negotiate();
  let stopping = false;
  let slowest = 0;
  const replies: Msg[] = [];
  const loop = (async () => {
    while (!stopping) {
      const t0 = performance.now();
      replies.push(await c.cmd(command));
      slowest = Math.max(slowest, performance.now() - t0);
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  return {
    async stop() {
      stopping = true;
      await loop;
      c.close();
      return { answers: replies.length, slowestMs: slowest, replies };
    },
  };
}

t.test('24 unfinished 4 MiB arrays over unix and TCP, before negotiation', async (t) => {
  const dir = tempDir();
  const d = await startDaemon([], { qmp: [`unix:${join(dir, 'q.sock')},server=on,wait=off`, `tcp:127.0.0.1:${await freePort()},server=on,wait=off`] });
  t.teardown(() => d.stop());
  const before = rssKiB(d.proc.pid!);
  const probe = await prober(d.listening[0]!);
  const body = Buffer.from('1,'.repeat(500_000));
  const sockets = await Promise.all(Array.from({ length: 24 }, (_, i) => connect(d.listening[i % 2]!)));
  const written = await Promise.all(sockets.map((s) => writeAll(s, [Buffer.from('['), body, body])));
  const rss = rssKiB(d.proc.pid!);
  const { answers, slowestMs } = await probe.stop();
  t.same(written, Array(24).fill(true), 'every connection took its 2 MB of input and stays open');
  t.equal(d.proc.exitCode, null, 'the daemon lives');
  // 48 MB of input (96 MB as QEMU counts the message, token text plus one byte per token).
  t.ok(rss - before < 240 * 1024, `RSS grew by ${Math.round((rss - before) / 1024)} MiB for 48 MB of input`);
  t.ok(answers > 0 && slowestMs < 1000, `the other client was answered throughout (${answers} answers, slowest ${Math.round(slowestMs)} ms)`);
  sockets.forEach((s) => s.destroy());
});

t.test('past --qmp-memory-limit the connection holding the most is dropped, with a log line', async (t) => {
  const d = await startDaemon(['--qmp-memory-limit', '24M']);
  t.teardown(() => d.stop());
  const greedy = await connect(d.listening[0]!);
  greedy.on('error', () => undefined);
  const closed = new Promise<void>((r) => greedy.once('close', () => r()));
  const other = await QmpClient.at(d.listening[0]!);
  await other.negotiate();
  // A 32 MiB string: within QEMU's 64 MiB per message, beyond what all connections may hold.
  const finished = await writeAll(greedy, [Buffer.from('{"execute":"query-status","id":"'), Buffer.alloc(32 * MiB, 0x61)]);
  await closed;
  t.notOk(finished, 'the daemon closed the greedy connection before it finished');
  t.match(d.stderr(), /"held":\d+.*holds the most/, 'the drop is logged');
  t.same(await other.cmd('query-status', undefined, 7), { return: { status: 'running', singlestep: false, running: true }, id: 7 }, 'the other client goes on');
  other.close();
});

t.test('2,000 pipelined requests: the migration and the other clients go on meanwhile', async (t) => {
  const ram = await randomRamFile(128 * MiB);
  const p = await startPair({ memory: '128M', srcArgs: ['--memory-file', ram] });
  t.teardown(p.stop);
  // 8 MiB/s: 16 s for the RAM, longer than the flood takes on a quiet machine.
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 8 * MiB });
  await p.src.qmp.ok('migrate', { uri: p.uri });
  const before = ((await untilInfo(p.src, (i) => i.status === 'active')).ram as Msg).transferred as number;
  const probe = await prober(p.src.daemon.listening[0]!, 'query-migrate');
  const flood = await QmpClient.at(p.src.daemon.listening[0]!);
  await flood.negotiate();
  const from = flood.lines.length;
  flood.send('{"execute":"query-qmp-schema"}'.repeat(2000));
  // Events (MIGRATION_PASS) may come between the replies on this monitor too.
  const answers = await flood.replies(from, 2000, 120_000);
  const { slowestMs, replies } = await probe.stop();
  const last = replies.at(-1)!.return as Msg;
  t.ok(answers.every((l) => l.startsWith('{"return": [')), 'all 2,000 answered');
  t.ok(slowestMs < 500, `query-migrate on another connection: slowest ${Math.round(slowestMs)} ms`);
  // On a loaded machine the flood may outlast the migration, which may then have completed.
  t.ok(['active', 'completed'].includes(last.status as string), `the migration neither failed nor stopped (${String(last.status)})`);
  t.ok(((last.ram as Msg).transferred as number) > before, 'the migration moved on during the flood');
  flood.close();
  await p.src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 0 });
  await migrationStatus(p.src, 'completed');
});

/** Sends `text`, shuts the sending side, and collects every line until the daemon closes. */
async function halfClosed(where: string, text: string): Promise<string[]> {
  const s = await connect(where);
  let got = '';
  s.on('data', (d: Buffer) => (got += d.toString('latin1')));
  s.end(text);
  await new Promise((r) => s.once('close', r));
  return got.split('\r\n').filter(Boolean).map((l) => l.replace(/"micro": \d+/, '"micro": M').replace(/"package": "[^"]*"/, '"package": P'));
}

const HALF_CLOSED = (file: string): string =>
  '{"execute":"qmp_capabilities"}\n' +
  `{"execute":"pmemsave","arguments":{"val":0,"size":4096,"filename":"${file}"}}\n` +
  '{"execute":"query-status"}'; // no newline: a last command is answered all the same

t.test('a client that shuts its sending side still gets every reply, over unix and TCP', async (t) => {
  const dir = tempDir();
  const d = await startDaemon(['-S'], { qmp: [`unix:${join(dir, 'q.sock')},server=on,wait=off`, `tcp:127.0.0.1:${await freePort()},server=on,wait=off`] });
  t.teardown(() => d.stop());
  for (const where of d.listening) {
    const lines = await halfClosed(where, HALF_CLOSED(join(dir, 'p.bin')));
    t.same(lines.slice(1), ['{"return": {}}', '{"return": {}}', '{"return": {"status": "prelaunch", "singlestep": false, "running": false}}'], where);
  }
  const before = await halfClosed(d.listening[0]!, '{"execute":"query-status"}');
  t.same(before.slice(1), ['{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with \'qmp_capabilities\'"}}']);
});

t.test('QEMU 7.2 answers a half-closed client the same way', { skip: !qemuInstalled() && 'qemu-system-x86_64 is not installed' }, async (t) => {
  const dir = tempDir();
  const qemu = await startQemu(['-S']);
  const d = await startDaemon(['-S']);
  t.teardown(async () => {
    await qemu.stop();
    await d.stop();
  });
  const fromQemu = await halfClosed(`unix:${qemu.socket}`, HALF_CLOSED(join(dir, 'q.bin')));
  const fromQmigd = await halfClosed(d.listening[0]!, HALF_CLOSED(join(dir, 'm.bin')));
  t.same(fromQmigd.slice(1), fromQemu.slice(1));
});
