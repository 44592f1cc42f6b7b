/**
 * How guest RAM is faulted in, through the native addon (native/src/ram_advice.c): transparent
 * huge pages as QEMU asks for them (madvise(MADV_HUGEPAGE) on every RAM block it allocates),
 * which must be advised before the pages are first touched; and a region faulted in at once
 * (madvise(MADV_POPULATE_WRITE)) before a destination writes into it.
 */
import { constants } from 'node:os';
import { errnoName, loadAddon } from './addon.js';

/**
 * on: MADV_HUGEPAGE, as QEMU; off: MADV_NOHUGEPAGE (4 KiB pages even where the kernel's THP mode
 * is `always`); kernel: no advice, the kernel's THP mode decides (qmigd before this option).
 */
export type HugePageAdvice = 'on' | 'off' | 'kernel';
export const HUGE_PAGE_ADVICE: readonly HugePageAdvice[] = ['on', 'off', 'kernel'];
/** What measured fastest (README, "Where the time goes"). */
export const DEFAULT_HUGE_PAGE_ADVICE: HugePageAdvice = 'kernel';

/** Bytes advised (the 2 MiB-aligned interiors of the views), or why it could not be done. */
export type AdviceResult = { bytes: number } | { error: string };

export function adviseHugePages(views: readonly Uint8Array[], advice: HugePageAdvice): AdviceResult {
  if (advice === 'kernel') return { bytes: 0 };
  let addon;
  try {
    addon = loadAddon();
  } catch (err) {
    return { error: (err as Error).message };
  }
  let bytes = 0;
  for (const view of views) {
    const n = addon.hugepages(view, advice === 'on');
    if (n < 0) {
      return { error: `madvise(${advice === 'on' ? 'MADV_HUGEPAGE' : 'MADV_NOHUGEPAGE'}) failed: ${errnoName(-n)}` };
    }
    bytes += n;
  }
  return { bytes };
}

/** Until a call shows that this kernel has no MADV_POPULATE_WRITE (before 5.14), or there is no addon. */
let populating = true;

/**
 * Faults in, writable, the pages wholly inside view[offset, offset + length) with one
 * madvise(MADV_POPULATE_WRITE) (native/src/ram_advice.c), leaving their contents as they are.
 * False where that cannot be done: the pages then fault in one by one as they are written.
 */
export function populate(view: Uint8Array, offset: number, length: number): boolean {
  if (!populating) return false;
  let addon;
  try {
    addon = loadAddon();
  } catch {
    populating = false;
    return false;
  }
  const result = addon.populate(view, offset, length);
  if (result === -constants.errno.EINVAL) populating = false;
  return result >= 0;
}
