/**
 * The records of the RAM section that carry one page, as the main channel sends them
 * (save_page_header(), save_zero_page(), save_normal_page()); shared by the page loop on the
 * main thread (ram-save.ts) and the one on the page thread (page-worker.ts).
 */
import { PAGE_SIZE } from '../../guest/ram.js';
import { RamFlag } from '../stream/constants.js';
import type { StreamWriter } from '../stream/writer.js';

/** be64 offset|flag, then the block's name unless `continued` (CONTINUE). Returns the bytes put. */
export function putPageHeader(w: StreamWriter, offset: number, flag: number, blockId: string, continued: boolean): number {
  if (continued) {
    w.be64(offset + flag + RamFlag.CONTINUE);
    return 8;
  }
  w.be64(offset + flag);
  w.countedString(blockId);
  return 8 + 1 + Buffer.byteLength(blockId, 'latin1');
}

/** A ZERO record: the header and the byte the page is filled with. Returns the bytes put. */
export function putZeroPage(w: StreamWriter, offset: number, blockId: string, continued: boolean): number {
  const n = putPageHeader(w, offset, RamFlag.ZERO, blockId, continued);
  w.u8(0);
  return n + 1;
}

/** A PAGE record with the page by reference (guest RAM, sent as it is when written). */
export function putNormalPage(w: StreamWriter, offset: number, page: Buffer, blockId: string, continued: boolean): number {
  const n = putPageHeader(w, offset, RamFlag.PAGE, blockId, continued);
  w.ref(page);
  return n + PAGE_SIZE;
}
