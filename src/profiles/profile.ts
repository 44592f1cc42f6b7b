/**
 * A version profile: everything that differs between the QEMU releases qmigd can be, as data in
 * one place (src/profiles/qemu-*.ts). One daemon is one release for its whole life, as a QEMU
 * binary is, so the profile is chosen once at start-up (--qemu-version, or qmigd-qemu's name)
 * and read where a difference matters through activeProfile().
 *
 * What a profile holds:
 * - the version a greeting and query-version report, and what `-version` prints;
 * - its schema: schema/ is QEMU 7.2's, and a later release's differences are an overlay
 *   directory (schema/qemu-X.Y/, see schema/README.md) merged over it;
 * - the texts of errors that changed (Errors reads them from here);
 * - the migration capabilities and parameters, their defaults and checks;
 * - the differences of the state machines and of the migration stream.
 */
export type ProfileId = '7.2' | '10.0';

/** The `zero-page-detection` migration parameter's values (9.0+). */
export type ZeroPageDetection = 'none' | 'legacy' | 'multifd';

/** How a release does multifd (migration/multifd*.c, ram.c), NOCOMP over sockets. */
export interface MultifdProfile {
  /**
   * How the destination tells the main channel from the multifd channels: `first` (7.2: the
   * first connection is the main one) or `magic` (8.0+: each connection's first four bytes, QEVM
   * for the main channel, so the connections may come in any order, as 10.0's do).
   */
  readonly channelOrder: 'first' | 'magic';
  /**
   * When the channels sync with the main stream: `section` (7.2: at every RAM EOS) or `round`
   * (8.1+ with multifd-flush-after-each-section off, as -M none has it: after the setup and at
   * every pass over RAM, each announced on the main stream by RAM_SAVE_FLAG_MULTIFD_FLUSH).
   */
  readonly sync: 'section' | 'round';
  /** The RAM flag 0x200 (MULTIFD_FLUSH) exists: 7.2 refuses it as an unknown flag. */
  readonly flushRecord: boolean;
  /** Packets carry zero pages (9.0+): be32 zero_pages at byte 32, their offsets after the normal pages'. */
  readonly zeroPages: boolean;
  /** A SYNC packet is a bare header (9.0+: pages_alloc 0, no block); 7.2 fills it as a data packet. */
  readonly bareSync: boolean;
  /** MULTIFD_FLAG_COMPRESSION_MASK: 3 bits in 7.2, 5 in 10.0 (QPL, UADK, QATzip). */
  readonly compressionMask: number;
  /**
   * 9.0+ checks the compression bits in the NOCOMP receive method, so only for a packet with
   * pages and after its offsets; 7.2 checks them first, in every packet.
   */
  readonly compressionCheckedWithPages: boolean;
  /** MULTIFD_FLAG_DEVICE_STATE (0x40, 10.0): a 276-byte device-state header instead of a RAM one. */
  readonly deviceStatePackets: boolean;
  /** The channels' 64-byte greetings count in multifd-bytes (and transferred), as 10.0 counts them; 7.2 does not. */
  readonly greetingCounted: boolean;
  /** A failed incoming migration also reports the error a channel failed with, last (10.0); 7.2 does not. */
  readonly channelErrorReported: boolean;
  /** A bad channel greeting fails the incoming migration and exits (10.0's exit-on-error); 7.2 closes the channel. */
  readonly badChannelIsFatal: boolean;
  /** The default of `zero-page-detection`; absent where the release has no such parameter. */
  readonly zeroPageDetection?: ZeroPageDetection;
  /** The receiver's texts that changed (multifd_recv_initial_packet, multifd_recv_unfill_packet). */
  readonly texts: {
    channelIdTooBig(id: number, channels: number): string;
    packetMagic(got: string, want: string): string;
    packetVersion(got: number, want: number): string;
    pagesAlloc(got: number, max: number): string;
    normalPages(got: number, max: number): string;
    zeroPages(got: number, max: number): string;
    compression(channel: number, flags: number): string;
    emptyDeviceState: string;
  };
}

export interface QemuProfile {
  readonly id: ProfileId;
  readonly version: { readonly major: number; readonly minor: number; readonly micro: number };
  /** The `-version` banner's copyright line. */
  readonly copyright: string;
  /** Directory under schema/ merged over the base schema (QEMU 7.2's); none for 7.2 itself. */
  readonly schemaOverlay?: string;
  /**
   * Whether every point of the release is modelled and verified against its QEMU; the default
   * profile is the newest complete one.
   */
  readonly complete: boolean;
  /** Differences in what QMP commands answer. */
  readonly qmp: {
    /** query-status carries `singlestep` (always false: qmigd runs no guest code). */
    readonly statusSinglestep: boolean;
  };
  readonly multifd: MultifdProfile;
  /**
   * MIG_CMD_SWITCHOVER_START (11, no payload, 10.0) is a known command. Minimal, for multifd's
   * interop with a QEMU 10.0 source, which sends it on every migration.
   */
  readonly acceptsSwitchoverStart: boolean;
}
