/** QEMU 7.2 (Debian 12): the base every other profile is described against. */
import { Command, RpMessage } from '../migration/stream/constants.js';
import type { MigCommandArgs, QemuProfile } from './profile.js';

/** mig_cmd_args[] of 7.2; ENABLE_COLO has no name there, so its messages say "(null)". */
export const MIG_COMMANDS_7_2: Readonly<Record<number, MigCommandArgs>> = {
  [Command.OPEN_RETURN_PATH]: { name: 'OPEN_RETURN_PATH', len: 0 },
  [Command.PING]: { name: 'PING', len: 4 },
  [Command.POSTCOPY_ADVISE]: { name: 'POSTCOPY_ADVISE', len: -1 },
  [Command.POSTCOPY_LISTEN]: { name: 'POSTCOPY_LISTEN', len: 0 },
  [Command.POSTCOPY_RUN]: { name: 'POSTCOPY_RUN', len: 0 },
  [Command.POSTCOPY_RAM_DISCARD]: { name: 'POSTCOPY_RAM_DISCARD', len: -1 },
  [Command.PACKAGED]: { name: 'PACKAGED', len: 4 },
  [Command.ENABLE_COLO]: { name: '(null)', len: 0 },
  [Command.POSTCOPY_RESUME]: { name: 'POSTCOPY_RESUME', len: 0 },
  [Command.RECV_BITMAP]: { name: 'RECV_BITMAP', len: -1 },
};

export const QEMU_7_2: QemuProfile = {
  id: '7.2',
  version: { major: 7, minor: 2, micro: 0 },
  copyright: 'Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers',
  complete: true,
  qmp: { statusSinglestep: true },
  stream: {
    commands: MIG_COMMANDS_7_2,
    switchoverStart: false,
    sectionIds: { timer: 0, ram: 2, globalstate: 4 },
    globalState: { runstateBytes: 100, suspendFlags: false },
    vmDescriptionConfiguration: false,
    rpMessageMax: RpMessage.RESUME_ACK + 1,
    fileUri: false,
  },
  precopy: { deviceWithoutPause: false },
};
