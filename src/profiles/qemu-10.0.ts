/** QEMU 10.0 (Debian 13): what differs from 7.2. */
import { laterOptions, OPTIONS_7_2 } from '../cli/qemu/option-table.js';
import type { QemuProfile } from './profile.js';
import { NONE_MACHINE } from './qemu-7.2.js';

export const QEMU_10_0: QemuProfile = {
  id: '10.0',
  version: { major: 10, minor: 0, micro: 0 },
  copyright: 'Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers',
  schemaOverlay: 'qemu-10.0',
  complete: false,
  dataDir: 'qemu-10.0',
  machines: [
    {
      name: 'pc-i440fx-10.0', alias: 'pc', description: 'Standard PC (i440FX + PIIX, 1996)', isDefault: true, qomType: 'pc-i440fx-10.0-machine', defaultRamId: 'pc.ram',
      cpuMax: 255, hotpluggableCpus: true, numaMemSupported: false, defaultCpuType: 'qemu64-x86_64-cpu', acpi: true,
    },
    {
      name: 'pc-q35-10.0', alias: 'q35', description: 'Standard PC (Q35 + ICH9, 2009)', qomType: 'pc-q35-10.0-machine', defaultRamId: 'pc.ram',
      cpuMax: 4096, hotpluggableCpus: true, numaMemSupported: false, defaultCpuType: 'qemu64-x86_64-cpu', acpi: true,
    },
    NONE_MACHINE,
  ],
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
};
