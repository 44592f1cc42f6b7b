/**
 * The machine types qmigd can pretend to be, as its release's query-machines describes them
 * (each profile lists its own: src/profiles). What
 * they change here is small: the name carried in (and checked against) the migration stream,
 * the RAM block's default name, how many CPUs they take, and whether the guest has ACPI (so
 * that system_powerdown shuts it down). Everything else of a PC is hardware qmigd does not emulate.
 */
import { activeProfile } from '../profiles/index.js';

/** QEMU's accelerators qmigd can report running with (it runs no guest code under either). */
export type Accelerator = 'kvm' | 'tcg';

export interface MachineType {
  /** The full versioned name, as a migration stream carries it. */
  name: string;
  /** A versioned type's release ("9.2"): which of hw_compat_X_Y's entries it takes. */
  version?: string;
  alias?: string;
  /** As -machine help describes it. */
  description: string;
  /** The machine `-machine` picks without a type. */
  isDefault?: boolean;
  /** The QOM type of the machine object (qom-list-properties, qom-list-types). */
  qomType: string;
  /** The RAM block's name without -machine memory-backend (QEMU's default_ram_id). */
  defaultRamId: string;
  cpuMax: number;
  hotpluggableCpus: boolean;
  numaMemSupported: boolean;
  defaultCpuType?: string;
  /** A guest OS on it answers ACPI power button presses by powering off. */
  acpi: boolean;
  /** Marked deprecated by -machine help and query-machines (old versioned types). */
  deprecated: boolean;
}

/** The machine types of the release this process is. */
export function machines(): readonly MachineType[] {
  return activeProfile().machines;
}

/** A machine type by name or alias; undefined for one qmigd does not have. */
export function findMachine(name: string): MachineType | undefined {
  return machines().find((m) => m.name === name || m.alias === name);
}

/** -machine without a type: QEMU's default machine. */
export function defaultMachine(): MachineType {
  return machines().find((m) => m.isDefault)!;
}
