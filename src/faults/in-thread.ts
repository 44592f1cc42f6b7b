/**
 * Faults on a multifd channel, whose bytes a worker thread moves: the thread keeps its own copy
 * of the faults on its channel (FaultSet.forThread), which follows the daemon's as faults are
 * added and cleared, and reports each one that fires; the daemon counts it, logs it and
 * announces it as its own.
 */
import { type MessagePort, type Worker } from 'node:worker_threads';
import { faults, type FaultSpec } from './faults.js';

export interface ThreadFault {
  id: string;
  spec: FaultSpec;
}

interface FaultsMessage {
  kind: 'faults';
  list: ThreadFault[];
}

interface FiredMessage {
  kind: 'fault-fired';
  id: string;
  action: string;
}

/** Daemon side: keeps `worker`'s copy of multifd channel `index`'s faults in step while it runs. */
export function shareFaults(worker: Worker, index: number): void {
  const stop = faults.watch(() => worker.postMessage({ kind: 'faults', list: faults.forThread(index) } satisfies FaultsMessage));
  worker.on('message', (m: Partial<FiredMessage>) => {
    if (m.kind === 'fault-fired') faults.firedInThread(m.id!, m.action!);
  });
  worker.once('exit', stop);
}

/** Thread side: the copy, armed from `initial` (workerData) and following the daemon's messages. */
export function followFaults(port: MessagePort, initial: ThreadFault[]): void {
  faults.attach({
    fired: (id, _kind, action) => port.postMessage({ kind: 'fault-fired', id, action } satisfies FiredMessage),
    crash: () => process.kill(process.pid, 'SIGKILL'),
  });
  faults.follow(initial);
  port.on('message', (m: Partial<FaultsMessage>) => {
    if (m.kind === 'faults') faults.follow(m.list!);
  });
}
