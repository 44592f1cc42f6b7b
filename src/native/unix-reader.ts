/**
 * Reading a Unix stream socket with the descriptors that come with its bytes (SCM_RIGHTS), which
 * Node cannot do, through qmigd's native addon (./addon.ts).
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
import type net from 'node:net';
import { errnoName, loadAddon as load, nativeUnavailable, type ReceiverHandle } from './addon.js';

/** Whether the addon loads; if not, why (a unix monitor then cannot receive descriptors). */
export { nativeUnavailable };

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
  const code = errnoName(errno);
  const err: NodeJS.ErrnoException = new Error(`read ${code}`);
  err.code = code;
  err.errno = -errno;
  return err;
}
