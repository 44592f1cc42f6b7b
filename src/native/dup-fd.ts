/**
 * A second descriptor for an open one (native/src/fd_dup.c), for a thread that must write a
 * socket the main thread also holds: each closes only its own.
 */
import { errnoName, loadAddon } from './addon.js';

export function dupFd(fd: number): number {
  const n = loadAddon().dupFd(fd);
  if (n < 0) {
    const code = errnoName(-n);
    throw Object.assign(new Error(`dup(${fd}) failed: ${code}`), { code });
  }
  return n;
}
