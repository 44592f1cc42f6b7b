/** QEMU 10.0 (Debian 13): what differs from 7.2. */
import { Command, RpMessage } from '../migration/stream/constants.js';
import type { QemuProfile } from './profile.js';
import { MIG_COMMANDS_7_2 } from './qemu-7.2.js';

export const QEMU_10_0: QemuProfile = {
  id: '10.0',
  version: { major: 10, minor: 0, micro: 0 },
  copyright: 'Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers',
  schemaOverlay: 'qemu-10.0',
  complete: false,
  qmp: { statusSinglestep: false },
  stream: {
    // 9.2 added SWITCHOVER_START; ENABLE_COLO is still nameless ("(null) received with bad length").
    commands: { ...MIG_COMMANDS_7_2, [Command.SWITCHOVER_START]: { name: 'SWITCHOVER_START', len: 0 } },
    switchoverStart: true,
    // Block migration (section 1 in 7.2) is gone, so ram and what follows moved down by one.
    sectionIds: { timer: 0, ram: 1, globalstate: 3 },
    globalState: { runstateBytes: 32, suspendFlags: true },
    vmDescriptionConfiguration: true,
    rpMessageMax: RpMessage.SWITCHOVER_ACK + 1,
    fileUri: true,
  },
  precopy: { deviceWithoutPause: true },
};
