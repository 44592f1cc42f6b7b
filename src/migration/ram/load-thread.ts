/**
 * The main thread's handle on the load thread (load-worker.ts): booted while the destination
 * waits for its migration, then given the main channel; for each RAM section of a plain
 * incoming migration the main thread stops reading the channel, lends the thread what it had
 * read ahead, and waits while the thread copies the section's pages; then it reads on from what
 * the thread read past the section. Meanwhile the main thread is free: QMP, events, timers; and,
 * with multifd, the syncs the thread asks for at the section's sync points (the main thread
 * holds the channels).
 *
 * Where the thread cannot be had (the addon is not built, the channel is neither a socket or a
 * pipe the main thread reads with SocketInput nor a file) the sections load on the main thread,
 * as they do for a migration that is not plain (RamLoader.plain) or while faults are armed.
 */
import type { Worker } from 'node:worker_threads';
import { faults } from '../../faults/faults.js';
import type { DirtyBitmap } from '../../guest/dirty-bitmap.js';
import type { GuestRam } from '../../guest/ram.js';
import { activeProfile } from '../../profiles/index.js';
import { SeekableFileInput } from '../channels/file-input.js';
import { SocketInput } from '../channels/socket-input.js';
import { LoadError } from '../load-error.js';
import { StreamEnded, type ByteSource, type StreamReader } from '../stream/reader.js';
import { duplicateOf, giveDescriptor, startWorker } from './descriptor-worker.js';
import type { RamLoader } from './ram-load.js';
import type { ColoFlushed, FromLoadWorker, LoadFailure, LoadReply, LoadWorkerData, PostcopyBitmaps, PreemptEnded, SyncRequest, ToLoadWorker } from './load-worker.js';
import { shareColoCache, type SharedColoCache } from '../colo/cache.js';

const WORKER = new URL('./load-worker.js', import.meta.url);

export class LoadThread {
  /** Pages the thread has loaded, and flushed from a COLO cache (the destination's log says how many at the end). */
  pages = 0;
  /** The reply awaited: a section's, or a COLO flush's. */
  private pending?: { resolve: (r: LoadReply | ColoFlushed) => void; reject: (e: Error) => void };
  /** The section being loaded: its loader's syncs run here; the error of one that failed. */
  private section?: { loader: RamLoader; syncError?: unknown };
  private failure?: Error;
  /** The main channel, once attached. */
  private input?: SocketInput | SeekableFileInput;
  /** postcopy-preempt's channel loading here: its end awaited, and the loader told of the pages placed. */
  private preempt?: { resolve: (r: PreemptEnded) => void; reject: (e: Error) => void };
  private placedTo?: RamLoader;

  private constructor(private readonly worker: Worker) {
    worker.on('message', (m: FromLoadWorker) => {
      if (m.kind === 'loaded' || m.kind === 'colo-flushed') this.settle(m);
      else if (m.kind === 'sync') void this.sync(m.at);
      else if (m.kind === 'placed') this.placedTo?.onPlaced?.(m.page);
      else if (m.kind === 'preempt-ended') this.preemptEnded(m);
    });
    worker.on('error', (err) => this.crashed(new Error(`load thread failed: ${err.message}`)));
    worker.on('exit', () => this.crashed(new Error('load thread ended')));
  }

  /**
   * Boots the thread for `ram`, before there is a channel: its own start-up (a V8 isolate and
   * Node's internals, about 100 ms of CPU) then falls before the migration, not inside it.
   * Undefined where it cannot be had.
   */
  static async boot(ram: GuestRam): Promise<LoadThread | undefined> {
    const knownZero = ram.knownZero;
    if (!knownZero) return undefined;
    const worker = await startWorker(WORKER, {
      ram: ram.backing, size: ram.size, ramId: ram.id, knownZero, faultedIn: ram.faultedIn, profile: activeProfile().id,
    } satisfies LoadWorkerData);
    return worker && new LoadThread(worker);
  }

  /**
   * Gives the thread its own duplicate of the main channel `input` reads (a socket or a pipe; a
   * file, which it reads at the offsets each section says); false where it cannot read that channel.
   */
  attach(input: ByteSource): boolean {
    const file = input instanceof SeekableFileInput;
    if (this.failure || !(file || input instanceof SocketInput) || input.fd === undefined) return false;
    const fd = duplicateOf(input.fd);
    if (fd === undefined) return false;
    this.input = input;
    giveDescriptor(this.worker, fd, { kind: 'attach', fd, fileBase: file ? input.base : undefined } satisfies ToLoadWorker);
    return true;
  }

  /** Whether the next RAM section, read by `r`, may load on the thread. */
  usable(loader: RamLoader, r: StreamReader): boolean {
    return this.alive && r.source === this.input && loader.threadable && !faults.any;
  }

  /** Neither closed nor failed. */
  get alive(): boolean {
    return !this.failure;
  }

  /** One RAM section (up to its EOS) loaded by the thread, `r` reading on after it. */
  async load(r: StreamReader, loader: RamLoader, version: number): Promise<void> {
    const input = this.input!;
    input.pause();
    const start = r.consumed;
    const ahead = new Uint8Array(r.takeBuffered());
    // A file is read by the thread from where `ahead` ends, then here from where it stopped.
    const file = input instanceof SeekableFileInput ? input : undefined;
    const at = start + ahead.byteLength;
    const section: { loader: RamLoader; syncError?: unknown } = { loader };
    this.section = section;
    this.placedTo = loader;
    const syncs = { eos: loader.onEos !== undefined, flush: loader.onFlush !== undefined };
    const colo = loader.colo && shareColoCache(loader.colo);
    const reply = await this.ask<LoadReply>({ kind: 'load', version, ahead, at, blockKnown: loader.blockKnown, ...postcopyBitmaps(loader), colo, syncs }, [ahead.buffer as ArrayBuffer])
      .finally(() => (this.section = undefined));
    r.putBack(Buffer.from(reply.rest.buffer, reply.rest.byteOffset, reply.rest.byteLength), start + reply.consumed, reply.ended);
    file?.seekTo(start + reply.consumed + reply.rest.byteLength);
    loader.blockKnown = reply.blockKnown;
    loader.pages += reply.pages;
    this.pages += reply.pages;
    if (section.syncError !== undefined) throw section.syncError;
    if (reply.failure) throw rebuild(reply.failure);
  }

  /**
   * postcopy-preempt's channel, read so far by `r`, loaded on the thread from postcopy's RUN to
   * its end, the pages placed as `loader`'s (the main channel's) are; resolves as it ends,
   * rejects with its failure. Undefined where the thread cannot take it (the channel is no
   * socket, faults are armed).
   */
  loadPreempt(r: StreamReader, loader: RamLoader): Promise<void> | undefined {
    const input = r.source;
    if (this.failure || this.preempt || faults.any || !(input instanceof SocketInput) || input.fd === undefined || !loader.requested) return undefined;
    const fd = duplicateOf(input.fd);
    if (fd === undefined) return undefined;
    input.pause(); // the thread reads it from here, after what `r` read ahead
    const ahead = new Uint8Array(r.takeBuffered());
    this.placedTo = loader;
    const ended = new Promise<PreemptEnded>((resolve, reject) => (this.preempt = { resolve, reject }));
    giveDescriptor(this.worker, fd, { kind: 'preempt', fd, ahead, ...postcopyBitmaps(loader) } satisfies ToLoadWorker, [ahead.buffer as ArrayBuffer]);
    return ended.then((r) => {
      this.pages += r.pages;
      if (r.failure) throw rebuild(r.failure);
    });
  }

  /** colo_flush_ram_cache() on the thread: the cache's received pages into guest RAM. */
  async flushColo(colo: SharedColoCache): Promise<void> {
    const reply = await this.ask<ColoFlushed>({ kind: 'colo-flush', colo });
    this.pages += reply.pages;
  }

  /** Posts `m` and waits for its reply (one at a time: the main thread waits for each). */
  private ask<R extends LoadReply | ColoFlushed>(m: ToLoadWorker, transfer: ArrayBuffer[] = []): Promise<R> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<R>((resolve, reject) => {
      this.pending = { resolve: resolve as (r: LoadReply | ColoFlushed) => void, reject };
      this.post(m, transfer);
    });
  }

  /** multifd_recv_sync_main() for the thread, at the section's sync point `at`; then it goes on. */
  private async sync(at: SyncRequest['at']): Promise<void> {
    const section = this.section;
    let failed = false;
    try {
      await (at === 'eos' ? section?.loader.onEos?.() : section?.loader.onFlush?.());
    } catch (err) {
      if (section) section.syncError ??= err;
      failed = true;
    }
    this.post({ kind: 'synced', failed });
  }

  /** After the migration, or where none came: the thread closes any descriptor it has and ends; it takes no more sections. */
  close(): void {
    this.post({ kind: 'close' });
    this.failure ??= new Error('load thread closed');
  }

  private post(m: ToLoadWorker, transfer: ArrayBuffer[] = []): void {
    if (!this.failure) this.worker.postMessage(m, transfer);
  }

  private preemptEnded(r: PreemptEnded): void {
    const p = this.preempt;
    this.preempt = undefined;
    p?.resolve(r);
  }

  private settle(r: LoadReply | ColoFlushed): void {
    const p = this.pending;
    this.pending = undefined;
    p?.resolve(r);
  }

  private crashed(err: Error): void {
    this.failure ??= err;
    const p = this.pending;
    this.pending = undefined;
    p?.reject(err);
    const preempt = this.preempt;
    this.preempt = undefined;
    preempt?.reject(err);
  }
}

/** `loader`'s postcopy bitmaps, whose words the thread shares. */
function postcopyBitmaps(loader: RamLoader): PostcopyBitmaps {
  const words = (b: DirtyBitmap): SharedArrayBuffer => b.words.buffer as SharedArrayBuffer;
  return {
    received: loader.received && words(loader.received),
    placing: loader.postcopyPlacing ? { taken: words(loader.taken!), requested: loader.requested && words(loader.requested) } : undefined,
  };
}

/** The failure the thread met, as the main thread's loader would have thrown it. */
function rebuild(f: LoadFailure): Error {
  if (f.kind === 'load-error') {
    const err = new LoadError(f.errno, ...f.lines);
    err.early = f.early;
    return err;
  }
  if (f.kind === 'ended') return new StreamEnded(f.failure === undefined ? undefined : new Error(f.failure));
  return new Error(f.message);
}
