/**
 * Transparent huge pages for guest RAM, as QEMU asks for them (madvise(MADV_HUGEPAGE) on every
 * RAM block it allocates), through the native addon (native/src/ram_advice.c). The advice must
 * be given before the pages are first touched: it decides how they will be faulted in.
 */
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
