/**
 * The COLO secondary's RAM cache (colo_init_ram_cache() in 7.2): a copy of guest RAM that a
 * checkpoint's pages land in, shared with the load thread, which may load and flush it too.
 */
import { DirtyBitmap } from '../../guest/dirty-bitmap.js';
import { copyInto, pageOffset, PageStore, type GuestRam } from '../../guest/ram.js';

/** The cache and the pages a checkpoint put there, as shared memory a thread can take. */
export interface SharedColoCache {
  segments: readonly SharedArrayBuffer[];
  received: SharedArrayBuffer;
}

export interface ColoCache {
  cache: PageStore;
  received: DirtyBitmap;
}

/** The cache starts as a copy of what the first migration loaded. */
export function newColoCache(ram: GuestRam): ColoCache {
  const cache = new PageStore(ram.size);
  cache.copyFrom(ram);
  return { cache, received: new DirtyBitmap(ram.pages) };
}

export function shareColoCache({ cache, received }: ColoCache): SharedColoCache {
  if (cache.backing.kind !== 'memory') throw new Error('a COLO cache is memory');
  return { segments: cache.backing.segments, received: received.words.buffer as SharedArrayBuffer };
}

/** Another thread's view of the same cache. */
export function sharedColoCache(size: number, shared: SharedColoCache): ColoCache {
  const cache = new PageStore(size, { kind: 'memory', segments: shared.segments });
  return { cache, received: new DirtyBitmap(cache.pages, shared.received) };
}

/**
 * colo_flush_ram_cache(): every page marked received (the primary sent it, or the secondary's own
 * guest wrote it, absorbed before), cache → RAM, its mark cleared; how many. With `sliceMs` the
 * event loop gets a turn that often (the main thread's flush; the load thread's needs none).
 */
export async function flushColoCache(ram: GuestRam, { cache, received }: ColoCache, sliceMs?: number): Promise<number> {
  let slice = performance.now();
  let n = 0;
  for (let page = received.nextSet(0); page >= 0; page = received.nextSet(page + 1), n++) {
    received.clear(page);
    copyInto(ram.segment(page), pageOffset(page), cache.page(page));
    ram.wrote(page);
    if (sliceMs !== undefined && (n & 1023) === 1023 && performance.now() - slice > sliceMs) {
      await new Promise((r) => setImmediate(r));
      slice = performance.now();
    }
  }
  return n;
}
