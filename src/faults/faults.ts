/**
 * Faults on demand: one model of what can be broken on purpose, and the hooks where the daemon
 * asks it. Three ways in share it: the __org.qmigd_fault-* commands, --fault SPEC and
 * --faults FILE (src/faults/spec.ts parses them).
 *
 * A fault is armed when added and fires when its trigger is met: at once (no trigger), once its
 * channel has carried `after-bytes`, when the migration reaches the state `at`, `after-ms` after
 * it was added, or, at each chance it gets, with `probability` from a seeded generator. What it
 * then does depends on its kind:
 *
 *   channel (the main migration channel; side send: the source writing it, receive: the
 *   destination reading it):
 *     stall     no bytes move for duration-ms, or until cleared
 *     throttle  at most bytes-per-second, for duration-ms or until cleared
 *     latency   every write (send) or read (receive) waits delay-ms, for duration-ms
 *     close     the connection is closed (FIN); the far end sees the stream end
 *     reset     the connection is reset (RST)
 *     corrupt   the byte at stream offset `after-bytes` is flipped (XOR 0xff)
 *   daemon:
 *     crash     SIGKILL, as a host that dies
 *     hang      QMP answers nothing for duration-ms (or until cleared) while the rest runs
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
import { rng } from '../rng.js';

/** How often a channel held by a stall looks whether the stall is over. */
export const STALL_POLL_MS = 10;

export const FAULT_KINDS = [
  'stall', 'throttle', 'latency', 'close', 'reset', 'corrupt',
  'crash', 'hang',
  'command-error', 'command-delay', 'event-drop', 'event-delay',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

const CHANNEL_KINDS: ReadonlySet<FaultKind> = new Set(['stall', 'throttle', 'latency', 'close', 'reset', 'corrupt']);
const QMP_KINDS: ReadonlySet<FaultKind> = new Set(['command-error', 'command-delay', 'event-drop', 'event-delay']);
/** Kinds that last (duration-ms, or until cleared) once fired; the others act once or `count` times. */
const LASTING: ReadonlySet<FaultKind> = new Set(['stall', 'throttle', 'latency', 'hang']);

export type ChannelSide = 'send' | 'receive';

/** A fault as it is asked for, in QAPI's spelling (the schema's FaultSpec). */
export interface FaultSpec {
  id?: string;
  kind: FaultKind;
  channel?: 'main';
  side?: ChannelSide;
  'after-bytes'?: number;
  at?: string;
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
  private until = Infinity;
  private timer?: NodeJS.Timeout;
  private rng?: () => number;

  constructor(
    readonly id: string,
    readonly spec: FaultSpec,
  ) {
    this.left = spec.count ?? 1;
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

export class FaultSet {
  private readonly faults = new Map<string, Fault>();
  private nextId = 0;
  /** Bytes each side's main channel has carried in this migration. */
  private readonly carried: Record<ChannelSide, number> = { send: 0, receive: 0 };
  /** The connection under each side's main channel, for close and reset. */
  private readonly conns: Partial<Record<ChannelSide, Breakable>> = {};

  constructor(private host: FaultHost = { fired: () => undefined, crash: () => process.kill(process.pid, 'SIGKILL') }) {}

  /** The daemon's own way to log, announce and crash (set once it is up). */
  attach(host: FaultHost): void {
    this.host = host;
  }

  add(spec: FaultSpec): FaultInfo {
    checkSpec(spec);
    const id = spec.id ?? `fault${this.nextId++}`;
    if (this.faults.has(id)) throw new QmpError('GenericError', `Fault '${id}' already exists`);
    const f = new Fault(id, spec);
    this.faults.set(id, f);
    const noTrigger = spec['after-bytes'] === undefined && spec.at === undefined && spec['after-ms'] === undefined;
    if (spec['after-ms'] !== undefined) {
      const t = setTimeout(() => this.fire(f, 'after-ms'), spec['after-ms']);
      t.unref();
      f.setTimer(t);
    } else if (noTrigger && (LASTING.has(spec.kind) || spec.kind === 'crash') && spec.probability === undefined) {
      this.fire(f, 'now');
    }
    return f.info();
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
  }

  /** Whether a fault waits on the main channel's bytes (the page thread then stays off). */
  get channelArmed(): boolean {
    return [...this.faults.values()].some((f) => CHANNEL_KINDS.has(f.kind) && f.state !== 'done');
  }

  /** Whether any fault is set: the hooks cost one check while none is. */
  get any(): boolean {
    return this.faults.size > 0;
  }

  /** A migration's main channel opened on this side: its byte count starts from zero. */
  channelOpened(side: ChannelSide, conn: Breakable): void {
    this.carried[side] = 0;
    this.conns[side] = conn;
  }

  /** The migration reached `status` (MigrationStateCell): faults `at` it fire. */
  reached(status: string): void {
    for (const f of this.faults.values()) if (f.state === 'armed' && f.spec.at === status) this.fire(f, `at ${status}`);
  }

  /**
   * The main channel is about to carry `pieces` (send: before the write; receive: as the read
   * arrives). Returns how long to wait first, and whether a close or reset broke the channel; a
   * corrupt replaces the piece that holds its byte with a flipped copy (`pieces` is the
   * caller's own array).
   */
  onChannel(side: ChannelSide, pieces: Buffer[]): { waitMs: number; broken: boolean } {
    const bytes = pieces.reduce((n, b) => n + b.length, 0);
    const start = this.carried[side];
    this.carried[side] += bytes;
    let waitMs = 0;
    for (const f of this.faults.values()) {
      if (!CHANNEL_KINDS.has(f.kind) || (f.spec.side ?? 'send') !== side || f.state === 'done') continue;
      if (f.state === 'armed') {
        const at = f.spec['after-bytes'];
        if (f.spec.at !== undefined || f.spec['after-ms'] !== undefined) continue;
        if (at !== undefined && start + bytes <= at) continue;
        if (!f.chance()) continue;
        if (f.kind === 'corrupt') {
          const offset = Math.max(at ?? start, start);
          flipByte(pieces, offset - start);
          this.fire(f, `flipped the byte at offset ${offset}`);
          continue;
        }
        this.fire(f, at !== undefined ? `after ${at} bytes` : 'on the channel');
        if (f.kind === 'close' || f.kind === 'reset') return { waitMs: 0, broken: true };
      }
      if (!f.inForce()) continue;
      if (f.kind === 'latency') waitMs += f.spec['delay-ms'] ?? 0;
      if (f.kind === 'throttle') waitMs += (bytes / Math.max(1, f.spec['bytes-per-second'] ?? 1)) * 1000;
    }
    return { waitMs, broken: false };
  }

  /** A stall on `side` in force now: how long it lasts at most (Infinity: until cleared), or 0. */
  stalled(side: ChannelSide): number {
    let ms = 0;
    for (const f of this.faults.values()) {
      if (f.kind !== 'stall' || (f.spec.side ?? 'send') !== side || !f.inForce()) continue;
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

  private fire(f: Fault, why: string): void {
    if (f.state === 'done' || !this.faults.has(f.id)) return;
    f.activate();
    const action = `${f.kind} (${why})`;
    this.host.fired(f.id, f.kind, action);
    if (f.kind === 'crash') this.host.crash();
    const side = f.spec.side ?? 'send';
    if (f.kind === 'close') this.conns[side]?.close();
    if (f.kind === 'reset') this.conns[side]?.reset();
  }
}

/** What the schema cannot say: the members each kind needs, in QMP's words. */
function checkSpec(spec: FaultSpec): void {
  const need = (member: keyof FaultSpec, kinds: FaultKind[]): void => {
    if (kinds.includes(spec.kind) && spec[member] === undefined) throw new QmpError('GenericError', `Parameter '${member}' is missing`);
  };
  need('bytes-per-second', ['throttle']);
  need('delay-ms', ['latency', 'command-delay', 'event-delay']);
  need('command', ['command-error', 'command-delay']);
  need('event', ['event-drop', 'event-delay']);
  const channel = CHANNEL_KINDS.has(spec.kind);
  for (const m of ['channel', 'side', 'after-bytes'] as const) {
    if (!channel && spec[m] !== undefined) throw new QmpError('GenericError', `Parameter '${m}' is only for channel faults`);
  }
  if (spec.kind === 'corrupt' && (spec.at !== undefined || spec['after-ms'] !== undefined)) {
    throw new QmpError('GenericError', "A corrupt fault is placed by 'after-bytes'");
  }
  // QMP faults act on the next matches, daemon faults at their trigger: no other trigger applies.
  const qmp = QMP_KINDS.has(spec.kind);
  if (qmp && (spec.at !== undefined || spec['after-ms'] !== undefined)) {
    throw new QmpError('GenericError', `A ${spec.kind} fault acts on the next matches: 'at' and 'after-ms' do not apply`);
  }
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

