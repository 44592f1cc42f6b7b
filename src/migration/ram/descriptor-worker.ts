/**
 * Starting the threads that move a channel's bytes through their own duplicate of the channel's
 * descriptor (the page thread, the load thread), booted before they have one: each thread
 * closes only its own duplicate, handed to it once it is up (giveDescriptor(): closed here
 * instead should the thread end before it took it).
 */
import { close } from 'node:fs';
import { Worker, type Transferable } from 'node:worker_threads';
import { dupFd } from '../../native/dup-fd.js';

/** What a thread posts once a descriptor it was given is its own (it closes it from then on). */
export const TOOK_DESCRIPTOR = { kind: 'took-descriptor' } as const;

/**
 * Starts `url` with `data` as its workerData; resolves with the worker once it posts
 * `{kind: 'ready'}`, or undefined where the thread fails or ends first.
 */
export function startWorker(url: URL, data: object): Promise<Worker | undefined> {
  // The descriptors a thread gets are given, not opened by it: Node's tracking of what a thread
  // opens would warn on stderr as a thread closes a file's (mapped-ram) through fs.
  const worker = new Worker(url, { workerData: data, trackUnmanagedFds: false });
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

/**
 * Posts `message`, which gives `worker` the descriptor `fd`: the thread owns it once it posts
 * TOOK_DESCRIPTOR; should it end before (crashed, or closed as the message came), `fd` is closed
 * here, or it would hold its connection open (a destination that waits for an end that never
 * comes). Node emits every message a thread posted before its 'exit'.
 */
export function giveDescriptor(worker: Worker, fd: number, message: unknown, transfer: readonly Transferable[] = []): void {
  const took = (m: { kind?: string }): void => {
    if (m.kind !== TOOK_DESCRIPTOR.kind) return;
    worker.off('message', took);
    worker.off('exit', untaken);
  };
  const untaken = (): void => {
    worker.off('message', took);
    close(fd, () => undefined);
  };
  worker.on('message', took);
  worker.once('exit', untaken);
  worker.postMessage(message, transfer);
}

/** A duplicate of `fd` for a thread of its own, or undefined where none can be had (no addon, a closed descriptor). */
export function duplicateOf(fd: number): number | undefined {
  try {
    return dupFd(fd);
  } catch {
    return undefined;
  }
}
