/**
 * Starting the threads that move a channel's bytes through their own duplicate of the channel's
 * descriptor (the page thread, the load thread), booted before they have one: each thread
 * closes only its own duplicate, handed to it once it is up.
 */
import { Worker } from 'node:worker_threads';
import { dupFd } from '../../native/dup-fd.js';

/**
 * Starts `url` with `data` as its workerData; resolves with the worker once it posts
 * `{kind: 'ready'}`, or undefined where the thread fails or ends first.
 */
export function startWorker(url: URL, data: object): Promise<Worker | undefined> {
  const worker = new Worker(url, { workerData: data });
  worker.unref();
  return new Promise((resolve) => {
    let settled = false;
    const settle = (w: Worker | undefined): void => {
      if (!settled) resolve(w);
      settled = true;
    };
    worker.once('message', (m: { kind?: string }) => settle(m.kind === 'ready' ? worker : undefined));
    worker.once('error', () => settle(undefined));
    worker.once('exit', () => settle(undefined));
  });
}

/** A duplicate of `fd` for a thread of its own, or undefined where none can be had (no addon, a closed descriptor). */
export function duplicateOf(fd: number): number | undefined {
  try {
    return dupFd(fd);
  } catch {
    return undefined;
  }
}
