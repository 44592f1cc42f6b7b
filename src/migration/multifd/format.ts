/**
 * The multifd wire format (migration/multifd.c, multifd.h, multifd-nocomp.c), NOCOMP only, as
 * the active profile's release writes it (profile.multifd):
 *
 *   channel greeting (64 bytes):  be32 magic, be32 version, uuid[16], u8 id, 7 + 32 zero bytes
 *   packet header (1344 bytes):   be32 magic, version, flags, pages_alloc (128), normal_pages,
 *                                 next_packet_size; be64 packet_num; then 32 bytes: reserved in
 *                                 7.2, be32 zero_pages + 28 reserved from 9.0 on;
 *                                 ramblock[256] (NUL-padded); be64 offset[128]: the normal
 *                                 pages', then (9.0+) the zero pages'
 *   then normal_pages × 4096 bytes of page data, in offset order.
 *
 * A packet with the SYNC flag answers the main stream's sync point (7.2: every RAM EOS; 10.0:
 * every MULTIFD_FLUSH record): the destination waits for one from every channel before it goes
 * past it. 7.2 fills a SYNC packet like a data packet (pages_alloc 128, the last block's name);
 * 9.0+ sends a bare one (pages_alloc 0, no block).
 */
import { activeProfile } from '../../profiles/index.js';

export const MULTIFD_MAGIC = 0x11223344;
export const MULTIFD_VERSION = 1;
export const MULTIFD_FLAG_SYNC = 0x1;
/** MULTIFD_FLAG_DEVICE_STATE (10.0): the packet carries a device's state, not RAM. */
export const MULTIFD_FLAG_DEVICE_STATE = 0x40;
export const PAGES_PER_PACKET = 128;
export const INIT_BYTES = 64;
export const HEADER_BYTES = 64 + 256 + 8 * PAGES_PER_PACKET;
/** MultiFDPacketDeviceState_t: the common 12 bytes, idstr[256], be32 instance_id, be32 next_packet_size. */
export const DEVICE_STATE_HEADER_BYTES = 12 + 256 + 4 + 4;

export function encodeInit(id: number): Buffer {
  const b = Buffer.alloc(INIT_BYTES);
  b.writeUInt32BE(MULTIFD_MAGIC, 0);
  b.writeUInt32BE(MULTIFD_VERSION, 4);
  b[24] = id; // the uuid (bytes 8..23) stays zero: neither side was started with -uuid
  return b;
}

/**
 * multifd_recv_initial_packet(): the channel's id, or an error in QEMU's words. An id equal to
 * the count crashes both 7.2 and 10.0 (they index past their arrays); qmigd refuses it with the
 * text of an id past the count.
 */
export function decodeInit(b: Buffer, channels: number): number {
  const magic = b.readUInt32BE(0);
  if (magic !== MULTIFD_MAGIC) throw new Error(`multifd: received packet magic ${magic.toString(16)} expected ${MULTIFD_MAGIC.toString(16)}`);
  const version = b.readUInt32BE(4);
  if (version !== MULTIFD_VERSION) throw new Error(`multifd: received packet version ${version} expected ${MULTIFD_VERSION}`);
  const id = b[24]!;
  if (!b.subarray(8, 24).equals(Buffer.alloc(16))) {
    throw new Error(`multifd: received uuid '${formatUuid(b.subarray(8, 24))}' and expected uuid '00000000-0000-0000-0000-000000000000' for channel ${id}`);
  }
  if (id >= channels) throw new Error(activeProfile().multifd.texts.channelIdTooBig(id, channels));
  return id;
}

export interface PacketHeader {
  flags: number;
  packetNum: bigint;
  block: string;
  /** Pages whose data follows the header, in this order. */
  offsets: number[];
  /** Pages the destination makes zero (9.0+): no data follows for them. */
  zeroOffsets: number[];
}

/** multifd_send_fill_packet() and multifd_ram_fill_packet(). */
export function encodeHeader(h: PacketHeader): Buffer {
  const { multifd } = activeProfile();
  const b = Buffer.alloc(HEADER_BYTES);
  b.writeUInt32BE(MULTIFD_MAGIC, 0);
  b.writeUInt32BE(MULTIFD_VERSION, 4);
  b.writeUInt32BE(h.flags, 8);
  b.writeUInt32BE(h.offsets.length * 4096, 20);
  b.writeBigUInt64BE(h.packetNum, 24);
  if (multifd.bareSync && h.flags & MULTIFD_FLAG_SYNC) return b;
  b.writeUInt32BE(PAGES_PER_PACKET, 12);
  b.writeUInt32BE(h.offsets.length, 16);
  if (multifd.zeroPages) b.writeUInt32BE(h.zeroOffsets.length, 32);
  b.write(h.block, 64, 255, 'latin1');
  [...h.offsets, ...h.zeroOffsets].forEach((off, i) => {
    b.writeUInt32BE(Math.floor(off / 0x100000000), 320 + i * 8);
    b.writeUInt32BE(off >>> 0, 324 + i * 8);
  });
  return b;
}

/** The first 12 bytes (MultiFDPacketHdr_t in 10.0): checked, and the flags. */
export function decodeCommonHeader(b: Buffer): number {
  const { texts } = activeProfile().multifd;
  const magic = b.readUInt32BE(0);
  if (magic !== MULTIFD_MAGIC) throw new Error(texts.packetMagic(magic.toString(16), MULTIFD_MAGIC.toString(16)));
  const version = b.readUInt32BE(4);
  if (version !== MULTIFD_VERSION) throw new Error(texts.packetVersion(version, MULTIFD_VERSION));
  return b.readUInt32BE(8);
}

/** Whether a packet with these flags has a device-state header (10.0) rather than a RAM one. */
export function isDeviceState(flags: number): boolean {
  return activeProfile().multifd.deviceStatePackets && (flags & MULTIFD_FLAG_DEVICE_STATE) !== 0;
}

/**
 * A device-state packet's header (10.0): `-M none` has no device that sends its state over
 * multifd, so only the empty one is answered in QEMU's words.
 */
export function checkDeviceState(b: Buffer): never {
  const size = b.readUInt32BE(DEVICE_STATE_HEADER_BYTES - 4);
  if (size === 0) throw new Error(activeProfile().multifd.texts.emptyDeviceState);
  const raw = b.subarray(12, 12 + 256);
  const nul = raw.indexOf(0);
  throw new Error(`multifd: device state for '${raw.subarray(0, nul < 0 ? 256 : nul).toString('latin1')}' (qmigd has no such device)`);
}

/**
 * multifd_recv_unfill_packet() (and in 9.0+ multifd_ram_unfill_packet() and the NOCOMP receive
 * method's flags check): the header, checked as the profile's release checks it. `channel` is
 * the channel's id, which 10.0's compression message names.
 */
export function decodeHeader(b: Buffer, blockName: string, blockSize: number, channel = 0): PacketHeader {
  const { multifd } = activeProfile();
  const { texts } = multifd;
  const flags = decodeCommonHeader(b);
  const compression = flags & multifd.compressionMask;
  if (compression && !multifd.compressionCheckedWithPages) throw new Error(texts.compression(channel, flags));
  const alloc = b.readUInt32BE(12);
  if (alloc > PAGES_PER_PACKET) throw new Error(texts.pagesAlloc(alloc, PAGES_PER_PACKET));
  const normal = b.readUInt32BE(16);
  if (normal > alloc) throw new Error(texts.normalPages(normal, alloc));
  const zero = multifd.zeroPages ? b.readUInt32BE(32) : 0;
  if (zero > alloc - normal) throw new Error(texts.zeroPages(zero, alloc - normal));
  const packetNum = b.readBigUInt64BE(24);
  if (normal === 0 && zero === 0) return { flags, packetNum, block: '', offsets: [], zeroOffsets: [] };
  const raw = b.subarray(64, 64 + 255);
  const nul = raw.indexOf(0);
  const block = raw.subarray(0, nul < 0 ? 255 : nul).toString('latin1');
  if (block !== blockName) throw new Error(`multifd: unknown ram block ${block}`);
  const all: number[] = [];
  for (let i = 0; i < normal + zero; i++) {
    const off = b.readUInt32BE(320 + i * 8) * 0x100000000 + b.readUInt32BE(324 + i * 8);
    if (off > blockSize - 4096) throw new Error(`multifd: offset too long ${off} (max ${blockSize.toString(16)})`);
    all.push(off);
  }
  if (compression) throw new Error(texts.compression(channel, compression));
  return { flags, packetNum, block, offsets: all.slice(0, normal), zeroOffsets: all.slice(normal) };
}

function formatUuid(u: Buffer): string {
  const h = u.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
