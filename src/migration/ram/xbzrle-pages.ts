/**
 * save_xbzrle_page() and the page cache it keeps: the part of the page loop that sends a page
 * as a delta against what was sent of it before. One per migration, on the thread whose page
 * loop sends the pages: RamSaver's on the main thread, or the page thread's (page-worker.ts).
 */
import { PAGE_SIZE } from '../../guest/ram.js';
import { ENCODING_FLAG_XBZRLE, RamFlag } from '../stream/constants.js';
import type { StreamWriter } from '../stream/writer.js';
import { PageCache } from './page-cache.js';
import { putNormalPage, putPageHeader } from './page-records.js';
import { xbzrleEncode } from './xbzrle.js';

/** xbzrle_counters that the page loop counts (the rates are derived from them at each sync). */
export interface XbzrleTally {
  bytes: number;
  pages: number;
  cacheMiss: number;
  overflow: number;
}

export const emptyTally = (): XbzrleTally => ({ bytes: 0, pages: 0, cacheMiss: 0, overflow: 0 });

/** What put() sent for a page: nothing (unchanged since cached), a delta, or the whole page. */
export type XbzrlePut = 'unchanged' | 'delta' | 'whole';

/** Where a page is and what the migration's stage says of the cache. */
export interface XbzrlePage {
  offset: number;
  data: Buffer;
  blockId: string;
  /** The page record may say CONTINUE. */
  continued: boolean;
  /** dirty-sync-count: the cache's age. */
  age: number;
  /** The guest is stopped for the final pass: the cache is no longer updated. */
  lastStage: boolean;
}

export class XbzrlePages {
  private readonly cache: PageCache;
  private readonly encoded = Buffer.alloc(PAGE_SIZE);
  private readonly current = Buffer.alloc(PAGE_SIZE);

  /** Counts into `tally`. Throws PageCacheAllocationError (or RangeError) where cache_init() fails. */
  constructor(
    cacheSize: number,
    readonly tally: XbzrleTally = emptyTally(),
  ) {
    this.cache = new PageCache(cacheSize);
  }

  /** xbzrle-cache-size as the cache was made with it. */
  get cacheSize(): number {
    return this.cache.sizeBytes;
  }

  /** Whether no page was cached yet (the page loop may still move to another thread). */
  get untouched(): boolean {
    return this.cache.usedItems === 0;
  }

  /** xbzrle_cache_zero_page(): a zero page was sent, so a cached copy of it would be stale. */
  zeroSent(offset: number, age: number, lastStage: boolean): void {
    if (!lastStage) this.cache.insertZero(offset, age);
  }

  /** save_xbzrle_page(), then save_normal_page() where that sent nothing. */
  put(w: StreamWriter, p: XbzrlePage): XbzrlePut {
    const { cache, tally } = this;
    if (!cache.isCached(p.offset, p.age)) {
      tally.cacheMiss++;
      // Sent whole this time; cached so that the next change is a delta against what was sent.
      if (!p.lastStage && cache.insert(p.offset, p.data, p.age)) this.putCopy(w, p, cache.get(p.offset));
      else putNormalPage(w, p.offset, p.data, p.blockId, p.continued);
      return 'whole';
    }
    tally.pages++;
    const cached = cache.get(p.offset);
    // The page as it is now, once (XBZRLE.current_buf): the guest may write it while it is
    // encoded (on the page thread the workload runs meanwhile), and the cache must then hold
    // exactly what the delta made of it at the destination.
    const current = this.current;
    current.set(p.data);
    const len = xbzrleEncode(cached, current, this.encoded, PAGE_SIZE);
    if (len === 0) return 'unchanged';
    if (!p.lastStage) cached.set(current); // the cache now holds what the destination will hold
    if (len < 0) {
      tally.overflow++;
      tally.bytes += PAGE_SIZE;
      if (p.lastStage) putNormalPage(w, p.offset, p.data, p.blockId, p.continued);
      else this.putCopy(w, p, cached);
      return 'whole';
    }
    const n = putPageHeader(w, p.offset, RamFlag.XBZRLE, p.blockId, p.continued);
    w.u8(ENCODING_FLAG_XBZRLE);
    w.be16(len);
    w.bytes(this.encoded.subarray(0, len));
    tally.bytes += n + 3 + len - 8;
    return 'delta';
  }

  /**
   * The whole page from the cache: copied now, since the slot may be updated before the channel
   * writes it (guest RAM goes by reference instead).
   */
  private putCopy(w: StreamWriter, p: XbzrlePage, cached: Uint8Array): void {
    putPageHeader(w, p.offset, RamFlag.PAGE, p.blockId, p.continued);
    w.bytes(cached);
  }
}
