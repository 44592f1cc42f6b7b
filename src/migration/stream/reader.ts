/**
 * The receiving half of QEMUFile: a pull parser over a byte source. `need(n)` waits until n
 * bytes are buffered (or fails at end of stream); the get methods then read synchronously.
 * Hot loops test `ready(n)` first so that a buffered stream is parsed without awaiting.
 *
 * The rule: a get method reads only bytes that a `ready(n)` returning true, a `need(n)` or an
 * `atEnd()` returning false (one byte) made ready. Ready bytes are contiguous in `head`; bytes
 * merely buffered may still sit in the queue behind it, so a read that skips the rule reads past
 * `head` and would see the wrong bytes (or none) depending on where the source's chunks were
 * cut. Such a read throws UnawaitedRead instead: u8, peekU8, view and copyTo check the end of
 * `head` (one comparison per call, never per byte); be16/be32/be64/be64big need no check of
 * their own, as Buffer's readers already throw a RangeError past the end.
 */
import { copyInto } from '../../guest/ram.js';

/**
 * What the reader reads from: a Readable, or a source of reused memory (SocketInput) that
 * also wants each chunk back, in order, once the reader is done with it.
 */
export interface ByteSource {
  on(event: 'data', listener: (chunk: Buffer) => void): unknown;
  on(event: 'end' | 'close', listener: () => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  pause(): unknown;
  resume(): unknown;
  isPaused(): boolean;
  recycle?(): void;
  /** A file's stream only: the next byte emitted is stream byte `offset` (the reader has dropped what it held). */
  seekTo?(offset: number): void;
}

/** How much a reader buffers before it pauses the source (back-pressure to the sender), unless told otherwise. */
const HIGH_WATER = 4 << 20;

export class StreamEnded extends Error {
  constructor(readonly failure?: Error) {
    super(failure ? `stream error: ${failure.message}` : 'unexpected end of migration stream');
  }
}

/**
 * A get method called for bytes no ready()/need()/atEnd() made ready: a bug in the caller, not
 * a bad stream, so it is not a LoadError and is never reported as one.
 */
export class UnawaitedRead extends Error {
  override readonly name = 'UnawaitedRead';

  constructor(offset: number, n: number) {
    super(`stream reader: ${n} byte(s) at offset ${offset} read without ready()/need() first`);
  }
}

export class StreamReader {
  /** Bytes consumed so far: the offset of the next byte in the stream. */
  consumed = 0;
  private head: Buffer = Buffer.alloc(0);
  /** `head` is a chunk of the source (not a gathered copy): recycle it when it is used up. */
  private headIsChunk = false;
  private pos = 0;
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private ended = false;
  private failure?: Error;
  private wake?: () => void;

  /**
   * `prefix`: bytes already read from the source elsewhere (another thread's greeting read);
   * `highWater`: how much to buffer before pausing the source.
   */
  constructor(
    readonly source: ByteSource,
    prefix?: Buffer,
    private readonly highWater = HIGH_WATER,
  ) {
    // The head, not a queued chunk: it is no chunk of this source's, so nothing goes back for it.
    if (prefix) this.head = prefix;
    source.on('data', (chunk: Buffer) => {
      this.queue.push(chunk);
      this.queued += chunk.length;
      if (this.queued > this.highWater) source.pause();
      this.notify();
    });
    source.on('end', () => {
      this.ended = true;
      this.notify();
    });
    source.on('close', () => {
      this.ended = true;
      this.notify();
    });
    source.on('error', (err) => {
      this.failure = err;
      this.ended = true;
      this.notify();
    });
  }

  /**
   * The source breaks here (a fault closed it at a stream point): what is buffered past what
   * has been read is dropped, and nothing more comes.
   */
  cut(): void {
    this.dropHead();
    this.head = Buffer.alloc(0);
    this.pos = 0;
    this.queue.length = 0;
    this.queued = 0;
    this.ended = true;
    this.notify();
  }

  /** The source has ended (or failed): what is buffered is all there will be. */
  get exhausted(): boolean {
    return this.ended;
  }

  get available(): number {
    return this.head.length - this.pos + this.queued;
  }

  /** True when n bytes can be read without waiting. */
  ready(n: number): boolean {
    if (this.head.length - this.pos >= n) return true;
    if (this.available < n) return false;
    if (this.pos === this.head.length && this.queue[0]!.length >= n) {
      // The head is used up and the next chunk holds all n bytes: move on, no copy.
      this.dropHead();
      this.head = this.queue.shift()!;
      this.headIsChunk = true;
      this.queued -= this.head.length;
      this.pos = 0;
      if (this.queued <= this.highWater && this.source.isPaused() && !this.ended) this.source.resume();
    } else this.gather(n);
    return true;
  }

  async need(n: number): Promise<void> {
    while (!this.ready(n)) {
      if (this.ended) throw new StreamEnded(this.failure);
      if (this.source.isPaused()) this.source.resume();
      await new Promise<void>((r) => (this.wake = r));
    }
  }

  /**
   * True at a clean end of stream (nothing buffered and nothing more coming). False means the
   * next byte is ready, as after need(1): u8() or peekU8() may read it. (Being buffered is not
   * enough: with `head` used up, it may still be in the queue.)
   */
  async atEnd(): Promise<boolean> {
    while (!this.ready(1)) {
      if (this.ended) return true;
      if (this.source.isPaused()) this.source.resume();
      await new Promise<void>((r) => (this.wake = r));
    }
    return false;
  }

  u8(): number {
    const v = this.head[this.pos];
    if (v === undefined) throw new UnawaitedRead(this.consumed, 1);
    this.pos++;
    this.consumed++;
    return v;
  }

  peekU8(): number {
    const v = this.head[this.pos];
    if (v === undefined) throw new UnawaitedRead(this.consumed, 1);
    return v;
  }

  be16(): number {
    const v = this.head.readUInt16BE(this.pos);
    this.advance(2);
    return v;
  }

  be32(): number {
    const v = this.head.readUInt32BE(this.pos);
    this.advance(4);
    return v;
  }

  /** As a number: exact below 2^53, which covers every offset and length in a stream. */
  be64(): number {
    const v = this.head.readUInt32BE(this.pos) * 0x100000000 + this.head.readUInt32BE(this.pos + 4);
    this.advance(8);
    return v;
  }

  be64big(): bigint {
    const v = this.head.readBigUInt64BE(this.pos);
    this.advance(8);
    return v;
  }

  /** A view of the next n bytes; valid until the next need()/ready(). */
  /** The next four bytes as a be32, left unread (after need(4)): a connection's magic. */
  peekBe32(): number {
    if (this.pos + 4 > this.head.length) throw new UnawaitedRead(this.consumed, 4);
    return this.head.readUInt32BE(this.pos);
  }

  view(n: number): Buffer {
    // subarray() would quietly return fewer bytes.
    if (this.pos + n > this.head.length) throw new UnawaitedRead(this.consumed, n);
    const v = this.head.subarray(this.pos, this.pos + n);
    this.advance(n);
    return v;
  }

  async bytes(n: number): Promise<Buffer> {
    await this.need(n);
    return Buffer.from(this.view(n));
  }

  async skip(n: number): Promise<void> {
    while (n > 0) {
      const step = Math.min(n, 1 << 20);
      await this.need(step);
      this.advance(step);
      n -= step;
    }
  }

  /**
   * qemu_set_offset(): goes on `n` bytes further. Where the source can seek and the bytes are
   * not buffered yet, what is buffered is dropped and the source moved, so that the bytes in
   * between are never read (mapped-ram's pages region); otherwise they are read and dropped.
   */
  async jump(n: number): Promise<void> {
    if (!this.source.seekTo || n <= this.available) return this.skip(n);
    this.consumed += n;
    this.dropHead();
    this.head = Buffer.alloc(0);
    this.pos = 0;
    for (const _ of this.queue) this.source.recycle?.();
    this.queue.length = 0;
    this.queued = 0;
    // A source that met the end while reading ahead reads again from the new place.
    if (!this.failure) this.ended = false;
    this.source.seekTo(this.consumed);
  }

  /** u8 length then the bytes; a zero length is a failure, as qemu_get_counted_string(). */
  async countedString(): Promise<string | undefined> {
    await this.need(1);
    const len = this.u8();
    if (len === 0) return undefined;
    await this.need(len);
    return this.view(len).toString('latin1');
  }

  private advance(n: number): void {
    this.pos += n;
    this.consumed += n;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /**
   * Makes the next n bytes contiguous in `head`. Only those n bytes are copied: the rest of the
   * chunk they end in stays queued, so a stream is copied once, not once per chunk boundary.
   */
  private gather(n: number): void {
    const joined = Buffer.allocUnsafe(n);
    let have = this.head.copy(joined, 0, this.pos);
    this.dropHead();
    while (have < n) {
      const next = this.queue[0]!;
      const take = Math.min(next.length, n - have);
      next.copy(joined, have, 0, take);
      have += take;
      if (take === next.length) {
        this.queue.shift();
        this.source.recycle?.();
      } else this.queue[0] = next.subarray(take);
      this.queued -= take;
    }
    // Continue in the chunk after the joined bytes once they are read.
    this.head = joined;
    this.headIsChunk = false;
    this.pos = 0;
    if (this.queued <= this.highWater && this.source.isPaused() && !this.ended) this.source.resume();
  }

  /** The head is done with: a chunk of the source goes back to it. */
  private dropHead(): void {
    if (this.headIsChunk) this.source.recycle?.();
    this.headIsChunk = false;
  }

  /**
   * Everything buffered and not yet read, copied, for whoever reads the rest of the source
   * (a multifd channel handed to its thread once its greeting was read here; the main channel
   * lent to the load thread for a RAM section). The source must be paused first, so that
   * nothing more arrives here; its chunks go back to it.
   */
  takeBuffered(): Buffer {
    const rest = Buffer.concat([this.head.subarray(this.pos), ...this.queue]);
    this.consumed += this.head.length - this.pos + this.queued;
    this.dropHead();
    this.head = Buffer.alloc(0);
    this.pos = 0;
    for (let i = 0; i < this.queue.length; i++) this.source.recycle?.();
    this.queue.length = 0;
    this.queued = 0;
    return rest;
  }

  /**
   * The bytes another reader of the source read past its part (the load thread, at a RAM
   * section's EOS) come first again; `consumed` is the stream offset they start at; `ended`: the
   * other reader met the source's end, and they are all there will be. Only right after
   * takeBuffered(), with nothing buffered here.
   */
  putBack(rest: Buffer, consumed: number, ended = false): void {
    if (this.available > 0) throw new Error('putBack() with bytes still buffered');
    this.head = rest;
    this.headIsChunk = false;
    this.pos = 0;
    this.consumed = consumed;
    if (ended) this.ended = true;
  }

  /**
   * The ready bytes where they lie, for a loop that parses many small records without a call per
   * field (RamLoader's runs of pages): `bytes` from `at` to its end. The loop says how much it
   * read with consumeReady().
   */
  readyInPlace(): { bytes: Buffer; at: number } {
    return { bytes: this.head, at: this.pos };
  }

  /** `n` of the bytes readyInPlace() gave are read. */
  consumeReady(n: number): void {
    if (this.pos + n > this.head.length) throw new UnawaitedRead(this.consumed, n);
    this.advance(n);
  }

  /** Copies the next n bytes (already ready) into `target` (guest RAM, say) at `at`. */
  copyTo(target: Buffer, at: number, n: number): void {
    // A short source would not fail: copyInto() fills with it, repeating it to length n.
    if (this.pos + n > this.head.length) throw new UnawaitedRead(this.consumed, n);
    copyInto(target, at, this.head.subarray(this.pos, this.pos + n));
    this.advance(n);
  }

}
