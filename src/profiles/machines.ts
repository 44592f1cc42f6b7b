/**
 * The machine types a release has, as its query-machines and `-machine help` describe them:
 * every release keeps `none`; its two PC families (i440FX, alias pc, and Q35, alias q35) have a
 * type per release back to the oldest it still keeps. What differs between a family's versions
 * is data here: tables of "up to version X: value", as QEMU's pc_*_machine_options() and
 * hw_compat_X_Y set them.
 */
import type { MachineType } from '../guest/machines.js';

export const NONE_MACHINE: MachineType = {
  name: 'none', description: 'empty machine', qomType: 'none-machine', defaultRamId: 'ram',
  cpuMax: 1, hotpluggableCpus: false, numaMemSupported: false, acpi: false, deprecated: false,
};

/** Compares versions as numbers, part by part ("2.12" > "2.4", "4.0.1" > "4.0"). */
export function compareVersions(a: string, b: string): number {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** A value that changed with the machine types: `[upTo, value]` pairs newest first, else `latest`. */
export interface ByVersion<T> {
  readonly latest: T;
  readonly upTo?: ReadonlyArray<readonly [string, T]>;
}

/** The value for machine types of `version`: the oldest `upTo` entry that still covers it. */
export function atVersion<T>(table: ByVersion<T>, version: string): T {
  let value = table.latest;
  for (const [upTo, v] of table.upTo ?? []) if (compareVersions(version, upTo) <= 0) value = v;
  return value;
}

export interface PcMachines {
  /** The release: its types are the default (pc) and q35. */
  readonly release: string;
  /** The older versions each family keeps, i440FX's and Q35's (which has a 4.0.1). */
  readonly i440fx: readonly string[];
  readonly q35: readonly string[];
  readonly i440fxCpuMax: ByVersion<number>;
  readonly q35CpuMax: ByVersion<number>;
  /** -machine help and query-machines mark them deprecated. */
  readonly deprecated: ByVersion<boolean>;
  readonly numaMemSupported: ByVersion<boolean>;
}

/**
 * The release's machine types in -machine help's order: each family newest name first as QEMU
 * sorts them (by name, backwards: 9.2 … 2.4, 2.12, 2.11, 2.10, then 10.0), then `none`.
 */
export function releaseMachines(m: PcMachines): MachineType[] {
  const pc = { defaultRamId: 'pc.ram', hotpluggableCpus: true, defaultCpuType: 'qemu64-x86_64-cpu', acpi: true };
  const family = (prefix: string, versions: readonly string[], alias: string, description: string, cpuMax: ByVersion<number>): MachineType[] =>
    [m.release, ...versions]
      .map((version): MachineType => ({
        ...pc,
        name: `${prefix}-${version}`,
        version,
        ...(version === m.release ? { alias } : {}),
        ...(version === m.release && alias === 'pc' ? { isDefault: true } : {}),
        description,
        qomType: `${prefix}-${version}-machine`,
        cpuMax: atVersion(cpuMax, version),
        numaMemSupported: atVersion(m.numaMemSupported, version),
        deprecated: atVersion(m.deprecated, version),
      }))
      .sort((a, b) => (a.qomType < b.qomType ? 1 : a.qomType > b.qomType ? -1 : 0));
  return [
    ...family('pc-i440fx', m.i440fx, 'pc', 'Standard PC (i440FX + PIIX, 1996)', m.i440fxCpuMax),
    ...family('pc-q35', m.q35, 'q35', 'Standard PC (Q35 + ICH9, 2009)', m.q35CpuMax),
    NONE_MACHINE,
  ];
}
