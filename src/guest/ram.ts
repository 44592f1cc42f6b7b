/**
 * The guest's one RAM block: `size` bytes in 4 KiB pages, named like QEMU's memory backend id,
 * plus the dirty log its writers mark.
 *
 * The bytes live in segments of 1 GiB, each a SharedArrayBuffer: a typed array in Node 20 holds
 * at most 4 GiB, and guests of 4 to 64 GiB (and more) are what orchestrators test with. Fresh
 * segments come from calloc, so an untouched guest costs only the pages written so far. Being
 * shared, they let multifd's channel threads send pages straight from them and copy pages into
 * them. A page never straddles two segments; copies into them go through copyInto().
 *
 * With `--memory-share on` (QEMU's memory-backend-file share=on) the segments are the file,
 * mapped shared instead: every thread maps the same descriptor, and the page cache is what they
 * share.
 */
import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, ftruncateSync, openSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { mapShared } from '../native/ram-map.js';
import { populate } from '../native/ram-advice.js';
import { activeProfile } from '../profiles/index.js';
import { DirtyBitmap } from './dirty-bitmap.js';

export const PAGE_SIZE = 4096;
/** A page of zeros, to compare pages against. */
export const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);

/** Pages per segment: 1 GiB. */
export const SEGMENT_PAGES = 1 << 18;
export const SEGMENT_BYTES = SEGMENT_PAGES * PAGE_SIZE;
/** Pages of a region RAM is faulted in by on a destination (2 MiB, a huge page): see willWrite(). */
const REGION_PAGES = 512;

/**
 * Copies `source` into `target` at `at` with a plain memcpy. Buffer.fill() with a buffer value is
 * one: copy() and set() go through V8, which copies into a SharedArrayBuffer (guest RAM) word by
 * word with relaxed atomics; that cost a destination 130-200 ms more per GiB (measured).
 */
export function copyInto(target: Buffer, at: number, source: Uint8Array): void {
  if (source.length > 0) target.fill(source, at, at + source.length);
}

/** Whether the page at byte `offset` of `bytes` is all zero, without making a view of it. */
export function isZeroAt(bytes: Buffer, offset: number): boolean {
  // A page with data nearly always shows it at one of its ends: two loads spare the compare call,
  // which costs more than they do (a source scanning 1 GiB of random RAM: 65-90 ms to 23-28).
  if (bytes[offset] !== 0 || bytes[offset + PAGE_SIZE - 1] !== 0) return false;
  return bytes.compare(ZERO_PAGE, 0, PAGE_SIZE, offset, offset + PAGE_SIZE) === 0;
}

/** Where page `index` starts within its segment. */
export function pageOffset(index: number): number {
  return (index % SEGMENT_PAGES) * PAGE_SIZE;
}

/** How much RAM one slice of a long job (digest, load) touches before it lets the event loop run. */
const SLICE_BYTES = 8 << 20;

/**
 * Where a store's pages are, as another thread needs to know to reach the same pages: shared
 * memory, or a file open read-write as `fd` (the process's descriptor, valid in every thread).
 */
export type RamBacking = { readonly kind: 'memory'; readonly segments: readonly SharedArrayBuffer[] } | { readonly kind: 'file'; readonly fd: number };

/**
 * Pages in segments: guest RAM, and stores laid out like it (a COLO secondary's checkpoint
 * cache). `segment(page)` and pageOffset(page) locate a page for the hot loops.
 */
export class PageStore {
  readonly segments: Buffer[];
  readonly pages: number;

  /** A store of `size` zero bytes, or one over the pages of a backing another thread made. */
  constructor(
    readonly size: number,
    readonly backing: RamBacking = { kind: 'memory', segments: PageStore.allocate(size) },
  ) {
    if (size <= 0 || size % PAGE_SIZE !== 0) throw new Error(`RAM size ${size} is not a positive multiple of ${PAGE_SIZE}`);
    this.segments =
      backing.kind === 'memory'
        ? backing.segments.map((s) => Buffer.from(s))
        : Array.from({ length: Math.ceil(size / SEGMENT_BYTES) }, (_, i) => mapShared(backing.fd, i * SEGMENT_BYTES, Math.min(SEGMENT_BYTES, size - i * SEGMENT_BYTES)));
    this.pages = size / PAGE_SIZE;
  }

  private static allocate(size: number): SharedArrayBuffer[] {
    const segments: SharedArrayBuffer[] = [];
    for (let at = 0; at < size; at += SEGMENT_BYTES) segments.push(new SharedArrayBuffer(Math.min(SEGMENT_BYTES, size - at)));
    return segments;
  }

  /** The segment that holds page `index`, at pageOffset(index). */
  segment(index: number): Buffer {
    return this.segments[Math.floor(index / SEGMENT_PAGES)]!;
  }

  page(index: number): Buffer {
    const at = pageOffset(index);
    return this.segment(index).subarray(at, at + PAGE_SIZE);
  }

  /** Whether page `index` is all zero (buffer_is_zero); compares in place, allocating nothing. */
  isZero(index: number): boolean {
    return isZeroAt(this.segment(index), pageOffset(index));
  }

  /** Copies [from, from + target.length) of this store into `target`; beyond the end reads as zero. */
  read(from: number, target: Buffer): void {
    target.fill(0);
    for (let done = 0; done < target.length; ) {
      const at = from + done;
      if (at >= this.size) return;
      const seg = Math.floor(at / SEGMENT_BYTES);
      const inSeg = at - seg * SEGMENT_BYTES;
      const n = Math.min(target.length - done, this.segments[seg]!.length - inSeg);
      this.segments[seg]!.copy(target, done, inSeg, inSeg + n);
      done += n;
    }
  }

  /** Copies all of `other` (a store of the same size) here. */
  copyFrom(other: PageStore): void {
    other.segments.forEach((s, i) => copyInto(this.segments[i]!, 0, s));
  }

  /** SHA-256 of all of it, hashed in slices so QMP keeps answering meanwhile. */
  async sha256(): Promise<string> {
    const hash = createHash('sha256');
    for (const s of this.segments) {
      for (let off = 0; off < s.length; off += SLICE_BYTES) {
        hash.update(s.subarray(off, Math.min(off + SLICE_BYTES, s.length)));
        await new Promise((r) => setImmediate(r));
      }
    }
    return hash.digest('hex');
  }
}

export class GuestRam extends PageStore {
  /** Pages written since the last sync: the KVM dirty log of this emulation. */
  readonly dirtyLog: DirtyBitmap;
  /**
   * One byte per page, 1 while the page is known to be zero (nothing has written it since the
   * RAM was allocated); undefined once that is no longer tracked. It lets a destination skip
   * reading a page to learn it is zero, which for never-touched memory costs a page fault
   * each. Every writer of the pages clears its pages (wrote()). Bytes, not a DirtyBitmap:
   * multifd's threads clear it too, and bits would share words between threads.
   */
  knownZero?: Uint8Array;
  /**
   * One byte per 2 MiB region, 1 once willWrite() faulted it in (or everything was, by
   * prealloc()); shared, as knownZero, with the threads that write RAM. Undefined where RAM is a
   * file's pages.
   */
  readonly faultedIn?: Uint8Array;

  /**
   * `backing`, `knownZero` and `faultedIn`: another thread's view of the same guest RAM (the
   * load thread's, a multifd channel's).
   */
  constructor(
    readonly id: string,
    size: number,
    backing?: RamBacking,
    knownZero?: Uint8Array,
    faultedIn?: Uint8Array,
  ) {
    super(size, backing);
    this.dirtyLog = new DirtyBitmap(this.pages);
    this.knownZero = knownZero ?? new Uint8Array(new SharedArrayBuffer(this.pages)).fill(1);
    if (this.backing.kind === 'memory') this.faultedIn = faultedIn ?? new Uint8Array(new SharedArrayBuffer(Math.ceil(this.pages / REGION_PAGES)));
  }

  /**
   * RAM that is the file at `path`, mapped shared (memory-backend-file share=on): created, or
   * grown from empty, to `size`, as QEMU's file_ram_alloc() does; a shorter file is refused
   * with QEMU's words. Its zero pages are found by scanZeroPages().
   */
  static sharedFile(id: string, size: number, path: string): GuestRam {
    const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o644);
    try {
      const fileSize = fstatSync(fd).size;
      if (fileSize > 0 && fileSize < size) {
        throw new Error(activeProfile().errors.backingStoreTooSmall(id, fileSize.toString(16), size.toString(16)));
      }
      if (fileSize === 0) ftruncateSync(fd, size);
      // The descriptor stays open for the daemon's life: threads map the RAM through it.
      return new GuestRam(id, size, { kind: 'file', fd });
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /**
   * Before a destination writes page `index`: the first time a page of its 2 MiB region is
   * written, the whole region is faulted in with one madvise(MADV_POPULATE_WRITE), instead of a
   * page fault for each of its 512 pages as they are written; which is also what a QEMU whose RAM
   * is in transparent huge pages gets from the kernel. A region nothing is written to (zero
   * pages) stays unbacked. 1 GiB migrations, 7 alternating runs, medians: one channel 1670 →
   * 1245 ms (the destination's CPU 1620 → 1210 ms), two multifd channels 1978 → 1770 ms.
   */
  willWrite(index: number): void {
    const faulted = this.faultedIn;
    if (faulted === undefined) return;
    const region = Math.floor(index / REGION_PAGES);
    if (faulted[region] === 1) return;
    faulted[region] = 1;
    const segment = this.segment(index);
    const at = pageOffset(region * REGION_PAGES);
    populate(segment, at, Math.min(REGION_PAGES * PAGE_SIZE, segment.length - at));
  }

  /**
   * Makes page `index` zero, reading it only where it may not be and writing it only where it is
   * not (ram_handle_zero(), multifd_recv_zero_page_process()): untouched memory stays untouched.
   * knownZero needs no update: a page written here was not known to be zero.
   */
  zeroPage(index: number): void {
    if (this.surelyZero(index)) return;
    const segment = this.segment(index);
    const at = pageOffset(index);
    if (!isZeroAt(segment, at)) segment.fill(0, at, at + PAGE_SIZE);
  }

  /** A writer of page `index` says so (see knownZero). */
  wrote(index: number): void {
    if (this.knownZero) this.knownZero[index] = 0;
  }

  /** willWrite() and wrote() for pages [from, to), before they are written in one go. */
  writingRange(from: number, to: number): void {
    for (let page = from; page < to; page = (Math.floor(page / REGION_PAGES) + 1) * REGION_PAGES) this.willWrite(page);
    this.knownZero?.fill(0, from, to);
  }

  /** Whether page `index` is zero without a doubt, and without reading it. */
  surelyZero(index: number): boolean {
    return this.knownZero !== undefined && this.knownZero[index] === 1;
  }

  /** A source's zero-page test (buffer_is_zero): known to be zero, else read. */
  holdsZero(index: number): boolean {
    return this.surelyZero(index) || this.isZero(index);
  }

  /**
   * Fills RAM from a file whose size must equal the RAM size exactly. Each slice is read straight
   * into RAM (the kernel's copy, off this thread), then its zero pages are marked known to be
   * zero, so that a migration sends them without reading them again.
   */
  async loadFile(path: string): Promise<void> {
    const knownZero = this.knownZero;
    const file = await open(path, 'r');
    try {
      const { size } = await file.stat();
      if (size !== this.size) {
        throw new Error(`--memory-file: '${path}' is ${size} bytes, but --memory is ${this.size} bytes; they must be equal`);
      }
      for (const [i, s] of this.segments.entries()) {
        for (let off = 0; off < s.length; ) {
          const want = Math.min(SLICE_BYTES, s.length - off);
          for (let got = 0; got < want; ) {
            const { bytesRead } = await file.read(s, off + got, want - got, i * SEGMENT_BYTES + off + got);
            if (bytesRead === 0) throw new Error(`--memory-file: '${path}' ended early at byte ${i * SEGMENT_BYTES + off + got}`);
            got += bytesRead;
          }
          this.markZeroPages(i, off, off + want);
          off += want;
        }
      }
    } finally {
      await file.close();
    }
  }

  /** Marks which pages of a shared file's RAM are zero, in slices so QMP keeps answering. */
  async scanZeroPages(): Promise<void> {
    for (const [i, s] of this.segments.entries()) {
      for (let off = 0; off < s.length; off += SLICE_BYTES) {
        this.markZeroPages(i, off, Math.min(off + SLICE_BYTES, s.length));
        await new Promise((r) => setImmediate(r));
      }
    }
  }

  /** knownZero for bytes [from, to) of segment `i`, from what they hold. */
  private markZeroPages(i: number, from: number, to: number): void {
    const knownZero = this.knownZero;
    if (!knownZero) return;
    const s = this.segments[i]!;
    for (let at = from; at < to; at += PAGE_SIZE) knownZero[i * SEGMENT_PAGES + at / PAGE_SIZE] = isZeroAt(s, at) ? 1 : 0;
  }

  /** Writes all of RAM to a file (qmigd inspect --ram). */
  async saveFile(path: string): Promise<void> {
    const file = await open(path, 'w');
    try {
      for (const s of this.segments) await file.write(s);
    } finally {
      await file.close();
    }
  }

  /**
   * -mem-prealloc: touch every page now, so that the kernel's first-touch faults (which cost
   * more than the copies themselves) are paid at start-up instead of during a migration.
   */
  prealloc(): void {
    for (const s of this.segments) {
      if (this.backing.kind === 'file') {
        // The file's bytes are the guest's: touch each page for writing without changing it.
        for (let off = 0; off < s.length; off += PAGE_SIZE) s[off] = s[off]!;
        continue;
      }
      for (let off = 0; off < s.length; off += SLICE_BYTES) s.fill(0, off, Math.min(off + SLICE_BYTES, s.length));
    }
    this.faultedIn?.fill(1);
  }
}
