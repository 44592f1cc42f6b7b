/**
 * The destination's loader, in process, on real QEMU 7.2 streams: what 7.2 tolerates is
 * tolerated, what it rejects is rejected with its words and the byte offset, truncation at every
 * section boundary is caught, and 10,000 mutated or truncated streams (re-chunked at random
 * points) are each accepted or rejected cleanly: no other exception, no hang.
 */
import '../helpers/as-qemu-7.2.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import t from 'tap';
import { GuestRam } from '../../src/guest/ram.js';
import { LoadError } from '../../src/migration/load-error.js';
import { loadVmState, type LoadObserver } from '../../src/migration/loadvm.js';
import { StreamReader } from '../../src/migration/stream/reader.js';

const VECTORS = join(import.meta.dirname, '..', '..', '..', 'test', 'fixtures', 'vectors');
const vector = (name: string): Buffer => readFileSync(join(VECTORS, `${name}.stream`));
const PLAIN = vector('qemu72-none-plain-64M');
const XBZRLE = vector('qemu72-none-xbzrle-64M');
const MIXED = vector('qemu72-none-mixed-2M');
const RAMS = new Map<number, GuestRam>();

/** Feeds `chunks` to a fresh reader and loads them into a (reused) RAM block `m` of `size`. */
async function load(stream: Buffer | Buffer[], size = 64 << 20, observer?: LoadObserver): Promise<{ ok: true } | { ok: false; err: LoadError }> {
  if (!RAMS.has(size)) RAMS.set(size, new GuestRam('m', size));
  const chunks = Array.isArray(stream) ? stream : [stream];
  try {
    await loadVmState(new StreamReader(Readable.from(chunks, { objectMode: false })), {
      ram: RAMS.get(size)!,
      machine: 'none',
      hooks: { openReturnPath: () => true, sendPong: () => true },
      warn: () => undefined,
      observer,
    });
    return { ok: true };
  } catch (err) {
    if (err instanceof LoadError) return { ok: false, err };
    throw err;
  }
}

/** The offsets where sections, commands and EOF begin and end, as the loader saw them. */
async function boundaries(stream: Buffer, size: number): Promise<number[]> {
  const at = new Set<number>([0, 8]);
  await load(stream, size, {
    section: (s) => at.add(s.offset),
    sectionEnd: (o) => at.add(o),
    command: (o) => at.add(o),
    eof: (o) => at.add(o),
  });
  return [...at].sort((a, b) => a - b);
}

t.test('tolerated as 7.2 tolerates it: no VM description, no timer, no globalstate', async (t) => {
  const eof = PLAIN.indexOf(Buffer.from([0x7e, 0, 0, 0, 4, 0x00, 0x06]), 0x26000) + 5;
  t.same(await load(PLAIN.subarray(0, eof + 1)), { ok: true }, 'the stream stops after EOF');
  // Cut the timer and globalstate sections (0x26065 to the EOF byte) out.
  t.same(await load(Buffer.concat([PLAIN.subarray(0, 0x26065), PLAIN.subarray(eof)])), { ok: true }, 'no device sections');
  t.same(await load(Buffer.concat([PLAIN.subarray(0, eof + 1), Buffer.from([0x42])])), { ok: true }, 'another byte instead of the description');
});

t.test('rejected as 7.2 rejects it, with the offset', async (t) => {
  const patch = (at: number, bytes: number[]): Buffer => {
    const b = Buffer.from(PLAIN);
    b.set(bytes, at);
    return b;
  };
  const cases: Array<[string, Buffer, RegExp, number]> = [
    ['magic', patch(0, [0]), /^Not a migration stream$/, 4],
    ['stream version 4', patch(7, [4]), /^Unsupported migration stream version$/, 8],
    ['machine', patch(0x0d, [0x78]), /^Machine type received is 'xone' and local is 'none'$/, 0x11],
    // ram_load() refuses any version but 4 without a message of its own.
    ['RAM version 3', patch(0x21, [3]), /^error while loading state for instance 0x0 of device 'ram'$/, 0x22],
    ['footer id', patch(0x40, [3]), /^Mismatched section id in footer for ram - read 0x3 expected 0x2$/, 0x41],
    ['flag 0x200', patch(0x4c, [0x02, 0x00]), /^Unknown combination of migration flags: 0x200$/, 0x4e],
    ['HOOK flag', patch(0x4d, [0x80]), /^Unknown combination of migration flags: 0x80$/, 0x4e],
    ['page beyond RAM', patch(0x1050, [0, 0, 0, 0, 0x10]), /^Illegal RAM offset 10001000$/, 0x1058],
    ['unknown section id', patch(0x26054, [0, 0, 0, 9]), /^Unknown savevm section 9$/, 0x26058],
    ['unknown device', patch(0x2606b, [0x75]), /^Unknown savevm section or instance 'uimer' 0/, 0x26078],
    ['unknown run state', patch(0x260b2, [0x7a]), /^invalid parameter value: zunning$/, 0x26116],
    ['section type 9', patch(0x41, [9]), /^Unknown savevm section type 9$/, 0x42],
  ];
  for (const [what, stream, message, offset] of cases) {
    const r = await load(stream);
    t.equal(r.ok, false, `${what}: rejected`);
    if (r.ok) continue;
    t.match(r.err.lines[0] ?? '', message, `${what}: ${r.err.lines.join(' / ')}`);
    t.equal(r.err.offset, offset, `${what}: found at 0x${offset.toString(16)}`);
    t.match(r.err.located, /^invalid migration stream at byte offset \d+ \(0x[0-9a-f]+\): /);
  }
  const cmd11 = Buffer.concat([PLAIN.subarray(0, 0x11), Buffer.from([8, 0, 11, 0, 0]), PLAIN.subarray(0x11)]);
  const r = await load(cmd11);
  t.match(!r.ok && r.err.lines[0], 'MIG_CMD 0xb unknown (len 0x0)');
  const ping = Buffer.concat([PLAIN.subarray(0, 0x11), Buffer.from([8, 0, 2, 0, 3, 0, 0, 1]), PLAIN.subarray(0x11)]);
  const p = await load(ping);
  t.match(!p.ok && p.err.lines[0], 'PING received with bad length - expecting 4, got 3');
  t.equal(!p.ok && p.err.errno, 'ERANGE');
});

t.test('truncation at every section boundary (and one byte either side) is caught', async (t) => {
  for (const [name, stream, size] of [['plain', PLAIN, 64 << 20], ['xbzrle', XBZRLE, 64 << 20], ['mixed', MIXED, 2 << 20]] as const) {
    const marks = await boundaries(stream, size);
    const cuts = marks.flatMap((b) => [b - 1, b, b + 1]).filter((c) => c >= 0 && c < stream.length);
    const eof = marks.at(-1)!;
    t.ok(cuts.length > 10, `${name}: ${cuts.length} cuts`);
    for (const cut of cuts) {
      const r = await load(stream.subarray(0, cut), size);
      // After the EOF byte only the optional VM description is missing.
      if (cut > eof) t.ok(r.ok, `${name}: cut at ${cut}, after EOF, is accepted`);
      else {
        t.equal(r.ok, false, `${name}: cut at ${cut} is rejected`, { diagnostic: false });
        if (!r.ok) t.ok(r.err.errno === 'EIO' || /Not a migration stream|Configuration section missing/.test(r.err.lines[0] ?? ''), `${name} ${cut}: ${r.err.located}`);
      }
    }
  }
});

t.test('10,000 mutated, truncated and re-chunked streams: accepted or rejected, never a crash or a hang', async (t) => {
  let seed = 0x2545f491;
  const rand = (n: number): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const sources: Array<[Buffer, number]> = [[MIXED, 2 << 20], [PLAIN, 64 << 20], [XBZRLE, 64 << 20]];
  const counts = { accepted: 0, rejected: 0 };
  const started = Date.now();
  for (let i = 0; i < 10_000; i++) {
    const [base, size] = sources[i % 3]!;
    let b = Buffer.from(base);
    switch (rand(4)) {
      case 0: // truncate anywhere
        b = b.subarray(0, rand(b.length));
        break;
      case 1: // flip bytes near the start, where the structure is dense
        for (let k = rand(4) + 1; k > 0; k--) b[rand(Math.min(b.length, 256))] = rand(256);
        break;
      case 2: // flip bytes anywhere
        for (let k = rand(8) + 1; k > 0; k--) b[rand(b.length)] = rand(256);
        break;
      case 3: {
        // insert or delete a few bytes
        const at = rand(b.length);
        b = rand(2) ? Buffer.concat([b.subarray(0, at), Buffer.from([rand(256), rand(256)]), b.subarray(at)]) : Buffer.concat([b.subarray(0, at), b.subarray(at + rand(16) + 1)]);
      }
    }
    // Re-chunk at random points, so every read may straddle a chunk boundary.
    const chunks: Buffer[] = [];
    for (let off = 0; off < b.length; ) {
      const n = Math.min(b.length - off, rand(5) === 0 ? rand(16) + 1 : rand(65536) + 1);
      chunks.push(b.subarray(off, off + n));
      off += n;
    }
    let timer: NodeJS.Timeout | undefined;
    const hang = new Promise<'hang'>((r) => (timer = setTimeout(() => r('hang'), 10_000)));
    const r = await Promise.race([load(chunks, size), hang]);
    clearTimeout(timer);
    if (r === 'hang') {
      t.fail(`case ${i} hung`);
      break;
    }
    if (r.ok) counts.accepted++;
    else counts.rejected++;
  }
  t.equal(counts.accepted + counts.rejected, 10_000, `${counts.accepted} accepted, ${counts.rejected} rejected in ${Date.now() - started} ms`);
  t.ok(counts.rejected > 5000, 'most damage is detected');
});
