/**
 * Starting a thread that moves a channel's bytes through its own duplicate of the channel's
 * descriptor (the page thread, the load thread): each thread closes only its own duplicate.
 */
import { closeSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { dupFd } from '../../native/dup-fd.js';

/**
 * Starts `url` with `data(duplicate)` as its workerData; resolves with the worker once it posts
 * `{kind: 'ready'}` (its socket holds the duplicate then), or undefined where `fd` cannot be
 * duplicated or the thread fails or ends first (the duplicate is then closed here, once).
 */
export function startWithDuplicate(url: URL, fd: number, data: (duplicate: number) => object): Promise<Worker | undefined> {
  let duplicate: number;
  try {
    duplicate = dupFd(fd);
  } catch {
    return Promise.resolve(undefined);
  }
  const worker = new Worker(url, { workerData: data(duplicate) });
  worker.unref();
  return new Promise((resolve) => {
    let settled = false;
    const failed = (): void => {
      if (settled) return; // after ready the thread owns the duplicate: its number may be reused
      settled = true;
      try {
        closeSync(duplicate);
      } catch {
        /* already closed */
      }
      resolve(undefined);
    };
    worker.once('message', (m: { kind?: string }) => {
      if (m.kind !== 'ready') return failed();
      settled = true;
      resolve(worker);
    });
    worker.once('error', failed);
    worker.once('exit', failed);
  });
}
