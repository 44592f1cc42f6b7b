/**
 * The page thread (QEMU's migration thread, for the pages): it walks the dirty bitmap, decides
 * zero or normal, frames the records and writes them to the main channel through its own
 * duplicate of the channel's descriptor, in slices the migration on the main thread asks for.
 * Between slices the main thread owns the bitmap and the stream; during one it only reads the
 * statistics the slice will report, so QMP is answered while the pages move.
 *
 * Messages in: slice (from where, how many bytes and milliseconds at most); shutdown (the channel
 * fails at once, so a slice waiting on a full socket ends); close (after the last slice). Out:
 * ready, then a SliceResult per slice, in order.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { PAGE_SIZE, PageStore, type RamBacking } from '../../guest/ram.js';
import { DirtyBitmap } from '../../guest/dirty-bitmap.js';
import { OutgoingChannel, type ChannelKind } from '../channels/outgoing-channel.js';
import { StreamWriter } from '../stream/writer.js';
import { putNormalPage, putZeroPage } from './page-records.js';

export interface PageWorkerData {
  /** The thread's own duplicate of the main channel's descriptor; it closes it. */
  fd: number;
  what: ChannelKind;
  /** Where guest RAM is (GuestRam.backing), its size and block name. */
  ram: RamBacking;
  size: number;
  ramId: string;
  /** The migration bitmap's words, and GuestRam.knownZero. */
  bitmap: SharedArrayBuffer;
  knownZero: SharedArrayBuffer;
}

/** The scan's place between slices (RamSaver's scan and blockSent). */
export interface ScanPosition {
  scan: number;
  blockSent: boolean;
}

export interface SliceRequest extends ScanPosition {
  /** Stop once this many bytes went out (the rate limit's budget left; Infinity: none). */
  budget: number;
  /** Stop after this long. */
  ms: number;
  /** zero-page-detection: with `none` zero pages go whole. */
  zeroPages: boolean;
}

export interface SliceResult extends ScanPosition {
  normal: number;
  duplicate: number;
  /** Bytes of records written, every one on the socket when this is posted. */
  bytes: number;
  /** No dirty page was left. */
  exhausted: boolean;
  /** The channel's error (QEMU's words), once it failed. */
  error?: string;
}

export type ToPageWorker = ({ kind: 'slice' } & SliceRequest) | { kind: 'shutdown' } | { kind: 'close' };
export type FromPageWorker = { kind: 'ready' } | ({ kind: 'done' } & SliceResult);

/** Bytes framed before they are handed to the socket. */
const FLUSH_BYTES = 1 << 20;

const port = parentPort!;
const data = workerData as PageWorkerData;
const ram = new PageStore(data.size, data.ram);
const bitmap = new DirtyBitmap(ram.pages, data.bitmap);
const knownZero = new Uint8Array(data.knownZero);
const channel = OutgoingChannel.ofDuplicate(data.fd, data.what);
const writer = new StreamWriter();

let turn = Promise.resolve();
port.on('message', (m: ToPageWorker) => {
  // Now, not in turn: a slice waiting on a full socket must end (and report what it sent).
  if (m.kind === 'shutdown') return channel.shutdown();
  if (m.kind === 'close') {
    turn = turn.then(() => {
      channel.shutdown();
      port.close();
    });
    return;
  }
  turn = turn.then(async () => port.postMessage({ kind: 'done', ...(await slice(m)) } satisfies FromPageWorker));
});
port.postMessage({ kind: 'ready' } satisfies FromPageWorker);

/** ram_find_and_save_block() until the bitmap, the budget or the time runs out. */
async function slice(req: SliceRequest): Promise<SliceResult> {
  const w = writer;
  const start = performance.now();
  const before = w.written;
  let { scan, blockSent } = req;
  let normal = 0;
  let duplicate = 0;
  let exhausted = false;
  for (let n = 1; channel.usable; n++) {
    if ((n & 15) === 0 && (w.written - before >= req.budget || performance.now() - start > req.ms)) break;
    let page = bitmap.nextSet(scan);
    if (page < 0) page = bitmap.nextSet(0); // a round ends: wrap
    if (page < 0) {
      scan = 0;
      exhausted = true;
      break;
    }
    bitmap.clear(page);
    scan = page + 1;
    const offset = page * PAGE_SIZE;
    if (req.zeroPages && (knownZero[page] === 1 || ram.isZero(page))) {
      putZeroPage(w, offset, data.ramId, blockSent);
      duplicate++;
    } else {
      putNormalPage(w, offset, ram.page(page), data.ramId, blockSent);
      normal++;
    }
    blockSent = true;
    if (w.pending >= FLUSH_BYTES) await flush();
  }
  await flush();
  await channel.drained();
  return { scan, blockSent, normal, duplicate, bytes: w.written - before, exhausted, error: channel.error };
}

async function flush(): Promise<void> {
  const { pieces, retired } = writer.take();
  if (pieces.length) await channel.write(pieces, () => writer.recycle(retired));
}
