/** QEMU 7.2 (Debian 12): the base every other profile is described against. */
import type { QemuProfile } from './profile.js';

export const QEMU_7_2: QemuProfile = {
  id: '7.2',
  version: { major: 7, minor: 2, micro: 0 },
  copyright: 'Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers',
  complete: true,
  qmp: { statusSinglestep: true },
  acceptsSwitchoverStart: false,
  multifd: {
    channelOrder: 'first',
    sync: 'section',
    flushRecord: false,
    zeroPages: false,
    bareSync: false,
    compressionMask: 0xe,
    compressionCheckedWithPages: false,
    deviceStatePackets: false,
    greetingCounted: false,
    channelErrorReported: false,
    badChannelIsFatal: false,
    texts: {
      // 7.2 checks the id against the channel count but prints the versions (sic).
      channelIdTooBig: () => 'multifd: received channel version 1 expected 1',
      packetMagic: (got, want) => `multifd: received packet magic ${got} and expected magic ${want}`,
      packetVersion: (got, want) => `multifd: received packet version ${got} and expected version ${want}`,
      pagesAlloc: (got, max) => `multifd: received packet with size ${got} and expected a size of ${max}`,
      normalPages: (got, max) => `multifd: received packet with ${got} pages and expected maximum pages are ${max}`,
      zeroPages: () => '', // 7.2 has no zero pages in packets
      compression: (_channel, flags) => `multifd: flags received 0x${flags.toString(16)} and expected 0x0 (no compression)`,
      emptyDeviceState: '',
    },
  },
};
