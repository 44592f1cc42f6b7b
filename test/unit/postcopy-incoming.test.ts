/**
 * The destination's postcopy commands (src/migration/postcopy/incoming.ts), in process: the
 * states QEMU takes them in, its words for the ones it refuses, and a discard that clears the
 * pages it names and no others. The whole path, from a real QEMU source, is
 * test/integration/qemu-postcopy-interop.test.ts.
 */
import t from 'tap';
import { GuestRam, PAGE_SIZE } from '../../src/guest/ram.js';
import { LoadError } from '../../src/migration/load-error.js';
import { PostcopyIncoming, PostcopyState } from '../../src/migration/postcopy/incoming.js';
import { RamLoader } from '../../src/migration/ram/ram-load.js';

const advice = (pageSizes = PAGE_SIZE, targetPage = PAGE_SIZE): Buffer => {
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(BigInt(pageSizes), 0);
  b.writeBigUInt64BE(BigInt(targetPage), 8);
  return b;
};

/** RAM_DISCARD's payload: version, counted name, nil, then (start, length) byte pairs. */
const discard = (name: string, ranges: Array<[number, number]>, version = 0, nil = 0): Buffer => {
  const head = Buffer.from([version, name.length, ...Buffer.from(name), nil]);
  const pairs = Buffer.alloc(16 * ranges.length);
  ranges.forEach(([start, length], i) => {
    pairs.writeBigUInt64BE(BigInt(start), 16 * i);
    pairs.writeBigUInt64BE(BigInt(length), 16 * i + 8);
  });
  return Buffer.concat([head, pairs]);
};

function setup(postcopyRam = true, pages = 64): { pc: PostcopyIncoming; ram: GuestRam; calls: string[]; sent: Buffer[] } {
  const ram = new GuestRam('m', pages * PAGE_SIZE);
  const calls: string[] = [];
  const sent: Buffer[] = [];
  const pc = new PostcopyIncoming(
    {
      postcopyRam: () => postcopyRam,
      listen: () => calls.push('listen'),
      run: () => calls.push('run'),
      arrived: (page) => calls.push(`arrived ${page}`),
      sendRp: (type, payload, raw) => sent.push(Buffer.concat([Buffer.from([type >> 8, type & 255]), payload, raw ?? Buffer.alloc(0)])),
      recovering: () => false,
      resumed: () => calls.push('resumed'),
      paused: async () => undefined,
    },
    new RamLoader(ram),
  );
  return { pc, ram, calls, sent };
}

const refused = (fn: () => void, errno: string, message: string): Record<string, unknown> => {
  try {
    fn();
  } catch (err) {
    if (err instanceof LoadError) return { errno: err.errno, message: err.message, want: { errno, message } };
    throw err;
  }
  return { errno: 'none', message: 'accepted', want: { errno, message } };
};

t.test('advise, discard, listen, run: the states in order, the hooks called', async (t) => {
  const { pc, ram, calls } = setup();
  for (let p = 0; p < 64; p++) {
    ram.page(p).fill(0xab);
    ram.wrote(p); // as every writer of RAM says
  }
  pc.advise(advice());
  t.equal(pc.state, PostcopyState.ADVISE);
  pc.discard(discard('m', [[4 * PAGE_SIZE, 2 * PAGE_SIZE], [10 * PAGE_SIZE, PAGE_SIZE]]));
  t.equal(pc.state, PostcopyState.DISCARD);
  const zeroed = [...Array(64).keys()].filter((p) => ram.isZero(p));
  t.same(zeroed, [4, 5, 10], 'exactly the pages named are cleared');
  t.notOk(pc.listening);
  pc.listen();
  t.ok(pc.listening);
  pc.run();
  t.equal(pc.state, PostcopyState.RUNNING);
  t.same(calls, ['listen', 'run']);
});

t.test("what QEMU refuses, in its words", async (t) => {
  const cases: Array<[string, (pc: PostcopyIncoming) => void, string, string, boolean?]> = [
    ['16-byte advice without postcopy-ram', (pc) => pc.advise(advice()), 'EINVAL', 'RAM postcopy is disabled but have 16 byte advise', false],
    ['advice of another length', (pc) => pc.advise(Buffer.alloc(8)), 'EINVAL', 'CMD_POSTCOPY_ADVISE invalid length (8)'],
    ['other page sizes', (pc) => pc.advise(advice(0x201000)), 'EINVAL', 'Postcopy needs matching RAM page sizes (s=201000 d=1000)'],
    ['other target page size', (pc) => pc.advise(advice(PAGE_SIZE, 8192)), 'EINVAL', 'Postcopy needs matching target page sizes (s=8192 d=4096)'],
    ['advice twice', (pc) => (pc.advise(advice()), pc.advise(advice())), 'EPERM', 'CMD_POSTCOPY_ADVISE in wrong postcopy state (1)'],
    ['discard before advice', (pc) => pc.discard(discard('m', [[0, PAGE_SIZE]])), 'EPERM', 'CMD_POSTCOPY_RAM_DISCARD in wrong postcopy state (0)'],
    ['listen before advice', (pc) => pc.listen(), 'EPERM', 'CMD_POSTCOPY_LISTEN in wrong postcopy state (0)'],
    ['run before listen', (pc) => (pc.advise(advice()), pc.run()), 'EPERM', 'CMD_POSTCOPY_RUN in wrong postcopy state (1)'],
    ['discard of another version', (pc) => (pc.advise(advice()), pc.discard(discard('m', [[0, PAGE_SIZE]], 1))), 'EINVAL', 'CMD_POSTCOPY_RAM_DISCARD invalid version (1)'],
    ['discard without its nil', (pc) => (pc.advise(advice()), pc.discard(discard('m', [[0, PAGE_SIZE]], 0, 7))), 'EINVAL', 'CMD_POSTCOPY_RAM_DISCARD missing nil (7)'],
    ['discard with a broken pair', (pc) => (pc.advise(advice()), pc.discard(discard('m', [[0, PAGE_SIZE], [PAGE_SIZE, PAGE_SIZE]]).subarray(0, 30))), 'EINVAL', 'CMD_POSTCOPY_RAM_DISCARD invalid length (30)'],
    ['discard past the end of RAM', (pc) => (pc.advise(advice()), pc.discard(discard('m', [[63 * PAGE_SIZE, 2 * PAGE_SIZE]]))), 'EINVAL', 'ram_discard_range: Bad range start=3f000 length=2000'],
  ];
  for (const [what, fn, errno, message, postcopyRam] of cases) {
    const { pc } = setup(postcopyRam ?? true);
    const r = refused(() => fn(pc), errno, message);
    t.same({ errno: r.errno, message: r.message }, r.want, what);
  }
  // Bitmap-only advice is harmless without postcopy-ram: nothing changes.
  const { pc } = setup(false);
  pc.advise(Buffer.alloc(0));
  t.equal(pc.state, PostcopyState.NONE, 'an empty advice without postcopy-ram is taken and changes nothing');
});

t.test('a discard makes the pages zero without touching those nothing wrote (QEMU frees them)', async (t) => {
  const size = 256 << 20;
  const { pc, ram } = setup(true, size / PAGE_SIZE);
  ram.page(7).fill(0xcd);
  ram.wrote(7);
  pc.advise(advice());
  const before = process.memoryUsage().rss;
  pc.discard(discard('m', [[0, size]]));
  const grew = process.memoryUsage().rss - before;
  t.ok(ram.isZero(7), 'a page written before is zero after');
  t.ok(grew < 32 << 20, `the process grew by ${grew >> 20} MiB for a discard of ${size >> 20} MiB (filling them would touch it all)`);
});
