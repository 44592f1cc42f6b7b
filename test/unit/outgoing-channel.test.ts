/**
 * OutgoingChannel.drained() over a real socket: it must resolve once the bytes left, however few
 * they were. A stream emits 'drain' only after a write that took it past its high-water mark, so
 * a few bytes queued behind a full socket buffer (the page thread's duplicate descriptor can fill
 * it) never bring one; a migration waiting for it hung in `active` for good.
 */
import net from 'node:net';
import t from 'tap';
import { OutgoingChannel } from '../../src/migration/channels/outgoing-channel.js';
import { parseMigrationUri } from '../../src/migration/channels/uri.js';
import { join } from 'node:path';
import { tempDir } from '../helpers/daemon.js';
import type { Test } from '../helpers/interop.js';

/** 'drained' if `p` settles within `ms`, else 'timeout'. */
async function within(p: Promise<unknown>, ms: number): Promise<'drained' | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), ms)));
  try {
    return await Promise.race([p.then(() => 'drained' as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A channel to a peer that reads nothing until told (`peer()`, once connected): on `unixPath`, else a loopback TCP port. */
async function toPausedPeer(t: Test, unixPath?: string): Promise<{ channel: OutgoingChannel; peer: () => net.Socket }> {
  let peer: net.Socket | undefined;
  const server = net.createServer((s) => {
    peer = s;
    s.pause(); // reads nothing yet: the socket buffers fill
  });
  await new Promise<void>((r) => (unixPath ? server.listen(unixPath, r) : server.listen(0, '127.0.0.1', r)));
  t.teardown(() => {
    peer?.destroy();
    server.close();
  });
  const uri = unixPath ? `unix:${unixPath}` : `tcp:127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  const channel = await OutgoingChannel.connect(parseMigrationUri(uri)!, () => undefined);
  t.teardown(() => channel.shutdown());
  return { channel, peer: () => peer! };
}

const outOf = (channel: OutgoingChannel): net.Socket => (channel as unknown as { out: net.Socket }).out;

/** Small writes (each under the high-water mark) until one stays queued: the kernel's buffers are full. Returns the bytes written. */
async function fillUntilQueued(channel: OutgoingChannel): Promise<number> {
  let sent = 0;
  for (let i = 0; i < 100_000 && outOf(channel).writableLength === 0; i++) {
    await channel.write([Buffer.alloc(8192, i & 0xff)]);
    sent += 8192;
    await new Promise((r) => setTimeout(r, 1));
  }
  return sent;
}

t.test('drained() resolves for a small write queued behind a full socket buffer once the peer reads', async (t) => {
  const { channel, peer } = await toPausedPeer(t);
  await fillUntilQueued(channel);
  t.ok(outOf(channel).writableLength > 0, 'a write is queued behind the full socket buffer');
  t.notOk(outOf(channel).writableNeedDrain, "the stream will emit no 'drain' for it");

  let done = false;
  const drained = channel.drained().then(() => (done = true));
  await new Promise((r) => setTimeout(r, 200));
  t.notOk(done, 'not drained while the peer reads nothing');
  peer().on('data', () => undefined);
  peer().resume();
  t.equal(await within(drained, 10_000), 'drained', 'drained once the peer read it');
  t.ok(channel.usable, 'the channel is still usable');
});

t.test('drained() resolves when the channel is shut down under it', async (t) => {
  const { channel } = await toPausedPeer(t);
  await fillUntilQueued(channel);
  const drained = channel.drained();
  channel.shutdown();
  t.equal(await within(drained, 5000), 'drained');
  t.notOk(channel.usable);
});

t.test('drained() writes nothing of its own: the peer reads every byte and closes, and the channel saw no error', async (t) => {
  // A unix socket, as libvirt's migrations use: there a write of any length after the peer has
  // gone fails (EPIPE), so nothing may be written just to learn that the bytes before it left
  // (an empty write did that, and failed a qmigd → QEMU migration that had succeeded).
  const { channel, peer } = await toPausedPeer(t, join(tempDir(), 'peer.sock'));
  const sent = await fillUntilQueued(channel);
  let received = 0;
  const closed = new Promise<void>((r) => {
    peer().on('data', (d: Buffer) => {
      received += d.length;
      if (received === sent) peer().destroy(); // a destination done with its stream
    });
    peer().on('close', () => r());
  });
  const drained = channel.drained();
  peer().resume();
  t.equal(await within(drained, 10_000), 'drained');
  await closed;
  t.equal(received, sent, 'the peer had every byte');
  t.equal(await within(channel.drained(), 1000), 'drained', 'drained again once the peer is gone');
  await new Promise((r) => setTimeout(r, 100));
  t.equal(channel.error, undefined, 'the channel saw no error');
});
