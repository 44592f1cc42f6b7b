/**
 * The sending half of QEMUFile: big-endian puts into large chunks that the channel writes out.
 * `written` counts every byte ever put, which is what QEMU's rate limiter and
 * qemu_file_total_transferred() count. Chunks come back through recycle() once sent: fresh
 * memory costs a page fault per 4 KiB and garbage-collector work, reused memory costs neither.
 */
const CHUNK = 1 << 20;
const POOL_MAX = 24;

export class StreamWriter {
  written = 0;
  private chunk: Buffer = Buffer.from(new ArrayBuffer(CHUNK));
  private pos = 0;
  private readonly full: Buffer[] = [];
  private readonly pool: ArrayBuffer[] = [];

  /** Bytes put but not yet taken by the channel. */
  get pending(): number {
    let n = this.pos;
    for (const b of this.full) n += b.length;
    return n;
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

  /** Copies `data` now: RAM may change after this call, the stream must not. */
  bytes(data: Uint8Array): void {
    this.room(data.length);
    this.chunk.set(data, this.pos);
    this.pos += data.length;
    this.written += data.length;
  }

  /** u8 length, then the bytes (qemu_put_counted_string). */
  countedString(s: string): void {
    const b = Buffer.from(s, 'latin1');
    if (b.length > 255) throw new Error(`counted string too long: ${s}`);
    this.u8(b.length);
    this.bytes(b);
  }

  /** Everything put so far, in order; the writer starts a fresh chunk. */
  take(): Buffer[] {
    if (this.pos > 0) {
      this.full.push(this.chunk.subarray(0, this.pos));
      this.chunk = this.fresh(CHUNK);
      this.pos = 0;
    }
    return this.full.splice(0);
  }

  /** A taken chunk the channel has finished with. */
  recycle(chunk: Buffer): void {
    const ab = chunk.buffer as ArrayBuffer;
    if (ab.byteLength === CHUNK && chunk.byteOffset === 0 && this.pool.length < POOL_MAX) this.pool.push(ab);
  }

  private fresh(size: number): Buffer {
    const ab = size <= CHUNK ? this.pool.pop() : undefined;
    return ab ? Buffer.from(ab) : Buffer.from(new ArrayBuffer(Math.max(CHUNK, size)));
  }

  private room(n: number): void {
    if (this.pos + n <= this.chunk.length) return;
    if (this.pos > 0) this.full.push(this.chunk.subarray(0, this.pos));
    this.chunk = this.fresh(n);
    this.pos = 0;
  }
}
