/**
 * How one dirty page leaves (ram_save_target_page()) and the records of the RAM section that
 * carry one page on the main channel (save_page_header(), save_zero_page(), save_normal_page());
 * shared by the page loop on the main thread (ram-save.ts) and the one on the page thread
 * (page-worker.ts), so that both send every page the same way.
 */
import { PAGE_SIZE, type GuestRam } from '../../guest/ram.js';
import type { ZeroPageDetection } from '../../profiles/profile.js';
import { RamFlag } from '../stream/constants.js';
import type { StreamWriter } from '../stream/writer.js';

/**
 * Where a dirty page goes: to a multifd channel, which tells zero pages apart itself (9.0+'s
 * zero-page-detection=multifd, multifd_send_zero_page_detect()); as a zero page (a ZERO record);
 * to a multifd channel whole; or whole on the main channel (XBZRLE's, where it is active).
 */
export type PageRoute = 'channel-detects' | 'zero' | 'channel' | 'page';

/**
 * ram_save_target_page()'s choice (outside postcopy). `multifd`: the channels take the pages
 * (not in postcopy, nor with mapped-ram, whose file gets them either way). A page is read for
 * zeros only where the release looks for them on this side.
 */
export function pageRoute(ram: GuestRam, page: number, detection: ZeroPageDetection, multifd: boolean): PageRoute {
  if (multifd && detection === 'multifd') return 'channel-detects';
  if (detection !== 'none' && ram.holdsZero(page)) return 'zero';
  return multifd ? 'channel' : 'page';
}

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
