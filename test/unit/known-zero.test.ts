/**
 * A destination skips reading pages nothing has written when a ZERO record comes (they are zero
 * without a look); every writer — the main stream's records, a multifd channel — must clear
 * that knowledge, or a zero record would leave stale bytes behind.
 */
import t from 'tap';
import { GuestRam, isZeroAt, PAGE_SIZE } from '../../src/guest/ram.js';
import { encodeHeader } from '../../src/migration/multifd/format.js';
import { receivePackets } from '../../src/migration/multifd/receiver.js';
import { RamLoader } from '../../src/migration/ram/ram-load.js';
import { reader, records } from '../helpers/ram-records.js';

t.test('zero records clear pages the stream or a multifd channel wrote, and skip untouched ones', async (t) => {
  const ram = new GuestRam('m', 16 * PAGE_SIZE);
  const loader = new RamLoader(ram);
  const page = (n: number): Buffer => ram.page(n);
  t.ok(ram.surelyZero(0) && ram.surelyZero(15), 'fresh RAM is known zero');

  await loader.load(reader(records([[0, Buffer.alloc(PAGE_SIZE, 0xab)], [1, 0x11]], true)), 4);
  t.equal(page(0)[100], 0xab);
  t.equal(page(1)[100], 0x11, 'a non-zero fill writes the page');
  t.notOk(ram.surelyZero(0) || ram.surelyZero(1), 'pages written by records are no longer known zero');

  // A multifd channel writes page 2.
  const header = encodeHeader({ flags: 0, packetNum: 0n, block: 'm', offsets: [2 * PAGE_SIZE], zeroOffsets: [] });
  await receivePackets(reader(header, Buffer.alloc(PAGE_SIZE, 0xcd)), ram, async () => undefined);
  t.equal(page(2)[0], 0xcd);
  t.notOk(ram.surelyZero(2), 'a page a channel wrote is no longer known zero');

  await loader.load(reader(records([[0, 0], [1, 0], [2, 0], [7, 0]], false)), 4);
  for (const n of [0, 1, 2, 7]) t.ok(page(n).equals(Buffer.alloc(PAGE_SIZE)), `page ${n} is zero after its zero record`);
  t.ok(ram.surelyZero(7), 'a zero record on an untouched page leaves it known zero');
});

t.test('RAM loaded from a file is not assumed zero', async (t) => {
  const ram = new GuestRam('m', 4 * PAGE_SIZE);
  ram.knownZero = undefined; // what loadFile() does
  ram.segments[0]!.fill(0x5a);
  await new RamLoader(ram).load(reader(records([[3, 0]], true)), 4);
  t.ok(ram.page(3).equals(Buffer.alloc(PAGE_SIZE)), 'the zero record was applied');
  t.equal(ram.page(0)[0], 0x5a, 'other pages untouched');
});

t.test('isZeroAt(): one non-zero byte anywhere in the page makes it non-zero, at any page of a segment', async (t) => {
  const bytes = Buffer.alloc(4 * PAGE_SIZE);
  for (const page of [0, 3]) {
    const at = page * PAGE_SIZE;
    t.ok(isZeroAt(bytes, at), `page ${page}: all zero`);
    for (const where of [0, 1, 7, 8, PAGE_SIZE / 2, PAGE_SIZE - 2, PAGE_SIZE - 1]) {
      bytes[at + where] = 0x40;
      t.notOk(isZeroAt(bytes, at), `page ${page}: a byte at ${where}`);
      t.ok(isZeroAt(bytes, page === 0 ? PAGE_SIZE : 0), 'its neighbour stays zero');
      bytes[at + where] = 0;
    }
  }
});
