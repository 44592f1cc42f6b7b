/**
 * Migration capabilities and parameters: the running release's names, defaults, combination
 * rules and range checks with their exact messages (migrate_caps_check, migrate_params_check),
 * all read from the profile (src/profiles), so that 7.2 and 10.0 differ as data only.
 */
import { Errors } from '../errors.js';
import { activeProfile } from '../profiles/index.js';
import type { MigrationGlobals, ParameterValue, ZeroPageDetection } from '../profiles/profile.js';

/** Every capability some release has; a profile lists its own (activeProfile().migration.capabilities). */
export type Capability =
  | 'xbzrle' | 'rdma-pin-all' | 'auto-converge' | 'zero-blocks' | 'compress' | 'events' | 'postcopy-ram' | 'x-colo'
  | 'release-ram' | 'block' | 'return-path' | 'pause-before-switchover' | 'multifd' | 'dirty-bitmaps'
  | 'postcopy-blocktime' | 'late-block-activate' | 'x-ignore-shared' | 'validate-uuid' | 'background-snapshot'
  | 'zero-copy-send' | 'postcopy-preempt' | 'switchover-ack' | 'dirty-limit' | 'mapped-ram';
/** Every capability of every release, false unless set: a release's checks may ask about any. */
export type Capabilities = Record<Capability, boolean>;

/** The running release's capabilities, in QAPI order. */
export function capabilityNames(): readonly Capability[] {
  return activeProfile().migration.capabilities as readonly Capability[];
}

export function defaultCapabilities(): Capabilities {
  const all: Capability[] = [
    'xbzrle', 'rdma-pin-all', 'auto-converge', 'zero-blocks', 'compress', 'events', 'postcopy-ram', 'x-colo',
    'release-ram', 'block', 'return-path', 'pause-before-switchover', 'multifd', 'dirty-bitmaps', 'postcopy-blocktime',
    'late-block-activate', 'x-ignore-shared', 'validate-uuid', 'background-snapshot', 'zero-copy-send',
    'postcopy-preempt', 'switchover-ack', 'dirty-limit', 'mapped-ram',
  ];
  return Object.fromEntries(all.map((c) => [c, false])) as Capabilities;
}

/**
 * migrate_caps_check() for the merged set, then qmigd's own refusal of what it lacks. QEMU's
 * messages come first where QEMU itself would refuse.
 */
export function checkCapabilities(caps: Capabilities, old: Capabilities, params: MigrationParameters): void {
  const m = activeProfile().migration;
  const values = params as unknown as Record<string, ParameterValue | undefined>;
  for (const check of m.capabilityChecks) if (check.fails(caps, old, values)) throw Errors.capabilityCombination(check.message);
  for (const c of m.capabilities as readonly Capability[]) {
    // Turning off something we lack is always fine; turning it on is refused.
    if (caps[c] && !old[c] && !m.implementedCapabilities.includes(c)) throw Errors.capabilityNotImplemented(c);
  }
}

/**
 * The parameters of every release. Those QAPI types `size` or `uint64` are bigints (QEMU's
 * visitor takes any 64-bit value there, a negative one wraps), and every use says how it reads
 * them. A release has the members its profile's defaults name; the others are absent.
 */
export interface MigrationParameters {
  'announce-initial': bigint;
  'announce-max': bigint;
  'announce-rounds': bigint;
  'announce-step': bigint;
  'compress-level'?: number;
  'compress-threads'?: number;
  'compress-wait-thread'?: boolean;
  'decompress-threads'?: number;
  'throttle-trigger-threshold': number;
  'cpu-throttle-initial': number;
  'cpu-throttle-increment': number;
  'cpu-throttle-tailslow': boolean;
  'tls-creds': string;
  'tls-hostname': string;
  'tls-authz': string;
  'max-bandwidth': bigint;
  'avail-switchover-bandwidth'?: bigint;
  'downtime-limit': bigint;
  'x-checkpoint-delay': number;
  'block-incremental'?: boolean;
  'multifd-channels': number;
  'xbzrle-cache-size': bigint;
  'max-postcopy-bandwidth': bigint;
  'max-cpu-throttle': number;
  'multifd-compression': string;
  'multifd-zlib-level': number;
  'multifd-qatzip-level'?: number;
  'multifd-zstd-level': number;
  'block-bitmap-mapping'?: unknown[];
  'x-vcpu-dirty-limit-period'?: bigint;
  'vcpu-dirty-limit'?: bigint;
  mode?: string;
  /** none, legacy or multifd (10.0); absent under 7.2, which always detects zero pages as legacy. */
  'zero-page-detection'?: ZeroPageDetection;
  'direct-io'?: boolean;
}

/**
 * The running release's defaults, in QAPI member order; zero-page-detection (9.0+) starts as the
 * migration object's property has it (a machine type's compat or -global may change it).
 */
export function defaultParameters(globals?: MigrationGlobals): MigrationParameters {
  const p = { ...activeProfile().migration.parameterDefaults } as unknown as MigrationParameters;
  if (globals && p['zero-page-detection'] !== undefined) p['zero-page-detection'] = globals['zero-page-detection'];
  return p;
}

export const MAX_DOWNTIME_MS = 2000n * 1000n;

/** migrate_params_check(), in QEMU's order, on the merged set; then what qmigd cannot honour. */
export function checkParameters(p: MigrationParameters, caps: Capabilities): void {
  const m = activeProfile().migration;
  const values = p as unknown as Record<string, ParameterValue | undefined>;
  for (const check of m.parameterChecks) {
    if (!check.fails(values, caps)) continue;
    throw check.message !== undefined ? Errors.capabilityCombination(check.message) : Errors.parameterValue(check.name!, check.expects!);
  }
  for (const [name, only] of Object.entries(m.unimplementedParameterValues)) {
    if (values[name] !== undefined && values[name] !== only) throw Errors.parameterValueNotImplemented(name, String(values[name]));
  }
}

/** migrate-set-parameters input: null TLS names become "" (StrOrNull); 64-bit values bigints. */
export function mergeParameters(current: MigrationParameters, changes: Record<string, unknown>): MigrationParameters {
  const uint64 = activeProfile().migration.uint64Parameters;
  const next: Record<string, unknown> = { ...current };
  for (const [k, v] of Object.entries(changes)) {
    next[k] = v === null ? '' : uint64.includes(k) ? BigInt.asUintN(64, BigInt(v as number | bigint)) : v;
  }
  return next as unknown as MigrationParameters;
}
