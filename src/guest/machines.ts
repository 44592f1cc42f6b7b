/**
 * The machine types qmigd can pretend to be, as QEMU 7.2's query-machines describes them. What
 * they change here is small: the name carried in (and checked against) the migration stream,
 * the RAM block's default name, how many CPUs they take, and whether the guest has ACPI (so
 * that system_powerdown shuts it down). Everything else of a PC is hardware qmigd does not emulate.
 */
/** QEMU's accelerators qmigd can report running with (it runs no guest code under either). */
export type Accelerator = 'kvm' | 'tcg';

export interface MachineType {
  /** The full versioned name, as a migration stream carries it. */
  name: string;
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
}

export const MACHINES: readonly MachineType[] = [
  {
    name: 'pc-i440fx-7.2', alias: 'pc', description: 'Standard PC (i440FX + PIIX, 1996)', isDefault: true, qomType: 'pc-i440fx-7.2-machine', defaultRamId: 'pc.ram',
    cpuMax: 255, hotpluggableCpus: true, numaMemSupported: false, defaultCpuType: 'qemu64-x86_64-cpu', acpi: true,
  },
  {
    name: 'pc-q35-7.2', alias: 'q35', description: 'Standard PC (Q35 + ICH9, 2009)', qomType: 'pc-q35-7.2-machine', defaultRamId: 'pc.ram',
    cpuMax: 288, hotpluggableCpus: true, numaMemSupported: false, defaultCpuType: 'qemu64-x86_64-cpu', acpi: true,
  },
  {
    name: 'none', description: 'empty machine', qomType: 'none-machine', defaultRamId: 'ram',
    cpuMax: 1, hotpluggableCpus: false, numaMemSupported: false, acpi: false,
  },
];

/** A machine type by name or alias; undefined for one qmigd does not have. */
export function findMachine(name: string): MachineType | undefined {
  return MACHINES.find((m) => m.name === name || m.alias === name);
}

/** -machine without a type: QEMU's default machine. */
export const DEFAULT_MACHINE = MACHINES.find((m) => m.isDefault)!;
