/** QEMU 10.0 (Debian 13): what differs from 7.2. */
import type { QemuProfile } from './profile.js';

export const QEMU_10_0: QemuProfile = {
  id: '10.0',
  version: { major: 10, minor: 0, micro: 0 },
  copyright: 'Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers',
  schemaOverlay: 'qemu-10.0',
  complete: false,
  qmp: { statusSinglestep: false },
  acceptsSwitchoverStart: true,
  multifd: {
    channelOrder: 'magic',
    sync: 'round',
    flushRecord: true,
    zeroPages: true,
    bareSync: true,
    compressionMask: 0x3e,
    compressionCheckedWithPages: true,
    deviceStatePackets: true,
    greetingCounted: true,
    channelErrorReported: true,
    badChannelIsFatal: true,
    zeroPageDetection: 'multifd',
    texts: {
      // 10.0 lets an id equal to the count through and crashes on it; qmigd refuses it too.
      channelIdTooBig: (id, channels) => `multifd: received channel id ${id} is greater than number of channels ${channels}`,
      packetMagic: (got, want) => `multifd: received packet magic ${got}, expected ${want}`,
      packetVersion: (got, want) => `multifd: received packet version ${got}, expected ${want}`,
      pagesAlloc: (got, max) => `multifd: received packet with ${got} pages, expected ${max}`,
      normalPages: (got, max) => `multifd: received packet with ${got} non-zero pages, which exceeds maximum expected pages ${max}`,
      zeroPages: (got, max) => `multifd: received packet with ${got} zero pages, expected maximum ${max}`,
      compression: (channel, flags) => `multifd ${channel}: flags received ${flags.toString(16)} flags expected 0`,
      emptyDeviceState: 'multifd: received empty device state packet',
    },
  },
};
