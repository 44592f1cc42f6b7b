/**
 * Postcopy's pieces in process (src/migration/postcopy): the discard commands a source builds
 * from its dirty bitmap, the package, the page requests it takes (QEMU's checks and words per
 * release), the received bitmap's encoding both ways, and the destination's requests. The whole
 * protocol runs between daemons in test/integration/postcopy.test.ts and against real QEMU in
 * test/integration/qemu-postcopy-interop.test.ts.
 */
import { Readable } from 'node:stream';
import t from 'tap';
import { DirtyBitmap } from '../../src/guest/dirty-bitmap.js';
import { GuestRam, PAGE_SIZE } from '../../src/guest/ram.js';
import { loadVmState } from '../../src/migration/loadvm.js';
import { PostcopyIncoming } from '../../src/migration/postcopy/incoming.js';
import { discardPayloads, packagedState, PageRequests, readPostcopyMessage } from '../../src/migration/postcopy/outgoing.js';
import { decodeRecvBitmap, encodeRecvBitmap, RAMBLOCK_RECV_BITMAP_ENDING } from '../../src/migration/postcopy/recv-bitmap.js';
import { RamLoader } from '../../src/migration/ram/ram-load.js';
import { RpMessage } from '../../src/migration/stream/constants.js';
import { StreamReader } from '../../src/migration/stream/reader.js';
import { setActiveProfile } from '../../src/profiles/index.js';
import type { Test } from '../helpers/interop.js';

/** The (start, length) byte ranges of discard payloads. */
function ranges(t: Test, payloads: Buffer[], name: string): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const p of payloads) {
    t.equal(p.subarray(0, 2 + name.length).toString('latin1'), `\0${String.fromCharCode(name.length)}${name}`, 'version 0, the counted name');
    t.equal(p[2 + name.length], 0, 'then a NUL');
    for (let at = 3 + name.length; at < p.length; at += 16) out.push([Number(p.readBigUInt64BE(at)), Number(p.readBigUInt64BE(at + 8))]);
  }
  return out;
}

t.test('discard: one byte range per run of dirty pages, at most 12 to a command, none for a clean block', async (t) => {
  const bitmap = new DirtyBitmap(1000);
  t.same(discardPayloads(bitmap, 'm'), [], 'nothing dirty, no command');
  const runs: Array<[number, number]> = [];
  for (let i = 0; i < 30; i++) runs.push([i * 33 + (i % 3), 1 + (i % 5)]); // 30 runs of 1-5 pages, apart
  for (const [start, n] of runs) for (let p = start; p < start + n; p++) bitmap.set(p);
  bitmap.set(999); // the last page: a run that ends with the block
  runs.push([999, 1]);
  const payloads = discardPayloads(bitmap, 'pc.ram');
  t.same(payloads.map((p) => (p.length - 9) / 16), [12, 12, 7], '31 ranges: 12, 12, 7');
  t.same(ranges(t, payloads, 'pc.ram'), runs.map(([s, n]) => [s * PAGE_SIZE, n * PAGE_SIZE]), 'each run, in bytes');
});

t.test('the package loads as QEMU loads it: LISTEN, the devices, PING 3, RUN, and nothing after', async (t) => {
  const seen: string[] = [];
  const pkg = packagedState('running', (kind, name, offset) => seen.push(`${offset} ${kind} ${name}`));
  t.same(seen.map((s) => s.split(' ').slice(1).join(' ')), ['command postcopy-listen', 'section-full timer', 'section-full globalstate', 'command ping', 'command postcopy-run']);
  t.equal(Number(seen[0]!.split(' ')[0]), 0, 'offsets are the package\'s own');
  t.equal(pkg[Number(seen[4]!.split(' ')[0])], 0x08, 'the last offset is RUN\'s command byte');
  t.equal(pkg.length, Number(seen[4]!.split(' ')[0]) + 5, 'RUN ends it');
});

t.test('page requests: QEMU\'s checks in its order, its words per release, and the count it keeps', async (t) => {
  for (const [release, words] of [
    ['7.2', { misaligned: 'migrate_handle_rp_req_pages: Misaligned page request, start: 1001 len: 4096', none: 'ram_save_queue_pages no previous block', block: "ram_save_queue_pages no block 'x'", overrun: 'ram_save_queue_pages request overrun start=ffe000 len=4000 blocklen=1000000' }],
    ['10.0', { misaligned: 'MIG_RP_MSG_REQ_PAGES: Misaligned page request, start:1001 len: 4096', none: 'MIG_RP_MSG_REQ_PAGES has no previous block', block: "MIG_RP_MSG_REQ_PAGES has no block 'x'", overrun: 'MIG_RP_MSG_REQ_PAGES request overrun, start=ffe000 len=4000 blocklen=1000000' }],
  ] as const) {
    setActiveProfile(release);
    const r = new PageRequests({ id: 'm', size: 16 << 20 });
    t.equal(r.take(undefined, 0x1001, PAGE_SIZE), words.misaligned, `${release}: misaligned`);
    t.equal(r.count, 0, 'a misaligned request is not counted');
    t.equal(r.take(undefined, 0, PAGE_SIZE), words.none, `${release}: REQ_PAGES before any REQ_PAGES_ID`);
    t.equal(r.take('x', 0, PAGE_SIZE), words.block, `${release}: a block that is not ours`);
    t.equal(r.take('m', (16 << 20) - 2 * PAGE_SIZE, 4 * PAGE_SIZE), words.overrun, `${release}: past the end`);
    t.equal(r.count, 3, 'aligned requests count, good or not');
    t.equal(r.take('m', 5 * PAGE_SIZE, 2 * PAGE_SIZE), undefined);
    t.equal(r.take(undefined, 9 * PAGE_SIZE, PAGE_SIZE), undefined, 'REQ_PAGES: the block named last');
    t.same([r.next(), r.next(), r.next(), r.next()], [5, 6, 9, undefined], 'pages in the order asked');
    t.equal(r.count, 5);
  }
  setActiveProfile('7.2');
});

t.test('the received bitmap: size in whole 64-bit words, little-endian words, the end mark; decoded, bits past the block dropped', async (t) => {
  const pages = 100; // two 64-bit words, the second partly used
  const received = new DirtyBitmap(pages);
  for (const p of [0, 1, 31, 32, 63, 64, 99]) received.set(p);
  const blob = encodeRecvBitmap(received);
  t.equal(blob.readBigUInt64BE(0), 16n, 'size: 2 words');
  t.equal(blob.readBigUInt64LE(8), (1n << 0n) | (1n << 1n) | (1n << 31n) | (1n << 32n) | (1n << 63n), 'word 0, little-endian: pages 0, 1, 31, 32, 63');
  t.equal(blob.readBigUInt64LE(16), (1n << 0n) | (1n << 35n), 'word 1: pages 64 and 99');
  t.equal(blob.readBigUInt64BE(24), RAMBLOCK_RECV_BITMAP_ENDING);
  t.equal(blob.length, 32);
  const words = Buffer.from(blob.subarray(8, 24));
  words[15] = 0xff; // bits past page 99 set: a source must ignore them
  const back = decodeRecvBitmap(words, pages);
  t.same([...Array(pages).keys()].filter((p) => back.test(p)), [0, 1, 31, 32, 63, 64, 99]);
  t.equal(back.count(), 7);
});

t.test('destination: a missing page is asked for once, REQ_PAGES_ID first; after a recovery the pages still missing are asked for again', async (t) => {
  const ram = new GuestRam('m', 64 * PAGE_SIZE);
  const sent: Array<{ type: number; payload: Buffer; raw?: Buffer }> = [];
  const arrived: number[] = [];
  let recovering = false;
  const loader = new RamLoader(ram);
  const pc = new PostcopyIncoming(
    {
      postcopyRam: () => true,
      listen: () => undefined,
      run: () => undefined,
      arrived: (p) => arrived.push(p),
      sendRp: (type, payload, raw) => sent.push({ type, payload, raw }),
      recovering: () => recovering,
      resumed: () => (recovering = false),
      paused: async () => undefined,
    },
    loader,
  );
  const advice = Buffer.alloc(16);
  advice.writeBigUInt64BE(4096n, 0);
  advice.writeBigUInt64BE(4096n, 8);
  pc.advise(advice);
  pc.listen();
  pc.run();
  t.ok(pc.missing(7) && pc.missing(8));
  pc.fault(7);
  pc.fault(7);
  pc.fault(8);
  t.same(sent.map((m) => m.type), [RpMessage.REQ_PAGES_ID, RpMessage.REQ_PAGES], 'each page once; the block named the first time');
  t.same(sent[0]!.payload, Buffer.concat([Buffer.from('00000000000070000000100001', 'hex'), Buffer.from('m')]), 'be64 start, be32 len, the counted name');
  t.same(sent[1]!.payload, Buffer.from('0000000000008000' + '00001000', 'hex'));
  // Page 7 comes (a PAGE record through the loader); page 8 does not before the channel breaks.
  const record = Buffer.alloc(8 + 2 + PAGE_SIZE + 8, 0xcd);
  record.writeBigUInt64BE(BigInt(7 * PAGE_SIZE + 0x08), 0);
  record[8] = 1;
  record[9] = 'm'.charCodeAt(0);
  record.writeBigUInt64BE(0x10n, 10 + PAGE_SIZE); // EOS
  await loader.load(new StreamReader(Readable.from([record])), 4);
  t.same(arrived, [7], 'the page that came is announced');
  t.notOk(pc.missing(7));
  pc.channelLost();
  t.throws(() => pc.recvBitmap(Buffer.from('\x01m', 'latin1')), /Only reasonable to receive this command during postcopy-recover/);
  recovering = true;
  sent.length = 0;
  pc.recvBitmap(Buffer.from('\x01m', 'latin1'));
  t.equal(sent[0]!.type, RpMessage.RECV_BITMAP);
  t.same(decodeRecvBitmap(sent[0]!.raw!.subarray(8, 16), 64).test(7), true, 'the bitmap says page 7 is here');
  pc.resume();
  t.same(sent.slice(1).map((m) => m.type), [RpMessage.RESUME_ACK, RpMessage.REQ_PAGES_ID], 'RESUME_ACK, then page 8 again, naming the block on the new channel');
  t.equal(sent[2]!.payload.readBigUInt64BE(0), BigInt(8 * PAGE_SIZE));
  t.equal(recovering, false, 'and the destination is postcopy-active again');
});

t.test('a postcopy stream the inspector reads: the package is loaded and the rest follows', async (t) => {
  // The package alone, as a nested stream: the loader takes LISTEN … RUN (LOADVM_QUIT).
  const pkg = packagedState('running');
  const ram = new GuestRam('m', 16 * PAGE_SIZE);
  const body = Buffer.concat([
    Buffer.from('5145564d0000000307000000046e6f6e65', 'hex'), // header, machine "none"
    Buffer.from('0800010000', 'hex'), // OPEN_RETURN_PATH
    Buffer.from('0800030010' + '0000000000001000' + '0000000000001000', 'hex'), // ADVISE
    Buffer.from('0800070004', 'hex'), Buffer.from(pkg.length.toString(16).padStart(8, '0'), 'hex'), pkg,
    Buffer.from('00', 'hex'), // EOF
  ]);
  const result = await loadVmState(new StreamReader(Readable.from([body])), {
    ram,
    machine: 'none',
    warn: () => undefined,
    hooks: {
      openReturnPath: () => true,
      sendPong: () => true,
      postcopy: { postcopyRam: () => true, listen: () => undefined, run: () => undefined, arrived: () => undefined, sendRp: () => undefined, recovering: () => false, resumed: () => undefined, paused: async () => undefined },
    },
  });
  t.equal(result.postcopy, true, 'the stream went to postcopy at RUN');
  t.equal(result.globalState, 'running', 'the package\'s devices were loaded');
});

t.test('the source reads the return path\'s postcopy messages, and refuses bad ones in each release\'s words', async (t) => {
  const block = { id: 'm', pages: 100 };
  const bitmap = new DirtyBitmap(100);
  bitmap.set(3);
  const blob = encodeRecvBitmap(bitmap);
  const reader = (bytes: Buffer) => {
    let at = 0;
    return async (n: number): Promise<Buffer> => bytes.subarray(at, (at += n));
  };
  const named = Buffer.from('\x01m', 'latin1');
  for (const [release, words] of [
    ['7.2', { block: "migrate_handle_rp_recv_bitmap: invalid block name 'x'", size: "ram_dirty_bitmap_reload: ramblock 'm' bitmap size mismatch (0x8 != 0x10)", end: "ram_dirty_bitmap_reload: ramblock 'm' end mark incorrect: 0x0", ack: 'migrate_handle_rp_resume_ack: illegal resume_ack value 2' }],
    ['10.0', { block: "MIG_RP_MSG_RECV_BITMAP has invalid block name 'x'", size: "ramblock 'm' bitmap size mismatch (0x8 != 0x10)", end: "ramblock 'm' end mark incorrect: 0x0", ack: 'illegal resume_ack value 2' }],
  ] as const) {
    setActiveProfile(release);
    const requests = new PageRequests({ id: 'm', size: 100 * PAGE_SIZE });
    const got = await readPostcopyMessage(RpMessage.RECV_BITMAP, named, reader(blob), block, requests);
    t.ok(typeof got === 'object' && 'bitmap' in got && got.bitmap.test(3) && got.bitmap.count() === 1, `${release}: the bitmap`);
    t.same(await readPostcopyMessage(RpMessage.RECV_BITMAP, Buffer.from('\x01x', 'latin1'), reader(blob), block, requests), { error: words.block });
    const small = Buffer.from(blob);
    small.writeBigUInt64BE(8n, 0);
    t.same(await readPostcopyMessage(RpMessage.RECV_BITMAP, named, reader(small), block, requests), { error: words.size }, 'a size that is not the block\'s is refused before its bytes are read');
    const unmarked = Buffer.from(blob);
    unmarked.writeBigUInt64BE(0n, 24);
    t.same(await readPostcopyMessage(RpMessage.RECV_BITMAP, named, reader(unmarked), block, requests), { error: words.end });
    t.same(await readPostcopyMessage(RpMessage.RESUME_ACK, Buffer.from('00000002', 'hex'), reader(Buffer.alloc(0)), block, requests), { error: words.ack });
    t.same(await readPostcopyMessage(RpMessage.RESUME_ACK, Buffer.from('00000001', 'hex'), reader(Buffer.alloc(0)), block, requests), { resumeAck: true });
    t.same(await readPostcopyMessage(RpMessage.REQ_PAGES_ID, Buffer.from('00000000000010000000100002', 'hex'), reader(Buffer.alloc(0)), block, requests), { error: 'Req_Page_id with length 13 expecting 15' });
    t.same(await readPostcopyMessage(RpMessage.REQ_PAGES_ID, Buffer.concat([Buffer.from('00000000000010000000100001', 'hex'), Buffer.from('m')]), reader(Buffer.alloc(0)), block, requests), { requested: true });
    t.equal(requests.next(), 1);
    t.equal(await readPostcopyMessage(RpMessage.SHUT, Buffer.alloc(4), reader(Buffer.alloc(0)), block, requests), 'unexpected');
  }
  setActiveProfile('7.2');
});
