/**
 * The source's RAM handler (migration/ram.c in 7.2): the bitmap of pages still to send, the scan
 * that walks it round and round, zero-page detection, XBZRLE against the page cache, the
 * dirty-bitmap sync with its once-a-second period (dirty rate, XBZRLE rates, auto-converge), and
 * the counters query-migrate reports. It writes records into a StreamWriter; the caller frames
 * them into sections and decides when to stop (rate limit, time slice).
 */
import { DirtyBitmap } from '../../guest/dirty-bitmap.js';
import { PAGE_SIZE, type GuestRam } from '../../guest/ram.js';
import type { MigrationParameters } from '../params.js';
import { RamFlag } from '../stream/constants.js';
import type { StreamWriter } from '../stream/writer.js';
import { pageRoute, putNormalPage, putZeroPage } from './page-records.js';
import type { SlicePosition, SliceResult } from './page-worker.js';
import { XbzrlePages, type XbzrleTally } from './xbzrle-pages.js';

export interface RamCounters {
  transferred: number;
  duplicate: number;
  normal: number;
  dirtySyncCount: number;
  dirtyPagesRate: number;
  precopyBytes: number;
  downtimeBytes: number;
  /** Bytes sent in postcopy (the guest stopped here, running on the destination). */
  postcopyBytes: number;
  multifdBytes: number;
}

export interface XbzrleCounters extends XbzrleTally {
  cacheMissRate: number;
  encodingRate: number;
}

export interface RamSaverOptions {
  xbzrle: boolean;
  autoConverge: boolean;
  params: () => MigrationParameters;
  /** Whether the guest runs: bytes sent then count as precopy, else as downtime bytes. */
  guestRunning: () => boolean;
  /** Brings the dirty log up to date (memory_global_dirty_log_sync). */
  syncDirtyLog: () => void;
  /** Called after each sync with dirty-sync-count (MIGRATION_PASS). */
  onPass: (pass: number) => void;
  /** Auto-converge's verdict: the new CPU throttle percentage. */
  onThrottle: (percent: number) => void;
  throttlePercent: () => number;
  /** MigrationStats' `transferred` as the release counts it (auto-converge's period reads it). */
  transferred?: () => number;
  /** With multifd: pages go to the channels instead of the main stream (`zero`: as a zero page). */
  multifd?: { queue(offset: number, zero?: boolean): void };
  /**
   * The scan passed the end of RAM (find_dirty_block() wrapping round): 8.1+ syncs the multifd
   * channels there and says so on the main stream.
   */
  onRoundEnd?: (w: StreamWriter) => void;
  /** mapped-ram: pages go to their fixed places in the file, zero pages nowhere (ram.c, 9.0+). */
  mapped?: { page(page: number, data: Uint8Array): void; zero(page: number): void };
}

export class RamSaver {
  readonly bitmap: DirtyBitmap;
  /** migration_dirty_pages: bits set in `bitmap`. */
  dirtyPages = 0;
  /** Pages saved (target_page_count), for the per-period rates. */
  pagesSaved = 0;
  readonly counters: RamCounters = {
    transferred: 0, duplicate: 0, normal: 0, dirtySyncCount: 0, dirtyPagesRate: 0, precopyBytes: 0, downtimeBytes: 0, postcopyBytes: 0, multifdBytes: 0,
  };
  readonly xbzrleCounters: XbzrleCounters = { bytes: 0, pages: 0, cacheMiss: 0, cacheMissRate: 0, encodingRate: 0, overflow: 0 };
  private readonly xbzrle?: XbzrlePages;
  /** Set after the first complete pass (find_dirty_block): XBZRLE only helps for re-sent pages. */
  private xbzrleActive = false;
  /** The block of the last page record, so the next one may say CONTINUE. It spans sections. */
  private blockSent = false;
  private scan = 0;
  /** Once the VM is stopped for the final pass, the cache is no longer updated (last_stage). */
  private lastStage = false;
  /** In postcopy every page goes whole or as a zero page on the main channel (no XBZRLE, multifd). */
  private inPostcopy = false;
  private readonly period = {
    start: 0, dirtyPages: 0, bytesXferPrev: 0, pagesPrev: 0, highCount: 0, xbzrleMissPrev: 0, xbzrlePagesPrev: 0, xbzrleBytesPrev: 0,
  };

  constructor(
    private readonly ram: GuestRam,
    private readonly opts: RamSaverOptions,
  ) {
    this.bitmap = new DirtyBitmap(ram.pages);
    if (opts.xbzrle) this.xbzrle = new XbzrlePages(Number(this.cacheSize), this.xbzrleCounters);
  }

  get remainingBytes(): number {
    return this.dirtyPages * PAGE_SIZE;
  }

  get cacheSize(): bigint {
    return this.opts.params()['xbzrle-cache-size'];
  }

  /** The size of the XBZRLE cache this migration has, if it has one. */
  get xbzrleCacheSize(): number | undefined {
    return this.xbzrle?.cacheSize;
  }

  /** ram_save_setup(): every page dirty, the block list, then the first sync (the caller ends it with EOS). */
  setup(w: StreamWriter, afterBlock?: (w: StreamWriter) => void): void {
    this.bitmap.setAll();
    this.dirtyPages = this.ram.pages;
    this.ram.dirtyLog.clearAll(); // dirty logging starts now
    w.be64(this.ram.size + RamFlag.MEM_SIZE);
    w.countedString(this.ram.id);
    w.be64(this.ram.size);
    afterBlock?.(w); // mapped-ram's header
    this.sync();
  }

  /** ram_save_pending(): syncs first when what is left would fit in the downtime. */
  pending(threshold: number): number {
    if (this.remainingBytes < threshold) this.sync();
    return this.remainingBytes;
  }

  /** migration_bitmap_sync() */
  sync(): void {
    const now = Date.now();
    this.counters.dirtySyncCount++;
    if (!this.period.start) this.period.start = now;
    this.opts.syncDirtyLog();
    const fresh = this.bitmap.absorb(this.ram.dirtyLog);
    this.dirtyPages += fresh;
    this.period.dirtyPages += fresh;
    if (now > this.period.start + 1000) {
      this.triggerThrottle();
      this.updateRates(now);
      this.period.pagesPrev = this.pagesSaved;
      this.period.start = now;
      this.period.dirtyPages = 0;
      this.period.bytesXferPrev = this.transferred;
    }
    this.opts.onPass(this.counters.dirtySyncCount);
  }

  /** Ends a PART section's records; ram_save_iterate() counts this EOS as transferred. */
  endIteration(w: StreamWriter): void {
    w.be64(RamFlag.EOS);
    this.sent(8);
  }

  /** Enters the final stage: the guest is stopped and the last pages go out as they are. */
  enterLastStage(): void {
    this.lastStage = true;
  }

  /**
   * ram_postcopy_send_discard_bitmap()'s reset: the pass starts again at the start of RAM, and
   * the first page record names its block.
   */
  enterPostcopy(): void {
    this.inPostcopy = true;
    this.scan = 0;
    this.blockSent = false;
  }

  /**
   * get_queued_page(): a page the destination asked for goes now if it is still to be sent (one
   * sent already is on its way); the background pass then goes on after it, as QEMU's does.
   */
  saveRequested(w: StreamWriter, page: number, preempt?: { blockSent: boolean }): boolean {
    if (!this.bitmap.test(page)) return false;
    this.bitmap.clear(page);
    this.dirtyPages--;
    this.scan = page + 1;
    if (preempt) {
      // postcopy-preempt's channel names its block on its own (its own last_sent_block).
      const main = this.blockSent;
      this.blockSent = preempt.blockSent;
      this.savePage(w, page);
      preempt.blockSent = this.blockSent;
      this.blockSent = main;
    } else this.savePage(w, page);
    this.pagesSaved++;
    return true;
  }

  /**
   * ram_dirty_bitmap_reload() after a paused postcopy recovers: what the destination has not
   * received is what remains to send, from the start of RAM, naming the block again.
   */
  reloadFromReceived(received: DirtyBitmap): void {
    this.bitmap.setAll(); // every page, none past the end
    const words = this.bitmap.words;
    received.words.forEach((w, i) => (words[i]! &= ~w));
    this.dirtyPages = this.bitmap.count();
    this.scan = 0;
    this.blockSent = false;
  }

  /**
   * ram_find_and_save_block(): saves the next dirty page after the scan position, wrapping
   * round once. Returns false when no page is dirty. A page XBZRLE finds unchanged costs
   * nothing on the wire but still counts as handled.
   */
  saveNext(w: StreamWriter): boolean {
    let page = this.bitmap.nextSet(this.scan);
    if (page < 0) {
      // Hit the end: a complete round is done, and from now on XBZRLE may be used.
      this.opts.onRoundEnd?.(w);
      if (this.xbzrle) this.xbzrleActive = true;
      page = this.bitmap.nextSet(0);
      if (page < 0) {
        this.scan = 0;
        return false;
      }
    }
    this.bitmap.clear(page);
    this.dirtyPages--;
    this.scan = page + 1;
    this.savePage(w, page);
    this.pagesSaved++;
    return true;
  }

  /**
   * saveNext() up to `max` times, while pages are dirty: how many it saved. The page loop calls
   * this, not saveNext() per page, so that V8 optimizes this small loop early rather than the
   * migration's large one late (OutgoingMigration.sendPages()).
   */
  saveRun(w: StreamWriter, max: number): number {
    let n = 0;
    while (n < max && this.saveNext(w)) n++;
    return n;
  }

  /**
   * ram_save_target_page() (pageRoute()): a zero page, else XBZRLE, else the whole page. With
   * mapped-ram the pages go to their places in the file instead of into the stream.
   */
  private savePage(w: StreamWriter, page: number): void {
    const offset = page * PAGE_SIZE;
    const multifd = this.inPostcopy ? undefined : this.opts.multifd;
    const mapped = this.opts.mapped;
    // With mapped-ram and multifd the file is the same: the channels only write the pages in parallel.
    const route = pageRoute(this.ram, page, this.opts.params()['zero-page-detection'] ?? 'legacy', multifd !== undefined && !mapped);
    if (route === 'channel-detects') {
      // The channel's thread reads the page and counts it.
      multifd!.queue(offset);
      return;
    }
    if (route === 'channel') {
      // ram_save_multifd_page(): the page leaves on a channel; its bytes are counted there.
      multifd!.queue(offset, false);
      this.counters.normal++;
      return;
    }
    if (route === 'zero') {
      this.counters.duplicate++;
      if (mapped) return mapped.zero(page);
      this.sent(putZeroPage(w, offset, this.ram.id, this.continued()));
      if (this.xbzrleActive) this.xbzrle!.zeroSent(offset, this.counters.dirtySyncCount, this.lastStage);
      return;
    }
    const data = this.ram.page(page);
    if (mapped) {
      // The writer counts the page's bytes (main channel or multifd's, as the capability says).
      mapped.page(page, data);
      this.counters.normal++;
      return;
    }
    if (this.xbzrleActive && !this.inPostcopy) {
      const before = w.written;
      const put = this.xbzrle!.put(w, { offset, data, blockId: this.ram.id, continued: this.blockSent, age: this.counters.dirtySyncCount, lastStage: this.lastStage });
      if (put === 'unchanged') return;
      this.blockSent = true;
      this.sent(w.written - before);
      if (put === 'whole') this.counters.normal++;
      return;
    }
    this.sent(putNormalPage(w, offset, data, this.ram.id, this.continued()));
    this.counters.normal++;
  }

  /** Whether the next page record may say CONTINUE (its block was named before); it will be. */
  private continued(): boolean {
    const was = this.blockSent;
    this.blockSent = true;
    return was;
  }

  /**
   * Whether the page loop may run on the page thread (page-thread.ts): pages whose records need
   * nothing but RAM, the bitmap, where the scan is, multifd's queue (whose place the slices
   * carry), mapped-ram's file and bitmap and, with XBZRLE, a cache, which the thread keeps from
   * the start: so only while this side's cache is still empty.
   */
  get threadable(): boolean {
    return this.xbzrle?.untouched ?? true;
  }

  /** Where the scan stands and what XBZRLE may do, for the page thread's next slice. */
  get position(): SlicePosition {
    // Postcopy's pages go whole (ram_save_target_page(): no XBZRLE once postcopy runs).
    const xbzrle = this.xbzrle && !this.inPostcopy ? { active: this.xbzrleActive, age: this.counters.dirtySyncCount, lastStage: this.lastStage } : undefined;
    return { scan: this.scan, blockSent: this.blockSent, xbzrle };
  }

  /** What a slice of the page thread did, as if saveNext() had done it here. */
  absorb(slice: SliceResult): void {
    this.scan = slice.scan;
    this.blockSent = slice.blockSent;
    this.dirtyPages -= slice.pages;
    this.pagesSaved += slice.pages;
    this.counters.normal += slice.normal;
    this.counters.duplicate += slice.duplicate;
    this.sent(slice.bytes - slice.flushBytes); // as the main thread's onRoundEnd() flush: transferred, not RAM
    if (!slice.xbzrle) return;
    const x = this.xbzrleCounters;
    x.bytes += slice.xbzrle.bytes;
    x.pages += slice.xbzrle.pages;
    x.cacheMiss += slice.xbzrle.cacheMiss;
    x.overflow += slice.xbzrle.overflow;
    this.xbzrleActive = slice.xbzrle.active;
  }

  /** ram_transferred_add(): precopy-bytes while the guest runs, then postcopy- or downtime-bytes. */
  sent(bytes: number): void {
    if (this.opts.guestRunning()) this.counters.precopyBytes += bytes;
    else if (this.inPostcopy) this.counters.postcopyBytes += bytes;
    else this.counters.downtimeBytes += bytes;
    this.counters.transferred += bytes;
  }

  private get transferred(): number {
    return this.opts.transferred?.() ?? this.counters.transferred;
  }

  /** migration_trigger_throttle(): two periods dirtying more than the threshold share → throttle. */
  private triggerThrottle(): void {
    if (!this.opts.autoConverge) return;
    const p = this.opts.params();
    const bytesXfer = this.transferred - this.period.bytesXferPrev;
    const bytesDirty = this.period.dirtyPages * PAGE_SIZE;
    const threshold = (bytesXfer * p['throttle-trigger-threshold']) / 100;
    if (bytesDirty > threshold && ++this.period.highCount >= 2) {
      this.period.highCount = 0;
      this.opts.onThrottle(nextThrottle(this.opts.throttlePercent(), p, bytesDirty, threshold));
    }
  }

  /** migration_update_rates() */
  private updateRates(now: number): void {
    this.counters.dirtyPagesRate = Math.floor((this.period.dirtyPages * 1000) / (now - this.period.start));
    const pages = this.pagesSaved - this.period.pagesPrev;
    if (!pages || !this.xbzrle) return;
    const x = this.xbzrleCounters;
    const pr = this.period;
    x.cacheMissRate = (x.cacheMiss - pr.xbzrleMissPrev) / pages;
    pr.xbzrleMissPrev = x.cacheMiss;
    const unencoded = (x.pages - pr.xbzrlePagesPrev) * PAGE_SIZE;
    const encoded = x.bytes - pr.xbzrleBytesPrev;
    x.encodingRate = x.pages === pr.xbzrlePagesPrev || !encoded ? 0 : unencoded / encoded;
    pr.xbzrlePagesPrev = x.pages;
    pr.xbzrleBytesPrev = x.bytes;
  }
}

/** mig_throttle_guest_down() and cpu_throttle_set()'s 1..99 clamp. */
export function nextThrottle(now: number, p: MigrationParameters, bytesDirty: number, threshold: number): number {
  let next: number;
  if (now === 0) next = p['cpu-throttle-initial'];
  else {
    let inc = p['cpu-throttle-increment'];
    if (p['cpu-throttle-tailslow']) {
      const cpuNow = 100 - now;
      const cpuIdeal = cpuNow * (threshold / bytesDirty);
      inc = Math.min(Math.floor(cpuNow - cpuIdeal), inc);
    }
    next = Math.min(now + inc, p['max-cpu-throttle']);
  }
  return Math.max(1, Math.min(99, next));
}
