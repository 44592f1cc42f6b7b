/**
 * mapped-ram (QEMU 9.0+, file: only): each RAM block's pages live at fixed offsets of the file
 * instead of in the stream, so that a page dirtied again is rewritten in place and the file has a
 * bounded size. The layout, as QEMU 10.0 writes it (docs/devel/migration/mapped-ram.rst, ram.c):
 *
 *   stream ... MEM_SIZE, then per block: idstr, used_length, and the 28-byte header
 *     be32 version (1) | be64 page size | be64 bitmap offset | be64 pages offset
 *   bitmap   at `bitmap offset` (right after the header): one bit per page, set where the page is
 *            in the file (zero pages are not); unsigned longs of the host (x86-64: 64-bit little
 *            endian), so its size is the page count rounded up to 64 bits; written at the end
 *   pages    at `pages offset`, the first 1 MiB boundary after the bitmap: page N at N * 4096
 *   stream   goes on after the pages region (pages offset + used_length) with the rest of the
 *            sections; the RAM records there are EOS only.
 *
 * Offsets are absolute file positions (a file:...,offset=N stream has them shifted by N).
 */
import { PAGE_SIZE, SEGMENT_PAGES } from '../../guest/ram.js';
import type { PositionedFile } from '../channels/outgoing-channel.js';
import { LoadError } from '../load-error.js';
import type { StreamReader } from '../stream/reader.js';
import type { StreamWriter } from '../stream/writer.js';

/** MAPPED_RAM_HDR_VERSION */
export const MAPPED_RAM_VERSION = 1;
/** sizeof(MappedRamHeader): packed. */
export const MAPPED_RAM_HEADER_BYTES = 4 + 8 + 8 + 8;
/** MAPPED_RAM_FILE_OFFSET_ALIGNMENT: where the pages region may start (O_DIRECT friendly). */
const PAGES_ALIGNMENT = 0x100000;
/** MAPPED_RAM_LOAD_BUF_SIZE: the most read at once from the pages region. */
const LOAD_CHUNK = 0x100000;

/** The longest run of pages written at once (IOV_MAX is 1024). */
const RUN_PAGES = 256;

/** BITS_TO_LONGS(pages) * sizeof(unsigned long) on a 64-bit host. */
export const bitmapBytes = (pages: number): number => Math.ceil(pages / 64) * 8;

/** What the page thread needs to write a block's pages: where they go, and the bitmap (shared). */
export interface MappedRamShare {
  pagesOffset: number;
  bitmap: SharedArrayBuffer;
}

/** The source's side of one block: where things go, and the bitmap of pages in the file. */
export class MappedRamWriter {
  /** In shared memory: the page thread sets and clears its bits (share()). */
  readonly bitmap: Buffer;
  private bitmapOffset = 0;
  private pagesOffset = 0;
  /**
   * Consecutive pages not yet written: one pwritev for a run instead of a pwrite per page (QEMU
   * writes page by page; the file is the same). Guest RAM by reference, safe as in the stream: a
   * page written to after it was picked is dirty again and goes again, after this run.
   */
  private run = { first: 0, pieces: [] as Uint8Array[] };

  constructor(
    private readonly file: PositionedFile,
    private readonly usedLength: number,
    /**
     * Counts bytes written beside the stream, as QEMU counts them: a page's bytes (multifd's
     * channels write them, with multifd) and the bitmap's (the main channel's, at completion).
     */
    private readonly counted: (bytes: number, what: 'page' | 'bitmap') => void,
    /** The page thread's writer: the main thread's share(), its header written already. */
    shared?: MappedRamShare,
  ) {
    this.bitmap = Buffer.from(shared?.bitmap ?? new SharedArrayBuffer(bitmapBytes(usedLength / PAGE_SIZE)));
    if (shared) this.pagesOffset = shared.pagesOffset;
  }

  /** For the page thread's writer, once header() has placed the pages region. */
  share(): MappedRamShare {
    return { pagesOffset: this.pagesOffset, bitmap: this.bitmap.buffer as SharedArrayBuffer };
  }

  /** The page thread wrote `bytes` of pages: counted as page() counts them here. */
  countPages(bytes: number): void {
    this.counted(bytes, 'page');
  }

  /**
   * mapped_ram_setup_ramblock(): the header after the block's used_length, at stream file position
   * `at`; returns where the stream goes on (after the pages region).
   */
  header(w: StreamWriter, at: number): number {
    this.bitmapOffset = at + MAPPED_RAM_HEADER_BYTES;
    this.pagesOffset = Math.ceil((this.bitmapOffset + this.bitmap.length) / PAGES_ALIGNMENT) * PAGES_ALIGNMENT;
    w.be32(MAPPED_RAM_VERSION);
    w.be64(PAGE_SIZE);
    w.be64(this.bitmapOffset);
    w.be64(this.pagesOffset);
    return this.pagesOffset + this.usedLength;
  }

  /** save_normal_page(): the page at its place, and its bit set. */
  page(page: number, data: Uint8Array): void {
    const run = this.run;
    if (run.pieces.length === 0 || page !== run.first + run.pieces.length || run.pieces.length === RUN_PAGES) {
      this.flush();
      run.first = page;
    }
    run.pieces.push(data);
    this.bitmap[page >> 3]! |= 1 << (page & 7);
    this.counted(PAGE_SIZE, 'page');
  }

  /** Writes the pages picked so far (before a section ends, and before the bitmap). */
  flush(): void {
    const run = this.run;
    if (run.pieces.length === 0) return;
    this.file.writeAt(run.pieces, this.pagesOffset + run.first * PAGE_SIZE);
    run.pieces = [];
  }

  /** save_zero_page(): nothing written; a page that was in the file before is no longer. */
  zero(page: number): void {
    this.bitmap[page >> 3]! &= ~(1 << (page & 7));
  }

  /** ram_save_file_bmap(): at completion, before the last EOS. */
  writeBitmap(): void {
    this.flush();
    this.file.writeAt([this.bitmap], this.bitmapOffset);
    this.counted(this.bitmap.length, 'bitmap');
  }
}

/** What one block's mapped-ram header and bitmap say (`qmigd inspect` prints it). */
export interface MappedRamBlockInfo {
  id: string;
  /** Where in the stream the header is. */
  offset: number;
  version: number;
  pageSize: number;
  bitmapOffset: number;
  bitmapBytes: number;
  pagesOffset: number;
  /** The block's pages, and those of them the bitmap marks as in the file. */
  pages: number;
  pagesInFile: number;
}

/** How the destination reads a mapped-ram file beside its stream. */
export interface MappedRamSource {
  /** pread(); returns the bytes read (fewer at the end of the file). */
  readAt(into: Buffer, at: number, length: number, position: number): Promise<number>;
  /** The file position of the stream's byte 0 (file:...,offset=N). */
  readonly base: number;
}

/**
 * parse_ramblock_mapped_ram(): the header from the stream, the bitmap and then every page it
 * marks read from the file straight into RAM, and the stream moved past the pages region.
 * `page(n)`: the RAM of page n and the offset of the page in it (pages of one segment, of
 * SEGMENT_PAGES, are contiguous); `writing(from, to)` before pages [from, to) are written.
 */
export async function loadMappedRamBlock(
  r: StreamReader,
  source: MappedRamSource,
  id: string,
  length: number,
  /** The destination block's used_length: a page past it is refused (host_from_ram_block_offset). */
  blockSize: number,
  page: (n: number) => { buf: Buffer; at: number },
  writing: (from: number, to: number) => void,
  observe?: (info: MappedRamBlockInfo) => void,
): Promise<void> {
  const offset = r.consumed;
  if (!r.ready(MAPPED_RAM_HEADER_BYTES)) {
    try {
      await r.need(MAPPED_RAM_HEADER_BYTES);
    } catch {
      const got = r.available;
      throw new LoadError('EINVAL', `Could not read whole mapped-ram migration header (expected ${MAPPED_RAM_HEADER_BYTES}, got ${got} bytes)`);
    }
  }
  const version = r.be32();
  const pageSize = r.be64();
  const bitmapOffset = r.be64();
  const pagesOffset = r.be64();
  if (version > MAPPED_RAM_VERSION) {
    throw new LoadError('EINVAL', `Migration mapped-ram capability version not supported (expected <= ${MAPPED_RAM_VERSION}, got ${version})`);
  }
  if (pagesOffset % PAGE_SIZE !== 0) throw new LoadError('EINVAL', `Error reading ramblock ${id} pages, region has bad alignment`);
  const pages = Math.floor(length / pageSize);
  const bitmap = Buffer.alloc(bitmapBytes(pages));
  if ((await source.readAt(bitmap, 0, bitmap.length, bitmapOffset)) !== bitmap.length) throw new LoadError('EINVAL', 'Error reading dirty bitmap');
  const set = (n: number): boolean => (bitmap[n >> 3]! & (1 << (n & 7))) !== 0;
  if (observe) {
    let pagesInFile = 0;
    for (let n = 0; n < pages; n++) if (set(n)) pagesInFile++;
    observe({ id, offset, version, pageSize, bitmapOffset, bitmapBytes: bitmap.length, pagesOffset, pages, pagesInFile });
  }
  // read_ramblock_mapped_ram(): runs of set bits, read 1 MiB at a time from the run's start (so
  // a failed read names the offset QEMU names), straight into RAM as QEMU reads them: pread()
  // in libuv's pool, no copy and no per-page work on this thread, each 2 MiB region faulted in
  // at once (GuestRam.willWrite()). A run stays in one segment. Loading a 1 GiB file of random
  // pages (5 alternating loads each, medians): 2045 ms through a 1 MiB buffer copied page by page
  // into RAM, 1527 ms read in place (the destination's CPU 2120 → 1530 ms).
  for (let n = 0; n < pages; ) {
    if (!set(n)) {
      n++;
      continue;
    }
    let end = n + 1;
    while (end < pages && set(end) && end - n < LOAD_CHUNK / PAGE_SIZE && end % SEGMENT_PAGES !== 0) end++;
    if (end * PAGE_SIZE > blockSize) throw new LoadError('EINVAL', `page outside of ramblock ${id} range`);
    const want = (end - n) * PAGE_SIZE;
    const { buf, at } = page(n);
    // Before the read: a short one leaves part of the run written.
    writing(n, end);
    const got = await source.readAt(buf, at, want, pagesOffset + n * PAGE_SIZE);
    if (got !== want) {
      // qemu_get_buffer_at(): a short pread is an error, named with the read's start (no space
      // before "from": QEMU's words).
      const start = n * PAGE_SIZE;
      throw new LoadError(
        'EINVAL',
        `(${id}) failed to read page ${start.toString(16)}from file offset ${(pagesOffset + start).toString(16)}: Partial read of size ${got}, expected ${want}`,
      );
    }
    n = end;
  }
  // qemu_set_offset(): the stream goes on after the pages array, which is not read through.
  const next = pagesOffset + length - (source.base + r.consumed);
  if (next < 0) throw new LoadError('EINVAL', 'mapped-ram: the stream goes on before where it stands');
  await r.jump(next);
}
