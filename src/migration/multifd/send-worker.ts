/**
 * One multifd channel's thread (multifd_send_thread): it opens its own connection, greets, and
 * writes the packets the migration hands it, their pages straight from the shared guest RAM.
 * The page work (headers, the copy into the socket and, with zero-page-detection=multifd, telling
 * zero pages from the others: multifd_send_zero_page_detect()) runs here, off the main thread,
 * so the channels use the machine's other cores.
 *
 * Messages in (from MultifdSender, and from the page thread through the port the first `port`
 * message brings): packet, drain and end, taken in the order of their `seq`
 * (channel-state.ts); shutdown, at once. Messages out: ready or failed (after connecting), sent
 * as packets this thread counts leave, failed once the channel breaks, and drained {error} in
 * answer to drain.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { OutgoingChannel } from '../channels/outgoing-channel.js';
import type { MigrationUri } from '../channels/uri.js';
import { pageOffset, PAGE_SIZE, PageStore, type RamBacking, SEGMENT_BYTES } from '../../guest/ram.js';
import { setActiveProfile, type ProfileId } from '../../profiles/index.js';
import { encodeHeader, encodeInit } from './format.js';
import type { PacketSent } from './sender.js';
import { followFaults, type ThreadFault } from '../../faults/in-thread.js';
import { ChannelState } from './channel-state.js';

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
  /** The channels' ChannelState memory. */
  state: SharedArrayBuffer;
}

export type ToSendWorker =
  /** `detect`: `offsets` are still to be told apart, zero or not, here; `charged`: the bytes it was charged in flight. */
  | { kind: 'packet'; seq: number; flags: number; packetNum: bigint; offsets: number[]; zeroOffsets: number[]; detect: boolean; charged: number }
  | { kind: 'drain'; seq: number }
  | { kind: 'end'; seq: number }
  | { kind: 'shutdown'; reason?: string }
  /** The page thread's way in. */
  | { kind: 'port'; port: MessagePort };

export type FromSendWorker =
  | { kind: 'ready' }
  | { kind: 'failed'; message: string }
  /** A packet whose pages this thread told apart left: what it carried. */
  | { kind: 'sent'; counted: PacketSent }
  | { kind: 'drained'; error?: string }
  | { kind: 'fault-fired' };

const port = parentPort!;
const { uri, id, ram: backing, size, ramId, profile, faults, knownZero, state: memory } = workerData as SendWorkerData;
setActiveProfile(profile);
followFaults(port, faults);
const ram = new PageStore(size, backing);
const post = (m: FromSendWorker): void => port.postMessage(m);
const state = ChannelState.of(memory, id);

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

// Messages are handled one after another, in their order: a packet waits for room on the socket
// before the next. Those that came before their turn wait in `early`.
let turn = Promise.resolve();
let expected = 0;
const early = new Map<number, Extract<ToSendWorker, { seq: number }>>();
let reported = false;
let pageThread: MessagePort | undefined;
const receive = (m: ToSendWorker): void => {
  // Now, not in turn: a packet waiting on a full socket must end.
  if (m.kind === 'shutdown') return void handle(m);
  if (m.kind === 'port') {
    pageThread = m.port;
    pageThread.on('message', receive);
    return;
  }
  early.set(m.seq, m);
  for (let next = early.get(expected); next; next = early.get(expected)) {
    early.delete(expected++);
    const now = next;
    turn = turn.then(() => handle(now));
  }
};
port.on('message', receive);

/** A message in its turn (the page thread's port is taken in receive()). */
async function handle(m: Exclude<ToSendWorker, { kind: 'port' }>): Promise<void> {
  switch (m.kind) {
    case 'packet': {
      const { offsets, zeroOffsets } = m.detect ? splitZero(m.offsets) : m;
      const header = encodeHeader({ flags: m.flags, packetNum: m.packetNum, block: ramId, offsets, zeroOffsets });
      const counted = { bytes: header.length + offsets.length * PAGE_SIZE, normal: offsets.length, zero: zeroOffsets.length };
      await channel.write([header, ...pageRuns(offsets)], () => {
        state.discharge(m.charged, m.detect);
        if (m.detect) post({ kind: 'sent', counted });
      });
      if (channel.error && !reported) {
        reported = true;
        state.fail();
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
      closePorts();
      return;
    case 'shutdown':
      channel.shutdown(m.reason);
      closePorts();
      return;
  }
}

function closePorts(): void {
  port.close();
  pageThread?.close();
}
