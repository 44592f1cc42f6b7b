/**
 * The one catalog of errors qmigd reports over QMP, with QEMU 7.2's classes and exact texts
 * (qapi/qmp-dispatch.c, monitor/qmp.c, include/qapi/qmp/qerror.h, qobject/json-*.c).
 * Later layers (migration, COLO) add their entries here, not in their own modules. A text that
 * changed between releases comes from the running profile (activeProfile().errors).
 */
import { activeProfile } from './profiles/index.js';

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

  // QOM and qdev (qom/qom-qmp-cmds.c, softmmu/qdev-monitor.c)
  classNotFound: (type: string) => new QmpError('DeviceNotFound', `Class '${type}' not found`),
  deviceNotFound: (name: string) => new QmpError('DeviceNotFound', `Device '${name}' not found`),
  notADeviceType: () => generic("Parameter 'typename' expects a non-abstract device type"),
  invalidOptionName: (name: string) => generic(`invalid option name: ${name}`),

  // Run state and misc commands
  migratePauseNotPostcopy: () => generic(activeProfile().errors.migratePauseNotPostcopy),
  yankInstanceNotFound: () => new QmpError('DeviceNotFound', 'Instance not found'),
  resetRequired: () => generic('Resetting the Virtual Machine is required'),
  migrationNotFinalized: () => generic('Migration is not finalized yet'),
  fileOpen: (path: string, reason: string) => generic(`Could not open '${path}': ${reason}`),
  ioError: () => generic('An IO error has occurred'),
  invalidParameter: (name: string) => generic(`Invalid parameter '${name}'`),
  noFdSupplied: () => generic('No file descriptor supplied via SCM_RIGHTS'),
  fdNameNotFound: (name: string) => generic(`File descriptor named '${name}' not found`),
  // Descriptor passing beyond QEMU: qmigd bounds what clients make it hold (QEMU does not).
  monitorFdLimit: (limit: number) => generic(`qmigd keeps at most ${limit} named file descriptors per monitor; close some with closefd`),
  fdsetFdLimit: (limit: number) => generic(`qmigd keeps at most ${limit} file descriptors in fdsets; remove some with remove-fd`),

  // Migration (migration/migration.c, include/qapi/qmp/qerror.h)
  migrationActive: () => generic("There's a migration process in progress"),
  guestWaitingIncoming: () => generic('Guest is waiting for an incoming migration'),
  pausedByPreviousMigration: () => generic("Can't migrate the vm that was paused due to previous migration"),
  noPausedMigration: () => generic('Cannot resume if there is no paused migration'),
  blockOptionsIncompatible: () => generic('Command options are incompatible with current migration capabilities'),
  blockMigrationNotBuilt: () => generic('QEMU compiled without old-style (blk/-b, inc/-i) block migration'),
  invalidMigrationProtocol: (uri: string) => generic(activeProfile().errors.migrateUnknownProtocol(uri)),
  unknownMigrationProtocol: (uri: string) => generic(`unknown migration protocol: ${uri}`),
  illegalIncomingState: (state: string) => generic(`Illegal migration incoming state: ${state}`),
  incomingAlreadyStarted: () => generic('The incoming migration has already been started'),
  incomingNotSpecified: () => generic("'-incoming' was not specified on the command line"),
  migrationNotInState: (state: string) => generic(`Migration not in expected state: ${state}`),
  postcopyNotEnabled: () => generic('Enable postcopy with migrate_set_capability before the start of migration'),
  recoverNotPaused: () => generic('Migrate recover can only be run when postcopy is paused.'),
  postcopyCannotCancel: () => generic('Postcopy migration in progress, cannot cancel.'),
  postcopyNotStarted: () => generic('Postcopy must be started after migration has been started'),
  fdNotFound: (name: string) => generic(`File descriptor named '${name}' has not been found`),
  invalidFdNumber: (text: string) => generic(`Invalid file descriptor number '${text}'`),
  capabilityCombination: (text: string) => generic(text),
  capabilityNotImplemented: (cap: string) => generic(`Migration capability '${cap}' is not implemented by qmigd`),
  parameterValueNotImplemented: (name: string, value: string) => generic(`Migration parameter '${name}' value '${value}' is not implemented by qmigd`),
  // migrate and migrate-incoming with channels (8.2's migration_channel_parse_input and friends)
  needUriOrChannels: () => generic("need either 'uri' or 'channels' argument"),
  channelListOneMain: () => generic("Channel list must have only one entry, for type 'main'"),
  channelListMoreThanOne: (type: string) => generic(`Channel list has more than one ${type} entry`),
  channelListNoMain: () => generic('Channel list has no main entry'),
  fileUriBadOffset: (text: string, reason: string) => generic(`file URI has bad offset ${text}: ${reason}`),
  // file: has no transport in qmigd yet (the migration stream's file format is another piece of work).
  legacyDowntimeRange: () => generic("Parameter 'downtime_limit' expects an integer in the range of 0 to 2000 seconds"),
  migrationChannel: (message: string) => generic(message),
  // migration_channels_and_transport_compatible() (9.0+): mapped-ram on a socket, pipe or command.
  seekableTransport: () => generic('Migration requires seekable transport (e.g. file)'),
  multiChannelTransport: () => generic('Migration requires multi-channel URIs (e.g. tcp)'),
  // migrate with mapped-ram and a multifd compression method (10.0), multifd on or not.
  mappedRamCompression: () => generic('Cannot use compression with mapped-ram'),
  // qemu_fork() refused (-sandbox on,spawn=deny): 7.2's seccomp filter kills QEMU outright here;
  // qmigd answers with the error qemu_fork() reports when fork() fails, and keeps running.
  cannotFork: () => generic('cannot fork child process: Operation not permitted'),

  // COLO (migration/colo-failover.c, migration/colo.c; QERR_FEATURE_DISABLED)
  coloNotEnabled: () => generic(activeProfile().errors.coloNotEnabled),
  coloFailoverActive: () => generic('COLO failover is already activated'),
  replicationFailoverOnlyForStop: () => generic("Parameter 'failover' is only for stopping replication"),
} as const;

/** For logs and CLI messages: one line, no stack. */
export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
