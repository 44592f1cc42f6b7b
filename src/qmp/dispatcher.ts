/**
 * One request → one reply, following qmp_dispatch() step by step: the request's shape (members
 * checked in QDict order, as QEMU walks them), the command lookup, OOB permission, the
 * arguments, the handler, and the `id` copied into whatever comes back.
 */
import { faults } from '../faults/faults.js';
import { Errors, QmpError } from '../errors.js';
import { PreSerialized, qdictOrder, type JsonValue } from './json-writer.js';
import { QNum, toPlain, type QObject } from './qobject.js';
import type { CommandContext, CommandRegistry } from './registry.js';
import type { CommandSchema } from './schema.js';

export type Reply = { [key: string]: JsonValue };

export interface DispatchOptions {
  /** OOB was negotiated on this monitor, so `exec-oob` is a known member. */
  allowOob: boolean;
  /** Still in capabilities negotiation: only qmp_capabilities exists. */
  negotiating: boolean;
  /** Check every reply against its return schema (tests turn this on). */
  validateReplies: boolean;
}

export function errorReply(err: QmpError, id?: QObject): Reply {
  const reply: Reply = { error: { class: err.errorClass, desc: err.desc } };
  if (id !== undefined) reply.id = id;
  return reply;
}

/** qmp_is_oob(): such a request skips the in-band queue, whatever was negotiated. */
export function isOobRequest(request: QObject): boolean {
  return request instanceof Map && request.has('exec-oob') && !request.has('execute');
}

export async function dispatch(
  registry: CommandRegistry,
  request: QObject,
  opts: DispatchOptions,
  ctx: CommandContext,
): Promise<Reply> {
  if (!(request instanceof Map)) return errorReply(Errors.notAnObject());
  const id = request.get('id');
  try {
    const { command, oob } = checkRequestShape(request, opts.allowOob);
    const cmd = opts.negotiating && command !== 'qmp_capabilities' ? undefined : registry.get(command);
    if (!cmd) throw Errors.commandNotFound(command);
    if (oob && !cmd.schema.allowOob) throw Errors.noOob(command);
    const rawArgs = request.get('arguments') ?? new Map<string, QObject>();
    const args = checkArguments(registry, cmd.schema, rawArgs as Map<string, QObject>);
    if (faults.any) await faults.beforeCommand(command);
    const ret = await cmd.handler(args, ctx);
    if (opts.validateReplies && !cmd.schema.validateReturn(forValidation(ret))) {
      throw new QmpError('GenericError', `qmigd bug: reply to ${command} does not match its schema: ${registry.schemas.describeErrors(cmd.schema.validateReturn)}`);
    }
    const reply: Reply = { return: ret };
    if (id !== undefined) reply.id = id;
    return reply;
  } catch (err) {
    if (!(err instanceof QmpError)) throw err;
    // monitor_qmp_dispatch(): before negotiation, every CommandNotFound says what is expected.
    const shown = opts.negotiating && err.errorClass === 'CommandNotFound' ? Errors.expectingNegotiation() : err;
    return errorReply(shown, id);
  }
}

function checkRequestShape(request: Map<string, QObject>, allowOob: boolean): { command: string; oob: boolean } {
  let execKey: string | undefined;
  for (const key of qdictOrder([...request.keys()])) {
    const value = request.get(key)!;
    if (key === 'execute' || (key === 'exec-oob' && allowOob)) {
      if (typeof value !== 'string') throw Errors.memberMustBeString(key);
      if (execKey) throw Errors.memberClash(key, execKey);
      execKey = key;
    } else if (key === 'arguments') {
      if (!(value instanceof Map)) throw Errors.argumentsMustBeObject();
    } else if (key !== 'id') {
      throw Errors.memberUnexpected(key);
    }
  }
  if (!execKey) throw Errors.lacksExecute();
  return { command: request.get(execKey) as string, oob: execKey === 'exec-oob' };
}

function checkArguments(registry: CommandRegistry, schema: CommandSchema, args: Map<string, QObject>) {
  // ajv is the fast check; the QAPI visitor both explains a failure in QEMU's words and applies
  // what JSON Schema cannot express (1.0 is not an integer, negative unsigned numbers wrap).
  const plainOk = schema.validateArguments(toPlain(args));
  const module = registry.schemas.moduleId(schema.module);
  const visited = registry.visitor.visitArguments(schema.arguments, module, args);
  if (!plainOk) {
    throw new QmpError('GenericError', `Invalid arguments: ${registry.schemas.describeErrors(schema.validateArguments)}`);
  }
  return visited;
}

/** ajv knows nothing of bigint or QNum: give it the numbers they stand for. */
export function forValidation(value: unknown): unknown {
  if (typeof value === 'bigint') return Number(value);
  if (value instanceof PreSerialized) return forValidation(value.value);
  if (value instanceof Map) return toPlain(value as QObject);
  if (Array.isArray(value)) return value.map(forValidation);
  if (value && typeof value === 'object') {
    if (value instanceof QNum) return value.toNumber();
    return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined).map(([k, v]) => [k, forValidation(v)]));
  }
  return value;
}
