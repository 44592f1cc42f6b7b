/**
 * One destination multifd channel's thread: it reads the connection handed over by descriptor
 * (with the bytes the main thread read past the channel's greeting) and copies each packet's
 * pages into the shared guest RAM (receivePackets). Messages out: sync (then it waits for
 * 'go'), failed {message}.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { SocketInput } from '../channels/socket-input.js';
import { StreamReader } from '../stream/reader.js';
import { GuestRam, type RamBacking } from '../../guest/ram.js';
import { setActiveProfile, type ProfileId } from '../../profiles/index.js';
import { receivePackets } from './receiver.js';
import { followFaults, type ThreadFault } from '../../faults/in-thread.js';

export interface RecvWorkerData {
  fd: number;
  /** What was read past the greeting before the hand-over. */
  prefix: Buffer | Uint8Array;
  /** Where guest RAM is (GuestRam.backing) and its size. */
  ram: RamBacking;
  size: number;
  /** GuestRam.knownZero, which this thread's writes clear, and GuestRam.faultedIn. */
  knownZero: Uint8Array;
  faultedIn?: Uint8Array;
  ramId: string;
  /** The channel's id, and the release this daemon is (a thread starts with the default). */
  channel: number;
  profile: ProfileId;
  /** The faults on this channel (src/faults/in-thread.ts). */
  faults: ThreadFault[];
}

export type FromRecvWorker = { kind: 'sync' } | { kind: 'failed'; message: string } | { kind: 'fault-fired' };

/**
 * Bytes a channel reads ahead before it stops reading its socket: two packets (512 KiB of pages
 * each). Every channel holds its own; with the main channel's 4 MiB a destination of 2 channels
 * peaked about 7 MiB higher, and was no faster (the bench's 1 GiB multifd migration, 3 runs each).
 */
const READ_AHEAD = 1 << 20;

const port = parentPort!;
const { fd, prefix, ram: backing, size, knownZero, faultedIn, ramId, channel, profile, faults } = workerData as RecvWorkerData;
setActiveProfile(profile);
followFaults(port, faults);
const post = (m: FromRecvWorker): void => port.postMessage(m);
const input = new SocketInput(fd);
input.markFaultable({ channel: 'multifd', index: channel, side: 'receive' });
input.socket.on('error', () => undefined); // reported by the reader as an end of stream
const reader = new StreamReader(input, Buffer.from(prefix.buffer, prefix.byteOffset, prefix.byteLength), READ_AHEAD);
input.resume();

let go: (() => void) | undefined;
port.on('message', (m) => m === 'go' && go?.());
try {
  const ram = new GuestRam(ramId, size, backing, knownZero, faultedIn);
  await receivePackets(reader, ram, () =>
    new Promise<void>((resolve) => {
      go = resolve;
      post({ kind: 'sync' });
    }),
    channel,
  );
} catch (err) {
  post({ kind: 'failed', message: (err as Error).message });
}
input.socket.destroy();
port.close();
