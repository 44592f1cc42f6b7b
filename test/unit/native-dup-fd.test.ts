/**
 * The native addon's dupFd (src/native/dup-fd.ts): a second descriptor of the same open socket,
 * that writes to the same connection and closes on its own; a bad descriptor is refused by name.
 */
import { closeSync, fstatSync, writeSync } from 'node:fs';
import net from 'node:net';
import t from 'tap';
import { dupFd } from '../../src/native/dup-fd.js';

t.test('a duplicate writes to the same connection and closes without closing the first', async (t) => {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise((r) => client.once('connect', r));
  const peer = await accepted;
  const fd = (client as unknown as { _handle: { fd: number } })._handle.fd;
  const dup = dupFd(fd);
  t.not(dup, fd, 'a new number');
  t.ok(fstatSync(dup).isSocket(), 'of a socket');
  const got: Buffer[] = [];
  peer.on('data', (d: Buffer) => got.push(d));
  writeSync(dup, 'through the duplicate; ');
  closeSync(dup);
  client.write('then through the first');
  await new Promise<void>((r) => {
    const check = (): void => (Buffer.concat(got).length >= 45 ? r() : void setTimeout(check, 10));
    check();
  });
  t.equal(Buffer.concat(got).toString(), 'through the duplicate; then through the first');
  client.destroy();
  peer.destroy();
});

t.test('a descriptor that is not open is refused with EBADF', async (t) => {
  t.throws(() => dupFd(1 << 20), { code: 'EBADF' });
});
