/**
 * The destination's load thread (QEMU's incoming migration coroutine, for the pages): while the
 * main thread has stopped reading the main channel, it reads a RAM section's records through
 * its own duplicate of the channel's descriptor and copies the pages into the shared guest RAM,
 * with the same RamLoader the main thread uses, up to the section's EOS. What it read past the
 * EOS goes back to the main thread with its reply, which reads on from there.
 *
 * With multifd the channels' threads load the packets' pages; at each sync point of the main
 * channel (an EOS in 7.2, a MULTIFD_FLUSH record in 8.1+) this thread asks the main thread, which
 * holds the channels, to wait for their SYNCs, and goes on once it answers.
 *
 * Messages in: attach (the duplicate, once the main channel is there; the thread boots before);
 * load (a section's version, the bytes the main thread had read ahead, the block the last record
 * named, the received bitmap with postcopy advised and from LISTEN the taken and requested ones,
 * a COLO secondary's cache, which sync points to ask for); colo-flush (a COLO checkpoint's pages,
 * cache → RAM); preempt (postcopy-preempt's channel, a duplicate of its descriptor, loaded here
 * to its end beside the sections, its pages placed once as theirs are); synced (the answer to a
 * sync); close. Out: ready, took-descriptor (after attach and preempt), sync, placed (a page a
 * vCPU waits for is here), then one LoadReply per load, one ColoFlushed per colo-flush, and one
 * PreemptEnded per preempt.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DirtyBitmap } from '../../guest/dirty-bitmap.js';
import { GuestRam, type RamBacking } from '../../guest/ram.js';
import { setActiveProfile, type ProfileId } from '../../profiles/index.js';
import { SeekableFileInput } from '../channels/file-input.js';
import { SocketInput } from '../channels/socket-input.js';
import { LoadError } from '../load-error.js';
import { StreamEnded, StreamReader } from '../stream/reader.js';
import { RAM_SECTION_VERSION } from '../stream/constants.js';
import { TOOK_DESCRIPTOR } from './descriptor-worker.js';
import { RamLoader } from './ram-load.js';
import { flushColoCache, sharedColoCache, type SharedColoCache } from '../colo/cache.js';

export interface LoadWorkerData {
  /** Where guest RAM is (GuestRam.backing), its size and block name, GuestRam.knownZero and faultedIn. */
  ram: RamBacking;
  size: number;
  ramId: string;
  knownZero: Uint8Array;
  faultedIn?: Uint8Array;
  /** The release this daemon is (a thread starts with the default). */
  profile: ProfileId;
}

/** A loader's postcopy bitmaps, whose words this thread shares (shareBitmaps()). */
export interface PostcopyBitmaps {
  /** With postcopy advised: RamLoader.received, which this thread marks too. */
  received?: SharedArrayBuffer;
  /** From postcopy's LISTEN, each page placed once: RamLoader.taken, and from RUN RamLoader.requested. */
  placing?: { taken: SharedArrayBuffer; requested?: SharedArrayBuffer };
}

export interface LoadRequest extends PostcopyBitmaps {
  kind: 'load';
  version: number;
  /** What the main thread had read of the channel and not yet parsed. */
  ahead: Uint8Array;
  /** The stream offset just past `ahead`: where the thread reads a file on from. */
  at: number;
  blockKnown: boolean;
  /** A COLO secondary's checkpoint: its pages go to the cache, marked received (RamLoader.colo). */
  colo?: SharedColoCache;
  /** multifd: the sync points the main thread's loader has (RamLoader.onEos, onFlush). */
  syncs: { eos: boolean; flush: boolean };
}

/**
 * postcopy-preempt's channel, after RUN: bare RAM records of the pages asked for, placed once
 * (the bitmaps of RamLoader.received, taken and requested) until an EOS or the channel's end;
 * answered by PreemptEnded.
 */
export interface PreemptRequest extends PostcopyBitmaps {
  kind: 'preempt';
  fd: number;
  /** What the main thread had read of the channel. */
  ahead: Uint8Array;
}

export interface PreemptEnded {
  kind: 'preempt-ended';
  pages: number;
  failure?: LoadFailure;
}

/** colo_flush_ram_cache(): the cache's received pages into guest RAM; answered by ColoFlushed. */
export interface ColoFlushRequest {
  kind: 'colo-flush';
  colo: SharedColoCache;
}

export interface ColoFlushed {
  kind: 'colo-flushed';
  pages: number;
}

/** A sync point reached: the main thread waits for the multifd channels, then answers `synced`. */
export interface SyncRequest {
  kind: 'sync';
  at: 'eos' | 'flush';
}

/** Postcopy: a page a vCPU waits for was placed here (RamLoader.onPlaced() on the main thread). */
export interface Placed {
  kind: 'placed';
  page: number;
}

/** How a section's load failed, to be thrown again on the main thread as it was here. */
export type LoadFailure =
  | { kind: 'load-error'; errno: LoadError['errno']; lines: string[]; early: boolean }
  | { kind: 'ended'; failure?: string }
  | { kind: 'other'; message: string };

export interface LoadReply {
  kind: 'loaded';
  /** Bytes of the stream this section took, the prefetched ones included. */
  consumed: number;
  /** Read past the section's EOS (or the failure), for the main thread to read first. */
  rest: Uint8Array;
  /** The source ended under this thread: `rest` is all there is. */
  ended: boolean;
  pages: number;
  blockKnown: boolean;
  failure?: LoadFailure;
}

/** The thread's own duplicate of the main channel's descriptor; it closes it. */
export interface AttachRequest {
  kind: 'attach';
  fd: number;
  /** A file: channel's: the file position of the stream's byte 0 (SeekableFileInput.base). */
  fileBase?: number;
}

/** `failed`: the sync failed; the main thread throws its error once the section's reply comes. */
export type ToLoadWorker = AttachRequest | LoadRequest | ColoFlushRequest | PreemptRequest | { kind: 'synced'; failed: boolean } | { kind: 'close' };
export type FromLoadWorker = { kind: 'ready' } | typeof TOOK_DESCRIPTOR | SyncRequest | Placed | LoadReply | ColoFlushed | PreemptEnded;

/**
 * Bytes the thread reads ahead of its loader. What it read past a section's EOS goes to the main
 * thread and back with the next section, copied each way, so a section costs up to twice this
 * in copies and short-lived buffers. Against the reader's default 4 MiB, 256 KiB took the bench's
 * page-thread migration (1 GiB) 1663 against 1769 ms and the destination's peak RSS RAM + 99
 * against + 113 MiB (medians of 5 alternating runs); 64 KiB and 1 MiB were no better.
 */
const READ_AHEAD = 256 << 10;

const port = parentPort!;
const data = workerData as LoadWorkerData;
setActiveProfile(data.profile);
const loader = new RamLoader(new GuestRam(data.ramId, data.size, data.ram, data.knownZero, data.faultedIn));
/** A channel this thread reads through its own duplicate of the descriptor, which `close` closes. */
interface Channel {
  input: SocketInput | SeekableFileInput;
  reader: StreamReader;
  close: () => void;
}

/** The main channel and its reader, from attach on (the main thread sends no load before). */
let channel: Channel | undefined;
/** The sync this thread waits for, once asked. */
let synced: ((failed: boolean) => void) | undefined;
/** postcopy-preempt's channel, while it loads here. */
let preempt: Channel | undefined;

/** A sync point: asks the main thread to sync the channels; a failed sync ends the section here. */
async function sync(at: SyncRequest['at']): Promise<void> {
  const failed = await new Promise<boolean>((resolve) => {
    synced = resolve;
    port.postMessage({ kind: 'sync', at } satisfies FromLoadWorker);
  });
  if (failed) throw new Error('multifd sync failed');
}

port.on('message', (m: ToLoadWorker) => {
  if (m.kind === 'attach') {
    channel = m.fileBase === undefined ? socketChannel(m.fd) : fileChannel(m.fd, m.fileBase);
    port.postMessage(TOOK_DESCRIPTOR);
    return;
  }
  if (m.kind === 'synced') {
    synced?.(m.failed);
    synced = undefined;
    return;
  }
  if (m.kind === 'close') {
    channel?.close();
    preempt?.close();
    port.close();
    return;
  }
  if (m.kind === 'preempt') {
    void loadPreempt(m).then((ended) => port.postMessage(ended));
    return;
  }
  if (m.kind === 'colo-flush') {
    void flushColoCache(loader.ram!, sharedColoCache(data.size, m.colo)).then((pages) => port.postMessage({ kind: 'colo-flushed', pages } satisfies FromLoadWorker));
    return;
  }
  void load(channel!, m).then((reply) => port.postMessage(reply, [reply.rest.buffer as ArrayBuffer]));
});
port.postMessage({ kind: 'ready' } satisfies FromLoadWorker);

function socketChannel(fd: number): Channel {
  const input = new SocketInput(fd);
  input.socket.on('error', () => undefined); // the reader reports it as the stream's end
  return { input, reader: new StreamReader(input, undefined, READ_AHEAD), close: () => input.socket.destroy() };
}

function fileChannel(fd: number, base: number): Channel {
  const input = new SeekableFileInput(fd, base);
  input.on('error', () => undefined); // the reader reports it as the stream's end
  return { input, reader: new StreamReader(input, undefined, READ_AHEAD), close: () => input.close() };
}

async function load({ input, reader }: Channel, req: LoadRequest): Promise<LoadReply> {
  // A file is read from where the main thread's reading ends; a socket or a pipe from its next byte.
  if (input instanceof SeekableFileInput) input.seekTo(req.at);
  reader.putBack(Buffer.from(req.ahead.buffer, req.ahead.byteOffset, req.ahead.byteLength), 0);
  loader.blockKnown = req.blockKnown;
  shareBitmaps(loader, req);
  loader.colo = req.colo && sharedColoCache(data.size, req.colo);
  loader.pages = 0;
  loader.onEos = req.syncs.eos ? () => sync('eos') : undefined;
  loader.onFlush = req.syncs.flush ? () => sync('flush') : undefined;
  let failure: LoadFailure | undefined;
  try {
    await loader.load(reader, req.version);
  } catch (err) {
    failure = describe(err);
  }
  // Nothing more is read here until the next section: the main thread reads on.
  input.pause();
  const consumed = reader.consumed;
  const ended = reader.exhausted;
  const rest = new Uint8Array(reader.takeBuffered());
  return { kind: 'loaded', consumed, rest, ended, pages: loader.pages, blockKnown: loader.blockKnown, failure };
}

/**
 * The main thread's postcopy bitmaps for `l`: received, taken (placing once) and requested, whose
 * pages, once placed here, the main thread hears of (its RamLoader.onPlaced() wakes the vCPU).
 */
function shareBitmaps(l: RamLoader, b: PostcopyBitmaps): void {
  const pages = l.ram!.pages;
  l.received = b.received && new DirtyBitmap(pages, b.received);
  l.postcopyPlacing = b.placing !== undefined;
  l.taken = b.placing && new DirtyBitmap(pages, b.placing.taken);
  const requested = b.placing?.requested && new DirtyBitmap(pages, b.placing.requested);
  l.onPlaced = requested && ((page) => requested.testShared(page) && port.postMessage({ kind: 'placed', page } satisfies FromLoadWorker));
}

/** postcopy_preempt_thread(): the channel's records, to an EOS or its end, placed as the main channel's are. */
async function loadPreempt(req: PreemptRequest): Promise<PreemptEnded> {
  const own = socketChannel(req.fd);
  port.postMessage(TOOK_DESCRIPTOR);
  preempt = own;
  // The placing state of the main channel's loader, which the records on this channel take their bitmaps from.
  const owner = new RamLoader(loader.ram!);
  shareBitmaps(owner, req);
  const channelLoader = new RamLoader(loader.ram!, undefined, owner);
  let failure: LoadFailure | undefined;
  try {
    own.reader.putBack(Buffer.from(req.ahead.buffer, req.ahead.byteOffset, req.ahead.byteLength), 0);
    await channelLoader.load(own.reader, RAM_SECTION_VERSION);
  } catch (err) {
    failure = describe(err);
  }
  own.close();
  if (preempt === own) preempt = undefined;
  return { kind: 'preempt-ended', pages: channelLoader.pages, failure };
}

function describe(err: unknown): LoadFailure {
  if (err instanceof LoadError) return { kind: 'load-error', errno: err.errno, lines: err.lines, early: err.early };
  if (err instanceof StreamEnded) return { kind: 'ended', failure: err.failure?.message };
  return { kind: 'other', message: (err as Error).message };
}
