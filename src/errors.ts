/**
 * The one catalog of errors qmigd reports over QMP, with QEMU 7.2's classes and exact texts
 * (qapi/qmp-dispatch.c, monitor/qmp.c, include/qapi/qmp/qerror.h, qobject/json-*.c).
 * Later layers (migration, COLO) add their entries here, not in their own modules.
 */
export type QmpErrorClass = 'GenericError' | 'CommandNotFound' | 'DeviceNotActive' | 'DeviceNotFound' | 'KVMMissingCap';

export class QmpError extends Error {
  constructor(
    readonly errorClass: QmpErrorClass,
    readonly desc: string,
  ) {
    super(desc);
    this.name = 'QmpError';
  }
}

const generic = (desc: string): QmpError => new QmpError('GenericError', desc);
const notFound = (desc: string): QmpError => new QmpError('CommandNotFound', desc);

export const Errors = {
  // JSON input: the text comes from the parser, already in QEMU's words
  parseError: (text: string) => generic(text),
  internal: (err: unknown) => generic(`qmigd internal error: ${describe(err)}`),

  // Request shape (qmp_dispatch_check_obj and friends)
  notAnObject: () => generic('QMP input must be a JSON object'),
  memberMustBeString: (member: string) => generic(`QMP input member '${member}' must be a string`),
  memberClash: (member: string, other: string) => generic(`QMP input member '${member}' clashes with '${other}'`),
  argumentsMustBeObject: () => generic("QMP input member 'arguments' must be an object"),
  memberUnexpected: (member: string) => generic(`QMP input member '${member}' is unexpected`),
  lacksExecute: () => generic("QMP input lacks member 'execute'"),
  commandNotFound: (command: string) => notFound(`The command ${command} has not been found`),
  noOob: (command: string) => generic(`The command ${command} does not support OOB`),

  // Capabilities negotiation (monitor/qmp.c, monitor/qmp-cmds-control.c)
  expectingNegotiation: () => notFound("Expecting capabilities negotiation with 'qmp_capabilities'"),
  negotiationComplete: () => notFound('Capabilities negotiation is already complete, command ignored'),
  capabilityNotAvailable: (names: string[]) => generic(`Capability ${names.join(', ')} not available`),

  // Argument visitor (qapi/qobject-input-visitor.c, qapi/qapi-visit-core.c)
  parameterMissing: (name: string) => generic(`Parameter '${name}' is missing`),
  parameterUnexpected: (name: string) => generic(`Parameter '${name}' is unexpected`),
  parameterType: (name: string, expected: string) => generic(`Invalid parameter type for '${name}', expected: ${expected}`),
  parameterExpects: (name: string, type: string) => generic(`Parameter '${name}' expects ${type}`),
  parameterEnum: (name: string, value: string) => generic(`Parameter '${name}' does not accept value '${value}'`),
  parameterValue: (name: string, expected: string) => generic(`Parameter '${name}' expects ${expected}`),

  // Run state and misc commands
  migratePauseNotPostcopy: () => generic('migrate-pause is currently only supported during postcopy-active state'),
  yankInstanceNotFound: () => new QmpError('DeviceNotFound', 'Instance not found'),
  resetRequired: () => generic('Resetting the Virtual Machine is required'),
  migrationNotFinalized: () => generic('Migration is not finalized yet'),
  couldNotOpen: (path: string, reason: string) => generic(`could not open '${path}': ${reason}`),
} as const;

/** For logs and CLI messages: one line, no stack. */
export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
