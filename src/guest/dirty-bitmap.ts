/**
 * One bit per 4 KiB page, 32 pages to a word. The workload sets bits as it writes (the dirty
 * log); migration keeps a second bitmap of pages still to send and folds the log into it at every
 * sync, as QEMU's cpu_physical_memory_sync_dirty_bitmap() does.
 */
export class DirtyBitmap {
  /** In shared memory, so that the migration's page thread can walk it. */
  readonly words: Uint32Array;

  /** A clear bitmap, or the one whose words another thread shares with us. */
  constructor(
    readonly pages: number,
    shared = new SharedArrayBuffer(Math.ceil(pages / 32) * 4),
  ) {
    this.words = new Uint32Array(shared);
  }

  set(page: number): void {
    this.words[page >>> 5]! |= 1 << (page & 31);
  }

  test(page: number): boolean {
    return (this.words[page >>> 5]! & (1 << (page & 31))) !== 0;
  }

  clear(page: number): void {
    this.words[page >>> 5]! &= ~(1 << (page & 31));
  }

  /*
   * The same, for a bitmap that two threads write at once (postcopy's received and taken pages,
   * with the load thread placing pages beside the QMP thread): an atomic read-modify-write loses
   * no other bit of the word, and what was written before it is seen by whoever sees the bit.
   */

  setShared(page: number): void {
    Atomics.or(this.words, page >>> 5, 1 << (page & 31));
  }

  testShared(page: number): boolean {
    return (Atomics.load(this.words, page >>> 5) & (1 << (page & 31))) !== 0;
  }

  clearShared(page: number): void {
    Atomics.and(this.words, page >>> 5, ~(1 << (page & 31)));
  }

  /** Sets the bit; whether it was clear, so that of two threads that race for it one wins. */
  claim(page: number): boolean {
    const bit = 1 << (page & 31);
    return (Atomics.or(this.words, page >>> 5, bit) & bit) === 0;
  }

  /** A bitmap of its own with the same bits. */
  copy(): DirtyBitmap {
    const c = new DirtyBitmap(this.pages);
    c.words.set(this.words);
    return c;
  }

  setAll(): void {
    this.words.fill(0xffffffff);
    const tail = this.pages & 31;
    if (tail) this.words[this.words.length - 1] = (1 << tail) - 1;
  }

  clearAll(): void {
    this.words.fill(0);
  }

  count(): number {
    let n = 0;
    for (const w of this.words) n += popcount(w);
    return n;
  }

  /** The first set bit at or after `from`, or -1. */
  nextSet(from: number): number {
    if (from >= this.pages) return -1;
    let i = from >>> 5;
    let w = this.words[i]! & (0xffffffff << (from & 31));
    while (w === 0) {
      if (++i >= this.words.length) return -1;
      w = this.words[i]!;
    }
    const page = (i << 5) + (31 - Math.clz32(w & -w));
    return page < this.pages ? page : -1;
  }

  /** Moves every bit of `log` into this bitmap and clears `log`; returns how many bits were new here. */
  absorb(log: DirtyBitmap): number {
    let fresh = 0;
    const mine = this.words;
    const theirs = log.words;
    for (let i = 0; i < mine.length; i++) {
      const w = theirs[i]!;
      if (w === 0) continue;
      fresh += popcount(w & ~mine[i]!);
      mine[i]! |= w;
      theirs[i] = 0;
    }
    return fresh;
  }
}

function popcount(w: number): number {
  w -= (w >>> 1) & 0x55555555;
  w = (w & 0x33333333) + ((w >>> 2) & 0x33333333);
  return (((w + (w >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}
