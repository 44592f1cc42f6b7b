/** The XBZRLE page cache against QEMU 7.2's migration/page_cache.c. */
import t from 'tap';
import { CACHED_PAGE_LIFETIME, PageCache, pageCacheItems } from '../../src/migration/ram/page-cache.js';
import { xbzrleDecode, xbzrleEncode } from '../../src/migration/ram/xbzrle.js';

const PAGE = 4096;
const MiB = 1024 * 1024;

function page(fill: number): Uint8Array {
  return new Uint8Array(PAGE).fill(fill);
}

t.test('size checks as cache_init', async (t) => {
  t.equal(new PageCache(64 * MiB).maxItems, 16384, 'the default 64 MiB');
  t.equal(new PageCache(64 * MiB).sizeBytes, 64 * MiB);
  t.equal(new PageCache(PAGE).maxItems, 1, 'one page');
  t.equal(pageCacheItems(64 * MiB + 100), 16384, 'a partial page is ignored before the power-of-two check');
  t.equal(pageCacheItems(8 * 65536, 65536), 8, 'other page sizes');
  t.throws(() => new PageCache(PAGE - 1), /smaller than one target page size/);
  t.throws(() => new PageCache(0), /smaller than one target page size/);
  t.throws(() => new PageCache(3 * PAGE), /not a power of two number of pages/);
  t.throws(() => new PageCache(48 * MiB), /not a power of two number of pages/);
  t.throws(() => new PageCache(-1), RangeError);
  t.equal(new PageCache(1.5 * PAGE).maxItems, 1, '1.5 pages round down to 1, a power of two');
  t.equal(pageCacheItems(2 ** 40), 2 ** 28, 'large sizes do not overflow 32-bit arithmetic');
});

t.test('miss, insert, hit, data is a copy', async (t) => {
  const c = new PageCache(16 * PAGE);
  t.equal(c.usedItems, 0);
  t.notOk(c.isCached(0x5000, 1), 'empty cache misses');
  t.throws(() => c.get(0x5000), /no data/, 'nothing to get in an empty slot');
  const src = page(0xab);
  t.ok(c.insert(0x5000, src, 1));
  t.equal(c.usedItems, 1);
  src.fill(0); // the cache keeps its own copy
  t.ok(c.isCached(0x5000, 1));
  const got = c.get(0x5000);
  t.equal(got.length, PAGE);
  t.ok(got.every((b) => b === 0xab));
  t.equal(got.byteOffset % 8, 0, 'pages are 8-byte aligned, so xbzrleEncode takes its word path');
  got[7] = 1; // the view writes through, as save_xbzrle_page's memcpy into prev_cached_page
  t.equal(c.get(0x5000)[7], 1);
  t.notOk(c.isCached(0x6000, 1), 'another slot misses');
  t.notOk(c.isCached(0x5000 + 16 * PAGE, 1), 'a colliding address misses');
  t.ok(c.insert(0x5000, page(2), 1), 're-inserting the same address is always allowed');
  t.equal(c.get(0x5000)[0], 2);
  t.equal(c.usedItems, 1);
});

t.test('collisions: a fresh page is kept for CACHED_PAGE_LIFETIME syncs', async (t) => {
  t.equal(CACHED_PAGE_LIFETIME, 2);
  const c = new PageCache(4 * PAGE);
  const a = 0x1000;
  const b = a + 4 * PAGE; // same slot: (addr / 4096) & 3
  t.ok(c.insert(a, page(1), 10));
  t.notOk(c.insert(b, page(2), 10), 'same age: fresh');
  t.notOk(c.insert(b, page(2), 11), 'age + 1: fresh');
  t.ok(c.isCached(a, 10) && c.get(a)[0] === 1, 'the old page is untouched');
  t.ok(c.insert(b, page(2), 12), 'age + 2: stale, replaced');
  t.notOk(c.isCached(a, 12));
  t.ok(c.isCached(b, 12));
  t.equal(c.get(b)[0], 2);
  t.equal(c.usedItems, 1, 'replacing reuses the slot');
  t.ok(c.insert(b + PAGE, page(3), 0), 'an empty slot takes any age');
  t.equal(c.usedItems, 2);
});

t.test('a hit refreshes the age (cache_is_cached)', async (t) => {
  const c = new PageCache(2 * PAGE);
  const a = 0;
  const b = 2 * PAGE;
  t.ok(c.insert(a, page(1), 1));
  t.ok(c.isCached(a, 5), 'hit at sync 5');
  t.notOk(c.insert(b, page(2), 6), 'still fresh at 6');
  t.ok(c.insert(b, page(2), 7), 'stale at 7');
  t.notOk(c.isCached(a, 100), 'a miss does not touch anything');
  t.notOk(c.insert(a, page(1), 8), 'b is fresh now');
});

t.test('insertZero, as xbzrle_cache_zero_page', async (t) => {
  const c = new PageCache(4 * PAGE);
  t.ok(c.insert(0x3000, page(9), 1));
  t.ok(c.insertZero(0x3000, 2));
  t.ok(c.get(0x3000).every((b) => b === 0));
  t.notOk(c.insertZero(0x3000 + 4 * PAGE, 2), 'follows the same freshness rule');
  t.ok(c.get(0x3000).every((b) => b === 0));
  t.ok(c.insertZero(0x6000, 0), 'an empty slot');
  t.ok(c.isCached(0x6000, 0));
});

t.test('addresses beyond 4 GiB map by page number', async (t) => {
  const c = new PageCache(64 * MiB);
  const big = 2 ** 40 + 5 * PAGE;
  t.ok(c.insert(big, page(4), 1));
  t.ok(c.isCached(big, 1));
  t.notOk(c.isCached(5 * PAGE, 1), 'same slot, different address');
  t.notOk(c.insert(5 * PAGE, page(5), 2), 'and it collides with it');
  t.equal(c.get(5 * PAGE)[0], 4, 'get returns whatever the slot holds, as get_cached_data');
});

t.test('resize as xbzrle_cache_resize: a fresh cache', async (t) => {
  const c = new PageCache(4 * PAGE);
  t.ok(c.insert(0, page(1), 1));
  c.resize(4 * PAGE);
  t.ok(c.isCached(0, 1), 'same size: nothing happens');
  t.throws(() => c.resize(3 * PAGE), /power of two/);
  t.ok(c.isCached(0, 1), 'a refused size leaves the cache alone');
  c.resize(8 * PAGE);
  t.equal(c.maxItems, 8);
  t.equal(c.sizeBytes, 8 * PAGE);
  t.equal(c.usedItems, 0);
  t.notOk(c.isCached(0, 1), 'entries are dropped');
  t.ok(c.insert(7 * PAGE, page(7), 1));
  t.ok(c.isCached(7 * PAGE, 1));
});

t.test('the sender/receiver cycle of save_xbzrle_page with the cache', async (t) => {
  const c = new PageCache(8 * PAGE);
  const addr = 3 * PAGE;
  const guest = page(0);
  const receiver = page(0);
  t.notOk(c.isCached(addr, 1));
  t.ok(c.insert(addr, guest, 1)); // first send: a normal page, cached
  const out = new Uint8Array(PAGE);
  for (let round = 2; round < 50; round++) {
    guest[(round * 997) % PAGE] = round;
    guest[PAGE - 1 - round] ^= 0x10;
    t.ok(c.isCached(addr, round));
    const cached = c.get(addr);
    const len = xbzrleEncode(cached, guest, out, PAGE);
    t.ok(len > 0);
    cached.set(guest); // keep the cache equal to what was sent
    t.equal(xbzrleDecode(out.subarray(0, len), receiver) > 0, true);
  }
  t.same(Buffer.from(receiver), Buffer.from(guest));
});
