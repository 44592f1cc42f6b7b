/**
 * Migration capabilities and parameters: QEMU 7.2's names, defaults, combination rules and
 * range checks with their exact messages (migration.c migrate_caps_check, migrate_params_check).
 */
import { Errors } from '../errors.js';
import { activeProfile } from '../profiles/index.js';
import type { ZeroPageDetection } from '../profiles/profile.js';

/** Every 7.2 capability, in QAPI order (query-migrate-capabilities lists them so). */
export const CAPABILITIES = [
  'xbzrle', 'rdma-pin-all', 'auto-converge', 'zero-blocks', 'compress', 'events', 'postcopy-ram', 'x-colo',
  'release-ram', 'block', 'return-path', 'pause-before-switchover', 'multifd', 'dirty-bitmaps',
  'postcopy-blocktime', 'late-block-activate', 'x-ignore-shared', 'validate-uuid', 'background-snapshot',
  'zero-copy-send', 'postcopy-preempt',
] as const;
export type Capability = (typeof CAPABILITIES)[number];
export type Capabilities = Record<Capability, boolean>;

/**
 * What qmigd really does; the rest are refused rather than silently accepted. late-block-activate
 * only delays activating block devices to `cont` (libvirt sets it on every destination): qmigd
 * has none, so doing it is doing nothing.
 */
export const IMPLEMENTED_CAPABILITIES: ReadonlySet<Capability> = new Set([
  'xbzrle', 'auto-converge', 'zero-blocks', 'events', 'return-path', 'pause-before-switchover', 'x-colo', 'multifd',
  'late-block-activate',
]);

export function defaultCapabilities(): Capabilities {
  return Object.fromEntries(CAPABILITIES.map((c) => [c, false])) as Capabilities;
}

/**
 * migrate_caps_check() for the merged set, then qmigd's own refusal of what it lacks. QEMU's
 * messages come first where QEMU itself would refuse (block migration is not built in).
 */
export function checkCapabilities(caps: Capabilities, old: Capabilities): void {
  if (caps.block) throw Errors.blockMigrationNotBuilt();
  if (caps['postcopy-preempt'] && !caps['postcopy-ram']) throw Errors.capabilityCombination('Postcopy preempt requires postcopy-ram');
  if (caps['postcopy-preempt'] && caps.compress) throw Errors.capabilityCombination('Postcopy preempt not compatible with compress');
  if (caps.multifd && caps.compress) throw Errors.capabilityCombination('Multifd is not compatible with compress');
  if (caps['zero-copy-send'] && (!caps.multifd || caps.compress || caps.xbzrle)) {
    throw Errors.capabilityCombination('Zero copy only available for non-compressed non-TLS multifd migration');
  }
  for (const c of CAPABILITIES) {
    // Turning off something we lack is always fine; turning it on is refused.
    if (caps[c] && !old[c] && !IMPLEMENTED_CAPABILITIES.has(c)) throw Errors.capabilityNotImplemented(c);
  }
}

/**
 * The parameters QAPI types `size` or `uint64`: QEMU's visitor takes any 64-bit value there (a
 * negative one wraps), so they are kept as bigints, and every use says how it reads them.
 */
export const UINT64_PARAMETERS = [
  'announce-initial', 'announce-max', 'announce-rounds', 'announce-step', 'max-bandwidth', 'downtime-limit',
  'xbzrle-cache-size', 'max-postcopy-bandwidth',
] as const;
const UINT64_MAX = 2n ** 64n - 1n;

export interface MigrationParameters {
  'announce-initial': bigint;
  'announce-max': bigint;
  'announce-rounds': bigint;
  'announce-step': bigint;
  'compress-level': number;
  'compress-threads': number;
  'compress-wait-thread': boolean;
  'decompress-threads': number;
  'throttle-trigger-threshold': number;
  'cpu-throttle-initial': number;
  'cpu-throttle-increment': number;
  'cpu-throttle-tailslow': boolean;
  'tls-creds': string;
  'tls-hostname': string;
  'tls-authz': string;
  'max-bandwidth': bigint;
  'downtime-limit': bigint;
  'x-checkpoint-delay': number;
  'block-incremental': boolean;
  'multifd-channels': number;
  'xbzrle-cache-size': bigint;
  'max-postcopy-bandwidth': bigint;
  'max-cpu-throttle': number;
  'multifd-compression': string;
  'multifd-zlib-level': number;
  'multifd-zstd-level': number;
  'block-bitmap-mapping'?: unknown[];
  /** 9.0+ only (profile.multifd.zeroPageDetection); absent, zero pages are found as 7.2 finds them. */
  'zero-page-detection'?: ZeroPageDetection;
}

/** MAX_THROTTLE, DEFAULT_MIGRATE_SET_DOWNTIME and the rest of migration.c's defaults. */
export function defaultParameters(): MigrationParameters {
  return {
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
    ...(activeProfile().multifd.zeroPageDetection ? { 'zero-page-detection': activeProfile().multifd.zeroPageDetection } : {}),
  };
}

export const MAX_DOWNTIME_MS = 2000n * 1000n;
const PAGE_SIZE = 4096n;

/** migrate_params_check(), in QEMU's order, on the merged set. */
export function checkParameters(p: MigrationParameters, caps: Capabilities): void {
  const expects = (name: string, what: string): never => {
    throw Errors.parameterValue(name, what);
  };
  if (p['compress-level'] > 9) expects('compress_level', 'a value between 0 and 9');
  if (p['compress-threads'] < 1 || p['compress-threads'] > 255) expects('compress_threads', 'a value between 1 and 255');
  if (p['decompress-threads'] < 1 || p['decompress-threads'] > 255) expects('decompress_threads', 'a value between 1 and 255');
  const range = (v: number, lo: number, hi: number): boolean => v < lo || v > hi;
  if (range(p['throttle-trigger-threshold'], 1, 100)) {
    expects('throttle_trigger_threshold', 'an integer in the range of 1 to 100');
  }
  if (range(p['cpu-throttle-initial'], 1, 99)) expects('cpu_throttle_initial', 'an integer in the range of 1 to 99');
  if (range(p['cpu-throttle-increment'], 1, 99)) expects('cpu_throttle_increment', 'an integer in the range of 1 to 99');
  // max_bandwidth > SIZE_MAX: never, with a 64-bit size_t; kept for the day a profile differs.
  if (p['max-bandwidth'] > UINT64_MAX) {
    expects('max_bandwidth', 'an integer in the range of 0 to (18446744073709551615UL) bytes/second');
  }
  if (p['downtime-limit'] > MAX_DOWNTIME_MS) {
    expects('downtime_limit', 'an integer in the range of 0 to (2000 * 1000) ms');
  }
  if (p['multifd-channels'] < 1) expects('multifd_channels', 'a value between 1 and 255');
  if (p['multifd-zlib-level'] > 9) expects('multifd_zlib_level', 'a value between 0 and 9');
  if (p['multifd-zstd-level'] > 20) expects('multifd_zstd_level', 'a value between 0 and 20');
  const cache = p['xbzrle-cache-size'];
  if (cache < PAGE_SIZE || (cache & (cache - 1n)) !== 0n) {
    expects('xbzrle_cache_size', 'a power of two no less than the target page size');
  }
  if (p['max-cpu-throttle'] < p['cpu-throttle-initial'] || p['max-cpu-throttle'] > 99) {
    expects('max_cpu_throttle', 'an integer in the range of cpu_throttle_initial to 99');
  }
  if (p['announce-initial'] > 100000) expects('announce_initial', 'a value between 0 and 100000');
  if (p['announce-max'] > 100000) expects('announce_max', 'a value between 0 and 100000');
  if (p['announce-rounds'] > 1000) expects('announce_rounds', 'a value between 0 and 1000');
  if (p['announce-step'] < 1 || p['announce-step'] > 10000) expects('announce_step', 'a value between 0 and 10000');
  if (caps['zero-copy-send'] && (p['multifd-compression'] !== 'none' || p['tls-creds'] !== '')) {
    throw Errors.capabilityCombination('Zero copy only available for non-compressed non-TLS multifd migration');
  }
}

/** migrate-set-parameters input: null TLS names become "" (StrOrNull); 64-bit values bigints. */
export function mergeParameters(current: MigrationParameters, changes: Record<string, unknown>): MigrationParameters {
  const next: Record<string, unknown> = { ...current };
  for (const [k, v] of Object.entries(changes)) {
    next[k] = v === null ? '' : (UINT64_PARAMETERS as readonly string[]).includes(k) ? BigInt.asUintN(64, BigInt(v as number | bigint)) : v;
  }
  return next as unknown as MigrationParameters;
}
