/**
 * Deterministic damage to migration streams, for the differential tests: bytes changed, the
 * stream cut short, bytes inserted or deleted, ranges repeated, whole items (sections, commands,
 * footers, the VM description) dropped, repeated or swapped, and well-formed items of other kinds
 * (configuration subsections, commands, EOF, footers, empty sections) spliced in. Most of it lands
 * on item boundaries, where the loader takes its decisions, and near the start, where the
 * structure is dense; the rest anywhere.
 */
import { Command, RamFlag, Section } from '../../src/migration/stream/constants.js';
import { StreamWriter } from '../../src/migration/stream/writer.js';
import { below } from './rng.js';
import { uuidSubsection } from './stream-gen.js';

export interface Mutated {
  stream: Buffer;
  /** What was done, in order: to name a failing case. */
  ops: string[];
}

function build(put: (w: StreamWriter) => void): Buffer {
  const w = new StreamWriter();
  put(w);
  return Buffer.concat(w.take().pieces);
}

function subsection(name: string, body: (w: StreamWriter) => void): Buffer {
  return build((w) => {
    w.u8(Section.SUBSECTION);
    w.countedString(name);
    w.be32(1);
    body(w);
  });
}

function command(cmd: number, payload: number[]): Buffer {
  return build((w) => {
    w.u8(Section.COMMAND);
    w.be16(cmd);
    w.be16(payload.length);
    w.bytes(Uint8Array.from(payload));
  });
}

/** Well-formed items a stream may or may not carry, to splice in at a boundary. */
const SNIPPETS: Array<[string, (rand: () => number) => Buffer]> = [
  ['uuid subsection', (rand) => uuidSubsection(Uint8Array.from({ length: 16 }, () => below(rand, 256)))],
  ['target-page-bits subsection', (rand) => subsection('configuration/target-page-bits', (w) => w.be32(below(rand, 2) ? 12 : 13))],
  ['capabilities subsection', (rand) => subsection('configuration/capabilities', (w) => {
    const caps = [[], ['x-ignore-shared'], ['postcopy-ram']][below(rand, 3)]!;
    w.be32(caps.length);
    for (const c of caps) w.countedString(c);
  })],
  ['unknown subsection', () => subsection('configuration/other', (w) => w.be32(0))],
  ['OPEN_RETURN_PATH', () => command(Command.OPEN_RETURN_PATH, [])],
  ['PING', (rand) => command(Command.PING, [0, 0, 0, below(rand, 256)])],
  ['ENABLE_COLO', () => command(Command.ENABLE_COLO, [])],
  ['POSTCOPY_ADVISE', (rand) => command(Command.POSTCOPY_ADVISE, below(rand, 2) ? [] : Array<number>(16).fill(0))],
  ['command 11', () => command(11, [])],
  ['EOF', () => Buffer.from([Section.EOF])],
  ['VM description', () => build((w) => {
    w.u8(Section.VMDESCRIPTION);
    w.be32(2);
    w.bytes(Buffer.from('{}'));
  })],
  ['footer', (rand) => build((w) => {
    w.u8(Section.FOOTER);
    w.be32(below(rand, 5));
  })],
  ['empty RAM part', (rand) => build((w) => {
    w.u8(Section.PART);
    w.be32(2);
    w.be64(RamFlag.EOS);
    if (below(rand, 4)) {
      w.u8(Section.FOOTER);
      w.be32(2);
    }
  })],
];

export function mutate(base: Buffer, boundaries: readonly number[], rand: () => number): Mutated {
  let b = base;
  const ops: string[] = [];
  for (let n = 1 + below(rand, 3); n > 0 && b.length > 0; n--) {
    const marks = boundaries.filter((m) => m < b.length);
    const mark = (): number => (marks.length ? marks[below(rand, marks.length)]! : 0);
    // Where to act: an item boundary (give or take a byte), the first 64 bytes, or anywhere.
    const where = (): number => {
      const w = below(rand, 10);
      const at = w < 5 ? mark() + below(rand, 3) - 1 : w < 7 ? below(rand, Math.min(b.length, 64)) : below(rand, b.length);
      return Math.max(0, Math.min(at, b.length));
    };
    // One item: from a boundary to the next one.
    const item = (): [number, number] => {
      if (marks.length < 2) return [0, Math.min(b.length, 1)];
      const i = below(rand, marks.length - 1);
      return [marks[i]!, marks[i + 1]!];
    };
    const op = below(rand, 10);
    if (op <= 1) {
      const k = 1 + below(rand, 4);
      const at = Array.from({ length: k }, where).map((a) => Math.min(a, b.length - 1));
      b = Buffer.from(b);
      for (const a of at) b[a] = below(rand, 2) ? below(rand, 256) : b[a]! ^ (1 << below(rand, 8));
      ops.push(`change bytes at ${at.join(',')}`);
    } else if (op === 2) {
      const at = where();
      b = b.subarray(0, at);
      ops.push(`truncate at ${at}`);
    } else if (op === 3) {
      const at = where();
      const junk = Buffer.from(Array.from({ length: 1 + below(rand, 8) }, () => below(rand, 256)));
      b = Buffer.concat([b.subarray(0, at), junk, b.subarray(at)]);
      ops.push(`insert ${junk.toString('hex')} at ${at}`);
    } else if (op === 4) {
      const at = where();
      const len = 1 + below(rand, 32);
      b = Buffer.concat([b.subarray(0, at), b.subarray(at + len)]);
      ops.push(`delete ${len} at ${at}`);
    } else if (op === 5) {
      const [from, to] = below(rand, 2) ? item() : ((s) => [s, Math.min(b.length, s + 1 + below(rand, 64))])(below(rand, b.length));
      const at = where();
      b = Buffer.concat([b.subarray(0, at), b.subarray(from, to), b.subarray(at)]);
      ops.push(`repeat ${from}..${to} at ${at}`);
    } else if (op === 6) {
      const [from, to] = item();
      b = Buffer.concat([b.subarray(0, from), b.subarray(to)]);
      ops.push(`drop item ${from}..${to}`);
    } else if (op === 7) {
      const [f1, t1] = item();
      const [f2, t2] = item();
      if (t1 <= f2) b = Buffer.concat([b.subarray(0, f1), b.subarray(f2, t2), b.subarray(t1, f2), b.subarray(f1, t1), b.subarray(t2)]);
      else if (t2 <= f1) b = Buffer.concat([b.subarray(0, f2), b.subarray(f1, t1), b.subarray(t2, f1), b.subarray(f2, t2), b.subarray(t1)]);
      ops.push(`swap items ${f1}..${t1} and ${f2}..${t2}`);
    } else {
      const [name, make] = SNIPPETS[below(rand, SNIPPETS.length)]!;
      const at = below(rand, 4) ? mark() : where();
      b = Buffer.concat([b.subarray(0, at), make(rand), b.subarray(at)]);
      ops.push(`splice ${name} at ${at}`);
    }
  }
  return { stream: b, ops };
}
