/**
 * Differential loading of a migration stream: the destination's own loader (loadVmState, as an
 * incoming migration runs it) reads the stream once in one chunk and again cut into chunks at
 * chosen or random points, delivered at chosen paces; every way must end the same. Compared:
 * the outcome (loaded, or the LoadError with QEMU's lines, the summary and the located line),
 * the RAM's SHA-256, the bytes the reader consumed, the warnings, and the trace of what the
 * loader's observer saw (each event with the reader's offset at the time).
 *
 * Where the chunks are cut is the network's choice, never the sender's, so any difference is a
 * reader or loader bug: a decision taken on a byte that was buffered but not awaited.
 */
import { createHash } from 'node:crypto';
import { GuestRam } from '../../src/guest/ram.js';
import { LoadError } from '../../src/migration/load-error.js';
import { loadVmState, type LoadObserver } from '../../src/migration/loadvm.js';
import { StreamReader } from '../../src/migration/stream/reader.js';
import { AwaitedReader } from './awaited-reader.js';
import { ChunkSource } from './chunk-source.js';
import { below } from './rng.js';

export interface Outcome {
  /** Loaded; refused with a LoadError (what a destination reports); any other exception; no end. */
  kind: 'ok' | 'error' | 'crash' | 'hang';
  /** error: QEMU's lines, the summary, the located line (offset, and length if it ended early); crash: the exception. */
  messages: string[];
  warnings: string[];
  /** The reader's `consumed` when the load ended. */
  consumed: number;
  /** ok: LoadResult's bytes, pages and globalstate. */
  result?: string;
  ramSha256: string;
  /** The observer's events, each with the reader's offset at the time (none when not observed). */
  trace: string[];
  observed: boolean;
  /**
   * Where the stream's items end, as this load met them: after the header, the configuration
   * (before any subsection), each section, footer, command and EOF, and the VM description.
   */
  boundaries: number[];
}

/** Where the stream is cut and how fast the pieces come. */
export interface CutPlan {
  name: string;
  /** Offsets where a new chunk begins (0 < cut < length; others are ignored). */
  cuts: number[];
  /** Chunks per turn of the event loop: 1 lets the reader drain each chunk first. */
  perTurn: () => number;
  /** 'plain': the production StreamReader alone; 'awaited' (default) also refuses unawaited reads. */
  reader?: 'plain' | 'awaited';
  /**
   * false: loaded as a daemon loads, with no observer, so that the RAM loader applies runs of
   * page records in its loop of their own (RamLoader.applyRun()); its outcome has no trace.
   */
  observed?: boolean;
}

export interface LoadSpec {
  /** The destination's RAM: one block `m` of this size, as the vectors' destinations have. */
  ramSize: number;
  ramId?: string;
  machine?: string;
  /** A load that has not ended after this long is a hang. */
  timeoutMs?: number;
}

export const eager = (): number => Infinity;
export const lazy = (): number => 1;

export function oneChunk(): CutPlan {
  return { name: 'one chunk', cuts: [], perTurn: eager };
}

/** `plan` without an observer: the RAM loader's runs of page records (see CutPlan.observed). */
export function unobserved(plan: CutPlan): CutPlan {
  return { ...plan, name: `${plan.name}, no observer`, observed: false };
}

/** Two chunks, the second arriving once the reader has used up the first. */
export function splitAt(cut: number, reader: CutPlan['reader'] = 'awaited'): CutPlan {
  return { name: `split at ${cut}`, cuts: [cut], perTurn: lazy, reader };
}

/** A chunk per item (or one byte off it): each boundary found by a reader with nothing left. */
export function atBoundaries(boundaries: number[], shift = 0): CutPlan {
  return { name: `at every boundary${shift ? ` ${shift > 0 ? '+' : ''}${shift}` : ''}`, cuts: boundaries.map((b) => b + shift), perTurn: lazy };
}

/** One byte per chunk, delivered a few at a time: every multi-byte read straddles chunks. */
export function bytewise(length: number, rand: () => number): CutPlan {
  return { name: 'one byte per chunk', cuts: Array.from({ length }, (_, i) => i), perTurn: () => 1 + below(rand, 64) };
}

/** Cuts at random points: mostly small pieces or mostly large ones, at a random pace. */
export function randomCuts(length: number, rand: () => number): CutPlan {
  const fine = rand() < 0.5;
  const cuts: number[] = [];
  for (let at = 0; ; ) {
    at += fine ? (rand() < 0.8 ? 1 + below(rand, 16) : 1 + below(rand, 4096)) : 1 + below(rand, Math.max(2, length >> 2));
    if (at >= length) break;
    cuts.push(at);
  }
  const pace = below(rand, 3);
  const perTurn = pace === 0 ? lazy : pace === 1 ? eager : () => 1 + below(rand, 8);
  return { name: `${cuts.length} random cuts (${fine ? 'fine' : 'coarse'}, ${['lazy', 'eager', 'mixed'][pace]})`, cuts, perTurn, reader: rand() < 0.5 ? 'plain' : 'awaited' };
}

/** The chunks a plan cuts `stream` into. */
export function cutInto(stream: Buffer, cuts: number[]): Buffer[] {
  const at = [...new Set(cuts.filter((c) => c > 0 && c < stream.length))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const c of [...at, stream.length]) {
    if (c > from) chunks.push(stream.subarray(from, c));
    from = c;
  }
  return chunks;
}

/** Loads `stream`, cut and paced as `plan` says, into fresh RAM. Never throws. */
export async function loadWith(stream: Buffer, plan: CutPlan, spec: LoadSpec): Promise<Outcome> {
  const source = new ChunkSource(cutInto(stream, plan.cuts), plan.perTurn);
  const reader = plan.reader === 'plain' ? new StreamReader(source) : new AwaitedReader(source);
  const ram = new GuestRam(spec.ramId ?? 'm', spec.ramSize);
  const trace: string[] = [];
  const boundaries = new Set<number>();
  const event = (line: string, ...ends: number[]): void => {
    trace.push(`${line} @${reader.consumed}`);
    for (const b of ends) boundaries.add(b);
  };
  const observer: LoadObserver = {
    header: (v) => event(`header ${v}`, reader.consumed),
    configuration: (m) => event(`configuration ${m}`, reader.consumed),
    section: (s) => event(`section ${JSON.stringify(s)}`, s.offset),
    sectionEnd: (o) => event(`end ${o}`, o),
    ramRecord: (type) => event(`record ${type}`),
    command: (o, name, payload) => event(`command ${o} ${name} ${payload.toString('hex')}`, o, reader.consumed),
    device: (id, fields) => event(`device ${id} ${Object.entries(fields).map(([k, v]) => `${k}=${String(v)}`).join(' ')}`),
    eof: (o) => event(`eof ${o}`, o, o + 1),
    vmDescription: (o, json) => event(`vmdescription ${o} ${json === undefined ? '-' : sha256(Buffer.from(json, 'latin1'))}`, o, reader.consumed),
  };
  const warnings: string[] = [];
  const load = loadVmState(reader, {
    ram,
    machine: spec.machine ?? 'none',
    hooks: { openReturnPath: () => true, sendPong: () => true, enableColo: () => event('enable colo') },
    warn: (m) => warnings.push(m),
    observer: plan.observed === false ? undefined : observer,
  }).then(
    (r) => ({ kind: 'ok' as const, messages: [], result: `${r.bytes} bytes, ${r.pages} pages, globalstate ${r.globalState ?? '-'}` }),
    (err: unknown) =>
      err instanceof LoadError
        ? { kind: 'error' as const, messages: [...err.lines, err.summary, err.located] }
        : { kind: 'crash' as const, messages: [err instanceof Error ? `${err.name}: ${err.message}` : String(err)] },
  );
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<{ kind: 'hang'; messages: string[] }>((r) => {
    timer = setTimeout(() => r({ kind: 'hang', messages: [`no end after ${spec.timeoutMs ?? 10_000} ms`] }), spec.timeoutMs ?? 10_000);
  });
  const end = await Promise.race([load, hang]);
  clearTimeout(timer);
  return {
    ...end,
    warnings,
    consumed: reader.consumed,
    ramSha256: sha256(Buffer.concat(ram.segments)),
    trace,
    observed: plan.observed !== false,
    boundaries: [...boundaries].sort((a, b) => a - b),
  };
}

/** The first way two outcomes differ, or undefined when they agree. */
export function difference(a: Outcome, b: Outcome): string | undefined {
  const fields = ['kind', 'messages', 'warnings', 'consumed', 'result', 'ramSha256'] as const;
  for (const f of fields) {
    const [x, y] = [JSON.stringify(a[f]), JSON.stringify(b[f])];
    if (x !== y) return `${f}: ${x} vs ${y}`;
  }
  if (!a.observed || !b.observed) return undefined;
  const n = Math.max(a.trace.length, b.trace.length);
  for (let i = 0; i < n; i++) {
    if (a.trace[i] !== b.trace[i]) return `observer event ${i}: ${a.trace[i] ?? '(none)'} vs ${b.trace[i] ?? '(none)'}`;
  }
  return undefined;
}

export interface Disagreement {
  plan: string;
  difference: string;
}

/** Loads `stream` in one chunk, then as each plan says; returns the one-chunk outcome and every disagreement. */
export async function differential(stream: Buffer, spec: LoadSpec, plans: (reference: Outcome) => CutPlan[]): Promise<{ reference: Outcome; disagreements: Disagreement[] }> {
  const reference = await loadWith(stream, oneChunk(), spec);
  const disagreements: Disagreement[] = [];
  for (const plan of plans(reference)) {
    const d = difference(reference, await loadWith(stream, plan, spec));
    if (d) disagreements.push({ plan: plan.name, difference: d });
  }
  return { reference, disagreements };
}

export function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}
