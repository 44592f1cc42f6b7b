/**
 * SocketInput under a StreamReader: whatever the read sizes and however slowly the reader
 * consumes, the bytes come out as they were sent, reused blocks never overwrite unread bytes,
 * and the memory stays bounded by what the reader holds back.
 */
import { createHash, randomBytes, randomInt } from 'node:crypto';
import t from 'tap';
import { SocketInput } from '../../src/migration/channels/socket-input.js';
import { StreamReader } from '../../src/migration/stream/reader.js';
import { acceptedPair } from '../helpers/socket-pair.js';

const TOTAL = 48 << 20;

t.test('bytes arrive intact through reused blocks, with a slow reader', async (t) => {
  const { accepted, client, close } = await acceptedPair();
  t.teardown(close);
  t.ok(SocketInput.canTakeOver(accepted), 'this Node exposes the handle SocketInput needs');
  const input = new SocketInput(accepted);
  const reader = new StreamReader(input);
  input.resume();

  const sent = createHash('sha256');
  (async () => {
    let left = TOTAL;
    while (left > 0) {
      const b = randomBytes(Math.min(left, randomInt(1, 3 << 20)));
      sent.update(b);
      left -= b.length;
      if (!client.write(b)) await new Promise((r) => client.once('drain', r));
    }
    client.end();
  })();

  const got = createHash('sha256');
  const target = Buffer.alloc(1 << 20);
  let read = 0;
  for (let i = 0; read < TOTAL; i++) {
    const n = Math.min(TOTAL - read, i % 3 === 0 ? randomInt(1, 16) : randomInt(1, 300 << 10));
    await reader.need(n);
    if (i % 2) got.update(reader.view(n));
    else {
      reader.copyTo(target, 0, n);
      got.update(target.subarray(0, n));
    }
    read += n;
    // Now and then the reader falls behind, so that the source pauses and blocks pile up.
    if (i % 50 === 0) await new Promise((r) => setTimeout(r, 2));
  }
  t.ok(await reader.atEnd(), 'the end of the stream is seen');
  t.equal(got.digest('hex'), sent.digest('hex'), 'the bytes read are the bytes sent');
  t.ok(input.blocksAllocated <= 24, `blocks stay bounded (${input.blocksAllocated} of 1 MiB for a ${TOTAL >> 20} MiB stream)`);
});

t.test('the taken-over socket still writes (the return path) and reports the peer closing', async (t) => {
  const { accepted, client, close } = await acceptedPair();
  t.teardown(close);
  const input = new SocketInput(accepted);
  const reader = new StreamReader(input);
  input.resume();
  const echoed = new Promise<Buffer>((r) => client.once('data', r));
  input.socket.write('pong');
  t.equal((await echoed).toString(), 'pong');
  client.write(Buffer.from([1, 2, 3]));
  client.destroy();
  await reader.need(3);
  t.same([...reader.view(3)], [1, 2, 3]);
  t.ok(await reader.atEnd());
  await t.rejects(reader.need(1), /unexpected end of migration stream/);
});
