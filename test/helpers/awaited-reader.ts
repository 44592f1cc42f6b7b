/**
 * A StreamReader that holds every read to the reader's rule whatever the chunking: the bytes a
 * get method reads must have been made ready first (ready(n) true, need(n), atEnd() false).
 * The production reader can only notice a read past the end of its `head`, so a read that skips
 * the rule but happens to find its bytes there goes unseen until a source cuts its chunks
 * elsewhere; this one counts the bytes made ready and refuses any read beyond them, so the
 * differential tests find such a caller on the first stream that reaches it.
 */
import { StreamReader, UnawaitedRead } from '../../src/migration/stream/reader.js';

export class AwaitedReader extends StreamReader {
  /** Stream offset up to which bytes have been made ready. */
  private granted = 0;

  // need() and atEnd() make bytes ready through ready(), so this one override covers them.
  override ready(n: number): boolean {
    const ok = super.ready(n);
    if (ok && this.consumed + n > this.granted) this.granted = this.consumed + n;
    return ok;
  }

  override u8(): number {
    this.check(1);
    return super.u8();
  }

  override peekU8(): number {
    this.check(1);
    return super.peekU8();
  }

  override be16(): number {
    this.check(2);
    return super.be16();
  }

  override be32(): number {
    this.check(4);
    return super.be32();
  }

  override be64(): number {
    this.check(8);
    return super.be64();
  }

  override be64big(): bigint {
    this.check(8);
    return super.be64big();
  }

  override view(n: number): Buffer {
    this.check(n);
    return super.view(n);
  }

  override copyTo(target: Buffer, at: number, n: number): void {
    this.check(n);
    super.copyTo(target, at, n);
  }

  private check(n: number): void {
    if (this.consumed + n > this.granted) throw new UnawaitedRead(this.consumed, n);
  }
}
