/**
 * The migration object's properties that change the stream, as one daemon has them for its
 * life: the release's defaults, then its machine type's compat (hw_compat_X_Y, for the types
 * of older releases), then `-global migration.NAME=VALUE` in command-line order, as QEMU applies
 * them when it creates the migration object. What each one changes: profile.ts, MigrationGlobals.
 */
import type { MachineType } from '../guest/machines.js';
import { compareVersions } from '../profiles/machines.js';
import type { MigrationGlobals, QemuProfile, ZeroPageDetection } from '../profiles/profile.js';

export type { MigrationGlobals } from '../profiles/profile.js';

/** A -global QEMU refuses: the message is what QEMU prints after "PROG: ". */
export class GlobalError extends Error {}

/** One -global: the driver it names, its property and the value, as QEMU splits them. */
export interface GlobalSetting {
  driver: string;
  property: string;
  value: string;
}

/**
 * qemu_global_option(): `driver.property=value`, or `driver=D,property=P,value=V`. Undefined for
 * what fits neither (QEMU's option parser reports those; qmigd leaves them, as other drivers').
 */
export function parseGlobal(text: string): GlobalSetting | undefined {
  const short = /^([^.=]{1,63})\.([^=]{1,63})=(.*)$/s.exec(text);
  if (short) return { driver: short[1]!, property: short[2]!, value: short[3]! };
  const parts = new Map(text.split(',').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as const));
  const driver = parts.get('driver');
  const property = parts.get('property');
  if (driver === undefined || property === undefined) return undefined;
  return { driver, property, value: parts.get('value') ?? '' };
}

/** What a machine type starts with: the defaults and every compat entry that covers its version. */
export function machineGlobals(profile: QemuProfile, machine: MachineType | undefined): MigrationGlobals {
  const { defaults, compat } = profile.migrationGlobals;
  const version = machine?.version;
  let globals: MigrationGlobals = { ...defaults };
  // Newest first, so an older release's entry (applied later) wins where two set one property.
  for (const entry of compat) {
    if (version !== undefined && compareVersions(version, entry.upTo) <= 0) globals = { ...globals, ...entry.set };
  }
  return globals;
}

const TRUE = ['on', 'yes', 'true', 'y'];
const FALSE = ['off', 'no', 'false', 'n'];
const ZERO_PAGE_DETECTION: readonly ZeroPageDetection[] = ['none', 'legacy', 'multifd'];

/**
 * `globals` with the -globals for the migration object applied in order. Only the properties
 * modelled here are read; others of the migration object, and other drivers, are left alone.
 */
export function applyGlobals(profile: QemuProfile, globals: MigrationGlobals, settings: readonly GlobalSetting[]): MigrationGlobals {
  let out = globals;
  for (const s of settings) {
    if (s.driver !== 'migration' || !(s.property in out)) continue;
    const refuse = (why: string): never => {
      throw new GlobalError(`can't apply global ${s.driver}.${s.property}=${s.value}: ${why}`);
    };
    const name = s.property as keyof MigrationGlobals;
    if (!profile.migrationGlobals.settable.includes(name)) refuse(`Property '${s.driver}.${s.property}' not found`);
    if (name === 'zero-page-detection') {
      if (!ZERO_PAGE_DETECTION.includes(s.value as ZeroPageDetection)) refuse(`Parameter '${name}' does not accept value '${s.value}'`);
      out = { ...out, [name]: s.value as ZeroPageDetection };
    } else {
      if (!TRUE.includes(s.value) && !FALSE.includes(s.value)) refuse(`Parameter '${name}' expects 'on' or 'off'`);
      out = { ...out, [name]: TRUE.includes(s.value) };
    }
  }
  return out;
}
