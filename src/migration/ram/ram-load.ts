/**
 * The destination's RAM handler (ram_load_precopy in 7.2): applies records in stream order, the
 * last write to a page winning, and rejects what 7.2 rejects with its messages.
 */
import { inflateSync } from 'node:zlib';
import type { DirtyBitmap } from '../../guest/dirty-bitmap.js';
import { copyInto, isZeroAt, pageOffset, PAGE_SIZE, type GuestRam } from '../../guest/ram.js';
import type { ColoCache } from '../colo/cache.js';
import { activeProfile } from '../../profiles/index.js';
import { LoadError } from '../load-error.js';
import { ENCODING_FLAG_XBZRLE, RamFlag } from '../stream/constants.js';
import { StreamEnded, type StreamReader } from '../stream/reader.js';
import { loadMappedRamBlock, type MappedRamBlockInfo, type MappedRamSource } from './mapped-ram.js';
import { xbzrleDecode } from './xbzrle.js';

const PAGE_MASK = PAGE_SIZE - 1;
/** The flags of the records applyRun() takes: a page, and a fill, each in the block named before. */
const PAGE_RECORD = RamFlag.PAGE | RamFlag.CONTINUE;
const ZERO_RECORD = RamFlag.ZERO | RamFlag.CONTINUE;
/** compressBound(4096) for zlib. */
const COMPRESS_BOUND = 4096 + (4096 >> 12) + (4096 >> 14) + (4096 >> 25) + 13;
/** Parse this many records between looks at the clock, and yield after this long. */
const RECORDS_PER_CHECK = 256;
const SLICE_MS = 4;
/**
 * In postcopy, placing pages, a shorter slice: a vCPU may wait for a page that comes on the other
 * channel (postcopy-preempt's), which this thread reads only between slices. 512 MiB switched at
 * once with preempt, 3 runs each against 4 ms: a request's wait 9.5 to 14.3 ms against 12.8 to
 * 15.5 with the load on the QMP thread, and no change with the threads (where the page thread's
 * writes to the full main channel hold the request longer).
 */
const POSTCOPY_SLICE_MS = 1;

/** Makes the RAM a stream describes, for readers that have none of their own (the inspector). */
export type RamFactory = (id: string, size: number) => GuestRam;

export class RamLoader {
  /**
   * The per-channel "last block" of ram_block_from_stream(): set by the first named record (the
   * load thread carries it to its loader and back).
   */
  blockKnown = false;
  pages = 0;
  ram?: GuestRam;
  /**
   * COLO secondary: pages land in this cache (and are marked received) instead of guest RAM,
   * until a whole checkpoint has arrived (ram_load_precopy in COLO state).
   */
  colo?: ColoCache;
  /** multifd_recv_sync_main(): with multifd in 7.2, every EOS waits for the channels' SYNCs. */
  onEos?: () => Promise<void>;
  /** The same at every MULTIFD_FLUSH record (8.1+); without multifd the record is ignored. */
  onFlush?: () => Promise<void>;
  /**
   * mapped-ram on here (9.0+): each block's pages are read from the file, and the stream may
   * carry no page records (nor MULTIFD_FLUSH) of its own.
   */
  mapped?: MappedRamSource;
  /** Told what each block's mapped-ram header and bitmap say. */
  observeMapped?: (info: MappedRamBlockInfo) => void;
  /**
   * With postcopy advised: the pages that are here (ramblock_recv_bitmap_set()), and who waits
   * for one (a vCPU the guest stopped on it, in postcopy).
   */
  received?: DirtyBitmap;
  onPlaced?: (page: number) => void;
  /** From postcopy's LISTEN on, a page is placed once (see take()). */
  postcopyPlacing = false;
  /**
   * From LISTEN: the pages a loader has taken to place, set before the copy where `received` is
   * set after it. Of two loaders that place pages at once (the main channel's on the load thread,
   * postcopy-preempt's here) one takes each page, and the guest touches none before it is whole.
   */
  taken?: DirtyBitmap;
  /**
   * From RUN: the pages a vCPU waits for. A loader on the load thread that places one tells the
   * main thread, whose onPlaced() wakes the vCPU.
   */
  requested?: DirtyBitmap;
  private scratch?: Buffer;

  constructor(
    private readonly target: GuestRam | RamFactory,
    /** Told the type of every record (ZERO, PAGE, XBZRLE, COMPRESS_PAGE, MEM_SIZE). */
    private readonly observe?: (type: number) => void,
    /** postcopy-preempt's channel: its pages are marked received, and announced, by the main loader. */
    private readonly main?: RamLoader,
  ) {
    if (typeof target !== 'function') this.ram = target;
  }

  /** Loads one section's worth of records, up to and including EOS. */
  async load(r: StreamReader, version: number): Promise<void> {
    if (version !== 4) throw new LoadError('EINVAL');
    const runs = this.plain;
    let records = 0;
    let nextCheck = RECORDS_PER_CHECK;
    const sliceMs = (this.main ?? this).postcopyPlacing ? POSTCOPY_SLICE_MS : SLICE_MS;
    let sliceStart = performance.now();
    for (;;) {
      if (records >= nextCheck) {
        nextCheck = records + RECORDS_PER_CHECK;
        if (performance.now() - sliceStart > sliceMs) {
          await new Promise((res) => setImmediate(res));
          sliceStart = performance.now();
        }
      }
      if (runs && this.blockKnown) {
        const n = this.applyRun(r, RECORDS_PER_CHECK);
        records += n;
        if (n > 0) continue;
      }
      records++;
      if (!r.ready(8)) await recordHeader(r);
      const word = r.be64();
      const flags = word % PAGE_SIZE;
      const addr = word - flags;
      const type = flags & ~RamFlag.CONTINUE;
      if (type === RamFlag.EOS) {
        if (this.onEos) await this.onEos();
        return;
      }
      if (this.mapped) {
        // ram_load_precopy(): with mapped-ram these flags are invalid, and said as a number.
        const invalid = flags & (RamFlag.HOOK | RamFlag.MULTIFD_FLUSH | RamFlag.PAGE | RamFlag.XBZRLE | RamFlag.ZERO);
        if (invalid) throw new LoadError('EINVAL', `Unexpected RAM flags: ${invalid}`);
      }
      if (type === RamFlag.MULTIFD_FLUSH && activeProfile().multifd.flushRecord) {
        this.observe?.(type);
        if (this.onFlush) await this.onFlush();
        continue;
      }
      if (type === RamFlag.MEM_SIZE) {
        this.observe?.(type);
        await this.loadBlockList(r, addr);
        continue;
      }
      if (type !== RamFlag.ZERO && type !== RamFlag.PAGE && type !== RamFlag.XBZRLE && type !== RamFlag.COMPRESS_PAGE) {
        throw new LoadError('EINVAL', `Unknown combination of migration flags: 0x${flags.toString(16)}`);
      }
      this.observe?.(type);
      if (flags & RamFlag.CONTINUE) {
        if (!this.blockKnown) throw new LoadError('EINVAL', 'Ack, bad migration stream!');
      } else await this.readBlockName(r);
      const ram = this.ram!;
      if (addr + PAGE_SIZE > ram.size || (addr & PAGE_MASK) !== 0) {
        throw new LoadError('EINVAL', `Illegal RAM offset ${addr.toString(16)}`);
      }
      const page = addr / PAGE_SIZE;
      // A record's payload is read in before deciding where it goes: with postcopy-preempt the
      // other channel may place this page while this one waits for it, and from taking a page
      // to marking it received nothing waits.
      const encoded = await this.payload(r, type);
      // Postcopy places a page once (UFFDIO_COPY): a copy that comes again, on the other channel
      // with postcopy-preempt, is read into a scratch page and dropped (10.0 takes EEXIST as done).
      const dropped = !this.take(page);
      const target = dropped ? (this.scratch ??= Buffer.alloc(PAGE_SIZE)) : (this.colo ? this.colo.cache : ram).segment(page);
      const at = dropped ? 0 : pageOffset(page);
      if (!dropped && !this.colo && type !== RamFlag.ZERO) ram.willWrite(page);
      this.colo?.received.set(page);
      switch (type) {
        case RamFlag.PAGE:
          r.copyTo(target, at, PAGE_SIZE);
          break;
        case RamFlag.ZERO: {
          const fill = r.u8();
          // ram_handle_compressed(): a zero fill skips pages that are zero already (and RAM
          // nothing has written is zero without reading it).
          if (fill === 0 && !dropped && ((!this.colo && ram.surelyZero(page)) || isZeroAt(target, at))) {
            this.pages++;
            this.placed(page);
            continue;
          }
          target.fill(fill, at, at + PAGE_SIZE);
          break;
        }
        case RamFlag.XBZRLE:
          if (xbzrleDecode(encoded!, target.subarray(at, at + PAGE_SIZE)) === -1) throw new LoadError('EINVAL', 'Failed to load XBZRLE page - decode error!');
          break;
        case RamFlag.COMPRESS_PAGE:
          target.set(inflated(encoded!), at);
          break;
      }
      if (dropped) continue;
      if (!this.colo) ram.wrote(page);
      this.pages++;
      this.placed(page);
    }
  }

  /**
   * The records a plain loader (see plain) meets most, in a loop of their own: PAGE and ZERO
   * (fill 0) records that name no block (CONTINUE), lie whole in the reader's ready bytes and are
   * within RAM, applied (and marked received, with postcopy advised) as load() applies them; it
   * stops before any other record, and after `max`.
   * Returns how many it applied.
   * Why: run per record, load() (a large async function) was the hot code V8 compiled during the
   * migration, and compiled again; this small loop is optimized early. 1 GiB of zero pages (the
   * bench's all-zero migration, 7 alternating runs, medians): the destination's CPU went from 170
   * to 60 ms (QEMU's 50), the migration from 154 to 102 ms with RamSaver.saveRun() at the source.
   */
  private applyRun(r: StreamReader, max: number): number {
    const ram = this.ram!;
    const received = this.received;
    const { bytes, at: start } = r.readyInPlace();
    let at = start;
    let n = 0;
    while (n < max && at + 8 <= bytes.length) {
      const low = bytes.readUInt32BE(at + 4);
      const flags = low & PAGE_MASK;
      const addr = bytes.readUInt32BE(at) * 0x100000000 + (low - flags);
      if (addr + PAGE_SIZE > ram.size) break; // load() says why
      const page = addr / PAGE_SIZE;
      if (flags === PAGE_RECORD && at + 8 + PAGE_SIZE <= bytes.length) {
        ram.willWrite(page);
        copyInto(ram.segment(page), pageOffset(page), bytes.subarray(at + 8, at + 8 + PAGE_SIZE));
        ram.wrote(page);
        at += 8 + PAGE_SIZE;
      } else if (flags === ZERO_RECORD && at + 9 <= bytes.length && bytes[at + 8] === 0) {
        ram.zeroPage(page);
        at += 9;
      } else break;
      received?.set(page);
      n++;
    }
    r.consumeReady(at - start);
    this.pages += n;
    return n;
  }

  /**
   * Whether this loader's records are only pages to copy, as the load thread (load-thread.ts) can
   * copy them too: into guest RAM, or a COLO secondary's cache (shared with the thread, as are
   * the pages it marks received); no mapped-ram, observer, nor second channel. In postcopy the
   * bitmaps of received, taken and requested pages are shared with the thread too. multifd's
   * syncs (onEos, onFlush) are no page work: the load thread asks for them.
   */
  get threadable(): boolean {
    return this.ram !== undefined && !this.mapped && !this.observe && !this.main;
  }

  /** threadable(), into guest RAM, each page as it comes (not placed once): applyRun()'s records. */
  get plain(): boolean {
    return this.threadable && !this.colo && !this.postcopyPlacing;
  }

  /** Whether this loader places `page` (from LISTEN, only if no loader took it before). */
  private take(page: number): boolean {
    const owner = this.main ?? this;
    return !owner.postcopyPlacing || owner.taken!.claim(page);
  }

  /** A new channel (a recovered postcopy): its first record names its block again. */
  newChannel(): void {
    this.blockKnown = false;
  }

  private placed(page: number): void {
    const owner = this.main ?? this;
    if (!owner.received) return;
    owner.received.setShared(page);
    owner.onPlaced?.(page);
  }

  /** What follows a record's header, read in whole: a fill byte's or a page's bytes, or the encoded page. */
  private async payload(r: StreamReader, type: number): Promise<Buffer | undefined> {
    const fixed = type === RamFlag.PAGE ? PAGE_SIZE : type === RamFlag.ZERO ? 1 : 0;
    if (fixed && !r.ready(fixed)) await r.need(fixed);
    if (type === RamFlag.XBZRLE) return this.readXbzrle(r);
    if (type === RamFlag.COMPRESS_PAGE) return this.readCompressed(r);
    return undefined;
  }

  /** MEM_SIZE: the source's block list must name our block with our size. */
  private async loadBlockList(r: StreamReader, total: number): Promise<void> {
    let seen = 0;
    while (seen < total) {
      const id = await r.countedString();
      await r.need(8);
      const length = r.be64();
      if (!this.ram && id !== undefined && typeof this.target === 'function') this.ram = this.target(id, length);
      if (!this.ram || id !== this.ram.id) throw new LoadError('EINVAL', `Unknown ramblock "${id ?? ''}", cannot accept migration`);
      if (this.mapped) {
        // parse_ramblock(): mapped-ram reads the block before (and instead of) the size check.
        const ram = this.ram;
        await loadMappedRamBlock(r, this.mapped, id, length, ram.size, (n) => ({ buf: ram.segment(n), at: pageOffset(n) }), (from, to) => ram.writingRange(from, to), this.observeMapped);
        seen += length;
        continue;
      }
      if (length !== this.ram.size) {
        throw new LoadError('EINVAL', `Size mismatch: ${id}: 0x${length.toString(16)} != 0x${this.ram.size.toString(16)}: Invalid argument`);
      }
      seen += length;
    }
  }

  /** ram_block_from_stream() for a record without CONTINUE: the block is named. */
  private async readBlockName(r: StreamReader): Promise<void> {
    await r.need(1);
    const len = r.u8();
    await r.need(len);
    const id = r.view(len).toString('latin1');
    if (id !== this.ram?.id) throw new LoadError('EINVAL', `Can't find block ${id}`);
    this.blockKnown = true;
  }

  /**
   * load_xbzrle()'s header and encoded bytes (a view of the reader's, valid until it reads on);
   * decoded in place on our copy, which must equal the sender's cache.
   */
  private async readXbzrle(r: StreamReader): Promise<Buffer> {
    await r.need(3);
    const encoding = r.u8();
    const len = r.be16();
    if (encoding !== ENCODING_FLAG_XBZRLE) throw new LoadError('EINVAL', 'Failed to load XBZRLE page - wrong compression!');
    if (len > PAGE_SIZE) throw new LoadError('EINVAL', 'Failed to load XBZRLE page - len overflow!');
    await r.need(len);
    return r.view(len);
  }

  /** COMPRESS_PAGE: a zlib stream of one page (the `compress` capability of the sender). */
  private async readCompressed(r: StreamReader): Promise<Buffer> {
    await r.need(4);
    const len = r.be32();
    if (len > COMPRESS_BOUND) throw new LoadError('EINVAL', `Invalid compressed data length: ${len}`);
    await r.need(len);
    return r.view(len);
  }
}

/** A COMPRESS_PAGE's zlib stream, inflated: one page, or QEMU's error. */
function inflated(encoded: Buffer): Buffer {
  let out: Buffer;
  try {
    out = inflateSync(encoded);
  } catch {
    throw new LoadError('EINVAL', 'decompress data failed');
  }
  if (out.length !== PAGE_SIZE) throw new LoadError('EINVAL', 'decompress data failed');
  return out;
}

/**
 * The next record's header, where the stream may end: ended here (not inside a record, which
 * fails with EIO as everywhere), each release says it its own way (profile.stream.ramStreamEnd).
 */
async function recordHeader(r: StreamReader): Promise<void> {
  try {
    await r.need(8);
  } catch (err) {
    if (!(err instanceof StreamEnded)) throw err;
    const { errno, line } = activeProfile().stream.ramStreamEnd;
    throw LoadError.endedEarly(errno, line);
  }
}
