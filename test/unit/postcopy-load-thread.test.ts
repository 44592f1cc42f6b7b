/**
 * Postcopy's pages placed by the load thread (src/migration/ram/load-thread.ts) while the main
 * thread places others (postcopy-preempt's channel) and the guest runs: each page is placed once,
 * by whichever loader takes it first, so a copy that comes again never overwrites what the guest
 * wrote since; a page another loader took is left to it; and the main thread hears of the pages
 * a vCPU waits for. A real thread, reading a real socket.
 */
import t from 'tap';
import { GuestRam, PAGE_SIZE } from '../../src/guest/ram.js';
import { SocketInput } from '../../src/migration/channels/socket-input.js';
import { PostcopyIncoming } from '../../src/migration/postcopy/incoming.js';
import { LoadThread } from '../../src/migration/ram/load-thread.js';
import { RamLoader } from '../../src/migration/ram/ram-load.js';
import { StreamReader } from '../../src/migration/stream/reader.js';
import { reader, records } from '../helpers/ram-records.js';
import { acceptedPair } from '../helpers/socket-pair.js';

const advice = (): Buffer => {
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(BigInt(PAGE_SIZE), 0);
  b.writeBigUInt64BE(BigInt(PAGE_SIZE), 8);
  return b;
};

t.test('the load thread places each page once beside the main thread, and tells it of the pages a vCPU waits for', async (t) => {
  const ram = new GuestRam('m', 64 * PAGE_SIZE);
  const thread = await LoadThread.boot(ram);
  if (!thread) return t.fail('the load thread needs the native addon, which npm ci builds');
  t.teardown(() => thread.close());
  const { accepted, client, close } = await acceptedPair();
  t.teardown(() => (client.destroy(), close()));
  const input = new SocketInput(accepted);
  const main = new StreamReader(input);
  t.ok(thread.attach(input), 'the thread takes its duplicate of the channel');

  const loader = new RamLoader(ram);
  const arrived: number[] = [];
  const requests: number[] = [];
  const pc = new PostcopyIncoming(
    {
      postcopyRam: () => true,
      listen: () => undefined,
      run: () => undefined,
      arrived: (page) => arrived.push(page),
      sendRp: (_type, payload) => requests.push(Number(payload.readBigUInt64BE(0)) / PAGE_SIZE),
      recovering: () => false,
      resumed: () => undefined,
      paused: async () => undefined,
    },
    loader,
  );
  pc.advise(advice());
  pc.listen();
  pc.run();

  // Page 1 came on the preempt channel (placed here) and the guest wrote it since.
  await new RamLoader(ram, undefined, loader).load(reader(records([[1, Buffer.alloc(PAGE_SIZE, 0x11)]], true)), 4);
  t.notOk(pc.missing(1), 'the preempt channel placed page 1');
  ram.page(1).fill(0x77, 0, 16);
  // Another loader took page 2 and has not finished copying it.
  t.ok(loader.taken!.claim(2));
  // The guest's vCPU waits for page 3.
  t.ok(pc.missing(3));
  pc.fault(3);
  t.same(requests, [3], 'page 3 is asked for');

  const source = Buffer.alloc(PAGE_SIZE, 0x22);
  client.write(Buffer.concat([records([[1, source], [2, source], [3, source], [4, source], [5, 0x33]], true), Buffer.from('after')]));
  input.resume();
  await main.need(1); // the section's first bytes are here, read ahead by the main thread
  t.ok(thread.usable(loader, main), 'postcopy\'s sections go to the thread');
  await thread.load(main, loader, 4);

  t.equal(ram.page(1).readUInt8(0), 0x77, 'page 1 again (the main channel\'s copy) did not overwrite the guest\'s write');
  t.equal(ram.page(1).readUInt8(100), 0x11);
  t.ok(ram.isZero(2) && pc.missing(2), 'page 2 is left to the loader that took it');
  t.ok(ram.page(3).equals(source) && ram.page(4).equals(source), 'pages 3 and 4 placed');
  t.equal(ram.page(5).readUInt8(0), 0x33, 'page 5 (a fill) placed');
  t.same([3, 4, 5].filter((p) => pc.missing(p)), [], 'and marked received');
  t.same(arrived, [3], 'the main thread heard of page 3, the one the vCPU waited for, and of no other');
  t.equal(loader.pages, 3, 'the thread placed 3 pages, and dropped 2');
  t.equal((await main.bytes(5)).toString(), 'after', 'the main thread reads on after the section');

  // A page the thread places between the guest's look and its fault: the fault sees it.
  const marked = loader.received!;
  t.ok(pc.missing(6));
  marked.setShared(6);
  pc.fault(6);
  await Promise.resolve();
  t.same(arrived, [3, 6], 'a page placed as the vCPU faulted on it wakes the vCPU');
});
