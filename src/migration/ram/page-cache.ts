/**
 * The XBZRLE page cache, mirroring QEMU 7.2 migration/page_cache.c: a direct-
 * mapped cache of `maxItems` pages, slot = (addr / pageSize) & (maxItems - 1),
 * where each slot remembers one page address, its data and an "age" (the
 * dirty-bitmap sync count when it was last inserted or hit).
 *
 * Storage: QEMU mallocs each item's data on its first insert. Here the data
 * lives in one zero-filled backing Buffer (chunks of CHUNK_BYTES for caches
 * beyond that), allocated on the first insert. Buffer.alloc of that size is
 * calloc/mmap, so the OS commits memory only for pages actually written, much
 * like QEMU's per-item malloc. One buffer also keeps every page view 8-byte
 * aligned and in one ArrayBuffer, which xbzrleEncode's word path and its
 * two-entry view cache (guest RAM + this cache) rely on for speed.
 */

/** A cached page is not replaced by another address within two syncs [CACHED_PAGE_LIFETIME]. */
export const CACHED_PAGE_LIFETIME = 2;

const CHUNK_BYTES = 1 << 30;

/**
 * Validate a cache size as `cache_init` does and return the number of items.
 * Only whole pages count (size / pageSize rounded down), and that count must
 * be a power of two; QEMU does not round, it refuses.
 */
export function pageCacheItems(cacheSizeBytes: number, pageSize = 4096): number {
  // Integers, not necessarily safe ones: a power of two of 2^60 bytes is exact in a double.
  if (!Number.isInteger(cacheSizeBytes) || cacheSizeBytes < 0) {
    throw new RangeError(`invalid cache size ${cacheSizeBytes}`);
  }
  if (!Number.isSafeInteger(pageSize) || pageSize <= 0) throw new RangeError(`invalid page size ${pageSize}`);
  // The texts are QEMU 7.2's error_setg(QERR_INVALID_PARAMETER_VALUE, "cache size", ...).
  if (cacheSizeBytes < pageSize) {
    throw new RangeError("Parameter 'cache size' expects is smaller than one target page size");
  }
  const n = Math.floor(cacheSizeBytes / pageSize);
  // is_power_of_2(n); n may exceed 2^31, so no bit tricks
  if (2 ** Math.round(Math.log2(n)) !== n) {
    throw new RangeError("Parameter 'cache size' expects is not a power of two number of pages");
  }
  return n;
}

/** cache_init()'s g_try_malloc() failed: a cache too large to allocate. */
export class PageCacheAllocationError extends Error {
  constructor() {
    super('Failed to allocate page cache');
  }
}

export class PageCache {
  readonly pageSize: number;
  private items = 0;
  private configured = 0;
  private pagesPerChunk = 0;
  /** it_addr per slot; NaN = empty (QEMU uses (uint64_t)-1; NaN never equals an address) */
  private addrs!: Float64Array;
  /** it_age per slot */
  private ages!: Float64Array;
  /** whether it_data has been allocated (QEMU: it_data != NULL) */
  private present!: Uint8Array;
  private chunks!: (Buffer | undefined)[];
  /** QEMU's num_items: slots that have data */
  private allocated = 0;

  /** Throws RangeError where cache_init fails (size < page size, or not a power-of-two number of pages). */
  constructor(cacheSizeBytes: number, pageSize = 4096) {
    this.pageSize = pageSize;
    this.reset(cacheSizeBytes, pageCacheItems(cacheSizeBytes, pageSize));
  }

  private reset(sizeBytes: number, items: number): void {
    this.configured = sizeBytes;
    this.items = items;
    this.pagesPerChunk = Math.max(1, Math.min(items, Math.floor(CHUNK_BYTES / this.pageSize)));
    try {
      // QEMU allocates its item array at once too, and fails the same way when it cannot.
      this.addrs = new Float64Array(items).fill(NaN);
      this.ages = new Float64Array(items);
      this.present = new Uint8Array(items);
      this.chunks = new Array<Buffer | undefined>(Math.ceil(items / this.pagesPerChunk));
    } catch (err) {
      if (err instanceof RangeError) throw new PageCacheAllocationError();
      throw err;
    }
    this.allocated = 0;
  }

  /** Number of slots (QEMU's max_num_items). */
  get maxItems(): number {
    return this.items;
  }

  /** The size asked for (what QEMU reports as xbzrle-cache cache-size); maxItems * pageSize may be less. */
  get sizeBytes(): number {
    return this.configured;
  }

  /** Slots that hold data (QEMU's num_items). */
  get usedItems(): number {
    return this.allocated;
  }

  /** cache_get_cache_pos: (address / page_size) & (max_num_items - 1). */
  private slot(addr: number): number {
    // items is a power of two, so modulo equals the mask and stays exact past 2^32
    return Math.floor(addr / this.pageSize) % this.items;
  }

  private view(slot: number): Uint8Array {
    const c = Math.floor(slot / this.pagesPerChunk);
    let chunk = this.chunks[c];
    if (chunk === undefined) {
      const pages = Math.min(this.pagesPerChunk, this.items - c * this.pagesPerChunk);
      chunk = Buffer.alloc(pages * this.pageSize);
      this.chunks[c] = chunk;
    }
    const off = (slot - c * this.pagesPerChunk) * this.pageSize;
    return chunk.subarray(off, off + this.pageSize);
  }

  /** cache_is_cached: true if the slot holds `addr`; a hit refreshes the age. */
  isCached(addr: number, currentAge: number): boolean {
    const s = this.slot(addr);
    if (this.addrs[s] === addr) {
      this.ages[s] = currentAge;
      return true;
    }
    return false;
  }

  /**
   * get_cached_data: a view of the data in `addr`'s slot (whatever page it
   * holds; call isCached first). Writes through the view update the cache, as
   * save_xbzrle_page does with memcpy(prev_cached_page, ...). Throws if the
   * slot has never been filled (QEMU would return NULL).
   */
  get(addr: number): Uint8Array {
    const s = this.slot(addr);
    if (this.present[s] === 0) throw new Error(`page cache: no data in the slot of 0x${addr.toString(16)}`);
    return this.view(s);
  }

  /**
   * cache_insert: store a copy of `data` (pageSize bytes) for `addr`. Returns
   * false (QEMU: -1) without changing anything when the slot holds a different
   * page that is still fresh: it_age + CACHED_PAGE_LIFETIME > currentAge.
   */
  insert(addr: number, data: Uint8Array, currentAge: number): boolean {
    const s = this.slot(addr);
    if (!this.claim(s, addr, currentAge)) return false;
    this.view(s).set(data.length === this.pageSize ? data : data.subarray(0, this.pageSize));
    return true;
  }

  /** cache_insert of a zero page, as xbzrle_cache_zero_page does, without needing a zero buffer. */
  insertZero(addr: number, currentAge: number): boolean {
    const s = this.slot(addr);
    if (!this.claim(s, addr, currentAge)) return false;
    this.view(s).fill(0);
    return true;
  }

  private claim(s: number, addr: number, currentAge: number): boolean {
    if (this.present[s] !== 0 && this.addrs[s] !== addr && this.ages[s] + CACHED_PAGE_LIFETIME > currentAge) {
      return false; // the cached page is fresh, don't replace it
    }
    if (this.present[s] === 0) {
      this.present[s] = 1;
      this.allocated++;
    }
    this.ages[s] = currentAge;
    this.addrs[s] = addr;
    return true;
  }

  /**
   * Change the size as QEMU 7.2's xbzrle_cache_resize does: it builds a fresh
   * cache with cache_init and frees the old one, so all entries are DROPPED
   * (the entry-preserving cache_resize of older QEMUs no longer exists).
   * Resizing to the same byte size is a no-op that keeps the entries (QEMU
   * returns early when the size parameter is unchanged). Otherwise throws like
   * cache_init, leaving the cache untouched.
   */
  resize(newSizeBytes: number): void {
    if (newSizeBytes === this.configured) return;
    this.reset(newSizeBytes, pageCacheItems(newSizeBytes, this.pageSize));
  }
}
