/** QEMU 10.0 (Debian 13): what differs from 7.2. */
import { laterOptions, OPTIONS_7_2 } from '../cli/qemu/option-table.js';
import { Command, RpMessage } from '../migration/stream/constants.js';
import type { CapabilityCheck, ParameterCheck, QemuProfile } from './profile.js';
import { releaseMachines } from './machines.js';
import { MIG_COMMANDS_7_2, SHARED_PARAMETER_CHECKS as S } from './qemu-7.2.js';

/**
 * migrate_caps_check() of 10.0, in its order, for what qmigd can meet (compress and block are
 * gone from the enum, so the schema refuses them). Zero copy now also asks the parameters
 * (multifd compression, TLS); dirty-limit needs KVM's dirty ring, which -M none (and qmigd) has not.
 */
const CAPABILITY_CHECKS: CapabilityCheck[] = [
  {
    fails: (c, _old, p) => c['zero-copy-send']! && (!c.multifd || c.xbzrle! || p['multifd-compression'] !== 'none' || p['tls-creds'] !== ''),
    message: 'Zero copy only available for non-compressed non-TLS multifd migration',
  },
  { fails: (c) => c['postcopy-preempt']! && !c['postcopy-ram'], message: 'Postcopy preempt requires postcopy-ram' },
  { fails: (c) => c['switchover-ack']! && !c['return-path'], message: "Capability 'switchover-ack' requires capability 'return-path'" },
  { fails: (c) => c['dirty-limit']! && c['auto-converge']!, message: 'dirty-limit conflicts with auto-converge either of then available currently' },
  { fails: (c) => c['dirty-limit']!, message: "dirty-limit requires KVM with accelerator property 'dirty-ring-size' set" },
  { fails: (c) => c.multifd! && c.xbzrle!, message: 'Multifd is not compatible with xbzrle' },
  { fails: (c) => c['mapped-ram']! && c.xbzrle!, message: 'Mapped-ram migration is incompatible with xbzrle' },
  { fails: (c) => c['mapped-ram']! && c['postcopy-ram']!, message: 'Mapped-ram migration is incompatible with postcopy' },
];

const num = (v: unknown): number => Number(v);
/** migrate_params_check() of 10.0: the compress checks are gone; qatzip and the dirty limit are new. */
const PARAMETER_CHECKS: ParameterCheck[] = [
  S.throttleTrigger, S.cpuInitial, S.cpuIncrement, S.downtime, S.multifdChannels, S.zlibLevel,
  { fails: (p) => num(p['multifd-qatzip-level']) < 1 || num(p['multifd-qatzip-level']) > 9, name: 'multifd_qatzip_level', expects: 'a value between 1 and 9' },
  S.zstdLevel, S.xbzrleCache, S.maxCpuThrottle, S.announceInitial, S.announceMax, S.announceRounds, S.announceStep,
  {
    fails: (p) => (p['x-vcpu-dirty-limit-period'] as bigint) < 1n || (p['x-vcpu-dirty-limit-period'] as bigint) > 1000n,
    name: 'x-vcpu-dirty-limit-period',
    expects: 'a value between 1 and 1000',
  },
  { fails: (p) => (p['vcpu-dirty-limit'] as bigint) < 1n, message: "Parameter 'vcpu_dirty_limit' must be greater than 1 MB/s" },
  S.zeroCopy,
];

/** The older PC versions 10.0 keeps (both families; Q35 also has a 4.0.1), newest first. */
const PC_VERSIONS = [
  '9.2', '9.1', '9.0', '8.2', '8.1', '8.0', '7.2', '7.1', '7.0', '6.2', '6.1', '6.0', '5.2', '5.1', '5.0',
  '4.2', '4.1', '4.0', '3.1', '3.0', '2.12', '2.11', '2.10', '2.9', '2.8', '2.7', '2.6', '2.5', '2.4',
];

export const QEMU_10_0: QemuProfile = {
  id: '10.0',
  version: { major: 10, minor: 0, micro: 0 },
  copyright: 'Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers',
  schemaOverlay: 'qemu-10.0',
  complete: true,
  dataDir: 'qemu-10.0',
  // As 10.0's -machine help and query-machines list them (isapc, microvm and x-remote left out).
  machines: releaseMachines({
    release: '10.0',
    i440fx: PC_VERSIONS,
    q35: [...PC_VERSIONS.slice(0, PC_VERSIONS.indexOf('4.0')), '4.0.1', ...PC_VERSIONS.slice(PC_VERSIONS.indexOf('4.0'))],
    i440fxCpuMax: { latest: 255 },
    // pc_q35_machine_options() raised max_cpus in 8.1 and 9.0; 2.8 had raised it to 288.
    q35CpuMax: { latest: 4096, upTo: [['8.2', 1024], ['8.0', 288], ['2.7', 255]] },
    deprecated: { latest: false, upTo: [['7.0', true]] },
    numaMemSupported: { latest: false, upTo: [['5.0', true]] },
  }),
  smp: {
    levels: ['sockets', 'dies', 'modules', 'cores', 'threads'],
    foreignLevels: ['drawers', 'books', 'clusters'],
    foreignLevelError: "%s > 1 not supported by this machine's CPU topology",
  },
  unsupportedMachine: 'unsupported machine type: "%s"',
  kvmModuleErrorReported: true,
  // Compared with 7.2's -help, each tried on 10.0.13: -no-acpi became -machine acpi=off, and
  // -async-teardown, -chroot and -runas moved into -run-with.
  options: laterOptions(OPTIONS_7_2, {
    removed: ['-async-teardown', '-audio-help', '-chroot', '-no-acpi', '-no-hpet', '-portrait', '-rotate', '-runas', '-singlestep'],
    addedWithArgument: ['-run-with', '-shim'],
    addedWithoutArgument: ['-jitdump', '-perfmap'],
  }),
  qmp: { statusSinglestep: false, machineInfoAcpi: true },
  migration: {
    capabilities: [
      'xbzrle', 'rdma-pin-all', 'auto-converge', 'zero-blocks', 'events', 'postcopy-ram', 'x-colo', 'release-ram',
      'return-path', 'pause-before-switchover', 'multifd', 'dirty-bitmaps', 'postcopy-blocktime', 'late-block-activate',
      'x-ignore-shared', 'validate-uuid', 'background-snapshot', 'zero-copy-send', 'postcopy-preempt', 'switchover-ack',
      'dirty-limit', 'mapped-ram',
    ],
    implementedCapabilities: [
      'xbzrle', 'auto-converge', 'zero-blocks', 'events', 'return-path', 'pause-before-switchover', 'x-colo', 'multifd',
      'late-block-activate', 'postcopy-ram', 'switchover-ack', 'mapped-ram', 'postcopy-blocktime', 'postcopy-preempt',
    ],
    // QEMU 10.0's defaults, as its query-migrate-parameters answers on a fresh -M none.
    parameterDefaults: {
      'announce-initial': 50n,
      'announce-max': 550n,
      'announce-rounds': 5n,
      'announce-step': 100n,
      'throttle-trigger-threshold': 50,
      'cpu-throttle-initial': 20,
      'cpu-throttle-increment': 10,
      'cpu-throttle-tailslow': false,
      'tls-creds': '',
      'tls-hostname': '',
      'tls-authz': '',
      'max-bandwidth': 128n << 20n,
      'avail-switchover-bandwidth': 0n,
      'downtime-limit': 300n,
      'x-checkpoint-delay': 20000,
      'multifd-channels': 2,
      'xbzrle-cache-size': 64n << 20n,
      'max-postcopy-bandwidth': 0n,
      'max-cpu-throttle': 99,
      'multifd-compression': 'none',
      'multifd-zlib-level': 1,
      'multifd-qatzip-level': 1,
      'multifd-zstd-level': 1,
      'x-vcpu-dirty-limit-period': 1000n,
      'vcpu-dirty-limit': 1n,
      'mode': 'normal',
      'zero-page-detection': 'multifd',
      'direct-io': false,
    },
    // CPR reboots or hands over a QEMU process; qmigd has no such thing to do.
    unimplementedParameterValues: { mode: 'normal' },
    uint64Parameters: [
      'announce-initial', 'announce-max', 'announce-rounds', 'announce-step', 'max-bandwidth', 'avail-switchover-bandwidth',
      'downtime-limit', 'xbzrle-cache-size', 'max-postcopy-bandwidth', 'x-vcpu-dirty-limit-period', 'vcpu-dirty-limit',
    ],
    capabilityChecks: CAPABILITY_CHECKS,
    parameterChecks: PARAMETER_CHECKS,
    uriSchemes: ['tcp', 'unix', 'exec', 'fd', 'file'],
    uriParsedBeforeSetup: true,
    incomingEntersSetup: true,
    ramStatsDropped: ['skipped'],
    ramTransferred: 'stream',
    blockMigrationOptions: false,
    seekableCapabilities: ['mapped-ram'],
    multiChannelCapabilities: ['multifd', 'postcopy-preempt'],
  },
  errors: {
    migratePauseNotPostcopy: 'migrate-pause is currently only supported during postcopy-active or postcopy-recover state',
    reqPages: {
      misaligned: (start, len) => `MIG_RP_MSG_REQ_PAGES: Misaligned page request, start:${start} len: ${len}`,
      noPreviousBlock: 'MIG_RP_MSG_REQ_PAGES has no previous block',
      noBlock: (name) => `MIG_RP_MSG_REQ_PAGES has no block '${name}'`,
      overrun: (start, len, blocklen) => `MIG_RP_MSG_REQ_PAGES request overrun, start=${start} len=${len} blocklen=${blocklen}`,
    },
    recovery: {
      invalidBlock: (name) => `MIG_RP_MSG_RECV_BITMAP has invalid block name '${name}'`,
      sizeMismatch: (name, size, local) => `ramblock '${name}' bitmap size mismatch (0x${size} != 0x${local})`,
      endMark: (name, mark) => `ramblock '${name}' end mark incorrect: 0x${mark}`,
      resumeAck: (value) => `illegal resume_ack value ${value}`,
    },
    coloNotEnabled: 'VM is not in COLO mode',
    migrateUnknownProtocol: (uri) => `unknown migration protocol: ${uri}`,
    backingStoreTooSmall: (id, fileSize, size) => `${id} backing store size 0x${fileSize} is too small for 'size' option 0x${size} plus 'offset' option 0x0`,
  },
  hmp: {
    migrateGlobals: (g) =>
      'globals:\nstore-global-state: on\nonly-migratable: off\nsend-configuration: on\nsend-section-footer: on\n' +
      `send-switchover-start: ${g['send-switchover-start'] ? 'on' : 'off'}\nclear-bitmap-shift: 18\n`,
    migrate: {
      argsType: 'detach:-d,resume:-r,uri:s',
      params: '[-d] [-r] uri',
      help: 'migrate to URI (using -d to not wait for completion)\n\t\t\t -r to resume a paused postcopy migration',
    },
    parameterLines: [
      ['announce-initial', 'ms'], ['announce-max', 'ms'], ['announce-rounds', 'plain'], ['announce-step', 'ms'],
      ['throttle-trigger-threshold', 'plain'], ['cpu-throttle-initial', 'plain'], ['cpu-throttle-increment', 'plain'],
      ['cpu-throttle-tailslow', 'onOff'], ['max-cpu-throttle', 'plain'], ['tls-creds', 'quoted'], ['tls-hostname', 'quoted'],
      ['max-bandwidth', 'bytes/second'], ['avail-switchover-bandwidth', 'bytes/second'], ['downtime-limit', 'ms'],
      ['x-checkpoint-delay', 'ms'], ['multifd-channels', 'plain'], ['multifd-compression', 'text'], ['zero-page-detection', 'text'],
      ['xbzrle-cache-size', 'bytes'], ['max-postcopy-bandwidth', 'plain'], ['tls-authz', 'quoted'], ['block-bitmap-mapping', 'mapping'],
      ['x-vcpu-dirty-limit-period', 'ms'], ['vcpu-dirty-limit', 'MB/s'], ['mode', 'text'], ['direct-io', 'onOff'],
    ],
  },
  stream: {
    // 9.2 added SWITCHOVER_START; ENABLE_COLO is still nameless ("(null) received with bad length").
    commands: { ...MIG_COMMANDS_7_2, [Command.SWITCHOVER_START]: { name: 'SWITCHOVER_START', len: 0 } },
    // Block migration (section 1 in 7.2) is gone, so ram and what follows moved down by one.
    sectionIds: { timer: 0, ram: 1, globalstate: 3 },
    globalState: { runstateBytes: 32, suspendFlags: true },
    vmDescriptionConfiguration: true,
    rpMessageMax: RpMessage.SWITCHOVER_ACK + 1,
    rpFailure: 'error-desc',
    ramStreamEnd: { errno: 'EIO', line: 'Getting RAM address failed' },
    enableColoNeedsXColo: true,
    validatedCapabilities: ['x-ignore-shared', 'mapped-ram'],
  },
  // 9.0: a guest suspended at its source goes from paused straight back to suspended on cont.
  extraRunStateTransitions: { paused: ['suspended'] },
  precopy: { deviceWithoutPause: true, coloFrom: 'device', completionErrorReported: true },
  postcopy: { switchoverState: 'device', resumeSetupState: true, cancel: 'refused', pauseFrom: ['postcopy-active', 'postcopy-recover'],
    failedRecovery: 'pauses', downtime: 'until-completion' },
  migrationGlobals: {
    defaults: { 'send-switchover-start': true, 'multifd-flush-after-each-section': false, 'zero-page-detection': 'multifd', 'x-preempt-pre-7-2': false },
    settable: ['send-switchover-start', 'multifd-flush-after-each-section', 'zero-page-detection', 'x-preempt-pre-7-2'],
    // hw/core/machine.c's hw_compat_X_Y, the migration object's entries that change the stream,
    // as 10.0's query-machines lists them under compat-props. Left out: 9.2's
    // multifd-clean-tls-termination (TLS, which qmigd has not).
    compat: [
      { upTo: '9.2', set: { 'send-switchover-start': false } },
      { upTo: '8.2', set: { 'zero-page-detection': 'legacy' } },
      { upTo: '8.0', set: { 'multifd-flush-after-each-section': true } },
      { upTo: '7.2', set: { 'x-preempt-pre-7-2': true } },
    ],
  },
  multifd: {
    channelOrder: 'magic',
    flushRecord: true,
    zeroPages: true,
    bareSync: true,
    compressionMask: 0x3e,
    compressionCheckedWithPages: true,
    deviceStatePackets: true,
    greetingCounted: true,
    channelErrorReported: true,
    badChannelIsFatal: true,
    texts: {
      // 10.0 lets an id equal to the count through and crashes on it; qmigd refuses it too.
      channelIdTooBig: (id, channels) => `multifd: received channel id ${id} is greater than number of channels ${channels}`,
      packetMagic: (got, want) => `multifd: received packet magic ${got}, expected ${want}`,
      packetVersion: (got, want) => `multifd: received packet version ${got}, expected ${want}`,
      pagesAlloc: (got, max) => `multifd: received packet with ${got} pages, expected ${max}`,
      normalPages: (got, max) => `multifd: received packet with ${got} non-zero pages, which exceeds maximum expected pages ${max}`,
      zeroPages: (got, max) => `multifd: received packet with ${got} zero pages, expected maximum ${max}`,
      compression: (channel, flags) => `multifd ${channel}: flags received ${flags.toString(16)} flags expected 0`,
      emptyDeviceState: 'multifd: received empty device state packet',
    },
  },
};
