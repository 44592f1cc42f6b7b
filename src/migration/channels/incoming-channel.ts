/**
 * The destination's end: listen on tcp/unix and take the first connection (7.2 without multifd
 * takes exactly one), run an exec: command and read its stdout, or use a descriptor (fd:,
 * inherited or passed with getfd; the caller resolves which). Each hands the migration one
 * stream; a socket's writable half is the return path.
 */
import { spawn } from 'node:child_process';
import { fstatSync, openSync, read, unlinkSync } from 'node:fs';
import net from 'node:net';
import type { Duplex, Writable } from 'node:stream';
import { errnoOf, listenFailure, strerror } from '../../errno.js';
import type { ByteSource } from '../stream/reader.js';
import type { MappedRamSource } from '../ram/mapped-ram.js';
import { SeekableFileInput } from './file-input.js';
import type { OwnedFd } from './owned-fd.js';
import { SocketInput } from './socket-input.js';
import type { MigrationUri } from './uri.js';

export interface IncomingConnection {
  input: ByteSource;
  /** Where the return path writes; absent for a one-way transport. */
  output?: Writable;
  close(): void;
  /**
   * For a socket not yet read from: its descriptor, for another thread to read (SocketInput);
   * this connection is then left alone here.
   */
  detach?(): number;
  /** A file: stream's file, for what is read at fixed offsets of it (mapped-ram). */
  file?: MappedRamSource;
}

export interface IncomingListener {
  /** QEMU's query-migrate `socket-address` for a listening socket. */
  socketAddress?: Record<string, unknown>;
  close(): void;
}

/**
 * Starts listening (or the command) and calls `accept` with each connection: the first is the
 * migration; a COLO secondary also takes the primary's compare channel on the same address.
 * The listener stays open until closed.
 */
export async function listenIncoming(uri: MigrationUri, accept: (c: IncomingConnection) => void): Promise<IncomingListener> {
  switch (uri.kind) {
    case 'exec': {
      const child = spawn('/bin/sh', ['-c', uri.command], { stdio: ['pipe', 'pipe', 'inherit'] });
      child.stdin.on('error', () => undefined);
      // Taken over in this tick, before its first read, so that the load thread can read it too.
      const { stdout } = child;
      const input = stdout instanceof net.Socket && SocketInput.canTakeOver(stdout) ? pipe(new SocketInput(stdout, { writable: false })).input : stdout;
      // From the main loop, as QEMU's channel watch: after migrate-incoming has answered.
      setImmediate(() => acceptFlowing(accept, { input, output: child.stdin, close: () => child.kill('SIGTERM') }));
      return { close: () => undefined };
    }
    case 'file': {
      // file_start_incoming_migration(): read from `offset` to the end; no way back.
      let fd: number;
      try {
        fd = openSync(uri.path, 'r');
      } catch (err) {
        throw new Error(`Could not open '${uri.path}': ${strerror(errnoOf(err))}`);
      }
      // The descriptor outlives the stream's end: mapped-ram reads pages at their offsets while
      // the stream may have been read to its end already. It goes when the listener closes.
      // The stream is read from a position of its own, which mapped-ram moves past the pages.
      const input = new SeekableFileInput(fd, uri.offset);
      const closeFile = (): void => input.close();
      const file = preadSource(fd, uri.offset);
      input.on('error', () => undefined); // reported by the reader as an end of stream
      setImmediate(() => accept({ input, close: closeFile, file }));
      return { close: closeFile };
    }
    case 'fd': {
      const owned = uri.fd;
      if (!owned) throw new Error('fd: is resolved by the caller');
      const { fd } = owned;
      let stat;
      try {
        stat = fstatSync(fd);
      } catch (err) {
        throw new Error(`Invalid file descriptor number '${uri.name}': ${strerror(errnoOf(err))}`);
      }
      // A regular file is read on from its current offset (a saved guest); a socket or a pipe is
      // a stream, and only a socket is also the way back. A pipe is read as SocketInput, which
      // the load thread can read too.
      const connection = stat.isFile()
        ? fileInput(new SeekableFileInput(fd, owned.offset()), owned)
        : stat.isSocket()
          ? duplex(owned.adopt(new net.Socket({ fd, readable: true, writable: true })))
          : stat.isFIFO()
            ? pipe(new SocketInput(fd, { writable: false }), owned)
            : oneWay(owned.adopt(new net.Socket({ fd, readable: true, writable: false })));
      setImmediate(() => acceptFlowing(accept, connection));
      // The migration is over (completed or failed): the descriptor goes, as QEMU's channel does.
      return { close: () => owned.release() };
    }
    case 'tcp':
    case 'unix': {
      const server = net.createServer({ pauseOnConnect: true });
      await new Promise<void>((resolve, reject) => {
        server.once('error', (err) => reject(new Error(listenFailure(err, uri.kind === 'unix' ? { unix: uri.path } : { tcp: true }))));
        if (uri.kind === 'tcp') server.listen(uri.port, uri.host || undefined, resolve);
        else {
          try {
            unlinkSync(uri.path);
          } catch {
            /* none there */
          }
          server.listen(uri.path, resolve);
        }
      });
      const close = (): void => {
        server.close();
      };
      let first: net.Socket | undefined;
      server.on('connection', (accepted) => {
        accepted.setNoDelay(true);
        if (!SocketInput.canTakeOver(accepted)) {
          accept(duplex(accepted));
          accepted.resume();
          return;
        }
        const input = new SocketInput(accepted);
        // The main channel connects first; multifd's channels after it (src/faults: side receive).
        if (accepted === (first ??= accepted)) input.markFaultable();
        const { socket } = input;
        socket.on('error', () => undefined); // reported by the reader as an end of stream
        let detached = false;
        const detach = (): number => {
          detached = true;
          return input.detach();
        };
        accept({ input, output: socket, close: () => !detached && socket.destroy(), detach });
        if (!detached) input.resume();
      });
      const address = server.address();
      const socketAddress =
        typeof address === 'string' || address === null
          ? { type: 'unix', path: uri.kind === 'unix' ? uri.path : String(address) }
          : {
              type: 'inet',
              host: address.address,
              port: String(address.port),
              ...(address.family === 'IPv6' ? { ipv6: true } : { ipv4: true }),
            };
      return { socketAddress, close };
    }
  }
}

/** A pipe's read end taken as SocketInput (`owned`: an fd: channel's descriptor, closed through it). */
function pipe(input: SocketInput, owned?: OwnedFd): IncomingConnection {
  owned?.adopt(input.socket);
  input.socket.on('error', () => undefined); // reported by the reader as an end of stream
  return { input, close: () => input.socket.destroy() };
}

/**
 * Hands `conn` to `accept`, then lets a SocketInput read: it emits what it reads whether or not
 * a reader listens, so the reader attaches first (in accept, synchronously).
 */
function acceptFlowing(accept: (c: IncomingConnection) => void, conn: IncomingConnection): void {
  accept(conn);
  if (conn.input instanceof SocketInput) conn.input.resume();
}

/**
 * An fd: channel's regular file, read from the descriptor's offset on (a saved guest, after
 * whatever header its writer put first) as a file: stream is, so the load thread can read it too.
 */
function fileInput(input: SeekableFileInput, owned: OwnedFd): IncomingConnection {
  input.on('error', () => undefined); // reported by the reader as an end of stream
  owned.adopt({ destroy: () => input.close() });
  return { input, close: () => owned.release() };
}

function oneWay(s: net.Socket): IncomingConnection {
  s.on('error', () => undefined); // reported by the reader as an end of stream
  return { input: s, close: () => s.destroy() };
}

function duplex(s: Duplex): IncomingConnection {
  s.on('error', () => undefined); // reported by the reader as an end of stream
  return { input: s, output: s, close: () => s.destroy() };
}

/** pread() on `fd`, for mapped-ram's pages and bitmap; `base`: where the stream's byte 0 is. */
export function preadSource(fd: number, base: number): MappedRamSource {
  return {
    base,
    readAt: (into, at, length, position) => new Promise((res, rej) => read(fd, into, at, length, position, (err, n) => (err ? rej(err) : res(n)))),
  };
}
