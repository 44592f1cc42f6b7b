/**
 * What a multifd destination makes of connections that are no good channel: each greeting is
 * read and checked before a channel gets a thread, a bad one is refused with QEMU 7.2's report,
 * a stray first connection (taken for the main channel, as 7.2 takes it) ends the migration as
 * 7.2 ends it, and idle connections cost neither threads nor memory.
 */
import net from 'node:net';
import t from 'tap';
import { encodeInit, MULTIFD_MAGIC } from '../../src/migration/multifd/format.js';
import { freePort, rssKiB, threads, threadsSettled } from '../helpers/daemon.js';
import { migrationStatus, setCaps, side, type Side } from '../helpers/migration.js';
import { setupStream } from '../helpers/stream-gen.js';


/**
 * A destination with multifd (2 channels) listening on a port of its own; with --page-thread on,
 * whose load thread boots as the destination starts to listen: returned once the process's
 * threads stay the same for a while, so that later counts see only what connections start.
 */
async function destination(): Promise<{ dst: Side; port: number }> {
  const port = await freePort();
  const dst = await side(['-m', '4M', '--incoming', 'defer', '--page-thread', 'on']);
  await setCaps(dst, { multifd: true });
  await dst.qmp.ok('migrate-incoming', { uri: `tcp:127.0.0.1:${port}` });
  await threadsSettled(dst.daemon.proc.pid!);
  return { dst, port };
}

async function connect(port: number, bytes?: Buffer): Promise<net.Socket> {
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => undefined);
  await new Promise((r) => s.once('connect', r));
  if (bytes) s.write(bytes);
  return s;
}

const waitFor = async (what: () => boolean, ms = 10_000): Promise<void> => {
  const deadline = Date.now() + ms;
  while (!what()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
};

t.test('bad greetings are refused with 7.2\'s reports, before any thread starts', async (t) => {
  const { dst, port } = await destination();
  t.teardown(() => dst.daemon.stop());
  const pid = dst.daemon.proc.pid!;
  const before = threads(pid);
  const main = await connect(port, setupStream('ram', 4 << 20));
  const badMagic = encodeInit(0);
  badMagic.writeUInt32BE(0xdeadbeef, 0);
  const badVersion = encodeInit(0);
  badVersion.writeUInt32BE(2, 4);
  const badUuid = encodeInit(1);
  badUuid.fill(7, 8, 24);
  const cases: Array<[Buffer, string]> = [
    [badMagic, 'failed to receive packet via multifd channel 0: multifd: received packet magic deadbeef expected 11223344'],
    [badVersion, 'failed to receive packet via multifd channel 0: multifd: received packet version 2 expected 1'],
    [badUuid, "failed to receive packet via multifd channel 0: multifd: received uuid '07070707-0707-0707-0707-070707070707' and expected uuid '00000000-0000-0000-0000-000000000000' for channel 1"],
    // Ids 2 and 3 with 2 channels: 7.2 prints the versions here (sic), and crashes on id 2.
    [encodeInit(3), 'failed to receive packet via multifd channel 0: multifd: received channel version 1 expected 1'],
    [encodeInit(2), 'failed to receive packet via multifd channel 0: multifd: received channel version 1 expected 1'],
    [encodeInit(0).subarray(0, 25), 'failed to receive packet via multifd channel 0: Unexpected end-of-file before all data were read'],
  ];
  for (const [bytes, line] of cases) {
    const s = await connect(port, bytes);
    if (bytes.length < 64) s.end();
    await new Promise((r) => s.once('close', r));
    await waitFor(() => dst.daemon.stderr().includes(`"msg":${JSON.stringify(line)}`));
    t.pass(line);
  }
  const good = await connect(port, encodeInit(0));
  const duplicate = await connect(port, encodeInit(0));
  await new Promise((r) => duplicate.once('close', r));
  await waitFor(() => dst.daemon.stderr().includes(`"msg":"multifd: received id '0' already setup'"`));
  t.pass('a second channel 0 is refused');
  t.equal(threads(pid), before + 1, 'one thread: for the one good channel');
  t.same(await dst.qmp.ok('query-migrate'), { 'socket-address': [{ port: String(port), ipv4: true, host: '127.0.0.1', type: 'inet' }] }, 'the migration waits for its last channel');
  for (const s of [main, good]) s.destroy();
  // The main channel ended before its channels came: the stream it sent stops short.
  t.equal((await dst.daemon.exited).code, 1);
  t.match(dst.daemon.stderr(), /load of migration failed/);
});

t.test('a hundred idle connections: no threads and little memory', async (t) => {
  const { dst, port } = await destination();
  t.teardown(() => dst.daemon.stop());
  const pid = dst.daemon.proc.pid!;
  const [tasks, rss] = [threads(pid), rssKiB(pid)];
  const main = await connect(port, setupStream('ram', 4 << 20));
  const idle = await Promise.all(Array.from({ length: 100 }, () => connect(port)));
  await new Promise((r) => setTimeout(r, 300));
  t.equal(threads(pid), tasks, 'no thread for a connection that has not greeted');
  t.ok(rssKiB(pid) - rss < 32 * 1024, `RSS grew by ${Math.round((rssKiB(pid) - rss) / 1024)} MiB`);
  main.destroy();
  await dst.daemon.exited;
  idle.forEach((s) => s.destroy());
});

t.test('a stray first connection becomes the main channel and the migration fails as in 7.2', async (t) => {
  const { dst, port } = await destination();
  const src = await side(['-m', '32M']);
  t.teardown(async () => {
    await src.daemon.stop();
    await dst.daemon.stop();
  });
  await setCaps(src, { multifd: true, events: true });
  // Slow enough (about a second) that the source still writes its main channel after the
  // destination turned it away: a source that has written everything before that completes,
  // in QEMU as here (nothing it waits for comes back from the destination without a return path).
  await src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 32 << 20 });
  const stray = await connect(port);
  await src.qmp.ok('migrate', { uri: `tcp:127.0.0.1:${port}` });
  // The source's main channel came second: it is read as a channel, whose magic is 'QEVM'.
  await waitFor(() => dst.daemon.stderr().includes(`received packet magic 5145564d expected ${MULTIFD_MAGIC.toString(16)}`));
  await migrationStatus(src, 'failed');
  t.equal(((await src.qmp.ok('query-status')) as { status: string }).status, 'running', 'the source fails, its guest runs on');
  stray.destroy();
  t.equal((await dst.daemon.exited).code, 1, 'the destination exits 1 once the stray ends');
  t.match(dst.daemon.stderr(), /"msg":"Not a migration stream"/);
  t.match(dst.daemon.stderr(), /"msg":"load of migration failed: Invalid argument"/);
});
