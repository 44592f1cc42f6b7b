/**
 * The machine types a release has, as its query-machines and `-machine help` describe them:
 * every release keeps `none`, and its two PCs carry its version in their names.
 */
import type { MachineType } from '../guest/machines.js';

export const NONE_MACHINE: MachineType = {
  name: 'none', description: 'empty machine', qomType: 'none-machine', defaultRamId: 'ram',
  cpuMax: 1, hotpluggableCpus: false, numaMemSupported: false, acpi: false,
};

/** i440FX (the default, alias pc) and Q35 (alias q35) of `release`; only Q35's CPU limit moves. */
export function releaseMachines(release: string, q35CpuMax: number): MachineType[] {
  const pc = { defaultRamId: 'pc.ram', hotpluggableCpus: true, numaMemSupported: false, defaultCpuType: 'qemu64-x86_64-cpu', acpi: true };
  return [
    { ...pc, name: `pc-i440fx-${release}`, alias: 'pc', description: 'Standard PC (i440FX + PIIX, 1996)', isDefault: true, qomType: `pc-i440fx-${release}-machine`, cpuMax: 255 },
    { ...pc, name: `pc-q35-${release}`, alias: 'q35', description: 'Standard PC (Q35 + ICH9, 2009)', qomType: `pc-q35-${release}-machine`, cpuMax: q35CpuMax },
    NONE_MACHINE,
  ];
}
