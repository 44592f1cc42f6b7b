/**
 * The fault model (src/faults/faults.ts) in process, where its arithmetic can be seen byte for
 * byte: a close cuts at its byte, a point becomes the byte its record starts at, a corrupt by
 * probability flips the first byte of the writes its seed picks, `count` times, the same ones
 * every run. The daemons meeting these faults over real sockets are the integration tests.
 */
import t from 'tap';
import { FaultSet, type ChannelEnd } from '../../src/faults/faults.js';

const MAIN: ChannelEnd = { channel: 'main', side: 'send' };
const quiet = (): FaultSet => new FaultSet({ fired: () => undefined, crash: () => undefined });
const pieces = (...sizes: number[]): Buffer[] => sizes.map((n) => Buffer.alloc(n));

t.test('a close after N bytes cuts within the write that carries byte N, and breaks there', async (t) => {
  const f = quiet();
  const broken: string[] = [];
  f.channelOpened(MAIN, { close: () => broken.push('close'), reset: () => broken.push('reset') });
  f.add({ kind: 'close', 'after-bytes': 1500 });
  t.same(f.onChannel(MAIN, pieces(1000)), { waitMs: 0 }, 'the first 1000 bytes pass');
  const { cut } = f.onChannel(MAIN, pieces(300, 700));
  t.equal(cut?.bytes, 500, 'the second write is cut after 500 bytes: byte 1500 is the first not to go');
  t.equal(cut?.breaks, true);
  t.same(broken, [], 'nothing is broken before the bytes ahead of it are out');
  cut!.fire();
  t.same(broken, ['close']);
  t.equal(f.list()[0]!.state, 'done');
});

t.test('a point on the sending side becomes the byte its record starts at', async (t) => {
  const f = quiet();
  f.channelOpened(MAIN, { close: () => undefined, reset: () => undefined });
  f.add({ kind: 'close', point: 'section-end:ram' });
  f.point('send', 'section-part', 'ram', 100);
  t.same(f.onChannel(MAIN, pieces(4096)), { waitMs: 0 }, 'another record: nothing');
  f.point('send', 'section-end', 'ram', 5000);
  t.equal(f.onChannel(MAIN, pieces(4096)).cut?.bytes, 5000 - 4096, 'cut right before the END section');
});

t.test('corrupt by probability: the first byte of each write the seed picks, count times, the same every run', async (t) => {
  const run = (): string => {
    const f = quiet();
    f.channelOpened(MAIN, { close: () => undefined, reset: () => undefined });
    f.add({ kind: 'corrupt', probability: 0.3, seed: 42, count: 3 });
    let flipped = '';
    for (let i = 0; i < 30; i++) {
      const write = pieces(16);
      f.onChannel(MAIN, write);
      flipped += write[0]![0] === 0xff ? 'x' : '.';
      t.equal(write[0]!.subarray(1).every((b) => b === 0), true);
    }
    return flipped;
  };
  const first = run();
  t.equal([...first].filter((c) => c === 'x').length, 3, `three writes flipped: ${first}`);
  t.equal(run(), first, 'the same writes with the same seed');
});
