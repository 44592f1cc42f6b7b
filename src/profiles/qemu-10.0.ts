/** QEMU 10.0 (Debian 13): what differs from 7.2. */
import type { QemuProfile } from './profile.js';

export const QEMU_10_0: QemuProfile = {
  id: '10.0',
  version: { major: 10, minor: 0, micro: 0 },
  copyright: 'Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers',
  schemaOverlay: 'qemu-10.0',
  complete: false,
  qmp: { statusSinglestep: false },
};
