/**
 * The reader's contract with its callers: bytes are read only once made ready (ready(n) true,
 * need(n), atEnd() false), wherever the source's chunks end, and a read of bytes never made
 * ready fails loudly instead of returning undefined or a short view.
 */
import t from 'tap';
import { StreamReader, UnawaitedRead } from '../../src/migration/stream/reader.js';
import { AwaitedReader } from '../helpers/awaited-reader.js';
import { ChunkSource } from '../helpers/chunk-source.js';
import { eager, lazy } from '../helpers/stream-differential.js';

const A = Buffer.from([1, 2, 3]);
const B = Buffer.from([4, 5, 6, 7]);

t.test('atEnd() false leaves the next byte ready, also when it begins the next chunk', async (t) => {
  for (const [pace, perTurn] of [['drained first', lazy], ['queued at once', eager]] as const) {
    const r = new StreamReader(new ChunkSource([A, B], perTurn));
    await r.need(3);
    r.view(3); // the first chunk is used up
    t.equal(await r.atEnd(), false, `${pace}: more to come`);
    t.equal(r.peekU8(), 4, `${pace}: peekU8() sees the next chunk's first byte`);
    t.equal(r.u8(), 4, `${pace}: u8() reads it`);
    await r.need(3);
    t.same([...r.view(3)], [5, 6, 7]);
    t.equal(await r.atEnd(), true, `${pace}: then the clean end`);
    t.equal(r.consumed, 7);
  }
});

t.test('a read past the ready bytes throws UnawaitedRead and reads nothing', async (t) => {
  const r = new StreamReader(new ChunkSource([A, B], eager));
  await r.need(3);
  r.be16();
  r.u8();
  // B is buffered behind the used-up head, but nothing made it ready.
  await new Promise((res) => setImmediate(res));
  t.equal(r.available, 4, 'the next chunk is buffered');
  t.throws(() => r.u8(), UnawaitedRead, 'u8');
  t.throws(() => r.peekU8(), UnawaitedRead, 'peekU8');
  t.throws(() => r.view(2), UnawaitedRead, 'view');
  t.throws(() => r.copyTo(Buffer.alloc(4), 0, 4), UnawaitedRead, 'copyTo');
  t.throws(() => r.be32(), RangeError, "be32: Buffer's own bounds check");
  t.equal(r.consumed, 3, 'nothing was consumed by the failed reads');
  await r.need(4);
  t.equal(r.be32(), 0x04050607, 'once awaited, the bytes are there');
});

t.test('the tests\' AwaitedReader also refuses unawaited bytes that happen to be in the buffer', async (t) => {
  // The production reader only sees a read past its buffer; the differential tests' oracle
  // refuses any read beyond what was made ready, so a careless caller fails on every stream.
  const plain = new StreamReader(new ChunkSource([Buffer.concat([A, B])], eager));
  await plain.need(1);
  t.equal(plain.be32(), 0x01020304, 'the production reader lets a 4-byte read after need(1) through');
  const awaited = new AwaitedReader(new ChunkSource([Buffer.concat([A, B])], eager));
  await awaited.need(1);
  t.throws(() => awaited.be32(), UnawaitedRead, 'the AwaitedReader refuses it');
  t.equal(awaited.u8(), 1, 'and lets the awaited byte through');
  t.equal(await awaited.atEnd(), false);
  t.equal(awaited.u8(), 2, 'atEnd() false made one byte ready');
  t.throws(() => awaited.u8(), UnawaitedRead, 'but only one');
});

t.test('every chunk but the last is handed back once, in order, and never read again', async (t) => {
  // ChunkSource poisons chunks as they come back: a reader still reading one would load garbage.
  const stream = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 7) & 0xff));
  const chunks: Buffer[] = [];
  for (let at = 0, n = 1; at < stream.length; at += n, n = (n * 3) % 97 + 1) chunks.push(stream.subarray(at, at + n));
  const source = new ChunkSource(chunks, lazy);
  let recycled = 0;
  const recycle = source.recycle.bind(source);
  source.recycle = () => {
    recycled++;
    recycle();
  };
  const r = new StreamReader(source);
  const out: number[] = [];
  for (let n = 1; !(await r.atEnd()); n = (n % 13) + 1) {
    const take = Math.min(n, r.available);
    await r.need(take);
    out.push(...r.view(take));
  }
  t.ok(Buffer.from(out).equals(stream), 'the bytes read are the stream');
  t.ok(recycled >= chunks.length - 1 && recycled <= chunks.length, `${recycled} of ${chunks.length} chunks handed back`);
});

t.test('the source is paused once more than the read-ahead is buffered, and resumed as it is read', async (t) => {
  const chunk = (i: number): Buffer => Buffer.alloc(1000, i);
  for (const readAhead of [2500, 10_000]) {
    const source = new ChunkSource(Array.from({ length: 20 }, (_, i) => chunk(i)), eager);
    const r = new StreamReader(source, undefined, readAhead);
    await r.need(1); // the first turn delivered what it could
    await new Promise((resolve) => setImmediate(resolve));
    const held = r.available;
    t.ok(source.isPaused(), `read-ahead ${readAhead}: paused`);
    // The head's chunk, and the queue up to the first chunk past the mark.
    t.ok(held > readAhead && held <= readAhead + 2000, `read-ahead ${readAhead}: ${held} bytes buffered, up to a chunk past it beside the one being read`);
    let read = 0;
    while (!(await r.atEnd())) {
      await r.need(1);
      r.u8();
      read++;
    }
    t.equal(read, 20_000, `read-ahead ${readAhead}: the whole stream comes through`);
  }
});
