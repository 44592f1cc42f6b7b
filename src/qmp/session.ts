/**
 * One monitor connection, as monitor/qmp.c runs it:
 *
 *   greeting ──► negotiation ──qmp_capabilities──► command
 *
 * Parsed requests go to an in-band queue served one at a time; a request that is `exec-oob`
 * (and not `execute`) runs at once instead. Like QEMU, the session stops reading input while the
 * queue is full (one request without OOB, eight with it) and resumes when it drains, so a client
 * that pipelines cannot grow the queue without bound.
 */
import type { Logger } from 'pino';
import { Errors } from '../errors.js';
import { dispatch, errorReply, isOobRequest, type Reply } from './dispatcher.js';
import type { EventSink } from './events.js';
import { JsonMessageParser, type FramingResult } from './framing.js';
import { toQmpJson, type JsonValue } from './json-writer.js';
import type { CommandRegistry, SessionControl } from './registry.js';

export const QMP_REQ_QUEUE_LEN_MAX = 8;

/** A transport's view of one client: text out, bytes in, flow control. */
export interface Connection {
  readonly description: string;
  /** Sends one message (the transport adds CRLF or frames it). */
  send(text: string): void;
  close(): void;
  pauseInput(): void;
  resumeInput(): void;
}

export interface SessionOptions {
  registry: CommandRegistry;
  greeting: () => JsonValue;
  validateReplies: boolean;
  log: Logger;
  onClosed: (session: QmpSession) => void;
}

export class QmpSession implements EventSink, SessionControl {
  private mode: 'negotiation' | 'command' = 'negotiation';
  private oobEnabled = false;
  private readonly queue: FramingResult[] = [];
  private serving = false;
  private suspended = false;
  private pending: Buffer[] = [];
  private closed = false;
  private readonly parser = new JsonMessageParser((r) => this.onMessage(r));

  constructor(
    private readonly conn: Connection,
    private readonly opts: SessionOptions,
  ) {
    this.send(opts.greeting());
  }

  get negotiated(): boolean {
    return this.mode === 'command';
  }

  enterCommandMode(capabilities: string[]): void {
    this.mode = 'command';
    this.oobEnabled = capabilities.includes('oob');
  }

  /** Bytes from the transport. */
  feed(chunk: Buffer): void {
    if (this.closed) return;
    if (this.suspended) {
      this.pending.push(chunk);
      return;
    }
    const used = this.parser.feed(chunk);
    if (used < chunk.length) this.pending.unshift(chunk.subarray(used));
  }

  sendEvent(message: { [key: string]: JsonValue }): void {
    this.send(message);
  }

  /** The transport lost the client. */
  closedByPeer(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    this.pending = [];
    this.opts.onClosed(this);
  }

  close(): void {
    this.closedByPeer();
    this.conn.close();
  }

  private send(message: JsonValue): void {
    if (this.closed) return;
    const text = toQmpJson(message);
    this.opts.log.debug({ out: text }, 'qmp out');
    this.conn.send(text);
  }

  private onMessage(result: FramingResult): void {
    if (result.value !== undefined) this.opts.log.debug({ in: toQmpJson(result.value) }, 'qmp in');
    if (result.value !== undefined && isOobRequest(result.value)) {
      void this.run(result).then((reply) => this.send(reply));
      return;
    }
    this.queue.push(result);
    const limit = this.oobEnabled ? QMP_REQ_QUEUE_LEN_MAX : 1;
    if (this.queue.length >= limit) this.suspend();
    void this.serve();
  }

  private async run(result: FramingResult): Promise<Reply> {
    if (result.error !== undefined) return errorReply(Errors.parseError(result.error));
    try {
      return await dispatch(
        this.opts.registry,
        result.value,
        { allowOob: this.oobEnabled, negotiating: this.mode === 'negotiation', validateReplies: this.opts.validateReplies },
        { session: this, log: this.opts.log },
      );
    } catch (err) {
      // A handler bug must cost one request, never the daemon or the connection.
      this.opts.log.error({ err }, 'command failed unexpectedly');
      return errorReply(Errors.internal(err));
    }
  }

  /** Serves the in-band queue strictly in order, one request at a time. */
  private async serve(): Promise<void> {
    if (this.serving) return;
    this.serving = true;
    try {
      while (this.queue.length > 0 && !this.closed) {
        const reply = await this.run(this.queue[0]!);
        this.queue.shift();
        this.send(reply);
        if (this.suspended) this.resume();
      }
    } finally {
      this.serving = false;
    }
  }

  private suspend(): void {
    this.suspended = true;
    this.parser.stop();
    this.conn.pauseInput();
  }

  private resume(): void {
    this.suspended = false;
    const pending = this.pending;
    this.pending = [];
    for (let i = 0; i < pending.length; i++) {
      if (this.suspended) {
        this.pending.push(...pending.slice(i));
        return;
      }
      this.feed(pending[i]!);
    }
    if (!this.suspended) this.conn.resumeInput();
  }
}
