/**
 * QEMU 10.0's `channels` argument: migrate-incoming's checks and the listener it opens, compared
 * with the real QEMU 10.0 started with -incoming defer; a whole migration between two qmigd
 * 10.0 daemons whose addresses are given as channels (a unix socket, an exec argv), which must
 * arrive as the URI spelling would; the refusals that are qmigd's own, not QEMU's.
 */
import net from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { tempDir } from '../helpers/daemon.js';
import { digest, randomRamFile, side, untilInfo, type Side } from '../helpers/migration.js';
import { qemuSkip, startQemu } from '../helpers/qemu.js';
import { QmpClient, type Msg } from '../helpers/qmp-client.js';

const unixChannel = (path: string): Msg[] => [{ 'channel-type': 'main', addr: { transport: 'socket', type: 'unix', path } }];

/** The incoming requests, each followed by query-migrate, with the socket path the side was given. */
const incomingRequests = (path: string, busyPort: number): Array<[string, Msg]> => [
  ['migrate-incoming', {}],
  ['migrate-incoming', { channels: [] }],
  ['migrate-incoming', { uri: `unix:${path}`, channels: unixChannel(path) }],
  ['migrate-incoming', { channels: [...unixChannel(path), { 'channel-type': 'cpr', addr: { transport: 'socket', type: 'unix', path } }] }],
  ['migrate-incoming', { uri: 'foo:bar' }],
  ['migrate-incoming', { uri: `file:${path},offset=x` }],
  // An address that cannot be listened on: the state is left in setup, and a retry refused.
  ['migrate-incoming', { channels: [{ 'channel-type': 'main', addr: { transport: 'socket', type: 'inet', host: '127.0.0.1', port: String(busyPort) } }] }],
  ['migrate-incoming', { channels: unixChannel(path) }],
  ['migrate-incoming', { channels: unixChannel(path) }],
  ['migrate-incoming', { channels: unixChannel(path) }],
];

async function replies(c: QmpClient, path: string, busyPort: number): Promise<string[]> {
  const out: string[] = [];
  for (const [execute, args] of incomingRequests(path, busyPort)) {
    const r = await c.cmd(execute, args);
    const info = await c.cmd('query-migrate');
    out.push(JSON.stringify(r).replaceAll(path, 'PATH'), JSON.stringify(info).replaceAll(path, 'PATH'));
  }
  return out;
}

t.test('migrate-incoming with uri or channels answers as QEMU 10.0', { skip: qemuSkip('10.0') }, async (t) => {
  const dir = tempDir();
  const qemu = await startQemu(['-S', '-incoming', 'defer'], { release: '10.0' });
  const ours = await side(['-S', '--qemu-version', '10.0', '--incoming', 'defer']);
  const theirs = await QmpClient.at(`unix:${qemu.socket}`);
  t.teardown(async () => {
    theirs.close();
    ours.qmp.close();
    await qemu.stop();
    await ours.daemon.stop();
  });
  await theirs.negotiate();
  // A port already taken on 127.0.0.1: listening there fails on both.
  const busy = net.createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
  t.teardown(() => busy.close());
  const port = (busy.address() as net.AddressInfo).port;
  const fromQemu = await replies(theirs, join(dir, 'qemu.sock'), port);
  const fromQmigd = await replies(ours.qmp, join(dir, 'qmigd.sock'), port);
  t.same(fromQmigd, fromQemu);
  t.match(fromQemu[12], /Address already in use/, 'the taken port was refused');
  t.match(fromQemu[13], /"status":"setup"/, 'and left the state in setup');
  t.match(fromQemu[14], /Illegal migration incoming state: setup/, 'where a retry is refused');
});

t.test('a migration between 10.0 daemons addressed by channels arrives whole', async (t) => {
  const dir = tempDir();
  const path = join(dir, 'mig.sock');
  const ram = await randomRamFile(8 << 20);
  const dst = await side(['--qemu-version', '10.0', '-m', '8M', '--incoming', 'defer']);
  const src = await side(['--qemu-version', '10.0', '-m', '8M', '--memory-file', ram, '--dirty-rate', '1M']);
  t.teardown(async () => {
    for (const s of [src, dst]) s.qmp.close();
    await Promise.all([src.daemon.stop(), dst.daemon.stop()]);
  });
  await dst.qmp.ok('migrate-incoming', { channels: unixChannel(path) });
  await src.qmp.ok('migrate', { channels: unixChannel(path) });
  const done = await untilInfo(src, (i) => i.status === 'completed' || i.status === 'failed');
  t.equal(done.status, 'completed', 'the source completed');
  await untilInfo(dst, (i) => i.status === 'completed' || i.status === 'failed');
  t.equal(await digest(dst), await digest(src), 'the destination has the source RAM');
});

t.test('an exec channel runs its argv as given', async (t) => {
  const dir = tempDir();
  const file = join(dir, 'stream');
  const ram = await randomRamFile(4 << 20);
  const src = await side(['--qemu-version', '10.0', '-m', '4M', '--memory-file', ram, '-S']);
  t.teardown(async () => {
    src.qmp.close();
    await src.daemon.stop();
  });
  // An argument with a space and a quote stays one argument: no shell splits it.
  const out = join(dir, "it's here");
  await src.qmp.ok('migrate', { channels: [{ 'channel-type': 'main', addr: { transport: 'exec', args: ['/bin/sh', '-c', 'cat > "$1"', 'sh', out] } }] });
  t.equal((await untilInfo(src, (i) => i.status === 'completed' || i.status === 'failed')).status, 'completed');
  const dst = await side(['--qemu-version', '10.0', '-m', '4M', '--incoming', `exec:cat ${JSON.stringify(out)}`]);
  t.teardown(async () => {
    dst.qmp.close();
    await dst.daemon.stop();
  });
  await untilInfo(dst, (i) => i.status === 'completed' || i.status === 'failed');
  t.equal(await digest(dst), await digest(src), 'the stream the argv wrote loads into the same RAM');
  void file;
});

t.test("qmigd's own refusals under 10.0: what QEMU accepts and qmigd cannot do", async (t) => {
  const s: Side = await side(['--qemu-version', '10.0', '-S']);
  t.teardown(async () => {
    s.qmp.close();
    await s.daemon.stop();
  });
  const err = async (execute: string, args: Msg): Promise<unknown> => ((await s.qmp.cmd(execute, args)).error as Msg | undefined)?.desc;
  const cap = (...names: string[]): Msg => ({ capabilities: names.map((capability) => ({ capability, state: true })) });
  t.equal(await err('migrate-set-capabilities', cap('release-ram')), "Migration capability 'release-ram' is not implemented by qmigd");
  t.equal(await err('migrate-set-parameters', { mode: 'cpr-reboot' }), "Migration parameter 'mode' value 'cpr-reboot' is not implemented by qmigd");
  t.equal(await err('migrate-set-parameters', { 'zero-page-detection': 'none' }), undefined, 'zero-page-detection takes none');
  t.equal(await err('migrate', { channels: [{ 'channel-type': 'cpr', addr: { transport: 'exec', args: ['true'] } }] }), 'Channel list has no main entry');
  t.equal(await err('migrate', { channels: [{ 'channel-type': 'main', addr: { transport: 'exec', args: [] } }] }), 'exec migration needs a command to run');
  // vsock and RDMA, which QEMU has: the same refusal whichever spelling names them.
  const vsock = 'qmigd does not implement vsock migration channels';
  t.equal(await err('migrate', { uri: 'vsock:3:1234' }), vsock);
  t.equal(await err('migrate', { channels: [{ 'channel-type': 'main', addr: { transport: 'socket', type: 'vsock', cid: '3', port: '1234' } }] }), vsock);
  const rdma = 'qmigd does not implement rdma migration';
  t.equal(await err('migrate', { uri: 'rdma:127.0.0.1:4444' }), rdma);
  t.equal(await err('migrate', { channels: [{ 'channel-type': 'main', addr: { transport: 'rdma', host: '127.0.0.1', port: '4444' } }] }), rdma);
  t.equal((await s.qmp.cmd('query-status')).error, undefined, 'still serving');
});
