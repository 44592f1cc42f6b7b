/** QEMU 7.2 (Debian 12): the base every other profile is described against. */
import { OPTIONS_7_2 } from '../cli/qemu/option-table.js';
import { Command, RpMessage } from '../migration/stream/constants.js';
import { releaseMachines } from './machines.js';
import type { CapabilityCheck, MigCommandArgs, ParameterCheck, QemuProfile } from './profile.js';

/** mig_cmd_args[] of 7.2; ENABLE_COLO has no name there, so its messages say "(null)". */
export const MIG_COMMANDS_7_2: Readonly<Record<number, MigCommandArgs>> = {
  [Command.OPEN_RETURN_PATH]: { name: 'OPEN_RETURN_PATH', len: 0 },
  [Command.PING]: { name: 'PING', len: 4 },
  [Command.POSTCOPY_ADVISE]: { name: 'POSTCOPY_ADVISE', len: -1 },
  [Command.POSTCOPY_LISTEN]: { name: 'POSTCOPY_LISTEN', len: 0 },
  [Command.POSTCOPY_RUN]: { name: 'POSTCOPY_RUN', len: 0 },
  [Command.POSTCOPY_RAM_DISCARD]: { name: 'POSTCOPY_RAM_DISCARD', len: -1 },
  [Command.PACKAGED]: { name: 'PACKAGED', len: 4 },
  [Command.ENABLE_COLO]: { name: '(null)', len: 0 },
  [Command.POSTCOPY_RESUME]: { name: 'POSTCOPY_RESUME', len: 0 },
  [Command.RECV_BITMAP]: { name: 'RECV_BITMAP', len: -1 },
};

/** migrate_caps_check() of 7.2, in its order (block migration is not built into Debian's QEMU). */
const CAPABILITY_CHECKS: CapabilityCheck[] = [
  { fails: (c) => c.block!, message: 'QEMU compiled without old-style (blk/-b, inc/-i) block migration' },
  { fails: (c) => c['postcopy-preempt']! && !c['postcopy-ram'], message: 'Postcopy preempt requires postcopy-ram' },
  { fails: (c) => c['postcopy-preempt']! && c.compress!, message: 'Postcopy preempt not compatible with compress' },
  { fails: (c) => c.multifd! && c.compress!, message: 'Multifd is not compatible with compress' },
  {
    fails: (c) => c['zero-copy-send']! && (!c.multifd || c.compress! || c.xbzrle!),
    message: 'Zero copy only available for non-compressed non-TLS multifd migration',
  },
];

const num = (v: unknown): number => Number(v);
const range = (v: unknown, lo: number, hi: number): boolean => num(v) < lo || num(v) > hi;
const PAGE_SIZE = 4096n;
const badCache = (v: unknown): boolean => {
  const cache = v as bigint;
  return cache < PAGE_SIZE || (cache & (cache - 1n)) !== 0n;
};

/**
 * The checks 7.2 and 10.0 share (migrate_params_check), each a function of the merged set;
 * max_bandwidth > SIZE_MAX never fails with a 64-bit size_t and is left out.
 */
export const SHARED_PARAMETER_CHECKS = {
  throttleTrigger: { fails: (p) => range(p['throttle-trigger-threshold'], 1, 100), name: 'throttle_trigger_threshold', expects: 'an integer in the range of 1 to 100' },
  cpuInitial: { fails: (p) => range(p['cpu-throttle-initial'], 1, 99), name: 'cpu_throttle_initial', expects: 'an integer in the range of 1 to 99' },
  cpuIncrement: { fails: (p) => range(p['cpu-throttle-increment'], 1, 99), name: 'cpu_throttle_increment', expects: 'an integer in the range of 1 to 99' },
  downtime: { fails: (p) => (p['downtime-limit'] as bigint) > 2000n * 1000n, name: 'downtime_limit', expects: 'an integer in the range of 0 to (2000 * 1000) ms' },
  multifdChannels: { fails: (p) => num(p['multifd-channels']) < 1, name: 'multifd_channels', expects: 'a value between 1 and 255' },
  zlibLevel: { fails: (p) => num(p['multifd-zlib-level']) > 9, name: 'multifd_zlib_level', expects: 'a value between 0 and 9' },
  zstdLevel: { fails: (p) => num(p['multifd-zstd-level']) > 20, name: 'multifd_zstd_level', expects: 'a value between 0 and 20' },
  xbzrleCache: { fails: (p) => badCache(p['xbzrle-cache-size']), name: 'xbzrle_cache_size', expects: 'a power of two no less than the target page size' },
  maxCpuThrottle: {
    fails: (p) => num(p['max-cpu-throttle']) < num(p['cpu-throttle-initial']) || num(p['max-cpu-throttle']) > 99,
    name: 'max_cpu_throttle',
    expects: 'an integer in the range of cpu_throttle_initial to 99',
  },
  announceInitial: { fails: (p) => (p['announce-initial'] as bigint) > 100000n, name: 'announce_initial', expects: 'a value between 0 and 100000' },
  announceMax: { fails: (p) => (p['announce-max'] as bigint) > 100000n, name: 'announce_max', expects: 'a value between 0 and 100000' },
  announceRounds: { fails: (p) => (p['announce-rounds'] as bigint) > 1000n, name: 'announce_rounds', expects: 'a value between 0 and 1000' },
  announceStep: { fails: (p) => range(p['announce-step'], 1, 10000), name: 'announce_step', expects: 'a value between 0 and 10000' },
  zeroCopy: {
    fails: (p, c) => c['zero-copy-send']! && (p['multifd-compression'] !== 'none' || p['tls-creds'] !== ''),
    message: 'Zero copy only available for non-compressed non-TLS multifd migration',
  },
} satisfies Record<string, ParameterCheck>;

const S = SHARED_PARAMETER_CHECKS;
const PARAMETER_CHECKS: ParameterCheck[] = [
  { fails: (p) => num(p['compress-level']) > 9, name: 'compress_level', expects: 'a value between 0 and 9' },
  { fails: (p) => range(p['compress-threads'], 1, 255), name: 'compress_threads', expects: 'a value between 1 and 255' },
  { fails: (p) => range(p['decompress-threads'], 1, 255), name: 'decompress_threads', expects: 'a value between 1 and 255' },
  S.throttleTrigger, S.cpuInitial, S.cpuIncrement, S.downtime, S.multifdChannels, S.zlibLevel, S.zstdLevel, S.xbzrleCache,
  S.maxCpuThrottle, S.announceInitial, S.announceMax, S.announceRounds, S.announceStep, S.zeroCopy,
];

export const QEMU_7_2: QemuProfile = {
  id: '7.2',
  version: { major: 7, minor: 2, micro: 0 },
  copyright: 'Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers',
  complete: true,
  dataDir: 'qemu-7.2',
  // qmigd has only 7.2's own PC types here (7.2 keeps more, back to 1.x).
  machines: releaseMachines({
    release: '7.2', i440fx: [], q35: [],
    i440fxCpuMax: { latest: 255 }, q35CpuMax: { latest: 288 }, deprecated: { latest: false }, numaMemSupported: { latest: false },
  }),
  smp: {
    levels: ['sockets', 'dies', 'cores', 'threads'],
    foreignLevels: ['clusters'],
    foreignLevelError: "%s not supported by this machine's CPU topology",
  },
  unsupportedMachine: 'unsupported machine type',
  kvmModuleErrorReported: false,
  options: OPTIONS_7_2,
  qmp: { statusSinglestep: true, machineInfoAcpi: false },
  migration: {
    capabilities: [
      'xbzrle', 'rdma-pin-all', 'auto-converge', 'zero-blocks', 'compress', 'events', 'postcopy-ram', 'x-colo',
      'release-ram', 'block', 'return-path', 'pause-before-switchover', 'multifd', 'dirty-bitmaps',
      'postcopy-blocktime', 'late-block-activate', 'x-ignore-shared', 'validate-uuid', 'background-snapshot',
      'zero-copy-send', 'postcopy-preempt',
    ],
    // late-block-activate only delays activating block devices to `cont` (libvirt sets it on every
    // destination): qmigd has none, so doing it is doing nothing.
    implementedCapabilities: [
      'xbzrle', 'auto-converge', 'zero-blocks', 'events', 'return-path', 'pause-before-switchover', 'x-colo', 'multifd',
      'late-block-activate', 'postcopy-ram', 'postcopy-blocktime', 'postcopy-preempt',
    ],
    // MAX_THROTTLE, DEFAULT_MIGRATE_SET_DOWNTIME and the rest of migration.c's defaults.
    parameterDefaults: {
      'announce-initial': 50n,
      'announce-max': 550n,
      'announce-rounds': 5n,
      'announce-step': 100n,
      'compress-level': 1,
      'compress-threads': 8,
      'compress-wait-thread': true,
      'decompress-threads': 2,
      'throttle-trigger-threshold': 50,
      'cpu-throttle-initial': 20,
      'cpu-throttle-increment': 10,
      'cpu-throttle-tailslow': false,
      'tls-creds': '',
      'tls-hostname': '',
      'tls-authz': '',
      'max-bandwidth': 128n << 20n,
      'downtime-limit': 300n,
      'x-checkpoint-delay': 20000,
      'block-incremental': false,
      'multifd-channels': 2,
      'xbzrle-cache-size': 64n << 20n,
      'max-postcopy-bandwidth': 0n,
      'max-cpu-throttle': 99,
      'multifd-compression': 'none',
      'multifd-zlib-level': 1,
      'multifd-zstd-level': 1,
    },
    unimplementedParameterValues: {},
    uint64Parameters: [
      'announce-initial', 'announce-max', 'announce-rounds', 'announce-step', 'max-bandwidth', 'downtime-limit',
      'xbzrle-cache-size', 'max-postcopy-bandwidth',
    ],
    capabilityChecks: CAPABILITY_CHECKS,
    parameterChecks: PARAMETER_CHECKS,
    uriSchemes: ['tcp', 'unix', 'exec', 'fd'],
    uriParsedBeforeSetup: false,
    incomingEntersSetup: false,
    ramStatsDropped: [],
    ramTransferred: 'ram-records',
    blockMigrationOptions: true,
    seekableCapabilities: [],
    multiChannelCapabilities: [],
  },
  errors: {
    migratePauseNotPostcopy: 'migrate-pause is currently only supported during postcopy-active state',
    reqPages: {
      misaligned: (start, len) => `migrate_handle_rp_req_pages: Misaligned page request, start: ${start} len: ${len}`,
      noPreviousBlock: 'ram_save_queue_pages no previous block',
      noBlock: (name) => `ram_save_queue_pages no block '${name}'`,
      overrun: (start, len, blocklen) => `ram_save_queue_pages request overrun start=${start} len=${len} blocklen=${blocklen}`,
    },
    recovery: {
      invalidBlock: (name) => `migrate_handle_rp_recv_bitmap: invalid block name '${name}'`,
      sizeMismatch: (name, size, local) => `ram_dirty_bitmap_reload: ramblock '${name}' bitmap size mismatch (0x${size} != 0x${local})`,
      endMark: (name, mark) => `ram_dirty_bitmap_reload: ramblock '${name}' end mark incorrect: 0x${mark}`,
      resumeAck: (value) => `migrate_handle_rp_resume_ack: illegal resume_ack value ${value}`,
    },
    coloNotEnabled: "The feature 'colo' is not enabled",
    migrateUnknownProtocol: () => "Parameter 'uri' expects a valid migration protocol",
    backingStoreTooSmall: (_id, fileSize, size) => `backing store size 0x${fileSize} does not match 'size' option 0x${size}`,
  },
  hmp: {
    migrateGlobals: () =>
      'globals:\nstore-global-state: on\nonly-migratable: off\nsend-configuration: on\nsend-section-footer: on\ndecompress-error-check: on\nclear-bitmap-shift: 18\n',
    migrate: {
      argsType: 'detach:-d,blk:-b,inc:-i,resume:-r,uri:s',
      params: '[-d] [-b] [-i] [-r] uri',
      help:
        'migrate to URI (using -d to not wait for completion)' +
        '\n\t\t\t -b for migration without shared storage with full copy of disk' +
        '\n\t\t\t -i for migration without shared storage with incremental copy of disk (base image shared between src and destination)' +
        '\n\t\t\t -r to resume a paused migration',
    },
    // 7.2 prints neither multifd-zlib-level nor multifd-zstd-level.
    parameterLines: [
      ['announce-initial', 'ms'], ['announce-max', 'ms'], ['announce-rounds', 'plain'], ['announce-step', 'ms'],
      ['compress-level', 'plain'], ['compress-threads', 'plain'], ['compress-wait-thread', 'onOff'], ['decompress-threads', 'plain'],
      ['throttle-trigger-threshold', 'plain'], ['cpu-throttle-initial', 'plain'], ['cpu-throttle-increment', 'plain'],
      ['cpu-throttle-tailslow', 'onOff'], ['max-cpu-throttle', 'plain'], ['tls-creds', 'quoted'], ['tls-hostname', 'quoted'],
      ['max-bandwidth', 'bytes/second'], ['downtime-limit', 'ms'], ['x-checkpoint-delay', 'ms'], ['block-incremental', 'onOff'],
      ['multifd-channels', 'plain'], ['multifd-compression', 'text'], ['xbzrle-cache-size', 'bytes'], ['max-postcopy-bandwidth', 'plain'],
      ['tls-authz', 'quoted'], ['block-bitmap-mapping', 'mapping'],
    ],
  },
  stream: {
    commands: MIG_COMMANDS_7_2,
    sectionIds: { timer: 0, ram: 2, globalstate: 4 },
    globalState: { runstateBytes: 100, suspendFlags: false },
    vmDescriptionConfiguration: false,
    rpMessageMax: RpMessage.RESUME_ACK + 1,
    rpFailure: 'closes-channel',
    ramStreamEnd: { errno: 'EINVAL', line: 'Unknown combination of migration flags: 0x0' },
    enableColoNeedsXColo: false,
    validatedCapabilities: ['x-ignore-shared'],
  },
  extraRunStateTransitions: {},
  precopy: { deviceWithoutPause: false, coloFrom: 'active', completionErrorReported: false },
  postcopy: { switchoverState: 'postcopy-active', resumeSetupState: false, cancel: 'stuck-when-paused', pauseFrom: ['postcopy-active'],
    failedRecovery: 'source-stuck-destination-crashes', downtime: 'at-switch' },
  // 7.2 has none of these properties (-global refuses them): no SWITCHOVER_START, multifd syncs
  // at every RAM EOS, zero pages are found on the main thread, the preempt channel opens with the
  // migration.
  migrationGlobals: {
    defaults: { 'send-switchover-start': false, 'multifd-flush-after-each-section': true, 'zero-page-detection': 'legacy', 'x-preempt-pre-7-2': true },
    settable: [],
    compat: [],
  },
  multifd: {
    channelOrder: 'first',
    flushRecord: false,
    zeroPages: false,
    bareSync: false,
    compressionMask: 0xe,
    compressionCheckedWithPages: false,
    deviceStatePackets: false,
    greetingCounted: false,
    channelErrorReported: false,
    badChannelIsFatal: false,
    texts: {
      // 7.2 checks the id against the channel count but prints the versions (sic).
      channelIdTooBig: () => 'multifd: received channel version 1 expected 1',
      packetMagic: (got, want) => `multifd: received packet magic ${got} and expected magic ${want}`,
      packetVersion: (got, want) => `multifd: received packet version ${got} and expected version ${want}`,
      pagesAlloc: (got, max) => `multifd: received packet with size ${got} and expected a size of ${max}`,
      normalPages: (got, max) => `multifd: received packet with ${got} pages and expected maximum pages are ${max}`,
      zeroPages: () => '', // 7.2 has no zero pages in packets
      compression: (_channel, flags) => `multifd: flags received 0x${flags.toString(16)} and expected 0x0 (no compression)`,
      emptyDeviceState: '',
    },
  },
};
