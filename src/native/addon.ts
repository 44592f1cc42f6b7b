/**
 * The one door to qmigd's native addon (native/, N-API, C): loads it once, and says why when it
 * cannot. The modules beside this one wrap its functions; nothing else imports the binding.
 */
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';

export type ReceiverHandle = { readonly __receiver: unique symbol };

export interface Binding {
  open(fd: number, callback: (errno: number, chunk: Buffer | null, fds: number[] | null, truncated: boolean) => void): ReceiverHandle;
  start(r: ReceiverHandle): void;
  stop(r: ReceiverHandle): void;
  close(r: ReceiverHandle): void;
  /** madvise(MADV_HUGEPAGE / MADV_NOHUGEPAGE) on the view's 2 MiB-aligned interior: bytes advised, or -errno. */
  hugepages(view: Uint8Array, on: boolean): number;
  /** madvise(MADV_POPULATE_WRITE) on the 4 KiB pages wholly inside view[offset, offset + length): bytes populated, or -errno. */
  populate(view: Uint8Array, offset: number, length: number): number;
  /** fcntl(F_DUPFD_CLOEXEC): the new descriptor, or -errno. */
  dupFd(fd: number): number;
  /** mmap(MAP_SHARED) of [offset, offset + length) of the file open as fd: its bytes, or -errno. */
  mapShared(fd: number, offset: number, length: number): ArrayBuffer | number;
}

/** Where node-gyp leaves the addon (this module runs from dist/src/native). */
const ADDON = fileURLToPath(new URL('../../../native/build/Release/qmigd_native.node', import.meta.url));

let binding: Binding | undefined;
let loadError: Error | undefined;

export function loadAddon(): Binding {
  if (binding) return binding;
  if (loadError) throw loadError;
  try {
    binding = createRequire(import.meta.url)(ADDON) as Binding;
    return binding;
  } catch (err) {
    loadError = new Error(`qmigd's native addon is not built (${(err as Error).message}); npm ci builds it, or: npx node-gyp rebuild --directory native`);
    throw loadError;
  }
}

/** Whether the addon loads; if not, why. */
export function nativeUnavailable(): Error | undefined {
  try {
    loadAddon();
    return undefined;
  } catch (err) {
    return err as Error;
  }
}

/** The name of a positive errno the addon returned (as -errno): ENOENT, EBADF, … */
export function errnoName(errno: number): string {
  return Object.entries(constants.errno).find(([, n]) => n === errno)?.[0] ?? `E${errno}`;
}
