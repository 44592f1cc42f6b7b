/** QEMU 7.2 (Debian 12): the base every other profile is described against. */
import { OPTIONS_7_2 } from '../cli/qemu/option-table.js';
import type { QemuProfile } from './profile.js';

/** Every QEMU keeps `none`; a PC's versioned name is its release's. */
export const NONE_MACHINE = {
  name: 'none', description: 'empty machine', qomType: 'none-machine', defaultRamId: 'ram',
  cpuMax: 1, hotpluggableCpus: false, numaMemSupported: false, acpi: false,
} as const;

export const QEMU_7_2: QemuProfile = {
  id: '7.2',
  version: { major: 7, minor: 2, micro: 0 },
  copyright: 'Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers',
  complete: true,
  dataDir: 'qemu-7.2',
  machines: [
    {
      name: 'pc-i440fx-7.2', alias: 'pc', description: 'Standard PC (i440FX + PIIX, 1996)', isDefault: true, qomType: 'pc-i440fx-7.2-machine', defaultRamId: 'pc.ram',
      cpuMax: 255, hotpluggableCpus: true, numaMemSupported: false, defaultCpuType: 'qemu64-x86_64-cpu', acpi: true,
    },
    {
      name: 'pc-q35-7.2', alias: 'q35', description: 'Standard PC (Q35 + ICH9, 2009)', qomType: 'pc-q35-7.2-machine', defaultRamId: 'pc.ram',
      cpuMax: 288, hotpluggableCpus: true, numaMemSupported: false, defaultCpuType: 'qemu64-x86_64-cpu', acpi: true,
    },
    NONE_MACHINE,
  ],
  smp: {
    levels: ['sockets', 'dies', 'cores', 'threads'],
    foreignLevels: ['clusters'],
    foreignLevelError: "%s not supported by this machine's CPU topology",
  },
  unsupportedMachine: 'unsupported machine type',
  kvmModuleErrorReported: false,
  options: OPTIONS_7_2,
  qmp: { statusSinglestep: true, machineInfoAcpi: false },
};
