/** RAM sections written by hand, for tests that feed a RamLoader (or the load thread) directly. */
import { Readable } from 'node:stream';
import { PAGE_SIZE } from '../../src/guest/ram.js';
import { RamFlag } from '../../src/migration/stream/constants.js';
import { StreamReader } from '../../src/migration/stream/reader.js';
import { StreamWriter } from '../../src/migration/stream/writer.js';

/** A reader of `chunks`, in order. */
export const reader = (...chunks: Buffer[]): StreamReader => new StreamReader(Readable.from(chunks, { objectMode: false }));

/**
 * One RAM section body of block 'm': a record for each (page, fill byte or page data), then EOS;
 * `named`: the first record names the block.
 */
export function records(entries: Array<[number, number | Buffer]>, named: boolean): Buffer {
  const w = new StreamWriter();
  entries.forEach(([page, what], i) => {
    const cont = named && i === 0 ? 0 : RamFlag.CONTINUE;
    w.be64(page * PAGE_SIZE + (typeof what === 'number' ? RamFlag.ZERO : RamFlag.PAGE) + cont);
    if (!cont) w.countedString('m');
    if (typeof what === 'number') w.u8(what);
    else w.bytes(what);
  });
  w.be64(RamFlag.EOS);
  return Buffer.concat(w.take().pieces);
}
