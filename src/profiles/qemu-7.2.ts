/** QEMU 7.2 (Debian 12): the base every other profile is described against. */
import type { QemuProfile } from './profile.js';

export const QEMU_7_2: QemuProfile = {
  id: '7.2',
  version: { major: 7, minor: 2, micro: 0 },
  copyright: 'Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers',
  complete: true,
  qmp: { statusSinglestep: true },
};
