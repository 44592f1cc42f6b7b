/**
 * The guest's one RAM block: `size` bytes in 4 KiB pages, named like QEMU's memory backend id,
 * plus the dirty log its writers mark. The bytes live in a SharedArrayBuffer so that multifd's
 * channel threads send pages straight from them and copy pages into them; copies into it go
 * through copyInto().
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { DirtyBitmap } from './dirty-bitmap.js';

export const PAGE_SIZE = 4096;
/** A page of zeros, to compare pages against. */
export const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);

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
  return bytes.compare(ZERO_PAGE, 0, PAGE_SIZE, offset, offset + PAGE_SIZE) === 0;
}

/** How much RAM one slice of a long job (digest, load) touches before it lets the event loop run. */
const SLICE_BYTES = 8 << 20;

export class GuestRam {
  readonly bytes: Buffer;
  /** The memory of `bytes`, for other threads. */
  readonly shared: SharedArrayBuffer;
  readonly pages: number;
  /** Pages written since the last sync: the KVM dirty log of this emulation. */
  readonly dirtyLog: DirtyBitmap;
  /**
   * One byte per page, 1 while the page is known to be zero (nothing has written it since the
   * RAM was allocated); undefined once that is no longer tracked. It lets a destination skip
   * reading a page to learn it is zero, which for never-touched memory costs a page fault
   * each. Every writer of `bytes` clears its pages (wrote()). Bytes, not a DirtyBitmap: multifd's
   * threads clear it too, and bits would share words between threads.
   */
  knownZero?: Uint8Array;

  constructor(
    readonly id: string,
    readonly size: number,
  ) {
    if (size <= 0 || size % PAGE_SIZE !== 0) throw new Error(`RAM size ${size} is not a positive multiple of ${PAGE_SIZE}`);
    this.shared = new SharedArrayBuffer(size);
    this.bytes = Buffer.from(this.shared);
    this.pages = size / PAGE_SIZE;
    this.dirtyLog = new DirtyBitmap(this.pages);
    this.knownZero = new Uint8Array(new SharedArrayBuffer(this.pages)).fill(1);
  }

  /** A writer of page `index` says so (see knownZero). */
  wrote(index: number): void {
    if (this.knownZero) this.knownZero[index] = 0;
  }

  /** Whether page `index` is zero without a doubt, and without reading it. */
  surelyZero(index: number): boolean {
    return this.knownZero !== undefined && this.knownZero[index] === 1;
  }

  /** Fills RAM from a file whose size must equal the RAM size exactly. */
  async loadFile(path: string): Promise<void> {
    this.knownZero = undefined;
    const file = await open(path, 'r');
    try {
      const { size } = await file.stat();
      if (size !== this.size) {
        throw new Error(`--memory-file: '${path}' is ${size} bytes, but --memory is ${this.size} bytes; they must be equal`);
      }
      for (let off = 0; off < size; ) {
        const { bytesRead } = await file.read(this.bytes, off, Math.min(SLICE_BYTES, size - off), off);
        if (bytesRead === 0) throw new Error(`--memory-file: '${path}' ended early at byte ${off}`);
        off += bytesRead;
      }
    } finally {
      await file.close();
    }
  }

  /**
   * -mem-prealloc: touch every page now, so that the kernel's first-touch faults (which cost
   * more than the copies themselves) are paid at start-up instead of during a migration.
   */
  prealloc(): void {
    for (let off = 0; off < this.size; off += SLICE_BYTES) this.bytes.fill(0, off, Math.min(off + SLICE_BYTES, this.size));
  }

  /** Whether page `index` is all zero (buffer_is_zero); compares in place, allocating nothing. */
  isZero(index: number): boolean {
    return isZeroAt(this.bytes, index * PAGE_SIZE);
  }

  page(index: number): Buffer {
    return this.bytes.subarray(index * PAGE_SIZE, (index + 1) * PAGE_SIZE);
  }

  /** SHA-256 of all of RAM, hashed in slices so QMP keeps answering meanwhile. */
  async sha256(): Promise<string> {
    const hash = createHash('sha256');
    for (let off = 0; off < this.size; off += SLICE_BYTES) {
      hash.update(this.bytes.subarray(off, Math.min(off + SLICE_BYTES, this.size)));
      await new Promise((r) => setImmediate(r));
    }
    return hash.digest('hex');
  }
}
