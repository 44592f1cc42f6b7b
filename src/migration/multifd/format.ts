/**
 * QEMU 7.2's multifd wire format (migration/multifd.c, multifd.h), NOCOMP only.
 *
 *   channel greeting (64 bytes):  be32 magic, be32 version, uuid[16], u8 id, 7 + 32 zero bytes
 *   packet header (1344 bytes):   be32 magic, version, flags, pages_alloc (128), normal_pages,
 *                                 next_packet_size; be64 packet_num; 32 reserved bytes;
 *                                 ramblock[256] (NUL-padded); be64 offset[128]
 *   then normal_pages × 4096 bytes of page data, in offset order.
 *
 * A packet with the SYNC flag answers the main stream's EOS: the destination waits for one
 * from every channel before it goes past an EOS.
 */
export const MULTIFD_MAGIC = 0x11223344;
export const MULTIFD_VERSION = 1;
export const MULTIFD_FLAG_SYNC = 0x1;
export const MULTIFD_COMPRESSION_MASK = 0xe;
export const PAGES_PER_PACKET = 128;
export const INIT_BYTES = 64;
export const HEADER_BYTES = 64 + 256 + 8 * PAGES_PER_PACKET;

export function encodeInit(id: number): Buffer {
  const b = Buffer.alloc(INIT_BYTES);
  b.writeUInt32BE(MULTIFD_MAGIC, 0);
  b.writeUInt32BE(MULTIFD_VERSION, 4);
  b[24] = id; // the uuid (bytes 8..23) stays zero: neither side was started with -uuid
  return b;
}

/**
 * multifd_recv_initial_packet(): the channel's id, or an error in QEMU's words. An id past the
 * channels gets 7.2's text, which prints the versions (sic); an id equal to the count crashes
 * 7.2 (it indexes past its array), and is refused here the same way.
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
  if (id >= channels) throw new Error(`multifd: received channel version ${version} expected ${MULTIFD_VERSION}`);
  return id;
}

export interface PacketHeader {
  flags: number;
  normal: number;
  packetNum: bigint;
  block: string;
  offsets: number[];
}

export function encodeHeader(h: PacketHeader): Buffer {
  const b = Buffer.alloc(HEADER_BYTES);
  b.writeUInt32BE(MULTIFD_MAGIC, 0);
  b.writeUInt32BE(MULTIFD_VERSION, 4);
  b.writeUInt32BE(h.flags, 8);
  b.writeUInt32BE(PAGES_PER_PACKET, 12);
  b.writeUInt32BE(h.normal, 16);
  b.writeUInt32BE(h.normal * 4096, 20);
  b.writeBigUInt64BE(h.packetNum, 24);
  b.write(h.block, 64, 255, 'latin1');
  h.offsets.forEach((off, i) => {
    b.writeUInt32BE(Math.floor(off / 0x100000000), 320 + i * 8);
    b.writeUInt32BE(off >>> 0, 324 + i * 8);
  });
  return b;
}

/** multifd_recv_unfill_packet(): the header, checked as 7.2 checks it. */
export function decodeHeader(b: Buffer, blockName: string, blockSize: number): PacketHeader {
  const magic = b.readUInt32BE(0);
  if (magic !== MULTIFD_MAGIC) throw new Error(`multifd: received packet magic ${magic.toString(16)} and expected magic ${MULTIFD_MAGIC.toString(16)}`);
  const version = b.readUInt32BE(4);
  if (version !== MULTIFD_VERSION) throw new Error(`multifd: received packet version ${version} and expected version ${MULTIFD_VERSION}`);
  const flags = b.readUInt32BE(8);
  if (flags & MULTIFD_COMPRESSION_MASK) throw new Error(`multifd: flags received 0x${flags.toString(16)} and expected 0x0 (no compression)`);
  const alloc = b.readUInt32BE(12);
  if (alloc > PAGES_PER_PACKET) throw new Error(`multifd: received packet with size ${alloc} and expected a size of ${PAGES_PER_PACKET}`);
  const normal = b.readUInt32BE(16);
  if (normal > alloc) throw new Error(`multifd: received packet with ${normal} pages and expected maximum pages are ${alloc}`);
  const packetNum = b.readBigUInt64BE(24);
  if (normal === 0) return { flags, normal, packetNum, block: '', offsets: [] };
  const raw = b.subarray(64, 64 + 255);
  const nul = raw.indexOf(0);
  const block = raw.subarray(0, nul < 0 ? 255 : nul).toString('latin1');
  if (block !== blockName) throw new Error(`multifd: unknown ram block ${block}`);
  const offsets: number[] = [];
  for (let i = 0; i < normal; i++) {
    const off = b.readUInt32BE(320 + i * 8) * 0x100000000 + b.readUInt32BE(324 + i * 8);
    if (off > blockSize - 4096) throw new Error(`multifd: offset too long ${off} (max ${blockSize.toString(16)})`);
    offsets.push(off);
  }
  return { flags, normal, packetNum, block, offsets };
}

function formatUuid(u: Buffer): string {
  const h = u.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
