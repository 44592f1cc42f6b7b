/**
 * The QMP server: every monitor on every transport, one command registry, one event bus.
 */
import type { Logger } from 'pino';
import { EventBus } from './events.js';
import type { JsonValue } from './json-writer.js';
import { DEFAULT_QMP_MEMORY_BUDGET, MemoryBudget } from './memory-budget.js';
import type { CommandRegistry } from './registry.js';
import { RoundRobin, type Schedulable } from './scheduler.js';
import { QmpSession, type Connection } from './session.js';
import type { QmpSpec } from './transports/spec.js';
import { openStreamTransport } from './transports/stream.js';
import type { Transport, TransportHost } from './transports/transport.js';

export interface QmpServerOptions {
  registry: CommandRegistry;
  log: Logger;
  version: { major: number; minor: number; micro: number; package: string };
  /** Check replies and events against their schemas (tests turn this on). */
  validate: boolean;
  /** Bytes all connections together may hold (see memory-budget.ts). */
  memoryBudget?: number;
}

export class QmpServer implements TransportHost {
  readonly events: EventBus;
  readonly log: Logger;
  private readonly sessions = new Set<QmpSession>();
  private readonly transports: Transport[] = [];
  private nextId = 1;
  /**
   * Turns across monitors: slices of input to lex; one request at a time from all monitors, in
   * turn; and out-of-band requests, which have turns of their own.
   */
  private readonly input: RoundRobin<Schedulable>;
  private readonly inBand: RoundRobin<Schedulable>;
  private readonly outOfBand: RoundRobin<Schedulable>;
  readonly budget: MemoryBudget;

  constructor(private readonly opts: QmpServerOptions) {
    this.log = opts.log;
    this.events = new EventBus(opts.registry.schemas, opts.validate);
    const onError = (err: unknown): void => this.log.error({ err }, 'serving a QMP request failed');
    this.input = new RoundRobin(onError);
    this.inBand = new RoundRobin(onError);
    this.outOfBand = new RoundRobin(onError);
    this.budget = new MemoryBudget(opts.memoryBudget ?? DEFAULT_QMP_MEMORY_BUDGET, opts.log);
  }

  get clientCount(): number {
    return this.sessions.size;
  }

  async open(spec: QmpSpec): Promise<Transport> {
    // ws is loaded only for a WebSocket monitor: it is a tenth of the daemon's start-up otherwise.
    const transport = spec.kind === 'ws' ? await (await import('./transports/websocket.js')).openWebSocketTransport(spec, this) : await openStreamTransport(spec, this);
    this.transports.push(transport);
    this.log.info({ qmp: transport.where }, 'QMP listening');
    return transport;
  }

  accept(conn: Connection): QmpSession {
    const { major, minor, micro, package: pkg } = this.opts.version;
    const log = this.log.child({ conn: this.nextId++, client: conn.description });
    const session = new QmpSession(conn, {
      registry: this.opts.registry,
      greeting: (): JsonValue => ({ QMP: { version: { qemu: { major, minor, micro }, package: pkg }, capabilities: ['oob'] } }),
      validateReplies: this.opts.validate,
      log,
      input: this.input,
      inBand: this.inBand,
      outOfBand: this.outOfBand,
      budget: this.budget,
      onClosed: (s) => {
        this.sessions.delete(s);
        this.events.detach(s);
        log.info('client disconnected');
      },
    });
    this.sessions.add(session);
    this.events.attach(session);
    log.info('client connected');
    return session;
  }

  async close(): Promise<void> {
    for (const s of this.sessions) s.close();
    await Promise.all(this.transports.map((t) => t.close()));
    this.transports.length = 0;
  }
}
