/**
 * One monitor connection, as monitor/qmp.c runs it:
 *
 *   greeting ──► negotiation ──qmp_capabilities──► command
 *
 * Input is lexed and parsed in the server's input turns, a slice at a time, so no message, however
 * large, holds the event loop. A parsed request goes to an in-band queue that the in-band
 * scheduler serves one request at a time, taking turns with every other monitor; a request that
 * is `exec-oob` (and not `execute`) goes to the out-of-band scheduler instead, ahead of the
 * in-band queue. Like QEMU, the session stops reading input while the queue is full (one request
 * without OOB, eight with it) and resumes when it drains, so a client that pipelines cannot grow
 * the queue without bound; and what it holds counts against the server's memory budget.
 *
 * When the client shuts its sending side, every request already received is still answered, and
 * then the connection is closed, as QEMU does.
 *
 * Descriptors that come with the bytes (unix monitors) are the connection's received batch from
 * the moment the lexer reaches the first of those bytes, as QEMU's chardev takes them with the
 * byte it reads (see descriptors.ts); the commands reach them through CommandContext.fds.
 */
import type { Logger } from 'pino';
import { Errors } from '../errors.js';
import { dispatch, errorReply, isOobRequest, type Reply } from './dispatcher.js';
import type { EventSink } from './events.js';
import { JsonMessageParser, type FramingResult } from './framing.js';
import { JsonParse } from './json-parser.js';
import { toQmpJson, type JsonValue } from './json-writer.js';
import { closeFd, NamedFds, ReceivedFds, runWithMonitor, type MonitorFds } from './descriptors.js';
import type { BudgetHolder, MemoryBudget } from './memory-budget.js';
import type { QObject } from './qobject.js';
import type { CommandRegistry, SessionControl } from './registry.js';
import type { RoundRobin, Schedulable } from './scheduler.js';

export const QMP_REQ_QUEUE_LEN_MAX = 8;

/** Input lexed, or parse work done, per turn: about a millisecond. */
const INPUT_SLICE_BYTES = 16 * 1024;
const PARSE_SLICE_BYTES = 64 * 1024;
/** How much input may wait unlexed before the transport stops reading. */
const PENDING_MAX_BYTES = 256 * 1024;
/** A client with this much output unread gets no more in-band replies until it reads. */
const OUTPUT_MAX_BYTES = 1024 * 1024;
/** Descriptors that may wait with unlexed input before the transport stops reading. */
const PENDING_MAX_FDS = 64;

/** A transport's view of one client: text out, bytes in, flow control. */
export interface Connection {
  readonly description: string;
  /** Sends one message (the transport adds CRLF or frames it). */
  send(text: string): void;
  /** Closes once what was sent has gone out. */
  close(): void;
  /** Closes at once. */
  abort(): void;
  pauseInput(): void;
  resumeInput(): void;
  /** Output the transport holds, not yet taken by the client. */
  readonly queuedOutput: number;
  /** Input the transport holds, not yet delivered (a WebSocket frame still arriving). */
  readonly queuedInput: number;
  /** The monitor's named descriptors, where its transport can carry descriptors (unix). */
  readonly namedFds?: NamedFds;
}

/** What a session needs from its server. */
export interface SessionOptions {
  registry: CommandRegistry;
  greeting: () => JsonValue;
  validateReplies: boolean;
  log: Logger;
  /** Turns for input (lexing and parsing), for in-band requests and for out-of-band ones. */
  input: RoundRobin<Schedulable>;
  inBand: RoundRobin<Schedulable>;
  outOfBand: RoundRobin<Schedulable>;
  budget: MemoryBudget;
  onClosed: (session: QmpSession) => void;
}

/** A request as queued: parsed (with about what it costs in memory), or an input error. */
type Request = { value: QObject; bytes: number; error?: undefined } | { value?: undefined; bytes: 0; error: string };

export class QmpSession implements EventSink, SessionControl, BudgetHolder {
  private mode: 'negotiation' | 'command' = 'negotiation';
  private oobEnabled = false;
  private readonly inBandQueue: Request[] = [];
  private readonly oobQueue: Request[] = [];
  private queuedBytes = 0;
  /** Input not yet lexed. */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Descriptors that came with a pending chunk, until the lexer reaches its first byte. */
  private pendingFds = new Map<Buffer, number[]>();
  private pendingFdCount = 0;
  private readonly received = new ReceivedFds();
  private readonly fds: MonitorFds;
  /** A complete message being parsed, a slice per turn; input waits meanwhile. */
  private parsing?: { job: JsonParse; bytes: number };
  /** The in-band queue is full: input waits (QEMU's monitor_suspend). */
  private suspended = false;
  private inputPaused = false;
  private inputEnded = false;
  private closed = false;
  private readonly parser = new JsonMessageParser((r) => this.onMessage(r));
  /** The schedulers' views of this session. */
  private readonly input: Schedulable;
  private readonly inBand: Schedulable;
  private readonly outOfBand: Schedulable;

  constructor(
    private readonly conn: Connection,
    private readonly opts: SessionOptions,
  ) {
    this.input = { hasWork: () => this.canRead && (this.parsing !== undefined || this.pending.length > 0), serveOne: async () => this.readSlice() };
    // A client that does not read its replies waits for them to drain before it gets more.
    this.inBand = {
      hasWork: () => this.inBandQueue.length > 0 && !this.closed && this.conn.queuedOutput < OUTPUT_MAX_BYTES,
      serveOne: () => this.serveInBand(),
    };
    this.outOfBand = { hasWork: () => this.oobQueue.length > 0 && !this.closed, serveOne: () => this.serveOutOfBand() };
    // A monitor that cannot carry descriptors still has a (forever empty) list of names, as QEMU's.
    this.fds = { takeReceived: () => this.received.take(), named: conn.namedFds ?? new NamedFds() };
    opts.budget.add(this);
    this.send(opts.greeting());
  }

  get description(): string {
    return this.conn.description;
  }

  get negotiated(): boolean {
    return this.mode === 'command';
  }

  get held(): number {
    const parsing = this.parsing ? this.parsing.bytes + this.parsing.job.builtBytes : 0;
    return this.parser.held + this.pendingBytes + parsing + this.queuedBytes + this.conn.queuedOutput + this.conn.queuedInput;
  }

  enterCommandMode(capabilities: string[]): void {
    this.mode = 'command';
    this.oobEnabled = capabilities.includes('oob');
  }

  /** Bytes from the transport, with the descriptors sent with them: lexed in the input scheduler's turns. */
  feed(chunk: Buffer, fds: number[] = []): void {
    if (this.closed) {
      fds.forEach(closeFd);
      return;
    }
    if (fds.length) {
      this.pendingFds.set(chunk, fds);
      this.pendingFdCount += fds.length;
    }
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    this.inputChanged();
  }

  /** The transport has written out what was queued: in-band replies may go on. */
  outputDrained(): void {
    if (this.inBand.hasWork()) this.opts.inBand.notify(this.inBand);
  }

  /** The client shut its sending side: answer what it sent, then close. */
  endOfInput(): void {
    this.inputEnded = true;
    this.inputChanged();
  }

  sendEvent(message: { [key: string]: JsonValue }): void {
    this.send(message);
  }

  /** The transport lost the client. */
  closedByPeer(): void {
    if (this.closed) return;
    this.closed = true;
    this.inBandQueue.length = 0;
    this.oobQueue.length = 0;
    this.pending = [];
    this.parsing = undefined;
    // tcp_chr_free_connection(): what this client sent and no command took is closed with it.
    for (const fds of this.pendingFds.values()) fds.forEach(closeFd);
    this.pendingFds.clear();
    this.pendingFdCount = 0;
    this.received.close();
    this.opts.budget.remove(this);
    this.opts.onClosed(this);
    this.opts.registry.monitorClosed();
  }

  close(): void {
    this.closedByPeer();
    this.conn.close();
  }

  drop(): void {
    this.closedByPeer();
    this.conn.abort();
  }

  private send(message: JsonValue): void {
    if (this.closed) return;
    const text = toQmpJson(message);
    if (this.opts.log.isLevelEnabled('debug')) this.opts.log.debug({ out: text }, 'qmp out');
    this.conn.send(text);
    this.opts.budget.update(this);
  }

  /** Input is read unless the queue is full or an out-of-band request is waiting. */
  private get canRead(): boolean {
    return !this.closed && !this.suspended && this.oobQueue.length === 0;
  }

  /** The input scheduler's turn: a slice of the parse in progress, or of pending input to lex. */
  private readSlice(): void {
    if (this.parsing) this.continueParse();
    let budget = INPUT_SLICE_BYTES;
    while (this.canRead && !this.parsing && this.pending.length > 0 && budget > 0) {
      const chunk = this.pending.shift()!;
      const fds = this.pendingFds.get(chunk);
      if (fds) {
        this.pendingFds.delete(chunk);
        this.pendingFdCount -= fds.length;
        this.received.arrive(fds);
      }
      const used = this.parser.feed(chunk.length > budget ? chunk.subarray(0, budget) : chunk);
      this.pendingBytes -= used;
      budget -= used;
      if (used < chunk.length) this.pending.unshift(chunk.subarray(used));
    }
    this.inputChanged();
  }

  /**
   * After anything that changes what input may do: flow control towards the transport, a turn
   * for what is pending, the budget, and the close that follows the client's own.
   */
  private inputChanged(): void {
    if (this.closed) return;
    const pause = !this.canRead || this.parsing !== undefined || this.pendingBytes >= PENDING_MAX_BYTES || this.pendingFdCount >= PENDING_MAX_FDS;
    if (pause !== this.inputPaused) {
      this.inputPaused = pause;
      if (pause) this.conn.pauseInput();
      else this.conn.resumeInput();
    }
    if (this.input.hasWork()) this.opts.input.notify(this.input);
    this.opts.budget.update(this);
    const idle = this.pending.length === 0 && !this.parsing && this.inBandQueue.length === 0 && this.oobQueue.length === 0;
    if (this.inputEnded && idle) this.close();
  }

  /** The streamer has a message (or an error): parse it, starting now. */
  private onMessage(result: FramingResult): void {
    this.parser.stop(); // the rest of the input waits for this message
    if (result.error !== undefined) return this.queue({ error: result.error, bytes: 0 });
    if (this.opts.log.isLevelEnabled('debug')) {
      this.opts.log.debug({ in: result.message.toString('utf8', 0, Math.min(result.message.length, 4096)) }, 'qmp in');
    }
    this.parsing = { job: new JsonParse(result.message), bytes: result.message.length };
    this.continueParse();
  }

  /** json_parser_parse(), one slice. */
  private continueParse(): void {
    const { job } = this.parsing!;
    if (!job.run(PARSE_SLICE_BYTES)) return;
    this.parsing = undefined;
    this.queue(job.error !== undefined ? { error: job.error, bytes: 0 } : { value: job.value!, bytes: job.builtBytes });
  }

  /** handle_qmp_command(): an OOB request runs ahead of the queue; others wait their turn in it. */
  private queue(request: Request): void {
    this.queuedBytes += request.bytes;
    if (request.value !== undefined && isOobRequest(request.value)) {
      // Input waits until it has run, so that what follows is read after it, as in QEMU.
      this.oobQueue.push(request);
      this.opts.outOfBand.notify(this.outOfBand);
      return;
    }
    this.inBandQueue.push(request);
    if (this.inBandQueue.length >= (this.oobEnabled ? QMP_REQ_QUEUE_LEN_MAX : 1)) this.suspended = true;
    this.opts.inBand.notify(this.inBand);
  }

  /** The in-band scheduler's turn: the oldest queued request, answered. */
  private async serveInBand(): Promise<void> {
    const request = this.inBandQueue[0]!;
    const reply = await this.execute(request);
    this.inBandQueue.shift();
    this.done(request, reply);
  }

  /** The out-of-band scheduler's turn. */
  private async serveOutOfBand(): Promise<void> {
    const request = this.oobQueue.shift()!;
    this.done(request, await this.execute(request));
  }

  private done(request: Request, reply: Reply): void {
    this.queuedBytes -= request.bytes;
    this.send(reply);
    this.suspended = this.inBandQueue.length >= (this.oobEnabled ? QMP_REQ_QUEUE_LEN_MAX : 1);
    this.inputChanged();
  }

  private async execute(request: Request): Promise<Reply> {
    if (request.error !== undefined) return errorReply(Errors.parseError(request.error));
    try {
      // The handler runs synchronously inside dispatch() up to its first await: that part sees
      // this monitor as the current one.
      return await runWithMonitor(this.fds, () =>
        dispatch(
          this.opts.registry,
          request.value,
          { allowOob: this.oobEnabled, negotiating: this.mode === 'negotiation', validateReplies: this.opts.validateReplies },
          { session: this, log: this.opts.log, fds: this.fds },
        ),
      );
    } catch (err) {
      // A handler bug must cost one request, never the daemon, the connection or the id.
      this.opts.log.error({ err }, 'command failed unexpectedly');
      return errorReply(Errors.internal(err), request.value instanceof Map ? request.value.get('id') : undefined);
    }
  }
}
