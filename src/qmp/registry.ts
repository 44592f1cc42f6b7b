/**
 * The command table. Each handler is registered by name and meets its schema here, once: a
 * command without a schema, or a schema without a command, stops the daemon at start-up.
 */
import type { Logger } from 'pino';
import type { MonitorFds } from './descriptors.js';
import type { JsonValue } from './json-writer.js';
import { QapiVisitor } from './qapi-visitor.js';
import type { CommandSchema, SchemaSet } from './schema.js';

/** What a handler learns about the monitor that called it. */
export interface CommandContext {
  readonly session: SessionControl;
  readonly log: Logger;
  /** The descriptors the calling monitor's client passed, and the monitor's named ones. */
  readonly fds: MonitorFds;
}

/** The part of a session a command may act on (qmp_capabilities). */
export interface SessionControl {
  readonly negotiated: boolean;
  /** Leaves capabilities negotiation, with the capabilities the client enabled. */
  enterCommandMode(capabilities: string[]): void;
}

// Handlers see arguments already checked against their schema, so each declares its own shape.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Handler = (args: any, ctx: CommandContext) => JsonValue | Promise<JsonValue>;

export interface Command {
  readonly name: string;
  readonly schema: CommandSchema;
  readonly handler: Handler;
}

export class CommandRegistry {
  private readonly commands = new Map<string, Command>();
  private readonly closedListeners: Array<() => void> = [];
  readonly visitor: QapiVisitor;

  /** `testHooks`: serve the commands whose schema marks them x-qmigd-test-hook. */
  constructor(
    readonly schemas: SchemaSet,
    private readonly testHooks = false,
  ) {
    this.visitor = new QapiVisitor(schemas);
  }

  /** Registers a command; a test hook is left out unless test hooks were asked for. */
  register(name: string, handler: Handler): void {
    const schema = this.schemas.commands.get(name);
    if (!schema) throw new Error(`command ${name} has no schema in schema/`);
    if (this.commands.has(name)) throw new Error(`command ${name} registered twice`);
    if (schema.testHook && !this.testHooks) return;
    this.commands.set(name, { name, schema, handler });
  }

  /**
   * For a command some release's schema has and another's not (the overlay removed it): served
   * only where the running profile's schema has it, and otherwise unknown, as in that QEMU.
   */
  registerIfInSchema(name: string, handler: Handler): void {
    if (this.schemas.commands.has(name)) this.register(name, handler);
  }

  get(name: string): Command | undefined {
    return this.commands.get(name);
  }

  /**
   * After every client disconnect, once it no longer counts as connected (QEMU's
   * CHR_EVENT_CLOSED, where monitor_fdsets_cleanup() runs).
   */
  onMonitorClosed(listener: () => void): void {
    this.closedListeners.push(listener);
  }

  monitorClosed(): void {
    for (const listener of this.closedListeners) listener();
  }

  /** Registration order. */
  names(): string[] {
    return [...this.commands.keys()];
  }

  /** Every schema'd command must have a handler: nothing is advertised that cannot run. */
  assertComplete(): void {
    const served = [...this.schemas.commands.values()].filter((c) => this.testHooks || !c.testHook);
    const missing = served.map((c) => c.name).filter((n) => !this.commands.has(n));
    if (missing.length) throw new Error(`commands with a schema but no handler: ${missing.join(', ')}`);
  }
}
