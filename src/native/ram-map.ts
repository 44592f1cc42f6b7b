/**
 * Guest RAM mapped from a file, shared (native/src/ram_map.c), as QEMU maps a memory-backend-file
 * with share=on: what the guest writes is in the file, and every thread that maps the same
 * descriptor sees the same pages.
 */
import { errnoName, loadAddon } from './addon.js';

/** A view of [offset, offset + length) of the file open read-write as `fd`, mapped shared. */
export function mapShared(fd: number, offset: number, length: number): Buffer {
  const mapped = loadAddon().mapShared(fd, offset, length);
  if (typeof mapped === 'number') {
    const code = errnoName(-mapped);
    throw Object.assign(new Error(`mmap of ${length} bytes at ${offset} failed: ${code}`), { code });
  }
  return Buffer.from(mapped);
}
