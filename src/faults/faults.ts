/**
 * Faults on demand: one model of what can be broken on purpose, and the hooks where the daemon
 * asks it. Three ways in share it: the __org.qmigd_fault-* commands, --fault SPEC and
 * --faults FILE (src/faults/spec.ts parses them).
 *
 * A fault is armed when added and fires when its trigger is met: at once (no trigger), once its
 * channel has carried `after-bytes`, when the migration reaches the state `at`, at the stream
 * `point` (a record of the main stream: `section-full`, `section-end:ram`, `command:ping`, `eof`,
 * `switchover`; or a step of a COLO checkpoint on the primary, `colo:mid-ram` and the others of
 * colo/primary.ts's CrashPoint), `after-ms` after it was added, or, at each chance it gets,
 * with `probability` from a seeded generator. What it then does depends on its kind:
 *
 *   channel (`channel` main, return-path, multifd with its `index`, postcopy-preempt, or colo-compare; side send:
 *   the end that writes it, receive: the end that reads it; the return path runs over the main channel's
 *   connection, as in QEMU, so its close and reset break that; a multifd channel's faults are
 *   kept and triggered by the channel's own thread, src/faults/in-thread.ts):
 *     stall     no bytes move for duration-ms, or until cleared
 *     throttle  at most bytes-per-second, for duration-ms or until cleared
 *     latency   every write (send) or read (receive) waits delay-ms, for duration-ms
 *     close     the connection is closed (FIN) exactly at its byte; the far end sees the stream end
 *     reset     the connection is reset (RST)
 *     corrupt   the byte at stream offset `after-bytes` is flipped (XOR 0xff)
 *   daemon:
 *     crash       SIGKILL, as a host that dies
 *     hang        QMP answers nothing for duration-ms (or until cleared) while the rest runs
 *     slow-start  the monitors listen only delay-ms after start (--fault and --faults only)
 *   QMP:
 *     command-error  the next `count` executions of `command` fail with error-class and desc
 *     command-delay  the next `count` executions of `command` answer delay-ms late
 *     event-drop     the next `count` events named `event` are not sent
 *     event-delay    the next `count` events named `event` are sent delay-ms late
 *
 * QEMU's reactions follow from the real failure: a closed channel fails the source's next write
 * ("Unable to write to socket: Broken pipe") and the destination's load, exactly as when a peer
 * really goes away; nothing here writes a state or an error text of its own.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { QmpError, type QmpErrorClass } from '../errors.js';
import type { RecordKind } from '../migration/stream/constants.js';
import { rng } from '../rng.js';

/** How often a channel held by a stall looks whether the stall is over. */
export const STALL_POLL_MS = 10;

export const FAULT_KINDS = [
  'stall', 'throttle', 'latency', 'close', 'reset', 'corrupt',
  'crash', 'hang', 'slow-start',
  'command-error', 'command-delay', 'event-drop', 'event-delay',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

const CHANNEL_KINDS: ReadonlySet<FaultKind> = new Set(['stall', 'throttle', 'latency', 'close', 'reset', 'corrupt']);
const QMP_KINDS: ReadonlySet<FaultKind> = new Set(['command-error', 'command-delay', 'event-drop', 'event-delay']);
/** Kinds that last (duration-ms, or until cleared) once fired; the others act once or `count` times. */
const LASTING: ReadonlySet<FaultKind> = new Set(['stall', 'throttle', 'latency', 'hang']);

export type ChannelSide = 'send' | 'receive';
export type ChannelName = 'main' | 'return-path' | 'multifd' | 'postcopy-preempt' | 'colo-compare';

/** One end of a migration channel: which channel (multifd's by index), and whether it writes or reads. */
export interface ChannelEnd {
  channel: ChannelName;
  index?: number;
  side: ChannelSide;
}

const endKey = (e: ChannelEnd): string => `${e.channel}${e.channel === 'multifd' ? e.index ?? 0 : ''}:${e.side}`;
const specEnd = (s: FaultSpec): ChannelEnd => ({ channel: s.channel ?? 'main', index: s.index, side: s.side ?? 'send' });
/** A fault a multifd channel's thread keeps (its own copy: src/faults/in-thread.ts). */
const inThread = (s: FaultSpec): boolean => s.channel === 'multifd';

/** Whether a `point` names this record: `kind` alone, `kind:name`, or switchover (the first device section). */
function pointMatches(point: string, kind: RecordKind, name: string | undefined): boolean {
  if (point === 'switchover') return kind === 'section-full';
  const colon = point.indexOf(':');
  return colon < 0 ? point === kind : point.slice(0, colon) === kind && point.slice(colon + 1) === name;
}

/** A fault as it is asked for, in QAPI's spelling (the schema's FaultSpec). */
export interface FaultSpec {
  id?: string;
  kind: FaultKind;
  channel?: ChannelName;
  index?: number;
  side?: ChannelSide;
  'after-bytes'?: number;
  at?: string;
  point?: string;
  'after-ms'?: number;
  probability?: number;
  seed?: number;
  'duration-ms'?: number;
  count?: number;
  'bytes-per-second'?: number;
  'delay-ms'?: number;
  command?: string;
  event?: string;
  'error-class'?: QmpErrorClass;
  desc?: string;
}

export type FaultState = 'armed' | 'active' | 'done';

/** What __org.qmigd_fault-list shows of each fault. */
export interface FaultInfo {
  id: string;
  kind: FaultKind;
  state: FaultState;
  fired: number;
  spec: FaultSpec;
}

/** What the daemon does for the faults that need it: tell (log and event) and die. */
export interface FaultHost {
  fired(id: string, kind: FaultKind, action: string): void;
  crash(): void;
}

/** A connection a channel fault can break: the socket under a migration channel. */
export interface Breakable {
  close(): void;
  reset(): void;
}

class Fault {
  state: FaultState = 'armed';
  fired = 0;
  /** The count of QMP faults left. */
  left: number;
  /** On the sending side, where its `point` was written: the stream offset it fires at. */
  atByte?: number;
  /** The channel end it is on (endKey), worked out once: the hooks compare it at every write. */
  readonly end: string;
  private until = Infinity;
  private timer?: NodeJS.Timeout;
  private rng?: () => number;

  constructor(
    readonly id: string,
    readonly spec: FaultSpec,
  ) {
    this.left = spec.count ?? 1;
    this.end = endKey(specEnd(spec));
    if (spec.probability !== undefined) this.rng = rng(spec.seed ?? 0);
  }

  get kind(): FaultKind {
    return this.spec.kind;
  }

  /** Whether a chance to fire (a write, a read, a command, an event) takes it. */
  chance(): boolean {
    return !this.rng || this.rng() < this.spec.probability!;
  }

  /** Lasting faults: whether still in force. */
  inForce(now = Date.now()): boolean {
    if (this.state === 'active' && now >= this.until) this.state = 'done';
    return this.state === 'active';
  }

  activate(now = Date.now()): void {
    this.fired++;
    if (LASTING.has(this.kind)) {
      this.state = 'active';
      if (this.spec['duration-ms'] !== undefined) this.until = now + this.spec['duration-ms'];
    } else if (--this.left <= 0) this.state = 'done';
  }

  clearTimer(): void {
    clearTimeout(this.timer);
  }

  setTimer(t: NodeJS.Timeout): void {
    this.timer = t;
  }

  info(): FaultInfo {
    this.inForce();
    return { id: this.id, kind: this.kind, state: this.state, fired: this.fired, spec: this.spec };
  }
}

/**
 * Where a fault acts within what a channel is given: after `bytes` of it, once they are out, the
 * channel calls fire(). A close, reset or crash `breaks` the channel there; after any other (a
 * stall, say) the channel offers the rest again, and the fault, now in force, holds it.
 */
export interface Cut {
  bytes: number;
  breaks: boolean;
  fire(): void;
}

export class FaultSet {
  private readonly faults = new Map<string, Fault>();
  private nextId = 0;
  /** Bytes each channel end has carried in this migration (by endKey). */
  private readonly carried = new Map<string, number>();
  /** The connection under each channel end, for close and reset. */
  private readonly conns = new Map<string, Breakable>();
  /** Called on every add and clear (the multifd threads' copies follow: in-thread.ts). */
  private readonly watchers = new Set<() => void>();

  constructor(private host: FaultHost = { fired: () => undefined, crash: () => process.kill(process.pid, 'SIGKILL') }) {}

  /** The daemon's own way to log, announce and crash (set once it is up). */
  attach(host: FaultHost): void {
    this.host = host;
  }

  add(spec: FaultSpec): FaultInfo {
    checkSpec(spec);
    const id = spec.id ?? `fault${this.nextId++}`;
    if (this.faults.has(id)) throw new QmpError('GenericError', `Fault '${id}' already exists`);
    // A multifd channel's fault is triggered in the channel's thread; this copy is told.
    const f = this.arm(id, spec, !inThread(spec));
    this.changed();
    return f.info();
  }

  private arm(id: string, spec: FaultSpec, triggers: boolean): Fault {
    const f = new Fault(id, spec);
    this.faults.set(id, f);
    if (!triggers) return f;
    const noTrigger = spec['after-bytes'] === undefined && spec.at === undefined && spec.point === undefined && spec['after-ms'] === undefined;
    if (spec['after-ms'] !== undefined) {
      const t = setTimeout(() => this.fire(f, 'after-ms'), spec['after-ms']);
      t.unref();
      f.setTimer(t);
    } else if (noTrigger && (LASTING.has(spec.kind) || spec.kind === 'crash') && spec.probability === undefined) {
      this.fire(f, 'now');
    }
    return f;
  }

  list(): FaultInfo[] {
    return [...this.faults.values()].map((f) => f.info());
  }

  /** Clears one fault, or all; a stalled channel moves again. */
  clear(id?: string): void {
    if (id !== undefined && !this.faults.has(id)) throw new QmpError('GenericError', `Fault '${id}' not found`);
    for (const f of id === undefined ? [...this.faults.values()] : [this.faults.get(id)!]) {
      f.clearTimer();
      this.faults.delete(f.id);
    }
    this.changed();
  }

  /** Whether a fault waits on the main channel's bytes (the page thread then stays off). */
  get channelArmed(): boolean {
    return [...this.faults.values()].some((f) => (CHANNEL_KINDS.has(f.kind) || f.spec.point !== undefined) && f.state !== 'done');
  }

  /** Whether any fault is set: the hooks cost one check while none is. */
  get any(): boolean {
    return this.faults.size > 0;
  }

  /** A slow-start fault fires: how long the daemon waits before its monitors listen (0: none). */
  startDelay(): number {
    const f = [...this.faults.values()].find((x) => x.kind === 'slow-start' && x.state === 'armed');
    if (!f) return 0;
    this.fire(f, `the monitors listen ${f.spec['delay-ms']} ms late`);
    return f.spec['delay-ms'] ?? 0;
  }

  /** A migration channel opened at this end: its byte count starts from zero. */
  channelOpened(end: ChannelEnd, conn: Breakable): void {
    this.carried.set(endKey(end), 0);
    this.conns.set(endKey(end), conn);
  }

  /** The migration reached `status` (MigrationStateCell): faults `at` it fire. */
  reached(status: string): void {
    for (const f of this.faults.values()) if (f.state === 'armed' && f.spec.at === status) this.fire(f, `at ${status}`);
  }

  /**
   * A record of the main stream: on the sending side it is about to be written at stream offset
   * `offset`, and faults at this point fire when the channel gets there (onChannel, exactly at
   * the byte); on the receiving side the destination has just read its header, and they fire
   * now. Returns whether a close or reset fired (the reader must then stop here).
   */
  point(side: ChannelSide, kind: RecordKind, name: string | undefined, offset: number): boolean {
    let broken = false;
    for (const f of this.faults.values()) {
      if (f.state !== 'armed' || f.spec.point === undefined || f.atByte !== undefined) continue;
      if (CHANNEL_KINDS.has(f.kind) && (f.spec.side ?? 'send') !== side) continue;
      if (!pointMatches(f.spec.point, kind, name)) continue;
      if (side === 'send' && (CHANNEL_KINDS.has(f.kind) || f.kind === 'crash')) f.atByte = offset;
      else {
        this.fire(f, `at ${f.spec.point}`);
        broken ||= f.kind === 'close' || f.kind === 'reset';
      }
    }
    return broken;
  }

  /** A named point of a COLO checkpoint on the primary (colo/primary.ts): faults at `colo:NAME` fire. */
  coloPoint(name: string): void {
    for (const f of this.faults.values()) if (f.state === 'armed' && f.spec.point === `colo:${name}`) this.fire(f, `at colo:${name}`);
  }

  /** Whether a fault waits at this point (a checkpoint then stops there to give it its chance). */
  waitsAt(point: string): boolean {
    return [...this.faults.values()].some((f) => f.state === 'armed' && f.spec.point === point);
  }

  /**
   * The channel end is about to carry `pieces` (send: before the write; receive: as the read
   * arrives). Returns how long to wait first, and where to break the channel if a close, reset
   * or crash falls within them; a corrupt replaces the piece that holds its byte with a flipped
   * copy (`pieces` is the caller's own array).
   */
  onChannel(end: ChannelEnd, pieces: Buffer[]): { waitMs: number; cut?: Cut } {
    const key = endKey(end);
    const bytes = pieces.reduce((n, b) => n + b.length, 0);
    const start = this.carried.get(key) ?? 0;
    this.carried.set(key, start + bytes);
    let waitMs = 0;
    for (const f of this.faults.values()) {
      if (f.state === 'done' || f.end !== key) continue;
      if (!CHANNEL_KINDS.has(f.kind) && f.atByte === undefined) continue;
      if (f.state === 'armed') {
        if (f.spec.at !== undefined || f.spec['after-ms'] !== undefined) continue;
        if (f.spec.point !== undefined && f.atByte === undefined) continue;
        const at = f.atByte ?? f.spec['after-bytes'];
        if (at !== undefined && start + bytes <= at) continue;
        if (!f.chance()) continue;
        const why = f.spec.point !== undefined ? `at ${f.spec.point}, byte ${at}` : at !== undefined ? `after ${at} bytes` : 'on the channel';
        if (f.kind === 'corrupt') {
          const offset = Math.max(at ?? start, start);
          flipByte(pieces, offset - start);
          this.fire(f, `flipped the byte at offset ${offset}`);
          continue;
        }
        const breaks = f.kind === 'close' || f.kind === 'reset' || f.kind === 'crash';
        if (breaks || (at !== undefined && at > start)) {
          // It acts at its byte: the channel passes what comes before, then calls fire().
          this.carried.set(key, Math.max(at ?? start, start));
          return { waitMs, cut: { bytes: Math.max(0, (at ?? start) - start), breaks, fire: () => this.fire(f, why) } };
        }
        this.fire(f, why);
      }
      if (!f.inForce()) continue;
      if (f.kind === 'latency') waitMs += f.spec['delay-ms'] ?? 0;
      if (f.kind === 'throttle') waitMs += (bytes / Math.max(1, f.spec['bytes-per-second'] ?? 1)) * 1000;
    }
    return { waitMs };
  }

  /** A stall in force on this end now: how long it lasts at most (Infinity: until cleared), or 0. */
  stalled(end: ChannelEnd): number {
    const key = endKey(end);
    let ms = 0;
    for (const f of this.faults.values()) {
      if (f.kind !== 'stall' || f.end !== key || !f.inForce()) continue;
      ms = Math.max(ms, f.spec['duration-ms'] ?? Infinity);
    }
    return ms;
  }

  /** Before a command runs: hang, delay or fail it. The fault commands themselves always run. */
  async beforeCommand(command: string): Promise<void> {
    if (command.startsWith('__org.qmigd_fault-')) return;
    for (;;) {
      const hang = [...this.faults.values()].find((f) => f.kind === 'hang' && f.inForce());
      if (!hang) break;
      await sleep(25);
    }
    for (const f of this.faults.values()) {
      if (f.state !== 'armed' || f.spec.command !== command || !f.chance()) continue;
      if (f.kind === 'command-delay') {
        this.fire(f, `delayed ${command} by ${f.spec['delay-ms'] ?? 0} ms`);
        await sleep(f.spec['delay-ms'] ?? 0);
      } else if (f.kind === 'command-error') {
        const desc = f.spec.desc ?? `Injected fault ${f.id}`;
        this.fire(f, `failed ${command}: ${desc}`);
        throw new QmpError(f.spec['error-class'] ?? 'GenericError', desc);
      }
    }
  }

  /** Before an event goes out: `send` now, later, or never. */
  onEvent(name: string, send: () => void): void {
    for (const f of this.faults.values()) {
      if (f.state !== 'armed' || f.spec.event !== name || !f.chance()) continue;
      if (f.kind === 'event-drop') {
        this.fire(f, `dropped ${name}`);
        return;
      }
      if (f.kind === 'event-delay') {
        this.fire(f, `delayed ${name} by ${f.spec['delay-ms'] ?? 0} ms`);
        setTimeout(send, f.spec['delay-ms'] ?? 0);
        return;
      }
    }
    send();
  }

  /** The faults a multifd channel's thread keeps a copy of (those on its channel, not done). */
  forThread(index: number): { id: string; spec: FaultSpec }[] {
    return [...this.faults.values()]
      .filter((f) => inThread(f.spec) && (f.spec.index ?? 0) === index && f.state !== 'done')
      .map((f) => ({ id: f.id, spec: f.spec }));
  }

  /** In a channel's thread: the copy follows the daemon's list (new ones armed, cleared ones gone). */
  follow(list: { id: string; spec: FaultSpec }[]): void {
    const ids = new Set(list.map((x) => x.id));
    for (const f of [...this.faults.values()]) if (!ids.has(f.id)) this.faults.delete(f.id);
    for (const { id, spec } of list) if (!this.faults.has(id)) this.arm(id, spec, true);
  }

  /** A fault fired in a channel's thread: this copy counts it, and tells as its own would. */
  firedInThread(id: string, action: string): void {
    const f = this.faults.get(id);
    if (!f || f.state === 'done') return;
    f.activate();
    this.host.fired(f.id, f.kind, action);
  }

  /** Calls `fn` on every add and clear; returns the way to stop. */
  watch(fn: () => void): () => void {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }

  private changed(): void {
    for (const fn of this.watchers) fn();
  }

  private fire(f: Fault, why: string): void {
    if (f.state === 'done' || !this.faults.has(f.id)) return;
    f.activate();
    const action = `${f.kind} (${why})`;
    this.host.fired(f.id, f.kind, action);
    if (f.kind === 'crash') this.host.crash();
    const conn = this.conns.get(f.end);
    if (f.kind === 'close') conn?.close();
    if (f.kind === 'reset') conn?.reset();
  }
}

/** What the schema cannot say: the members each kind needs, in QMP's words. */
function checkSpec(spec: FaultSpec): void {
  const need = (member: keyof FaultSpec, kinds: FaultKind[]): void => {
    if (kinds.includes(spec.kind) && spec[member] === undefined) throw new QmpError('GenericError', `Parameter '${member}' is missing`);
  };
  need('bytes-per-second', ['throttle']);
  need('delay-ms', ['latency', 'command-delay', 'event-delay', 'slow-start']);
  need('command', ['command-error', 'command-delay']);
  need('event', ['event-drop', 'event-delay']);
  const channel = CHANNEL_KINDS.has(spec.kind);
  for (const m of ['channel', 'index', 'side', 'after-bytes'] as const) {
    if (!channel && spec[m] !== undefined) throw new QmpError('GenericError', `Parameter '${m}' is only for channel faults`);
  }
  if (spec.index !== undefined && spec.channel !== 'multifd') throw new QmpError('GenericError', "Parameter 'index' is only for multifd channels");
  const triggers = (['after-bytes', 'at', 'point', 'after-ms'] as const).filter((m) => spec[m] !== undefined);
  if (triggers.length > 1) throw new QmpError('GenericError', `Only one trigger may be given, not ${triggers.map((m) => `'${m}'`).join(' and ')}`);
  if (spec.kind === 'corrupt' && triggers.length && triggers[0] !== 'after-bytes') {
    throw new QmpError('GenericError', "A corrupt fault is placed by 'after-bytes'");
  }
  if (spec.point?.startsWith('colo:') && channel) throw new QmpError('GenericError', `A COLO checkpoint's point places crash and hang, not ${spec.kind}`);
  if (spec.point !== undefined && ((channel && (spec.channel ?? 'main') !== 'main') || !(channel || spec.kind === 'crash' || spec.kind === 'hang'))) {
    throw new QmpError('GenericError', `A point is a record of the main stream: it places faults on the main channel, crash and hang, not ${spec.kind}`);
  }
  if (spec.channel === 'multifd' && (spec.at !== undefined || spec.point !== undefined)) {
    throw new QmpError('GenericError', "A multifd channel's fault is placed by 'after-bytes', 'after-ms' or 'probability'");
  }
  // QMP faults act on the next matches, daemon faults at their trigger: no other trigger applies.
  const qmp = QMP_KINDS.has(spec.kind);
  if (qmp && triggers.length) throw new QmpError('GenericError', `A ${spec.kind} fault acts on the next matches: 'at', 'point' and 'after-ms' do not apply`);
  if (spec.kind === 'slow-start' && triggers.length) throw new QmpError('GenericError', 'A slow-start fault acts when the daemon starts: no trigger applies');
  if (!qmp && !channel && spec.probability !== undefined) {
    throw new QmpError('GenericError', `A ${spec.kind} fault has no chances to take: 'probability' does not apply`);
  }
}

/** The process's faults: one daemon, one set (the hooks in channels, dispatcher and events ask it). */
export const faults = new FaultSet();

/**
 * Flips the byte at `offset` within the pieces. The piece that holds it is replaced by a copy
 * first: a sent piece may be guest RAM itself (sent by reference), which must stay intact.
 */
function flipByte(pieces: Buffer[], offset: number): void {
  for (let i = 0; i < pieces.length; i++) {
    const p = pieces[i]!;
    if (offset < p.length) {
      const copy = Buffer.from(p);
      copy[offset] = copy[offset]! ^ 0xff;
      pieces[i] = copy;
      return;
    }
    offset -= p.length;
  }
}

