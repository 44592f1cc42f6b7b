/**
 * Starting the threads that move a channel's bytes through their own duplicate of the channel's
 * descriptor (the page thread, the load thread): each thread closes only its own duplicate.
 */
import { closeSync } from 'node:fs';
import { Worker, type TransferListItem } from 'node:worker_threads';
import { dupFd } from '../../native/dup-fd.js';

/**
 * Starts `url` with `data` as its workerData (moving `transfer` there); resolves with the worker
 * once it posts `{kind: 'ready'}`, or undefined where the thread fails or ends first.
 */
export function startWorker(url: URL, data: object, transfer?: TransferListItem[]): Promise<Worker | undefined> {
  const worker = new Worker(url, { workerData: data, transferList: transfer });
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

/**
 * startWorker() with `data(duplicate)`, the thread's own duplicate of `fd`; undefined where `fd`
 * cannot be duplicated or the thread does not start (the duplicate is then closed here, once:
 * after ready the thread owns it, and its number may be reused).
 */
export async function startWithDuplicate(url: URL, fd: number, data: (duplicate: number) => object, transfer?: TransferListItem[]): Promise<Worker | undefined> {
  const duplicate = duplicateOf(fd);
  if (duplicate === undefined) return undefined;
  const worker = await startWorker(url, data(duplicate), transfer);
  if (!worker) {
    try {
      closeSync(duplicate);
    } catch {
      /* already closed */
    }
  }
  return worker;
}
