/**
 * The native addon's mapShared (src/native/ram-map.ts): a view of a file mapped shared, whose
 * writes are the file's bytes, and which a second thread mapping the same descriptor sees; a bad
 * descriptor is refused by name.
 */
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import t from 'tap';
import { mapShared } from '../../src/native/ram-map.js';
import { tempDir } from '../helpers/daemon.js';

t.test('writes through the mapping are in the file, and another thread maps the same pages', async (t) => {
  const path = join(tempDir(), 'ram.bin');
  writeFileSync(path, Buffer.alloc(2 * 4096, 0x11));
  const fd = openSync(path, 'r+');
  t.teardown(() => closeSync(fd));
  const second = mapShared(fd, 4096, 4096);
  t.equal(second.length, 4096, 'the length asked for');
  t.equal(second[0], 0x11, 'the file\'s bytes');
  second.write('from the main thread', 0);
  t.equal(readFileSync(path).subarray(4096, 4096 + 20).toString(), 'from the main thread', 'in the file at once');
  // A worker maps the same descriptor (the process's, valid in every thread) and writes page 2.
  const worker = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads');
     const addon = require(workerData.addon);
     const view = Buffer.from(addon.mapShared(workerData.fd, 4096, 4096));
     const seen = view.toString('utf8', 0, 20);
     view.write('from a worker thread', 32);
     parentPort.postMessage(seen);`,
    { eval: true, workerData: { fd, addon: join(import.meta.dirname, '..', '..', '..', 'native', 'build', 'Release', 'qmigd_native.node') } },
  );
  const seen = await new Promise((resolve, reject) => worker.once('message', resolve).once('error', reject));
  t.equal(seen, 'from the main thread', 'the worker sees the main thread\'s write');
  t.equal(second.toString('utf8', 32, 52), 'from a worker thread', 'and the main thread the worker\'s');
});

t.test('a descriptor that is not open is refused with EBADF', async (t) => {
  t.throws(() => mapShared(1 << 20, 0, 4096), { code: 'EBADF' });
});
