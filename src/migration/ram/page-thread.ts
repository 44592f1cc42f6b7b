/**
 * The main thread's handle on the page thread (page-worker.ts): booted before the migration it
 * serves (MigrationService keeps one ready), then given a duplicate of the main channel's
 * descriptor; asks it for slices and hands back what each did. While a slice runs the main
 * thread is free: QMP, events, the workload, timers.
 *
 * With multifd it gets a port to each channel thread, and posts the packets itself. In postcopy
 * it sends the pages asked for too, and gets a duplicate of postcopy-preempt's channel for them.
 *
 * Where the page thread cannot be had (the addon is not built, the descriptor cannot be
 * duplicated) the migration keeps its page loop on the main thread; so does one whose pages the
 * thread cannot send (RamSaver.threadable).
 */
import type { Worker } from 'node:worker_threads';
import type { GuestRam } from '../../guest/ram.js';
import type { DirtyBitmap } from '../../guest/dirty-bitmap.js';
import type { OutgoingChannel } from '../channels/outgoing-channel.js';
import type { MultifdSender } from '../multifd/sender.js';
import { duplicateOf, giveDescriptor, startWorker } from './descriptor-worker.js';
import type { MappedRamWriter } from './mapped-ram.js';
import type { FromPageWorker, PageWorkerData, ScanPosition, SliceRequest, SliceResult, ToPageWorker } from './page-worker.js';

const WORKER = new URL('./page-worker.js', import.meta.url);

export class PageThread {
  private pending?: (r: SliceResult) => void;
  private failure?: string;

  private constructor(private readonly worker: Worker) {
    worker.on('message', (m: FromPageWorker) => {
      if (m.kind === 'done') this.settle(m);
    });
    worker.on('error', (err) => this.crashed(`page thread failed: ${err.message}`));
    worker.on('exit', () => this.crashed('page thread ended'));
  }

  /** Boots a thread for `ram`'s migrations; undefined where it cannot be had. */
  static async boot(ram: GuestRam): Promise<PageThread | undefined> {
    const knownZero = ram.knownZero;
    if (!knownZero) return undefined;
    const worker = await startWorker(WORKER, {
      ram: ram.backing, size: ram.size, ramId: ram.id, knownZero: knownZero.buffer as SharedArrayBuffer,
    } satisfies PageWorkerData);
    return worker && new PageThread(worker);
  }

  /**
   * Gives the thread the migration it serves: its own duplicate of `channel`'s descriptor (with
   * mapped-ram, of the file's), the bitmap, and what its pages need. False where it cannot write
   * that channel.
   */
  attach(channel: OutgoingChannel, bitmap: DirtyBitmap, pages: { xbzrleCacheSize?: number; multifd?: MultifdSender; syncPerRound: boolean; mapped?: MappedRamWriter }): boolean {
    const target = channel.descriptor;
    const fd = target && !this.failure ? duplicateOf(target.fd) : undefined;
    if (fd === undefined) return false;
    const multifd = pages.multifd && { ...pages.multifd.pageThreadPorts(), syncPerRound: pages.syncPerRound };
    const attach: ToPageWorker = {
      kind: 'attach', fd, what: target!.what, file: target!.file, bitmap: bitmap.words.buffer as SharedArrayBuffer, xbzrleCacheSize: pages.xbzrleCacheSize, multifd, mapped: pages.mapped?.share(),
    };
    giveDescriptor(this.worker, fd, attach, multifd?.ports ?? []);
    return true;
  }

  /**
   * postcopy-preempt's `channel` (each time one connects), where the thread sends the pages asked
   * for from then on: its own duplicate of the descriptor. False where it cannot have one.
   */
  attachPreempt(channel: OutgoingChannel): boolean {
    const target = channel.descriptor;
    const fd = target && !this.failure ? duplicateOf(target.fd) : undefined;
    if (fd === undefined) return false;
    giveDescriptor(this.worker, fd, { kind: 'attach-preempt', fd, what: target!.what } satisfies ToPageWorker);
    return true;
  }

  /** One slice; what it did, also when the channel failed under it. */
  slice(req: SliceRequest): Promise<SliceResult> {
    if (this.failure) return Promise.resolve(nothingSent(req, this.failure));
    return new Promise((resolve) => {
      this.pending = resolve;
      this.post({ kind: 'slice', ...req });
    });
  }

  /** qemu_file_shutdown() for the thread's end: a slice waiting on the socket ends now. */
  shutdown(): void {
    this.post({ kind: 'shutdown' });
  }

  /** After the last slice: the thread closes its descriptor and ends. */
  close(): void {
    this.post({ kind: 'close' });
  }

  private post(m: ToPageWorker): void {
    if (!this.failure) this.worker.postMessage(m);
  }

  private settle(r: SliceResult): void {
    const resolve = this.pending;
    this.pending = undefined;
    resolve?.(r);
  }

  /** The thread is gone: a slice it owed ends with nothing done (the bitmap may have lost bits, so the channel fails). */
  private crashed(reason: string): void {
    this.failure ??= reason;
    const resolve = this.pending;
    this.pending = undefined;
    resolve?.(nothingSent({ scan: 0, blockSent: true }, reason));
  }
}

/** A slice that sent nothing because the thread cannot: the channel fails with `error`. */
function nothingSent(at: ScanPosition, error: string): SliceResult {
  return { scan: at.scan, blockSent: at.blockSent, pages: 0, normal: 0, duplicate: 0, bytes: 0, flushBytes: 0, exhausted: false, error };
}
