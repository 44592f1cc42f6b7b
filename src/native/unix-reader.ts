/**
 * The one door to qmigd's native addon (native/, N-API, C): reading a Unix stream socket with
 * the descriptors that come with its bytes (SCM_RIGHTS), which Node cannot do. Nothing else
 * imports the binding.
 *
 * The reader works on a dup of the socket's descriptor, watched on Node's own loop. The
 * net.Socket the descriptor came from keeps the writes and the close, and must never read: it
 * is created paused (a server's pauseOnConnect) and left so, with no 'data' listener, so that
 * libuv takes no byte without its descriptors.
 *
 * Each chunk handed over either carries no descriptor or begins with the bytes that were sent
 * with its descriptors (see native/src/unix_reader.c), at most 16 of them, as QEMU takes at
 * most 16 per message; the kernel drops the rest, and `truncated` says so. Received
 * descriptors are close-on-exec; they belong to the callee.
 */
import { closeSync } from 'node:fs';
import { createRequire } from 'node:module';
import type net from 'node:net';
import { constants } from 'node:os';
import { resolve } from 'node:path';

type ReceiverHandle = { readonly __receiver: unique symbol };

interface Binding {
  open(fd: number, callback: (errno: number, chunk: Buffer | null, fds: number[] | null, truncated: boolean) => void): ReceiverHandle;
  start(r: ReceiverHandle): void;
  stop(r: ReceiverHandle): void;
  close(r: ReceiverHandle): void;
}

/** Where node-gyp leaves the addon (this module runs from dist/src/native). */
const ADDON = resolve(import.meta.dirname, '..', '..', '..', 'native', 'build', 'Release', 'qmigd_native.node');

let binding: Binding | undefined;
let loadError: Error | undefined;

function load(): Binding {
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

/** Whether the addon loads; if not, why (a unix monitor then cannot receive descriptors). */
export function nativeUnavailable(): Error | undefined {
  try {
    load();
    return undefined;
  } catch (err) {
    return err as Error;
  }
}

export interface UnixReaderEvents {
  /** Bytes, with the descriptors sent with them (possibly none). */
  data(chunk: Buffer, fds: number[], truncated: boolean): void;
  /** The peer shut its sending side. */
  end(): void;
  /** Reading failed (ECONNRESET and the like): nothing more will come. */
  error(err: NodeJS.ErrnoException): void;
}

export class UnixReader {
  private readonly handle: ReceiverHandle;
  private closed = false;

  /** Reads `fd` (through a dup of it); nothing is read before start(). */
  constructor(fd: number, events: UnixReaderEvents) {
    const b = load();
    this.handle = b.open(fd, (errno, chunk, fds, truncated) => {
      if (this.closed) {
        for (const d of fds ?? []) closeQuietly(d);
        return;
      }
      if (chunk) events.data(chunk, fds ?? [], truncated);
      else if (errno === 0) events.end();
      else events.error(errnoException(errno));
    });
  }

  /** The descriptor of a socket Node holds (its libuv handle's). */
  static fdOf(socket: net.Socket): number | undefined {
    const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
    return typeof fd === 'number' && fd >= 0 ? fd : undefined;
  }

  start(): void {
    if (!this.closed) load().start(this.handle);
  }

  stop(): void {
    if (!this.closed) load().stop(this.handle);
  }

  /** Stops reading and closes the dup; the socket itself is its owner's to close. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    load().close(this.handle);
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* already gone */
  }
}

function errnoException(errno: number): NodeJS.ErrnoException {
  const code = Object.entries(constants.errno).find(([, n]) => n === errno)?.[0] ?? `E${errno}`;
  const err: NodeJS.ErrnoException = new Error(`read ${code}`);
  err.code = code;
  err.errno = -errno;
  return err;
}
