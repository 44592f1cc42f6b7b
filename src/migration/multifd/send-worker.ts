/**
 * One multifd channel's thread (multifd_send_thread): it opens its own connection, greets, and
 * writes the packets the migration hands it, their pages straight from the shared guest RAM.
 * The page work (headers, the copy into the socket and, with zero-page-detection=multifd, telling
 * zero pages from the others: multifd_send_zero_page_detect()) runs here, off the main thread,
 * so the channels use the machine's other cores.
 *
 * Messages in (from MultifdSender): packet, drain, end, shutdown. Messages out: ready or failed
 * (after connecting), sent as packets leave, failed once the channel breaks, and drained
 * {error} in answer to drain.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { OutgoingChannel } from '../channels/outgoing-channel.js';
import type { MigrationUri } from '../channels/uri.js';
import { pageOffset, PAGE_SIZE, PageStore, type RamBacking, SEGMENT_BYTES } from '../../guest/ram.js';
import { setActiveProfile, type ProfileId } from '../../profiles/index.js';
import { encodeHeader, encodeInit } from './format.js';
import type { PacketSent } from './sender.js';
import { followFaults, type ThreadFault } from '../../faults/in-thread.js';

export interface SendWorkerData {
  uri: MigrationUri;
  id: number;
  /** Where guest RAM is (GuestRam.backing) and its size. */
  ram: RamBacking;
  size: number;
  ramId: string;
  /** The release this daemon is (a thread starts with the default). */
  profile: ProfileId;
  /** The faults on this channel (src/faults/in-thread.ts). */
  faults: ThreadFault[];
  /** GuestRam.knownZero: pages never written, zero without a look. */
  knownZero?: Uint8Array;
}

export type ToSendWorker =
  /** `detect`: `offsets` are still to be told apart, zero or not, here. */
  | { kind: 'packet'; flags: number; packetNum: bigint; offsets: number[]; zeroOffsets: number[]; detect: boolean }
  | { kind: 'drain' }
  | { kind: 'end' }
  | { kind: 'shutdown'; reason?: string };

export type FromSendWorker =
  | { kind: 'ready' }
  | { kind: 'failed'; message: string }
  /** `charged`: what the packet was counted as in flight; `counted`: what it carried, where this thread told its pages apart. */
  | { kind: 'sent'; charged: number; counted?: PacketSent }
  | { kind: 'drained'; error?: string }
  | { kind: 'fault-fired' };

const port = parentPort!;
const { uri, id, ram: backing, size, ramId, profile, faults, knownZero } = workerData as SendWorkerData;
setActiveProfile(profile);
followFaults(port, faults);
const ram = new PageStore(size, backing);
const post = (m: FromSendWorker): void => port.postMessage(m);

/**
 * multifd_send_zero_page_detect(): the zero pages move to the end, each swapped with the last
 * page not yet looked at, so that the packet lists its pages in the order QEMU's does.
 */
function splitZero(pages: number[]): { offsets: number[]; zeroOffsets: number[] } {
  const all = pages.slice();
  let i = 0;
  for (let j = all.length - 1; i <= j; ) {
    const page = all[i]! / PAGE_SIZE;
    if (knownZero?.[page] !== 1 && !ram.isZero(page)) {
      i++;
      continue;
    }
    all[i] = all[j]!;
    all[j--] = page * PAGE_SIZE;
  }
  return { offsets: all.slice(0, i), zeroOffsets: all.slice(i) };
}

/** The pages as views of RAM, pages adjacent in one segment of RAM joined into one piece. */
function pageRuns(offsets: number[]): Buffer[] {
  const runs: Buffer[] = [];
  for (let i = 0; i < offsets.length; ) {
    const page = offsets[i]! / PAGE_SIZE;
    const start = pageOffset(page);
    let end = start + PAGE_SIZE;
    while (++i < offsets.length && offsets[i] === offsets[i - 1]! + PAGE_SIZE && end < SEGMENT_BYTES) end += PAGE_SIZE;
    runs.push(ram.segment(page).subarray(start, end));
  }
  return runs;
}

let channel: OutgoingChannel;
try {
  channel = await OutgoingChannel.connect(uri, () => undefined);
  channel.markFaultable({ channel: 'multifd', index: id, side: 'send' });
  await channel.write([encodeInit(id)]);
  post({ kind: 'ready' });
} catch (err) {
  post({ kind: 'failed', message: (err as Error).message });
  process.exit(0);
}

// Messages are handled one after another: a packet waits for room on the socket before the next.
let turn = Promise.resolve();
let reported = false;
port.on('message', (m: ToSendWorker) => {
  turn = turn.then(() => handle(m));
});

async function handle(m: ToSendWorker): Promise<void> {
  switch (m.kind) {
    case 'packet': {
      const { offsets, zeroOffsets } = m.detect ? splitZero(m.offsets) : m;
      const header = encodeHeader({ flags: m.flags, packetNum: m.packetNum, block: ramId, offsets, zeroOffsets });
      const counted = m.detect ? { bytes: header.length + offsets.length * PAGE_SIZE, normal: offsets.length, zero: zeroOffsets.length } : undefined;
      const sent: FromSendWorker = { kind: 'sent', charged: header.length + m.offsets.length * PAGE_SIZE, counted };
      await channel.write([header, ...pageRuns(offsets)], () => post(sent));
      if (channel.error && !reported) {
        reported = true;
        post({ kind: 'failed', message: channel.error });
      }
      return;
    }
    case 'drain':
      await channel.drained();
      post({ kind: 'drained', error: channel.error });
      return;
    case 'end':
      channel.end();
      port.close();
      return;
    case 'shutdown':
      channel.shutdown(m.reason);
      port.close();
      return;
  }
}
