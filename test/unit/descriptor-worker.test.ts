/**
 * giveDescriptor() (src/migration/ram/descriptor-worker.ts): a descriptor posted to a thread is
 * the thread's once it says it took it; a thread that ends first leaves it to be closed here,
 * and one that took it is never closed here again (a second close could hit a reused number).
 */
import { fstatSync, openSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import t from 'tap';
import { giveDescriptor } from '../../src/migration/ram/descriptor-worker.js';

const isOpen = (fd: number): boolean => {
  try {
    fstatSync(fd);
    return true;
  } catch {
    return false;
  }
};
/** A thread as startWorker() starts them (no tracking of descriptors it did not open). */
const thread = (code: string): Worker => new Worker(code, { eval: true, trackUnmanagedFds: false });
const exited = (w: Worker): Promise<void> => new Promise((r) => w.once('exit', () => setImmediate(r)));
const message = (w: Worker, kind: string): Promise<void> => new Promise((r) => w.on('message', (m: { kind?: string }) => m.kind === kind && r()));

t.test('a thread that ends without taking the descriptor: closed here', async (t) => {
  const w = thread("require('node:worker_threads').parentPort.once('message', () => process.exit(0))");
  const fd = openSync('/dev/null', 'r');
  const gone = exited(w);
  giveDescriptor(w, fd, { kind: 'attach', fd });
  await gone;
  // fs.close() completes in libuv's pool.
  for (let i = 0; i < 100 && isOpen(fd); i++) await new Promise((r) => setTimeout(r, 10));
  t.notOk(isOpen(fd), 'the descriptor the thread never took is closed');
});

t.test('a thread that took it closes it itself; nothing is closed here after its end', async (t) => {
  const w = thread(
    `const { parentPort } = require('node:worker_threads');
     parentPort.once('message', (m) => {
       parentPort.postMessage({ kind: 'took-descriptor' });
       parentPort.once('message', () => {
         require('node:fs').closeSync(m.fd);
         parentPort.postMessage({ kind: 'closed' });
         setTimeout(() => process.exit(0), 50);
       });
     });`,
  );
  const fd = openSync('/dev/null', 'r');
  const took = message(w, 'took-descriptor');
  giveDescriptor(w, fd, { kind: 'attach', fd });
  await took;
  t.ok(isOpen(fd), 'still open once the thread has it');
  const closed = message(w, 'closed');
  const gone = exited(w);
  w.postMessage('close');
  await closed;
  // The lowest free number: the one the thread just closed.
  const reused = openSync('/dev/null', 'r');
  t.equal(reused, fd, 'a new descriptor gets the number the thread closed');
  await gone;
  await new Promise((r) => setTimeout(r, 50));
  t.ok(isOpen(reused), 'and stays open after the thread ended: not closed a second time');
});
