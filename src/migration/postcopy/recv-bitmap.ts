/**
 * The received bitmap a destination sends back when a paused postcopy migration recovers
 * (ramblock_recv_bitmap_send() / ramblock_recv_bitmap_reload() in ram.c): after an RP
 * RECV_BITMAP message naming the block, outside the return path's framing, be64 the bitmap's
 * size in bytes (whole 64-bit words), the bitmap as little-endian 64-bit words (bit N: page N is
 * here), and be64 RAMBLOCK_RECV_BITMAP_ENDING.
 */
import { DirtyBitmap } from '../../guest/dirty-bitmap.js';

export const RAMBLOCK_RECV_BITMAP_ENDING = 0x0123456789abcdefn;

/** The blob's size field for a block of `pages` pages: whole 64-bit words. */
export const recvBitmapBytes = (pages: number): number => Math.ceil(pages / 64) * 8;

/** Size, words, ending: what follows the RP RECV_BITMAP message. */
export function encodeRecvBitmap(received: DirtyBitmap): Buffer {
  const size = recvBitmapBytes(received.pages);
  const out = Buffer.alloc(8 + size + 8);
  out.writeBigUInt64BE(BigInt(size), 0);
  // Two 32-bit words, low first, are one little-endian 64-bit word.
  received.words.forEach((w, i) => out.writeUInt32LE(w, 8 + i * 4));
  out.writeBigUInt64BE(RAMBLOCK_RECV_BITMAP_ENDING, 8 + size);
  return out;
}

/** The bitmap's words (after the size field) as a bitmap of `pages` pages; bits past the end dropped. */
export function decodeRecvBitmap(words: Buffer, pages: number): DirtyBitmap {
  const bitmap = new DirtyBitmap(pages);
  for (let i = 0; i < bitmap.words.length; i++) bitmap.words[i] = words.readUInt32LE(i * 4);
  const tail = pages & 31;
  if (tail) bitmap.words[bitmap.words.length - 1]! &= (1 << tail) - 1;
  return bitmap;
}
