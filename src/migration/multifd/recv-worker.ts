/**
 * One destination multifd channel's thread: it reads the connection handed over by descriptor
 * and copies each packet's pages into the shared guest RAM (receivePackets). Messages out:
 * greeted {id}, sync (then it waits for 'go'), failed {message}.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { SocketInput } from '../channels/socket-input.js';
import { StreamReader } from '../stream/reader.js';
import { receivePackets } from './receiver.js';

export interface RecvWorkerData {
  fd: number;
  ram: SharedArrayBuffer;
  /** GuestRam.knownZero, which this thread's writes clear. */
  knownZero?: Uint8Array;
  ramId: string;
  channels: number;
}

export type FromRecvWorker = { kind: 'greeted'; id: number } | { kind: 'sync' } | { kind: 'failed'; message: string };

const port = parentPort!;
const { fd, ram: shared, knownZero, ramId, channels } = workerData as RecvWorkerData;
const post = (m: FromRecvWorker): void => port.postMessage(m);
const input = new SocketInput(fd);
input.socket.on('error', () => undefined); // reported by the reader as an end of stream
const reader = new StreamReader(input);
input.resume();

let go: (() => void) | undefined;
port.on('message', () => go?.());
try {
  const ram = {
    bytes: Buffer.from(shared),
    id: ramId,
    size: shared.byteLength,
    wrote: (page: number) => knownZero && (knownZero[page] = 0),
  };
  await receivePackets(reader, ram, channels, {
    greeted: (id) => post({ kind: 'greeted', id }),
    sync: () =>
      new Promise<void>((resolve) => {
        go = resolve;
        post({ kind: 'sync' });
      }),
  });
} catch (err) {
  post({ kind: 'failed', message: (err as Error).message });
}
input.socket.destroy();
port.close();
