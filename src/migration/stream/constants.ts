/**
 * QEMU 7.2's migration stream, the numbers (see ../shared/reference/qemu-stream-format.md).
 *
 *   source                                             destination
 *   QEVM 00000003, 07 config("none")           ──►     checks magic, version, machine
 *   [08 OPEN_RETURN_PATH, 08 PING(1)]          ──►     ◄── PONG(1)        (return-path only)
 *   01 START ram v4: MEM_SIZE, blocks, EOS, 7E ──►     checks block names and sizes
 *   02 PART  ram: pages… EOS, 7E   (repeated)  ──►     applies pages, last write wins
 *   03 END   ram: last pages… EOS, 7E          ──►
 *   04 FULL timer v2, 04 FULL globalstate v1   ──►
 *   00 EOF, 06 VM description (JSON)           ──►     ◄── SHUT(0)        (return-path only)
 *
 * Every integer is big-endian. Versioning: the stream version is 3 in every QEMU since 2.x; the
 * RAM section must be version 4 exactly. What later releases changed (command 11, section ids,
 * globalstate's layout, the VM description) is data in src/profiles, so that each profile
 * writes and accepts its own release's stream and refuses what that release refuses.
 */
export const VM_FILE_MAGIC = 0x5145564d;
export const VM_FILE_VERSION_COMPAT = 2;
export const VM_FILE_VERSION = 3;

export const Section = {
  EOF: 0x00,
  START: 0x01,
  PART: 0x02,
  END: 0x03,
  FULL: 0x04,
  SUBSECTION: 0x05,
  VMDESCRIPTION: 0x06,
  CONFIGURATION: 0x07,
  COMMAND: 0x08,
  FOOTER: 0x7e,
} as const;

export const Command = {
  INVALID: 0,
  OPEN_RETURN_PATH: 1,
  PING: 2,
  POSTCOPY_ADVISE: 3,
  POSTCOPY_LISTEN: 4,
  POSTCOPY_RUN: 5,
  POSTCOPY_RAM_DISCARD: 6,
  PACKAGED: 7,
  ENABLE_COLO: 8,
  POSTCOPY_RESUME: 9,
  RECV_BITMAP: 10,
  /** 9.2+: the source stopped the guest for the last pass (a no-op for `-M none`'s devices). */
  SWITCHOVER_START: 11,
} as const;

/** A record of the stream as a fault's `point` names it (src/faults), with its idstr or command name. */
export type RecordKind = 'section-start' | 'section-part' | 'section-end' | 'section-full' | 'command' | 'eof';

export const SECTION_RECORDS: Partial<Record<number, RecordKind>> = {
  [Section.START]: 'section-start',
  [Section.PART]: 'section-part',
  [Section.END]: 'section-end',
  [Section.FULL]: 'section-full',
};

/** A MIG_CMD_* as points name it: OPEN_RETURN_PATH is open-return-path. */
export const commandPointName = (name: string): string => name.toLowerCase().replaceAll('_', '-');

export const COMMAND_NAMES: Partial<Record<number, string>> = Object.fromEntries(Object.entries(Command).map(([k, v]) => [v, commandPointName(k)]));

/** Low 12 bits of a RAM record's leading be64. */
export const RamFlag = {
  FULL: 0x001,
  ZERO: 0x002,
  MEM_SIZE: 0x004,
  PAGE: 0x008,
  EOS: 0x010,
  CONTINUE: 0x020,
  XBZRLE: 0x040,
  HOOK: 0x080,
  COMPRESS_PAGE: 0x100,
  /** 8.1+: sync the multifd channels here (profile.multifd.flushRecord); 7.2 refuses it. */
  MULTIFD_FLUSH: 0x200,
} as const;

export const ENCODING_FLAG_XBZRLE = 0x01;

/** Return-path messages, destination to source: be16 type, be16 length, payload. */
export const RpMessage = {
  INVALID: 0,
  SHUT: 1,
  PONG: 2,
  REQ_PAGES_ID: 3,
  REQ_PAGES: 4,
  RECV_BITMAP: 5,
  RESUME_ACK: 6,
  /** 8.1+, switchover-ack: the destination is ready for the source to switch over. */
  SWITCHOVER_ACK: 7,
} as const;
export const RP_MAX_LENGTH = 512;

/** Section versions a `-M none` source uses (the ids are the sender's choice: see the profiles). */
export const RAM_SECTION_VERSION = 4;
export const TIMER_SECTION_VERSION = 2;
export const GLOBALSTATE_SECTION_VERSION = 1;
/** globalstate's fixed part after `size`, however a release divides it (see the profiles). */
export const GLOBALSTATE_STATE_BYTES = 100;

/**
 * qmigd's colo-compare channel: a COLO primary connects a second time to the secondary's
 * incoming address and sends this; the secondary answers with its guest's output packets
 * (be32 epoch, be32 seq, be32 payload). QEMU wires colo-compare with chardevs instead.
 */
export const COMPARE_MAGIC = 0x514d4343; // "QMCC"
