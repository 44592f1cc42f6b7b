/**
 * The sending half of QEMUFile: big-endian puts into large chunks, and pages put by reference
 * (QEMU's qemu_put_buffer_async): the channel writes the pieces out with one writev, so a page
 * goes from guest RAM to the socket with no copy in between. That is safe for guest RAM for the
 * reason it is in QEMU: a page the guest writes after its dirty bit was cleared is dirty again
 * and is sent again, and in the final pass the guest is stopped.
 *
 * `written` counts every byte ever put, which is what QEMU's rate limiter and
 * qemu_file_total_transferred() count. Filled chunks come back through recycle() once sent:
 * fresh memory costs a page fault per 4 KiB and garbage-collector work, reused memory neither.
 */
import type { RecordKind } from './constants.js';

const CHUNK = 1 << 20;

/** A be32 on its own: a command's or return-path message's payload. */
export function be32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
}
const POOL_MAX = 24;

/** What take() hands the channel: the pieces in order, and the chunks to recycle once written. */
export interface Batch {
  pieces: Buffer[];
  retired: ArrayBuffer[];
}

export class StreamWriter {
  written = 0;
  /**
   * Told of each record (vmstate.ts) before its first byte is put, at offset `written`: faults
   * placed at a stream point (src/faults) learn their byte from it.
   */
  onRecord?: (kind: RecordKind, name: string | undefined) => void;
  /** The idstrs of the sections started, for the records of their later parts. */
  readonly sectionNames = new Map<number, string>();
  private chunk: Buffer = Buffer.allocUnsafeSlow(CHUNK);
  private pos = 0;
  /** Where the part of `chunk` not yet cut into a piece starts. */
  private mark = 0;
  private pieces: Buffer[] = [];
  private piecesBytes = 0;
  /** Chunks filled up since the last take(); their last bytes are among `pieces`. */
  private retired: ArrayBuffer[] = [];
  private readonly pool: ArrayBuffer[] = [];

  /** Bytes put but not yet taken by the channel. */
  get pending(): number {
    return this.piecesBytes + this.pos - this.mark;
  }

  u8(v: number): void {
    this.room(1);
    this.chunk[this.pos++] = v;
    this.written += 1;
  }

  be16(v: number): void {
    this.room(2);
    this.chunk.writeUInt16BE(v, this.pos);
    this.pos += 2;
    this.written += 2;
  }

  be32(v: number): void {
    this.room(4);
    this.chunk.writeUInt32BE(v >>> 0, this.pos);
    this.pos += 4;
    this.written += 4;
  }

  /** Any integer up to 2^53, or a bigint for the full signed range (timer offsets). */
  be64(v: number | bigint): void {
    this.room(8);
    if (typeof v === 'bigint') this.chunk.writeBigUInt64BE(BigInt.asUintN(64, v), this.pos);
    else {
      this.chunk.writeUInt32BE(Math.floor(v / 0x100000000), this.pos);
      this.chunk.writeUInt32BE(v >>> 0, this.pos + 4);
    }
    this.pos += 8;
    this.written += 8;
  }

  /** Copies `data` now: for bytes that may change before they are sent and must not. */
  bytes(data: Uint8Array): void {
    this.room(data.length);
    this.chunk.set(data, this.pos);
    this.pos += data.length;
    this.written += data.length;
  }

  /** Puts `data` by reference: it is sent as it is when the channel writes it (guest RAM only). */
  ref(data: Buffer): void {
    this.cut();
    this.pieces.push(data);
    this.piecesBytes += data.length;
    this.written += data.length;
  }

  /** u8 length, then the bytes (qemu_put_counted_string). */
  countedString(s: string): void {
    const b = Buffer.from(s, 'latin1');
    if (b.length > 255) throw new Error(`counted string too long: ${s}`);
    this.u8(b.length);
    this.bytes(b);
  }

  /** Everything put so far, in order. Later puts go on in the same chunk, after these bytes. */
  take(): Batch {
    this.cut();
    const batch = { pieces: this.pieces, retired: this.retired };
    this.pieces = [];
    this.piecesBytes = 0;
    this.retired = [];
    return batch;
  }

  /** The chunks of a batch the channel has finished writing. */
  recycle(retired: ArrayBuffer[]): void {
    for (const ab of retired) if (this.pool.length < POOL_MAX) this.pool.push(ab);
  }

  /** The bytes put since the last cut become a piece. */
  private cut(): void {
    if (this.pos === this.mark) return;
    this.pieces.push(this.chunk.subarray(this.mark, this.pos));
    this.piecesBytes += this.pos - this.mark;
    this.mark = this.pos;
  }

  private room(n: number): void {
    if (this.pos + n <= this.chunk.length) return;
    this.cut();
    if (this.chunk.length === CHUNK) this.retired.push(this.chunk.buffer as ArrayBuffer);
    const ab = n <= CHUNK ? this.pool.pop() : undefined;
    this.chunk = ab ? Buffer.from(ab) : Buffer.allocUnsafeSlow(Math.max(CHUNK, n));
    this.pos = 0;
    this.mark = 0;
  }
}
