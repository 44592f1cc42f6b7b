/**
 * The page thread (QEMU's migration thread, for the pages): it walks the dirty bitmap, decides
 * zero, XBZRLE or normal, frames the records and writes them to the main channel through its own
 * duplicate of the channel's descriptor, in slices the migration on the main thread asks for.
 * With XBZRLE the cache lives here, from the migration's start to its end.
 * Between slices the main thread owns the bitmap and the stream; during one it only reads the
 * statistics the slice will report, so QMP is answered while the pages move.
 *
 * With multifd the pages go to the channels instead: the thread queues them and posts the packets
 * to the channel threads through ports of its own (multifd/packet-queue.ts), taking the queue's
 * place from the slice and handing it back with the result; zero pages found here (7.2's
 * `legacy` detection) go as ZERO records on the main channel, as QEMU's do.
 *
 * With mapped-ram the pages go to their places in the file, through the thread's own duplicate
 * of the file's descriptor, and the bits of the main thread's bitmap (shared) say which are
 * there; the main thread writes the stream, whose RAM sections then carry no page.
 *
 * The thread boots before the migration it serves (its own start-up, a V8 isolate and Node's
 * internals, is then no part of the migration), and serves one migration.
 *
 * In postcopy the pages the destination asks for go first in a slice, on the main channel or on
 * postcopy-preempt's, whose descriptor the thread is given a duplicate of too.
 *
 * Messages in: attach (the migration's channel, bitmap and page options); attach-preempt
 * (postcopy-preempt's channel, each time one connects); slice (from where, how many bytes,
 * milliseconds and pages at most, the pages asked for); shutdown (the channel fails at once, so a slice waiting
 * on a full socket ends); close (after the last slice, or where none came). Out: ready,
 * took-descriptor (after attach), then a SliceResult per slice, in order.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { GuestRam, PAGE_SIZE, type RamBacking } from '../../guest/ram.js';
import { DirtyBitmap } from '../../guest/dirty-bitmap.js';
import { OutgoingChannel, type ChannelKind } from '../channels/outgoing-channel.js';
import { StreamWriter } from '../stream/writer.js';
import { TOOK_DESCRIPTOR } from './descriptor-worker.js';
import { MappedRamWriter, type MappedRamShare } from './mapped-ram.js';
import { pageRoute, putNormalPage, putZeroPage } from './page-records.js';
import { emptyTally, XbzrlePages, type XbzrleTally } from './xbzrle-pages.js';
import { RamFlag } from '../stream/constants.js';
import type { ZeroPageDetection } from '../../profiles/profile.js';
import { ChannelState } from '../multifd/channel-state.js';
import { PacketQueue, type Lane, type PacketCursor } from '../multifd/packet-queue.js';
import type { ChannelPorts } from '../multifd/sender.js';
import type { ToSendWorker } from '../multifd/send-worker.js';

/** What the thread is booted with: the guest's RAM. */
export interface PageWorkerData {
  /** Where guest RAM is (GuestRam.backing), its size and block name, and GuestRam.knownZero. */
  ram: RamBacking;
  size: number;
  ramId: string;
  knownZero: SharedArrayBuffer;
}

/** The migration the thread serves. */
export interface AttachRequest {
  kind: 'attach';
  /** The thread's own duplicate of the main channel's descriptor; it closes it. */
  fd: number;
  what: ChannelKind;
  /** `fd` is a file's: the records go at the position each slice gives (SliceRequest.filePos). */
  file: boolean;
  /** The migration bitmap's words. */
  bitmap: SharedArrayBuffer;
  /** With XBZRLE: xbzrle-cache-size. */
  xbzrleCacheSize?: number;
  /** With multifd: the channels (MultifdSender.pageThreadPorts), and whether they sync at each wrap of the scan (8.1+). */
  multifd?: ChannelPorts & { syncPerRound: boolean };
  /**
   * With mapped-ram: `fd` is the file's, and the pages go to their places in it (the stream's
   * RAM sections carry none), zero pages nowhere; the bitmap is the main thread's.
   */
  mapped?: MappedRamShare;
}

/** postcopy-preempt's channel: the thread's own duplicate of its descriptor, which it closes. */
export interface AttachPreemptRequest {
  kind: 'attach-preempt';
  fd: number;
  what: ChannelKind;
}

/** The scan's place between slices (RamSaver's scan and blockSent). */
export interface ScanPosition {
  scan: number;
  blockSent: boolean;
}

/** What RamSaver says of XBZRLE for a slice. */
export interface XbzrleStage {
  /** A round was complete: pages already sent go as deltas. */
  active: boolean;
  /** dirty-sync-count */
  age: number;
  lastStage: boolean;
}

/** Where a slice starts (RamSaver.position). */
export interface SlicePosition extends ScanPosition {
  xbzrle?: XbzrleStage;
}

export interface SliceRequest extends SlicePosition {
  /** Stop once this many bytes went out (the rate limit's budget left; Infinity: none). */
  budget: number;
  /** Stop after this long. */
  ms: number;
  /** Stop after this many pages (a COLO checkpoint cut halfway, where a test says). */
  pages?: number;
  /** In postcopy: 1 while a page request waits (PageRequests.waitingFlag); the slice ends on it. */
  interrupt?: Int32Array;
  /** zero-page-detection: with `none` zero pages go whole; with `multifd` the channels find them. */
  detection: ZeroPageDetection;
  /** With multifd, before postcopy: the queue's place. */
  packets?: PacketCursor;
  /** In postcopy: the pages asked for, sent first, in this order (get_queued_page()). */
  requested?: number[];
  /** ...on postcopy-preempt's channel (attached before), which names the block on its own. */
  preempt?: { blockSent: boolean };
  /** A file channel's: where the slice's records go (the main thread's writes end there). */
  filePos?: number;
}

export interface SliceResult extends ScanPosition {
  /** Pages taken from the bitmap: normal, duplicate, and those XBZRLE sent as deltas or not at all. */
  pages: number;
  normal: number;
  duplicate: number;
  /** Bytes of records written, every one on the socket when this is posted. */
  bytes: number;
  /** Of those, the MULTIFD_FLUSH records' (8.1+): QEMU counts them as transferred but in no RAM statistic. */
  flushBytes: number;
  /** No dirty page was left. */
  exhausted: boolean;
  /** The channel's error (QEMU's words), once it failed. */
  error?: string;
  /** With XBZRLE: what the slice counted, and whether XBZRLE is active after it. */
  xbzrle?: XbzrleTally & { active: boolean };
  /** With multifd: the queue's place after the slice, and the packets' bytes counted as handed over (7.2). */
  packets?: { cursor: PacketCursor; handedOver: number };
  /** With mapped-ram: the pages' bytes written to the file, every one there when this is posted. */
  mappedBytes?: number;
  /** With the pages asked for on postcopy-preempt's channel: its cursor, bytes (on the socket) and any error. */
  preempt?: { blockSent: boolean; bytes: number; error?: string };
}

export type ToPageWorker = AttachRequest | AttachPreemptRequest | ({ kind: 'slice' } & SliceRequest) | { kind: 'shutdown' } | { kind: 'close' };
export type FromPageWorker = { kind: 'ready' } | typeof TOOK_DESCRIPTOR | ({ kind: 'done' } & SliceResult);

/** Bytes framed before they are handed to the socket. */
const FLUSH_BYTES = 1 << 20;

/** The migration this thread serves, from attach on. */
interface Migration {
  attach: AttachRequest;
  bitmap: DirtyBitmap;
  channel: OutgoingChannel;
  writer: StreamWriter;
  xbzrle?: XbzrlePages;
  /** With multifd: the channel threads, through this thread's ports. */
  lanes?: Lane[];
  /** With mapped-ram: the file's pages. */
  mapped?: MappedRamWriter;
  /** In postcopy, with postcopy-preempt: its channel. */
  preempt?: { channel: OutgoingChannel; writer: StreamWriter };
  /** With mapped-ram: the pages' bytes the current slice wrote there. */
  mappedBytes: number;
}

const port = parentPort!;
const data = workerData as PageWorkerData;
const ram = new GuestRam(data.ramId, data.size, data.ram, new Uint8Array(data.knownZero));
let migration: Migration | undefined;

let turn = Promise.resolve();
port.on('message', (m: ToPageWorker) => {
  if (m.kind === 'attach') {
    const channel = m.file ? OutgoingChannel.ofFileDuplicate(m.fd) : OutgoingChannel.ofDuplicate(m.fd, m.what);
    port.postMessage(TOOK_DESCRIPTOR);
    migration = {
      attach: m,
      bitmap: new DirtyBitmap(ram.pages, m.bitmap),
      channel,
      mapped: m.mapped && new MappedRamWriter(channel.file!, ram.size, (n) => (migration!.mappedBytes += n), m.mapped),
      mappedBytes: 0,
      writer: new StreamWriter(),
      xbzrle: m.xbzrleCacheSize === undefined ? undefined : new XbzrlePages(m.xbzrleCacheSize),
      lanes: m.multifd?.ports.map((p, id) => ({ state: ChannelState.of(m.multifd!.state, id), post: (msg: ToSendWorker) => p.postMessage(msg) })),
    };
    return;
  }
  if (m.kind === 'attach-preempt') {
    const channel = OutgoingChannel.ofDuplicate(m.fd, m.what);
    port.postMessage(TOOK_DESCRIPTOR);
    turn = turn.then(() => {
      migration!.preempt?.channel.shutdown();
      migration!.preempt = { channel, writer: new StreamWriter() };
    });
    return;
  }
  // Now, not in turn: a slice waiting on a full socket must end (and report what it sent).
  if (m.kind === 'shutdown') return shutdownChannels();
  if (m.kind === 'close') {
    turn = turn.then(() => {
      shutdownChannels();
      port.close();
      for (const p of migration?.attach.multifd?.ports ?? []) p.close();
    });
    return;
  }
  turn = turn.then(async () => port.postMessage({ kind: 'done', ...(await slice(migration!, m)) } satisfies FromPageWorker));
});
port.postMessage({ kind: 'ready' } satisfies FromPageWorker);

function shutdownChannels(): void {
  migration?.channel.shutdown();
  migration?.preempt?.channel.shutdown();
}

/** Writes what `w` framed to `channel`. */
async function flushTo(w: StreamWriter, channel: OutgoingChannel): Promise<void> {
  const { pieces, retired } = w.take();
  if (pieces.length) await channel.write(pieces, () => w.recycle(retired));
}

/** ram_find_and_save_block() until the bitmap, the budget or the time runs out. */
async function slice(migration: Migration, req: SliceRequest): Promise<SliceResult> {
  const { attach, bitmap, channel, writer: w, xbzrle, lanes, mapped } = migration;
  const flush = (): Promise<void> => flushTo(w, channel);
  if (req.filePos !== undefined) channel.file!.seek(req.filePos);
  const start = performance.now();
  const before = w.written;
  let { scan, blockSent } = req;
  const stage = xbzrle && req.xbzrle;
  let pages = 0;
  let normal = 0;
  let duplicate = 0;
  let exhausted = false;
  let handedOver = 0;
  let flushBytes = 0;
  // In postcopy the pages go on the main channel (ram_save_target_page()), none to the channels.
  const packets = lanes && req.packets && new PacketQueue(lanes, req.packets, (bytes) => (handedOver += bytes));
  migration.mappedBytes = 0;
  // get_queued_page(): the pages asked for first (those still to send: the others are on their
  // way), whole, on the preempt channel where there is one; the scan goes on after the last.
  let preempt: SliceResult['preempt'];
  if (req.requested) {
    const pre = req.preempt && migration.preempt;
    const out = pre ? pre.writer : w;
    const outBefore = out.written;
    let named = pre ? req.preempt!.blockSent : blockSent;
    for (const page of req.requested) {
      if (!bitmap.test(page)) continue;
      bitmap.clear(page);
      pages++;
      scan = page + 1;
      const offset = page * PAGE_SIZE;
      if (pageRoute(ram, page, req.detection, false) === 'zero') {
        putZeroPage(out, offset, data.ramId, named);
        duplicate++;
      } else {
        putNormalPage(out, offset, ram.page(page), data.ramId, named);
        normal++;
      }
      named = true;
    }
    if (pre) {
      await flushTo(out, pre.channel);
      await pre.channel.drained();
      preempt = { blockSent: named, bytes: out.written - outBefore, error: pre.channel.error };
    } else blockSent = named;
  }
  /** Bytes this slice put on its way: the rate limit's budget counts them. */
  const charged = (): number => w.written - before + (packets?.charged ?? 0) + migration.mappedBytes;
  for (let n = 1; channel.usable && !packets?.failed; n++) {
    if ((n & 15) === 0 && (charged() >= req.budget || performance.now() - start > req.ms || (req.interrupt && Atomics.load(req.interrupt, 0) === 1))) break;
    if (pages === req.pages) break;
    let page = bitmap.nextSet(scan);
    if (page < 0) {
      // A round ends: wrap, and from now on XBZRLE may be used; 8.1+'s channels sync here.
      if (stage) stage.active = true;
      if (packets && attach.multifd!.syncPerRound) {
        await packets.sync();
        w.be64(RamFlag.MULTIFD_FLUSH);
        flushBytes += 8;
      }
      page = bitmap.nextSet(0);
    }
    if (page < 0) {
      scan = 0;
      exhausted = true;
      break;
    }
    bitmap.clear(page);
    pages++;
    scan = page + 1;
    const offset = page * PAGE_SIZE;
    const route = pageRoute(ram, page, req.detection, packets !== undefined);
    if (mapped) {
      if (route === 'zero') {
        mapped.zero(page);
        duplicate++;
      } else {
        mapped.page(page, ram.page(page));
        normal++;
      }
      continue;
    }
    if (route === 'channel-detects') packets!.queue(offset);
    else if (route === 'channel') {
      packets!.queue(offset, false);
      normal++;
    } else {
      // A record on the main channel.
      if (route === 'zero') {
        putZeroPage(w, offset, data.ramId, blockSent);
        duplicate++;
        if (stage?.active) xbzrle!.zeroSent(offset, stage.age, stage.lastStage);
      } else if (stage?.active) {
        const put = xbzrle!.put(w, { offset, data: ram.page(page), blockId: data.ramId, continued: blockSent, age: stage.age, lastStage: stage.lastStage });
        if (put === 'unchanged') continue;
        if (put === 'whole') normal++;
      } else {
        putNormalPage(w, offset, ram.page(page), data.ramId, blockSent);
        normal++;
      }
      blockSent = true;
    }
    if (packets?.full) await packets.send();
    if (w.pending >= FLUSH_BYTES) await flush();
  }
  await flush();
  await channel.drained();
  if (mapped) {
    mapped.flush();
    await channel.file!.settled();
  }
  const result: SliceResult = { scan, blockSent, pages, normal, duplicate, bytes: w.written - before, flushBytes, exhausted, error: channel.error };
  if (mapped) result.mappedBytes = migration.mappedBytes;
  if (stage) {
    result.xbzrle = { ...xbzrle!.tally, active: stage.active };
    Object.assign(xbzrle!.tally, emptyTally());
  }
  if (packets) result.packets = { cursor: packets.cursor, handedOver };
  if (preempt) result.preempt = preempt;
  return result;
}

